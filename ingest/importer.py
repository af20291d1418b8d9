"""Backfill ``pbx.events`` from web-server access logs.

PBX admins often already point the webhooks at nginx or Apache; their access
logs hold months of history. Each log line whose path is one of the 17
webhooks becomes the same ``pbx.events`` row the live service would have
stored, through the same decoding path (:mod:`ingest.decode`), with
``source = 'import'`` and ``received_at`` = the line's own time in UTC.

Idempotency (details and limits in ``docs/import.md``): a line's
``event_id`` is a hash of (UTC time, request target, occurrence index of that
exact pair in the file), so the same line read twice -- the same file again,
or two rotated files that overlap -- gets the same id, and ids already stored
are filtered out before each insert.
"""

from __future__ import annotations

import calendar
import datetime as dt
import gc
import gzip
import hashlib
import io
import os
import re
import sys
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

from clickhouse_connect.driver.client import Client

from ingest import db
from ingest.decode import COLUMNS, COLUMN_TYPES, DecodeError, decode, parse_query, to_row
from ingest.spec import EVENTS

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ImportStats",
    "LogFileError",
    "auto_jobs",
    "import_files",
    "line_event_id",
    "parse_log_time",
    "read_rows",
    "run",
]

#: Rows per insert: large blocks are what ClickHouse likes (fewer parts to write,
#: fsync and merge: 100k rows took 13 % less CPU per line than 50k), and 100k rows
#: of ~30 short columns add ~50 MB of Python objects at peak.
DEFAULT_BATCH_SIZE = 100_000

#: Bad lines reported per file before the rest are only counted.
MAX_REPORTED_PER_FILE = 50

#: Rows a decoding process sends at a time.
CHUNK_ROWS = 10_000

#: Below this much input (bytes, as stored: gzip counts compressed), decode in this process.
PARALLEL_MIN_BYTES = 8 << 20

#: Tries of one insert (server hiccups); retries reuse the dedup token.
INSERT_ATTEMPTS = 3

# The common prefix of the nginx/Apache "common" and "combined" formats:
#   host ident user [time] "METHOD target PROTOCOL" status ...
# Only the time and the request target matter; the status is ignored on
# purpose (a bare web server that logs the webhooks often answers 404).
# Groups: date, time of day, UTC offset, target.
_LINE = re.compile(r'\S+ \S+ \S+ \[(\d\d/[A-Z][a-z]{2}/\d{4}):(\d\d:\d\d:\d\d) ([+-]\d{4})\] "[A-Z]+ (\S+)')

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_blake2b = hashlib.blake2b

# Inserts declare the LowCardinality columns as plain String: clickhouse-connect
# builds LowCardinality dictionaries in Python, which measured at half the insert
# cost; the engine converts on insert (input_format_native_allow_types_conversion).
_INSERT_TYPES = [t.replace("LowCardinality(String)", "String") for t in COLUMN_TYPES]
# On a cluster pbx.events is a Distributed table: the insert returns once the rows are on their
# shard, so the next batch's "already stored?" check sees them.
_INSERT_SETTINGS = {"input_format_native_allow_types_conversion": 1, "distributed_foreground_insert": 1}


class LogFileError(OSError):
    """A log file cannot be opened or read; the message names the file."""


def parse_log_time(text: str) -> int:
    """``02/Nov/2026:09:00:17 +0100`` -> seconds since the epoch, UTC (08:00:17 UTC)."""
    try:
        month = _MONTHS[text[3:6]]
        if not 1 <= int(text[0:2]) <= calendar.monthrange(int(text[7:11]), month)[1]:
            raise ValueError("day out of range")
        local = calendar.timegm((int(text[7:11]), month, int(text[0:2]), int(text[12:14]), int(text[15:17]),
                                 int(text[18:20])))
        offset = int(text[22:24]) * 3600 + int(text[24:26]) * 60
    except (KeyError, ValueError) as exc:
        raise ValueError(f"bad log time {text!r}") from exc
    return local - offset if text[21] == "+" else local + offset


def line_event_id(epoch_s: int, target: str, occurrence: int) -> int:
    """The event_id of an imported line: a 128-bit hash of (UTC time in ms, target, occurrence).

    ``occurrence`` is how many times the same (time, target) pair was seen
    earlier in the same file, so two genuinely identical requests within one
    second stay two events while a line repeated across files is one.

    Returned as the UUID's 128-bit integer (``uuid.UUID(int=...)``): the
    driver writes UUID columns from ints, and building UUID objects measured
    at ~5% of the import time.
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


class _Progress:
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


def _open_text(path: Path) -> tuple[IO[str], IO[bytes], int]:
    """(text lines, raw file for progress, size): gzip is detected by its magic bytes."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise LogFileError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    size = path.stat().st_size
    binary: IO[bytes] = gzip.GzipFile(fileobj=raw) if raw.read(2) == b"\x1f\x8b" else raw
    raw.seek(0)
    # Access logs are ASCII (nginx escapes other bytes as \xHH); anything else is kept as U+FFFD.
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace"), raw, size


def read_rows(
    path: Path,
    stats: ImportStats,
    errors: IO[str] | None = None,
    progress: _Progress | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The ``pbx.events`` rows of one access-log file, in file order.

    Counts every line into ``stats``; bad webhook lines are reported to
    ``errors`` as ``FILE:LINE: message``. Raises :class:`LogFileError` if the
    file cannot be opened; a read error midway (a truncated .gz) is reported
    and ends the file, keeping the rows read so far.
    """
    received = COLUMNS.index("received_at")
    for row in _rows(path, stats, errors, progress):
        when = _EPOCH + dt.timedelta(milliseconds=row[received])
        yield (*row[:received], when, *row[received + 1:])


def _rows(
    path: Path,
    stats: ImportStats,
    errors: IO[str] | None = None,
    progress: _Progress | None = None,
) -> Iterator[tuple[Any, ...]]:
    """:func:`read_rows` with ``received_at`` as epoch milliseconds, as the insert sends it.

    The driver writes DateTime64 from ints as they are, while a datetime costs
    a conversion per row; this is the import's hot loop.
    """
    text, raw, size = _open_text(path)
    name = str(path)
    stats.files += 1
    match = _LINE.match
    events = EVENTS
    blake2b = _blake2b
    from_bytes = int.from_bytes
    # "02/Nov/2026" + "+0100" -> that local midnight as UTC epoch seconds: a log has
    # one stamp per second, so a cache per stamp would rarely hit; one per day does.
    days: dict[str, int] = {}
    clocks: dict[str, int] = {}  # "09:00:17" -> seconds into the day
    event_of: dict[str, str] = {}  # request path -> webhook name (a few known paths)
    # "<ms>|<target>|" (the id's hash input but the occurrence) -> occurrences so far
    seen: dict[str, int] = {}
    newest = 0
    reported = 0
    lineno = 0
    try:
        for lineno, line in enumerate(text, 1):
            if not lineno & 0xFFFF:
                stats.lines += 0x10000
                if progress is not None:
                    progress.update(name, stats.lines, raw.tell() / size if size else 1.0)
                if len(seen) > 200_000:
                    # Only same-second repeats matter; keep the last few minutes.
                    keep_from = (newest - 300) * 1000
                    seen = {k: v for k, v in seen.items() if int(k[:k.index("|")]) > keep_from}
                if len(days) > 10_000:
                    days.clear()
                if len(clocks) > 100_000:
                    clocks.clear()
            m = match(line)
            if m is None:
                stats.unparsed += 1
                continue
            date, clock, offset, target = m.groups()
            if target[0] != "/":
                # absolute-form request target: http://host/path?query
                scheme_end = target.find("://")
                slash = target.find("/", scheme_end + 3) if scheme_end >= 0 else -1
                target = target[slash:] if slash >= 0 else "/"
            path_part, _, query = target.partition("?")
            event = event_of.get(path_part)
            if event is None:
                event = path_part.rstrip("/").rpartition("/")[2]
                if event not in events:
                    stats.skipped += 1
                    continue
                if len(event_of) < 1000:
                    event_of[path_part] = event
            day_key = date + offset
            midnight = days.get(day_key)
            if midnight is None:
                try:
                    midnight = days[day_key] = parse_log_time(f"{date}:00:00:00 {offset}")
                except ValueError:  # "32/Foo/2026...": not a time, so not a log line
                    stats.unparsed += 1
                    continue
            # parse_log_time's arithmetic: the time of day is added as it is (the regex took 2 digits each).
            seconds = clocks.get(clock)
            if seconds is None:
                seconds = clocks[clock] = int(clock[0:2]) * 3600 + int(clock[3:5]) * 60 + int(clock[6:8])
            epoch = midnight + seconds
            try:
                ev = decode(event, parse_query(query))
            except DecodeError as exc:
                stats.bad += 1
                if errors is not None:
                    if reported < MAX_REPORTED_PER_FILE:
                        errors.write(f"{name}:{lineno}: {exc}\n")
                    elif reported == MAX_REPORTED_PER_FILE:
                        errors.write(f"{name}: more bad lines; only counted from here\n")
                reported += 1
                continue
            if epoch > newest:
                newest = epoch
            ms = epoch * 1000
            key = f"{ms}|{target}|"
            n = seen.get(key, 0)
            seen[key] = n + 1
            # line_event_id(epoch, target, n), inlined: this runs once per line.
            event_id = from_bytes(blake2b((key + str(n)).encode(), digest_size=16).digest())
            yield to_row(event, ev, ms, "import", event_id)
    except (OSError, EOFError, zlib.error) as exc:
        stats.file_errors += 1
        if errors is not None:
            errors.write(f"{name}: unreadable after line {lineno}: {exc}; the lines before it are imported\n")
    finally:
        stats.lines += lineno & 0xFFFF
        text.close()


class _Sink:
    """Inserts rows in batches, dropping rows whose event_id is already stored.

    One batch is inserted on a background thread while the next is decoded
    (the engine's share of the work runs without the GIL). At most one batch is
    in flight, so each batch's "already stored?" query sees every earlier batch.
    """

    def __init__(self, client: Client, stats: ImportStats, batch_size: int) -> None:
        self._client = client
        self._stats = stats
        self._batch_size = batch_size
        self._chunks: list[list[Sequence[Any]]] = []
        self._ranges: list[tuple[int, int]] = []  # received_at ms range of each chunk
        self._pending = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pbx-import")
        self._inflight: Future[None] | None = None
        self._batches = 0
        # The dedup token is reused for retries of one batch within this run only, so a
        # retried insert that did land is dropped. Not derived from the content: a
        # re-import after deleting rows would then be dropped by the dedup window.
        self._run_id = uuid.uuid4().hex

    @property
    def pending(self) -> int:
        """Rows queued for the next insert."""
        return self._pending

    def add(self, columns: list[Sequence[Any]]) -> None:
        """Queue a column-oriented chunk (see :func:`_to_columns`); inserts once a batch is full."""
        if not columns or not columns[0]:
            return
        self._chunks.append(columns)
        self._ranges.append((min(columns[1]), max(columns[1])))
        self._pending += len(columns[0])
        if self._pending >= self._batch_size:
            self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        chunks, self._chunks, self._pending = self._chunks, [], 0
        ranges, self._ranges = _merge_ranges(self._ranges), []
        self._wait()
        if chunks:
            columns = chunks[0] if len(chunks) == 1 else [
                list(chain.from_iterable(chunk[i] for chunk in chunks)) for i in range(len(chunks[0]))
            ]
            self._batches += 1
            token = f"import:{self._run_id}:{self._batches}"
            self._inflight = self._pool.submit(self._write, columns, ranges, token)
        if wait:
            self._wait()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown()

    def _wait(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()  # re-raises an insert error here, in the importing thread

    def _write(self, columns: list[Sequence[Any]], ranges: list[tuple[int, int]], token: str) -> None:
        ids = columns[0]
        rows = len(ids)
        # Imported ids are deterministic; only source='import' rows can collide. The time
        # ranges of the batch's chunks (files decoded in parallel interleave) prune
        # partitions and granules. Measured: fetching the ranges' ids and diffing here is
        # ~10x cheaper than sending an IN list of 50k ids.
        params: dict[str, Any] = {}
        where = []
        for i, (lo, hi) in enumerate(ranges):
            params[f"lo{i}"] = _EPOCH + dt.timedelta(milliseconds=lo)
            params[f"hi{i}"] = _EPOCH + dt.timedelta(milliseconds=hi)
            where.append(f"received_at BETWEEN {{lo{i}:DateTime64(3, 'UTC')}} AND {{hi{i}:DateTime64(3, 'UTC')}}")
        stored = self._client.query(
            # as UInt128: the same int as uuid.UUID.int, and ~10x cheaper to read than UUID objects
            f"SELECT toUInt128(event_id) FROM {db.DATABASE}.events WHERE source = 'import' "
            f"AND ({' OR '.join(where)})",
            parameters=params,
        ).result_columns
        drop = set(stored[0]) if stored else set()
        kept = rows
        if drop or len(set(ids)) < rows:
            keep: list[int] = []
            for i, event_id in enumerate(ids):
                if event_id not in drop:
                    drop.add(event_id)  # the same line twice within the batch
                    keep.append(i)
            kept = len(keep)
            if kept < rows:
                columns = [[col[i] for i in keep] for col in columns]
        self._stats.duplicates += rows - kept
        if not kept:
            return
        for attempt in range(INSERT_ATTEMPTS):
            try:
                self._client.insert(
                    f"{db.DATABASE}.events",
                    columns,
                    column_names=list(COLUMNS),
                    column_type_names=_INSERT_TYPES,
                    column_oriented=True,
                    settings={
                        **_INSERT_SETTINGS,
                        "insert_deduplication_token": token,
                        "deduplicate_blocks_in_dependent_materialized_views": 1,
                    },
                )
                break
            except Exception:
                if attempt + 1 == INSERT_ATTEMPTS:
                    raise
                time.sleep(0.5 * 2**attempt)
        stats = self._stats
        stats.imported += kept
        first = _EPOCH + dt.timedelta(milliseconds=min(columns[1]))
        last = _EPOCH + dt.timedelta(milliseconds=max(columns[1]))
        stats.first_time = first if stats.first_time is None else min(stats.first_time, first)
        stats.last_time = last if stats.last_time is None else max(stats.last_time, last)


def _merge_ranges(ranges: list[tuple[int, int]], gap_ms: int = 60_000) -> list[tuple[int, int]]:
    """Overlapping or nearby (within ``gap_ms``) ranges merged, in order."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + gap_ms:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _to_columns(rows: list[tuple[Any, ...]]) -> list[Sequence[Any]]:
    """Rows (from :func:`_rows`: received_at already epoch ms) -> columns, as tuples.

    The driver reads any sequence; copying each column into a list measured at
    about a third of the transposition's cost.
    """
    return list(zip(*rows))


class _Collect(io.StringIO):
    """Error reports of a decoding process, handed to the parent with each chunk."""

    def take(self) -> str:
        text = self.getvalue()
        self.seek(0)
        self.truncate()
        return text


_FILE_COUNTS = ("files", "lines", "skipped", "unparsed", "bad", "file_errors")


def _decode_worker(tasks: Any, results: Any, chunk_rows: int) -> None:
    """A decoding process: file names from ``tasks`` -> column chunks on ``results``."""
    gc.disable()  # see import_files
    try:
        while (name := tasks.get()) is not None:
            stats, errors = ImportStats(), _Collect()
            decoded = _rows(Path(name), stats, errors)
            while rows := list(islice(decoded, chunk_rows)):
                results.put(("rows", _to_columns(rows), errors.take()))
            results.put(("file", {k: getattr(stats, k) for k in _FILE_COUNTS}, errors.take()))
    except BaseException as exc:  # reported to the parent, which raises it
        results.put(("error", f"{type(exc).__name__}: {exc}", ""))
    results.put(("exit", None, ""))


def _parallel_chunks(files: list[Path], jobs: int, stats: ImportStats, errors: IO[str] | None,
                     bar: _Progress) -> Iterator[list[Sequence[Any]]]:
    """Column chunks decoded by ``jobs`` processes, one file each at a time, in arrival order.

    The order does not change the result: ids are per line, and the sink drops
    ids already stored, which also covers a line decoded by two processes.
    """
    import multiprocessing
    import queue

    # spawn, not fork: this process holds the embedded engine and its threads.
    ctx = multiprocessing.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue(maxsize=2 * jobs)
    for path in files:
        tasks.put(str(path))
    for _ in range(jobs):
        tasks.put(None)
    procs = [ctx.Process(target=_decode_worker, args=(tasks, results, CHUNK_ROWS), daemon=True,
                         name=f"pbx-import-decode-{i}") for i in range(jobs)]
    for proc in procs:
        proc.start()
    running, done, rows = jobs, 0, 0
    try:
        while running:
            try:
                kind, payload, reports = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a decoding process died (exit code {dead[0].exitcode})") from None
                continue
            if reports and errors is not None:
                errors.write(reports)
            if kind == "rows":
                rows += len(payload[0])
                bar.update(f"{done}/{len(files)} files", rows, done / len(files))
                yield payload
            elif kind == "file":
                done += 1
                for key, value in payload.items():
                    setattr(stats, key, getattr(stats, key) + value)
            elif kind == "error":
                raise RuntimeError(f"decoding process failed: {payload}")
            else:
                running -= 1
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(5)


def auto_jobs(files: Sequence[Path]) -> int:
    """Decoding processes for ``files`` (0 = decode in this process).

    One CPU stays with this process, which inserts; the others decode, at most
    one process per file. Measured (docs/benchmarks.md): the importing process
    alone handles ~190k lines per CPU-second, a decoding process ~80k (decoding
    plus shipping rows), one process doing both ~70k. So with 2 CPUs one
    decoding process gains little, and loses when the machine is busy: 0
    there. Small inputs are decoded here too: a process costs ~0.3 s to start.
    """
    cpus = os.cpu_count() or 1
    if cpus < 3 or sum(p.stat().st_size for p in files) < PARALLEL_MIN_BYTES:
        return 0
    return max(1, min(len(files), cpus - 1))


def import_files(
    client: Client,
    paths: Sequence[str | Path],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    errors: IO[str] | None = None,
    progress: IO[str] | None = None,
    jobs: int | None = None,
    pause_views: bool = False,
) -> ImportStats:
    """Import access-log files into ``pbx.events``; safe to repeat, in any file order.

    Every file is opened before anything is imported, so a mistyped name
    fails fast (:class:`LogFileError`). ``errors`` receives ``FILE:LINE``
    reports; ``progress`` (a terminal) a progress line. ``jobs`` decoding
    processes work on different files at once, 0 = decode in this process
    (None: :func:`auto_jobs`). ``pause_views`` stops the refreshable views
    (``SYSTEM STOP VIEWS``) until the import ends, then restarts them: their
    5-second refreshes would recompute the hours just imported again and again
    (measured: 10-20 % of the import's time). Only for an engine no one else
    watches meanwhile -- the embedded one, which the import holds alone.
    """
    files = [Path(p) for p in paths]
    for path in files:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise LogFileError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    stats = ImportStats()
    started = time.perf_counter()
    bar = _Progress(progress)
    sink = _Sink(client, stats, batch_size)
    jobs = auto_jobs(files) if jobs is None else max(0, min(jobs, len(files)))
    # Batches hold ~100k rows of tuples and dicts: the cyclic garbage collector kept
    # rescanning them (measured: 7x slower column building, 16% slower decoding).
    # Rows have no reference cycles, so it is paused for the import.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    if pause_views:
        client.command("SYSTEM STOP VIEWS")
    try:
        if jobs > 0:
            for columns in _parallel_chunks(files, jobs, stats, errors, bar):
                sink.add(columns)
        else:
            for path in files:
                decoded = _rows(path, stats, errors, bar)
                while rows := list(islice(decoded, batch_size - sink.pending)):
                    sink.add(_to_columns(rows))
        sink.flush()
    finally:
        try:
            sink.close()
        finally:
            if gc_was_enabled:
                gc.enable()
            bar.close()
            stats.seconds = time.perf_counter() - started
            if pause_views:
                failing = sys.exc_info()[1]  # the import's own error, if it is ending on one
                try:
                    client.command("SYSTEM START VIEWS")  # they catch up with one refresh
                except Exception:
                    if failing is None:
                        raise
    return stats


def _without_pandas() -> None:
    """Spare this command's process clickhouse-connect's pandas import.

    On the first insert the driver imports pandas (0.4-1 s measured, a tenth of
    a 275k-line import) only to test whether the data is a DataFrame; the
    importer never passes one. This sets the driver's state for "pandas not
    installed", as its own lazy import does on ImportError. Only in the CLI
    process, and only while nothing has imported pandas.
    """
    if "pandas" in sys.modules:
        return
    from clickhouse_connect.driver import options

    options.__dict__.setdefault("pd", None)
    options.__dict__.setdefault("pd_time_test", None)


def _redact(dsn: str) -> str:
    """The DSN without its password."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", dsn)


def run(
    dsn: str,
    paths: Iterable[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    migrate: bool = True,
    progress: bool | None = None,
    jobs: int | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """``pbx-analytics import``: the exit status (0 every file read; 1 a file unreadable, the engine
    busy, unreachable or failing; 2 bad flags). See docs/import.md."""
    paths = list(paths)
    _without_pandas()
    if batch_size <= 0:
        err.write(f"pbx-analytics import: --batch-size must be positive, got {batch_size}\n")
        return 2
    show_progress = err.isatty() if progress is None else progress
    try:
        client = db.connect(dsn)
    except db.EngineBusyError as exc:
        err.write(f"pbx-analytics import: {exc}\n")
        return 1
    except Exception as exc:  # unreachable server, bad credentials: say so, no traceback
        err.write(f"pbx-analytics import: cannot connect to {_redact(dsn)}: {exc}\n")
        return 1
    try:
        if migrate:
            db.apply_migrations(client)
        elif not client.command(f"EXISTS TABLE {db.DATABASE}.events"):
            err.write(f"pbx-analytics import: {db.DATABASE}.events does not exist at {dsn}: run "
                      "`pbx-analytics migrate` first, or import without --no-migrate\n")
            return 1
        stats = import_files(client, paths, batch_size=batch_size, errors=err,
                             progress=err if show_progress else None, jobs=jobs,
                             pause_views=dsn.startswith("chdb:"))
    except LogFileError as exc:
        err.write(f"pbx-analytics import: {exc}\n")
        return 1
    except Exception as exc:  # the engine failed midway: what is stored stays, a rerun resumes
        err.write(f"pbx-analytics import: stopped: {exc}\nThe batches before this one are stored; run "
                  "the same import again to finish (lines already stored are skipped).\n")
        return 1
    finally:
        client.close()
    out.write(stats.summary() + "\n")
    out.flush()
    if stats.file_errors:
        return 1
    return 0
