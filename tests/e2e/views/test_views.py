"""The analytics views on hand-written call-centre scenarios (docs/metrics.md).

Each scenario is a tiny event sequence stored through the real decoding path;
every column of the view under test is asserted. Views are read with
``read()``: first as a reader sees them right after the insert (what is not
stored yet computed live), then once the refreshes have stored everything;
both must be equal.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import time

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from ingest.storing import clickhouse
from ingest.testing import dirty_entities, query_dicts, refresh_views, settle_views
from tests.e2e.views.views_helpers import T0, at, columns, ev, insert, read

# ----------------------------------------------------------------------------- schema

CONTRACT = {
    "pbx.queue_settings": ["queue_name", "sla_threshold_s", "short_abandon_s", "sla_target_pct",
                           "answer_grace_s"],  # in migration order: 0201, then 0211
    "pbx.queue_calls": ["call_id", "queue_name", "entered_at", "left_at", "answered_at", "agent", "wait_s",
                        "outcome", "in_sla"],
    "pbx.queue_stats_15m": ["interval_start", "queue_name", "offered", "answered", "abandoned", "short_abandoned",
                            "overflowed", "answered_in_sla", "sla_pct", "sla_answered_pct", "sla_inclusive_pct",
                            "abandon_rate_pct", "asa_s", "avg_abandon_s", "max_wait_s"],
    "pbx.agent_stats_15m": ["interval_start", "agent", "logged_in_s", "paused_s", "talk_s", "idle_s",
                            "calls_answered", "ring_no_answer", "occupancy_pct"],
    "pbx.spy_sessions": ["call_id", "spying_userid", "spying_target_userid", "spying_exten", "spying_target_exten",
                         "spy_type", "started_at", "ended_at", "duration_s"],
    "pbx.recording_audit": ["call_id", "answered_at", "ended_at", "talk_s", "recorded", "segments", "recording_s",
                            "unstopped", "coverage_pct", "at"],  # at: 0222
    "pbx.queue_now": ["queue_name", "waiting", "oldest_entered_at", "longest_wait_s"],
    "pbx.agents_now": ["agent", "state", "state_name", "since", "on_call"],
    "pbx.agent_states_15m": ["interval_start", "agent", "state", "seconds", "paused"],  # paused: 0237
    "pbx.agent_time_15m": ["interval_start", "agent", "logged_in_s", "paused_s", "talk_s", "idle_s",
                           "occupancy_pct"],  # 0239
    "pbx.agent_calls_15m": ["interval_start", "agent", "calls_answered", "ring_no_answer"],  # 0239
}


CONTRACT["pbx.queue_stats_15m_raw"] = CONTRACT["pbx.queue_stats_15m"]
#: Inserting a queue's settings: name the columns (more may be added; the others keep their defaults).
SETTINGS_COLUMNS = "(queue_name, sla_threshold_s, short_abandon_s)"
CONTRACT["pbx.agent_stats_15m_raw"] = CONTRACT["pbx.agent_stats_15m"]


def test_every_view_has_the_contract_columns_in_order(ch: Client) -> None:
    for view, expected in CONTRACT.items():
        assert list(ch.query(f"SELECT * FROM {view} LIMIT 0").column_names) == expected, view


def _plain(type_name: str) -> str:
    """The type a SELECT must produce for a column: storage wrappers and tuple element names removed
    (a SELECT's tuples are unnamed; inserts match them by position)."""
    type_name = re.sub(r"^SimpleAggregateFunction\(\w+, (.*)\)$", r"\1", type_name)
    type_name = re.sub(r"\s+", " ", type_name)
    type_name = re.sub(r"(?<=[(,]) ?[a-z_]+ (?=[A-Z])", "", type_name).replace(" ", "")
    return re.sub(r"^LowCardinality\((.*)\)$", r"\1", type_name)


def test_every_materialized_view_selects_its_target_columns_in_order(ch: Client) -> None:
    views = ch.query(
        "SELECT name, create_table_query FROM system.tables WHERE database = 'pbx' AND engine = 'MaterializedView'"
    ).result_rows
    assert len(views) >= 3
    for name, ddl in views:
        target = re.search(r"\bTO\s+(pbx\.\w+)", ddl)
        assert target, f"{name} must write TO an explicit target table"
        selected = [(n, _plain(t)) for n, t, *_ in columns(ch, f"pbx.{name}")]
        stored = [(n, _plain(t)) for n, t, *_ in columns(ch, target[1])]
        assert selected == stored, name


# ----------------------------------------------------------------------------- queue visits


def _visit_events(call: str, queue: str, t: float, *, answer: float | None = None, agent: str = "a1",
                  out: float | None = None, end: float | None = None) -> list[tuple]:
    events = [ev("queue_in", t, call_id=call, queue_name=queue)]
    if answer is not None:
        events.append(ev("answered_internal", answer, call_id=call, line_userid=agent))
    if out is not None:
        events.append(ev("queue_out", out, call_id=call, queue_name=queue))
    if end is not None:
        events.append(ev("call_end", end, call_id=call))
    return events


def _scenario_calls() -> list[tuple]:
    return [
        # answered after exactly the SLA threshold: in SLA
        *_visit_events("edge", "sales", 0, answer=20, out=20, end=100),
        # answered 1 ms after it: not in SLA
        *_visit_events("late", "sales", 1, answer=21.001, out=21.001, end=100),
        # overflow sales -> support after 60 s, then abandoned in support after 30 s
        *_visit_events("ovf", "sales", 2, out=62),
        *_visit_events("ovf", "support", 63, end=93),
        # gives up after 4 s without queue_out: short abandon (call_end ends the visit)
        *_visit_events("short", "sales", 3, end=7),
        # gives up after exactly 5 s: abandoned (short is < 5 s)
        *_visit_events("five", "sales", 4, out=9, end=9),
        # still waiting
        *_visit_events("wait", "sales", 300),
    ]


def _queue_calls(ch: Client) -> dict[tuple[str, str], dict]:
    """pbx.queue_calls by (call, queue), live and stored; equal to the visits computed from raw events."""
    got = {(r["call_id"], r["queue_name"]): r for r in read(ch, "SELECT * FROM pbx.queue_calls")}
    raw = {(r["call_id"], r["queue_name"]): r for r in query_dicts(
        ch, "SELECT * EXCEPT (sla_threshold_s, short_abandon_s) FROM pbx.queue_calls_from_all")}
    assert got == raw, "the stored visits must equal the visits computed from raw events"
    return got


def test_queue_calls_outcomes_and_sla_edges(ch: Client) -> None:
    insert(ch, _scenario_calls())
    got = _queue_calls(ch)
    assert got == {
        ("edge", "sales"): dict(call_id="edge", queue_name="sales", entered_at=at(0), left_at=at(20),
                                answered_at=at(20), agent="a1", wait_s=20.0, outcome="answered", in_sla=1),
        ("late", "sales"): dict(call_id="late", queue_name="sales", entered_at=at(1), left_at=at(21.001),
                                answered_at=at(21.001), agent="a1", wait_s=20.001, outcome="answered", in_sla=0),
        ("ovf", "sales"): dict(call_id="ovf", queue_name="sales", entered_at=at(2), left_at=at(62),
                               answered_at=None, agent=None, wait_s=60.0, outcome="overflow", in_sla=0),
        ("ovf", "support"): dict(call_id="ovf", queue_name="support", entered_at=at(63), left_at=at(93),
                                 answered_at=None, agent=None, wait_s=30.0, outcome="abandoned", in_sla=0),
        ("short", "sales"): dict(call_id="short", queue_name="sales", entered_at=at(3), left_at=at(7),
                                 answered_at=None, agent=None, wait_s=4.0, outcome="short_abandon", in_sla=0),
        ("five", "sales"): dict(call_id="five", queue_name="sales", entered_at=at(4), left_at=at(9),
                                answered_at=None, agent=None, wait_s=5.0, outcome="abandoned", in_sla=0),
        ("wait", "sales"): dict(call_id="wait", queue_name="sales", entered_at=at(300), left_at=None,
                                answered_at=None, agent=None, wait_s=None, outcome="waiting", in_sla=0),
    }


def _orders() -> list:
    return [
        pytest.param("one_block", id="one-insert"),
        pytest.param("reversed", id="reverse-order-one-insert-each"),
        pytest.param("shuffled", id="shuffled-split-inserts"),
    ]


def _insert_in_order(ch: Client, events: list[tuple], order: str) -> None:
    if order == "one_block":
        insert(ch, events)
    elif order == "reversed":
        for e in reversed(events):
            insert(ch, [e])
    else:
        shuffled = events[:]
        random.Random(4).shuffle(shuffled)
        for i in range(0, len(shuffled), 3):
            insert(ch, shuffled[i:i + 3])
            settle_views(ch)  # every partial state is stored on the way, and recomputed as events come


@pytest.mark.parametrize("order", _orders())
def test_queue_stats_15m_every_column_whatever_the_arrival_order(ch: Client, order: str) -> None:
    _insert_in_order(ch, _scenario_calls(), order)
    got = read(ch, "SELECT * FROM pbx.queue_stats_15m ORDER BY queue_name")
    interval = T0
    assert got == [
        dict(interval_start=interval, queue_name="sales",
             # edge, late answered; ovf overflowed; short; five abandoned; wait excluded
             offered=5, answered=2, abandoned=1, short_abandoned=1, overflowed=1, answered_in_sla=1,
             sla_pct=pytest.approx(100 * 1 / 3), sla_answered_pct=50.0,
             # (1 answered in SLA + short 4 s + five 5 s, both <= 20 s) / (5 - 1)
             sla_inclusive_pct=75.0,
             abandon_rate_pct=pytest.approx(100 * 1 / 3), asa_s=pytest.approx(20.0005), avg_abandon_s=5.0,
             max_wait_s=60.0),
        dict(interval_start=dt.datetime(2026, 11, 2, 9, 0), queue_name="support",
             offered=1, answered=0, abandoned=1, short_abandoned=0, overflowed=0, answered_in_sla=0,
             sla_pct=0.0, sla_answered_pct=None, sla_inclusive_pct=0.0, abandon_rate_pct=100.0,
             asa_s=None, avg_abandon_s=30.0, max_wait_s=30.0),
    ]
    # The materialized numbers are the plain view's numbers.
    assert _queue_calls(ch)[("wait", "sales")]["outcome"] == "waiting"


def test_queue_stats_15m_null_denominators(ch: Client) -> None:
    insert(ch, [*_visit_events("ovf", "sales", 0, out=60), *_visit_events("ovf", "support", 61),
                *_visit_events("w", "vip", 10)])
    got = read(ch, "SELECT * FROM pbx.queue_stats_15m ORDER BY queue_name")
    # support has only a waiting visit: offered 0, every ratio NULL; vip likewise.
    assert got == [
        dict(interval_start=T0, queue_name="sales", offered=1, answered=0, abandoned=0, short_abandoned=0,
             overflowed=1, answered_in_sla=0, sla_pct=None, sla_answered_pct=None, sla_inclusive_pct=None,
             abandon_rate_pct=None, asa_s=None, avg_abandon_s=None, max_wait_s=60.0),
        dict(interval_start=dt.datetime(2026, 11, 2, 9, 0), queue_name="support", offered=0, answered=0,
             abandoned=0, short_abandoned=0, overflowed=0, answered_in_sla=0, sla_pct=None, sla_answered_pct=None,
             sla_inclusive_pct=None, abandon_rate_pct=None, asa_s=None, avg_abandon_s=None, max_wait_s=None),
        dict(interval_start=T0, queue_name="vip", offered=0, answered=0, abandoned=0, short_abandoned=0,
             overflowed=0, answered_in_sla=0, sla_pct=None, sla_answered_pct=None, sla_inclusive_pct=None,
             abandon_rate_pct=None, asa_s=None, avg_abandon_s=None, max_wait_s=None),
    ]


def test_visits_belong_to_the_interval_they_entered(ch: Client) -> None:
    # entered 09:14:59.999, answered 09:15:10: counted at 09:00
    insert(ch, _visit_events("c", "sales", 899.999, answer=910, out=910, end=950))
    got = read(ch, "SELECT interval_start, offered, answered, answered_in_sla FROM pbx.queue_stats_15m")
    assert got == [dict(interval_start=T0, offered=1, answered=1, answered_in_sla=1)]


def test_queue_settings_per_queue_newest_row_wins_and_stats_follow(ch: Client) -> None:
    insert(ch, [*_visit_events("a", "sales", 0, answer=25, out=25, end=60),
                *_visit_events("b", "sales", 1, end=7)])
    before = read(ch, "SELECT answered_in_sla, short_abandoned, abandoned FROM pbx.queue_stats_15m")
    assert before == [dict(answered_in_sla=0, short_abandoned=0, abandoned=1)]
    ch.command(f"INSERT INTO pbx.queue_settings {SETTINGS_COLUMNS} VALUES ('sales', 10, 10)")
    time.sleep(0.01)  # rows are versioned by their insert time, to the millisecond
    ch.command(f"INSERT INTO pbx.queue_settings {SETTINGS_COLUMNS} VALUES ('sales', 30, 8)")
    # Thresholds apply when read: nothing is recomputed.
    assert dirty_entities(ch) == 0
    assert query_dicts(ch, "SELECT outcome, in_sla FROM pbx.queue_calls ORDER BY call_id") == [
        dict(outcome="answered", in_sla=1), dict(outcome="short_abandon", in_sla=0)]
    after = query_dicts(ch, "SELECT answered_in_sla, short_abandoned, abandoned FROM pbx.queue_stats_15m")
    assert after == [dict(answered_in_sla=1, short_abandoned=1, abandoned=0)]


def test_answer_grace_per_queue_decides_an_answer_after_the_queue_out(ch: Client) -> None:
    # queue_out at 10, the answer 1.5 s later: answered under the 2 s default, not under 1 s.
    insert(ch, _visit_events("c", "sales", 0, out=10, answer=11.5, end=60))
    assert read(ch, "SELECT outcome, agent, wait_s FROM pbx.queue_calls") == [
        dict(outcome="answered", agent="a1", wait_s=11.5)]
    ch.command("INSERT INTO pbx.queue_settings (queue_name, answer_grace_s) VALUES ('sales', 1)")
    assert query_dicts(ch, "SELECT outcome, agent, wait_s FROM pbx.queue_calls") == [
        dict(outcome="abandoned", agent=None, wait_s=10.0)]


def test_redelivered_queue_in_is_one_visit(ch: Client) -> None:
    # The PBX re-sends queue_in 0.8 s later (new event_id): same call, queue, and end.
    insert(ch, [*_visit_events("c", "sales", 0, answer=8, out=8, end=50),
                ev("queue_in", 0.8, call_id="c", queue_name="sales")])
    assert [(r["entered_at"], r["outcome"]) for r in _queue_calls(ch).values()] == [(at(0), "answered")]


def test_answer_outside_the_visit_does_not_count(ch: Client) -> None:
    # Left sales at 30 (overflow to vip), answered in vip at 40.
    insert(ch, [*_visit_events("c", "sales", 0, out=30), *_visit_events("c", "vip", 31, answer=40, out=40, end=90)])
    got = _queue_calls(ch)
    assert (got[("c", "sales")]["outcome"], got[("c", "sales")]["agent"]) == ("overflow", None)
    assert (got[("c", "vip")]["outcome"], got[("c", "vip")]["wait_s"]) == ("answered", 9.0)


def test_late_call_end_updates_the_materialized_interval(ch: Client) -> None:
    insert(ch, [ev("queue_in", 0, call_id="c", queue_name="sales")])
    assert read(ch, "SELECT offered FROM pbx.queue_stats_15m") == [dict(offered=0)]
    assert read(ch, "SELECT outcome FROM pbx.queue_calls") == [dict(outcome="waiting")]
    insert(ch, [ev("call_end", 45, call_id="c")])
    assert read(ch, "SELECT offered, abandoned, avg_abandon_s FROM pbx.queue_stats_15m") == [
        dict(offered=1, abandoned=1, avg_abandon_s=45.0)]
    assert read(ch, "SELECT outcome, wait_s FROM pbx.queue_calls") == [dict(outcome="abandoned", wait_s=45.0)]


def test_backfill_of_older_events_is_picked_up(ch: Client) -> None:
    insert(ch, _visit_events("new", "sales", 3600, answer=3605, out=3605, end=3700))
    # An import of yesterday's log arrives after today's live data.
    insert(ch, [ev(n, T0 - dt.timedelta(days=1, seconds=-s), source="import", call_id="old", **p) for n, s, p in [
        ("queue_in", 0, {"queue_name": "sales"}), ("call_end", 30, {})]])
    got = read(ch, "SELECT interval_start, abandoned, answered FROM pbx.queue_stats_15m ORDER BY interval_start")
    assert got == [dict(interval_start=T0 - dt.timedelta(days=1), abandoned=1, answered=0),
                   dict(interval_start=T0 + dt.timedelta(hours=1), abandoned=0, answered=1)]


# ----------------------------------------------------------------------------- agents


def _agent_day(day: int = 0) -> list[tuple]:
    """a1's (and a2's) morning; ``day``: the same a number of days later, its calls' ids suffixed."""
    shift, suffix = day * 86400, f"-{day}" if day else ""
    return [
        ev("pbx_agent_login", shift, userid="a1", exten="101"),
        # paused from 09:10 to 09:20: 300 s in each interval
        ev("pbx_agent_set_state", 600 + shift, userid="a1", state_name="Lunch"),
        # a call answered while paused counts as talk (talk > paused): 09:12:00-09:13:00
        ev("answered_internal", 720 + shift, call_id="c1" + suffix, line_userid="a1"),
        ev("hangup_internal", 780 + shift, call_id="c1" + suffix, line_userid="a1"),
        ev("call_end", 781 + shift, call_id="c1" + suffix),
        ev("pbx_agent_set_state", 1200 + shift, userid="a1", state_name="AVAILABLE"),
        # two overlapping calls 09:25:00-09:27:00 and 09:26:00-09:28:00: 180 s of talk, not 240
        ev("start_int_dial", 1495 + shift, call_id="c2" + suffix, line_userid="a1"),
        ev("answered_internal", 1500 + shift, call_id="c2" + suffix, line_userid="a1"),
        ev("answered_external", 1560 + shift, call_id="c3" + suffix, line_userid="a1"),
        ev("hangup_internal", 1620 + shift, call_id="c2" + suffix, line_userid="a1"),
        # c3 has no hangup of a1: talk runs to its call_end
        ev("call_end", 1680 + shift, call_id="c3" + suffix),
        ev("call_end", 1700 + shift, call_id="c2" + suffix),
        # a ring a1 never answers (a2 does), by dial time
        ev("start_int_dial", 1750 + shift, call_id="c4" + suffix, line_userid="a1"),
        ev("start_int_dial", 1770 + shift, call_id="c4" + suffix, line_userid="a2"),
        ev("answered_internal", 1775 + shift, call_id="c4" + suffix, line_userid="a2"),
        ev("exten_paused", 1765 + shift, call_id="c4" + suffix, exten="101", reason="unanswered_queue_call"),
        ev("pbx_agent_logout", 1800 + shift, userid="a1", reason="end_of_shift"),
        # after logout nothing counts
        ev("pbx_agent_set_state", 1850 + shift, userid="a1", state_name="Break"),
        ev("call_end", 1900 + shift, call_id="c4" + suffix),
    ]


def _agent_rows(ch: Client) -> list[dict]:
    return read(ch, "SELECT * FROM pbx.agent_stats_15m ORDER BY agent, interval_start")


A1_EXPECTED = [
    dict(interval_start=T0, agent="a1", logged_in_s=900.0, paused_s=240.0, talk_s=60.0, idle_s=600.0,
         calls_answered=1, ring_no_answer=0, occupancy_pct=pytest.approx(100 * 60 / 660)),
    dict(interval_start=T0 + dt.timedelta(minutes=15), agent="a1", logged_in_s=900.0, paused_s=300.0,
         talk_s=180.0, idle_s=420.0, calls_answered=1, ring_no_answer=1, occupancy_pct=pytest.approx(100 * 180 / 600)),
]


@pytest.mark.parametrize("order", _orders())
def test_agent_stats_15m_every_column_whatever_the_arrival_order(ch: Client, order: str) -> None:
    _insert_in_order(ch, _agent_day(), order)
    got = _agent_rows(ch)
    a2_interval = T0 + dt.timedelta(minutes=15)
    assert got == [
        *A1_EXPECTED,
        # a2 never logged in: no time, but the answer counts
        dict(interval_start=a2_interval, agent="a2", logged_in_s=0.0, paused_s=0.0, talk_s=0.0, idle_s=0.0,
             calls_answered=1, ring_no_answer=0, occupancy_pct=None),
    ]


def test_pause_across_interval_boundaries_is_split_by_the_second(ch: Client) -> None:
    insert(ch, [ev("pbx_agent_login", 890, userid="a", exten="1"),
                ev("pbx_agent_set_state", 895, userid="a", state_name="break"),
                ev("pbx_agent_set_state", 2710, userid="a", state_name="online"),
                ev("pbx_agent_logout", 2712, userid="a")])
    got = [(r["interval_start"], r["logged_in_s"], r["paused_s"], r["idle_s"], r["occupancy_pct"])
           for r in _agent_rows(ch)]
    assert got == [
        (T0, 10.0, 5.0, 5.0, 0.0),
        (T0 + dt.timedelta(minutes=15), 900.0, 900.0, 0.0, None),
        (T0 + dt.timedelta(minutes=30), 900.0, 900.0, 0.0, None),
        (T0 + dt.timedelta(minutes=45), 12.0, 10.0, 2.0, 0.0),
    ]


def test_agent_still_logged_in_counts_up_to_the_newest_event(ch: Client) -> None:
    insert(ch, [ev("pbx_agent_login", 0, userid="a", exten="1"), ev("call_end", 100, call_id="other")])
    assert [(r["logged_in_s"], r["idle_s"]) for r in _agent_rows(ch)] == [(100.0, 100.0)]
    insert(ch, [ev("call_end", 1000, call_id="later")])
    assert [(r["logged_in_s"], r["idle_s"]) for r in _agent_rows(ch)] == [(900.0, 900.0), (100.0, 100.0)]


def test_late_logout_removes_the_time_after_it(ch: Client) -> None:
    insert(ch, [ev("pbx_agent_login", 0, userid="a", exten="1"), ev("call_end", 1000, call_id="other")])
    assert len(_agent_rows(ch)) == 2
    insert(ch, [ev("pbx_agent_logout", 600, userid="a")])
    assert [(r["interval_start"], r["logged_in_s"]) for r in _agent_rows(ch)] == [(T0, 600.0)]


def test_a_late_hangup_gives_back_the_stored_talk_after_it(ch: Client) -> None:
    # Stored first as a talk to the call's end (09:01:40-09:16:40, into the next interval); the
    # agent's hangup at 09:05:00 arrives later: the talk time stored after it, up to the agent's
    # first stored stretch off calls, is idle now (the dirty window reaches that far).
    insert(ch, [ev("pbx_agent_login", 0, userid="a", exten="1"),
                ev("answered_internal", 100, call_id="c", line_userid="a"),
                ev("call_end", 1000, call_id="c"), ev("call_end", 2000, call_id="other")])
    assert [(r["talk_s"], r["idle_s"]) for r in _agent_rows(ch)] == [(800.0, 100.0), (100.0, 800.0), (0.0, 200.0)]
    insert(ch, [ev("hangup_internal", 300, call_id="c", line_userid="a")])
    after = [(200.0, 700.0), (0.0, 900.0), (0.0, 200.0)]
    assert [(r["talk_s"], r["idle_s"]) for r in _agent_rows(ch)] == after
    assert [(r["talk_s"], r["idle_s"]) for r in read(ch, "SELECT * FROM pbx.agent_stats_15m_raw ORDER BY interval_start")
            ] == after


def test_a_pause_named_idle_is_paused_time_not_idle_time(ch: Client) -> None:
    # 09:00 login, idle; 09:05 paused as "Idle" (not a ready state); 09:10 a call on pause; 09:12 AVAILABLE.
    insert(ch, [ev("pbx_agent_login", 0, userid="a", exten="1"),
                ev("pbx_agent_set_state", 300, userid="a", state_name="Idle"),
                ev("answered_internal", 600, call_id="c", line_userid="a"),
                ev("hangup_internal", 660, call_id="c", line_userid="a"), ev("call_end", 660, call_id="c"),
                ev("pbx_agent_set_state", 720, userid="a", state_name="AVAILABLE"),
                ev("call_end", 900, call_id="other")])
    states = read(ch, "SELECT state, paused, seconds FROM pbx.agent_states_15m ORDER BY state, paused")
    assert states == [dict(state="idle", paused=0, seconds=480.0), dict(state="idle", paused=1, seconds=360.0),
                      dict(state="talk", paused=0, seconds=60.0)]
    stats = read(ch, "SELECT logged_in_s, paused_s, talk_s, idle_s FROM pbx.agent_stats_15m")
    assert stats == [dict(logged_in_s=900.0, paused_s=360.0, talk_s=60.0, idle_s=480.0)]


def test_relogin_in_the_same_second_stays_logged_in_and_resets_pause(ch: Client) -> None:
    insert(ch, [ev("pbx_agent_login", 0, userid="a", exten="1"),
                ev("pbx_agent_set_state", 10, userid="a", state_name="break"),
                ev("pbx_agent_login", 20, userid="a", exten="1"),
                ev("pbx_agent_logout", 20, userid="a"),
                ev("pbx_agent_logout", 50, userid="a")])
    assert [(r["logged_in_s"], r["paused_s"], r["idle_s"]) for r in _agent_rows(ch)] == [(50.0, 10.0, 40.0)]


# ----------------------------------------------------------------------------- spy and recording


def _spy(name: str, t: float, call: str, spying: str, target: str, spy_type: str = "spy") -> tuple:
    return ev(name, t, call_id=call, spying_userid=spying, spying_target_userid=target, spying_exten="200",
              spying_target_exten="101", spy_type=spy_type)


def _spy_events() -> list[tuple]:
    return [
        _spy("call_spy_start", 10, "c1", "sup", "a1", "whisper"),
        _spy("call_spy_end", 40.5, "c1", "sup", "a1", "whisper"),
        # a second session on the same call and pair
        _spy("call_spy_start", 50, "c1", "sup", "a1", "bargein"),
        _spy("call_spy_end", 70, "c1", "sup", "a1", "bargein"),
        # never ended
        _spy("call_spy_start", 20, "c1", "sup", "a2"),
        # an end without a start (and an end of another pair) makes no row
        _spy("call_spy_end", 5, "c9", "sup", "a1"),
        _spy("call_spy_end", 30, "c1", "sup2", "a2"),
    ]


def test_spy_sessions_pair_start_with_next_end(ch: Client) -> None:
    insert(ch, _spy_events())
    got = read(ch, "SELECT * FROM pbx.spy_sessions ORDER BY started_at")
    base = dict(call_id="c1", spying_userid="sup", spying_exten="200", spying_target_exten="101")
    assert got == [
        dict(base, spying_target_userid="a1", spy_type="whisper", started_at=at(10), ended_at=at(40.5),
             duration_s=30.5),
        dict(base, spying_target_userid="a2", spy_type="spy", started_at=at(20), ended_at=None, duration_s=None),
        dict(base, spying_target_userid="a1", spy_type="bargein", started_at=at(50), ended_at=at(70),
             duration_s=20.0),
    ]


def _recording_events() -> list[tuple]:
    rec = lambda name, t, call: ev(name, t, call_id=call)  # noqa: E731
    return [
        # recorded before the answer, stopped, restarted, never stopped: clip to [answer, call_end]
        ev("answered_internal", 10, call_id="r1", line_userid="a1"),
        rec("call_recording_start", 5, "r1"), rec("call_recording_stop", 30, "r1"),
        rec("call_recording_start", 40, "r1"), rec("call_end", 110, "r1"),
        # answered, not recorded
        ev("answered_external", 0, call_id="r2", line_userid="a1"), rec("call_end", 60, "r2"),
        # recorded, never answered: nothing to clip to
        rec("call_recording_start", 0, "r3"), rec("call_recording_stop", 5, "r3"), rec("call_end", 6, "r3"),
        # answered and ended at the same instant: talk_s 0, coverage NULL; stop after call_end clipped
        ev("answered_internal", 50, call_id="r4", line_userid="a1"), rec("call_recording_start", 50, "r4"),
        rec("call_end", 50, "r4"), rec("call_recording_stop", 52, "r4"),
        # still going: recording, talk and coverage not known yet
        ev("answered_internal", 0, call_id="r5", line_userid="a1"), rec("call_recording_start", 1, "r5"),
        rec("call_recording_stop", 4, "r5"), rec("call_recording_start", 6, "r5"),
        # a stop without a start, and a call with neither answer nor recording: no row
        rec("call_recording_stop", 3, "r6"), rec("call_end", 4, "r6"),
    ]


def test_recording_audit_every_case(ch: Client) -> None:
    insert(ch, _recording_events())
    got = {r["call_id"]: r for r in read(ch, "SELECT * FROM pbx.recording_audit")}
    assert got == {
        "r1": dict(call_id="r1", answered_at=at(10), ended_at=at(110), talk_s=100.0, recorded=1, segments=2,
                   recording_s=90.0, unstopped=1, coverage_pct=90.0, at=at(10)),
        "r2": dict(call_id="r2", answered_at=at(0), ended_at=at(60), talk_s=60.0, recorded=0, segments=0,
                   recording_s=0.0, unstopped=0, coverage_pct=0.0, at=at(0)),
        "r3": dict(call_id="r3", answered_at=None, ended_at=at(6), talk_s=None, recorded=1, segments=1,
                   recording_s=None, unstopped=0, coverage_pct=None, at=at(6)),
        "r4": dict(call_id="r4", answered_at=at(50), ended_at=at(50), talk_s=0.0, recorded=1, segments=1,
                   recording_s=0.0, unstopped=0, coverage_pct=None, at=at(50)),
        "r5": dict(call_id="r5", answered_at=at(0), ended_at=None, talk_s=None, recorded=1, segments=2,
                   recording_s=None, unstopped=1, coverage_pct=None, at=at(0)),
    }


# ----------------------------------------------------------------------------- live views


def test_live_views_follow_the_latest_events(ch: Client) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    ago = lambda s: now - dt.timedelta(seconds=s)  # noqa: E731
    ch.command(f"INSERT INTO pbx.queue_settings {SETTINGS_COLUMNS} VALUES ('vip', 10, 3)")
    insert(ch, [
        ev("queue_in", ago(40), call_id="w1", queue_name="sales"),
        ev("queue_in", ago(25), call_id="w2", queue_name="sales"),
        *_visit_events("done", "sales", ago(30), answer=ago(20), agent="a2", out=ago(20)),
        # an open visit from yesterday is a lost call_end, not a caller on hold
        ev("queue_in", ago(86400), call_id="lost", queue_name="support"),
        ev("pbx_agent_login", ago(600), userid="a1", exten="1"),
        ev("pbx_agent_set_state", ago(300), userid="a1", state_name="break"),
        ev("pbx_agent_set_state", ago(200), userid="a1", state_name="lunch"),
        ev("pbx_agent_login", ago(600), userid="a2", exten="2"),
        ev("pbx_agent_set_state", ago(100), userid="a2", state_name="break"),
        ev("pbx_agent_login", ago(900), userid="a3", exten="3"),
        ev("pbx_agent_logout", ago(50), userid="a3"),
        ev("pbx_agent_login", ago(900), userid="a4", exten="4"),
    ])
    # Recent visits are computed from raw events: there before any refresh.
    recent = read(ch, "SELECT call_id, outcome FROM pbx.queue_calls WHERE queue_name = 'sales' ORDER BY call_id")
    assert recent == [dict(call_id="done", outcome="answered"), dict(call_id="w1", outcome="waiting"),
                      dict(call_id="w2", outcome="waiting")]
    queues = {r["queue_name"]: r for r in query_dicts(ch, "SELECT * FROM pbx.queue_now")}
    assert set(queues) == {"sales", "vip"}
    assert (queues["sales"]["waiting"], queues["sales"]["oldest_entered_at"]) == (2, ago(40))
    assert 40 <= queues["sales"]["longest_wait_s"] < 70
    assert queues["vip"] == dict(queue_name="vip", waiting=0, oldest_entered_at=None, longest_wait_s=None)
    settle_views(ch)
    stored = {r["queue_name"]: r for r in query_dicts(ch, "SELECT * FROM pbx.queue_now")}
    assert (stored["sales"]["waiting"], stored["sales"]["oldest_entered_at"]) == (2, ago(40))

    agents = {r["agent"]: r for r in read(ch, "SELECT * FROM pbx.agents_now")}
    assert agents == {
        "a1": dict(agent="a1", state="paused", state_name="lunch", since=ago(300), on_call=0),
        "a2": dict(agent="a2", state="talk", state_name="break", since=ago(20), on_call=1),
        "a3": dict(agent="a3", state="logged_out", state_name="", since=ago(50), on_call=0),
        "a4": dict(agent="a4", state="idle", state_name="", since=ago(900), on_call=0),
    }


# ----------------------------------------------------------------------------- refresh mechanics


STORED = ("queue_visits_data", "recordings_data", "spy_sessions_data", "agent_rings_data", "agent_time_data",
          "agent_time_15m_data", "agent_open", "refresh_done")


def _stored_rows(ch: Client) -> dict[str, int]:
    return {t: ch.query(f"SELECT count() FROM pbx.{t}").result_rows[0][0] for t in STORED}


def test_refresh_with_nothing_dirty_writes_nothing(ch: Client) -> None:
    insert(ch, [*_scenario_calls(), *_agent_day(), *_spy_events(), *_recording_events()])
    settle_views(ch)
    written = _stored_rows(ch)
    assert all(written.values()), written
    refresh_views(ch)
    refresh_views(ch)
    assert _stored_rows(ch) == written


def test_a_backlog_is_computed_a_chunk_per_run(ch: Client) -> None:
    ch.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('chunk_rows', 2)")
    insert(ch, [*_scenario_calls(), *_agent_day()])
    live = query_dicts(ch, "SELECT * FROM pbx.queue_calls ORDER BY ALL")
    ch.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('commit_margin_ms', 0)")
    runs = 0
    while dirty_entities(ch):
        refresh_views(ch)
        runs += 1
        # Every reader still sees every visit, half stored, half computed live.
        assert query_dicts(ch, "SELECT * FROM pbx.queue_calls ORDER BY ALL") == live
        assert runs < 40
    assert runs >= 3
    assert ch.query("SELECT count() FROM pbx.queue_visits_data").result_rows[0][0] == len(live)


def test_an_agent_backlog_over_several_runs_is_computed_whole(ch: Client) -> None:
    # Two days of a1 in two inserts, read a row per run: the run that computes
    # a1's first day must not count a1's second day (a later row) as seen.
    ch.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('chunk_rows', 1)")
    ch.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('commit_margin_ms', 0)")
    insert(ch, _agent_day())
    insert(ch, _agent_day(day=1))
    raw = query_dicts(ch, "SELECT * FROM pbx.agent_stats_15m_raw ORDER BY agent, interval_start")
    assert {r["interval_start"].date() for r in raw} == {T0.date(), (T0 + dt.timedelta(days=1)).date()}
    runs = 0
    while dirty_entities(ch):
        refresh_views(ch)
        runs += 1
        assert query_dicts(ch, "SELECT * FROM pbx.agent_stats_15m ORDER BY agent, interval_start") == raw
        assert runs < 60
    assert runs >= 3
    assert query_dicts(ch, "SELECT * FROM pbx.agent_stats_15m ORDER BY agent, interval_start") == raw


def test_full_recompute_command_rewrites_every_row(ch: Client) -> None:
    insert(ch, [*_scenario_calls(), *_agent_day()])
    before = read(ch, "SELECT * FROM pbx.queue_stats_15m ORDER BY queue_name")
    agents = read(ch, "SELECT * FROM pbx.agent_stats_15m ORDER BY ALL")
    computed = ch.query("SELECT max(computed_at) FROM pbx.refresh_done").result_rows[0][0]
    ch.command(RECOMPUTE_CALLS)
    ch.command(RECOMPUTE_AGENTS)
    assert dirty_entities(ch) > 0
    assert read(ch, "SELECT * FROM pbx.queue_stats_15m ORDER BY queue_name") == before
    assert read(ch, "SELECT * FROM pbx.agent_stats_15m ORDER BY ALL") == agents
    assert ch.query("SELECT min(computed_at) FROM pbx.refresh_done FINAL").result_rows[0][0] > computed


#: The full recompute commands of docs/metrics.md#refresh, as documented.
RECOMPUTE_CALLS = ("INSERT INTO pbx.arrivals SELECT now64(3, 'UTC'), 'call', call_id, min(first_at), max(last_at) "
                   "FROM pbx.call_spans GROUP BY call_id")
RECOMPUTE_AGENTS = ("INSERT INTO pbx.arrivals SELECT now64(3, 'UTC'), 'agent', userid, min(received_at), "
                    "max(received_at) FROM pbx.events WHERE event IN ('pbx_agent_login', 'pbx_agent_logout', "
                    "'pbx_agent_set_state') AND userid != '' GROUP BY userid, toDate(received_at)")


def test_the_schedule_refreshes_by_itself(ch: Client) -> None:
    views = {r["view"] for r in query_dicts(ch, "SELECT view FROM system.view_refreshes WHERE database = 'pbx'")}
    assert views == {"calls_refresh", "agents_refresh"}
    ch.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('commit_margin_ms', 0)")
    insert(ch, [*_visit_events("c", "sales", 0, answer=3, out=3, end=30), ev("pbx_agent_login", 0, userid="a1")])
    ch.command("SYSTEM START VIEWS")  # (the fixture holds them; the schedule runs every minute)
    deadline = time.monotonic() + 90
    while dirty_entities(ch) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert dirty_entities(ch) == 0
    assert query_dicts(ch, "SELECT outcome FROM pbx.queue_visits_data FINAL JOIN pbx.queue_calls USING call_id") == [
        dict(outcome="answered")]


# ----------------------------------------------------------------------------- through the service


def test_webhooks_through_the_service_reach_every_view(serve) -> None:
    call = "1541078811.98"
    steps = [
        "/pbx_agent_login?userid=linuxbox&exten=121",
        f"/start_call?caller_type=external&caller_num=591166223&dialed_num=591166200&call_id={call}",
        f"/queue_in?caller_num=591166223&dialed_num=591166200&queue_name=helpdesk&call_id={call}",
        f"/start_int_dial?line_userid=linuxbox&call_id={call}&queue_name=helpdesk&queue_name=helpdesk",
        f"/answered_internal?line_userid=linuxbox&call_id={call}",
        f"/queue_out?queue_name=helpdesk&call_id={call}",
        f"/call_recording_start?call_id={call}",
        f"/call_spy_start?call_id={call}&spying_userid=boss&spying_target_userid=linuxbox&spy_type=whisper",
    ]
    with httpx.Client(base_url=serve.url) as http:
        for path in steps:
            assert http.get(path).status_code == 200, path
    assert serve.stop() == 0, serve.log()

    client = clickhouse.connect(serve.dsn)
    try:
        visit = read(client, "SELECT agent, outcome, in_sla FROM pbx.queue_calls")
        assert visit == [dict(agent="linuxbox", outcome="answered", in_sla=1)]
        assert read(client, "SELECT offered, answered, answered_in_sla FROM pbx.queue_stats_15m") == [
            dict(offered=1, answered=1, answered_in_sla=1)]
        assert read(client, "SELECT sum(calls_answered) AS n FROM pbx.agent_stats_15m") == [dict(n=1)]
        assert read(client, "SELECT agent, state, on_call FROM pbx.agents_now") == [
            dict(agent="linuxbox", state="talk", on_call=1)]
        assert query_dicts(client, "SELECT queue_name, waiting FROM pbx.queue_now") == [dict(queue_name="helpdesk", waiting=0)]
        assert read(client, "SELECT spy_type, ended_at FROM pbx.spy_sessions") == [
            dict(spy_type="whisper", ended_at=None)]
        assert read(client, "SELECT recorded, unstopped, ended_at FROM pbx.recording_audit") == [
            dict(recorded=1, unstopped=1, ended_at=None)]
    finally:
        client.close()
