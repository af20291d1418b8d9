"""The access-log format, both ways: the simulator writes it, the importer reads it.

nginx's and Apache's ``common`` and ``combined`` formats share a prefix::

    host ident user [02/Nov/2026:09:00:17 +0100] "GET /queue_in?call_id=... HTTP/1.1" 200 3 ...

Only the time and the request target matter to us; the status is ignored on
purpose (a bare web server that logs the webhooks often answers 404). Times
are local with their UTC offset; whole seconds are the format's resolution.
"""

from __future__ import annotations

import calendar
import datetime as dt
import gzip
import io
import re
import zlib
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "FORMATS",
    "LINE",
    "LineChunks",
    "LogFileError",
    "LogTimes",
    "format_line",
    "format_time",
    "offset_function",
    "open_for_writing",
    "origin_form",
    "parse_log_time",
]

#: The log formats we write (and read: the parser needs only their common prefix).
FORMATS = ("combined", "common")

#: The common prefix of a log line. Groups: date, time of day, UTC offset, request target.
#: Python's ``re`` (line by line, ``LINE.match``) and RE2 (many lines at a time, the batch
#: decoder, anchored with ``^``) read it alike on plain ASCII text, the only text given to RE2.
LINE = re.compile(r'\S+ \S+ \S+ \[(?P<date>\d\d/[A-Z][a-z]{2}/\d{4}):(?P<clock>\d\d:\d\d:\d\d) '
                  r'(?P<offset>[+-]\d{4})\] "[A-Z]+ (?P<target>\S+)')

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name: number for number, name in enumerate(_MONTHS, 1)}


class LogFileError(OSError):
    """A log file cannot be opened or read; the message names the file."""


# ---- time ----------------------------------------------------------------------------


def format_time(t: int, offset_s: int = 0) -> str:
    """Epoch seconds -> the log's time, local at ``offset_s``: ``02/Nov/2026:09:00:17 +0100``."""
    local = dt.datetime.fromtimestamp(t + offset_s, dt.timezone.utc)
    sign = "+" if offset_s >= 0 else "-"
    hh, mm = divmod(abs(offset_s) // 60, 60)
    return (f"{local.day:02d}/{_MONTHS[local.month - 1]}/{local.year}:"
            f"{local.hour:02d}:{local.minute:02d}:{local.second:02d} {sign}{hh:02d}{mm:02d}")


def parse_log_time(text: str) -> int:
    """``02/Nov/2026:09:00:17 +0100`` -> seconds since the epoch, UTC (08:00:17 UTC)."""
    try:
        month = _MONTH_NUMBER[text[3:6]]
        if not 1 <= int(text[0:2]) <= calendar.monthrange(int(text[7:11]), month)[1]:
            raise ValueError("day out of range")
        local = calendar.timegm((int(text[7:11]), month, int(text[0:2]), int(text[12:14]), int(text[15:17]),
                                 int(text[18:20])))
        offset = int(text[22:24]) * 3600 + int(text[24:26]) * 60
    except (KeyError, ValueError) as exc:
        raise ValueError(f"bad log time {text!r}") from exc
    return local - offset if text[21] == "+" else local + offset


class LogTimes:
    """:func:`parse_log_time` of a line's (date, time of day, offset), with caches.

    A log has one stamp per second, so a cache per stamp would rarely hit; one
    per (day, offset) and one per time of day do. The import's hot loop.
    """

    def __init__(self) -> None:
        self._days: dict[str, int] = {}  # "02/Nov/2026" + "+0100" -> that local midnight in UTC epoch s
        self._clocks: dict[str, int] = {}  # "09:00:17" -> seconds into the day

    def epoch(self, date: str, clock: str, offset: str) -> int | None:
        """UTC epoch seconds, or None if ``date`` is not a date (so not a log line)."""
        day_key = date + offset
        midnight = self._days.get(day_key)
        if midnight is None:
            try:
                midnight = self._days[day_key] = parse_log_time(f"{date}:00:00:00 {offset}")
            except ValueError:  # "32/Foo/2026...": not a time
                return None
        seconds = self._clocks.get(clock)
        if seconds is None:
            # parse_log_time's arithmetic: the time of day is added as it is (LINE took 2 digits each).
            seconds = self._clocks[clock] = int(clock[0:2]) * 3600 + int(clock[3:5]) * 60 + int(clock[6:8])
        return midnight + seconds

    def trim(self) -> None:
        """Bound the caches (called now and then on long logs)."""
        if len(self._days) > 10_000:
            self._days.clear()
        if len(self._clocks) > 100_000:
            self._clocks.clear()


def offset_function(spec: str) -> Callable[[int], int]:
    """``+0100`` / ``-0530`` / ``UTC`` / an IANA zone such as ``Europe/Prague`` -> epoch -> offset seconds.

    Raises ``ValueError`` naming the accepted forms.
    """
    text = spec.strip()
    if text.upper() in ("Z", "UTC"):
        return lambda t: 0
    if len(text) == 5 and text[0] in "+-" and text[1:].isdigit():
        sign = 1 if text[0] == "+" else -1
        offset = sign * (int(text[1:3]) * 3600 + int(text[3:5]) * 60)
        return lambda t: offset
    try:
        zone = zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"tz offset {spec!r}: expected +HHMM, -HHMM, UTC or a zone like Europe/Prague") from None

    def of_zone(t: int) -> int:
        off = dt.datetime.fromtimestamp(t, zone).utcoffset()
        return int(off.total_seconds()) if off is not None else 0

    return of_zone


# ---- lines ---------------------------------------------------------------------------


def format_line(t: int, target: str, offset_s: int = 0, fmt: str = "combined", client: str = "10.0.0.5") -> str:
    """One access-log line (``combined`` or ``common``) for a GET of ``target`` at epoch ``t``."""
    line = f'{client} - - [{format_time(t, offset_s)}] "GET {target} HTTP/1.1" 200 3'
    if fmt == "combined":
        line += ' "-" "pbx-webhook/1.0"'
    elif fmt != "common":
        raise ValueError(f"log format {fmt!r}: expected combined or common")
    return line + "\n"


def origin_form(target: str) -> str:
    """A request target as ``/path?query``: an absolute-form target (``http://host/path?query``,
    what a proxy logs) loses its scheme and host."""
    if target[0] == "/":
        return target
    scheme_end = target.find("://")
    slash = target.find("/", scheme_end + 3) if scheme_end >= 0 else -1
    return target[slash:] if slash >= 0 else "/"


# ---- files ---------------------------------------------------------------------------


class LineChunks:
    """A log file as chunks of whole lines, in bytes, for decoding many lines at a time.

    Iterating yields ``(number of the chunk's first line, bytes)``; every line in
    the bytes ends with ``\\n``. The lines and their numbers are exactly those
    of Python's text reader (``open(path, encoding="utf-8", errors="replace")``,
    through gzip if need be), so ``FILE:LINE`` reports agree with any editor:
    universal newlines (``\\r\\n`` and a lone ``\\r`` end a line too, and
    are translated to ``\\n``), a last line without a newline is a line. The
    bytes are not decoded: lines that are not plain ASCII are decoded as
    UTF-8 (U+FFFD for what is not) by whoever reads them as text.

    gzip is detected by its magic bytes; concatenated gzip members are read on.
    A read error midway (a truncated or damaged ``.gz``) is raised from the
    iteration (``OSError``, ``EOFError`` or ``zlib.error``) after the whole lines
    decompressed before it were handed out; :attr:`lines` is then the number
    of the last of them. :meth:`progress` is the fraction of the file (as
    stored) read so far.
    """

    #: Bytes read from the file at a time (compressed, for gzip): what a damaged
    #: gzip can lose beyond the damage.
    READ_BYTES = 1 << 16

    def __init__(self, path: Path, chunk_bytes: int = 4 << 20) -> None:
        try:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise LogFileError(f"{path}: cannot open: {exc.strerror or exc}") from exc
        self._size = path.stat().st_size
        self._gzipped = self._raw.read(2) == b"\x1f\x8b"
        self._raw.seek(0)
        self._chunk_bytes = chunk_bytes
        #: Lines handed out so far.
        self.lines = 0

    def progress(self) -> float:
        return self._raw.tell() / self._size if self._size else 1.0

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> LineChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        pieces: list[bytes] = []
        size = 0
        rest = b""
        try:
            for piece in self._decompressed() if self._gzipped else self._plain():
                pieces.append(piece)
                size += len(piece)
                if size >= self._chunk_bytes:
                    rest = yield from self._whole_lines(rest, pieces)
                    pieces, size = [], 0
        except (OSError, EOFError, zlib.error):
            yield from self._whole_lines(rest, pieces)  # the lines before the damage
            raise
        rest = yield from self._whole_lines(rest, pieces)
        if rest:
            yield from self._numbered(rest + b"\n")

    def _plain(self) -> Iterator[bytes]:
        while data := self._raw.read(self._chunk_bytes):
            yield data

    def _decompressed(self) -> Iterator[bytes]:
        inflate, started = zlib.decompressobj(wbits=31), False
        data = b""
        while data or (data := self._raw.read(self.READ_BYTES)):
            out = inflate.decompress(data)
            started, data = True, b""
            if out:
                yield out
            if inflate.eof:  # a member ended; what follows is the next one, as gzip(1) reads them
                data = inflate.unused_data
                inflate, started = zlib.decompressobj(wbits=31), False
        if started:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")

    def _whole_lines(self, rest: bytes, pieces: list[bytes]) -> Iterator[tuple[int, bytes]]:
        """Yields the whole lines of ``rest + pieces``; returns what follows the last one."""
        data = rest + b"".join(pieces)
        end = data.rfind(b"\n") + 1
        if end:
            # A "\r" just before the cut stays with its "\n": the cut is after the "\n".
            yield from self._numbered(data[:end])
        return data[end:]

    def _numbered(self, chunk: bytes) -> Iterator[tuple[int, bytes]]:
        if b"\r" in chunk:  # universal newlines, as the text reader reads them
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        first = self.lines + 1
        self.lines += chunk.count(b"\n")
        yield first, chunk


def open_for_writing(path: Path) -> IO[str]:
    """A log file to write: gzip if the name ends in ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")  # noqa: SIM115 - the caller's context manager closes it
