"""The PBX webhook specification as code.

Every webhook the PBX sends (``../shared/spec/pbx-webhooks.txt``) is one
msgspec Struct below. This module is the single place that lists the events,
their parameters and which parameters are required; the HTTP routes, the
access-log importer, the simulator and the ``pbx.events`` column list are all
derived from it.

All parameters are strings: phone numbers keep leading zeros and ``+``, and
IDs such as ``call_id`` (``1541078811.98``) are not numbers we do arithmetic on.
A parameter the PBX did not send is stored as the empty string.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "AGENT_EVENTS",
    "CALL_EVENTS",
    "EVENTS",
    "PARAMS",
    "Event",
    "required_params",
]


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every webhook.

    ``kw_only`` lets a subclass declare a required field after inherited
    optional ones, which is how the spec reads. Unknown parameters are not
    fields: the decoder keeps them in ``extra`` so a PBX update loses nothing.
    """

    extra: dict[str, str] = {}


class CallEvent(Event, kw_only=True, frozen=True):
    """A call-scoped webhook: ``call_id`` is required.

    ``cel_id`` is the PBX's "unique event ID", but the spec's own examples
    repeat it across one call's events, so it is stored, never used as a key.
    """

    call_id: str
    cel_id: str = ""
    custom_call_id: str = ""


class AgentEvent(Event, kw_only=True, frozen=True):
    """An agent-scoped webhook: ``userid`` is required."""

    userid: str


class StartCall(CallEvent, kw_only=True, frozen=True):
    """Start call: the call came from the provider to the PBX and starts to route."""

    caller_type: str = ""  # internal, originate, external
    caller_num: str = ""
    caller_userid: str = ""  # only for caller_type internal
    dialed_num: str = ""
    target_num: str = ""  # deprecated duplicate of dialed_num; still stored


class QueueIn(CallEvent, kw_only=True, frozen=True):
    """The call has entered the queue."""

    caller_num: str = ""
    dialed_num: str = ""
    queue_name: str = ""


class QueueOut(CallEvent, kw_only=True, frozen=True):
    """The call has left the queue."""

    queue_name: str = ""


class _Dial(CallEvent, kw_only=True, frozen=True):
    """Parameters shared by the ringing and answering webhooks."""

    caller_num: str = ""
    caller_exten: str = ""
    caller_name: str = ""
    dialed_num: str = ""
    dialed_exten: str = ""
    line_num: str = ""
    line_name: str = ""
    line_userid: str = ""
    direction: str = ""  # internal, incoming, outgoing


class StartIntDial(_Dial, kw_only=True, frozen=True):
    """Start of the call ringtone on an internal line (the PBX sends queue_name twice)."""

    caller_type: str = ""  # external, originate, dialer
    queue_name: str = ""  # only for caller_type external


class StartExtDial(_Dial, kw_only=True, frozen=True):
    """Start of the call ringtone on an external line."""


class AnsweredInternal(_Dial, kw_only=True, frozen=True):
    """The call has been picked up by an internal line (line_userid is the agent)."""

    caller_type: str = ""  # external, originate, dialer, internal


class AnsweredExternal(_Dial, kw_only=True, frozen=True):
    """The call has been picked up by the remote side."""


class HangupInternal(CallEvent, kw_only=True, frozen=True):
    """Hang-up of the call on an internal line."""

    line_num: str = ""
    line_userid: str = ""


class CallEnd(CallEvent, kw_only=True, frozen=True):
    """End of the call."""


class PbxAgentLogin(AgentEvent, kw_only=True, frozen=True):
    """Agent has logged in."""

    exten: str = ""


class PbxAgentLogout(AgentEvent, kw_only=True, frozen=True):
    """Agent has logged out."""

    reason: str = ""


class PbxAgentSetState(AgentEvent, kw_only=True, frozen=True):
    """Agent has changed state (state_name is free text set on the PBX)."""

    state_name: str = ""


class _Spy(CallEvent, kw_only=True, frozen=True):
    """Wiretapping parameters (spy_type: spy, bargein, whisper)."""

    spying_exten: str = ""
    spying_target_exten: str = ""
    spying_userid: str = ""
    spying_target_userid: str = ""
    spy_type: str = ""


class CallSpyStart(_Spy, kw_only=True, frozen=True):
    """Call wiretapping started."""


class CallSpyEnd(_Spy, kw_only=True, frozen=True):
    """End of call wiretapping."""


class ExtenPaused(CallEvent, kw_only=True, frozen=True):
    """An extension was paused because it did not answer a queue call."""

    exten: str = ""
    reason: str = ""  # unanswered_queue_call


class CallRecordingStart(CallEvent, kw_only=True, frozen=True):
    """Start of call recording."""


class CallRecordingStop(CallEvent, kw_only=True, frozen=True):
    """Stop of call recording."""


#: Endpoint name (the URL path) -> its Struct, in the spec's order.
EVENTS: dict[str, type[Event]] = {
    "start_call": StartCall,
    "queue_in": QueueIn,
    "queue_out": QueueOut,
    "start_int_dial": StartIntDial,
    "start_ext_dial": StartExtDial,
    "answered_internal": AnsweredInternal,
    "answered_external": AnsweredExternal,
    "hangup_internal": HangupInternal,
    "call_end": CallEnd,
    "pbx_agent_login": PbxAgentLogin,
    "pbx_agent_logout": PbxAgentLogout,
    "pbx_agent_set_state": PbxAgentSetState,
    "call_spy_start": CallSpyStart,
    "call_spy_end": CallSpyEnd,
    "exten_paused": ExtenPaused,
    "call_recording_start": CallRecordingStart,
    "call_recording_stop": CallRecordingStop,
}

CALL_EVENTS = frozenset(name for name, cls in EVENTS.items() if issubclass(cls, CallEvent))
AGENT_EVENTS = frozenset(name for name, cls in EVENTS.items() if issubclass(cls, AgentEvent))


def _params() -> tuple[str, ...]:
    """Every parameter of every event, in first-seen order (the events table's columns)."""
    seen: dict[str, None] = {}
    for cls in EVENTS.values():
        for field in msgspec.structs.fields(cls):
            if field.name != "extra":
                seen.setdefault(field.name, None)
    return tuple(seen)


#: All webhook parameter names: one ``pbx.events`` column each.
PARAMS: tuple[str, ...] = _params()


def required_params(cls: type[Event]) -> tuple[str, ...]:
    """The parameters an event cannot be stored without."""
    return tuple(f.name for f in msgspec.structs.fields(cls) if f.required)
