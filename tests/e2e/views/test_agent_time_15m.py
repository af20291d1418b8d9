"""Agent time stored summed per interval and agent (pbx.agent_time_15m_data).

The agents layer's refresh writes each computed window's stretches to
``pbx.agent_time_data`` and, from the same rows, their sums per interval and
agent; ``pbx.agent_stats_15m`` and ``pbx.agent_states_15m`` read the sums for
the agent-intervals that are not dirty. The figures must stay exactly what the
raw events give (the ``_raw`` view, the simulator's truth) with nothing
refreshed, part stored, all stored and windows dirty again; the sums must be
those of the stretches stored through every replacement (a window recomputed
shorter leaves deleted intervals); and an upgrade fills the sums of the
stretches stored before it, once.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from ingest.backfill.importer import import_files
from ingest.simulation import SimConfig, simulate, write_access_log
from ingest.storing import clickhouse, migrations
from ingest.storing.clickhouse import Client
from ingest.testing import dirty_entities, query_dicts, settle_views
from tests.e2e.views.views_helpers import ev, insert

STATS = "SELECT * FROM pbx.agent_stats_15m ORDER BY interval_start, agent"
RAW = "SELECT * FROM pbx.agent_stats_15m_raw ORDER BY interval_start, agent"
STATES = "SELECT * FROM pbx.agent_states_15m ORDER BY interval_start, agent, state"

#: The stored sums as the stretches stored give them, and as the table holds them.
FROM_STRETCHES = """
    SELECT interval_start, agent, arraySort(groupArray((state, state_name, ms))) AS states
    FROM (SELECT interval_start, agent, toString(state) AS state, toString(state_name) AS state_name,
                 sum(dateDiff('millisecond', started_at, ended_at)) AS ms
          FROM pbx.agent_time_data FINAL WHERE is_deleted = 0
          GROUP BY interval_start, agent, state, state_name)
    GROUP BY interval_start, agent ORDER BY interval_start, agent"""
STORED_SUMS = """
    SELECT interval_start, agent, CAST(states, 'Array(Tuple(String, String, Int64))') AS states
    FROM pbx.agent_time_15m_data FINAL WHERE is_deleted = 0 ORDER BY interval_start, agent"""

#: The migration that first creates and fills the sums (the generated one of the templates).
SUMS = 234


def _time(iso: str) -> dt.datetime:
    return dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")


def _states_truth(truth: dict[str, Any]) -> dict[tuple[dt.datetime, str, str], float]:
    return {(_time(r["interval_start"]), r["agent"], r["state"]): r["seconds"] for r in truth["agent_states_15m"]}


def _states(client: Client) -> dict[tuple[dt.datetime, str, str], float]:
    return {(r["interval_start"], r["agent"], r["state"]): r["seconds"] for r in query_dicts(client, STATES)}


def _hourly_logs(sim: Any, folder: Path) -> list[Path]:
    by_hour: dict[int, list] = defaultdict(list)
    for event in sim.events:
        by_hour[event.t // 3600].append(event)
    files = []
    for hour, events in sorted(by_hour.items()):
        files.append(folder / f"access-{hour}.log")
        write_access_log(files[-1], events)
    return files


def _figures_hold(client: Client, truth: dict[str, Any], when: str) -> None:
    assert query_dicts(client, STATS) == query_dicts(client, RAW), when
    assert _states(client) == _states_truth(truth), when


def test_the_views_read_the_sums_exactly_whatever_is_stored(tmp_path: Path) -> None:
    sim = simulate(SimConfig(seed=5, hours=10, queues=2, agents=6, calls_per_hour=30))
    files = _hourly_logs(sim, tmp_path)
    client = clickhouse.connect(f"chdb://{tmp_path / 'db'}")
    try:
        migrations.apply_migrations(client)
        order = files[:]
        random.Random(3).shuffle(order)
        import_files(client, order[: len(order) // 2])
        settle_views(client)
        assert query_dicts(client, STORED_SUMS) == query_dicts(client, FROM_STRETCHES)
        import_files(client, order[len(order) // 2:])
        assert dirty_entities(client) > 0
        assert client.query("SELECT count() FROM pbx.dirty_agents_live").result_rows[0][0] > 0
        _figures_hold(client, sim.truth, "part stored, windows dirty")
        settle_views(client)
        stored = query_dicts(client, STORED_SUMS)
        assert stored == query_dicts(client, FROM_STRETCHES)
        stretches = client.query("SELECT count() FROM pbx.agent_time_data FINAL WHERE is_deleted = 0").result_rows[0][0]
        assert 0 < len(stored) < stretches / 2  # what the sums save readers
        _figures_hold(client, sim.truth, "all stored")
        # The readers read the sums, not the stretches: without the stretches they read the same.
        figures = query_dicts(client, STATS), query_dicts(client, STATES)
        client.command("TRUNCATE TABLE pbx.agent_time_data")
        assert (query_dicts(client, STATS), query_dicts(client, STATES)) == figures
    finally:
        client.close()


def test_nothing_refreshed_reads_every_window_live(tmp_path: Path) -> None:
    sim = simulate(SimConfig(seed=6, hours=4, queues=1, agents=4, calls_per_hour=30))
    client = clickhouse.connect(f"chdb://{tmp_path / 'db'}")
    try:
        migrations.apply_migrations(client)
        import_files(client, _hourly_logs(sim, tmp_path))
        assert client.query("SELECT count() FROM pbx.agent_time_15m_data").result_rows[0][0] == 0
        _figures_hold(client, sim.truth, "nothing refreshed")
    finally:
        client.close()


def _shortened_day(ch: Client) -> None:
    """a1 logged in 09:00, a logout at 10:00 stored; a logout at 09:20 arrives late."""
    insert(ch, [ev("pbx_agent_login", 0, userid="a1", exten="101"),
                ev("pbx_agent_set_state", 600, userid="a1", state_name="Lunch"),
                ev("pbx_agent_logout", 3600, userid="a1")])
    settle_views(ch)
    insert(ch, [ev("pbx_agent_logout", 1200, userid="a1")])


def test_a_window_recomputed_shorter_deletes_the_sums_of_the_intervals_it_no_longer_has(ch: Client) -> None:
    _shortened_day(ch)
    assert query_dicts(ch, STATS) == query_dicts(ch, RAW)
    settle_views(ch)
    assert query_dicts(ch, STORED_SUMS) == query_dicts(ch, FROM_STRETCHES)
    assert [r["interval_start"].minute for r in query_dicts(ch, STORED_SUMS)] == [0, 15]
    assert ch.query("SELECT groupArray(toMinute(interval_start)) FROM (SELECT interval_start, "
                    "argMax(is_deleted, computed_at) AS deleted FROM pbx.agent_time_15m_data "
                    "GROUP BY interval_start ORDER BY interval_start) WHERE deleted = 1").result_rows[0][0] == [30, 45]
    assert query_dicts(ch, STATS) == query_dicts(ch, RAW)
    assert [(r["state"], r["seconds"]) for r in query_dicts(ch, STATES)] == [
        ("idle", 600.0), ("lunch", 300.0), ("lunch", 300.0)]


def test_an_upgrade_fills_the_sums_of_the_stretches_stored_before_it_once(tmp_path: Path) -> None:
    sim = simulate(SimConfig(seed=8, hours=6, queues=2, agents=5, calls_per_hour=30))
    client = clickhouse.connect(f"chdb://{tmp_path / 'db'}")
    try:
        migrations.apply_migrations(client, [m for m in migrations.load_migrations() if m.version < SUMS])
        import_files(client, _hourly_logs(sim, tmp_path))
        settle_views(client)
        before = query_dicts(client, STATS), _states(client)
        assert before[1] == _states_truth(sim.truth)

        assert SUMS in [m.version for m in migrations.apply_migrations(client)]
        assert dirty_entities(client) == 0
        filled = query_dicts(client, STORED_SUMS)
        assert filled and filled == query_dicts(client, FROM_STRETCHES)
        assert (query_dicts(client, STATS), _states(client)) == before
        assert query_dicts(client, STATS) == query_dicts(client, RAW)

        # A later generated migration repeats the schema statements: nothing is filled again.
        [sums] = [m for m in migrations.load_migrations() if m.version == SUMS]
        rows = client.query("SELECT count() FROM pbx.agent_time_15m_data").result_rows[0][0]
        for statement in sums.statements():
            if "CREATE OR REPLACE VIEW" not in statement:
                client.command(statement)
        assert client.query("SELECT count() FROM pbx.agent_time_15m_data").result_rows[0][0] == rows
        assert (query_dicts(client, STATS), _states(client)) == before
    finally:
        client.close()
