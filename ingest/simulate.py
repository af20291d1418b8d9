"""A seeded discrete-event call-centre simulator that emits the PBX's webhooks.

Model (``docs/simulator.md`` has the details and the tie-breaking rules):
callers arrive per queue as a Poisson process whose rate follows the hour of
day; they wait with a patience (some give up within seconds), overflow once to
the next queue after ``overflow_after_s``, and are rung to a free, ready agent
with the queue among its skills (longest idle first). A ring may go
unanswered (``exten_paused``, the agent is blocked for a while). Agents log in
and out, pause with named states, make outbound calls; supervisors spy on
calls; calls are recorded, some stopped and restarted, some never stopped.

Time runs in whole seconds (the access log's resolution). The simulator also
computes the expected analytics (the *truth*) from its own records, following
the definitions of issue 4 literally, so tests can check the SQL views
against an independent computation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gzip
import heapq
import json
import random
import sys
import time
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple
from urllib.parse import quote

__all__ = [
    "READY_STATES",
    "SimConfig",
    "SimConfigError",
    "SimEvent",
    "Simulation",
    "access_log_line",
    "offset_function",
    "send_to_target",
    "simulate",
    "write_access_log",
]

#: States of ``pbx_agent_set_state`` that count as ready (case-insensitive), per issue 4.
READY_STATES = frozenset({"available", "online", "ready"})

#: Relative call volume by UTC hour of day (1.0 = ``calls_per_hour``).
HOURLY_PROFILE: tuple[float, ...] = (
    0.05, 0.05, 0.05, 0.05, 0.05, 0.1, 0.3, 0.7,     # 00-07
    1.0, 1.3, 1.4, 1.2, 0.9, 1.0, 1.3, 1.2,          # 08-15
    1.0, 0.7, 0.4, 0.3, 0.2, 0.1, 0.05, 0.05,        # 16-23
)

_QUEUE_NAMES = ("helpdesk", "sales", "billing", "support", "vip", "retention", "orders", "tech")
_AGENT_NAMES = ("martin", "karel", "jana", "petra", "tomas", "lucie", "eva", "pavel", "ondrej", "tereza",
                "jiri", "hana", "lukas", "klara", "david", "zuzana")
# Display names with non-ASCII letters exercise percent-encoded UTF-8 end to end.
_DISPLAY = {"tomas": "Tomáš", "jiri": "Jiří", "tereza": "Tereza Nováková", "klara": "Klára"}
_SUPERVISORS = (("supervisor1", "200"), ("supervisor2", "201"))
_PAUSES = (("break", 300, 900, 5), ("lunch", 1800, 2700, 1), ("meeting", 600, 1200, 1), ("training", 600, 1800, 1))
_READY_NAMES = ("available", "available", "available", "Online", "ready")
_LOGOUT_REASONS = ("pause", "manual", "end_of_shift")
_SPY_TYPES = ("spy", "bargein", "whisper")
#: An agent is not rung for this long after a ring it did not answer.
RNA_BLOCK_S = 30
INTERVAL_S = 900


class SimConfigError(ValueError):
    """A simulator setting has a value we cannot run with."""


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """One simulation scenario. Same config (seed included) -> same events, byte for byte."""

    #: Seed of the random generator.
    seed: int = 1
    #: Simulated start, UTC (whole seconds).
    start: dt.datetime = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.timezone.utc)
    #: Length of the simulated period in hours: arrivals stop at its end.
    hours: float = 1.0
    #: Number of queues (helpdesk, sales, billing, ...) and agents.
    queues: int = 3
    agents: int = 8
    #: Mean arrivals per queue per hour when the hourly profile is 1.0.
    calls_per_hour: float = 40.0
    #: Relative volume by UTC hour (24 values).
    hourly_profile: tuple[float, ...] = HOURLY_PROFILE
    #: Mean talk time of answered calls (exponential, at least 10 s).
    mean_talk_s: float = 150.0
    #: Mean caller patience from first queue entry (exponential, at least short_abandon_s).
    mean_patience_s: float = 90.0
    #: Share of callers who give up within the short-abandon threshold.
    short_abandon_share: float = 0.08
    #: Seconds an agent is rung before the PBX gives up (then ``exten_paused``).
    ring_timeout_s: int = 15
    #: Share of rings the agent does not answer.
    ring_no_answer_share: float = 0.1
    #: A call waiting this long moves once to the next queue (0 = no overflow).
    overflow_after_s: int = 60
    #: Outbound calls per agent per logged-in hour.
    outbound_per_agent_hour: float = 1.0
    #: Pauses per agent per hour (break, lunch, meeting, training).
    pauses_per_agent_hour: float = 0.8
    #: Share of agents who log out once mid-period and come back.
    mid_logout_share: float = 0.3
    #: Share of answered calls a supervisor spies on; of those, share never ended.
    spy_share: float = 0.08
    spy_unended_share: float = 0.25
    #: Share of answered calls recorded; of those, stopped and restarted, and never stopped.
    recording_share: float = 0.7
    recording_restart_share: float = 0.2
    recording_unstopped_share: float = 0.12
    #: Share of abandons for which the PBX sends only call_end (no queue_out).
    abandon_without_queue_out_share: float = 0.1
    #: "drain": after the period, calls in progress finish and agents log out when idle.
    #: "cut": the output stops at the period's end; open visits stay "waiting".
    end_mode: str = "drain"
    #: Thresholds the truth uses (issue 4 defaults).
    sla_threshold_s: int = 20
    short_abandon_s: int = 5

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            object.__setattr__(self, "start", self.start.replace(tzinfo=dt.timezone.utc))
        object.__setattr__(self, "start", self.start.astimezone(dt.timezone.utc).replace(microsecond=0))
        if self.hours <= 0:
            raise SimConfigError(f"hours must be positive, got {self.hours}")
        if not 1 <= self.queues <= 50:
            raise SimConfigError(f"queues must be 1..50, got {self.queues}")
        if not 1 <= self.agents <= 500:
            raise SimConfigError(f"agents must be 1..500, got {self.agents}")
        if self.calls_per_hour < 0:
            raise SimConfigError(f"calls_per_hour must be >= 0, got {self.calls_per_hour}")
        if len(self.hourly_profile) != 24 or min(self.hourly_profile) < 0:
            raise SimConfigError("hourly_profile needs 24 non-negative values")
        if self.end_mode not in ("drain", "cut"):
            raise SimConfigError(f"end_mode must be 'drain' or 'cut', got {self.end_mode!r}")
        if self.ring_timeout_s < 10:
            raise SimConfigError("ring_timeout_s must be at least 10")
        for name in ("short_abandon_share", "ring_no_answer_share", "mid_logout_share", "spy_share",
                     "spy_unended_share", "recording_share", "recording_restart_share",
                     "recording_unstopped_share", "abandon_without_queue_out_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise SimConfigError(f"{name} must be within 0..1, got {getattr(self, name)}")

    @property
    def start_s(self) -> int:
        return int(self.start.timestamp())

    @property
    def end_s(self) -> int:
        return self.start_s + int(round(self.hours * 3600))


class SimEvent(NamedTuple):
    """One webhook: UTC epoch second, endpoint name, query string in the spec's format."""

    t: int
    event: str
    query: str

    @property
    def target(self) -> str:
        """The request target, ``/event?query``."""
        return f"/{self.event}?{self.query}"


@dataclasses.dataclass
class Simulation:
    config: SimConfig
    events: list[SimEvent]
    truth: dict[str, Any]


# ----------------------------------------------------------------------------- model state


@dataclasses.dataclass(eq=False)
class _Visit:
    call_id: str
    queue_name: str
    entered_at: int
    left_at: int | None = None
    answered_at: int | None = None
    agent: str | None = None


@dataclasses.dataclass(eq=False)
class _Call:
    call_id: str
    custom_id: str
    caller_num: str
    did: str
    queue: str = ""
    state: str = "ivr"  # ivr, waiting, ringing, talk, dialing (outbound), done
    visit: _Visit | None = None
    visits: list[_Visit] = dataclasses.field(default_factory=list)
    ringing_agent: _Agent | None = None
    overflowed: bool = False
    patience_until: int = 0
    answered_at: int | None = None
    ended_at: int | None = None
    rec_events: list[tuple[int, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(eq=False)
class _Agent:
    userid: str
    exten: str
    display: str
    skills: tuple[str, ...]
    logged_in: bool = False
    ready: bool = True
    call: _Call | None = None  # on a call (talking or dialling out)
    ringing: _Call | None = None
    blocked_until: int = 0
    free_since: int = 0
    pending: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    pause_token: int = 0
    last_state_t: int = -1
    lunched: bool = False


class _Sim:
    def __init__(self, config: SimConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.now = config.start_s
        self.end = config.end_s
        self.heap: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = 0
        self.out: list[tuple[int, int, str, str]] = []
        self.cel = 28254000
        self.call_seq = 0
        self.queue_names = [
            _QUEUE_NAMES[i] if i < len(_QUEUE_NAMES) else f"queue{i + 1}" for i in range(config.queues)
        ]
        self.dids = {q: f"5911662{i:02d}" for i, q in enumerate(self.queue_names)}
        self.waiting: dict[str, list[_Call]] = {q: [] for q in self.queue_names}
        self.agents = self._make_agents()
        self.calls: list[_Call] = []
        self.visits: list[_Visit] = []
        # Facts for the truth, in processing order: (t, agent, kind, arg).
        self.agent_log: list[tuple[int, str, str, Any]] = []
        self.rings: list[tuple[int, str, str]] = []
        self.spies: list[dict[str, Any]] = []

    # -- setup

    def _make_agents(self) -> list[_Agent]:
        n_q = len(self.queue_names)
        agents = []
        for i in range(self.cfg.agents):
            base = _AGENT_NAMES[i % len(_AGENT_NAMES)]
            userid = base if i < len(_AGENT_NAMES) else f"{base}{i // len(_AGENT_NAMES) + 1}"
            skills = [self.queue_names[i % n_q]]
            if n_q > 1 and self.rng.random() < 0.5:
                skills.append(self.queue_names[(i + 1) % n_q])
            agents.append(_Agent(userid, str(101 + i), _DISPLAY.get(base, base.capitalize()), tuple(skills)))
        return agents

    # -- plumbing

    def at(self, t: int, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, fn, args))

    def emit(self, event: str, params: Sequence[tuple[str, str]]) -> None:
        self.seq += 1
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
        self.out.append((self.now, self.seq, event, query))

    def next_cel(self) -> str:
        self.cel += self.rng.randint(1, 9)
        return str(self.cel)

    def new_call(self, caller_num: str, did: str) -> _Call:
        self.call_seq += 1
        alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        custom = "".join(self.rng.choice(alphabet) for _ in range(8))
        call = _Call(f"{self.now}.{self.call_seq}", custom, caller_num, did)
        self.calls.append(call)
        return call

    def run(self) -> None:
        cfg = self.cfg
        for q in self.queue_names:
            self.at(self.now, self.arrival, q)
        for agent in self.agents:
            self.at(self.now + self.rng.randint(0, 180), self.login, agent)
            if cfg.hours >= 0.5 and self.rng.random() < cfg.mid_logout_share:
                lo, hi = self.now + 900, self.end - 900
                if hi > lo:
                    self.at(self.rng.randint(lo, hi), self.mid_logout, agent)
            self.schedule_pause(agent, self.now + 240)
            self.schedule_outbound(agent, self.now + 240)
            if cfg.end_mode == "drain":
                self.at(self.end, self.end_shift, agent)
        while self.heap:
            t, _, fn, args = heapq.heappop(self.heap)
            if cfg.end_mode == "cut" and t >= self.end:
                break
            self.now = t
            fn(*args)

    # -- arrivals and queues

    def rate(self, t: int) -> float:
        hour = (t // 3600) % 24
        return self.cfg.calls_per_hour * self.cfg.hourly_profile[hour] / 3600.0

    def arrival(self, queue: str) -> None:
        # Thinning: candidate gaps at the peak rate, kept with probability rate(t)/peak.
        peak = self.cfg.calls_per_hour * max(self.cfg.hourly_profile) / 3600.0
        if peak <= 0:
            return
        t = float(self.now)
        while True:
            t += self.rng.expovariate(peak)
            if t >= self.end:
                return
            if self.rng.random() * peak <= self.rate(int(t)):
                break
        self.at(int(t), self.inbound, queue)

    def inbound(self, queue: str) -> None:
        self.arrival(queue)  # the next one of this queue
        caller = "+4206" + "".join(str(self.rng.randint(0, 9)) for _ in range(8))
        call = self.new_call(caller, self.dids[queue])
        self.emit("start_call", [
            ("caller_type", "external"), ("caller_num", call.caller_num), ("dialed_num", call.did),
            ("target_num", call.did), ("call_id", call.call_id), ("cel_id", self.next_cel()),
        ])
        # Patience runs from the first queue entry; a share of callers give up within seconds.
        if self.rng.random() < self.cfg.short_abandon_share:
            patience = self.rng.randint(1, max(1, self.cfg.short_abandon_s - 1))
        else:
            patience = self.cfg.short_abandon_s + int(self.rng.expovariate(1 / self.cfg.mean_patience_s))
        ivr = self.rng.randint(1, 6)
        call.patience_until = self.now + ivr + patience
        self.at(self.now + ivr, self.enter_queue, call, queue)
        self.at(call.patience_until, self.abandon, call)

    def enter_queue(self, call: _Call, queue: str) -> None:
        if call.state != "ivr":
            return
        visit = _Visit(call.call_id, queue, self.now)
        self.visits.append(visit)
        call.visits.append(visit)
        call.visit, call.queue, call.state = visit, queue, "waiting"
        self.waiting[queue].append(call)
        self.emit("queue_in", [
            ("caller_num", call.caller_num), ("dialed_num", call.did), ("queue_name", queue),
            ("call_id", call.call_id), ("cel_id", self.next_cel()), ("custom_call_id", call.custom_id),
        ])
        if self.cfg.overflow_after_s and len(self.queue_names) > 1 and not call.overflowed:
            self.at(self.now + self.cfg.overflow_after_s, self.overflow, call, visit)
        self.dispatch()

    def leave_queue(self, call: _Call, send_queue_out: bool = True) -> None:
        visit = call.visit
        assert visit is not None
        visit.left_at = self.now
        self.waiting[call.queue].remove(call)
        if send_queue_out:
            self.emit("queue_out", [
                ("queue_name", call.queue), ("call_id", call.call_id), ("cel_id", self.next_cel()),
                ("custom_call_id", call.custom_id),
            ])

    def overflow(self, call: _Call, visit: _Visit) -> None:
        if call.visit is not visit or call.state not in ("waiting", "ringing"):
            return
        if call.state == "ringing":  # let the ring finish first
            self.at(self.now + self.cfg.ring_timeout_s, self.overflow, call, visit)
            return
        call.overflowed = True
        self.leave_queue(call)
        call.state = "ivr"
        nxt = self.queue_names[(self.queue_names.index(call.queue) + 1) % len(self.queue_names)]
        # One second between queue_out and the next queue_in: "a later queue_in" is then
        # later under any reading (after entered_at or after left_at).
        self.at(self.now + 1, self.enter_queue, call, nxt)

    def abandon(self, call: _Call) -> None:
        if call.state == "ivr" and call.visits and call.visit is not None and call.visit.left_at is not None:
            # Between two queues (overflow): give up right after entering the next one.
            self.at(self.now + 1, self.abandon, call)
            return
        if call.state not in ("waiting", "ringing", "ivr"):
            return
        if call.state == "ringing":
            agent = call.ringing_agent
            assert agent is not None
            agent.ringing = None
            self.block(agent, self.now + 1)
        if call.state in ("waiting", "ringing"):
            quiet = self.rng.random() < self.cfg.abandon_without_queue_out_share
            self.leave_queue(call, send_queue_out=not quiet)
        call.state = "done"
        call.ringing_agent = None
        self.end_call(call)

    def end_call(self, call: _Call) -> None:
        call.ended_at = self.now
        self.emit("call_end", [
            ("call_id", call.call_id), ("cel_id", self.next_cel()), ("custom_call_id", call.custom_id),
        ])

    # -- agents

    def dispatchable(self, agent: _Agent) -> bool:
        return (agent.logged_in and agent.ready and agent.call is None and agent.ringing is None
                and self.now >= agent.blocked_until and not agent.pending)

    def dispatch(self) -> None:
        free = sorted((a for a in self.agents if self.dispatchable(a)), key=lambda a: (a.free_since, a.exten))
        for agent in free:
            best: _Call | None = None
            for q in agent.skills:
                for call in self.waiting[q]:
                    if call.state == "waiting":
                        assert call.visit is not None
                        if best is None or call.visit.entered_at < best.visit.entered_at:  # type: ignore[union-attr]
                            best = call
                        break
            if best is not None:
                self.ring(agent, best)

    def ring(self, agent: _Agent, call: _Call) -> None:
        call.state, call.ringing_agent, agent.ringing = "ringing", agent, call
        self.rings.append((self.now, agent.userid, call.call_id))
        self.emit("start_int_dial", [
            ("caller_num", call.caller_num), ("caller_exten", ""), ("caller_name", ""),
            ("dialed_num", call.did), ("dialed_exten", agent.exten), ("line_num", agent.exten),
            ("line_name", agent.display), ("line_userid", agent.userid), ("custom_call_id", call.custom_id),
            ("call_id", call.call_id), ("cel_id", self.next_cel()), ("queue_name", call.queue),
            ("caller_type", "external"), ("queue_name", call.queue), ("direction", "incoming"),
        ])
        if self.rng.random() < self.cfg.ring_no_answer_share:
            self.at(self.now + self.cfg.ring_timeout_s, self.ring_timeout, agent, call)
        else:
            self.at(self.now + self.rng.randint(2, 8), self.answer, agent, call)

    def ring_timeout(self, agent: _Agent, call: _Call) -> None:
        if call.ringing_agent is not agent or call.state != "ringing":
            return
        call.state, call.ringing_agent, agent.ringing = "waiting", None, None
        self.emit("exten_paused", [("call_id", call.call_id), ("exten", agent.exten),
                                   ("reason", "unanswered_queue_call")])
        self.block(agent, self.now + RNA_BLOCK_S)
        self.dispatch()

    def answer(self, agent: _Agent, call: _Call) -> None:
        if call.ringing_agent is not agent or call.state != "ringing":
            return
        call.state, call.ringing_agent, agent.ringing, agent.call = "talk", None, None, call
        call.answered_at = self.now
        visit = call.visit
        assert visit is not None
        visit.answered_at, visit.agent = self.now, agent.userid
        self.emit("answered_internal", [
            ("caller_num", call.caller_num), ("caller_exten", ""), ("caller_name", ""),
            ("dialed_num", call.did), ("dialed_exten", agent.exten), ("line_num", agent.exten),
            ("line_name", agent.display), ("line_userid", agent.userid), ("custom_call_id", call.custom_id),
            ("call_id", call.call_id), ("cel_id", self.next_cel()), ("caller_type", "external"),
            ("direction", "incoming"),
        ])
        self.leave_queue(call)
        self.talk(agent, call, self.cfg.recording_share, self.cfg.spy_share)

    def talk(self, agent: _Agent, call: _Call, recording_share: float, spy_share: float) -> None:
        """The agent is on ``call`` from now: plan its recording, spying and hang-up."""
        self.agent_log.append((self.now, agent.userid, "talk_start", call.call_id))
        d = max(10, int(self.rng.expovariate(1 / self.cfg.mean_talk_s)))
        t0, end = self.now, self.now + d
        if self.rng.random() < recording_share:
            start = t0 + self.rng.choice((0, 0, 0, 1, 2))
            self.at(start, self.record, call, "call_recording_start")
            if d >= 40 and self.rng.random() < self.cfg.recording_restart_share:
                stop = start + self.rng.randint(5, d // 3)
                restart = stop + self.rng.randint(3, d // 3)
                self.at(stop, self.record, call, "call_recording_stop")
                self.at(restart, self.record, call, "call_recording_start")
            if self.rng.random() >= self.cfg.recording_unstopped_share:
                self.at(end, self.record, call, "call_recording_stop")
        if d >= 30 and self.rng.random() < spy_share:
            sup, sup_exten = self.rng.choice(_SUPERVISORS)
            spy = {
                "call_id": call.call_id, "spying_userid": sup, "spying_target_userid": agent.userid,
                "spying_exten": sup_exten, "spying_target_exten": agent.exten,
                "spy_type": self.rng.choice(_SPY_TYPES),
            }
            s0 = t0 + self.rng.randint(3, d // 3)
            self.at(s0, self.spy, spy, "call_spy_start")
            if self.rng.random() >= self.cfg.spy_unended_share:
                self.at(self.rng.randint(s0 + 5, end - 1), self.spy, spy, "call_spy_end")
        self.at(end, self.hangup, agent, call)

    def record(self, call: _Call, event: str) -> None:
        call.rec_events.append((self.now, event))
        self.emit(event, [("call_id", call.call_id)])

    def spy(self, spy: dict[str, Any], event: str) -> None:
        self.emit(event, [(k, spy[k]) for k in ("call_id", "spying_exten", "spying_target_exten", "spying_userid",
                                                 "spying_target_userid", "spy_type")])
        if event == "call_spy_start":
            self.spies.append({**spy, "started_at": self.now, "ended_at": None})
        else:
            for s in reversed(self.spies):
                if s["call_id"] == spy["call_id"] and s["ended_at"] is None:
                    s["ended_at"] = self.now
                    break

    def hangup(self, agent: _Agent, call: _Call) -> None:
        self.emit("hangup_internal", [
            ("line_num", agent.exten), ("line_userid", agent.userid), ("custom_call_id", call.custom_id),
            ("call_id", call.call_id), ("cel_id", self.next_cel()),
        ])
        if call.answered_at is not None:
            self.agent_log.append((self.now, agent.userid, "talk_end", call.call_id))
        call.state = "done"
        self.end_call(call)
        agent.call = None
        # Wrap-up: never rung in the second of its hang-up (see docs: same-second ties).
        self.block(agent, self.now + self.rng.randint(3, 12))

    def block(self, agent: _Agent, until: int) -> None:
        agent.blocked_until = max(agent.blocked_until, until)
        self.at(agent.blocked_until, self.agent_free, agent)

    def agent_free(self, agent: _Agent) -> None:
        if agent.call is not None or agent.ringing is not None or self.now < agent.blocked_until:
            return
        agent.free_since = self.now
        pending, agent.pending = agent.pending, []
        for action, arg in pending:
            if action == "logout":
                self.logout(agent, arg)
            else:
                self.pause(agent, *arg)
        self.dispatch()

    def busy(self, agent: _Agent) -> bool:
        return agent.call is not None or agent.ringing is not None or self.now < agent.blocked_until

    def state_event_ok(self, agent: _Agent, fn: Callable[..., None], *args: Any) -> bool:
        """At most one login/logout/set_state per agent per second (their order would matter)."""
        if agent.last_state_t >= self.now:
            self.at(agent.last_state_t + 1, fn, agent, *args)
            return False
        agent.last_state_t = self.now
        return True

    def login(self, agent: _Agent) -> None:
        if agent.logged_in or (self.cfg.end_mode == "drain" and self.now >= self.end):
            return
        if not self.state_event_ok(agent, self.login):
            return
        agent.logged_in, agent.ready, agent.free_since = True, True, self.now
        agent.pause_token += 1
        self.agent_log.append((self.now, agent.userid, "login", None))
        self.emit("pbx_agent_login", [("userid", agent.userid), ("exten", agent.exten)])
        self.dispatch()

    def logout(self, agent: _Agent, reason: str) -> None:
        if not agent.logged_in:
            return
        if self.busy(agent):
            agent.pending.append(("logout", reason))
            return
        if not self.state_event_ok(agent, self.logout, reason):
            return
        agent.logged_in = False
        agent.pause_token += 1
        self.agent_log.append((self.now, agent.userid, "logout", None))
        self.emit("pbx_agent_logout", [("userid", agent.userid), ("reason", reason)])

    def mid_logout(self, agent: _Agent) -> None:
        if not agent.logged_in:
            return
        self.logout(agent, self.rng.choice(_LOGOUT_REASONS[:2]))
        self.at(self.now + self.rng.randint(300, 1200), self.login, agent)

    def end_shift(self, agent: _Agent) -> None:
        if not agent.logged_in:
            return
        # Stay while calls of the agent's queues are waiting, so the period drains.
        if any(c.state in ("waiting", "ringing") for q in agent.skills for c in self.waiting[q]) or self.busy(agent):
            self.at(self.now + 10, self.end_shift, agent)
            return
        self.logout(agent, "end_of_shift")

    def schedule_pause(self, agent: _Agent, after: int) -> None:
        rate = self.cfg.pauses_per_agent_hour / 3600.0
        if rate <= 0:
            return
        t = after + int(self.rng.expovariate(rate))
        if t < self.end:
            self.at(t, self.pause_due, agent)

    def pause_due(self, agent: _Agent) -> None:
        self.schedule_pause(agent, self.now + 600)
        if not agent.logged_in or not agent.ready:
            return
        choices = [p for p in _PAUSES if not (p[0] == "lunch" and agent.lunched)]
        name, lo, hi, _ = self.rng.choices(choices, weights=[p[3] for p in choices])[0]
        agent.lunched |= name == "lunch"
        duration = self.rng.randint(lo, hi)
        if self.busy(agent):
            agent.pending.append(("pause", (name, duration)))
        else:
            self.pause(agent, name, duration)

    def pause(self, agent: _Agent, name: str, duration: int) -> None:
        if not agent.logged_in or not agent.ready:
            return
        if self.busy(agent):
            agent.pending.append(("pause", (name, duration)))
            return
        if not self.state_event_ok(agent, self.pause, name, duration):
            return
        agent.ready = False
        agent.pause_token += 1
        self.agent_log.append((self.now, agent.userid, "state", name))
        self.emit("pbx_agent_set_state", [("userid", agent.userid), ("state_name", name)])
        self.at(self.now + duration, self.resume, agent, agent.pause_token)

    def resume(self, agent: _Agent, token: int) -> None:
        if token != agent.pause_token or not agent.logged_in:
            return
        if not self.state_event_ok(agent, self.resume, token):
            return
        name = self.rng.choice(_READY_NAMES)
        agent.ready = True
        agent.free_since = self.now
        self.agent_log.append((self.now, agent.userid, "state", name))
        self.emit("pbx_agent_set_state", [("userid", agent.userid), ("state_name", name)])
        self.dispatch()

    # -- outbound

    def schedule_outbound(self, agent: _Agent, after: int) -> None:
        rate = self.cfg.outbound_per_agent_hour / 3600.0
        if rate <= 0:
            return
        t = after + int(self.rng.expovariate(rate))
        if t < self.end:
            self.at(t, self.outbound_due, agent)

    def outbound_due(self, agent: _Agent) -> None:
        if not self.dispatchable(agent):  # busy, paused or logged out: try again a bit later
            if self.now + 60 < self.end:
                self.at(self.now + self.rng.randint(30, 120), self.outbound_due, agent)
            return
        self.schedule_outbound(agent, self.now + 60)
        self.outbound(agent)

    def outbound(self, agent: _Agent) -> None:
        number = "+4207" + "".join(str(self.rng.randint(0, 9)) for _ in range(8))
        call = self.new_call(agent.exten, number)
        call.state = "dialing"
        agent.call = call
        self.emit("start_call", [
            ("caller_type", "internal"), ("caller_num", agent.exten), ("caller_userid", agent.userid),
            ("dialed_num", number), ("target_num", number), ("call_id", call.call_id), ("cel_id", self.next_cel()),
        ])
        self.at(self.now + 1, self.ext_dial, agent, call)

    def _dial_params(self, agent: _Agent, call: _Call) -> list[tuple[str, str]]:
        return [
            ("caller_num", agent.exten), ("caller_exten", agent.exten), ("caller_name", agent.display),
            ("dialed_num", call.did), ("dialed_exten", ""), ("line_num", agent.exten),
            ("line_name", agent.display), ("line_userid", agent.userid), ("custom_call_id", call.custom_id),
            ("call_id", call.call_id), ("cel_id", self.next_cel()), ("direction", "outgoing"),
        ]

    def ext_dial(self, agent: _Agent, call: _Call) -> None:
        self.emit("start_ext_dial", self._dial_params(agent, call))
        ring = self.rng.randint(4, 25)
        if self.rng.random() < 0.75:
            self.at(self.now + ring, self.ext_answer, agent, call)
        else:
            self.at(self.now + ring, self.hangup, agent, call)

    def ext_answer(self, agent: _Agent, call: _Call) -> None:
        call.state, call.answered_at = "talk", self.now
        self.emit("answered_external", self._dial_params(agent, call))
        self.talk(agent, call, self.cfg.recording_share / 2, 0.0)


# ----------------------------------------------------------------------------- truth


def _iso(t: int | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _truth(sim: _Sim) -> dict[str, Any]:
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


def _agent_seconds(sim: _Sim, until: int | None) -> list[dict[str, Any]]:
    """Each logged-in second is talk, else paused, else idle; split into 15-minute intervals."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}

    def row(agent: str, t: int) -> dict[str, Any]:
        start = t - t % INTERVAL_S
        r = rows.get((agent, start))
        if r is None:
            r = rows[(agent, start)] = {"agent": agent, "interval_start": start, "logged_in_s": 0, "paused_s": 0,
                                        "talk_s": 0, "idle_s": 0, "calls_answered": 0, "ring_no_answer": 0}
        return r

    by_agent: dict[str, list[tuple[int, str, Any]]] = {}
    for t, agent, kind, arg in sim.agent_log:
        by_agent.setdefault(agent, []).append((t, kind, arg))
    for agent, facts in by_agent.items():
        logged, ready, talking = False, True, 0
        facts.sort(key=lambda f: f[0])  # stable: same-second facts keep processing order
        stop = until if until is not None else facts[-1][0]
        for i, (t, kind, arg) in enumerate(facts):
            if kind == "login":
                logged, ready = True, True
            elif kind == "logout":
                logged = False
            elif kind == "state":
                ready = arg.lower() in READY_STATES
            elif kind == "talk_start":
                talking += 1
            elif kind == "talk_end":
                talking -= 1
            nxt = facts[i + 1][0] if i + 1 < len(facts) else stop
            if not logged or nxt <= t:
                continue
            what = "talk_s" if talking else ("paused_s" if not ready else "idle_s")
            a = t
            while a < nxt:
                b = min(nxt, a - a % INTERVAL_S + INTERVAL_S)
                r = row(agent, a)
                r["logged_in_s"] += b - a
                r[what] += b - a
                a = b
    answered: set[tuple[str, str]] = set()
    for v in sim.visits:
        if v.answered_at is not None and v.agent is not None:
            answered.add((v.call_id, v.agent))
            row(v.agent, v.answered_at)["calls_answered"] += 1
    for t, agent, call_id in sim.rings:
        if (call_id, agent) not in answered:
            row(agent, t)["ring_no_answer"] += 1
    out = []
    for (_, _), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        out.append({**r, "interval_start": _iso(r["interval_start"])})
    return out


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


# ----------------------------------------------------------------------------- API and outputs


def simulate(config: SimConfig | None = None) -> Simulation:
    """Run one scenario: the webhooks in send order, and the truth."""
    config = config or SimConfig()
    sim = _Sim(config)
    sim.run()
    sim.out.sort(key=lambda e: (e[0], e[1]))
    events = [SimEvent(t, event, query) for t, _, event, query in sim.out]
    return Simulation(config, events, _truth(sim))


def offset_function(spec: str) -> Callable[[int], int]:
    """``+0100`` / ``-0530`` / ``UTC`` / an IANA zone such as ``Europe/Prague`` -> epoch -> offset seconds."""
    text = spec.strip()
    if text.upper() in ("Z", "UTC"):
        return lambda t: 0
    if len(text) == 5 and text[0] in "+-" and text[1:].isdigit():
        sign = 1 if text[0] == "+" else -1
        offset = sign * (int(text[1:3]) * 3600 + int(text[3:5]) * 60)
        return lambda t: offset
    try:
        zone = zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SimConfigError(f"tz offset {spec!r}: expected +HHMM, -HHMM, UTC or a zone like Europe/Prague") from None

    def of_zone(t: int) -> int:
        off = dt.datetime.fromtimestamp(t, zone).utcoffset()
        return int(off.total_seconds()) if off is not None else 0

    return of_zone


_MONTH_ABBR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def access_log_line(t: int, target: str, offset_s: int = 0, fmt: str = "combined",
                    client: str = "10.0.0.5") -> str:
    """One nginx access-log line (``combined`` or ``common``) for a GET of ``target`` at epoch ``t``."""
    local = dt.datetime.fromtimestamp(t + offset_s, dt.timezone.utc)
    sign = "+" if offset_s >= 0 else "-"
    hh, mm = divmod(abs(offset_s) // 60, 60)
    stamp = (f"{local.day:02d}/{_MONTH_ABBR[local.month - 1]}/{local.year}:"
             f"{local.hour:02d}:{local.minute:02d}:{local.second:02d} {sign}{hh:02d}{mm:02d}")
    line = f'{client} - - [{stamp}] "GET {target} HTTP/1.1" 200 3'
    if fmt == "combined":
        line += ' "-" "pbx-webhook/1.0"'
    elif fmt != "common":
        raise SimConfigError(f"log format {fmt!r}: expected combined or common")
    return line + "\n"


def write_access_log(path: str | Path, events: Iterable[SimEvent], *, tz: str = "+0000",
                     fmt: str = "combined") -> int:
    """Write the events as an access log (gzip if the name ends in .gz). Returns lines written."""
    offset_of = offset_function(tz)
    path = Path(path)
    opener: Callable[..., IO[str]] = (
        (lambda p: gzip.open(p, "wt", encoding="utf-8")) if path.suffix == ".gz"
        else (lambda p: open(p, "w", encoding="utf-8"))
    )
    n = 0
    with opener(path) as f:
        for ev in events:
            f.write(access_log_line(ev.t, ev.target, offset_of(ev.t), fmt))
            n += 1
    return n


async def _send(events: Sequence[SimEvent], target: str, speed: float, concurrency: int,
                err: IO[str]) -> tuple[int, int]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    failures = 0
    sent = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = events[0].t if events else 0

    async def one(client: httpx.AsyncClient, ev: SimEvent) -> None:
        nonlocal failures, sent
        try:
            for attempt in range(5):
                resp = await client.get(ev.target)
                if resp.status_code == 503:
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")) if attempt < 4 else 0)
                    continue
                if resp.status_code != 200:
                    failures += 1
                    if failures <= 10:
                        err.write(f"simulate: {ev.target[:80]}...: HTTP {resp.status_code} {resp.text[:200]}\n")
                else:
                    sent += 1
                return
            failures += 1
        except httpx.HTTPError as exc:
            failures += 1
            if failures <= 10:
                err.write(f"simulate: {target}: {exc!r}\n")
        finally:
            sem.release()

    async with httpx.AsyncClient(base_url=target.rstrip("/"), timeout=30) as client:
        tasks = set()
        for ev in events:
            if speed > 0:
                delay = t0 + (ev.t - first) / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await sem.acquire()
            task = asyncio.create_task(one(client, ev))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return sent, failures


def send_to_target(events: Sequence[SimEvent], target: str, *, speed: float = 0.0, concurrency: int = 8,
                   err: IO[str] = sys.stderr) -> tuple[int, int]:
    """GET every event from a running ``serve`` at ``target``; ``speed`` 1 = real time, 0 = no waiting.

    Returns (sent, failed). With ``concurrency`` > 1, events of the same
    second may arrive in a different order; the service stamps arrival time.
    """
    if concurrency < 1:
        raise SimConfigError("concurrency must be at least 1")
    return asyncio.run(_send(events, target, speed, concurrency, err))


def run(
    config: SimConfig,
    *,
    access_log: str | None = None,
    log_format: str = "combined",
    tz: str = "+0000",
    target: str | None = None,
    speed: float = 0.0,
    concurrency: int = 8,
    truth: str | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """``pbx-analytics simulate``: the exit status."""
    try:
        offset_function(tz)
        if log_format not in ("combined", "common"):
            raise SimConfigError(f"log format {log_format!r}: expected combined or common")
        if speed < 0:
            raise SimConfigError(f"speed must be >= 0, got {speed}")
    except SimConfigError as exc:
        err.write(f"pbx-analytics simulate: {exc}\n")
        return 2
    started = time.perf_counter()
    result = simulate(config)
    elapsed = time.perf_counter() - started
    if truth:
        with open(truth, "w", encoding="utf-8") as f:
            json.dump(result.truth, f, indent=1, ensure_ascii=False)
            f.write("\n")
    if access_log:
        write_access_log(access_log, result.events, tz=tz, fmt=log_format)
    outcomes: dict[str, int] = {}
    for v in result.truth["queue_visits"]:
        outcomes[v["outcome"]] = outcomes.get(v["outcome"], 0) + 1
    out.write(
        f"simulated {config.hours:g} h from {config.start:%Y-%m-%d %H:%M} UTC (seed {config.seed}): "
        f"{len(result.events)} events, {len(result.truth['queue_visits'])} queue visits "
        f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}) in {elapsed:.2f}s\n"
    )
    if access_log:
        out.write(f"access log: {access_log}\n")
    if truth:
        out.write(f"truth: {truth}\n")
    if target:
        sent, failed = send_to_target(result.events, target, speed=speed, concurrency=concurrency, err=err)
        out.write(f"sent {sent} to {target}, {failed} failed\n")
        if failed:
            return 1
    out.flush()
    return 0


def parse_start(text: str) -> dt.datetime:
    """``2026-11-02T08:00`` (UTC unless an offset is given) -> aware datetime."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SimConfigError(f"start {text!r}: expected an ISO date-time such as 2026-11-02T08:00") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def run_from_flags(flags: dict[str, Any], out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """The CLI's flags (names without the ``sim_`` prefix; None = not given) -> :func:`run`."""
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    values = {k: v for k, v in flags.items() if k in fields and v is not None}
    try:
        if isinstance(values.get("start"), str):
            values["start"] = parse_start(values["start"])
        config = SimConfig(**values)
    except SimConfigError as exc:
        err.write(f"pbx-analytics simulate: {exc}\n")
        return 2
    return run(
        config,
        access_log=flags.get("access_log"),
        log_format=flags.get("log_format") or "combined",
        tz=flags.get("tz_offset") or "+0000",
        target=flags.get("target"),
        speed=flags.get("speed") if flags.get("speed") is not None else 0.0,
        concurrency=flags.get("concurrency") or 8,
        truth=flags.get("truth"),
        out=out,
        err=err,
    )
