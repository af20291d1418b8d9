"""The ``pbx.events`` row, from a decoded webhook to the table, in one place.

A webhook's way through the service reads top to bottom here: its row
(:func:`to_row`, with an id from :func:`new_event_id` and the arrival clock
:func:`now_ms`), the spool record that row is made durable as
(:func:`encode_record` / :func:`decode_record`), and the insert that stores it
(:class:`EventsInsert`, shared by the service's writer and the importer).

One form of the row everywhere: a tuple in :data:`COLUMNS` order whose
``event_id`` is the UUID's 128-bit integer and whose ``received_at`` is epoch
milliseconds (UTC). Those are what the driver writes to ``UUID`` and
``DateTime64(3)`` columns as they are, and what the spool stores; a
``uuid.UUID`` or a ``datetime`` per row cost a conversion each on the hot path.
Readable forms exist only at the edges (:func:`ms_to_datetime`,
:func:`datetime_to_ms`): test scenarios, reports, the quarantine. Many rows
at a time (the importer) travel as an Arrow record batch of
:func:`arrow_schema`, the same columns column by column.

The table itself is ``sql/0001_create_events.sql`` (plus ``0091``);
``tests/e2e/views/test_schema.py`` pins that these declarations match it.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import os
import random
import time
from collections.abc import Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import msgspec
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.insert import InsertContext

from ingest.events.spec import EVENTS, PARAMS, Event

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "COLUMNS",
    "COLUMN_TYPES",
    "DATABASE",
    "TABLE",
    "EventsInsert",
    "Remap",
    "Row",
    "arrow_schema",
    "datetime_to_ms",
    "decode_record",
    "encode_record",
    "ms_to_datetime",
    "new_event_id",
    "now_ms",
    "spool_meta",
    "to_row",
]

#: The database every object of the schema lives in, and the events table.
DATABASE = "pbx"
TABLE = f"{DATABASE}.events"

#: The insert columns, in order.
COLUMNS: tuple[str, ...] = ("event_id", "received_at", "event", "source", *PARAMS, "extra", "seq")

#: Parameters stored as ``LowCardinality(String)``: few distinct values each.
_LOW_CARDINALITY = frozenset({"caller_type", "direction", "queue_name", "reason", "state_name", "spy_type"})

#: The columns' types as the DDL declares them (so inserts need no DESCRIBE round trip).
COLUMN_TYPES: tuple[str, ...] = (
    "UUID",
    "DateTime64(3, 'UTC')",
    "LowCardinality(String)",
    "LowCardinality(String)",
    *("LowCardinality(String)" if p in _LOW_CARDINALITY else "String" for p in PARAMS),
    "Map(String, String)",
    "UInt64",
)

#: A ``pbx.events`` row: values in :data:`COLUMNS` order (see the module doc for the forms).
Row = tuple[Any, ...]


@functools.cache
def arrow_schema() -> pa.Schema:
    """The row as Arrow, for many rows at a time: :data:`COLUMNS` in order.

    ``event_id`` is the UUID's 16 bytes, big endian (``uuid.UUID.bytes``: how
    the engine reads a 16-byte binary into a ``UUID`` column); ``received_at``
    epoch milliseconds; ``event`` and ``source`` dictionary-encoded (the engine
    takes them as ``LowCardinality`` as they are). ``seq`` is the arrival order
    (for an imported line its place in the log).
    """
    import pyarrow as pa  # here, not at the top: the webhook service never needs it

    special = {
        "event_id": pa.binary(16),
        "received_at": pa.timestamp("ms", tz="UTC"),
        "event": pa.dictionary(pa.int8(), pa.string()),
        "source": pa.dictionary(pa.int8(), pa.string()),
        "extra": pa.map_(pa.string(), pa.string()),
        "seq": pa.uint64(),
    }
    return pa.schema([(name, special.get(name, pa.string())) for name in COLUMNS])


# ---- time: the arrival clock and the one epoch-ms conversion ------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def now_ms() -> int:
    """The arrival clock: now, UTC, in epoch milliseconds (the column's precision)."""
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int) -> dt.datetime:
    """Epoch milliseconds -> an aware UTC datetime (exact: integer arithmetic)."""
    return _EPOCH + dt.timedelta(milliseconds=ms)


def datetime_to_ms(when: dt.datetime) -> int:
    """A datetime (naive = UTC) -> epoch milliseconds, truncated to the millisecond."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return (when - _EPOCH) // dt.timedelta(milliseconds=1)


# ---- ids ------------------------------------------------------------------------------

# Random version-4 UUIDs from a private generator seeded from the OS, reseeded in every
# forked child. uuid.uuid4() reads os.urandom each call (a syscall, three times slower);
# these ids only need to be unique, not unpredictable. Private: seeding the global
# ``random`` (a simulator's seed, a test's) must not repeat ids.
_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)
_getrandbits = _rng.getrandbits
# The version (4) and RFC 4122 variant bits, as uuid.UUID(int=..., version=4) sets them.
_ID_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_ID_SET = (0x8000 << 48) | (4 << 76)


def new_event_id() -> int:
    """A fresh random version-4 UUID, as its integer (``uuid.UUID(int=...)`` reads it back)."""
    return (_getrandbits(128) & _ID_CLEAR) | _ID_SET


# ---- arrival order ------------------------------------------------------------------------

# ``seq``: the order rows were made in, the tie-breaker of events stamped with the same
# received_at (docs/metrics.md#event-time-and-ties). A counter started at the process's
# start time in nanoseconds: increasing in the order rows are stamped (a webhook's row is
# made as it is stamped with the arrival clock), and later processes start above earlier
# ones (they make far fewer than 10^9 rows a second). Reset in forked children, which
# stamp rows of their own. Imported rows get theirs from their line instead
# (ingest.backfill.rows.line_seq: the file's first second in ns plus the line number).
_seq = itertools.count(time.time_ns())


def _reset_seq() -> None:
    global _seq
    _seq = itertools.count(time.time_ns())


os.register_at_fork(after_in_child=_reset_seq)


# ---- the row --------------------------------------------------------------------------


def _row_getter(cls: type[Event]) -> itemgetter[tuple[Any, ...]]:
    """Picks the :data:`PARAMS` values out of ``(*astuple(ev), "")``: a field's value, or the
    trailing ``""`` for a parameter this event does not have."""
    names = [f.name for f in msgspec.structs.fields(cls)]
    return itemgetter(*(names.index(p) if p in names else len(names) for p in PARAMS))


_ROW_GETTERS: dict[type[Event], itemgetter[tuple[Any, ...]]] = {cls: _row_getter(cls) for cls in EVENTS.values()}
_astuple = msgspec.structs.astuple


def to_row(event: str, ev: Event, received_at: int, source: str = "http", event_id: int | None = None,
           seq: int | None = None) -> Row:
    """The row of a decoded event; ``received_at`` in epoch ms, a fresh id and the next
    arrival order (``seq``) unless given."""
    return (
        new_event_id() if event_id is None else event_id,
        received_at,
        event,
        source,
        *_ROW_GETTERS[type(ev)]((*_astuple(ev), "")),
        ev.extra,
        next(_seq) if seq is None else seq,
    )


# ---- the spool record of a row ----------------------------------------------------------
#
# msgpack of the row with the id as its 16 bytes (big endian, as uuid.UUID.bytes). Every
# spool segment starts with a meta record naming the columns (spool_meta), so records
# written by an older version, with other columns, replay by name (Remap).

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def encode_record(row: Row) -> bytes:
    """A row as a spool record."""
    return _encode((row[0].to_bytes(16, "big"), *row[1:]))


def decode_record(payload: bytes) -> list[Any]:
    """A spool record back to a row (as a list)."""
    row = _decode(payload)
    if not isinstance(row, list) or len(row) < 2 or not isinstance(row[0], bytes) or len(row[0]) != 16:
        raise ValueError("not a spooled events row")
    row[0] = int.from_bytes(row[0], "big")
    return row


def spool_meta(columns: Sequence[str] = COLUMNS) -> bytes:
    """The meta record of a spool segment: the columns its records hold."""
    return msgspec.json.encode({"format": 1, "columns": list(columns)})


def meta_columns(meta: bytes) -> list[str] | None:
    """The columns a segment's meta record names (None: unreadable, assume the current ones)."""
    try:
        return list(msgspec.json.decode(meta)["columns"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return None


#: The value of a column missing from an old spool record, where it is not "".
_EMPTY: dict[str, Any] = {"extra": {}, "seq": 0}


class Remap:
    """Maps rows spooled with other columns (an older version) onto the current ones.

    A column the old rows lack gets its empty value (``seq``: 0, as for rows
    stored before it existed); an old column that no
    longer exists is kept in ``extra`` (when non-empty), so nothing is lost.
    """

    def __init__(self, old: Sequence[str], new: Sequence[str] = COLUMNS) -> None:
        self.index = {name: i for i, name in enumerate(old)}
        self.new = list(new)
        self.dropped = [(i, name) for i, name in enumerate(old) if name not in set(new)]

    def __call__(self, row: list[Any]) -> list[Any]:
        out = [row[self.index[c]] if c in self.index else _EMPTY.get(c, "") for c in self.new]
        if self.dropped and "extra" in self.new:
            extra = dict(out[self.new.index("extra")])
            extra.update((name, str(row[i])) for i, name in self.dropped if row[i] not in ("", None))
            out[self.new.index("extra")] = extra
        return out


# ---- the insert ---------------------------------------------------------------------------

#: The types the insert declares: ``LowCardinality`` columns travel as plain ``String``.
#: clickhouse-connect builds LowCardinality dictionaries in Python, which measured at half
#: the insert's cost; the engine converts on insert (input_format_native_allow_types_conversion).
INSERT_TYPES: tuple[str, ...] = tuple(t.replace("LowCardinality(String)", "String") for t in COLUMN_TYPES)

#: Settings of every insert into ``pbx.events``.
INSERT_SETTINGS: dict[str, Any] = {
    "input_format_native_allow_types_conversion": 1,
    # Explicit: a server profile with insert_deduplicate = 0 would make a retried batch a duplicate.
    "insert_deduplicate": 1,
    # A repeated block is dropped by the views fed from it too, not only by the table.
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}


class EventsInsert:
    """The one insert into ``pbx.events``: column-oriented rows under a deduplication token.

    Two forms of the same insert (columns, settings, token): Python sequences
    (:meth:`__call__`, the service's writer) and an Arrow batch (:meth:`arrow`,
    the importer).

    A clickhouse-connect insert context built once (columns, declared types,
    settings) and reused for every batch, as the driver's ``InsertContext`` is
    meant to be: the same block of rows under the same token is stored once,
    which is what makes the writer's replays and the importer's retries safe.
    Used from one thread at a time; ``client`` may change between calls (the
    writer reconnects after an outage).

    ``wait_for_shards``: on a cluster ``pbx.events`` is a Distributed table; wait
    until the rows are on their shards before returning
    (``distributed_foreground_insert``), so a query right after sees them (the
    importer's "already stored?" check needs that).
    """

    def __init__(self, *, wait_for_shards: bool = False) -> None:
        self._settings = dict(INSERT_SETTINGS)
        if wait_for_shards:
            self._settings["distributed_foreground_insert"] = 1
        self._context: InsertContext | None = None

    def __call__(self, client: Client, columns: Sequence[Sequence[Any]], token: str) -> None:
        """Insert ``columns`` (one sequence per column of :data:`COLUMNS`) under ``token``."""
        context = self._context
        if context is None:
            context = self._context = client.create_insert_context(
                TABLE, list(COLUMNS), column_type_names=list(INSERT_TYPES), column_oriented=True,
                settings=self._settings,
            )
        context.settings["insert_deduplication_token"] = token
        context.data = columns
        client.insert(context=context)

    def arrow(self, client: Client, batch: pa.RecordBatch | pa.Table, token: str) -> dict[str, str]:
        """Insert an Arrow batch of :func:`arrow_schema` under ``token`` (its columns of
        :data:`COLUMNS`; the engine reads Arrow in C++, no per-value work in Python). Returns
        the answer's summary (``X-ClickHouse-Summary``; ``{}`` where there is none)."""
        import pyarrow as pa

        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        summary = client.insert_arrow(TABLE, table.select(list(COLUMNS)),
                                      settings={**self._settings, "insert_deduplication_token": token})
        return getattr(summary, "summary", None) or {}
