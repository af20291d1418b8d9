"""Helpers for the analytics-view scenarios: write events, read views both ways.

Events go through the one decoding path (``ingest.events.decode.decode`` /
``to_row``) so a test event is stored exactly as a webhook would be, and get
their arrival order (``seq``) from the order they are inserted in. Refreshing
and settling the views is the shared harness's (``ingest.testing``).

Every contract view is complete at once (stored rows plus, computed live, what
is not stored yet): :func:`read` checks that by reading a view before and
after :func:`ingest.testing.settle_views` has stored everything.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from ingest.events.decode import decode
from ingest.events.table import COLUMN_TYPES, COLUMNS, to_row
from ingest.testing import query_dicts, settle_views

__all__ = ["T0", "at", "columns", "ev", "insert", "read"]

#: A fixed day for scenarios: 2026-11-02 09:00:00 UTC (an interval boundary).
T0 = dt.datetime(2026, 11, 2, 9, 0, 0)

#: Arrival order of the events the tests insert (``seq``), across tests.
_SEQ = itertools.count(1)


def at(seconds: float) -> dt.datetime:
    """T0 plus ``seconds`` (ms precision)."""
    return T0 + dt.timedelta(milliseconds=round(seconds * 1000))


def ev(event: str, when: float | dt.datetime, source: str = "http", **params: str) -> tuple[Any, ...]:
    """A ``pbx.events`` row for ``event`` at ``when`` (seconds after T0, or a datetime)."""
    received_at = when if isinstance(when, dt.datetime) else at(when)
    struct = decode(event, list(params.items()))
    return to_row(event, struct, received_at.replace(tzinfo=dt.timezone.utc), source, uuid.uuid4())


def insert(client: Client, events: Iterable[tuple[Any, ...]]) -> None:
    """Insert one block of events (one insert = one batch of the service), arrived in list order."""
    data = [(*e[:-1], next(_SEQ)) for e in events]
    if data:
        client.insert("pbx.events", data, column_names=list(COLUMNS), column_type_names=list(COLUMN_TYPES),
                      settings={"insert_deduplication_token": str(uuid.uuid4())})


def read(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rows of ``sql`` as every reader sees them at once, which must be the rows once all is stored.

    Read first as is (what is not stored yet computed live), then after
    :func:`~ingest.testing.settle_views`; returns the rows.
    """
    live = query_dicts(client, sql, parameters)
    settle_views(client)
    stored = query_dicts(client, sql, parameters)
    # (in any order: a query without ORDER BY may list them differently)
    assert sorted(map(repr, stored)) == sorted(map(repr, live)), f"stored and live differ for {sql}: {stored} != {live}"
    return live


def columns(client: Client, table: str) -> Sequence[tuple[str, str]]:
    """(name, type) of ``table``'s columns, in order."""
    return client.query(f"DESCRIBE TABLE {table}").result_rows
