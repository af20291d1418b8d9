"""What a log line means, one line at a time: the import's rules, counts and reports.

Each line whose path is one of the 17 webhooks becomes the row the live
service would have stored: decoded by the same code (``ingest.events``), with
``source = 'import'`` and ``received_at`` = the line's own time in UTC.
:class:`LineDecoder` is those rules for one line; ``ingest.backfill.batches``
applies them to many lines at a time and gives it the lines it leaves to Python.

A line's ``event_id`` is a hash of (UTC time, request target, occurrence index
of that exact pair in the file), so the same line read twice -- the same file
again, or two rotated files that overlap -- gets the same id (docs/import.md).
Its ``seq`` (the arrival order that breaks ties of one second) is its line
number counted from the file's start in time, :func:`line_seq`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from typing import IO, NamedTuple

from ingest.backfill.accesslog import LINE, LogTimes, origin_form
from ingest.events.decode import DecodeError, decode, parse_query
from ingest.events.spec import EVENTS, Event

__all__ = ["MAX_REPORTED_PER_FILE", "Decoded", "ImportStats", "LineDecoder", "Progress", "line_event_id", "line_seq",
           "report_unparsed"]

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


#: The latest second a file can start at and its seqs still fit UInt64 (in the year 2554).
_LAST_SEQ_SECOND = (2**64 - 1) // 10**9 - 2


def line_seq(first_second: int, lineno: int) -> int:
    """The ``seq`` of line ``lineno`` of a file whose first row is at ``first_second`` (UTC epoch s):
    that second in nanoseconds plus the line number.

    Within a file that is the line order; across files, a later file (rotated after
    an earlier one) starts at a later second and so sorts after it (fewer than 10^9
    lines a file), which is what orders the events of the second two rotated files
    share. The same form as a webhook's ``seq`` (its process's start in nanoseconds
    plus rows stamped since, ``ingest.events.table``), but the two are separate
    counters: within one second, live and imported rows are not in arrival order
    (docs/metrics.md#event-time-and-ties). A first second outside UInt64's range
    (a line dated before 1970 or after 2554) is clamped.
    """
    return min(max(first_second, 0), _LAST_SEQ_SECOND) * 10**9 + lineno


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
    #: Files with lines but not one access-log line (a binary, a JSON file): an error.
    not_logs: int = 0
    seconds: float = 0.0
    #: Seconds the import waited for a running service's webhooks (``PBX_IMPORT_YIELD``).
    yielded_s: float = 0.0
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
            + (f", not access logs {self.not_logs}" if self.not_logs else "")
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


class Decoded(NamedTuple):
    """A webhook line decoded: everything its row needs but the id."""

    lineno: int
    #: The line's time, UTC epoch seconds.
    epoch: int
    #: The request target as logged, in origin form (``/path?query``): part of the id.
    target: str
    event: str
    decoded: Event


class LineDecoder:
    """The exact reading of one file's lines, one at a time.

    This is the rule book the batch decoder (``ingest.backfill.batches``) must
    agree with line for line, and what it hands the lines it does not decode
    itself (text that is not plain ASCII, repeated parameters with different
    values, a missing required parameter...). Counts every line it is given
    into ``stats``; bad webhook lines are reported to ``errors`` as
    ``FILE:LINE: message`` (the first :data:`MAX_REPORTED_PER_FILE`).
    """

    def __init__(self, name: str, stats: ImportStats, errors: IO[str] | None) -> None:
        self.name = name
        self.stats = stats
        self.errors = errors
        self.times = LogTimes()
        self.event_of: dict[str, str | None] = {}  # request path -> webhook name (a few known paths)
        self.reported = 0

    def line(self, line: str, lineno: int) -> Decoded | None:
        """One log line (text) -> its :class:`Decoded`, or None (counted as unparsed, skipped or bad)."""
        m = LINE.match(line)
        if m is None:
            self.stats.unparsed += 1
            return None
        date, clock, offset, target = m.groups()
        target = origin_form(target)
        path, _, query = target.partition("?")
        event = self.event(path)
        if event is None:
            self.stats.skipped += 1
            return None
        epoch = self.times.epoch(date, clock, offset)
        if epoch is None:
            self.stats.unparsed += 1
            return None
        ev = self.query(event, query, lineno)
        return None if ev is None else Decoded(lineno, epoch, target, event, ev)

    def query(self, event: str, query: str, lineno: int) -> Event | None:
        """The webhook's parameters decoded as the service decodes them; None if bad (reported)."""
        try:
            return decode(event, parse_query(query))
        except DecodeError as exc:
            self.bad(lineno, exc)
            return None

    def event(self, path: str) -> str | None:
        """The webhook a request path names (its last segment); None if none."""
        try:
            return self.event_of[path]
        except KeyError:
            event = path.rstrip("/").rpartition("/")[2]
            found = event if event in EVENTS else None
            if len(self.event_of) < 1000:
                self.event_of[path] = found
            return found

    def bad(self, lineno: int, exc: DecodeError) -> None:
        self.stats.bad += 1
        if self.errors is not None:
            if self.reported < MAX_REPORTED_PER_FILE:
                self.errors.write(f"{self.name}:{lineno}: {exc}\n")
            elif self.reported == MAX_REPORTED_PER_FILE:
                self.errors.write(f"{self.name}: more bad lines; only counted from here\n")
        self.reported += 1


def report_unparsed(name: str, lines: int, unparsed: int, stats: ImportStats, errors: IO[str] | None) -> None:
    """Say which file had lines that are not access-log lines; a file of nothing else is not a log
    at all (``not_logs``, exit status 1). An empty file is fine (a log rotated just now)."""
    if not unparsed:
        return
    if unparsed == lines:
        stats.not_logs += 1
        message = (f"{name}: not an access log: no nginx/Apache combined or common log line in its {lines} "
                   f"line{'s' * (lines != 1)}; nothing imported from it")
    else:
        message = f"{name}: {unparsed} of {lines} lines are not access-log lines; skipped"
    if errors is not None:
        errors.write(message + "\n")
