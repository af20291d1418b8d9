"""An INSERT whose data follows its query in the request: ``INSERT INTO t (a, b) FORMAT Native``
then the rows, in any input format, binary ones included.

This is how ClickHouse clients insert over HTTP: clickhouse-connect sends the query and the
Native block in the body (``INSERT ... FORMAT Native\\n<block>``), clickhouse-go and
@clickhouse/client put the query in ``?query=`` and the data in the body; the server reads
``?query=``, a line break and the body as one stream. Where the data starts is ClickHouse's
parser's rule (``ParserInsertQuery``): after the format's name, spaces and tabs, then one
``\\r`` and one ``\\n`` if they are there.

Only the local owner inserts (``access``). The query's text is found here by that rule and
then confirmed by the engine's own parse (``Engine``: ``formatQuery`` must end with the same
``FORMAT`` and ``EXPLAIN AST`` must show an ``InsertQuery`` without a ``SELECT``); the data is
handed to the engine as bytes through chDB's streaming insert, never decoded as text. Anything
else (``INSERT ... VALUES``, a query with no data) runs as a query, as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["InsertData", "candidates", "is_insert"]

#: Bytes of the request searched for the query's end: a query longer than this has no data.
MAX_QUERY_BYTES = 1 << 20
#: Bytes handed to the engine per call of the streaming insert.
APPEND_BYTES = 4 << 20
_LEADING = re.compile(rb"\A(?:\s|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*INSERT\b", re.IGNORECASE | re.DOTALL)
_FORMAT = re.compile(rb"\bFORMAT\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)


class InsertData(NamedTuple):
    """The query (up to its format's name) and the data after it."""

    sql: str
    format: str
    #: A view into the request (an import's batch is tens of MB: copying it would hold the GIL,
    #: and so the webhooks, for as long).
    data: memoryview


def is_insert(raw: bytes) -> bool:
    """The statement starts with INSERT (after spaces and comments)."""
    return _LEADING.match(raw) is not None


def candidates(raw: bytes | bytearray) -> Iterator[InsertData]:
    """Where an INSERT's query may end and its data start, first the earliest; nothing if
    ``raw`` is not an INSERT. The engine confirms which one (if any) is the query."""
    if not is_insert(raw):
        return
    for match in _FORMAT.finditer(raw, 0, MAX_QUERY_BYTES):
        try:
            sql = raw[: match.end()].decode()
        except UnicodeDecodeError:  # past the query: the data is binary
            return
        start = match.end()
        while start < len(raw) and raw[start] in b" \t\f":
            start += 1
        if raw[start : start + 1] == b"\r":
            start += 1
        if raw[start : start + 1] == b"\n":
            start += 1
        yield InsertData(sql, match[1].decode(), memoryview(raw)[start:])
