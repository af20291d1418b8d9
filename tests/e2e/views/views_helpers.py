"""Helpers for the analytics-view tests: write events, refresh, read views.

Events go through the one decoding path (``ingest.events.decode.decode`` /
``to_row``) so a test event is stored exactly as a webhook would be.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from ingest.events.decode import decode
from ingest.events.table import COLUMN_TYPES, COLUMNS, to_row

__all__ = ["REFRESHED_VIEWS", "T0", "at", "ev", "insert", "refresh", "rows"]

#: A fixed day for scenarios: 2026-11-02 09:00:00 UTC (an interval boundary).
T0 = dt.datetime(2026, 11, 2, 9, 0, 0)

#: The refreshable materialized views (15-minute stats, queue_calls and calls history).
REFRESHED_VIEWS = ("pbx.queue_stats_15m_refresh", "pbx.agent_stats_15m_refresh", "pbx.queue_calls_refresh",
                   "pbx.calls_data_refresh")


def at(seconds: float) -> dt.datetime:
    """T0 plus ``seconds`` (ms precision)."""
    return T0 + dt.timedelta(milliseconds=round(seconds * 1000))


def ev(event: str, when: float | dt.datetime, source: str = "http", **params: str) -> tuple[Any, ...]:
    """A ``pbx.events`` row for ``event`` at ``when`` (seconds after T0, or a datetime)."""
    received_at = when if isinstance(when, dt.datetime) else at(when)
    struct = decode(event, list(params.items()))
    return to_row(event, struct, received_at.replace(tzinfo=dt.timezone.utc), source, uuid.uuid4())


def insert(client: Client, events: Iterable[tuple[Any, ...]]) -> None:
    """Insert one block of events (one insert = one batch of the service)."""
    data = list(events)
    if data:
        client.insert("pbx.events", data, column_names=list(COLUMNS), column_type_names=list(COLUMN_TYPES),
                      settings={"insert_deduplication_token": str(uuid.uuid4())})


def refresh(client: Client) -> None:
    """Run the 15-minute views' refresh now and wait for it (what the schedule does every 5 s).

    A scheduled refresh may be running, started before the caller's last
    insert: wait for it first, so the one requested here sees everything.
    """
    for view in REFRESHED_VIEWS:
        client.command(f"SYSTEM WAIT VIEW {view}")
        client.command(f"SYSTEM REFRESH VIEW {view}")
    for view in REFRESHED_VIEWS:
        client.command(f"SYSTEM WAIT VIEW {view}")


def rows(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Query results as dicts (column name -> value)."""
    result = client.query(sql, parameters=parameters)
    return [dict(zip(result.column_names, r)) for r in result.result_rows]


def columns(client: Client, table: str) -> Sequence[tuple[str, str]]:
    """(name, type) of ``table``'s columns, in order."""
    return client.query(f"DESCRIBE TABLE {table}").result_rows
