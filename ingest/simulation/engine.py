"""A seeded discrete-event call-centre simulator that emits the PBX's webhooks.

Model (``docs/simulator.md`` has the details and the tie-breaking rules):
callers arrive per queue as a Poisson process whose rate follows the hour of
day; they wait with a patience (some give up within seconds), overflow once to
the next queue after ``overflow_after_s``, and are rung to a free, ready agent
with the queue among its skills (longest idle first). A ring may go
unanswered (``exten_paused``, the agent is blocked for a while). Agents log in
and out, pause with named states (some renamed midway), make outbound calls and
call each other; some calls are transferred to another agent or queue; some
callers hang up in the IVR, retry after giving up or call back hours later;
supervisors spy on calls; calls are recorded, some stopped and restarted, some
never stopped; the PBX loses a few ``call_end`` webhooks.

Time runs in whole seconds (the access log's resolution). Every webhook it
emits is one of ``ingest.events.spec.EVENTS`` with parameters the spec defines
(checked as it emits). :func:`simulate` returns the events and the *truth*
(``truth``), the expected analytics computed from the engine's own records.
"""


from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from ingest.events.spec import EVENTS
from ingest.simulation.config import RNA_BLOCK_S, SimConfig
from ingest.simulation.model import Agent, Call, SimEvent, Simulation, Visit
from ingest.simulation.truth import truth

__all__ = ["SimEvent", "Simulation", "simulate"]

_QUEUE_NAMES = ("helpdesk", "sales", "billing", "support", "vip", "retention", "orders", "tech")
_AGENT_NAMES = ("martin", "karel", "jana", "petra", "tomas", "lucie", "eva", "pavel", "ondrej", "tereza",
                "jiri", "hana", "lukas", "klara", "david", "zuzana")
# Display names with non-ASCII letters exercise percent-encoded UTF-8 end to end.
_DISPLAY = {"tomas": "Tomáš", "jiri": "Jiří", "tereza": "Tereza Nováková", "klara": "Klára"}
_SUPERVISORS = (("supervisor1", "200"), ("supervisor2", "201"))
_PAUSES = (("break", 300, 900, 5), ("lunch", 1800, 2700, 1), ("meeting", 600, 1200, 1), ("training", 600, 1800, 1),
           ("Coaching", 300, 900, 1))
#: What a pause may be renamed to midway (never lunch: once a day, planned).
_RENAMES = ("meeting", "training", "Coaching")
_READY_NAMES = ("available", "available", "available", "Online", "ready")
_LOGOUT_REASONS = ("pause", "manual", "end_of_shift")
_SPY_TYPES = ("spy", "bargein", "whisper")
#: The parameters each webhook may carry (the spec's fields): what :meth:`_Sim.emit` checks.
_PARAMS_OF = {name: frozenset(cls.__struct_fields__) - {"extra"} for name, cls in EVENTS.items()}


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
        self.waiting: dict[str, list[Call]] = {q: [] for q in self.queue_names}
        self.agents = self._make_agents()
        self.calls: list[Call] = []
        self.visits: list[Visit] = []
        # Facts for the truth, in processing order: (t, agent, kind, arg).
        self.agent_log: list[tuple[int, str, str, Any]] = []
        self.rings: list[tuple[int, str, str]] = []
        self.answers: list[tuple[int, str, str, str]] = []  # (t, agent, call_id, event)
        self.spies: list[dict[str, Any]] = []

    # -- setup

    def _make_agents(self) -> list[Agent]:
        n_q = len(self.queue_names)
        agents = []
        for i in range(self.cfg.agents):
            base = _AGENT_NAMES[i % len(_AGENT_NAMES)]
            userid = base if i < len(_AGENT_NAMES) else f"{base}{i // len(_AGENT_NAMES) + 1}"
            skills = [self.queue_names[i % n_q]]
            if n_q > 1 and self.rng.random() < 0.5:
                skills.append(self.queue_names[(i + 1) % n_q])
            agents.append(Agent(userid, str(101 + i), _DISPLAY.get(base, base.capitalize()), tuple(skills)))
        return agents

    # -- plumbing

    def at(self, t: int, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, fn, args))

    def emit(self, event: str, params: Sequence[tuple[str, str]]) -> None:
        """Send webhook ``event`` now; a name or parameter the spec does not define is a bug here."""
        allowed = _PARAMS_OF[event]
        if not allowed.issuperset(name for name, _ in params):
            raise ValueError(f"{event}: parameters outside the spec: {sorted({n for n, _ in params} - allowed)}")
        self.seq += 1
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
        self.out.append((self.now, self.seq, event, query))

    def next_cel(self) -> str:
        self.cel += self.rng.randint(1, 9)
        return str(self.cel)

    def new_call(self, caller_num: str, did: str, kind: str = "inbound") -> Call:
        self.call_seq += 1
        alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        custom = "".join(self.rng.choice(alphabet) for _ in range(8))
        call = Call(f"{self.now}.{self.call_seq}", custom, caller_num, did, started_at=self.now, kind=kind)
        self.calls.append(call)
        return call

    def run(self) -> None:
        cfg = self.cfg
        for q in self.queue_names:
            self.at(self.now, self.arrival, q)
        for agent in self.agents:
            self.at(self.now + self.rng.randint(0, cfg.login_spread_s), self.login, agent)
            if cfg.hours >= 0.5 and self.rng.random() < cfg.mid_logout_share:
                lo, hi = self.now + 900, self.end - 900
                if hi > lo:
                    self.at(self.rng.randint(lo, hi), self.mid_logout, agent)
            self.schedule_pause(agent, self.now + 240)
            self.schedule_outbound(agent, self.now + 240)
            self.schedule_random(agent, self.now + 300, cfg.internal_per_agent_hour, self.internal_due)
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
        self.call_in(queue, "+4206" + "".join(str(self.rng.randint(0, 9)) for _ in range(8)))

    def call_in(self, queue: str, caller: str) -> None:
        """A caller dials ``queue``'s number: a new arrival, a retry or a call-back."""
        call = self.new_call(caller, self.dids[queue])
        self.emit("start_call", [
            ("caller_type", "external"), ("caller_num", call.caller_num), ("dialed_num", call.did),
            ("target_num", call.did), ("call_id", call.call_id), ("cel_id", self.next_cel()),
        ])
        ivr = self.rng.randint(1, 6)
        if self.rng.random() < self.cfg.ivr_hangup_share:
            self.at(self.now + ivr, self.ivr_hangup, call)
            return
        # Patience runs from the first queue entry; a share of callers give up within seconds.
        call.patience_until = self.now + ivr + self.patience()
        self.at(self.now + ivr, self.enter_queue, call, queue)
        self.at(call.patience_until, self.abandon, call)

    def patience(self) -> int:
        if self.rng.random() < self.cfg.short_abandon_share:
            return self.rng.randint(1, max(1, self.cfg.short_abandon_s - 1))
        return self.cfg.short_abandon_s + int(self.rng.expovariate(1 / self.cfg.mean_patience_s))

    def ivr_hangup(self, call: Call) -> None:
        """The caller hangs up in the IVR, before reaching a queue."""
        call.state = "done"
        self.end_call(call)

    def call_again(self, call: Call, at: int) -> None:
        """The caller of ``call`` dials the same queue again at ``at`` (if arrivals still run then)."""
        if at < self.end and call.visits:
            self.at(at, self.call_in, call.visits[0].queue_name, call.caller_num)

    def enter_queue(self, call: Call, queue: str) -> None:
        if call.state != "ivr":
            return
        visit = Visit(call.call_id, queue, self.now)
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

    def leave_queue(self, call: Call, send_queue_out: bool = True) -> None:
        visit = call.visit
        assert visit is not None
        visit.left_at = self.now
        self.waiting[call.queue].remove(call)
        if send_queue_out:
            self.emit("queue_out", [
                ("queue_name", call.queue), ("call_id", call.call_id), ("cel_id", self.next_cel()),
                ("custom_call_id", call.custom_id),
            ])

    def overflow(self, call: Call, visit: Visit) -> None:
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

    def abandon(self, call: Call) -> None:
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
        if call.answered_at is None and self.rng.random() < self.cfg.retry_share:
            self.call_again(call, self.now + self.rng.randint(60, 600))

    def end_call(self, call: Call, may_be_lost: bool = False) -> None:
        """``call_end``; after a hang-up (``may_be_lost``) the PBX sometimes never sends it."""
        if may_be_lost and self.rng.random() < self.cfg.lost_call_end_share:
            return
        call.ended_at = self.now
        self.emit("call_end", [
            ("call_id", call.call_id), ("cel_id", self.next_cel()), ("custom_call_id", call.custom_id),
        ])

    # -- agents

    def dispatchable(self, agent: Agent) -> bool:
        return (agent.logged_in and agent.ready and agent.call is None and agent.ringing is None
                and self.now >= agent.blocked_until and not agent.pending)

    def dispatch(self) -> None:
        free = sorted((a for a in self.agents if self.dispatchable(a)), key=lambda a: (a.free_since, a.exten))
        for agent in free:
            best: Call | None = None
            for q in agent.skills:
                for call in self.waiting[q]:
                    if call.state == "waiting":
                        assert call.visit is not None
                        if best is None or call.visit.entered_at < best.visit.entered_at:  # type: ignore[union-attr]
                            best = call
                        break
            if best is not None:
                self.ring(agent, best)

    def ring(self, agent: Agent, call: Call) -> None:
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

    def ring_timeout(self, agent: Agent, call: Call) -> None:
        if call.ringing_agent is not agent or call.state != "ringing":
            return
        call.state, call.ringing_agent, agent.ringing = "waiting", None, None
        self.emit("exten_paused", [("call_id", call.call_id), ("exten", agent.exten),
                                   ("reason", "unanswered_queue_call")])
        self.block(agent, self.now + RNA_BLOCK_S)
        self.dispatch()

    def answer(self, agent: Agent, call: Call) -> None:
        if call.ringing_agent is not agent or call.state != "ringing":
            return
        call.state, call.ringing_agent, agent.ringing = "talk", None, None
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
        self.took(agent, call, "answered_internal")
        self.leave_queue(call)
        first_leg = not call.transferred
        self.talk(agent, call, self.cfg.recording_share if first_leg else 0.0, self.cfg.spy_share if first_leg else 0.0)

    def took(self, agent: Agent, call: Call, event: str) -> None:
        """``agent`` answered ``call`` now (``event`` just emitted): it holds the call and talks."""
        agent.call, call.holder = call, agent
        if call.answered_at is None:
            call.answered_at = self.now
        call.answers.append((self.now, agent.userid))
        self.answers.append((self.now, agent.userid, call.call_id, event))
        self.agent_log.append((self.now, agent.userid, "talk_start", call.call_id))

    def talk_time(self) -> int:
        d = max(self.cfg.min_talk_s, int(self.rng.expovariate(1 / self.cfg.mean_talk_s)))
        return min(d, self.cfg.max_talk_s) if self.cfg.max_talk_s else d

    def talk(self, agent: Agent, call: Call, recording_share: float, spy_share: float) -> None:
        """The agent is on ``call`` from now: plan its recording, spying, transfer and hang-up."""
        d = self.talk_time()
        t0, end = self.now, self.now + d
        call.leg += 1
        leg = call.leg
        # A transfer happens at t_x; a blind one (into a queue) ends this agent's part there,
        # so the recording and spying of this leg fit before it.
        transfer, t_x, part_end = "", 0, end
        if (call.kind == "inbound" and not call.transferred and d >= 40
                and self.rng.random() < self.cfg.transfer_share):
            call.transferred = True
            t_x = t0 + self.rng.randint(8, d - 30)
            transfer = self.rng.choice(("agent", "queue"))
            if transfer == "queue":
                part_end = t_x
        part = part_end - t0
        if self.rng.random() < recording_share:
            start = t0 + self.rng.choice((0, 0, 0, 1, 2))
            self.at(start, self.record, call, "call_recording_start")
            if part >= 40 and self.rng.random() < self.cfg.recording_restart_share:
                stop = start + self.rng.randint(5, part // 3)
                restart = stop + self.rng.randint(3, part // 3)
                self.at(stop, self.record, call, "call_recording_stop")
                self.at(restart, self.record, call, "call_recording_start")
            if self.rng.random() >= self.cfg.recording_unstopped_share:
                self.at(part_end, self.record, call, "call_recording_stop")
        if part >= 30 and self.rng.random() < spy_share:
            sup, sup_exten = self.rng.choice(_SUPERVISORS)
            spy = {
                "call_id": call.call_id, "spying_userid": sup, "spying_target_userid": agent.userid,
                "spying_exten": sup_exten, "spying_target_exten": agent.exten,
                "spy_type": self.rng.choice(_SPY_TYPES),
            }
            s0 = t0 + self.rng.randint(3, part // 3)
            self.at(s0, self.spy, spy, "call_spy_start")
            if self.rng.random() >= self.cfg.spy_unended_share:
                self.at(self.rng.randint(s0 + 5, part_end - 1), self.spy, spy, "call_spy_end")
        if transfer == "queue":
            self.at(t_x, self.transfer_to_queue, agent, call, leg)
            return
        if transfer == "agent":
            self.at(t_x, self.transfer_to_agent, agent, call, leg)
        self.at(end, self.finish, call, leg)

    def record(self, call: Call, event: str) -> None:
        call.rec_events.append((self.now, event))
        self.emit(event, [("call_id", call.call_id)])

    def spy(self, spy: dict[str, Any], event: str) -> None:
        self.emit(event, [(k, spy[k]) for k in ("call_id", "spying_exten", "spying_target_exten", "spying_userid",
                                                 "spying_target_userid", "spy_type")])
        if event == "call_spy_start":
            next(c for c in reversed(self.calls) if c.call_id == spy["call_id"]).spied = True
            self.spies.append({**spy, "started_at": self.now, "ended_at": None})
        else:
            for s in reversed(self.spies):
                if s["call_id"] == spy["call_id"] and s["ended_at"] is None:
                    s["ended_at"] = self.now
                    break

    # -- transfers: the caller moves on, the first agent hangs up

    def transfer_to_queue(self, agent: Agent, call: Call, leg: int) -> None:
        """Blind transfer: the agent hangs up and the caller enters another queue a second later."""
        if call.leg != leg:
            return
        self.leave(agent, call)
        call.holder, call.state = None, "ivr"
        served = [q for q in self.queue_names if q != call.queue and any(q in a.skills for a in self.agents)]
        if not served:  # nobody else to take it: the call ends with this agent
            self.end_call(call)
            call.state = "done"
            return
        self.at(self.now + 1, self.enter_queue, call, self.rng.choice(served))
        self.at(self.now + 1 + self.patience(), self.abandon, call)

    def transfer_to_agent(self, agent: Agent, call: Call, leg: int) -> None:
        """Attended transfer: ring a free colleague; once it answers, the agent hangs up."""
        if call.leg != leg:
            return
        free = sorted((a for a in self.agents if a is not agent and self.dispatchable(a)),
                      key=lambda a: (a.free_since, a.exten))
        if not free:
            return  # nobody free: the agent keeps the call
        other = free[0]
        other.ringing = call
        self.rings.append((self.now, other.userid, call.call_id))
        self.emit("start_int_dial", self._transfer_params(agent, other, call))
        self.at(self.now + self.rng.randint(2, 6), self.transfer_answer, agent, other, call, leg)

    def _transfer_params(self, agent: Agent, other: Agent, call: Call) -> list[tuple[str, str]]:
        return [
            ("caller_num", call.caller_num), ("caller_exten", agent.exten), ("caller_name", agent.display),
            ("dialed_num", other.exten), ("dialed_exten", other.exten), ("line_num", other.exten),
            ("line_name", other.display), ("line_userid", other.userid), ("custom_call_id", call.custom_id),
            ("call_id", call.call_id), ("cel_id", self.next_cel()), ("direction", "internal"),
        ]

    def transfer_answer(self, agent: Agent, other: Agent, call: Call, leg: int) -> None:
        other.ringing = None
        self.emit("answered_internal", [*self._transfer_params(agent, other, call), ("caller_type", "external")])
        self.took(other, call, "answered_internal")
        # Both talk a few seconds (the hand-over), then the first agent hangs up.
        self.at(self.now + self.rng.randint(2, 10), self.leave, agent, call)

    # -- the end of a call

    def finish(self, call: Call, leg: int) -> None:
        """The planned end of talk leg ``leg``: its holder hangs up and the call ends."""
        if call.leg == leg and call.holder is not None:
            self.hangup(call.holder, call)

    def leave(self, agent: Agent, call: Call) -> None:
        """``agent``'s line hangs up (``hangup_internal``); the call may go on without it."""
        self.emit("hangup_internal", [
            ("line_num", agent.exten), ("line_userid", agent.userid), ("custom_call_id", call.custom_id),
            ("call_id", call.call_id), ("cel_id", self.next_cel()),
        ])
        self.release(agent, call)

    def release(self, agent: Agent, call: Call) -> None:
        """``agent`` is off ``call`` now: its talk (if it answered) ends, wrap-up follows."""
        if any(a == agent.userid for _, a in call.answers):
            self.agent_log.append((self.now, agent.userid, "talk_end", call.call_id))
        agent.call = None
        if call.holder is agent:
            call.holder = None
        # Wrap-up: never rung in the second of its hang-up (see docs: same-second ties).
        self.block(agent, self.now + self.rng.randint(3, 12))

    def hangup(self, agent: Agent, call: Call) -> None:
        """``agent`` hangs up and the call ends (its ``call_end`` now and then lost)."""
        self.leave(agent, call)
        call.state = "done"
        self.end_call(call, may_be_lost=True)
        if call.kind == "inbound" and call.answered_at is not None and self.rng.random() < self.cfg.callback_share:
            if self.rng.random() < self.cfg.callback_window_edge_share:  # at a one-day window's edge
                delay = 86400 + self.rng.choice((-1, 1)) * self.rng.randint(0, 30)
            else:
                delay = self.rng.randint(3600, 30 * 3600)
            self.call_again(call, max(self.now + 60, call.started_at + delay))

    def block(self, agent: Agent, until: int) -> None:
        agent.blocked_until = max(agent.blocked_until, until)
        self.at(agent.blocked_until, self.agent_free, agent)

    def agent_free(self, agent: Agent) -> None:
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

    def busy(self, agent: Agent) -> bool:
        return agent.call is not None or agent.ringing is not None or self.now < agent.blocked_until

    def state_event_ok(self, agent: Agent, fn: Callable[..., None], *args: Any) -> bool:
        """At most one login/logout/set_state per agent per second (their order would matter)."""
        if agent.last_state_t >= self.now:
            self.at(agent.last_state_t + 1, fn, agent, *args)
            return False
        agent.last_state_t = self.now
        return True

    def login(self, agent: Agent) -> None:
        if agent.logged_in or (self.cfg.end_mode == "drain" and self.now >= self.end):
            return
        if not self.state_event_ok(agent, self.login):
            return
        agent.logged_in, agent.ready, agent.free_since = True, True, self.now
        agent.pause_token += 1
        self.agent_log.append((self.now, agent.userid, "login", None))
        self.emit("pbx_agent_login", [("userid", agent.userid), ("exten", agent.exten)])
        self.dispatch()

    def logout(self, agent: Agent, reason: str) -> None:
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

    def mid_logout(self, agent: Agent) -> None:
        if not agent.logged_in:
            return
        self.logout(agent, self.rng.choice(_LOGOUT_REASONS[:2]))
        self.at(self.now + self.rng.randint(300, 1200), self.login, agent)

    def end_shift(self, agent: Agent) -> None:
        if not agent.logged_in:
            return
        # Stay while calls of the agent's queues are waiting, so the period drains.
        if any(c.state in ("waiting", "ringing") for q in agent.skills for c in self.waiting[q]) or self.busy(agent):
            self.at(self.now + self.cfg.drain_check_s, self.end_shift, agent)
            return
        self.logout(agent, "end_of_shift")

    def schedule_random(self, agent: Agent, after: int, per_hour: float, fn: Callable[[Agent], None]) -> None:
        """``fn(agent)`` at an exponentially distributed time after ``after``, if within the period."""
        rate = per_hour / 3600.0
        if rate <= 0:
            return
        t = after + int(self.rng.expovariate(rate))
        if t < self.end:
            self.at(t, fn, agent)

    def schedule_pause(self, agent: Agent, after: int) -> None:
        self.schedule_random(agent, after, self.cfg.pauses_per_agent_hour, self.pause_due)

    def pause_due(self, agent: Agent) -> None:
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

    def pause(self, agent: Agent, name: str, duration: int) -> None:
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
        if self.rng.random() < self.cfg.pause_rename_share:
            new = self.rng.choice([n for n in _RENAMES if n != name])
            self.at(self.now + self.rng.randint(60, duration - 60), self.rename_pause, agent, agent.pause_token, new)

    def rename_pause(self, agent: Agent, token: int, name: str) -> None:
        """Still paused, under another name (the pause's own end stays planned)."""
        if token != agent.pause_token or not agent.logged_in or agent.ready:
            return
        if not self.state_event_ok(agent, self.rename_pause, token, name):
            return
        self.agent_log.append((self.now, agent.userid, "state", name))
        self.emit("pbx_agent_set_state", [("userid", agent.userid), ("state_name", name)])

    def resume(self, agent: Agent, token: int) -> None:
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

    def schedule_outbound(self, agent: Agent, after: int) -> None:
        self.schedule_random(agent, after, self.cfg.outbound_per_agent_hour, self.outbound_due)

    def outbound_due(self, agent: Agent) -> None:
        if not self.dispatchable(agent):  # busy, paused or logged out: try again a bit later
            if self.now + 60 < self.end:
                self.at(self.now + self.rng.randint(30, 120), self.outbound_due, agent)
            return
        self.schedule_outbound(agent, self.now + 60)
        self.outbound(agent)

    def outbound(self, agent: Agent) -> None:
        number = "+4207" + "".join(str(self.rng.randint(0, 9)) for _ in range(8))
        call = self.new_call(agent.exten, number, "outbound")
        call.state = "dialing"
        agent.call = call
        self.emit("start_call", [
            ("caller_type", "internal"), ("caller_num", agent.exten), ("caller_userid", agent.userid),
            ("dialed_num", number), ("target_num", number), ("call_id", call.call_id), ("cel_id", self.next_cel()),
        ])
        self.at(self.now + 1, self.ext_dial, agent, call)

    def _dial_params(self, agent: Agent, call: Call) -> list[tuple[str, str]]:
        return [
            ("caller_num", agent.exten), ("caller_exten", agent.exten), ("caller_name", agent.display),
            ("dialed_num", call.did), ("dialed_exten", ""), ("line_num", agent.exten),
            ("line_name", agent.display), ("line_userid", agent.userid), ("custom_call_id", call.custom_id),
            ("call_id", call.call_id), ("cel_id", self.next_cel()), ("direction", "outgoing"),
        ]

    def ext_dial(self, agent: Agent, call: Call) -> None:
        self.emit("start_ext_dial", self._dial_params(agent, call))
        ring = self.rng.randint(4, 25)
        if self.rng.random() < 0.75:
            self.at(self.now + ring, self.ext_answer, agent, call)
        else:
            self.at(self.now + ring, self.hangup, agent, call)

    def ext_answer(self, agent: Agent, call: Call) -> None:
        call.state = "talk"
        self.emit("answered_external", self._dial_params(agent, call))
        self.took(agent, call, "answered_external")
        self.talk(agent, call, self.cfg.recording_share / 2, 0.0)

    # -- internal: one agent calls another

    def internal_due(self, agent: Agent) -> None:
        self.schedule_random(agent, self.now + 300, self.cfg.internal_per_agent_hour, self.internal_due)
        others = [a for a in self.agents if a is not agent and self.dispatchable(a)]
        if not self.dispatchable(agent) or not others:
            return
        callee = self.rng.choice(others)
        call = self.new_call(agent.exten, callee.exten, "internal")
        call.state, agent.call = "dialing", call
        self.emit("start_call", [
            ("caller_type", "internal"), ("caller_num", agent.exten), ("caller_userid", agent.userid),
            ("dialed_num", callee.exten), ("target_num", callee.exten), ("call_id", call.call_id),
            ("cel_id", self.next_cel()),
        ])
        self.at(self.now + 1, self.internal_ring, agent, callee, call)

    def _internal_params(self, agent: Agent, callee: Agent, call: Call) -> list[tuple[str, str]]:
        return [
            ("caller_num", agent.exten), ("caller_exten", agent.exten), ("caller_name", agent.display),
            ("dialed_num", callee.exten), ("dialed_exten", callee.exten), ("line_num", callee.exten),
            ("line_name", callee.display), ("line_userid", callee.userid), ("custom_call_id", call.custom_id),
            ("call_id", call.call_id), ("cel_id", self.next_cel()), ("direction", "internal"),
        ]

    def internal_ring(self, agent: Agent, callee: Agent, call: Call) -> None:
        if not self.dispatchable(callee):  # became busy meanwhile: the caller gives up unheard
            self.hangup(agent, call)
            return
        callee.ringing = call
        self.rings.append((self.now, callee.userid, call.call_id))
        self.emit("start_int_dial", self._internal_params(agent, callee, call))
        if self.rng.random() < self.cfg.internal_no_answer_share:
            self.at(self.now + self.rng.randint(10, 20), self.internal_unanswered, agent, callee, call)
        else:
            self.at(self.now + self.rng.randint(2, 8), self.internal_answer, agent, callee, call)

    def internal_unanswered(self, agent: Agent, callee: Agent, call: Call) -> None:
        callee.ringing = None
        self.hangup(agent, call)
        self.dispatch()

    def internal_answer(self, agent: Agent, callee: Agent, call: Call) -> None:
        callee.ringing, call.state = None, "talk"
        self.emit("answered_internal", [*self._internal_params(agent, callee, call), ("caller_type", "internal")])
        self.took(callee, call, "answered_internal")
        self.at(self.now + self.talk_time(), self.internal_end, agent, callee, call)

    def internal_end(self, agent: Agent, callee: Agent, call: Call) -> None:
        """One of the two hangs up (the callee's talk then ends at its hang-up or at call_end)."""
        self.leave(self.rng.choice((agent, callee)), call)
        for a in (agent, callee):
            if a.call is call:
                self.release(a, call)
        call.state = "done"
        self.end_call(call)


def simulate(config: SimConfig | None = None) -> Simulation:
    """Run one scenario: the webhooks in send order, and the truth."""
    config = config or SimConfig()
    sim = _Sim(config)
    sim.run()
    sim.out.sort(key=lambda e: (e[0], e[1]))
    events = [SimEvent(t, event, query) for t, _, event, query in sim.out]
    return Simulation(config, events, truth(sim))
