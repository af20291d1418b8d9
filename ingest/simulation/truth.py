"""The expected analytics (the *truth*), computed from the simulator's own records.

Follows the definitions of issue 4 and issue 14 literally (docs/metrics.md),
independently of the SQL views, so tests can check the views against it.
Times are the simulator's intended ones (whole seconds); a live send stamps
each event on arrival, up to its jitter later (docs/simulator.md#live).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ingest.simulation.config import INTERVAL_S, READY_STATES
from ingest.simulation.model import Call

if TYPE_CHECKING:
    from ingest.simulation.engine import _Sim

__all__ = ["REPEAT_WINDOWS_S", "agents_required", "truth"]

#: The windows ``repeat_calls`` is given for (seconds): an hour, and the contract's default day.
REPEAT_WINDOWS_S = (3600, 86400)


def _iso(t: int | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def truth(sim: _Sim) -> dict[str, Any]:
    cfg = sim.cfg
    until = sim.end if cfg.end_mode == "cut" else None
    counts: dict[str, int] = {}
    for _, _, event, _ in sim.out:
        counts[event] = counts.get(event, 0) + 1

    # Queue visits, outcome by the issue-4 definitions (not by the simulator's intent).
    later_in: dict[str, list[int]] = {}
    for v in sim.visits:
        later_in.setdefault(v.call_id, []).append(v.entered_at)
    visits = []
    for v in sim.visits:
        if v.answered_at is not None:
            outcome, wait = "answered", v.answered_at - v.entered_at
        elif any(t > v.entered_at for t in later_in[v.call_id]):
            outcome, wait = "overflow", (v.left_at - v.entered_at if v.left_at is not None else None)
        elif v.left_at is None:
            outcome, wait = "waiting", None
        else:
            wait = v.left_at - v.entered_at
            outcome = "short_abandon" if wait < cfg.short_abandon_s else "abandoned"
        visits.append({
            "call_id": v.call_id, "queue_name": v.queue_name, "entered_at": _iso(v.entered_at),
            "left_at": _iso(v.left_at), "answered_at": _iso(v.answered_at), "agent": v.agent, "wait_s": wait,
            "outcome": outcome, "in_sla": outcome == "answered" and wait is not None and wait <= cfg.sla_threshold_s,
        })

    queue_stats = _queue_stats(visits, cfg.sla_threshold_s)
    calls = _calls(sim)
    agent_seconds, agent_states = _agent_seconds(sim, until)
    newest = max((t for t, _, _, _ in sim.out), default=cfg.start_s)
    return {
        "thresholds": {"sla_threshold_s": cfg.sla_threshold_s, "short_abandon_s": cfg.short_abandon_s,
                       "sla_target_pct": cfg.sla_target_pct},
        "ready_states": sorted(READY_STATES),
        "period": {"start": _iso(cfg.start_s), "end": _iso(cfg.end_s), "end_mode": cfg.end_mode,
                   "until": _iso(until)},
        "config": {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                   for k, v in dataclasses.asdict(cfg).items()},
        "event_counts": dict(sorted(counts.items())),
        "queue_visits": visits,
        "queue_stats_15m": queue_stats,
        "agent_seconds": agent_seconds,
        "agent_states_15m": agent_states,
        "spy_sessions": [{
            "call_id": s["call_id"], "spying_userid": s["spying_userid"],
            "spying_target_userid": s["spying_target_userid"], "spying_exten": s["spying_exten"],
            "spying_target_exten": s["spying_target_exten"], "spy_type": s["spy_type"],
            "started_at": _iso(s["started_at"]), "ended_at": _iso(s["ended_at"]),
            "duration_s": None if s["ended_at"] is None else s["ended_at"] - s["started_at"],
        } for s in sim.spies],
        "recordings": _recordings(sim),
        "calls": calls,
        "repeat_calls": _repeat_calls(calls),
        "staffing_15m": _staffing(visits, queue_stats, calls, newest, cfg),
    }


def _queue_stats(visits: list[dict[str, Any]], sla: int) -> list[dict[str, Any]]:
    """pbx.queue_stats_15m by its definitions: a visit counts in the interval of its entered_at."""

    def pct(num: float, den: float) -> float | None:
        return None if den == 0 else 100.0 * num / den

    def avg(values: list[int]) -> float | None:
        return None if not values else sum(values) / len(values)

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for v in visits:
        t = int(dt.datetime.strptime(v["entered_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
                .timestamp())
        groups.setdefault((_iso(t - t % INTERVAL_S) or "", v["queue_name"]), []).append(v)
    rows = []
    for (interval, queue), vs in sorted(groups.items()):
        by = {o: [v for v in vs if v["outcome"] == o] for o in
              ("answered", "abandoned", "short_abandon", "overflow", "waiting")}
        answered, abandoned = len(by["answered"]), len(by["abandoned"])
        short, overflowed = len(by["short_abandon"]), len(by["overflow"])
        offered = answered + abandoned + short + overflowed
        in_sla = sum(1 for v in by["answered"] if v["wait_s"] <= sla)
        abandoned_in_sla = sum(1 for v in by["abandoned"] + by["short_abandon"] if v["wait_s"] <= sla)
        ended = [v["wait_s"] for v in vs if v["outcome"] != "waiting"]
        rows.append({
            "interval_start": interval, "queue_name": queue, "offered": offered, "answered": answered,
            "abandoned": abandoned, "short_abandoned": short, "overflowed": overflowed,
            "answered_in_sla": in_sla,
            "sla_pct": pct(in_sla, answered + abandoned),
            "sla_answered_pct": pct(in_sla, answered),
            "sla_inclusive_pct": pct(in_sla + abandoned_in_sla, offered - overflowed),
            "abandon_rate_pct": pct(abandoned, answered + abandoned),
            "asa_s": avg([v["wait_s"] for v in by["answered"]]),
            "avg_abandon_s": avg([v["wait_s"] for v in by["abandoned"]]),
            "max_wait_s": max(ended) if ended else None,
        })
    return rows


class _AgentIntervals:
    """The ``agent_seconds`` rows: one per (agent, 15-minute interval), filled as facts come."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}

    def row(self, agent: str, t: int) -> dict[str, Any]:
        start = t - t % INTERVAL_S
        r = self.rows.get((agent, start))
        if r is None:
            r = self.rows[(agent, start)] = {"agent": agent, "interval_start": start, "logged_in_s": 0,
                                             "paused_s": 0, "talk_s": 0, "idle_s": 0, "calls_answered": 0,
                                             "ring_no_answer": 0}
        return r

    def add(self, agent: str, start: int, end: int, what: str) -> None:
        """Seconds ``[start, end)`` of a logged-in agent spent on ``what``, split at interval bounds."""
        a = start
        while a < end:
            b = min(end, a - a % INTERVAL_S + INTERVAL_S)
            r = self.row(agent, a)
            r["logged_in_s"] += b - a
            r[what] += b - a
            a = b

    def out(self) -> list[dict[str, Any]]:
        ordered = sorted(self.rows.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        return [{**r, "interval_start": _iso(r["interval_start"])} for _, r in ordered]


def _logged_spans(facts: list[tuple[int, str, Any]], stop: int) -> Iterator[tuple[int, int, str, str]]:
    """(start, end, talk_s | paused_s | idle_s, state name) of one agent's logged-in time, from its
    facts in time order (same-second facts in processing order). The name is the state set last
    since the login ('' after a login)."""
    logged, ready, talking, name = False, True, 0, ""
    for i, (t, kind, arg) in enumerate(facts):
        if kind == "login":
            logged, ready, name = True, True, ""
        elif kind == "logout":
            logged = False
        elif kind == "state":
            ready, name = arg.lower() in READY_STATES, arg
        elif kind in ("talk_start", "talk_end"):
            talking += 1 if kind == "talk_start" else -1
        nxt = facts[i + 1][0] if i + 1 < len(facts) else stop
        if logged and nxt > t:
            yield t, nxt, "talk_s" if talking else ("paused_s" if not ready else "idle_s"), name


def _agent_seconds(sim: _Sim, until: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each logged-in second is talk, else paused, else idle; split into 15-minute intervals.

    Returns the ``agent_seconds`` rows (pbx.agent_stats_15m) and the ``agent_states_15m`` rows
    (the same seconds with paused time under its state's lowercased name)."""
    intervals = _AgentIntervals()
    states: dict[tuple[int, str, str], int] = {}
    by_agent: dict[str, list[tuple[int, str, Any]]] = {}
    for t, agent, kind, arg in sim.agent_log:
        by_agent.setdefault(agent, []).append((t, kind, arg))
    for agent, facts in by_agent.items():
        facts.sort(key=lambda f: f[0])  # stable: same-second facts keep processing order
        for start, end, what, name in _logged_spans(facts, until if until is not None else facts[-1][0]):
            intervals.add(agent, start, end, what)
            state = {"talk_s": "talk", "idle_s": "idle"}.get(what, name.lower())
            for interval, seconds in _pieces(start, end):
                states[(interval, agent, state)] = states.get((interval, agent, state), 0) + seconds
    answered: set[tuple[str, str]] = set()
    for t, agent, call_id, event in sim.answers:
        answered.add((call_id, agent))
        if event == "answered_internal":
            intervals.row(agent, t)["calls_answered"] += 1
    for t, agent, call_id in sim.rings:
        if (call_id, agent) not in answered:
            intervals.row(agent, t)["ring_no_answer"] += 1
    state_rows = [{"interval_start": _iso(i), "agent": a, "state": s, "seconds": n}
                  for (i, a, s), n in sorted(states.items())]
    return intervals.out(), state_rows


def _pieces(start: int, end: int) -> Iterator[tuple[int, int]]:
    """[start, end) cut at 15-minute boundaries: (interval start, seconds in it)."""
    a = start
    while a < end:
        b = min(end, a - a % INTERVAL_S + INTERVAL_S)
        yield a - a % INTERVAL_S, b - a
        a = b


def _recordings(sim: _Sim) -> list[dict[str, Any]]:
    out = []
    for call in sim.calls:
        if call.answered_at is None and not call.rec_events:
            continue
        end = call.ended_at
        segments = [t for t, e in call.rec_events if e == "call_recording_start"]
        total: int | None = 0
        unstopped = False
        events = sorted(call.rec_events, key=lambda x: x[0])
        for i, (t, e) in enumerate(events):
            if e != "call_recording_start":
                continue
            stop = next((t2 for t2, e2 in events[i + 1:] if e2 == "call_recording_stop"), None)
            if stop is None:
                unstopped = True
                stop = end
            if stop is None or end is None or call.answered_at is None:
                total = None
                continue
            a, b = max(t, call.answered_at), min(stop, end)
            if total is not None and b > a:
                total += b - a
        talk = None if end is None or call.answered_at is None else end - call.answered_at
        out.append({
            "call_id": call.call_id, "answered_at": _iso(call.answered_at), "ended_at": _iso(end),
            "talk_s": talk, "recorded": bool(segments), "segments": len(segments), "recording_s": total,
            "unstopped": unstopped,
            "coverage_pct": (100.0 * total / talk) if talk and total is not None else None,
        })
    return out


def _direction(call: Call) -> str:
    return {"outbound": "outbound", "internal": "internal"}.get(call.kind, "inbound")


def _calls(sim: _Sim) -> list[dict[str, Any]]:
    """pbx.calls: one row per call, from the call's records (every call starts with start_call)."""
    out = []
    for call in sim.calls:
        answered, ended = call.answered_at, call.ended_at
        agents: list[str] = []
        for _, agent in call.answers:
            if agent not in agents:
                agents.append(agent)
        if ended is None:
            outcome = "active"
        elif answered is not None:
            outcome = "answered"
        elif call.visits:
            outcome = "abandoned"
        else:
            outcome = "unanswered"
        out.append({
            "call_id": call.call_id, "custom_call_id": call.custom_id, "started_at": _iso(call.started_at),
            "ended_at": _iso(ended), "direction": _direction(call), "caller_num": call.caller_num,
            "dialed_num": call.did, "queues": [v.queue_name for v in call.visits], "answered_at": _iso(answered),
            "agent": agents[0] if agents else None, "agents": agents,
            "wait_s": None if answered is None else answered - call.started_at,
            "talk_s": None if answered is None or ended is None else max(0, ended - answered),
            "duration_s": None if ended is None else ended - call.started_at,
            "outcome": outcome, "recorded": any(e == "call_recording_start" for _, e in call.rec_events),
            "spied": call.spied,
        })
    return out


def _repeat_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pbx.repeat_calls: ended inbound calls with a number; the same number's next inbound call
    (by start, then call_id), and whether it came within each of :data:`REPEAT_WINDOWS_S`."""
    by_number: dict[str, list[dict[str, Any]]] = {}
    for c in calls:
        if c["direction"] == "inbound" and c["caller_num"]:
            by_number.setdefault(c["caller_num"], []).append(c)
    rows = []
    for number, mine in by_number.items():
        mine.sort(key=lambda c: (c["started_at"], c["call_id"]))
        for c, nxt in zip(mine, [*mine[1:], None]):
            if c["ended_at"] is None:
                continue
            gap = None if nxt is None else _epoch(nxt["started_at"]) - _epoch(c["started_at"])
            rows.append({
                "call_id": c["call_id"], "caller_num": number, "started_at": c["started_at"],
                "first_queue": c["queues"][0] if c["queues"] else "", "answered": c["answered_at"] is not None,
                "next_call_at": None if nxt is None else nxt["started_at"],
                "repeat": {str(w): gap is not None and gap <= w for w in REPEAT_WINDOWS_S},
            })
    return sorted(rows, key=lambda r: (r["started_at"], r["call_id"]))


def _staffing(visits: list[dict[str, Any]], queue_stats: list[dict[str, Any]], calls: list[dict[str, Any]],
              newest: int, cfg: Any) -> list[dict[str, Any]]:
    """pbx.staffing_15m: every interval from each queue's first visit to the interval of the newest
    event; offered as queue_stats_15m; aht_s the mean talk_s (pbx.calls) of the calls of the
    visits answered in the interval; traffic and Erlang C agents required from them."""
    talk = {c["call_id"]: c["talk_s"] for c in calls}
    offered = {(r["interval_start"], r["queue_name"]): r["offered"] for r in queue_stats}
    handled: dict[tuple[str, str], list[int]] = {}
    for v in visits:
        if v["outcome"] == "answered" and talk[v["call_id"]] is not None:
            key = (_iso(_interval(_epoch(v["entered_at"]))) or "", v["queue_name"])
            handled.setdefault(key, []).append(talk[v["call_id"]])
    first: dict[str, int] = {}
    for r in queue_stats:
        t = _epoch(r["interval_start"])
        first[r["queue_name"]] = min(first.get(r["queue_name"], t), t)
    rows = []
    for queue, t0 in sorted(first.items()):
        for t in range(t0, max(t0, _interval(newest)) + 1, INTERVAL_S):
            key = (_iso(t) or "", queue)
            n = offered.get(key, 0)
            times = handled.get(key)
            aht = None if not times else sum(times) / len(times)
            traffic = 0.0 if n == 0 else (None if aht is None else n * aht / INTERVAL_S)
            required = 0 if n == 0 else (None if aht is None or traffic is None else
                                         agents_required(traffic, aht, cfg.sla_threshold_s, cfg.sla_target_pct))
            rows.append({"interval_start": key[0], "queue_name": queue, "offered": n, "aht_s": aht,
                         "traffic_erlangs": traffic, "agents_required": required})
    return sorted(rows, key=lambda r: (r["interval_start"], r["queue_name"]))


def agents_required(traffic: float, aht_s: float, threshold_s: float, target_pct: float) -> int:
    """The smallest whole N > ``traffic`` (Erlangs) whose Erlang C service level
    ``1 - C(N, A) * exp(-(N - A) * threshold_s / aht_s)`` reaches ``target_pct`` (below 100).

    C from the Erlang B recursion ``B(n) = A B(n-1) / (n + A B(n-1))``, which stays in (0, 1]
    (no factorials): ``C = N B / (N - A (1 - B))``. A handle time of 0 waits for nothing.
    """
    a, b, n = traffic, 1.0, 0
    while True:
        n += 1
        b = a * b / (n + a * b)
        if n > a:
            c = n * b / (n - a * (1 - b))
            level = 1 - c * (math.exp(-(n - a) * threshold_s / aht_s) if aht_s > 0 else 0.0)
            if level >= target_pct / 100:
                return n


def _epoch(iso: str) -> int:
    return int(dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc).timestamp())


def _interval(t: int) -> int:
    return t - t % INTERVAL_S
