"""``pbx-analytics import``: backfill ``pbx.events`` from web-server access logs.

PBX admins often already point the webhooks at nginx or Apache; their access
logs hold months of history. ``ingest.backfill.batches`` turns each file into
the rows the live service would have stored, many lines at a time (decoding
processes do that for several files at once, ``_parallel``); a sink
(``ingest.backfill.sink``) stores them: today ``EngineSink``, through the one
insert of ``pbx.events`` (``ingest.events.table.EventsInsert``).

Idempotency (details and limits in ``docs/import.md``): a line's ``event_id``
is derived from the line, so the same line read twice gets the same id, and
ids already stored are filtered out before each insert.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from clickhouse_connect.driver.client import Client

from ingest.backfill._parallel import auto_jobs, parallel_batches
from ingest.backfill.accesslog import LogFileError
from ingest.backfill.batches import read_batches
from ingest.backfill.rows import ImportStats, Progress
from ingest.backfill.sink import EngineSink, Sink
from ingest.config import ImportOptions
from ingest.events.table import TABLE
from ingest.querying import client as engine_client
from ingest.storing import clickhouse, migrations

__all__ = ["DEFAULT_BATCH_SIZE", "ImportStats", "LogFileError", "import_files", "run"]

#: Rows per insert: large blocks are what ClickHouse likes (fewer parts to write,
#: fsync and merge: 100k rows took 13 % less CPU per line than 50k).
DEFAULT_BATCH_SIZE = ImportOptions.batch_size


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
    stats = ImportStats()
    sink = EngineSink(client, stats, batch_size)
    if pause_views:
        client.command("SYSTEM STOP VIEWS")
    try:
        return import_into(sink, paths, stats, errors=errors, progress=progress, jobs=jobs)
    finally:
        if pause_views:
            _start_views(client)


def import_into(sink: Sink, paths: Sequence[str | Path], stats: ImportStats | None = None, *,
                errors: IO[str] | None = None, progress: IO[str] | None = None,
                jobs: int | None = None) -> ImportStats:
    """Decode access-log files and hand their rows to ``sink`` (see :func:`import_files`)."""
    files = [Path(p) for p in paths]
    for path in files:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise LogFileError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    stats = ImportStats() if stats is None else stats
    started = time.perf_counter()
    bar = Progress(progress)
    jobs = auto_jobs(files) if jobs is None else max(0, min(jobs, len(files)))
    try:
        if jobs > 0:
            for batch in parallel_batches(files, jobs, stats, errors, bar):
                sink.add(batch)
        else:
            for path in files:
                for batch in read_batches(path, stats, errors, bar):
                    sink.add(batch)
        sink.flush()
    finally:
        try:
            sink.close()
        finally:
            bar.close()
            stats.seconds = time.perf_counter() - started
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
    """``pbx-analytics import``: the exit status (0 every file read; 1 a file unreadable or not an
    access log, the engine busy, unreachable or failing; 2 bad flags, see :class:`ImportOptions`).
    See docs/import.md.
    ``out``/``err``: default ``sys.stdout``/``sys.stderr`` as they are at the call."""
    out, err = out or sys.stdout, err or sys.stderr
    _without_pandas()
    show_progress = err.isatty() if options.progress is None else options.progress
    try:
        # Through the service that holds the embedded engine, if one runs (issue 12).
        conn = engine_client.connect(dsn)
        client = conn.client
    except (clickhouse.EngineError, engine_client.NotOwner) as exc:  # busy, not installed, unreachable
        err.write(f"pbx-analytics import: {exc}\n")
        return 1
    except Exception as exc:  # bad credentials, ...: say so, no traceback
        err.write(f"pbx-analytics import: cannot connect to {_redact(dsn)}: {clickhouse.describe(exc, dsn)}\n")
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
    if stats.yielded_s:
        err.write(f"pbx-analytics import: waited {stats.yielded_s:.1f} s of it for the service's webhooks "
                  "(PBX_IMPORT_YIELD)\n")
    out.write(stats.summary() + "\n")
    out.flush()
    return 1 if stats.file_errors or stats.not_logs else 0
