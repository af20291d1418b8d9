"""Events of one moment, reordered: every pairing rule of docs/metrics.md#event-time-and-ties.

A PBX fires the events of one moment as concurrent requests, so they reach us
milliseconds apart in either order, or in the same millisecond with only the
arrival order (``seq``) between them. Each rule is checked with the two events
swapped by 50 ms both ways and in the same millisecond in both arrival orders;
every view is read as a reader sees it at once and once stored (``read``).
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from ingest.storing import clickhouse
from ingest.testing import query_dicts, spec_example_urls
from tests.e2e.views.views_helpers import at, ev, insert, read

#: (first offset, second offset) in seconds for the two events of a pair, inserted in this order.
ORDERS = [
    pytest.param(0.0, 0.05, id="in-order-50ms"),
    pytest.param(0.05, 0.0, id="swapped-50ms"),
    pytest.param(0.0, 0.0, id="same-ms"),
]


def _pair(first: tuple, second: tuple, swap: bool) -> list[tuple]:
    return [second, first] if swap else [first, second]


# ----------------------------------------------------------------------------- queue visits


@pytest.mark.parametrize("swap", [False, True], ids=["queue_out-first", "answer-first"])
@pytest.mark.parametrize(("d_out", "d_answer"), ORDERS)
def test_an_answer_fired_with_the_queue_out_answers_the_visit(ch: Client, d_out: float, d_answer: float,
                                                             swap: bool) -> None:
    insert(ch, [ev("queue_in", 0, call_id="c", queue_name="sales")])
    insert(ch, _pair(ev("queue_out", 10 + d_out, call_id="c", queue_name="sales"),
                     ev("answered_internal", 10 + d_answer, call_id="c", line_userid="a1"), swap))
    insert(ch, [ev("call_end", 60, call_id="c")])
    assert read(ch, "SELECT outcome, agent, wait_s, in_sla FROM pbx.queue_calls") == [
        dict(outcome="answered", agent="a1", wait_s=10 + d_answer, in_sla=1)]
    assert read(ch, "SELECT answered, abandoned FROM pbx.queue_stats_15m") == [dict(answered=1, abandoned=0)]


def test_an_answer_after_the_grace_is_not_the_visits(ch: Client) -> None:
    insert(ch, [ev("queue_in", 0, call_id="c", queue_name="sales"), ev("queue_out", 10, call_id="c", queue_name="sales"),
                ev("answered_internal", 12.001, call_id="c", line_userid="a1"), ev("call_end", 60, call_id="c")])
    assert read(ch, "SELECT outcome, wait_s FROM pbx.queue_calls") == [dict(outcome="abandoned", wait_s=10.0)]


def test_an_answer_after_the_next_queue_in_belongs_to_the_next_visit(ch: Client) -> None:
    # Overflow sales -> support at 60 s (queue_out and the next queue_in at once), answered 0.5 s later.
    insert(ch, [ev("queue_in", 0, call_id="c", queue_name="sales"), ev("queue_out", 60, call_id="c", queue_name="sales"),
                ev("queue_in", 60, call_id="c", queue_name="support"),
                ev("answered_internal", 60.5, call_id="c", line_userid="a1"),
                ev("queue_out", 60.5, call_id="c", queue_name="support"), ev("call_end", 99, call_id="c")])
    got = {r["queue_name"]: r for r in read(ch, "SELECT queue_name, outcome, agent FROM pbx.queue_calls")}
    assert got == {"sales": dict(queue_name="sales", outcome="overflow", agent=None),
                   "support": dict(queue_name="support", outcome="answered", agent="a1")}


@pytest.mark.parametrize(("d_first", "d_second"), ORDERS)
def test_an_instant_overflow_keeps_its_order_whatever_the_arrival(ch: Client, d_first: float, d_second: float) -> None:
    # The PBX puts the call in sales and, sales being closed, at once in support: queue_in(sales),
    # queue_out(sales), queue_in(support) of one moment, the last one arriving first or not.
    insert(ch, [ev("queue_in", 5 + d_second, call_id="c", queue_name="support")])
    insert(ch, [ev("queue_in", 5 + d_first, call_id="c", queue_name="sales"),
                ev("queue_out", 5 + d_first, call_id="c", queue_name="sales")])
    insert(ch, [ev("answered_internal", 20, call_id="c", line_userid="a1"),
                ev("queue_out", 20, call_id="c", queue_name="support"), ev("call_end", 50, call_id="c")])
    got = {r["queue_name"]: r["outcome"] for r in read(ch, "SELECT queue_name, outcome FROM pbx.queue_calls")}
    assert got == {"sales": "overflow", "support": "answered"}


@pytest.mark.parametrize(("d_in", "d_out"), ORDERS)
def test_a_visit_left_at_once_keeps_its_queue_out(ch: Client, d_in: float, d_out: float) -> None:
    # A call entering a queue and leaving it in one moment, then ending a second later.
    insert(ch, [ev("queue_out", 5 + d_out, call_id="c", queue_name="sales")])
    insert(ch, [ev("queue_in", 5 + d_in, call_id="c", queue_name="sales"), ev("call_end", 6, call_id="c")])
    [visit] = read(ch, "SELECT left_at, wait_s, outcome FROM pbx.queue_calls")
    # (a queue_out that overtook its queue_in leaves the visit when it entered: no negative wait)
    assert visit == dict(left_at=at(5 + max(d_out, d_in)), wait_s=pytest.approx(max(d_out - d_in, 0.0)),
                         outcome="short_abandon")


def test_a_call_answered_before_its_queue_out_arrives_is_not_waiting(ch: Client) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    insert(ch, [ev("queue_in", now - dt.timedelta(seconds=20), call_id="c", queue_name="sales"),
                ev("answered_internal", now - dt.timedelta(milliseconds=50), call_id="c", line_userid="a1")])
    assert query_dicts(ch, "SELECT queue_name, waiting FROM pbx.queue_now") == [dict(queue_name="sales", waiting=0)]


# ----------------------------------------------------------------------------- agents


def _agent_time(ch: Client) -> list[dict]:
    return read(ch, "SELECT logged_in_s, paused_s, talk_s, idle_s FROM pbx.agent_stats_15m")


@pytest.mark.parametrize("swap", [False, True], ids=["answer-first", "end-first"])
@pytest.mark.parametrize("end", ["hangup_internal", "call_end"])
@pytest.mark.parametrize(("d_answer", "d_end"), ORDERS)
def test_a_talk_ended_as_it_was_answered_is_over(ch: Client, d_answer: float, d_end: float, end: str,
                                                 swap: bool) -> None:
    insert(ch, [ev("pbx_agent_login", 0, userid="a1")])
    insert(ch, _pair(ev("answered_internal", 100 + d_answer, call_id="c", line_userid="a1"),
                     ev(end, 100 + d_end, call_id="c", line_userid="a1"), swap))
    insert(ch, [ev("pbx_agent_logout", 600, userid="a1")])
    [row] = _agent_time(ch)
    assert row["logged_in_s"] == 600.0 and row["talk_s"] == pytest.approx(max(0.0, d_end - d_answer))


@pytest.mark.parametrize(("d_login", "d_state"), ORDERS)
def test_a_state_set_with_the_login_is_kept(ch: Client, d_login: float, d_state: float) -> None:
    insert(ch, [ev("pbx_agent_set_state", 10 + d_state, userid="a1", state_name="Break")])
    insert(ch, [ev("pbx_agent_login", 10 + d_login, userid="a1")])
    insert(ch, [ev("pbx_agent_logout", 610, userid="a1")])
    [row] = _agent_time(ch)
    logged_in = 600 - d_login  # (a state set up to the tolerance before the login applies from the login)
    assert (row["logged_in_s"], row["paused_s"]) == (pytest.approx(logged_in),
                                                     pytest.approx(logged_in - max(d_state - d_login, 0)))
    states = {r["state"]: r["seconds"] for r in read(ch, "SELECT state, seconds FROM pbx.agent_states_15m")}
    # (idle from the login to a state set up to the tolerance after it)
    assert states == ({"break": pytest.approx(600 - d_state + d_login), "idle": pytest.approx(d_state - d_login)}
                      if d_state > d_login else {"break": pytest.approx(logged_in)})


@pytest.mark.parametrize(("d_logout", "d_login"), [pytest.param(0.0, 0.05, id="logout-then-login-50ms"),
                                                   pytest.param(0.05, 0.0, id="login-then-logout-50ms"),
                                                   pytest.param(0.0, 0.0, id="same-ms")])
@pytest.mark.parametrize("swap", [False, True], ids=["logout-arrives-first", "login-arrives-first"])
def test_a_relogin_stays_logged_in(ch: Client, d_logout: float, d_login: float, swap: bool) -> None:
    insert(ch, [ev("pbx_agent_login", 0, userid="a1")])
    insert(ch, _pair(ev("pbx_agent_logout", 300 + d_logout, userid="a1"),
                     ev("pbx_agent_login", 300 + d_login, userid="a1"), swap))
    insert(ch, [ev("pbx_agent_logout", 900, userid="a1")])
    # a logout up to the tolerance after a login is part of a re-login: only a logout before it logs out
    assert [r["logged_in_s"] for r in _agent_time(ch)] == [pytest.approx(900 - max(d_login - d_logout, 0))]


@pytest.mark.parametrize("order", [["meeting", "online"], ["online", "meeting"]], ids=["meeting-then-online",
                                                                                      "online-then-meeting"])
def test_two_states_in_one_second_keep_the_logs_order(ch: Client, order: list[str]) -> None:
    # The hold-out day's case: an access log with `meeting` then `online` in one second.
    insert(ch, [ev("pbx_agent_login", 0, userid="a1", source="import")])
    insert(ch, [ev("pbx_agent_set_state", 100, userid="a1", state_name=name, source="import") for name in order])
    insert(ch, [ev("pbx_agent_logout", 700, userid="a1", source="import")])
    expected = dict(paused_s=600.0, idle_s=100.0) if order[-1] == "meeting" else dict(paused_s=0.0, idle_s=700.0)
    got = read(ch, "SELECT paused_s, idle_s FROM pbx.agent_stats_15m")
    assert got == [expected]
    assert query_dicts(ch, "SELECT paused_s, idle_s FROM pbx.agent_stats_15m_raw") == [expected]


# ----------------------------------------------------------------------------- spy and recording


def _spy(name: str, t: float, spy_type: str) -> tuple:
    return ev(name, t, call_id="c", spying_userid="sup", spying_target_userid="a1", spy_type=spy_type)


@pytest.mark.parametrize(("d_end", "d_start"), ORDERS)
@pytest.mark.parametrize("swap", [False, True], ids=["end-arrives-first", "start-arrives-first"])
def test_a_spy_switching_type_is_two_sessions(ch: Client, d_end: float, d_start: float, swap: bool) -> None:
    # Listening from 10 s, whispering from 30 s (the PBX ends one and starts the other at once), ended at 50 s.
    insert(ch, [_spy("call_spy_start", 10, "spy")])
    insert(ch, _pair(_spy("call_spy_end", 30 + d_end, "spy"), _spy("call_spy_start", 30 + d_start, "whisper"), swap))
    insert(ch, [_spy("call_spy_end", 50, "whisper")])
    got = read(ch, "SELECT spy_type, started_at, ended_at FROM pbx.spy_sessions ORDER BY started_at")
    assert got == [dict(spy_type="spy", started_at=at(10), ended_at=at(30 + d_end)),
                   dict(spy_type="whisper", started_at=at(30 + d_start), ended_at=at(50))]


@pytest.mark.parametrize(("d_answer", "d_start"), ORDERS)
@pytest.mark.parametrize(("d_end", "d_stop"), [pytest.param(0.0, -0.05, id="stop-50ms-before-end"),
                                               pytest.param(0.0, 0.05, id="stop-50ms-after-end"),
                                               pytest.param(0.0, 0.0, id="stop-same-ms")])
def test_a_recording_fired_with_the_answer_and_the_end_covers_the_talk(ch: Client, d_answer: float, d_start: float,
                                                                       d_end: float, d_stop: float) -> None:
    insert(ch, [ev("call_recording_start", 10 + d_start, call_id="c"),
                ev("answered_internal", 10 + d_answer, call_id="c", line_userid="a1")])
    insert(ch, [ev("call_recording_stop", 70 + d_stop, call_id="c"), ev("call_end", 70 + d_end, call_id="c")])
    [row] = read(ch, "SELECT recording_s, talk_s, coverage_pct, unstopped FROM pbx.recording_audit")
    assert row["coverage_pct"] == pytest.approx(100.0) and row["unstopped"] == 0


@pytest.mark.parametrize("swap", [False, True], ids=["stop-arrives-first", "start-arrives-first"])
def test_a_recording_restarted_at_once_is_two_segments(ch: Client, swap: bool) -> None:
    insert(ch, [ev("answered_internal", 0, call_id="c", line_userid="a1"), ev("call_recording_start", 0, call_id="c")])
    insert(ch, _pair(ev("call_recording_stop", 20, call_id="c"), ev("call_recording_start", 19.95, call_id="c"), swap))
    insert(ch, [ev("call_recording_stop", 40, call_id="c"), ev("call_end", 60, call_id="c")])
    [row] = read(ch, "SELECT segments, recording_s, unstopped FROM pbx.recording_audit")
    assert row == dict(segments=2, recording_s=40.0, unstopped=0)


# ----------------------------------------------------------------------------- the vendor's own example


def test_the_specs_example_urls_sent_in_order_give_an_answered_helpdesk_visit(serve) -> None:
    with httpx.Client(base_url=serve.url) as http:
        for url in spec_example_urls():
            parts = urlsplit(url)
            assert http.get(f"{parts.path}?{parts.query}").status_code == 200, url
    assert serve.stop() == 0, serve.log()
    client = clickhouse.connect(serve.dsn)
    try:
        got = read(client, "SELECT call_id, queue_name, outcome, agent FROM pbx.queue_calls")
        assert got == [dict(call_id="1541078811.98", queue_name="helpdesk", outcome="answered", agent="linuxbox")]
    finally:
        client.close()

