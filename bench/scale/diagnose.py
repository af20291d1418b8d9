"""What a query costs on a scale dataset: CPU ms, memory, rows read, from the engine's query log.

    python -m bench.scale.diagnose --dataset /work/scale-data/a40-q5-c120-s15-d365-20261203
    python -m bench.scale.diagnose --dataset ... --only recording_audit,agents_now
    python -m bench.scale.diagnose --dataset ... --sql 'mine=SELECT count() FROM pbx.my_view'

Works on a hard-linked copy of the dataset (caught up to now, like ``bench run
scale``), opened with a query log (chdb has none by default), views stopped so
nothing else runs. Each query runs ``--repeats`` times with its result
discarded; printed: median wall and CPU ms (``UserTimeMicroseconds`` +
``SystemTimeMicroseconds``), peak memory, rows read and returned, and the
planning share (``QueryAnalysis`` + ``QueryPlanBuild`` + ``QueryPlanOptimize``).
CPU ms and rows read hold steady on a shared machine where wall time does not.

The built-in queries take today's views apart (docs/benchmarks.md#diagnosis):
the Audit views, the wallboard's agent view piece by piece, the visit view's two
halves, and each piece of a full recompute (``{since}`` = the data's first day).
``--repo`` applies another checkout's migrations first (its own names then need
``--sql``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scale import datasets

__all__ = ["QUERIES", "main", "measure"]

REPO = Path(__file__).resolve().parent.parent.parent


def _agent_pieces() -> dict[str, str]:
    """``agent_segments_since``'s CTEs alone, at ``since`` = now - 1 day (what pbx.agents_now reads)."""
    source = (REPO / "sql" / "0004_create_agent_segments.sql").read_text()
    body = source[source.index("AS\nWITH") + 3:].rstrip().rstrip(";")
    body = body.replace("{since:DateTime64(3, 'UTC')}", "(now64(3) - INTERVAL 1 DAY)")
    ctes = body[: body.rindex("SELECT\n    agent,")]
    return {f"agents_now: {name} CTE": f"{ctes} SELECT * FROM {name}" for name in ("talk", "changes", "timeline")}


#: name -> SQL; ``{since}`` is the data's first day (a full recompute's lower bound).
QUERIES: dict[str, str] = {
    "recording_audit (all)": "SELECT * FROM pbx.recording_audit",
    "recording_audit, last day": "SELECT * FROM pbx.recording_audit WHERE answered_at >= now() - INTERVAL 1 DAY",
    "recording_audit: GROUP BY call_id only": (
        "SELECT call_id, minIf(toNullable(received_at), event IN ('answered_internal', 'answered_external')), "
        "minIf(toNullable(received_at), event = 'call_end'), groupArrayIf(received_at, event = 'call_recording_start'), "
        "groupArrayIf(received_at, event = 'call_recording_stop') FROM pbx.events WHERE event IN ('answered_internal', "
        "'answered_external', 'call_end', 'call_recording_start', 'call_recording_stop') GROUP BY call_id"),
    "spy_sessions (all)": "SELECT * FROM pbx.spy_sessions",
    **_agent_pieces(),
    "agents_now: agent_segments_since(now - 1 day)": "SELECT * FROM pbx.agent_segments_since(since = now64(3) - INTERVAL 1 DAY)",
    "agents_now": "SELECT * FROM pbx.agents_now",
    "queue_now": "SELECT * FROM pbx.queue_now",
    "queue_calls, last 30 days": "SELECT * FROM pbx.queue_calls WHERE entered_at >= now() - INTERVAL 30 DAY",
    "queue_calls_data FINAL, last 30 days": (
        "SELECT * FROM pbx.queue_calls_data FINAL WHERE entered_at >= now() - INTERVAL 30 DAY AND is_deleted = 0"),
    "queue_calls_since(now - 6 h)": "SELECT * FROM pbx.queue_calls_since(since = now64(3) - INTERVAL 6 HOUR)",
    "overflow flows, 30 days": (
        "SELECT from_queue, to_queue, count(), avg(wait_s) FROM (SELECT queue_name AS from_queue, outcome, wait_s, "
        "leadInFrame(queue_name) OVER (PARTITION BY call_id ORDER BY entered_at ROWS BETWEEN CURRENT ROW AND 1 "
        "FOLLOWING) AS to_queue FROM pbx.queue_calls WHERE entered_at >= now() - INTERVAL 30 DAY) "
        "WHERE outcome = 'overflow' GROUP BY from_queue, to_queue"),
    "recompute: queue_calls_since(since)": "SELECT * FROM pbx.queue_calls_since(since = {since})",
    "recompute: queue_stats_15m_since(since)": "SELECT * FROM pbx.queue_stats_15m_since(since = {since})",
    "recompute: agent_segments_since(since)": "SELECT * FROM pbx.agent_segments_since(since = {since})",
    "recompute: agent_stats_15m_since(since)": "SELECT * FROM pbx.agent_stats_15m_since(since = {since})",
    "recompute: first_dirty_visit subquery": (
        "SELECT minOrNull(received_at) FROM pbx.events WHERE event = 'queue_in' AND received_at >= {since} - "
        "INTERVAL 1 DAY AND call_id IN (SELECT call_id FROM pbx.events WHERE received_at >= {since} AND call_id != '')"),
    "recompute: agent watermark (max data_end)": "SELECT maxOrNull(data_end) FROM pbx.agent_stats_15m_data",
}


def _refresh_selects(client: Any) -> dict[str, str]:
    """Each refreshable view's SELECT as it runs on a refresh (nothing new: its fixed cost)."""
    rows = client.query("SELECT name, as_select FROM system.tables WHERE database = 'pbx' AND name IN "
                        "(SELECT view FROM system.view_refreshes WHERE database = 'pbx')").result_rows
    return {f"refresh SELECT, nothing new: {name}": sql for name, sql in rows}


#: A refresh recomputes what arrived up to 15 s before its watermark: wait that out first.
QUIET_S = 20


def measure(raw: Any, client: Any, queries: dict[str, str], repeats: int) -> list[dict[str, Any]]:
    tag = f"diagnose:{time.time_ns()}:"
    errors: dict[str, str] = {}
    for i, (name, sql) in enumerate(queries.items()):
        try:
            for _ in range(repeats):
                raw.query(f"{sql} SETTINGS log_comment = '{tag}{i}'", "Null")
        except Exception as exc:  # noqa: BLE001 - reported in the table
            errors[name] = str(exc).splitlines()[0][:160]
    client.command("SYSTEM FLUSH LOGS")
    rows = client.query(
        "SELECT log_comment, quantileExact(0.5)(query_duration_ms), "
        "quantileExact(0.5)(ProfileEvents['UserTimeMicroseconds'] + ProfileEvents['SystemTimeMicroseconds']) / 1000, "
        "quantileExact(0.5)(ProfileEvents['QueryAnalysisMicroseconds'] + ProfileEvents['QueryPlanBuildMicroseconds'] "
        "+ ProfileEvents['QueryPlanOptimizeMicroseconds']) / 1000, max(memory_usage), max(read_rows), max(result_rows) "
        "FROM system.query_log WHERE type = 'QueryFinish' AND startsWith(log_comment, {t:String}) "
        "GROUP BY log_comment", parameters={"t": tag}).result_rows
    by_index = {int(r[0][len(tag):]): r[1:] for r in rows}
    out = []
    for i, name in enumerate(queries):
        if name in errors:
            out.append({"query": name, "error": errors[name]})
            continue
        wall, cpu, planning, memory, read, returned = by_index.get(i, (None,) * 6)
        out.append({"query": name, "wall_ms": wall, "cpu_ms": round(cpu, 1) if cpu is not None else None,
                    "planning_ms": round(planning, 1) if planning is not None else None,
                    "memory_mib": round(memory / 2**20, 1) if memory is not None else None,
                    "read_rows": read, "result_rows": returned})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a built dataset's directory (has READY.json)")
    parser.add_argument("--repo", type=Path, default=None, help="apply this checkout's migrations first")
    parser.add_argument("--only", default="", help="comma-separated substrings of the built-in query names")
    parser.add_argument("--sql", action="append", default=[], metavar="NAME=SQL", help="an extra query (repeatable)")
    parser.add_argument("--no-builtin", dest="builtin", action="store_false", help="only the --sql queries")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    dataset = datasets.Dataset(args.dataset, json.loads((args.dataset / "READY.json").read_text()))
    since = f"toDateTime64('{dataset.first_day} 00:00:00', 3, 'UTC')"
    queries = {}
    if args.builtin:
        wanted = [w for w in args.only.split(",") if w]
        queries = {n: q.replace("{since}", since) for n, q in QUERIES.items()
                   if not wanted or any(w in n for w in wanted)}
    for item in args.sql:
        name, eq, sql = item.partition("=")
        if not eq:
            parser.error(f"--sql {item!r}: expected NAME=SQL")
        queries[name] = sql.replace("{since}", since)
    with tempfile.TemporaryDirectory(prefix="diagnose-", dir=args.dataset.parent) as tmp:
        chdata = datasets.copy_for_run(dataset, Path(tmp))
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        datasets.extend(chdata, dataset.centre, dataset.end, now, log=lambda m: None)
        import chdb

        from ingest.storing.clickhouse import connect
        from ingest.storing.migrations import apply_migrations, load_migrations
        from ingest.testing import refresh_views

        config = Path(tmp) / "engine.xml"
        config.write_text("<clickhouse><query_log><database>system</database><table>query_log</table>"
                          "</query_log></clickhouse>")
        raw = chdb.connect(f"{chdata}?config-file={config}")
        client = connect(f"chdb://{chdata}")
        try:
            if args.repo:
                apply_migrations(client, load_migrations(args.repo / "sql"))
            refresh_views(client)
            client.command("SYSTEM STOP VIEWS")
            results = measure(raw, client, queries, args.repeats)
            if args.builtin and not args.only:
                time.sleep(QUIET_S)
                results += measure(raw, client, _refresh_selects(client), args.repeats)
        finally:
            client.close()
            raw.close()
        shutil.rmtree(chdata, ignore_errors=True)
    print(f"{dataset.home.name}: {dataset.info['events']:,} events; {args.repeats} runs each, medians; "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print("| query | wall ms | CPU ms | planning ms (wall) | memory MiB | rows read | rows out |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['query']} | error: {r['error']} | | | | | |")
        else:
            print(f"| {r['query']} | {r['wall_ms']} | {r['cpu_ms']} | {r['planning_ms']} | {r['memory_mib']} | "
                  f"{r['read_rows']:,} | {r['result_rows']:,} |")
    if args.json:
        args.json.write_text(json.dumps({"dataset": dataset.info["key"], "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
