"""The simulator's records: what it emits (:class:`SimEvent`) and the state of its calls and agents."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from ingest.simulation.config import SimConfig

__all__ = ["Agent", "Call", "SimEvent", "Simulation", "Visit"]


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


@dataclasses.dataclass(eq=False)
class Visit:
    call_id: str
    queue_name: str
    entered_at: int
    left_at: int | None = None
    answered_at: int | None = None
    agent: str | None = None


@dataclasses.dataclass(eq=False)
class Call:
    call_id: str
    custom_id: str
    caller_num: str
    did: str  # the number dialled: the queue's (inbound), the remote one (outbound), an extension (internal)
    started_at: int = 0
    kind: str = "inbound"  # inbound, outbound, internal
    queue: str = ""
    state: str = "ivr"  # ivr, waiting, ringing, talk, dialing (outbound, internal), done
    visit: Visit | None = None
    visits: list[Visit] = dataclasses.field(default_factory=list)
    ringing_agent: Agent | None = None
    overflowed: bool = False
    patience_until: int = 0
    answered_at: int | None = None
    ended_at: int | None = None
    rec_events: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    #: Every answer (answered_internal / answered_external): (time, agent).
    answers: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    spied: bool = False
    transferred: bool = False
    #: The agent holding the call now, and the number of its talk leg (a stale plan checks it).
    holder: Agent | None = None
    leg: int = 0


@dataclasses.dataclass(eq=False)
class Agent:
    userid: str
    exten: str
    display: str
    skills: tuple[str, ...]
    logged_in: bool = False
    ready: bool = True
    call: Call | None = None  # on a call (talking or dialling out)
    ringing: Call | None = None
    blocked_until: int = 0
    free_since: int = 0
    pending: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    pause_token: int = 0
    last_state_t: int = -1
    lunched: bool = False
