"""Access-log import speed: ``python bench/bench_import.py [--days N] [--repeat N]``.

Generates simulated access logs (gzip, as rotated logs are), then measures in
the same run:

* **baseline** -- the floor of any importer: read + gunzip + the line regex;
* **decode** -- every line through the service's decoding path into
  ``pbx.events`` rows as the import builds them (``ingest.backfill.rows.read_rows``), no database;
* **import** -- ``pbx-analytics import`` into a fresh embedded engine (as the
  command does there: refreshable views paused until the end);
* **re-import** -- the same files again (every line already stored);
* **import, N decoding processes** -- decoding in N processes (one per CPU but one, at
  most one per file), inserting in this one: ``ingest.backfill._parallel.auto_jobs``.

CPU seconds are this process's own (the engine's threads included, the
decoding processes' not), so only wall time compares the parallel import.

Prints lines/s and each figure's ratio to the baseline, as a Markdown table
for ``docs/benchmarks.md`` (section "Import").
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ingest.backfill import importer
from ingest.backfill.accesslog import LINE
from ingest.backfill.rows import ImportStats, read_rows
from ingest.simulation import SimConfig, simulate, write_access_log
from ingest.storing import clickhouse, migrations


def make_logs(directory: Path, days: int) -> tuple[list[Path], int]:
    """One gzip log per simulated day of a 60-agent, 6-queue centre."""
    paths, lines = [], 0
    for day in range(days):
        config = SimConfig(seed=day, hours=24, queues=6, agents=60, calls_per_hour=120,
                           start=SimConfig().start.replace(hour=0) + dt.timedelta(days=day))
        path = directory / f"access-{day}.log.gz"
        lines += write_access_log(path, simulate(config).events, tz="Europe/Prague")
        paths.append(path)
    return paths, lines


def baseline(paths: list[Path]) -> int:
    n = 0
    match = LINE.match
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                m = match(line)
                if m is not None:
                    m.groups()
                    n += 1
    return n


def decode_only(paths: list[Path]) -> int:
    stats = ImportStats()
    n = 0
    for path in paths:
        for _ in read_rows(path, stats):
            n += 1
    return n


def timed(fn, *args) -> tuple[tuple[float, float], object]:
    """((wall seconds, CPU seconds of this process), result). CPU time is the steadier
    figure on a shared machine; the engine's own threads count in it too."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return (time.perf_counter() - wall, time.process_time() - cpu), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3, help="simulated days of logs (~80k lines each)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the median is shown")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        tmpdir = Path(tmp)
        t_gen, (paths, lines) = timed(make_logs, tmpdir, args.days)
        size = sum(p.stat().st_size for p in paths)
        print(f"{lines:,} lines in {len(paths)} gzip files ({size / 1e6:.1f} MB), generated in {t_gen[0]:.1f}s",
              file=sys.stderr)

        jobs = max(1, min(len(paths), (os.cpu_count() or 1) - 1))  # as auto_jobs
        results: dict[str, list[tuple[float, float]]] = {"baseline": [], "decode": [], "import": [],
                                                         "re-import": []}
        results[f"import, {jobs} decoding process(es)"] = []
        decoders: list[float] = []  # CPU seconds of the decoding processes, per run
        for run in range(args.repeat):
            results["baseline"].append(timed(baseline, paths)[0])
            results["decode"].append(timed(decode_only, paths)[0])
            client = clickhouse.connect(f"chdb://{tmpdir / f'engine-{run}'}")
            try:
                migrations.apply_migrations(client)
                t, stats = timed(lambda: importer.import_files(client, paths, jobs=0, pause_views=True))
                assert stats.imported == lines, stats  # type: ignore[attr-defined]
                results["import"].append(t)
                t, stats = timed(lambda: importer.import_files(client, paths, jobs=0, pause_views=True))
                assert stats.duplicates == lines, stats  # type: ignore[attr-defined]
                results["re-import"].append(t)
            finally:
                client.close()
            client = clickhouse.connect(f"chdb://{tmpdir / f'engine-p{run}'}")
            try:
                migrations.apply_migrations(client)
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                t, stats = timed(lambda: importer.import_files(client, paths, jobs=jobs, pause_views=True))
                assert stats.imported == lines, stats  # type: ignore[attr-defined]
                results[f"import, {jobs} decoding process(es)"].append(t)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                decoders.append(after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime)
            finally:
                client.close()

    base_wall = statistics.median(w for w, _ in results["baseline"])
    base_cpu = statistics.median(c for _, c in results["baseline"])
    load_after = os.getloadavg()
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.1f} before / {load_after[0]:.1f} after (1-min), median of {args.repeat} runs, "
          f"{lines:,} lines, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| stage | lines/s (wall) | lines per CPU-second | ratio to baseline (wall) | ratio to baseline (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for name, times in results.items():
        wall = statistics.median(w for w, _ in times)
        cpu = statistics.median(c for _, c in times)
        print(f"| {name} | {lines / wall:,.0f} | {lines / cpu:,.0f} | {base_wall / wall:.3f} | {base_cpu / cpu:.3f} |")
    main_cpu = statistics.median(c for _, c in results[f"import, {jobs} decoding process(es)"])
    decode_cpu = statistics.median(decoders)
    print(f"\nWith {jobs} decoding process(es): importing process {lines / main_cpu:,.0f} lines per CPU-second, "
          f"decoding processes {lines / decode_cpu:,.0f} lines per CPU-second (together). On {jobs + 1} idle "
          f"CPUs the slower side bounds the import at ~{lines / max(main_cpu, decode_cpu / jobs):,.0f} lines/s; "
          f"in one process it is bounded by the sum: ~{lines / statistics.median(c for _, c in results['import']):,.0f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
