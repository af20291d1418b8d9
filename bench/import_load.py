"""Webhook latency while ``pbx-analytics import`` goes through ``serve`` (issue 12).

One ``serve`` (the real command line) takes paced webhooks from ``wrk``. In the *loaded* rounds,
``pbx-analytics import`` (the real command line, a process of its own) backfills simulated
access logs, which it finds the service for and hands over through its ClickHouse HTTP
interface; *baseline* rounds are the same webhooks without an import. Rounds alternate
(baseline, loaded, ...) on the same process; each loaded round imports large logs of lines
not imported before (a re-import would only compare ids), long enough to outlast the window
at the speed the import reaches alone (the simulated days, copied forward in time, in as many
files as days: the import decodes as many files at once as alone). The table reports the
webhooks' latency of each kind (median over rounds) and its ratio to the baseline of the same
run, the spool's commit times (each webhook's answer waits for one), and the import's own
speed through the service against an import of the simulated days into an engine of its own
(no service, views paused: what ``import`` does when no service runs).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench._servers import Server
from bench._wrk import run_wrk
from bench.importing import long_log, make_logs

__all__ = ["run", "table"]


def _import(dsn: str, files: list[Path], cwd: Path, batch_size: int | None = None) -> subprocess.Popen[str]:
    batch = [] if batch_size is None else ["--batch-size", str(batch_size)]
    return subprocess.Popen([sys.executable, "-m", "ingest", "import", "--clickhouse", dsn, "--no-progress",
                             *batch, *map(str, files)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finished(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The import's own summary: lines and the seconds it measured (the command's start-up and
    migrations not included)."""
    out, err = proc.communicate(timeout=3600)
    match = re.search(r"(\d+) lines in ([\d.]+)s", out)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"import failed ({proc.returncode}): {out[-1000:]}{err[-2000:]}")
    lines, seconds = int(match[1]), float(match[2])
    waited = re.search(r"waited ([\d.]+) s of it for the service's webhooks", err)  # PBX_IMPORT_YIELD
    return {"lines": lines, "seconds": seconds, "lines_per_s": round(lines / seconds),
            "through_service": "through the running service" in err,
            "yielded_s": float(waited[1]) if waited else 0.0}


#: The spool's commit-time bucket whose excess the table shows (seconds, a bucket bound of
#: ``pbx_spool_commit_seconds``). 5 ms: on a quiet machine commits over it are ~1 a second, and
#: 2-3 a second while an import writes the engine's parts to the same disk (a group's fdatasync
#: waits behind them), which is most of the webhooks' p99 excess then (docs/benchmarks.md, issue 12);
#: none reached 50 ms, the bound before.
SLOW_COMMIT_S = "0.005"


def _commits(url: str) -> dict[str, float]:
    """``pbx_spool_commit_seconds`` of the service now: count, sum and the count at or under
    ``SLOW_COMMIT_S`` (a webhook is answered once its group of records is fsync'd)."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("pbx_spool_commit_seconds_count"):
            found["count"] = float(line.split()[-1])
        elif line.startswith("pbx_spool_commit_seconds_sum"):
            found["sum"] = float(line.split()[-1])
        elif line.startswith(f'pbx_spool_commit_seconds_bucket{{le="{SLOW_COMMIT_S}"}}'):
            found["fast"] = float(line.split()[-1])
    return found


def _commit_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    count = after["count"] - before["count"]
    return {"commits": count, "mean_ms": round(1000 * (after["sum"] - before["sum"]) / max(count, 1), 2),
            "slow": count - (after["fast"] - before["fast"])}


def run(workdir: Path, seconds: float, *, rate: float, rounds: int = 2, days: int = 2,
        serve_env: dict[str, str] | None = None, batch_sizes: tuple[int, ...] = ()) -> dict[str, Any]:
    """``batch_sizes``: the import's ``--batch-size`` of each loaded round of a round (its default
    when empty); with several, every round measures each once after its baseline, in an order that
    rotates from round to round, and the table has a row per size."""
    variants: list[int | None] = list(batch_sizes) or [None]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    files, lines = make_logs(workdir / "logs", days)
    result: dict[str, Any] = {"rate": rate, "seconds": seconds, "baseline": [], "loaded": [],
                              "batch_sizes": variants}

    # The simulated days into an engine of its own (migrated first): the import's speed when no
    # service runs.
    alone = f"chdb://{workdir / 'alone'}"
    subprocess.run([sys.executable, "-m", "ingest", "migrate", "--clickhouse", alone], cwd=workdir, check=True,
                   capture_output=True)
    result["alone"] = _finished(_import(alone, files, workdir))
    # Each round's logs outlast the window (plus the command's start-up) at twice the speed
    # alone (the machine's load drifts between the two measurements).
    per_file = max(lines, round(result["alone"]["lines_per_s"] * (seconds + 3) * 2)) // len(files)
    copies = -(-per_file // lines)
    logs = [[workdir / "logs" / f"round-{r}-{f}.log.gz" for f in range(len(files))]
            for r in range(rounds * len(variants))]
    for n, path in enumerate(p for paths in logs for p in paths):
        long_log(path, files, per_file, first_copy=1 + n * copies)
    result["log_lines"] = per_file * len(files)

    with Server("serve", "uvicorn", workdir / "serve", env=serve_env) as server:
        run_wrk(f"{server.url}/", 3.0, rate=rate, connections=16)  # warm up
        for r in range(rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for kind, batch in [("baseline", None)] + [("loaded", b) for b in order]:
                proc = None
                if kind == "loaded":
                    proc = _import(server.dsn, logs.pop(), workdir, batch)
                    time.sleep(1.0)  # the command's start-up: measure while rows flow
                commits = _commits(server.url)
                res = run_wrk(f"{server.url}/", seconds, rate=rate, connections=16)
                entry: dict[str, Any] = {"round": r, "intended_latency_ms": res.intended_latency_ms,
                                         "latency_ms": res.latency_ms, "rps": round(res.rps, 1),
                                         "errors": res.error_count,
                                         "spool_commits": _commit_delta(commits, _commits(server.url))}
                if proc is not None:
                    entry["batch_size"] = batch
                    entry["import_running_at_end"] = proc.poll() is None
                    entry["import"] = _finished(proc)
                result[kind].append(entry)
    result["baseline_summary"] = _latency(result["baseline"], seconds)
    result["loaded_summary"] = []
    for batch in variants:
        # Each loaded round against the baseline round just before it (the machine's load drifts
        # between rounds more than within a pair), then the median over the pairs.
        pairs = [(result["baseline"][lo["round"]], lo) for lo in result["loaded"] if lo["batch_size"] == batch]
        loaded = [lo for _, lo in pairs]
        summary = _latency(loaded, seconds) | {"batch_size": batch}
        for p in ("p50", "p99"):
            for key, suffix in (("intended_latency_ms", ""), ("latency_ms", "_service")):
                summary[f"{p}{suffix}_ratio"] = round(statistics.median(lo[key][p] / base[key][p]
                                                                        for base, lo in pairs), 2)
        # The share of its time the import waited for the webhooks (PBX_IMPORT_YIELD; 0 where the
        # service does not say to).
        imports = [r["import"] for r in loaded]
        summary["import_paused_share"] = round(statistics.median(i["yielded_s"] / i["seconds"] for i in imports), 2)
        summary["through_lines_per_s"] = round(sum(i["lines"] for i in imports) / sum(i["seconds"] for i in imports))
        summary["import_speed_ratio"] = round(summary["through_lines_per_s"] / result["alone"]["lines_per_s"], 2)
        summary["import_covered_window"] = all(r["import_running_at_end"] for r in loaded)
        result["loaded_summary"].append(summary)
    return result


def _latency(entries: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Medians over rounds of the webhooks' latency and the spool's commits."""
    out: dict[str, Any] = {}
    for p in ("p50", "p99"):
        out[f"{p}_ms"] = statistics.median(r["intended_latency_ms"][p] for r in entries)
        out[f"{p}_service_ms"] = statistics.median(r["latency_ms"][p] for r in entries)
    out["commit_mean_ms"] = statistics.median(r["spool_commits"]["mean_ms"] for r in entries)
    out["commits_slow_per_s"] = statistics.median(r["spool_commits"]["slow"] / seconds for r in entries)
    return out


def table(res: dict[str, Any]) -> list[list[str]]:
    """Latency from each webhook's intended send time (what a PBX waits, falling behind
    included), and as ``wrk`` saw each answer; ratios are the median of per-round pairs. The
    spool's commits (write + fdatasync of a group of webhooks, which each answer waits for):
    mean time, and how many a second took over ``SLOW_COMMIT_S``."""
    rows = [["webhooks", "import", "p50 / p99 ms", "answer p50 / p99 ms", "p99 / baseline",
             "answer p99 / baseline", f"spool commit mean ms / >{float(SLOW_COMMIT_S) * 1000:g} ms per s",
             "import lines/s"]]
    alone = res["alone"]["lines_per_s"]
    for summary in [res["baseline_summary"], *res["loaded_summary"]]:
        base = summary is res["baseline_summary"]
        batch = summary.get("batch_size")
        what = "through serve" + ("" if batch is None else f", --batch-size {batch:,}")
        rows.append([
            f"{res['rate']:g}/s",
            "none" if base else what + ("" if summary["import_covered_window"] else " (ended in the window)"),
            f"{summary['p50_ms']:.1f} / {summary['p99_ms']:.1f}",
            f"{summary['p50_service_ms']:.1f} / {summary['p99_service_ms']:.1f}",
            "1.00" if base else f"{summary['p99_ratio']:.2f}",
            "1.00" if base else f"{summary['p99_service_ratio']:.2f}",
            f"{summary['commit_mean_ms']:.1f} / {summary['commits_slow_per_s']:.1f}",
            f"alone {alone:,}" if base else f"{summary['through_lines_per_s']:,} ({summary['import_speed_ratio']:.2f}x "
                                            f"alone; waited {summary['import_paused_share']:.0%} of it for webhooks)",
        ])
    return rows
