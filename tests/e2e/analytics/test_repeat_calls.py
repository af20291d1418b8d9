"""pbx.repeat_calls(window_s) (issue 14): repeat callers and first-contact resolution.

Callers who call again just inside and just outside the window (to the
millisecond), an abandoned caller who retries minutes later, a repeat that is
still on the line, and calls that are not inbound or have no number.
"""

from __future__ import annotations

import datetime as dt

import pytest
from clickhouse_connect.driver.client import Client

from ingest.testing import query_dicts, settle_views
from tests.e2e.views.views_helpers import T0, at, ev, insert

DAY = 86400


def _inbound(call: str, t: float, caller: str, *, queue: str | None = "sales", answer: float | None = None,
             end: float | None = None) -> list[tuple]:
    events = [ev("start_call", t, call_id=call, caller_type="external", caller_num=caller, dialed_num="800100")]
    if queue is not None:
        events.append(ev("queue_in", t + 1, call_id=call, queue_name=queue, caller_num=caller))
    if answer is not None:
        events.append(ev("answered_internal", answer, call_id=call, line_userid="zoe"))
    if end is not None:
        events.append(ev("call_end", end, call_id=call))
    return events


def _scenario() -> list[tuple]:
    a = "+420600000001"
    b = "+420600000002"
    return [
        # a calls, is answered; calls again exactly a day later (inside: <= window) ...
        *_inbound("a1", 0, a, answer=10, end=100),
        *_inbound("a2", DAY, a, queue="support", answer=DAY + 5, end=DAY + 50),
        # ... and again a day and 1 ms after that (outside), and is still on the line.
        *_inbound("a3", 2 * DAY + 0.001, a, answer=2 * DAY + 5),
        # b gives up in the queue and retries three minutes later, answered.
        *_inbound("b1", 50, b, end=80),
        *_inbound("b2", 230, b, answer=240, end=400),
        # An agent calls b back (outbound): not an inbound call, neither a row nor a "next call".
        ev("start_call", 500, call_id="b-callback", caller_type="internal", caller_num="101", dialed_num=b),
        ev("start_ext_dial", 501, call_id="b-callback", line_userid="zoe", dialed_num=b),
        ev("call_end", 520, call_id="b-callback"),
        # Hung up in the IVR: a row with no first queue.
        *_inbound("c1", 60, "+420600000003", queue=None, end=70),
        # No caller number: no row.
        *_inbound("anon", 90, "", answer=95, end=120),
        # Internal call: no row.
        ev("start_call", 130, call_id="internal", caller_type="internal", caller_num="102", dialed_num="103"),
        ev("call_end", 140, call_id="internal"),
    ]


def _row(call_id: str, caller: str, started: float, first_queue: str, answered: int, next_call: float | None,
         repeat: int) -> dict:
    return dict(call_id=call_id, caller_num=caller, started_at=at(started), first_queue=first_queue,
                answered=answered, next_call_at=None if next_call is None else at(next_call), repeat=repeat)


def test_repeat_calls_has_the_contract_columns_and_types(ch: Client) -> None:
    got = ch.query("DESCRIBE TABLE pbx.repeat_calls(window_s = 86400)").result_rows
    assert [(r[0], r[1]) for r in got] == [
        ("call_id", "String"), ("caller_num", "String"), ("started_at", "DateTime64(3, 'UTC')"),
        ("first_queue", "String"), ("answered", "UInt8"), ("next_call_at", "Nullable(DateTime64(3, 'UTC'))"),
        ("repeat", "UInt8")]


def test_callers_who_call_again_just_inside_and_just_outside_the_window(ch: Client) -> None:
    insert(ch, _scenario())
    settle_views(ch)
    got = query_dicts(ch, "SELECT * FROM pbx.repeat_calls(window_s = 86400) ORDER BY started_at")
    a, b = "+420600000001", "+420600000002"
    assert got == [
        _row("a1", a, 0, "sales", 1, DAY, 1),
        _row("b1", b, 50, "sales", 0, 230, 1),
        _row("c1", "+420600000003", 60, "", 0, None, 0),
        _row("b2", b, 230, "sales", 1, None, 0),
        _row("a2", a, DAY, "support", 1, 2 * DAY + 0.001, 0),
    ]
    # A shorter window: a's next call a day later is no longer a repeat, b's retry still is.
    short = {r["call_id"]: r["repeat"] for r in query_dicts(ch, "SELECT * FROM pbx.repeat_calls(window_s = 180)")}
    assert short == {"a1": 0, "b1": 1, "c1": 0, "b2": 0, "a2": 0}


def test_first_contact_resolution_per_queue_and_day(ch: Client) -> None:
    insert(ch, _scenario())
    settle_views(ch)
    got = query_dicts(ch, """
        SELECT toDate(started_at) AS day, first_queue,
               100 * countIf(answered = 1 AND repeat = 0) / countIf(answered = 1) AS fcr_pct
        FROM pbx.repeat_calls(window_s = 86400)
        WHERE answered = 1
        GROUP BY day, first_queue ORDER BY day, first_queue""")
    # Day 1, sales: a1 answered but called back (repeat), b2 answered and resolved -> 50 %.
    # Day 2, support: a2 answered, its next call came 1 ms too late to count -> 100 %.
    assert got == [dict(day=T0.date(), first_queue="sales", fcr_pct=50.0),
                   dict(day=(T0 + dt.timedelta(days=1)).date(), first_queue="support", fcr_pct=100.0)]


def test_the_window_must_be_given_and_be_a_whole_number_of_seconds(ch: Client) -> None:
    # ClickHouse has no defaults for view parameters (ClickHouse#52400): the window is always written.
    with pytest.raises(Exception, match="Substitution `window_s` is not set"):
        ch.query("SELECT * FROM pbx.repeat_calls()")
    # Without parentheses ClickHouse's message does not name it (docs/metrics.md says so).
    with pytest.raises(Exception, match="Empty list of columns"):
        ch.query("SELECT * FROM pbx.repeat_calls")
    for bad in ("'a day'", "-5", "1.5"):
        with pytest.raises(Exception, match="query parameter 'window_s'"):
            ch.query(f"SELECT * FROM pbx.repeat_calls(window_s = {bad})")
