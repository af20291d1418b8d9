"""The truth of issue 14's views (calls, repeat_calls, agent_states_15m, staffing_15m).

As in ``test_simulate``, each part of the truth is checked against a second,
deliberately naive implementation of the contract that reads only the emitted
webhooks (agent time second by second, Erlang C by its textbook formula), and
the scenario is checked to contain every case the views must handle.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qsl

import pytest

from ingest.simulation import SimConfig, simulate
from ingest.simulation.config import READY_STATES
from ingest.simulation.truth import REPEAT_WINDOWS_S, agents_required

UTC = dt.timezone.utc

#: Two mornings a day apart and the night between (26 h from 08:00): callers who call back
#: just inside and just outside a day, retries within minutes, quiet night intervals.
REPEAT_DAY = SimConfig(seed=14, start=dt.datetime(2026, 11, 2, 8, 0, tzinfo=UTC), hours=26, queues=3, agents=6,
                       calls_per_hour=10, callback_share=0.3, callback_window_edge_share=0.6, transfer_share=0.15,
                       internal_per_agent_hour=0.5, lost_call_end_share=0.03)


def iso(t: int | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str) -> int:
    return int(dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def day():
    return simulate(REPEAT_DAY)


def hooks_of(sim) -> list[tuple[int, str, dict[str, str]]]:
    return [(e.t, e.event, dict(parse_qsl(e.query, keep_blank_values=True))) for e in sim.events]


def literal_calls(sim) -> list[dict[str, Any]]:
    """pbx.calls by its contract, from the webhooks alone."""
    by_call: dict[str, list[tuple[int, str, dict[str, str]]]] = defaultdict(list)
    for t, e, p in hooks_of(sim):
        if "call_id" in p:
            by_call[p["call_id"]].append((t, e, p))
    out = []
    for call_id, evs in by_call.items():
        kinds = {e for _, e, _ in evs}
        start = next((p for _, e, p in evs if e == "start_call"), {})

        def first(name: str) -> str:
            return start.get(name) or next((p[name] for _, _, p in evs if p.get(name)), "")

        if kinds & {"start_ext_dial", "answered_external"}:
            direction = "outbound"
        elif start.get("caller_type") == "external" or "queue_in" in kinds:
            direction = "inbound"
        else:
            direction = "internal"
        answers = [(t, p["line_userid"]) for t, e, p in evs if e in ("answered_internal", "answered_external")]
        ended = next((t for t, e, _ in evs if e == "call_end"), None)
        answered = answers[0][0] if answers else None
        agents = list(dict.fromkeys(a for _, a in answers))
        started = min(t for t, _, _ in evs)
        out.append({
            "call_id": call_id, "custom_call_id": next((p["custom_call_id"] for _, _, p in evs
                                                         if p.get("custom_call_id")), ""),
            "started_at": iso(started), "ended_at": iso(ended), "direction": direction,
            "caller_num": first("caller_num"), "dialed_num": first("dialed_num"),
            "queues": [p["queue_name"] for _, e, p in evs if e == "queue_in"], "answered_at": iso(answered),
            "agent": answers[0][1] or None if answers else None, "agents": agents,
            "wait_s": None if answered is None else answered - started,
            "talk_s": None if answered is None or ended is None else max(0, ended - answered),
            "duration_s": None if ended is None else ended - started,
            "outcome": ("active" if ended is None else "answered" if answers
                        else "abandoned" if "queue_in" in kinds else "unanswered"),
            "recorded": "call_recording_start" in kinds, "spied": "call_spy_start" in kinds,
        })
    return out


def test_truth_calls_follow_the_contract_literally(day) -> None:
    assert sorted(day.truth["calls"], key=lambda c: c["call_id"]) == sorted(literal_calls(day),
                                                                           key=lambda c: c["call_id"])


def test_the_scenario_has_every_kind_of_call_the_views_must_handle(day) -> None:
    calls = day.truth["calls"]
    kinds = Counter((c["direction"], c["outcome"]) for c in calls)
    for kind in [("inbound", "answered"), ("inbound", "abandoned"), ("inbound", "unanswered"), ("inbound", "active"),
                 ("outbound", "answered"), ("outbound", "unanswered"), ("internal", "answered"),
                 ("internal", "unanswered")]:
        assert kinds[kind] >= 2, (kind, kinds)
    transfers = [c for c in calls if len(c["agents"]) == 2]
    assert sum(len(c["queues"]) == 1 for c in transfers) >= 2  # to another agent
    assert sum(len(set(c["queues"])) == 2 and c["outcome"] == "answered" for c in transfers) >= 2  # into a queue
    assert any(c["recorded"] for c in calls) and any(c["spied"] for c in calls)
    assert any(c["outcome"] == "unanswered" and not c["queues"] and c["direction"] == "inbound" for c in calls)


def test_truth_repeat_calls_follow_the_contract_literally(day) -> None:
    calls = literal_calls(day)
    inbound = sorted((c for c in calls if c["direction"] == "inbound" and c["caller_num"]),
                     key=lambda c: (c["started_at"], c["call_id"]))
    rows = []
    for c in inbound:
        if c["ended_at"] is None:
            continue
        nxt = next((d for d in inbound if d["caller_num"] == c["caller_num"]
                    and (d["started_at"], d["call_id"]) > (c["started_at"], c["call_id"])), None)
        gap = None if nxt is None else epoch(nxt["started_at"]) - epoch(c["started_at"])
        rows.append({"call_id": c["call_id"], "caller_num": c["caller_num"], "started_at": c["started_at"],
                     "first_queue": (c["queues"] or [""])[0], "answered": c["answered_at"] is not None,
                     "next_call_at": None if nxt is None else nxt["started_at"],
                     "repeat": {str(w): gap is not None and gap <= w for w in REPEAT_WINDOWS_S}})
    assert day.truth["repeat_calls"] == rows


def test_the_scenario_has_callers_again_on_both_sides_of_each_window(day) -> None:
    gaps = [(epoch(r["next_call_at"]) - epoch(r["started_at"]), r) for r in day.truth["repeat_calls"]
            if r["next_call_at"]]
    day_s = 86400
    assert any(day_s - 30 <= g <= day_s and r["repeat"]["86400"] for g, r in gaps)  # just inside
    assert any(day_s < g <= day_s + 30 and not r["repeat"]["86400"] for g, r in gaps)  # just outside
    assert any(g <= 600 and not r["answered"] and r["repeat"]["3600"] for g, r in gaps)  # retry after an abandon
    assert any(3600 < g < day_s and r["answered"] and r["repeat"] == {"3600": False, "86400": True} for g, r in gaps)


def test_truth_agent_states_follow_the_contract_second_by_second(day) -> None:
    """Each logged-in second is talk, else the lowercased name of the state set last (paused),
    else idle; per interval they sum to agent_stats' logged-in time."""
    hooks = hooks_of(day)
    talks: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for t, e, p in hooks:
        if e in ("answered_internal", "answered_external"):
            end = next((t2 for t2, e2, p2 in hooks if e2 == "hangup_internal" and p2["call_id"] == p["call_id"]
                        and p2["line_userid"] == p["line_userid"] and t2 >= t), None)
            if end is None:
                end = next(t2 for t2, e2, p2 in hooks if e2 == "call_end" and p2["call_id"] == p["call_id"])
            talks[p["line_userid"]].append((t, end))
    states: Counter[tuple[str, str, str]] = Counter()
    last = max(t for t, _, _ in hooks)
    for agent in {p["userid"] for _, e, p in hooks if e == "pbx_agent_login"}:
        mine = [(t, e, p) for t, e, p in hooks if e.startswith("pbx_agent_") and p["userid"] == agent]
        i, logged, name = 0, False, ""
        for s in range(mine[0][0], last):
            while i < len(mine) and mine[i][0] <= s:
                _, e, p = mine[i]
                logged = e != "pbx_agent_logout"
                name = "" if e == "pbx_agent_login" else p.get("state_name", name)
                i += 1
            if logged:
                if any(a <= s < b for a, b in talks[agent]):
                    state = "talk"
                elif name and name.lower() not in READY_STATES:
                    state = name.lower()
                else:
                    state = "idle"
                states[(iso(s - s % 900), agent, state)] += 1  # type: ignore[index]
    truth = {(r["interval_start"], r["agent"], r["state"]): r["seconds"] for r in day.truth["agent_states_15m"]}
    assert truth == dict(states)
    logged_in = Counter()
    for (interval, agent, _), n in truth.items():
        logged_in[(interval, agent)] += n
    assert logged_in == {(r["interval_start"], r["agent"]): r["logged_in_s"]
                         for r in day.truth["agent_seconds"] if r["logged_in_s"]}
    names = {s for _, _, s in truth}
    assert {"talk", "idle", "break", "lunch", "coaching"} <= names and not any(n != n.lower() for n in names)


def test_the_scenario_renames_pauses_midway(day) -> None:
    sets = [(t, p["userid"], p["state_name"]) for t, e, p in hooks_of(day) if e == "pbx_agent_set_state"]
    paused_twice = [(a, b) for a, b in zip(sets, sets[1:]) if a[1] == b[1]
                    and a[2].lower() not in READY_STATES and b[2].lower() not in READY_STATES]
    assert paused_twice


def textbook_agents_required(traffic: float, aht: float, threshold: float, target_pct: float) -> int:
    """Erlang C as the textbooks write it: A^N/N! * N/(N-A) over the sum, in exact fractions."""
    a = Fraction(traffic)
    n = math.floor(traffic) + 1
    while True:
        top = a ** n / math.factorial(n) * Fraction(n) / (n - a)
        c = top / (sum(a ** k / math.factorial(k) for k in range(n)) + top)
        if 1 - float(c) * math.exp(-(n - traffic) * threshold / aht) >= target_pct / 100:
            return n
        n += 1


@pytest.mark.parametrize(("traffic", "aht", "expected"), [
    pytest.param(10.0, 180.0, 14, id="10-erlangs-180s-80-20"),  # the textbook case
    pytest.param(0.5, 120.0, 2, id="half-an-erlang"),
    pytest.param(1e-6, 60.0, 1, id="almost-nothing"),
])
def test_erlang_c_agents_required_matches_published_values(traffic, aht, expected) -> None:
    assert agents_required(traffic, aht, 20, 80) == expected == textbook_agents_required(traffic, aht, 20, 80)


def test_truth_staffing_follows_the_contract(day) -> None:
    """Every interval from each queue's first visit to the newest event's; offered from the
    visits, handle time from the calls, agents required by the textbook formula."""
    truth = day.truth
    talk = {c["call_id"]: c["talk_s"] for c in literal_calls(day)}
    newest = max(e.t for e in day.events)
    first: dict[str, int] = {}
    offered: Counter[tuple[int, str]] = Counter()
    handled: dict[tuple[int, str], list[int]] = defaultdict(list)
    for v in truth["queue_visits"]:
        t = epoch(v["entered_at"])
        key = (t - t % 900, v["queue_name"])
        first[v["queue_name"]] = min(first.get(v["queue_name"], key[0]), key[0])
        offered[key] += v["outcome"] != "waiting"
        if v["outcome"] == "answered" and talk[v["call_id"]] is not None:
            handled[key].append(talk[v["call_id"]])
    rows = []
    for queue, t0 in first.items():
        for t in range(t0, newest - newest % 900 + 1, 900):
            n, times = offered[(t, queue)], handled.get((t, queue))
            aht = sum(times) / len(times) if times else None
            traffic = 0.0 if n == 0 else None if aht is None else n * aht / 900
            required = 0 if n == 0 else None if aht is None else textbook_agents_required(traffic, aht, 20, 80)
            rows.append({"interval_start": iso(t), "queue_name": queue, "offered": n, "aht_s": aht,
                         "traffic_erlangs": traffic, "agents_required": required})
    rows.sort(key=lambda r: (r["interval_start"], r["queue_name"]))
    assert [{**r, "aht_s": r["aht_s"] and pytest.approx(r["aht_s"]),
             "traffic_erlangs": r["traffic_erlangs"] and pytest.approx(r["traffic_erlangs"])} for r in rows] \
        == truth["staffing_15m"]
    assert sum(r["offered"] == 0 for r in rows) > 50 and max(r["agents_required"] or 0 for r in rows) >= 2
