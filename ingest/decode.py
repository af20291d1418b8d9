"""Request parameters -> an event Struct -> a ``pbx.events`` row.

The one decoding path: the HTTP service and the access-log importer both call
:func:`decode`, so a webhook means the same thing whichever way it arrives.

Quirks of real PBXs handled here (see ``docs/webhooks.md``):

* a parameter sent twice with the same value (``start_int_dial`` sends
  ``queue_name`` twice) is one value; a repeat with a *different* value is
  kept in ``extra`` as ``name[2]``, ``name[3]``... so nothing is lost;
* parameters the spec does not list are kept in ``extra``;
* a required parameter that is absent or empty is an error naming it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from ingest.spec import EVENTS, PARAMS, Event, required_params

__all__ = ["COLUMNS", "COLUMN_TYPES", "DecodeError", "decode", "parse_query", "to_row"]

#: The ``pbx.events`` insert columns, in order (``sql/0001_create_events.sql``).
COLUMNS: tuple[str, ...] = ("event_id", "received_at", "event", "source", *PARAMS, "extra")

#: Declared insert types, so inserts need no DESCRIBE round trip. Must match the DDL;
#: ``tests/test_schema.py`` pins that.
COLUMN_TYPES: tuple[str, ...] = (
    "UUID",
    "DateTime64(3, 'UTC')",
    "LowCardinality(String)",
    "LowCardinality(String)",
    *(("LowCardinality(String)" if p in {"caller_type", "direction", "queue_name", "reason",
                                         "state_name", "spy_type"} else "String") for p in PARAMS),
    "Map(String, String)",
)


class DecodeError(ValueError):
    """A webhook that cannot be stored. ``param`` names the offending parameter."""

    def __init__(self, reason: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.param = param


class _Shape(msgspec.Struct, frozen=True):
    cls: type[Event]
    fields: frozenset[str]
    required: tuple[str, ...]


_SHAPES: dict[str, _Shape] = {
    name: _Shape(
        cls=cls,
        fields=frozenset(f.name for f in msgspec.structs.fields(cls) if f.name != "extra"),
        required=required_params(cls),
    )
    for name, cls in EVENTS.items()
}


def parse_query(raw: str, max_params: int = 200) -> list[tuple[str, str]]:
    """Split a query string or form body into (name, value) pairs, in order.

    Blank values are kept (``reason=`` is a value); undecodable percent-escapes
    become U+FFFD rather than failing the whole request.
    """
    try:
        return parse_qsl(raw, keep_blank_values=True, errors="replace", max_num_fields=max_params)
    except ValueError as exc:  # parse_qsl raises on too many fields
        raise DecodeError("too_many_params", f"more than {max_params} parameters") from exc


def json_pairs(body: bytes) -> list[tuple[str, str]]:
    """A JSON object body as (name, value) pairs; scalar values become strings."""
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise DecodeError("bad_body", f"body is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodeError("bad_body", "JSON body must be an object of parameters")
    pairs = []
    for key, value in obj.items():
        if isinstance(value, str):
            pairs.append((key, value))
        elif value is None:
            pairs.append((key, ""))
        elif isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, (int, float)):
            pairs.append((key, str(value)))
        else:
            raise DecodeError("bad_param", f"parameter '{key}' must be a string or number", key)
    return pairs


def decode(event: str, pairs: Iterable[tuple[str, str]]) -> Event:
    """Build the Struct of ``event`` from its parameters.

    Raises :class:`DecodeError` for an unknown event or a missing required
    parameter; never for extra or repeated parameters.
    """
    shape = _SHAPES.get(event)
    if shape is None:
        raise DecodeError("unknown_event", f"unknown event '{event}'")
    known: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for name, value in pairs:
        target = known if name in shape.fields else extra
        first = target.get(name)
        if first is None:
            target[name] = value
        elif first != value:
            n = 2
            while f"{name}[{n}]" in extra:
                n += 1
            extra[f"{name}[{n}]"] = value
    for name in shape.required:
        if not known.get(name):
            raise DecodeError("missing_param", f"missing required parameter '{name}' for {event}", name)
    if extra:
        known["extra"] = extra
    return msgspec.convert(known, shape.cls)


_ROW_GETTERS: dict[type[Event], tuple[str | None, ...]] = {
    cls: tuple(p if p in _SHAPES[name].fields else None for p in PARAMS) for name, cls in EVENTS.items()
}


def to_row(
    event: str,
    ev: Event,
    received_at: dt.datetime,
    source: str = "http",
    event_id: uuid.UUID | None = None,
) -> tuple[Any, ...]:
    """The ``pbx.events`` row (in :data:`COLUMNS` order) of a decoded event."""
    return (
        event_id or uuid.uuid4(),
        received_at,
        event,
        source,
        *[getattr(ev, p) if p else "" for p in _ROW_GETTERS[type(ev)]],
        ev.extra,
    )


def utc_now_ms() -> dt.datetime:
    """Arrival time: UTC, truncated to the millisecond (the column's precision)."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
