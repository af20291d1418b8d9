"""Issue 14's views against the simulator's truth, every column.

Twenty-six simulated hours (two mornings a day apart and the night between:
transfers to an agent and into a queue, outbound and internal calls answered
and not, IVR hang-ups, calls whose call_end was lost, callers who call again
within minutes and just inside and just outside a day, renamed pauses, quiet
night intervals) go through the real backfill path; ``pbx.calls``,
``pbx.repeat_calls`` (two windows), ``pbx.agent_states_15m`` and
``pbx.staffing_15m`` must equal the truth row for row.

The views are read right after the import, with no refresh run first (every
reader sees complete figures at once: issue 12). Own module: the embedded
engine is one path per process.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from ingest.backfill.importer import import_files
from ingest.simulation import simulate, write_access_log
from ingest.testing import query_dicts
from tests.e2e.simulation.test_truth_issue14 import REPEAT_DAY

def _time(iso: str | None) -> dt.datetime | None:
    return None if iso is None else dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    from ingest.storing import clickhouse, migrations

    sim = simulate(REPEAT_DAY)
    log: Path = tmp_path_factory.mktemp("logs") / "two-mornings.log"
    write_access_log(log, sim.events)
    client = clickhouse.connect(f"chdb://{tmp_path_factory.mktemp('chdata') / 'db'}")
    migrations.apply_migrations(client)
    import_files(client, [log])  # and read at once: no refresh has to run first (issue 12)
    yield client, sim.truth
    client.close()


def test_calls_match_the_truth(imported) -> None:
    client, truth = imported
    expected = {c["call_id"]: dict(c, started_at=_time(c["started_at"]), ended_at=_time(c["ended_at"]),
                                   answered_at=_time(c["answered_at"]), recorded=int(c["recorded"]),
                                   spied=int(c["spied"])) for c in truth["calls"]}
    got = {r["call_id"]: r for r in query_dicts(client, "SELECT * FROM pbx.calls")}
    assert got.keys() == expected.keys()
    bad = [(call_id, {k: (g[k], expected[call_id][k]) for k in g if g[k] != expected[call_id][k]})
           for call_id, g in got.items() if g != expected[call_id]]
    assert not bad, f"{len(bad)} of {len(got)} calls differ (view, truth): {bad[:5]}"


@pytest.mark.parametrize("window", ["3600", "86400"])
def test_repeat_calls_match_the_truth(imported, window: str) -> None:
    client, truth = imported
    expected = [dict(call_id=r["call_id"], caller_num=r["caller_num"], started_at=_time(r["started_at"]),
                     first_queue=r["first_queue"], answered=int(r["answered"]), next_call_at=_time(r["next_call_at"]),
                     repeat=int(r["repeat"][window])) for r in truth["repeat_calls"]]
    got = query_dicts(client, f"SELECT * FROM pbx.repeat_calls(window_s = {window}) ORDER BY started_at, call_id")
    assert len(got) == len(expected) and sum(r["repeat"] for r in expected) > 0
    for g, e in zip(got, expected):
        assert g == e, g["call_id"]


def test_agent_states_15m_match_the_truth(imported) -> None:
    client, truth = imported
    expected = {(_time(r["interval_start"]), r["agent"], r["state"]): r["seconds"] for r in truth["agent_states_15m"]}
    got = {(r["interval_start"], r["agent"], r["state"]): r["seconds"]
           for r in query_dicts(client, "SELECT * FROM pbx.agent_states_15m")}
    assert got == expected


def test_staffing_15m_matches_the_truth(imported) -> None:
    client, truth = imported

    def approx(x: float | None) -> Any:
        return None if x is None else pytest.approx(x)

    expected = [dict(interval_start=_time(r["interval_start"]), queue_name=r["queue_name"], offered=r["offered"],
                     aht_s=approx(r["aht_s"]), traffic_erlangs=approx(r["traffic_erlangs"]),
                     agents_required=r["agents_required"]) for r in truth["staffing_15m"]]
    got = query_dicts(client, "SELECT * FROM pbx.staffing_15m ORDER BY interval_start, queue_name")
    assert [(g["interval_start"], g["queue_name"]) for g in got] == [(e["interval_start"], e["queue_name"])
                                                                     for e in expected]
    for g, e in zip(got, expected):
        assert g == e, (g["interval_start"], g["queue_name"])
