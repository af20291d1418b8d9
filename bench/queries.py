"""Dashboard queries over simulated months (issue 7, benchmark 4).

1. Data: ``pbx-analytics simulate`` a 40-agent, 5-queue centre for 30 days
   (ending now, so the dashboards' ``now-24h`` ranges see it) into an access
   log, ``pbx-analytics import`` it into an embedded engine, and refresh the
   materialized 15-minute views. Kept under ``bench/results/queries-data/``,
   keyed by the scenario and its start date, and reused by later runs.
2. Every panel's SQL of every ``dashboards/json`` dashboard, expanded as
   Grafana and the ClickHouse plugin would (``tests/e2e/dashboards/grafana_sim.py``, the
   same expansion the dashboard tests use) with every variable on All, for a 1-day
   and a 30-day range ending at the data's end: p50 and max ms over
   ``repeats`` runs, and the rows returned.

3. The gain of the materialized views, measured in the same run: the same
   figures (offered, answered, abandoned, answered within SLA, per queue)
   from the materialized ``pbx.queue_stats_15m``, from ``pbx.queue_calls``
   (visits older than 6 hours from its refreshed copy ``pbx.queue_calls_data``)
   and computed from raw events through ``pbx.queue_calls_since`` (what a
   panel without either would run).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ingest.testing import REPO, refresh_views

__all__ = ["NotReady", "missing", "run"]

DATA = Path(__file__).resolve().parent / "results" / "queries-data"


class NotReady(RuntimeError):
    """An input of the queries benchmark does not exist yet."""


#: What the benchmark needs, and where it comes from.
NEEDS: dict[str, str] = {
    "ingest/simulation": "the simulator (`pbx-analytics simulate`, issue 3)",
    "ingest/backfill/importer.py": "the access-log importer (`pbx-analytics import`, issue 3)",
    "dashboards/json": "the Grafana dashboards with their panel SQL (issue 5)",
    "tests/e2e/dashboards/grafana_sim.py": "the Grafana/plugin SQL expansion the dashboard tests use (issue 5)",
}


def missing(repo: Path = REPO) -> list[str]:
    """The inputs that are not there yet."""
    absent = []
    for rel, what in NEEDS.items():
        path = repo / rel
        if not path.exists() or (path.is_dir() and not any(path.glob("*.json"))):
            absent.append(f"{rel}: {what}")
    return absent


def _cli(*args: str, timeout: float = 3600) -> str:
    out = subprocess.run([sys.executable, "-m", "ingest", *args], capture_output=True, text=True, timeout=timeout,
                         cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"pbx-analytics {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def prepare(days: int, agents: int, queues: int, calls_per_hour: float, seed: int = 1,
            log=print) -> tuple[Path, dict[str, Any]]:
    """The engine directory holding the scenario (built once), and what it holds."""
    end = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(days=days)
    key = f"{start:%Y%m%d}-d{days}-a{agents}-q{queues}-c{calls_per_hour:g}-s{seed}"
    home = DATA / key
    ready = home / "READY.json"
    if ready.exists():
        return home / "chdata", json.loads(ready.read_text())
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "sim.log.gz"
    started = time.perf_counter()
    sim_out = _cli("simulate", "--seed", str(seed), "--start", f"{start:%Y-%m-%dT%H:%M}", "--hours", str(days * 24),
                   "--queues", str(queues), "--agents", str(agents), "--calls-per-hour", f"{calls_per_hour:g}",
                   "--access-log", str(log_path))
    simulated = time.perf_counter() - started
    log(sim_out.strip())
    dsn = f"chdb://{home / 'chdata'}"
    started = time.perf_counter()
    imp_out = _cli("import", "--no-progress", "--clickhouse", dsn, str(log_path))
    imported = time.perf_counter() - started
    log(imp_out.strip())

    from ingest.storing import clickhouse

    client = clickhouse.connect(dsn)
    try:
        started = time.perf_counter()
        refresh_views(client)
        refreshed = time.perf_counter() - started
        events = client.query("SELECT count(), min(received_at), max(received_at) FROM pbx.events").result_rows[0]
    finally:
        client.close()
    info = {
        "key": key, "events": events[0], "first": str(events[1]), "last": str(events[2]),
        "simulate_s": round(simulated, 1), "import_s": round(imported, 1), "refresh_s": round(refreshed, 1),
        "end": end.isoformat(),
    }
    ready.write_text(json.dumps(info, indent=1))
    return home / "chdata", info


#: The same figures from the materialized 15-minute view, from the stored visit history the
#: dashboards' visit panels read (``pbx.queue_calls``), and from raw events: {lo}/{hi} are the range.
MV_VS_RAW: dict[str, str] = {
    "materialized (pbx.queue_stats_15m)": """
        SELECT queue_name, sum(offered), sum(answered), sum(abandoned), sum(answered_in_sla)
        FROM pbx.queue_stats_15m
        WHERE interval_start >= {lo} AND interval_start < {hi}
        GROUP BY queue_name ORDER BY queue_name""",
    "stored visits (pbx.queue_calls)": """
        SELECT queue_name,
            countIf(outcome IN ('answered', 'abandoned', 'short_abandon', 'overflow')),
            countIf(outcome = 'answered'), countIf(outcome = 'abandoned'),
            countIf(outcome = 'answered' AND in_sla = 1)
        FROM pbx.queue_calls
        WHERE entered_at >= {lo} AND entered_at < {hi}
        GROUP BY queue_name ORDER BY queue_name""",
    "raw events (pbx.queue_calls_since)": """
        SELECT queue_name,
            countIf(outcome IN ('answered', 'abandoned', 'short_abandon', 'overflow')),
            countIf(outcome = 'answered'), countIf(outcome = 'abandoned'),
            countIf(outcome = 'answered' AND in_sla = 1)
        FROM pbx.queue_calls_since(since = {lo})
        WHERE entered_at >= {lo} AND entered_at < {hi}
        GROUP BY queue_name ORDER BY queue_name""",
}


RAW = "raw events (pbx.queue_calls_since)"


def _timed(client: Any, sql: str, repeats: int) -> dict[str, Any]:
    times, result = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = client.query(sql).result_rows
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "rows": len(result),
            "result": result}


def run(workdir: Path, *, days: int = 30, agents: int = 40, queues: int = 5, calls_per_hour: float = 120,
        repeats: int = 5) -> dict[str, Any]:
    absent = missing()
    if absent:
        raise NotReady("needs simulator, importer and dashboards; missing: " + "; ".join(absent))
    from ingest.storing import clickhouse
    from tests.e2e.dashboards import grafana_sim as gs

    chdata, info = prepare(days, agents, queues, calls_per_hour)
    client = clickhouse.connect(f"chdb://{chdata}")
    results = []
    try:
        refresh_views(client)  # a reused engine: no refresh half done while panels are timed
        end = dt.datetime.fromisoformat(info["end"])
        ranges = {"1d": gs.TimeRange.of(end - dt.timedelta(days=1), end),
                  f"{days}d": gs.TimeRange.of(end - dt.timedelta(days=days), end)}
        for query in gs.panel_queries():
            entry: dict[str, Any] = {"id": query.id, "dashboard": query.dashboard.get("title"),
                                     "panel": query.panel.get("title")}
            for label, rng in ranges.items():
                variables = gs.default_variables(query.dashboard, rng, lambda s: client.query(s).result_rows)
                sql = gs.expand(query.sql, rng, variables, query.interval_ms(rng))
                times, rows = [], 0
                try:
                    for _ in range(repeats):
                        started = time.perf_counter()
                        rows = len(client.query(sql).result_rows)
                        times.append((time.perf_counter() - started) * 1000)
                    entry[label] = {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
                                    "rows": rows}
                except Exception as exc:  # a panel that fails is reported, not hidden
                    entry[label] = {"error": str(exc).splitlines()[0][:200]}
            results.append(entry)
        gain: dict[str, Any] = {}
        for label, rng in ranges.items():
            lo = f"toDateTime64('{rng.start:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
            hi = f"toDateTime64('{rng.end:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
            timed = {name: _timed(client, sql.format(lo=lo, hi=hi), repeats) for name, sql in MV_VS_RAW.items()}
            raw = timed[RAW]
            figures = [tuple(map(int, r[1:])) for r in raw["result"]]
            gain[label] = {
                name: {
                    **{k: v for k, v in t.items() if k != "result"},
                    "speedup": round(raw["p50_ms"] / t["p50_ms"], 1) if t["p50_ms"] else None,
                    # Same numbers every way, or the comparison means nothing.
                    "same_result": [tuple(map(int, r[1:])) for r in t["result"]] == figures,
                }
                for name, t in timed.items()
            }
    finally:
        client.close()
    return {"data": info, "mv_vs_raw": gain, "scenario": {"days": days, "agents": agents, "queues": queues,
                                       "calls_per_hour": calls_per_hour}, "repeats": repeats, "panels": results}


def gain_table(result: dict[str, Any]) -> list[list[str]]:
    rows = [["range", "computed from", "p50 ms", "max ms", "× faster", "same result"]]
    for label, g in result["mv_vs_raw"].items():
        for name in MV_VS_RAW:
            rows.append([label, name, str(g[name]["p50_ms"]), str(g[name]["max_ms"]), str(g[name]["speedup"]),
                         str(g[name]["same_result"])])
    return rows


def table(result: dict[str, Any]) -> list[list[str]]:
    labels = [k for k in result["panels"][0] if k not in ("id", "dashboard", "panel")] if result["panels"] else []
    rows = [["panel", *(f"{label} p50 ms" for label in labels), *(f"{label} rows" for label in labels)]]
    for p in result["panels"]:
        cells = [f"{p['dashboard']} / {p['panel']}"]
        for label in labels:
            cells.append(str(p[label].get("p50_ms", "error")))
        for label in labels:
            cells.append(str(p[label].get("rows", p[label].get("error", ""))))
        rows.append(cells)
    return rows
