"""The expected analytics (the *truth*), computed from the simulator's own records.

Follows the definitions of issue 4 literally (docs/metrics.md), independently
of the SQL views, so tests can check the views against it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ingest.simulation.config import INTERVAL_S, READY_STATES

if TYPE_CHECKING:
    from ingest.simulation.engine import _Sim

__all__ = ["truth"]


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

    return {
        "thresholds": {"sla_threshold_s": cfg.sla_threshold_s, "short_abandon_s": cfg.short_abandon_s},
        "ready_states": sorted(READY_STATES),
        "period": {"start": _iso(cfg.start_s), "end": _iso(cfg.end_s), "end_mode": cfg.end_mode,
                   "until": _iso(until)},
        "config": {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                   for k, v in dataclasses.asdict(cfg).items()},
        "event_counts": dict(sorted(counts.items())),
        "queue_visits": visits,
        "queue_stats_15m": _queue_stats(visits, cfg.sla_threshold_s),
        "agent_seconds": _agent_seconds(sim, until),
        "spy_sessions": [{
            "call_id": s["call_id"], "spying_userid": s["spying_userid"],
            "spying_target_userid": s["spying_target_userid"], "spying_exten": s["spying_exten"],
            "spying_target_exten": s["spying_target_exten"], "spy_type": s["spy_type"],
            "started_at": _iso(s["started_at"]), "ended_at": _iso(s["ended_at"]),
            "duration_s": None if s["ended_at"] is None else s["ended_at"] - s["started_at"],
        } for s in sim.spies],
        "recordings": _recordings(sim),
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


def _logged_spans(facts: list[tuple[int, str, Any]], stop: int) -> Iterator[tuple[int, int, str]]:
    """(start, end, talk_s | paused_s | idle_s) of one agent's logged-in time, from its facts in
    time order (same-second facts in processing order)."""
    logged, ready, talking = False, True, 0
    for i, (t, kind, arg) in enumerate(facts):
        if kind == "login":
            logged, ready = True, True
        elif kind == "logout":
            logged = False
        elif kind == "state":
            ready = arg.lower() in READY_STATES
        elif kind in ("talk_start", "talk_end"):
            talking += 1 if kind == "talk_start" else -1
        nxt = facts[i + 1][0] if i + 1 < len(facts) else stop
        if logged and nxt > t:
            yield t, nxt, "talk_s" if talking else ("paused_s" if not ready else "idle_s")


def _agent_seconds(sim: _Sim, until: int | None) -> list[dict[str, Any]]:
    """Each logged-in second is talk, else paused, else idle; split into 15-minute intervals."""
    intervals = _AgentIntervals()
    by_agent: dict[str, list[tuple[int, str, Any]]] = {}
    for t, agent, kind, arg in sim.agent_log:
        by_agent.setdefault(agent, []).append((t, kind, arg))
    for agent, facts in by_agent.items():
        facts.sort(key=lambda f: f[0])  # stable: same-second facts keep processing order
        for start, end, what in _logged_spans(facts, until if until is not None else facts[-1][0]):
            intervals.add(agent, start, end, what)
    answered: set[tuple[str, str]] = set()
    for v in sim.visits:
        if v.answered_at is not None and v.agent is not None:
            answered.add((v.call_id, v.agent))
            intervals.row(v.agent, v.answered_at)["calls_answered"] += 1
    for t, agent, call_id in sim.rings:
        if (call_id, agent) not in answered:
            intervals.row(agent, t)["ring_no_answer"] += 1
    return intervals.out()


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
