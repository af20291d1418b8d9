"""An upgrade from the schema users' databases had before the layered views.

Stop 17 left migrations up to 0203 on users' databases: the watermark
refreshes of 0007/0008 and 0200's ``calls_data``. The migrations after it
(0210 on) drop those and compute the stored history of the layers from the
events already stored. Nothing a user had may be lost on the way: every visit
and every call the simulator made reads the same after the upgrade, at once
and once the refreshes have stored it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ingest.backfill.importer import import_files
from ingest.simulation import SimConfig, simulate, write_access_log
from ingest.storing import clickhouse, migrations
from ingest.testing import query_dicts as rows
from ingest.testing import settle_views

#: The newest migration on users' databases before the layered views (stop 17).
BEFORE_THE_LAYERS = 203


def _time(iso: str | None) -> dt.datetime | None:
    return None if iso is None else dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")


def test_an_upgrade_from_the_schema_before_the_layers_keeps_every_visit_and_call(tmp_path: Path) -> None:
    sim = simulate(SimConfig(seed=11, hours=6, queues=2, agents=6, calls_per_hour=30))
    log = tmp_path / "access.log"
    write_access_log(log, sim.events)
    truth = sim.truth
    client = clickhouse.connect(f"chdb://{tmp_path / 'db'}")
    try:
        migrations.apply_migrations(
            client, [m for m in migrations.load_migrations() if m.version <= BEFORE_THE_LAYERS])
        # Today's importer sends `seq`, which 0210 adds (IF NOT EXISTS); the rows an
        # old database holds read 0 there after the upgrade: so do these.
        client.command("ALTER TABLE pbx.events ADD COLUMN seq UInt64")
        import_files(client, [log])
        client.command("ALTER TABLE pbx.events UPDATE seq = 0 WHERE 1 SETTINGS mutations_sync = 2")
        stored = client.query("SELECT count() FROM pbx.events").result_rows[0][0]
        assert stored == sum(truth["event_counts"].values())

        applied = [m.version for m in migrations.apply_migrations(client)]
        assert applied and min(applied) > BEFORE_THE_LAYERS
        assert client.query("SELECT count() FROM pbx.events").result_rows[0][0] == stored

        visits = {(v["call_id"], v["queue_name"], _time(v["entered_at"])): dict(
            call_id=v["call_id"], queue_name=v["queue_name"], entered_at=_time(v["entered_at"]),
            left_at=_time(v["left_at"]), answered_at=_time(v["answered_at"]), agent=v["agent"],
            wait_s=v["wait_s"], outcome=v["outcome"], in_sla=int(v["in_sla"])) for v in truth["queue_visits"]}
        calls = {c["call_id"] for c in truth["calls"]}
        assert len(visits) > 50
        for when in ("at once", "stored"):
            if when == "stored":
                settle_views(client)
            got = {(r["call_id"], r["queue_name"], r["entered_at"]): r
                   for r in rows(client, "SELECT * FROM pbx.queue_calls")}
            assert got == visits, when
            assert {r["call_id"] for r in rows(client, "SELECT call_id FROM pbx.calls")} == calls, when
            assert (rows(client, "SELECT * FROM pbx.agent_stats_15m ORDER BY interval_start, agent")
                    == rows(client, "SELECT * FROM pbx.agent_stats_15m_raw ORDER BY interval_start, agent")), when
    finally:
        client.close()


#: The migration that keeps the start of a layer's refresh run with its cursor (the lookback's bound).
RUN_STARTS = 232


def _columns_of(before: dict[str, list[dict]], now: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """``now``'s rows with the columns each view had in ``before`` (later migrations add some: 0237's
    ``agent_states_15m.paused``)."""
    return {q: [{k: r[k] for k in before[q][0]} if before[q] else r for r in rows] for q, rows in now.items()}


def test_an_upgrade_looks_back_from_the_cursor_until_a_run_has_kept_its_start(tmp_path: Path) -> None:
    from ingest.testing import hold_views, refresh_views
    from tests.e2e.views.test_views import _agent_day, _recording_events, _scenario_calls, _spy_events
    from tests.e2e.views.test_views_lookback import (behind_the_cursors_within, dirty_lists, looked_back,
                                                     set_margin, views, wait_past_the_margin)
    from tests.e2e.views.views_helpers import insert

    client = clickhouse.connect(f"chdb://{tmp_path / 'db'}")
    try:
        migrations.apply_migrations(client, [m for m in migrations.load_migrations() if m.version < RUN_STARTS])
        hold_views(client)
        set_margin(client, 2000)
        insert(client, [*_scenario_calls(), *_agent_day(), *_spy_events(), *_recording_events()])
        truth = views(client)
        refresh_views(client)  # (marks without a start)
        assert RUN_STARTS in [m.version for m in migrations.apply_migrations(client)]
        assert client.query("SELECT layer, toUnixTimestamp64Milli(max(started)) FROM pbx.refresh_marks "
                            "GROUP BY layer ORDER BY layer").result_rows == [("agents", 0), ("calls", 0)]
        # The old marks' lookback is the cursor's, as before: every row of the insert (one stamp).
        rows = client.query("SELECT count() FROM pbx.arrivals").result_rows[0][0]
        assert looked_back(client) == behind_the_cursors_within(client, 2000) == 2 * rows > 0
        assert _columns_of(truth, views(client)) == truth
        wait_past_the_margin(client, 2000)
        refresh_views(client)  # (the upgraded mark views keep the run's start)
        assert client.query("SELECT min(started) FROM (SELECT max(started) AS started FROM pbx.refresh_marks "
                            "GROUP BY layer)").result_rows[0][0].year > 2000
        assert looked_back(client) == 0
        assert dirty_lists(client) == (0, 0)
        assert _columns_of(truth, views(client)) == truth
    finally:
        client.close()
