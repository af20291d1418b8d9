"""Query times of the issue-14 views over simulated months: ``python -m bench.analytics``.

The data is ``bench/queries.py``'s (a 40-agent, 5-queue centre for ``--days``
days ending now, simulated, imported and refreshed once, cached under
``bench/results/queries-data/``). On it, the queries the Calls, Staffing and
first-contact-resolution panels will run — for the last day and for the
whole period — each timed ``--repeats`` times (p50, max, rows).

Baselines measured in the same run: each ``pbx.calls`` query also runs on
``pbx.calls_since`` from the range's start (the same calls computed from raw
events, what the view would cost without its stored history: "× faster"),
and a 15-minute panel query on the materialized ``pbx.queue_stats_15m``
anchors the machine's speed (``× anchor``: how many such panels one query
costs). Results are checked equal between a query and its raw twin.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import queries
from bench._machine import load_average, machine
from bench.cli import RESULTS, print_table
from ingest.testing import refresh_views

__all__ = ["QUERIES", "main", "run"]

#: The anchor: a 15-minute panel on the materialized view ({lo}, {hi}: the range).
ANCHOR = """
    SELECT queue_name, sum(offered), sum(answered), sum(abandoned), sum(answered_in_sla)
    FROM pbx.queue_stats_15m WHERE interval_start >= {lo} AND interval_start < {hi}
    GROUP BY queue_name ORDER BY queue_name"""

_CALL_COLUMNS = "call_id, started_at, direction, caller_num, dialed_num, queues, agent, agents, outcome, wait_s, talk_s"

#: name -> (SQL on the views, SQL of the same figures from raw events or None). {lo}/{hi} are the
#: range, {caller} a caller number and {agent} an agent that exist in the data.
QUERIES: dict[str, tuple[str, str | None]] = {
    "Calls: newest 1000 in range": (
        f"SELECT {_CALL_COLUMNS} FROM pbx.calls WHERE started_at >= {{lo}} AND started_at < {{hi}} "
        "ORDER BY started_at DESC, call_id LIMIT 1000",
        f"SELECT {_CALL_COLUMNS} FROM pbx.calls_since(since = {{lo}}) WHERE started_at < {{hi}} "
        "ORDER BY started_at DESC, call_id LIMIT 1000"),
    "Calls: one caller's calls": (
        f"SELECT {_CALL_COLUMNS} FROM pbx.calls WHERE started_at >= {{lo}} AND started_at < {{hi}} "
        "AND caller_num = {caller} ORDER BY started_at, call_id",
        f"SELECT {_CALL_COLUMNS} FROM pbx.calls_since(since = {{lo}}) WHERE started_at < {{hi}} "
        "AND caller_num = {caller} ORDER BY started_at, call_id"),
    "Calls: one agent's calls": (
        f"SELECT {_CALL_COLUMNS} FROM pbx.calls WHERE started_at >= {{lo}} AND started_at < {{hi}} "
        "AND has(agents, {agent}) ORDER BY started_at DESC, call_id LIMIT 1000",
        f"SELECT {_CALL_COLUMNS} FROM pbx.calls_since(since = {{lo}}) WHERE started_at < {{hi}} "
        "AND has(agents, {agent}) ORDER BY started_at DESC, call_id LIMIT 1000"),
    "Calls: by direction and outcome": (
        "SELECT direction, outcome, count() FROM pbx.calls WHERE started_at >= {lo} AND started_at < {hi} "
        "GROUP BY ALL ORDER BY ALL",
        "SELECT direction, outcome, count() FROM pbx.calls_since(since = {lo}) WHERE started_at < {hi} "
        "GROUP BY ALL ORDER BY ALL"),
    "FCR per queue and day (window 1 day)": (
        "SELECT toDate(started_at) AS day, first_queue, "
        "100 * countIf(answered = 1 AND repeat = 0) / countIf(answered = 1) AS fcr_pct "
        "FROM pbx.repeat_calls(window_s = 86400) WHERE started_at >= {lo} AND started_at < {hi} AND answered = 1 "
        "GROUP BY day, first_queue ORDER BY day, first_queue", None),
    "Staffing per interval and queue": (
        "SELECT * FROM pbx.staffing_15m WHERE interval_start >= {lo} AND interval_start < {hi} "
        "ORDER BY interval_start, queue_name", None),
    "Staffing, centre: required vs staffed": (
        """SELECT r.interval_start, r.required, r.erlangs, s.staffed
           FROM (SELECT interval_start, sum(agents_required) AS required, sum(traffic_erlangs) AS erlangs
                 FROM pbx.staffing_15m WHERE interval_start >= {lo} AND interval_start < {hi}
                 GROUP BY interval_start) AS r
           LEFT JOIN (SELECT interval_start, sum(talk_s + idle_s) / 900 AS staffed FROM pbx.agent_stats_15m
                      WHERE interval_start >= {lo} AND interval_start < {hi} GROUP BY interval_start) AS s
             ON s.interval_start = r.interval_start
           ORDER BY r.interval_start""", None),
}


def _timed(client: Any, sql: str, repeats: int) -> dict[str, Any]:
    """Wall and CPU time of ``repeats`` runs. The embedded engine runs in this process, so its CPU
    time (every thread) is the query's: steadier than wall time on a shared machine."""
    times, cpu, result = [], [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = client.query(sql).result_rows
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
            "cpu_ms": round(statistics.median(cpu), 1), "rows": len(result), "result": result}


def run(*, days: int = 30, agents: int = 40, queues: int = 5, calls_per_hour: float = 120,
        repeats: int = 5) -> dict[str, Any]:
    from ingest.storing import clickhouse, migrations

    chdata, info = queries.prepare(days, agents, queues, calls_per_hour)
    client = clickhouse.connect(f"chdb://{chdata}")
    try:
        migrations.apply_migrations(client)  # a cache built before these views: add them
        _check_migrations(client, chdata)
        refresh_views(client)
        end = dt.datetime.fromisoformat(info["end"])
        caller, agent = client.query(
            "SELECT (SELECT caller_num FROM pbx.calls WHERE direction = 'inbound' GROUP BY caller_num "
            "ORDER BY count() DESC, caller_num LIMIT 1), (SELECT min(agent) FROM pbx.calls)").result_rows[0]
        stored = client.query("SELECT count() FROM pbx.calls_data FINAL").result_rows[0][0]
        out: dict[str, Any] = {"data": {**info, "calls_stored": stored}, "repeats": repeats, "ranges": {}}
        for label, start in (("1d", end - dt.timedelta(days=1)), (f"{days}d", end - dt.timedelta(days=days))):
            params = {"lo": f"toDateTime64('{start:%Y-%m-%d %H:%M:%S}', 3, 'UTC')",
                      "hi": f"toDateTime64('{end:%Y-%m-%d %H:%M:%S}', 3, 'UTC')",
                      "caller": f"'{caller}'", "agent": f"'{agent}'"}
            anchor = _timed(client, ANCHOR.format(**params), repeats)
            entries: dict[str, Any] = {"anchor (pbx.queue_stats_15m panel)": _strip(anchor)}
            for name, (sql, raw_sql) in QUERIES.items():
                t = _timed(client, sql.format(**params), repeats)
                entry = _strip(t)
                entry["x_anchor"] = round(t["p50_ms"] / anchor["p50_ms"], 1) if anchor["p50_ms"] else None
                if raw_sql:
                    raw = _timed(client, raw_sql.format(**params), repeats)
                    entry["raw_p50_ms"] = raw["p50_ms"]
                    entry["raw_cpu_ms"] = raw["cpu_ms"]
                    entry["x_faster_than_raw"] = round(raw["p50_ms"] / t["p50_ms"], 1) if t["p50_ms"] else None
                    entry["x_less_cpu_than_raw"] = round(raw["cpu_ms"] / t["cpu_ms"], 1) if t["cpu_ms"] else None
                    entry["same_result_as_raw"] = raw["result"] == t["result"]
                entries[name] = entry
            out["ranges"][label] = entries
    finally:
        client.close()
    return out


def _check_migrations(client: Any, chdata: Path) -> None:
    """Refuse a cached engine whose applied migrations differ from ``sql/`` (it would time old views)."""
    from ingest.storing import migrations

    applied = dict(client.query("SELECT version, checksum FROM pbx.schema_migrations").result_rows)
    changed = [f"{m.version:04d}_{m.name}" for m in migrations.load_migrations() if applied.get(m.version) != m.checksum]
    if changed:
        raise RuntimeError(f"{chdata.parent} was built with other versions of {', '.join(changed)}: "
                           "delete that directory and run again (the data is rebuilt)")


def _strip(timed: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in timed.items() if k != "result"}


def table(result: dict[str, Any]) -> list[list[str]]:
    rows = [["range", "query", "p50 ms", "max ms", "CPU ms", "rows", "× anchor", "raw p50 ms", "raw CPU ms",
             "× faster than raw", "× less CPU", "same"]]
    for label, entries in result["ranges"].items():
        for name, e in entries.items():
            rows.append([label, name, str(e["p50_ms"]), str(e["max_ms"]), str(e["cpu_ms"]), str(e["rows"]),
                         str(e.get("x_anchor", "")), str(e.get("raw_p50_ms", "")), str(e.get("raw_cpu_ms", "")),
                         str(e.get("x_faster_than_raw", "")), str(e.get("x_less_cpu_than_raw", "")),
                         str(e.get("same_result_as_raw", ""))])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.analytics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30, help="simulated days (default 30)")
    parser.add_argument("--calls-per-hour", dest="calls_per_hour", type=float, default=120,
                        help="arrivals per queue per hour at the daily peak (default 120)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each query (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the JSON result")
    args = parser.parse_args(argv)
    report = {"machine": machine()}
    print(f"machine: {report['machine']['nproc']} × {report['machine']['cpu']}, "
          f"load average {report['machine']['load_average']}")
    report["analytics"] = run(days=args.days, calls_per_hour=args.calls_per_hour, repeats=args.repeats)
    report["load_average_end"] = load_average()
    print(f"data: {report['analytics']['data']}")
    print_table("Analytics views (issue 14)", table(report["analytics"]))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-analytics.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nload average at end {report['load_average_end']}; results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
