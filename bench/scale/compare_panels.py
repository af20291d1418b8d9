"""One dashboard's panels as two checkouts' JSON have them, in one engine and one run.

    python -m bench.scale.compare_panels --dataset /tmp/staffing-data/a40-q5-c120-s15-d90-20261204 \\
        --old-ref main --dashboard staffing --repeats 5

Opens a hard-linked copy of a built dataset (``bench.scale.datasets``) with a
query log, applies this checkout's migrations, drains the layers' backlog
(``probe.refresh_until_caught_up``; ``--optimize`` then merges the call
layer's tables), sets the commit margin to 0 (nothing
inserts: every insert has committed, as ``bench run scale``'s panels phase),
stops the views, then runs each panel of ``--dashboard`` as Grafana expands it
(``tests/e2e/dashboards/grafana_sim.py``) for the data's last day and last 30
days (to the dataset's end), first as ``--old-ref``'s ``dashboards/json`` has
it, then as this checkout's, alternately, ``--repeats`` times each. Printed per
panel and range: engine CPU ms p50 (``UserTimeMicroseconds`` +
``SystemTimeMicroseconds`` from ``system.query_log``), rows read, peak memory,
wall p50, and whether the two results are the same rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scale import datasets, probe

REPO = Path(__file__).resolve().parent.parent.parent


def _same(a: list[tuple], b: list[tuple]) -> bool:
    """The same rows in the same order; floats equal to 1e-9 (sums added in another order by the threads)."""
    def close(x: Any, y: Any) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return x == y or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(x) and math.isnan(y))
        return x == y
    return len(a) == len(b) and all(len(r) == len(s) and all(map(close, r, s)) for r, s in zip(a, b))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.compare_panels", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a built dataset's directory (has READY.json)")
    parser.add_argument("--old-ref", default="main", help="git ref whose dashboards/json is the 'old' side")
    parser.add_argument("--dashboard", default="staffing", help="dashboards/json/<name>.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--ranges", default="1d,30d", help="which of 1d, 30d (comma-separated)")
    parser.add_argument("--optimize", action="store_true",
                        help="merge the call layer's tables after the catch-up (OPTIMIZE ... FINAL): the parts "
                             "a running service's merges reach, so rows read do not depend on the copy's last refresh")
    args = parser.parse_args(argv)
    probe.volunteer_for_oom_killer()
    dataset = datasets.Dataset(args.dataset, json.loads((args.dataset / "READY.json").read_text()))
    end = dt.datetime.combine(dataset.end, dt.time(0), dt.UTC)
    gs = probe._load("_compare_grafana_sim", probe.GRAFANA_SIM)
    with tempfile.TemporaryDirectory(prefix="compare-", dir=args.dataset.parent) as tmp:
        sides = {}
        for side in ("old", "new"):
            jdir = Path(tmp) / side
            jdir.mkdir()
            name = f"{args.dashboard}.json"
            text = (subprocess.run(["git", "show", f"{args.old_ref}:dashboards/json/{name}"], cwd=REPO, check=True,
                                   capture_output=True, text=True).stdout if side == "old"
                    else (REPO / "dashboards" / "json" / name).read_text())
            (jdir / name).write_text(text)
            sides[side] = gs.panel_queries(gs.load_dashboards(jdir))
        chdata = datasets.copy_for_run(dataset, Path(tmp))
        from ingest.storing.clickhouse import connect
        from ingest.storing.migrations import apply_migrations

        raw = probe.open_engine(chdata, Path(tmp) / "engine.xml")
        client = connect(f"chdb://{chdata}")
        started = time.time()
        apply_migrations(client)
        migrate_s = time.time() - started
        caught = probe.refresh_until_caught_up(client)
        client.command("SYSTEM STOP VIEWS")
        with probe.margin_settled(client):  # nothing inserts: every insert has committed
            if args.optimize:
                for table in ("calls_data", "queue_visits_data", "call_spans", "agent_time_data"):
                    client.command(f"OPTIMIZE TABLE pbx.{table} FINAL")
            dirty = client.query("SELECT length(calls) FROM pbx.dirty_call_list_live").result_rows[0][0]
            ranges = {label: gs.TimeRange.of(end - dt.timedelta(days=days), end)
                      for label, days in (("1d", 1), ("30d", 30)) if label in args.ranges.split(",")}
            tag = f"compare:{time.time_ns()}:"
            results = []
            load = [os.getloadavg()[0]]
            for label, rng in ranges.items():
                for i, (old_q, new_q) in enumerate(zip(sides["old"], sides["new"], strict=True)):
                    assert old_q.panel.get("title") == new_q.panel.get("title")
                    entry: dict[str, Any] = {"panel": new_q.panel.get("title"), "range": label}
                    out = {}
                    sql = {}
                    for side, q in (("old", old_q), ("new", new_q)):
                        variables = gs.default_variables(q.dashboard, rng, lambda s: client.query(s).result_rows)
                        sql[side] = gs.expand(q.sql, rng, variables, q.interval_ms(rng))
                    walls: dict[str, list[float]] = {"old": [], "new": []}
                    for _ in range(args.repeats):
                        for side in ("old", "new"):
                            t0 = time.perf_counter()
                            out[side] = client.query(sql[side], settings={"log_comment": f"{tag}{label}:{i}:{side}"}
                                                     ).result_rows
                            walls[side].append((time.perf_counter() - t0) * 1000)
                    load.append(os.getloadavg()[0])
                    logged = probe.query_log_figures(client, f"{tag}{label}:{i}:")
                    for side in ("old", "new"):
                        f = logged.get(f"{tag}{label}:{i}:{side}", {})
                        entry[side] = {**f, "wall_p50_ms": round(sorted(walls[side])[len(walls[side]) // 2], 1),
                                       "rows": len(out[side])}
                    entry["same_rows"] = _same(out["old"], out["new"])
                    if not entry["same_rows"]:
                        diff = [(o, n) for o, n in zip(out["old"], out["new"]) if not _same([o], [n])]
                        entry["differ"] = repr(diff[:3])[:600]
                    results.append(entry)
                    print(json.dumps(entry), flush=True)
        client.close()
        raw.close()
    info = {"dataset": dataset.info.get("key", dataset.home.name), "events": dataset.info.get("events"),
            "end": str(dataset.end), "migrate_s": round(migrate_s, 1), **caught, "dirty_calls": dirty,
            "load_min": min(load), "load_max": max(load),
            "finished": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"}
    print(json.dumps(info))
    print("| panel (range) | old: CPU ms / rows read / MiB / wall ms | new: CPU ms / rows read / MiB / wall ms | same |")
    print("|---|---|---|---|")
    for r in results:
        cells = [f"{r[s].get('cpu_ms')} / {r[s].get('read_rows', 0):,} / {r[s].get('memory_mib')} / "
                 f"{r[s]['wall_p50_ms']}" for s in ("old", "new")]
        print(f"| {r['panel']} ({r['range']}) | {cells[0]} | {cells[1]} | {'yes' if r['same_rows'] else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
