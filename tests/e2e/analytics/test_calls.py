"""pbx.calls (issue 14): one row per call, every column, on hand-built calls.

The calls cover what the contract names: a transfer (two agents on one call),
outbound calls answered and not, an unanswered internal call, abandoned and
overflowed inbound calls, a call without call_end, a call whose start_call
was lost, a caller who hangs up in the IVR, and a call whose events reached us
a few milliseconds out of order. The same events are stored in several
orders and batchings; the stored history (pbx.calls_data) must equal the
computation from raw events.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from clickhouse_connect.driver.client import Client

from ingest.testing import query_dicts, settle_views
from tests.e2e.views.views_helpers import at, ev, insert

COLUMNS = [
    ("call_id", "String"),
    ("custom_call_id", "String"),
    ("started_at", "DateTime64(3, 'UTC')"),
    ("ended_at", "Nullable(DateTime64(3, 'UTC'))"),
    ("direction", "LowCardinality(String)"),
    ("caller_num", "String"),
    ("dialed_num", "String"),
    ("queues", "Array(String)"),
    ("answered_at", "Nullable(DateTime64(3, 'UTC'))"),
    ("agent", "Nullable(String)"),
    ("agents", "Array(String)"),
    ("wait_s", "Nullable(Float64)"),
    ("talk_s", "Nullable(Float64)"),
    ("duration_s", "Nullable(Float64)"),
    ("outcome", "LowCardinality(String)"),
    ("recorded", "UInt8"),
    ("spied", "UInt8"),
]


def test_calls_has_the_contract_columns_and_types(ch: Client) -> None:
    described = [(r[0], r[1]) for r in ch.query("DESCRIBE TABLE pbx.calls").result_rows]
    assert described == COLUMNS
    since = ch.query("DESCRIBE TABLE pbx.calls_since(since = '2026-11-02 00:00:00')").result_rows
    assert [(r[0], r[1]) for r in since] == COLUMNS


def _start(call: str, t: float, caller_type: str, caller: str, dialed: str, **extra: str) -> tuple:
    return ev("start_call", t, call_id=call, caller_type=caller_type, caller_num=caller, dialed_num=dialed,
              target_num=dialed, **extra)


def _calls() -> list[tuple]:
    return [
        # Inbound, answered by zoe, transferred to adam (who answers later), recorded and spied on.
        _start("transfer", 0, "external", "+420600000001", "800100"),
        ev("queue_in", 2, call_id="transfer", queue_name="sales", caller_num="+420600000001",
           dialed_num="800100", custom_call_id="CUST-1"),
        ev("start_int_dial", 3, call_id="transfer", line_userid="zoe", queue_name="sales", custom_call_id="CUST-1"),
        ev("answered_internal", 5, call_id="transfer", line_userid="zoe", custom_call_id="CUST-1"),
        ev("queue_out", 5, call_id="transfer", queue_name="sales", custom_call_id="CUST-1"),
        ev("call_recording_start", 6, call_id="transfer"),
        ev("call_spy_start", 30, call_id="transfer", spying_userid="sup", spying_target_userid="zoe"),
        ev("call_spy_end", 40, call_id="transfer", spying_userid="sup", spying_target_userid="zoe"),
        ev("start_int_dial", 60, call_id="transfer", line_userid="adam", custom_call_id="CUST-1"),
        ev("answered_internal", 65, call_id="transfer", line_userid="adam", custom_call_id="CUST-1"),
        ev("hangup_internal", 65, call_id="transfer", line_userid="zoe", custom_call_id="CUST-1"),
        # zoe picks up again (a consultation back): agents lists each agent once
        ev("answered_internal", 90, call_id="transfer", line_userid="zoe", custom_call_id="CUST-1"),
        ev("hangup_internal", 125.25, call_id="transfer", line_userid="adam", custom_call_id="CUST-1"),
        ev("call_end", 125.25, call_id="transfer", custom_call_id="CUST-1"),
        # Outbound, answered by the remote side.
        _start("out-answered", 10, "internal", "101", "+420777000111", caller_userid="zoe"),
        ev("start_ext_dial", 11, call_id="out-answered", caller_num="101", dialed_num="+420777000111",
           line_userid="zoe", direction="outgoing"),
        ev("answered_external", 20.5, call_id="out-answered", caller_num="101", dialed_num="+420777000111",
           line_userid="zoe", direction="outgoing"),
        ev("hangup_internal", 80.5, call_id="out-answered", line_userid="zoe"),
        ev("call_end", 80.5, call_id="out-answered"),
        # Outbound, nobody answered.
        _start("out-unanswered", 100, "internal", "102", "+420777000222", caller_userid="adam"),
        ev("start_ext_dial", 101, call_id="out-unanswered", line_userid="adam", direction="outgoing"),
        ev("call_end", 121, call_id="out-unanswered"),
        # Internal call (extension to extension) nobody answered.
        _start("internal", 200, "internal", "101", "102", caller_userid="zoe"),
        ev("start_int_dial", 200.5, call_id="internal", caller_num="101", line_userid="adam", direction="internal"),
        ev("call_end", 215, call_id="internal"),
        # Inbound, overflowed from sales to support, then gave up.
        _start("overflow", 300, "external", "+420600000002", "800100"),
        ev("queue_in", 302, call_id="overflow", queue_name="sales"),
        ev("queue_out", 362, call_id="overflow", queue_name="sales"),
        ev("queue_in", 363, call_id="overflow", queue_name="support"),
        ev("call_end", 400, call_id="overflow"),
        # Inbound, answered, still going (no call_end).
        _start("active", 500, "external", "+420600000003", "800200"),
        ev("queue_in", 501, call_id="active", queue_name="support"),
        ev("answered_internal", 510, call_id="active", line_userid="adam"),
        ev("call_recording_start", 511, call_id="active"),
        # Inbound, hung up in the IVR before any queue.
        _start("ivr", 600, "external", "+420600000004", "800100"),
        ev("call_end", 605, call_id="ivr"),
        # Inbound whose start_call was lost: numbers from its other events.
        ev("queue_in", 700, call_id="no-start", queue_name="sales", caller_num="+420600000005", dialed_num="800300"),
        ev("call_end", 720, call_id="no-start"),
        # Concurrent webhooks, reordered on the way: the queue_in reached us 10 ms
        # before the start_call, the answer 20 ms after the call_end.
        ev("queue_in", 799.99, call_id="swapped", queue_name="sales", caller_num="+420600000006"),
        _start("swapped", 800, "external", "+420600000006", "800100"),
        ev("queue_out", 830.01, call_id="swapped", queue_name="sales"),
        ev("call_end", 830.03, call_id="swapped"),
        ev("answered_internal", 830.05, call_id="swapped", line_userid="zoe"),
        # An answer whose agent the PBX did not send: answered, but no agent to name.
        _start("anonymous", 900, "originate", "103", "104"),
        ev("answered_internal", 901, call_id="anonymous"),
        ev("call_end", 902, call_id="anonymous"),
    ]


def _row(call_id: str, started: float, ended: float | None, direction: str, caller: str, dialed: str,
         queues: list[str], answered: float | None, agents: list[str], outcome: str, *, custom: str = "",
         recorded: int = 0, spied: int = 0, agent: str | None = None) -> dict:
    def seconds(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    return dict(
        call_id=call_id, custom_call_id=custom, started_at=at(started), ended_at=None if ended is None else at(ended),
        direction=direction, caller_num=caller, dialed_num=dialed, queues=queues,
        answered_at=None if answered is None else at(answered),
        agent=agents[0] if agents and agent is None else agent, agents=agents,
        wait_s=seconds(started, answered), talk_s=seconds(answered, ended), duration_s=seconds(started, ended),
        outcome=outcome, recorded=recorded, spied=spied)


EXPECTED = {
    r["call_id"]: r for r in [
        _row("transfer", 0, 125.25, "inbound", "+420600000001", "800100", ["sales"], 5, ["zoe", "adam"],
             "answered", custom="CUST-1", recorded=1, spied=1),
        _row("out-answered", 10, 80.5, "outbound", "101", "+420777000111", [], 20.5, ["zoe"], "answered"),
        _row("out-unanswered", 100, 121, "outbound", "102", "+420777000222", [], None, [], "unanswered"),
        _row("internal", 200, 215, "internal", "101", "102", [], None, [], "unanswered"),
        _row("overflow", 300, 400, "inbound", "+420600000002", "800100", ["sales", "support"], None, [],
             "abandoned"),
        _row("active", 500, None, "inbound", "+420600000003", "800200", ["support"], 510, ["adam"], "active",
             recorded=1),
        _row("ivr", 600, 605, "inbound", "+420600000004", "800100", [], None, [], "unanswered"),
        _row("no-start", 700, 720, "inbound", "+420600000005", "800300", ["sales"], None, [], "abandoned"),
        # started at the earliest event; talk 0, not -0.02: the answer came after the end
        {**_row("swapped", 799.99, 830.03, "inbound", "+420600000006", "800100", ["sales"], 830.05, ["zoe"],
                "answered"), "talk_s": 0.0},
        _row("anonymous", 900, 902, "internal", "103", "104", [], 901, [], "answered"),
    ]
}


def _orders() -> list:
    return [pytest.param("one_block", id="one-insert"), pytest.param("reversed", id="reverse-order-one-insert-each"),
            pytest.param("shuffled", id="shuffled-split-inserts-refreshed-between")]


def _insert_in_order(ch: Client, events: list[tuple], order: str) -> None:
    if order == "one_block":
        insert(ch, events)
    elif order == "reversed":
        for e in reversed(events):
            insert(ch, [e])
    else:
        shuffled = events[:]
        random.Random(14).shuffle(shuffled)
        for i in range(0, len(shuffled), 4):
            insert(ch, shuffled[i:i + 4])
            settle_views(ch)  # the stored history sees every partial state on the way


def _calls_by_id(ch: Client, sql: str = "SELECT * FROM pbx.calls") -> dict[str, dict]:
    return {r["call_id"]: r for r in query_dicts(ch, sql)}


@pytest.mark.parametrize("order", _orders())
def test_every_column_of_every_kind_of_call_whatever_the_arrival_order(ch: Client, order: str) -> None:
    _insert_in_order(ch, _calls(), order)
    settle_views(ch)
    got = _calls_by_id(ch)
    assert got.keys() == EXPECTED.keys()
    for call_id, expected in EXPECTED.items():
        assert got[call_id] == expected, call_id
    # These calls are weeks old: pbx.calls served them from the stored history,
    # which must be what the raw events give.
    assert _calls_by_id(ch, "SELECT * FROM pbx.calls_since(since = '1970-01-01 00:00:00')") == got
    assert ch.query("SELECT count() FROM pbx.calls_data FINAL WHERE is_deleted = 0").result_rows == [(len(got),)]


def test_calls_since_leaves_out_calls_that_started_before(ch: Client) -> None:
    insert(ch, _calls())
    since = at(300)
    got = _calls_by_id(ch, f"SELECT * FROM pbx.calls_since(since = '{since:%Y-%m-%d %H:%M:%S}')")
    assert sorted(got) == sorted(c for c, r in EXPECTED.items() if r["started_at"] >= since)


def test_a_late_earlier_event_moves_the_start_and_replaces_the_stored_call(ch: Client) -> None:
    insert(ch, [ev("queue_in", 10, call_id="c", queue_name="sales", caller_num="+420600000009"),
                ev("call_end", 40, call_id="c")])
    settle_views(ch)
    assert [(r["started_at"], r["direction"]) for r in query_dicts(ch, "SELECT * FROM pbx.calls")] == [(at(10), "inbound")]
    # The start_call, two seconds earlier, arrives in a later batch (an import of the PBX's log).
    insert(ch, [_start("c", 8, "external", "+420600000009", "800100")])
    settle_views(ch)
    settle_views(ch)  # within the 15-s overlap: the same window again, the old row is not deleted twice
    got = query_dicts(ch, "SELECT started_at, dialed_num, duration_s FROM pbx.calls")
    assert got == [dict(started_at=at(8), dialed_num="800100", duration_s=32.0)]
    # (FINAL hides deleted rows: look at the stored rows themselves.)
    deleted = query_dicts(ch, "SELECT started_at FROM pbx.calls_data WHERE is_deleted = 1")
    assert deleted == [dict(started_at=at(10))]


def test_recent_calls_come_from_raw_events_before_any_refresh(ch: Client) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    ago = lambda s: now - dt.timedelta(seconds=s)  # noqa: E731
    insert(ch, [_start("recent", ago(60), "external", "+420600000010", "800100"),
                ev("queue_in", ago(58), call_id="recent", queue_name="sales"),
                ev("answered_internal", ago(50), call_id="recent", line_userid="zoe")])
    got = query_dicts(ch, "SELECT call_id, outcome, agent, wait_s FROM pbx.calls")
    assert got == [dict(call_id="recent", outcome="active", agent="zoe", wait_s=10.0)]
    assert ch.query("SELECT count() FROM pbx.calls_data").result_rows == [(0,)]
