"""``pbx-analytics import``: backfill ``pbx.events`` from web-server access logs.

PBX admins often already point the webhooks at nginx or Apache; their access
logs hold months of history. ``ingest.backfill.rows`` turns each file into the
rows the live service would have stored (decoding processes do that for
several files at once, ``_parallel``); this module inserts them through the
one insert of ``pbx.events`` (``ingest.events.table.EventsInsert``).

Idempotency (details and limits in ``docs/import.md``): a line's ``event_id``
is derived from the line, so the same line read twice gets the same id, and
ids already stored are filtered out before each insert.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

from clickhouse_connect.driver.client import Client

from ingest.backfill._parallel import auto_jobs, parallel_chunks, to_columns
from ingest.backfill.accesslog import LogFileError
from ingest.backfill.rows import ImportStats, Progress, read_rows
from ingest.config import ImportOptions
from ingest.events.table import TABLE, EventsInsert, ms_to_datetime
from ingest.querying import client as engine_client
from ingest.storing import clickhouse, migrations

__all__ = ["DEFAULT_BATCH_SIZE", "ImportStats", "LogFileError", "import_files", "run"]

#: Rows per insert: large blocks are what ClickHouse likes (fewer parts to write,
#: fsync and merge: 100k rows took 13 % less CPU per line than 50k), and 100k rows
#: of ~30 short columns add ~50 MB of Python objects at peak.
DEFAULT_BATCH_SIZE = ImportOptions.batch_size

#: Tries of one insert (server hiccups); retries reuse the dedup token.
INSERT_ATTEMPTS = 3


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
        # On a cluster: the next batch's "already stored?" check must see this batch.
        self._insert = EventsInsert(wait_for_shards=True)
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
        rows = len(columns[0])
        columns = self._not_stored(columns, ranges)
        kept = len(columns[0]) if columns else 0
        self._stats.duplicates += rows - kept
        if not kept:
            return
        for attempt in range(INSERT_ATTEMPTS):
            try:
                self._insert(self._client, columns, token)
                break
            except Exception:
                if attempt + 1 == INSERT_ATTEMPTS:
                    raise
                time.sleep(0.5 * 2**attempt)
        stats = self._stats
        stats.imported += kept
        first, last = ms_to_datetime(min(columns[1])), ms_to_datetime(max(columns[1]))
        stats.first_time = first if stats.first_time is None else min(stats.first_time, first)
        stats.last_time = last if stats.last_time is None else max(stats.last_time, last)

    def _not_stored(self, columns: list[Sequence[Any]], ranges: list[tuple[int, int]]) -> list[Sequence[Any]]:
        """``columns`` without the rows whose id is already stored or earlier in the batch."""
        ids = columns[0]
        # Imported ids are deterministic; only source='import' rows can collide. The time
        # ranges of the batch's chunks (files decoded in parallel interleave) prune
        # partitions and granules. Measured: fetching the ranges' ids and diffing here is
        # ~10x cheaper than sending an IN list of 50k ids.
        params: dict[str, Any] = {}
        where = []
        for i, (lo, hi) in enumerate(ranges):
            params[f"lo{i}"], params[f"hi{i}"] = ms_to_datetime(lo), ms_to_datetime(hi)
            where.append(f"received_at BETWEEN {{lo{i}:DateTime64(3, 'UTC')}} AND {{hi{i}:DateTime64(3, 'UTC')}}")
        stored = self._client.query(
            # as UInt128: the same int as the row's id, and ~10x cheaper to read than UUID objects
            f"SELECT toUInt128(event_id) FROM {TABLE} WHERE source = 'import' AND ({' OR '.join(where)})",
            parameters=params,
        ).result_columns
        drop = set(stored[0]) if stored else set()
        if not drop and len(set(ids)) == len(ids):
            return columns
        keep: list[int] = []
        for i, event_id in enumerate(ids):
            if event_id not in drop:
                drop.add(event_id)  # the same line twice within the batch
                keep.append(i)
        if len(keep) == len(ids):
            return columns
        return [[col[i] for i in keep] for col in columns] if keep else []


def _merge_ranges(ranges: list[tuple[int, int]], gap_ms: int = 60_000) -> list[tuple[int, int]]:
    """Overlapping or nearby (within ``gap_ms``) ranges merged, in order."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + gap_ms:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


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
    bar = Progress(progress)
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
            for columns in parallel_chunks(files, jobs, stats, errors, bar):
                sink.add(columns)
        else:
            for path in files:
                decoded = read_rows(path, stats, errors, bar)
                while rows := list(islice(decoded, batch_size - sink.pending)):
                    sink.add(to_columns(rows))
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
                _start_views(client)
    return stats


def _start_views(client: Client) -> None:
    """Restart the refreshable views (they catch up with one refresh); a failure here does
    not hide the import's own error, if it is ending on one."""
    failing = sys.exc_info()[1]
    try:
        client.command("SYSTEM START VIEWS")
    except Exception:
        if failing is None:
            raise


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


def run(dsn: str, options: ImportOptions, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """``pbx-analytics import``: the exit status (0 every file read; 1 a file unreadable, the engine
    busy, unreachable or failing; 2 bad flags, see :class:`ImportOptions`). See docs/import.md.
    ``out``/``err``: default ``sys.stdout``/``sys.stderr`` as they are at the call."""
    out, err = out or sys.stdout, err or sys.stderr
    _without_pandas()
    show_progress = err.isatty() if options.progress is None else options.progress
    try:
        # Through the service that holds the embedded engine, if one runs (issue 12).
        conn = engine_client.connect(dsn)
        client = conn.client
    except (clickhouse.EngineBusyError, engine_client.NotOwner) as exc:
        err.write(f"pbx-analytics import: {exc}\n")
        return 1
    except Exception as exc:  # unreachable server, bad credentials: say so, no traceback
        err.write(f"pbx-analytics import: cannot connect to {_redact(dsn)}: {exc}\n")
        return 1
    try:
        if options.migrate:
            migrations.apply_migrations(client)
        elif not client.command(f"EXISTS TABLE {TABLE}"):
            err.write(f"pbx-analytics import: {TABLE} does not exist at {dsn}: run "
                      "`pbx-analytics migrate` first, or import without --no-migrate\n")
            return 1
        if conn.service is not None:
            err.write(f"pbx-analytics import: through the running service (pid {conn.service.pid}, "
                      f"{conn.service.url}); webhooks keep flowing\n")
            os.nice(engine_client.BACKGROUND_NICE)  # decoding (and its processes) yields the CPU to them
        stats = import_files(client, options.files, batch_size=options.batch_size, errors=err,
                             progress=err if show_progress else None, jobs=options.jobs,
                             pause_views=dsn.startswith("chdb:") and conn.service is None)
    except (LogFileError, migrations.MigrationChanged) as exc:
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
    return 1 if stats.file_errors else 0
