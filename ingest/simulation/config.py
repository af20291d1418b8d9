"""One simulation scenario (:class:`SimConfig`) and the model's fixed definitions.

Same config (seed included) -> same events, byte for byte. ``docs/simulator.md``
describes the model; the output options (access log, target, truth) are
``ingest.config.SimulateOptions``. :func:`scenario` turns the command's flags
into a config, with its default period: one that ends now.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "HOURLY_PROFILE",
    "INTERVAL_S",
    "READY_STATES",
    "RNA_BLOCK_S",
    "SimConfig",
    "SimConfigError",
    "parse_start",
    "scenario",
]

#: States of ``pbx_agent_set_state`` that count as ready (case-insensitive), per issue 4.
READY_STATES = frozenset({"available", "online", "ready"})

#: Relative call volume by UTC hour of day (1.0 = ``calls_per_hour``).
HOURLY_PROFILE: tuple[float, ...] = (
    0.05, 0.05, 0.05, 0.05, 0.05, 0.1, 0.3, 0.7,     # 00-07
    1.0, 1.3, 1.4, 1.2, 0.9, 1.0, 1.3, 1.2,          # 08-15
    1.0, 0.7, 0.4, 0.3, 0.2, 0.1, 0.05, 0.05,        # 16-23
)
#: An agent is not rung for this long after a ring it did not answer.
RNA_BLOCK_S = 30
#: The views' interval (15 minutes), which the truth's figures are grouped by.
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
    #: Mean talk time of answered calls (exponential, at least ``min_talk_s``, at most
    #: ``max_talk_s`` when that is not 0).
    mean_talk_s: float = 150.0
    min_talk_s: int = 10
    max_talk_s: int = 0
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
    #: Agents log in within this many seconds of the start.
    login_spread_s: int = 180
    #: Share of callers who hang up in the IVR, before any queue (start_call, call_end).
    ivr_hangup_share: float = 0.03
    #: Share of abandoning callers who call again 1-10 minutes later (same number, same queue).
    retry_share: float = 0.3
    #: Share of answered callers who call back 1-30 hours after their call started; of those,
    #: the share who call back within 30 s either side of 24 h (the repeat-call window's edge).
    callback_share: float = 0.08
    callback_window_edge_share: float = 0.2
    #: Share of answered inbound calls of 40 s or more transferred: half to another agent
    #: (attended: both on the call for a few seconds), half into another queue (blind).
    transfer_share: float = 0.06
    #: Outbound calls per agent per logged-in hour.
    outbound_per_agent_hour: float = 1.0
    #: Calls from one agent to another per agent per logged-in hour; share nobody answers.
    internal_per_agent_hour: float = 0.3
    internal_no_answer_share: float = 0.4
    #: Share of calls ended by a hang-up whose call_end the PBX never sends.
    lost_call_end_share: float = 0.02
    #: Pauses per agent per hour (break, lunch, meeting, training, Coaching).
    pauses_per_agent_hour: float = 0.8
    #: Share of pauses renamed once midway (e.g. break -> meeting): still paused, new name.
    pause_rename_share: float = 0.15
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
    #: In "drain" mode, an agent due to leave while busy or with callers waiting checks again
    #: this many seconds later.
    drain_check_s: int = 10
    #: "drain": after the period, calls in progress finish and agents log out when idle.
    #: "cut": the output stops at the period's end; open visits stay "waiting".
    end_mode: str = "drain"
    #: Thresholds the truth uses (issue 4 defaults; sla_target_pct: issue 14's staffing target).
    sla_threshold_s: int = 20
    short_abandon_s: int = 5
    sla_target_pct: float = 80.0

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
        if self.min_talk_s < 1 or (self.max_talk_s and self.max_talk_s < self.min_talk_s):
            raise SimConfigError(f"talk time bounds {self.min_talk_s}..{self.max_talk_s}: need 1 <= min <= max "
                                 "(max 0: none)")
        if self.drain_check_s < 1:
            raise SimConfigError(f"drain_check_s must be >= 1, got {self.drain_check_s}")
        if self.login_spread_s < 0:
            raise SimConfigError(f"login_spread_s must be >= 0, got {self.login_spread_s}")
        if not 0 < self.sla_target_pct < 100:
            raise SimConfigError(f"sla_target_pct must be within 0..100 (exclusive), got {self.sla_target_pct}")
        for name in ("short_abandon_share", "ring_no_answer_share", "mid_logout_share", "spy_share",
                     "spy_unended_share", "recording_share", "recording_restart_share",
                     "recording_unstopped_share", "abandon_without_queue_out_share", "ivr_hangup_share",
                     "retry_share", "callback_share", "callback_window_edge_share", "transfer_share",
                     "internal_no_answer_share", "lost_call_end_share", "pause_rename_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise SimConfigError(f"{name} must be within 0..1, got {getattr(self, name)}")

    @property
    def start_s(self) -> int:
        return int(self.start.timestamp())

    @property
    def end_s(self) -> int:
        return self.start_s + int(round(self.hours * 3600))


def parse_start(text: str) -> dt.datetime:
    """``2026-11-02T08:00`` (UTC unless an offset is given) -> aware datetime."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SimConfigError(f"start {text!r}: expected an ISO date-time such as 2026-11-02T08:00") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


#: A live-only period starts this many seconds after the command does (its start-up).
LIVE_LEAD_S = 2

#: The CLI's own flags for SimConfig fields (the rest go through ``--set NAME=VALUE``).
_FLAGS = ("seed", "queues", "agents", "calls_per_hour", "end_mode")


def scenario(flags: Mapping[str, Any], settings: Iterable[str] = (), *, live: bool = False,
             now: float | None = None) -> SimConfig:
    """The ``simulate`` command's scenario: its flags (``seed``, ``start``, ``hours``,
    ``live_hours``, ...), ``NAME=VALUE`` settings of any other field, and the period.

    Without ``start`` the period ends ``now``: it starts ``hours`` before it and, when ``live``
    (a target to send to), runs ``live_hours`` (default 1) beyond it. ``hours`` 0 with ``live``:
    live only, from :data:`LIVE_LEAD_S` on. With ``start`` it is ``hours`` long from there.
    """
    fields = {f.name: f for f in dataclasses.fields(SimConfig)}
    values: dict[str, Any] = {k: flags[k] for k in _FLAGS if flags.get(k) is not None}
    for item in settings:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields or name in ("start", "hours"):
            known = ", ".join(n for n in fields if n not in ("start", "hours"))
            raise SimConfigError(f"--set {item!r}: expected NAME=VALUE with NAME one of: {known}")
        values[name] = _parse(name, text.strip(), type(getattr(SimConfig, name)))
    hours = 1.0 if flags.get("hours") is None else float(flags["hours"])
    live_hours = flags.get("live_hours")
    if flags.get("start") is not None:
        if live_hours is not None:
            raise SimConfigError("--live-hours: the live part follows a period that ends now; with --start, "
                                 "--hours is the whole period (what is due is imported, the rest sent live)")
        return SimConfig(start=parse_start(flags["start"]), hours=hours, **values)
    if live_hours is not None and not live:
        raise SimConfigError("--live-hours needs --target (the service to send the live part to)")
    live_hours = (1.0 if live else 0.0) if live_hours is None else float(live_hours)
    if hours < 0 or live_hours < 0:
        raise SimConfigError(f"hours must be >= 0, got --hours {hours:g} --live-hours {live_hours:g}")
    if hours + live_hours <= 0:
        raise SimConfigError("hours must be positive: nothing to simulate")
    now_s = math.floor(time.time() if now is None else now)
    # Live only: from two seconds on, so nothing is due (to import) when sending starts.
    start = now_s - round(hours * 3600) if hours > 0 else now_s + LIVE_LEAD_S
    return SimConfig(start=dt.datetime.fromtimestamp(start, dt.timezone.utc), hours=hours + live_hours, **values)


def _parse(name: str, text: str, kind: type) -> Any:
    try:
        if name == "hourly_profile":  # 24 comma-separated values, or one for every hour
            values = tuple(float(v) for v in text.split(","))
            return values * 24 if len(values) == 1 else values
        if kind is bool:
            return {"1": True, "true": True, "0": False, "false": False}[text.lower()]
        return kind(text)
    except (KeyError, ValueError):
        raise SimConfigError(f"--set {name}={text!r}: expected a {kind.__name__}") from None
