"""``python -m bench run scale``: its data is what ``import`` stores, and a tiny run prints every section.

The real runs (a year of a 200-agent centre) take hours; these check the harness
on one simulated day of the smallest centre (8 agents, one queue). No timing assertions.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

from bench.scale import datasets
from ingest.backfill.batches import read_batches, rows_of
from ingest.backfill.rows import ImportStats
from ingest.simulation import write_access_log
from ingest.testing import REPO


def test_dataset_rows_are_the_rows_import_stores_for_the_same_days_access_log(tmp_path):
    centre = datasets.Centre(agents=6, queues=2, calls_per_hour=30)
    sim = datasets.day_events(centre, dt.date(2026, 3, 2), hours=3)
    log = tmp_path / "day.log.gz"
    write_access_log(log, sim.events)

    direct = datasets._rows_of(sim.events)
    imported = [row for batch in read_batches(log, ImportStats()) for row in rows_of(batch)]

    assert len(direct) == len(sim.events) > 100
    assert direct == imported


#: What differs between two computations of the same rows: when they were computed (and, for
#: agent rows, the newest event at that moment: it depends on where the weekly refreshes fell).
VOLATILE = {"computed_at", "arrived_at", "data_end"}


def _table_rows(root, dataset):
    from ingest.storing.clickhouse import connect

    client = connect(f"chdb://{dataset.chdata}")
    try:
        out = {}
        for table, column in datasets.TIME_COLUMNS.items():
            if not column or not client.command(f"EXISTS TABLE pbx.{table}"):
                continue  # (TIME_COLUMNS knows the tables of older schemas too)
            names = [r[0] for r in client.query(f"DESCRIBE TABLE pbx.{table}").result_rows if r[0] not in VOLATILE]
            final = "" if table == "events" else "FINAL"
            out[table] = client.query(f"SELECT {', '.join(names)} FROM pbx.{table} {final} "
                                      f"ORDER BY {', '.join(names)}").result_rows
        return out
    finally:
        client.close()


def test_a_dataset_cut_from_a_longer_one_holds_what_building_it_alone_holds(tmp_path):
    centre = datasets.Centre(agents=6, queues=2, calls_per_hour=30, seed=3)
    end = dt.date(2026, 3, 5)
    longer = datasets.build(tmp_path / "a", centre, 2, end=end, jobs=1, log=lambda m: None)
    cut = datasets.derive(tmp_path / "a", longer, 1, log=lambda m: None)
    alone = datasets.build(tmp_path / "b", centre, 1, end=end, jobs=1, log=lambda m: None)

    assert cut.info["events"] == alone.info["events"] > 1000
    cut_rows, alone_rows = _table_rows(tmp_path / "a", cut), _table_rows(tmp_path / "b", alone)
    for table in cut_rows:
        assert cut_rows[table] == alone_rows[table], table
    assert datasets.find_longer(tmp_path / "a", centre, 1).info["days"] == 2


def test_scale_run_on_one_day_prints_every_section_and_saves_positive_figures(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench", "run", "scale", "--dir", str(tmp_path / "data"), "--agents", "8",
         "--scale-days", "1", "--repeats", "1", "--refresh-seconds", "4", "--timeout", "120",
         "--out", str(tmp_path / "results")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for section in ("| Data ", "| Panel p50 ms (CPU ms) ", "| Refresh cost ", "| Backfill: the day before the data ",
                    "| After a full recompute ", "| Settings change ", "| Import "):
        assert section in out.stdout, (section, out.stdout[-3000:])

    (saved,) = (tmp_path / "results").glob("*-scale.json")
    result = json.loads(saved.read_text())["results"]["scale"]
    (only,) = result["datasets"].values()
    assert "error" not in only, only.get("error")
    phases = only["probe"]["phases"]
    assert only["data"]["events"] > 10_000  # (a day of the 8-agent centre: ~15,000)
    assert only["data"]["visits_stored"] == only["data"]["simulated"]["visits"]
    assert all("p50_ms" in p["1d"] and "p50_ms" in p["30d"] for p in phases["panels"]), phases["panels"]
    assert phases["refresh"]["idle"]["cpu_s_per_min_views_running"] > 0
    assert phases["refresh"]["load"]["achieved_rps"] > 0
    backfill = phases["backfill"]
    assert not backfill["timed_out"], backfill
    assert backfill["offered_shown"] >= 0.99 * backfill["offered_simulated"] > 0
    assert backfill["until_all_views_s"] is not None and backfill["peak_rss_mib"] > 0
    assert not phases["settings"]["timed_out"], phases["settings"]
    # The run's engine copy is gone (its logs stay); the built dataset stays for the next run.
    assert not list((tmp_path / "data" / "runs").glob("*/*/chdata"))
    assert list((tmp_path / "data").glob("*/READY.json"))


def test_a_registered_hook_fills_its_placeholder_row_and_the_others_stay(monkeypatch, tmp_path):
    from bench.scale import table

    section, figure, target, _ = table.PLACEHOLDERS[0]
    monkeypatch.setitem(table.HOOKS, "throughput", lambda ctx: [table.Row(section, figure, target, {table.ANY: "0.61x"})])
    ctx = table.Context(tmp_path, tmp_path, tmp_path, smoke=True)
    rendered = table.render(table.with_hooks([], ctx), ["40 a, 30 d"])

    cells = {(r[0], r[1]): r[3] for r in rendered[1:]}
    assert cells[(section, figure)] == "0.61x"
    assert all(cells[(s, f)].startswith("not in this run") for s, f, _, _ in table.PLACEHOLDERS[1:])


def test_a_run_copy_refreshes_with_the_service_settings_whatever_its_dataset_kept(tmp_path):
    from ingest.storing.clickhouse import connect

    centre = datasets.Centre(agents=6, queues=2, calls_per_hour=30, seed=3)
    built = datasets.build(tmp_path / "a", centre, 1, end=dt.date(2026, 3, 5), jobs=1, log=lambda m: None)

    def settings(chdata, put=None):
        client = connect(f"chdb://{chdata}")
        try:
            if put:
                datasets._put_settings(client, put)
            return dict(client.query("SELECT name, argMax(value, updated_at) FROM pbx.refresh_settings "
                                     "GROUP BY name").result_rows)
        finally:
            client.close()

    assert settings(built.chdata) == datasets.SERVICE_SETTINGS
    # A dataset built before the build ended on them keeps its build's (the 200-agent year did).
    settings(built.chdata, put={"chunk_rows": 150_000, "commit_margin_ms": 0})
    copy = datasets.copy_for_run(built, tmp_path / "run")
    datasets.prepare(built, copy, dt.datetime(2026, 3, 5, tzinfo=dt.UTC), tmp_path / "late.log.gz", jobs=1,
                     log=lambda m: None)
    assert settings(copy) == datasets.SERVICE_SETTINGS
