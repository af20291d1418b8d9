"""Access-log import: speed against the engine's own parse, and memory against the log's length.

``python -m bench run import [--days N] [--repeat N] [--memory-lines 500000,3000000]``

**Speed.** Simulated days of a 60-agent, 6-queue centre as gzip access logs
(one file a day, as rotated logs are), then, in the same run and process:

* **engine parse** -- the baseline: the embedded engine reading the same files
  itself, ``file(..., 'Regexp')`` with the importer's line pattern plus
  ``extractURLParameter`` of every webhook parameter (what "let the engine
  parse" costs, without any of the import's rules);
* **decode** -- ``ingest.backfill.batches.read_batches``: the import's rows, no engine;
* **import** -- ``import_files`` into a fresh embedded engine (as the command
  does there: refreshable views paused until the end);
* **re-import** -- the same files again (every line already stored);
* **import, N decoding processes** -- when the machine has 3+ CPUs.

Wall time and CPU time of this process (the engine's threads included; not the
decoding processes') are both reported, each as a ratio to the engine parse.

**Memory.** ``pbx-analytics import`` as a user runs it (a subprocess, fresh
embedded engine), on one log of N lines (the simulated days repeated, shifted
in time, so every line is a new event): peak RSS (the child's ``ru_maxrss``),
wall time, lines/s.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ingest.backfill import importer
from ingest.backfill._parallel import auto_jobs
from ingest.backfill.accesslog import LINE, format_time, parse_log_time
from ingest.backfill.batches import read_batches
from ingest.backfill.rows import ImportStats
from ingest.events.spec import PARAMS
from ingest.storing import clickhouse, migrations

__all__ = ["engine_parse_sql", "long_log", "make_logs", "memory_table", "run", "table"]


def make_logs(directory: Path, days: int) -> tuple[list[Path], int]:
    """One gzip log per simulated day of a 60-agent, 6-queue centre."""
    from ingest.simulation import SimConfig, simulate, write_access_log

    paths, lines = [], 0
    for day in range(days):
        config = SimConfig(seed=day, hours=24, queues=6, agents=60, calls_per_hour=120,
                           start=SimConfig().start.replace(hour=0) + dt.timedelta(days=day))
        path = directory / f"access-{day}.log.gz"
        lines += write_access_log(path, simulate(config).events, tz="Europe/Prague")
        paths.append(path)
    return paths, lines


def engine_parse_sql(path: Path) -> str:
    """The baseline query on one file: the engine's Regexp format with the importer's line
    pattern, every webhook parameter extracted, the result summed so nothing is skipped."""
    pattern = LINE.pattern.replace("?P<", "?<") + ".*"  # RE2 takes (?<name>...) as well; a whole line
    extracts = " + ".join(f"length(extractURLParameter(target, '{p}'))" for p in PARAMS)
    compression = "gzip" if path.read_bytes()[:2] == b"\x1f\x8b" else "none"
    return (f"SELECT count(), sum({extracts}) FROM file('{path}', 'Regexp', "
            f"'date String, clock String, offset String, target String', '{compression}') "
            f"SETTINGS format_regexp = $${pattern}$$, format_regexp_escaping_rule = 'Raw', "
            "format_regexp_skip_unmatched = 1")


def long_log(path: Path, base: list[Path], lines: int, first_copy: int = 0) -> int:
    """A gzip log of ``lines`` lines: ``base``'s lines again and again, each copy shifted by the
    base's whole days and its calls renamed (``call_id`` and ``custom_call_id`` get the copy's
    number), so each line is another event of another call; the first copy is shifted
    ``first_copy`` times (another log's copies do not overlap this one's). Returns the lines
    written.

    Renamed, since a PBX does not reuse a call's id: with the ids kept, every copy's events
    joined the same calls, and the per-call layer paired them all with each other (a refresh of
    such calls took 16 GiB, measured)."""
    stamp = re.compile(r"\[([^\]]+)\]")
    call_ids = re.compile(r"([?&](?:custom_)?call_id=)([^&\s\"]+)")
    parsed = []
    for source in base:
        with gzip.open(source, "rt") as f:
            for line in f:
                m = stamp.search(line)
                text = m.group(1)
                sign = 1 if text[-5] == "+" else -1
                offset = sign * (int(text[-4:-2]) * 3600 + int(text[-2:]) * 60)
                parsed.append((line[:m.start(1)], parse_log_time(text), offset, line[m.end(1):]))
    span = ((parsed[-1][1] - parsed[0][1]) // 86400 + 1) * 86400
    written = 0
    with gzip.open(path, "wt", compresslevel=1) as out:
        shift = first_copy * span
        while written < lines:
            batch = parsed[: lines - written]
            copy = shift // span
            rename = (lambda text: text) if copy == 0 else partial(call_ids.sub, rf"\g<1>\g<2>~{copy}")
            out.writelines(f"{a}{format_time(t + shift, o)}{rename(b)}" for a, t, o, b in batch)
            written += len(batch)
            shift += span
    return written


def _timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """((wall seconds, CPU seconds of this process), result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), result


def _peak_rss_of(cmd: list[str]) -> tuple[int, float, str, str]:
    """Run ``cmd``; (its peak RSS in KiB, wall seconds, stdout, stderr)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.decode()[-2000:]}")
    return usage.ru_maxrss, time.perf_counter() - started, out.decode(), err.decode()


def run(workdir: Path, *, days: int = 3, repeat: int = 3, memory_lines: list[int] | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    (t_gen, _), (paths, lines) = _timed(lambda: make_logs(workdir, days))
    log(f"{lines:,} lines in {len(paths)} gzip files ({sum(p.stat().st_size for p in paths) / 1e6:.1f} MB), "
        f"generated in {t_gen:.1f}s")
    jobs = auto_jobs(paths)
    stages: dict[str, list[tuple[float, float]]] = {"engine parse": [], "decode": [], "import": [], "re-import": []}
    if jobs:
        stages[f"import, {jobs} decoding process(es)"] = []
    for attempt in range(repeat):
        client = clickhouse.connect(f"chdb://{workdir / f'engine-{attempt}'}")
        try:
            migrations.apply_migrations(client)
            t, counts = _timed(lambda: [client.command(engine_parse_sql(p)) for p in paths])
            assert sum(int(c[0]) for c in counts) == lines, counts
            stages["engine parse"].append(t)
            t, n = _timed(lambda: sum(b.num_rows for p in paths for b in read_batches(p, ImportStats())))
            assert n == lines, n
            stages["decode"].append(t)
            t, stats = _timed(lambda: importer.import_files(client, paths, jobs=0, pause_views=True))
            assert stats.imported == lines, stats
            stages["import"].append(t)
            t, stats = _timed(lambda: importer.import_files(client, paths, jobs=0, pause_views=True))
            assert stats.duplicates == lines, stats
            stages["re-import"].append(t)
        finally:
            client.close()
        if jobs:
            client = clickhouse.connect(f"chdb://{workdir / f'engine-p{attempt}'}")
            try:
                migrations.apply_migrations(client)
                t, stats = _timed(lambda: importer.import_files(client, paths, jobs=jobs, pause_views=True))
                assert stats.imported == lines, stats
                stages[f"import, {jobs} decoding process(es)"].append(t)
            finally:
                client.close()
    speed = {name: {"wall_s": statistics.median(w for w, _ in times), "cpu_s": statistics.median(c for _, c in times)}
             for name, times in stages.items()}
    memory = []
    for n in memory_lines or []:
        big = workdir / f"long-{n}.log.gz"
        written = long_log(big, paths, n)
        rss_kib, seconds, out, _ = _peak_rss_of([sys.executable, "-m", "ingest", "import", "--clickhouse",
                                                 f"chdb://{workdir / f'memory-{n}'}", "--no-progress", str(big)])
        memory.append({"lines": written, "peak_rss_mib": round(rss_kib / 1024, 1), "seconds": round(seconds, 1),
                       "lines_per_s": round(written / seconds), "summary": out.strip()})
        log(f"memory: {written:,} lines, peak RSS {rss_kib / 1024:,.0f} MiB, {seconds:.0f}s")
        big.unlink()
    return {"lines": lines, "files": len(paths), "repeat": repeat, "speed": speed, "memory": memory,
            "load_average": [round(x, 2) for x in (*load_before[:1], os.getloadavg()[0])]}


def table(result: dict[str, Any]) -> list[list[str]]:
    lines = result["lines"]
    base = result["speed"]["engine parse"]
    rows = [["stage", "lines/s (wall)", "lines per CPU-second", "× engine parse (wall)", "× engine parse (CPU)"]]
    for name, t in result["speed"].items():
        rows.append([name, f"{lines / t['wall_s']:,.0f}", f"{lines / t['cpu_s']:,.0f}",
                     f"{base['wall_s'] / t['wall_s']:.2f}", f"{base['cpu_s'] / t['cpu_s']:.2f}"])
    return rows


def memory_table(result: dict[str, Any]) -> list[list[str]]:
    rows = [["lines", "peak RSS MiB", "seconds", "lines/s"]]
    rows += [[f"{m['lines']:,}", f"{m['peak_rss_mib']:,.0f}", f"{m['seconds']:.0f}", f"{m['lines_per_s']:,}"]
             for m in result["memory"]]
    return rows
