"""One access-log file -> its ``pbx.events`` rows, every line counted.

Each line whose path is one of the 17 webhooks becomes the row the live
service would have stored: decoded by the same code (``ingest.events``), with
``source = 'import'`` and ``received_at`` = the line's own time in UTC.

A line's ``event_id`` is a hash of (UTC time, request target, occurrence index
of that exact pair in the file), so the same line read twice -- the same file
again, or two rotated files that overlap -- gets the same id (docs/import.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ingest.backfill.accesslog import LINE, LogTimes, open_log, origin_form
from ingest.events.decode import DecodeError, decode, parse_query
from ingest.events.spec import EVENTS
from ingest.events.table import Row, to_row

__all__ = ["MAX_REPORTED_PER_FILE", "ImportStats", "Progress", "line_event_id", "read_rows"]

#: Bad lines reported per file before the rest are only counted.
MAX_REPORTED_PER_FILE = 50

_blake2b = hashlib.blake2b


def line_event_id(epoch_s: int, target: str, occurrence: int) -> int:
    """The event_id of an imported line: a 128-bit hash of (UTC time in ms, target, occurrence).

    ``occurrence`` is how many times the same (time, target) pair was seen
    earlier in the same file, so two genuinely identical requests within one
    second stay two events while a line repeated across files is one.
    Returned as the UUID's 128-bit integer, the row's form of an id.
    """
    return int.from_bytes(_blake2b(f"{epoch_s * 1000}|{target}|{occurrence}".encode(), digest_size=16).digest())


@dataclass
class ImportStats:
    """What one import did, line by line."""

    files: int = 0
    lines: int = 0
    #: Rows written to pbx.events now.
    imported: int = 0
    #: Webhook lines already stored (an earlier import, or an overlapping file).
    duplicates: int = 0
    #: Log lines whose path is not one of the webhooks (health checks, other sites).
    skipped: int = 0
    #: Lines that are not access-log lines at all.
    unparsed: int = 0
    #: Webhook lines that cannot be stored (a missing required parameter, ...).
    bad: int = 0
    #: Files that could not be read to the end.
    file_errors: int = 0
    seconds: float = 0.0
    first_time: dt.datetime | None = None
    last_time: dt.datetime | None = None

    def summary(self) -> str:
        rate = self.lines / self.seconds if self.seconds else 0.0
        span = ""
        if self.first_time is not None and self.last_time is not None:
            span = f", {self.first_time:%Y-%m-%d %H:%M:%S} .. {self.last_time:%Y-%m-%d %H:%M:%S} UTC"
        return (
            f"{self.files} file(s), {self.lines} lines in {self.seconds:.1f}s ({rate:,.0f} lines/s){span}\n"
            f"imported {self.imported}, already stored {self.duplicates}, "
            f"skipped {self.skipped} (not a webhook) + {self.unparsed} (not a log line), bad {self.bad}"
            + (f", unreadable files {self.file_errors}" if self.file_errors else "")
        )


class Progress:
    """One self-overwriting line on stderr, only when stderr is a terminal."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream
        self._started = time.perf_counter()
        self._shown = False

    def update(self, name: str, lines: int, done: float) -> None:
        if self._stream is None:
            return
        rate = lines / max(time.perf_counter() - self._started, 1e-9)
        self._stream.write(f"\r{name}: {done:4.0%}  {lines:,} lines  {rate:,.0f} lines/s ")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._stream is not None and self._shown:
            self._stream.write("\n")
            self._stream.flush()


class _FileRows:
    """The state of decoding one file: caches, the occurrence counts, the bad-line reports."""

    def __init__(self, name: str, stats: ImportStats, errors: IO[str] | None) -> None:
        self.name = name
        self.stats = stats
        self.errors = errors
        self.times = LogTimes()
        self.event_of: dict[str, str] = {}  # request path -> webhook name (a few known paths)
        # "<ms>|<target>|" (the id's hash input but the occurrence) -> occurrences so far
        self.seen: dict[str, int] = {}
        self.newest = 0
        self.reported = 0

    def row(self, line: str, lineno: int) -> Row | None:
        """The row of one log line, or None (counted as unparsed, skipped or bad)."""
        m = LINE.match(line)
        if m is None:
            self.stats.unparsed += 1
            return None
        date, clock, offset, target = m.groups()
        target = origin_form(target)
        path, _, query = target.partition("?")
        event = self.event_of.get(path) or self._event(path)
        if event is None:
            self.stats.skipped += 1
            return None
        epoch = self.times.epoch(date, clock, offset)
        if epoch is None:
            self.stats.unparsed += 1
            return None
        try:
            ev = decode(event, parse_query(query))
        except DecodeError as exc:
            self._bad(lineno, exc)
            return None
        if epoch > self.newest:  # noqa: PLR1730 - hot loop: cheaper than max()
            self.newest = epoch
        ms = epoch * 1000
        key = f"{ms}|{target}|"
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        # line_event_id(epoch, target, n), inlined: this runs once per line.
        event_id = int.from_bytes(_blake2b((key + str(n)).encode(), digest_size=16).digest())
        return to_row(event, ev, ms, "import", event_id)

    def _event(self, path: str) -> str | None:
        """The webhook a request path names (its last segment), remembered; None if none."""
        event = path.rstrip("/").rpartition("/")[2]
        if event not in EVENTS:
            return None
        if len(self.event_of) < 1000:
            self.event_of[path] = event
        return event

    def _bad(self, lineno: int, exc: DecodeError) -> None:
        self.stats.bad += 1
        if self.errors is not None:
            if self.reported < MAX_REPORTED_PER_FILE:
                self.errors.write(f"{self.name}:{lineno}: {exc}\n")
            elif self.reported == MAX_REPORTED_PER_FILE:
                self.errors.write(f"{self.name}: more bad lines; only counted from here\n")
        self.reported += 1

    def trim(self) -> None:
        """Bound the caches: only same-second repeats matter; keep the last few minutes."""
        if len(self.seen) > 200_000:
            keep_from = (self.newest - 300) * 1000
            self.seen = {k: v for k, v in self.seen.items() if int(k[: k.index("|")]) > keep_from}
        self.times.trim()


def read_rows(path: Path, stats: ImportStats, errors: IO[str] | None = None,
              progress: Progress | None = None) -> Iterator[Row]:
    """The ``pbx.events`` rows of one access-log file, in file order.

    Counts every line into ``stats``; bad webhook lines are reported to
    ``errors`` as ``FILE:LINE: message``. Raises ``LogFileError`` if the file
    cannot be opened; a read error midway (a truncated .gz) is reported and
    ends the file, keeping the rows read so far.
    """
    text, raw, size = open_log(path)
    name = str(path)
    stats.files += 1
    rows = _FileRows(name, stats, errors)
    row_of = rows.row
    lineno = 0
    try:
        for lineno, line in enumerate(text, 1):
            if not lineno & 0xFFFF:
                stats.lines += 0x10000
                if progress is not None:
                    progress.update(name, stats.lines, raw.tell() / size if size else 1.0)
                rows.trim()
            row = row_of(line, lineno)
            if row is not None:
                yield row
    except (OSError, EOFError, zlib.error) as exc:
        stats.file_errors += 1
        if errors is not None:
            errors.write(f"{name}: unreadable after line {lineno}: {exc}; the lines before it are imported\n")
    finally:
        stats.lines += lineno & 0xFFFF
        text.close()
