"""pbx.staffing_15m (issue 14): offered, average handle time, traffic and Erlang C agents.

Every column on hand-built intervals (answered and abandoned visits, a call
still going, an interval without traffic, a transfer into a second queue,
per-queue settings), then the Erlang C part against published reference
values and against an independent implementation (erlang_reference.py) over
a grid of traffic, handle time, threshold and agent count.
"""

from __future__ import annotations

import datetime as dt
import time
from fractions import Fraction

import pytest
from clickhouse_connect.driver.client import Client

from ingest.testing import query_dicts, settle_views
from tests.e2e.analytics.erlang_reference import agents_required, erlang_c, service_level
from tests.e2e.views.views_helpers import T0, ev, insert

INTERVAL = dt.timedelta(minutes=15)
#: Settings by name: the table has more columns than these (and may grow).
SETTINGS = "INSERT INTO pbx.queue_settings (queue_name, sla_threshold_s, short_abandon_s, sla_target_pct)"


def _answered(call: str, queue: str, t: float, talk_s: float, *, wait_s: float = 1.0) -> list[tuple]:
    """A call entering ``queue`` at ``t``, answered after ``wait_s``, talking ``talk_s``."""
    return [ev("queue_in", t, call_id=call, queue_name=queue),
            ev("answered_internal", t + wait_s, call_id=call, line_userid="zoe"),
            ev("queue_out", t + wait_s, call_id=call, queue_name=queue),
            ev("call_end", t + wait_s + talk_s, call_id=call)]


def _abandoned(call: str, queue: str, t: float) -> list[tuple]:
    return [ev("queue_in", t, call_id=call, queue_name=queue), ev("call_end", t + 30, call_id=call)]


def _settings(ch: Client, queue: str, threshold_s: int, short_s: int, target_pct: float) -> None:
    ch.command(f"{SETTINGS} VALUES ('{queue}', {threshold_s}, {short_s}, {target_pct!r})")
    time.sleep(0.01)  # rows are versioned by their insert time, to the millisecond


def test_staffing_15m_has_the_contract_columns_and_types(ch: Client) -> None:
    assert [(r[0], r[1]) for r in ch.query("DESCRIBE TABLE pbx.staffing_15m").result_rows] == [
        ("interval_start", "DateTime('UTC')"), ("queue_name", "LowCardinality(String)"), ("offered", "UInt64"),
        ("aht_s", "Nullable(Float64)"), ("traffic_erlangs", "Nullable(Float64)"),
        ("agents_required", "Nullable(UInt32)")]


def _scenario() -> list[tuple]:
    return [
        # sales 09:00: two answered calls talking 100 s and 200.5 s, one abandoned: offered 3.
        *_answered("s1", "sales", 10, 100),
        *_answered("s2", "sales", 20, 200.5),
        *_abandoned("s3", "sales", 30),
        # 09:15: nothing. 09:30: answered but still talking (no talk time yet), and an abandon.
        ev("queue_in", 1800, call_id="s4", queue_name="sales"),
        ev("answered_internal", 1805, call_id="s4", line_userid="zoe"),
        ev("queue_out", 1805, call_id="s4", queue_name="sales"),
        *_abandoned("s5", "sales", 1810),
        # 09:45: only a caller still waiting: offered 0.
        ev("queue_in", 2760, call_id="s6", queue_name="sales"),
        # support 09:00: entered 09:14:59, answered 09:15:20: counted at 09:00 (the interval of entry).
        *_answered("p1", "support", 899, 60, wait_s=21),
        # A call answered in sales, transferred into support and answered there: its talk
        # (first answer to call_end, 300 s) counts in both answered visits.
        ev("queue_in", 100, call_id="t1", queue_name="sales"),
        ev("answered_internal", 105, call_id="t1", line_userid="zoe"),
        ev("queue_out", 105, call_id="t1", queue_name="sales"),
        ev("queue_in", 200, call_id="t1", queue_name="support"),
        ev("answered_internal", 230, call_id="t1", line_userid="adam"),
        ev("queue_out", 230, call_id="t1", queue_name="support"),
        ev("call_end", 405, call_id="t1"),
        # vip (own settings) 09:00: seven answered calls of 180 s.
        *[e for i in range(7) for e in _answered(f"v{i}", "vip", 60 * i, 180)],
        # The newest event stored is at 10:05: every queue has rows up to the 10:00 interval.
        ev("pbx_agent_login", 3900, userid="zoe", exten="101"),
    ]


def _expected_row(interval: int, queue: str, offered: int, aht: float | None, threshold: float = 20,
                  target: float = 80) -> dict:
    traffic = 0.0 if offered == 0 else None if aht is None else offered * aht / 900
    agents = 0 if offered == 0 else None if aht is None else agents_required(traffic, aht, threshold, target)
    return dict(interval_start=T0 + interval * INTERVAL, queue_name=queue, offered=offered,
                aht_s=None if aht is None else pytest.approx(aht),
                traffic_erlangs=None if traffic is None else pytest.approx(traffic), agents_required=agents)


def test_every_column_per_interval_and_queue(ch: Client) -> None:
    insert(ch, _scenario())
    _settings(ch, "vip", 10, 5, 95)
    settle_views(ch)
    got = query_dicts(ch, "SELECT * FROM pbx.staffing_15m ORDER BY queue_name, interval_start")
    sales_aht = (100 + 200.5 + 300) / 3  # s1, s2 and t1's visit
    assert got == [
        _expected_row(0, "sales", 4, sales_aht),
        _expected_row(1, "sales", 0, None),          # no traffic
        _expected_row(2, "sales", 2, None),          # answered, still talking: no handle time yet
        _expected_row(3, "sales", 0, None),          # only a caller waiting
        _expected_row(4, "sales", 0, None),          # up to the data's now
        _expected_row(0, "support", 2, (60 + 300) / 2),
        *[_expected_row(i, "support", 0, None) for i in range(1, 5)],
        _expected_row(0, "vip", 7, 180, threshold=10, target=95),
        *[_expected_row(i, "vip", 0, None) for i in range(1, 5)],
    ]
    # Offered is queue_stats_15m's; intervals that view has no row for have 0.
    stats = {(r["interval_start"], r["queue_name"]): r["offered"]
             for r in query_dicts(ch, "SELECT interval_start, queue_name, offered FROM pbx.queue_stats_15m")}
    assert {(r["interval_start"], r["queue_name"]): r["offered"] for r in got} == {
        (r["interval_start"], r["queue_name"]): stats.get((r["interval_start"], r["queue_name"]), 0) for r in got}


def test_settings_newest_row_wins_and_a_row_without_a_target_means_80(ch: Client) -> None:
    insert(ch, [e for i in range(50) for e in _answered(f"c{i}", "sales", 10 * i, 180)])
    settle_views(ch)

    def agents() -> int:
        return query_dicts(ch, "SELECT agents_required FROM pbx.staffing_15m")[0]["agents_required"]

    assert agents() == 14  # defaults: 80 % in 20 s
    _settings(ch, "sales", 20, 5, 95)
    assert agents() == agents_required(10, 180, 20, 95) == 16
    ch.command("INSERT INTO pbx.queue_settings (queue_name, sla_threshold_s, short_abandon_s) VALUES ('sales', 60, 5)")
    assert agents() == agents_required(10, 180, 60, 80) == 13
    _settings(ch, "sales", 20, 5, 100)  # 100 % within a threshold: no number of agents gets there
    assert agents() is None


# ----------------------------------------------------------------------------- Erlang C


def _staffing_of(ch: Client, queue: str) -> dict:
    [row] = query_dicts(ch, "SELECT * FROM pbx.staffing_15m WHERE queue_name = {q:String} AND offered > 0",
                 parameters={"q": queue})
    return row


@pytest.mark.parametrize(("calls", "aht_s", "threshold_s", "target_pct", "agents", "published"), [
    # Call Centre Helper, "Erlang C Formula - Made Simple With an Easy Worked Example": 100 calls in
    # 30 minutes, 180 s handle time, 80 % answered in 20 s -> 10 Erlangs; with 11 agents a call
    # waits with probability 0.6821; 14 agents meet the target.
    pytest.param(50, 180, 20, 80, 14, [(11, "wait", 0.6821, 5e-5)], id="10-erlangs-180s-80-in-20s"),
    # The Erlang-C worked example (Westbay / Mitan, "The Erlang-C formula"): 360 calls in 30
    # minutes of 4 minutes each, 55 agents, 15 s target -> 48 Erlangs, probability of waiting
    # 0.2387, service level 84.6 %. With an 84.5 % target 55 agents is the answer.
    pytest.param(180, 240, 15, 84.5, 55, [(55, "wait", 0.2387, 5e-5), (55, "sl", 0.846, 5e-4)],
                 id="48-erlangs-240s-55-agents-15s"),
])
def test_erlang_c_matches_published_examples(ch: Client, calls: int, aht_s: float, threshold_s: int,
                                             target_pct: float, agents: int, published: list) -> None:
    insert(ch, [e for i in range(calls) for e in _answered(f"c{i}", "q", 4 * i, aht_s)])
    _settings(ch, "q", threshold_s, 5, target_pct)
    settle_views(ch)
    row = _staffing_of(ch, "q")
    assert (row["offered"], row["aht_s"]) == (calls, pytest.approx(aht_s))
    assert row["agents_required"] == agents
    a = row["traffic_erlangs"]
    # The published figures, rounded as published, from the reference at the view's traffic.
    for n, what, value, rounding in published:
        got = erlang_c(n, a) if what == "wait" else service_level(n, a, aht_s, threshold_s)
        assert float(got) == pytest.approx(value, abs=rounding), (n, what)
    # One agent fewer misses the target: agents_required is the smallest.
    assert float(service_level(agents - 1, a, aht_s, threshold_s)) * 100 < target_pct


#: (calls in the interval, handle time s, threshold s): traffic from 0.05 to 400 Erlangs.
GRID = [(1, 45.5, 20), (2, 450, 0), (7, 180, 20), (7, 180, 60), (12, 600, 20), (30, 20, 15), (50, 180, 20),
        (120, 90.25, 30), (300, 300, 20), (360, 1000, 45)]


def _grid_cases(points: list[tuple[str, float, float, float]]) -> list[tuple[str, float, int]]:
    """Per grid point, targets just below and just above SL(N) for a few N: the answer is N, resp. N + 1.

    The N are the first above the traffic and those where SL first reaches 50 % and 95 %. A target
    1e-7 % below SL(N) must give N and 1e-7 % above it N + 1: the SQL's service level agrees with
    the reference to 1e-9 wherever it decides.
    """
    cases = []
    for name, a, aht, threshold in points:
        first = int(a) + 1
        picks = {first}
        n = first
        for goal in (0.5, 0.95):
            while service_level(n, a, aht, threshold) < goal:
                n += 1
            picks.add(n)
        for n in sorted(picks):
            sl = float(service_level(n, a, aht, threshold)) * 100
            cases.append((f"{name}-n{n}-lo", sl - 1e-7, n))
            cases.append((f"{name}-n{n}-hi", sl + 1e-7, n + 1))
    return cases


def test_erlang_c_agrees_with_an_independent_implementation_over_a_grid(ch: Client) -> None:
    # Phase 1: one queue per grid point sets traffic and handle time.
    events = []
    for g, (calls, aht, threshold) in enumerate(GRID):
        events += [e for i in range(calls) for e in _answered(f"g{g}-{i}", f"g{g}", 2 * i, aht)]
        ch.command(f"{SETTINGS} VALUES ('g{g}', {threshold}, 5, 80)")
    insert(ch, events)
    settle_views(ch)
    measured = {r["queue_name"]: r for r in query_dicts(ch, "SELECT * FROM pbx.staffing_15m WHERE offered > 0")}
    points = []
    for g, (calls, aht, threshold) in enumerate(GRID):
        row = measured[f"g{g}"]
        assert row["offered"] == calls and row["aht_s"] == pytest.approx(aht)
        assert row["traffic_erlangs"] == pytest.approx(calls * aht / 900)
        # The default target (80 %) against the reference.
        assert row["agents_required"] == agents_required(row["traffic_erlangs"], row["aht_s"], threshold, 80), g
        points.append((f"g{g}", row["traffic_erlangs"], row["aht_s"], threshold))

    # Phase 2: the same traffic in copies of each queue, one per (N, target just below / above SL(N)).
    cases = _grid_cases(points)
    assert len(cases) >= 50 and max(p[1] for p in points) > 300  # hundreds of agents
    by_point = {name: (calls, aht, threshold) for name, (calls, aht, threshold) in
                zip((p[0] for p in points), GRID)}
    events = []
    for case, target, _ in cases:
        calls, aht, threshold = by_point[case.split("-")[0]]
        events += [e for i in range(calls) for e in _answered(f"{case}-{i}", case, 2 * i, aht)]
        ch.command(f"{SETTINGS} VALUES ('{case}', {threshold}, 5, {target!r})")
    insert(ch, events)
    settle_views(ch)
    got = {r["queue_name"]: r["agents_required"] for r in query_dicts(
        ch, "SELECT queue_name, agents_required FROM pbx.staffing_15m WHERE offered > 0")}
    wrong = {case: (got[case], expected) for case, _, expected in cases if got[case] != expected}
    assert not wrong, wrong


def test_erlang_c_reference_is_the_textbook_formula() -> None:
    # C(3, 2) = 4/9 exactly; the recursion-free reference gets it to its 60 digits.
    assert abs(Fraction(erlang_c(3, 2)) - Fraction(4, 9)) < Fraction(1, 10**50)
    # 10 Erlangs: the worked example's figures (see above).
    assert [agents_required(10, 180, 20, t) for t in (70, 80, 90)] == [13, 14, 15]
    with pytest.raises(ValueError):
        erlang_c(10, 10)


def test_the_sql_erlang_c_is_stable_for_hundreds_of_agents(ch: Client) -> None:
    # 2,000 Erlangs (n! and A^n overflow a double near n = 170): still the reference's answer.
    insert(ch, [e for i in range(6000) for e in _answered(f"c{i}", "big", 0.1 * i, 300)])
    settle_views(ch)
    row = _staffing_of(ch, "big")
    assert row["traffic_erlangs"] == pytest.approx(2000)
    assert row["agents_required"] == agents_required(row["traffic_erlangs"], row["aht_s"], 20, 80)
