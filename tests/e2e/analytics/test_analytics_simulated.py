"""The issue-14 views on a simulated morning, against the other views and a recomputation in Python.

Until the simulator writes truth for these views (calls, repeat callers,
staffing: a later phase), this checks them at a realistic volume against what
is already trusted: every call is one row, the stored history equals the raw
computation, calls agree with the visits, recordings and spy sessions of the
other views, staffing's offered is queue_stats_15m's and its handle times and
agent counts are recomputed here from the rows (Erlang C by the reference).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import pytest

from ingest.simulation import SimConfig
from ingest.testing import import_simulation, query_dicts, settle_views
from tests.e2e.analytics.erlang_reference import agents_required


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    config = SimConfig(seed=14, start=dt.datetime(2026, 11, 2, 6, tzinfo=dt.timezone.utc), hours=6,
                       queues=3, agents=10, calls_per_hour=30)
    ch = import_simulation(config, tmp_path_factory.mktemp("analytics"))
    settle_views(ch)
    yield ch
    ch.close()


def _by(items: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {r[key]: r for r in items}


def test_every_call_is_one_row_and_the_stored_history_is_the_raw_computation(client) -> None:
    calls = query_dicts(client, "SELECT * FROM pbx.calls ORDER BY call_id")
    ids = [r["call_id"] for r in query_dicts(client, "SELECT DISTINCT call_id FROM pbx.events WHERE call_id != '' ORDER BY 1")]
    assert [c["call_id"] for c in calls] == ids and len(ids) > 300
    raw = query_dicts(client, "SELECT * FROM pbx.calls_since(since = '1970-01-01 00:00:00') ORDER BY call_id")
    assert calls == raw
    assert {c["direction"] for c in calls} == {"inbound", "outbound", "internal"}  # the simulator makes all three
    assert {c["outcome"] for c in calls} >= {"answered", "abandoned", "unanswered"}


def test_calls_agree_with_visits_recordings_and_spy_sessions(client) -> None:
    calls = _by(query_dicts(client, "SELECT * FROM pbx.calls"), "call_id")
    visits = defaultdict(list)
    for v in query_dicts(client, "SELECT * FROM pbx.queue_calls ORDER BY entered_at"):
        visits[v["call_id"]].append(v)
    for call_id, call in calls.items():
        mine = visits.get(call_id, [])
        assert call["queues"] == [v["queue_name"] for v in mine], call_id
        for v in mine:
            if v["agent"] is not None:
                assert v["agent"] in call["agents"], call_id
        if call["outcome"] == "abandoned":
            assert all(v["outcome"] != "answered" for v in mine), call_id
        if call["direction"] == "inbound" and mine and any(v["outcome"] == "answered" for v in mine):
            assert call["outcome"] in ("answered", "active"), call_id
    audit = _by(query_dicts(client, "SELECT * FROM pbx.recording_audit"), "call_id")
    for call_id, a in audit.items():
        call = calls[call_id]
        assert call["recorded"] == a["recorded"], call_id
        assert (call["answered_at"], call["ended_at"], call["talk_s"]) == (a["answered_at"], a["ended_at"], a["talk_s"])
    spied = {r["call_id"] for r in query_dicts(client, "SELECT DISTINCT call_id FROM pbx.spy_sessions")}
    assert spied and {c for c, r in calls.items() if r["spied"]} == spied


def test_repeat_calls_recomputed_from_the_calls(client) -> None:
    inbound = sorted((r for r in query_dicts(client, "SELECT * FROM pbx.calls") if r["direction"] == "inbound"
                      and r["caller_num"]), key=lambda r: (r["started_at"], r["call_id"]))
    following: dict[str, Any] = {}
    expected = {}
    for r in reversed(inbound):
        nxt = following.get(r["caller_num"])
        if r["ended_at"] is not None:
            expected[r["call_id"]] = dict(
                call_id=r["call_id"], caller_num=r["caller_num"], started_at=r["started_at"],
                first_queue=r["queues"][0] if r["queues"] else "", answered=int(r["answered_at"] is not None),
                next_call_at=nxt, repeat=int(nxt is not None and (nxt - r["started_at"]).total_seconds() <= 3600))
        following[r["caller_num"]] = r["started_at"]
    got = _by(query_dicts(client, "SELECT * FROM pbx.repeat_calls(window_s = 3600)"), "call_id")
    assert got == expected and len(got) > 200


def test_staffing_recomputed_from_visits_calls_and_the_erlang_reference(client) -> None:
    talk = {r["call_id"]: r["talk_s"] for r in query_dicts(client, "SELECT call_id, talk_s FROM pbx.calls")}
    handled: dict[tuple, list[float]] = defaultdict(list)
    for v in query_dicts(client, "SELECT * FROM pbx.queue_calls WHERE outcome = 'answered'"):
        t = v["entered_at"]
        interval = t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)
        if talk[v["call_id"]] is not None:
            handled[(interval, v["queue_name"])].append(talk[v["call_id"]])
    offered = {(r["interval_start"], r["queue_name"]): r["offered"]
               for r in query_dicts(client, "SELECT interval_start, queue_name, offered FROM pbx.queue_stats_15m")}
    got = query_dicts(client, "SELECT * FROM pbx.staffing_15m ORDER BY interval_start, queue_name")
    assert len(got) >= len(offered) and sum(r["agents_required"] or 0 for r in got) > 0
    for r in got:
        key = (r["interval_start"], r["queue_name"])
        assert r["offered"] == offered.get(key, 0), key
        talks = handled.get(key)
        aht = sum(talks) / len(talks) if talks else None
        assert r["aht_s"] == (None if aht is None else pytest.approx(aht)), key
        if r["offered"] == 0:
            assert (r["traffic_erlangs"], r["agents_required"]) == (0.0, 0), key
        elif aht is None:
            assert (r["traffic_erlangs"], r["agents_required"]) == (None, None), key
        else:
            assert r["traffic_erlangs"] == pytest.approx(r["offered"] * aht / 900), key
            assert r["agents_required"] == agents_required(r["traffic_erlangs"], r["aht_s"], 20, 80), key
