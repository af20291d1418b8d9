"""Decoding processes: several log files decoded at once, rows handed to the importing process.

Used by ``ingest.backfill.importer`` when there are CPUs to spare
(:func:`auto_jobs`); the importing process keeps the engine and the inserts.
A record batch crosses the process boundary as Arrow's IPC form (pickle of a
``RecordBatch``): buffers, no per-row objects.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from ingest.backfill.batches import read_batches
from ingest.backfill.rows import ImportStats, Progress

__all__ = ["PARALLEL_MIN_BYTES", "auto_jobs", "parallel_batches"]

#: Below this much input (bytes, as stored: gzip counts compressed), decode in this process.
PARALLEL_MIN_BYTES = 8 << 20


class _Collect(io.StringIO):
    """Error reports of a decoding process, handed to the parent with each chunk."""

    def take(self) -> str:
        text = self.getvalue()
        self.seek(0)
        self.truncate()
        return text


_FILE_COUNTS = ("files", "lines", "skipped", "unparsed", "bad", "file_errors", "not_logs")


def _decode_worker(tasks: Any, results: Any) -> None:
    """A decoding process: file names from ``tasks`` -> record batches on ``results``."""
    try:
        while (name := tasks.get()) is not None:
            stats, errors = ImportStats(), _Collect()
            for batch in read_batches(Path(name), stats, errors):
                results.put(("rows", batch, errors.take()))
            results.put(("file", {k: getattr(stats, k) for k in _FILE_COUNTS}, errors.take()))
    except BaseException as exc:  # reported to the parent, which raises it
        results.put(("error", f"{type(exc).__name__}: {exc}", ""))
    results.put(("exit", None, ""))


def parallel_batches(files: list[Path], jobs: int, stats: ImportStats, errors: IO[str] | None,
                     bar: Progress) -> Iterator[pa.RecordBatch]:
    """Record batches decoded by ``jobs`` processes, one file each at a time, in arrival order.

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
    procs = [ctx.Process(target=_decode_worker, args=(tasks, results), daemon=True,
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
                rows += payload.num_rows
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
    (Figures of the line-by-line decoder; docs/benchmarks.md has today's.)
    """
    cpus = os.cpu_count() or 1
    if cpus < 3 or sum(p.stat().st_size for p in files) < PARALLEL_MIN_BYTES:
        return 0
    return max(1, min(len(files), cpus - 1))
