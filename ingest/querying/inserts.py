"""An INSERT whose data follows its query in the request: ``INSERT INTO t (a, b) FORMAT Native``
then the rows, in any input format, binary ones included.

This is how ClickHouse clients insert over HTTP: clickhouse-connect sends the query and a
Native block in the body (``INSERT ... FORMAT Native\\n<block>``) but an Arrow table's query in
``?query=`` (what ``import`` sends), as do clickhouse-go and @clickhouse/client, with the data
in the body; the server reads ``?query=``, a line break and the body as one stream
(:class:`QueryStream`, which never joins them). Where the data starts is ClickHouse's
parser's rule (``ParserInsertQuery``): after the format's name, spaces and tabs, then one
``\\r`` and one ``\\n`` if they are there.

Only the local owner inserts (``access``). The query's text is found here by that rule and
then confirmed by the engine's own parse (``Engine``: ``formatQuery`` must end with the same
``FORMAT`` and ``EXPLAIN AST`` must show an ``InsertQuery`` without a ``SELECT``); the data is
handed to the engine as bytes through chDB's streaming insert, never decoded as text. Anything
else (``INSERT ... VALUES``, a query with no data) runs as a query, as before.

The answer to such an insert says how much its client should yield to the webhooks
(``pbx_import_yield`` in ``X-ClickHouse-Summary``, ``ingest.backfill.sink``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["InsertData", "QueryStream", "candidates", "is_insert"]

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


class QueryStream:
    """What ClickHouse parses for an HTTP request: ``?query=``, a line break, then the body,
    as one stream, without joining them (the body may be an import's tens of MB)."""

    def __init__(self, query: str, body: bytes | bytearray) -> None:
        text = query.encode()
        #: The stream's part before the body (the URL's query and its line break, if both).
        self.query = text + b"\n" if text and body else text
        self.body = body
        #: The stream's first bytes, where its query ends (data past them has no query before it).
        self.head = self.query + memoryview(body)[:MAX_QUERY_BYTES]  # one copy, of at most 1 MB

    def after(self, start: int) -> memoryview:
        """The stream from byte ``start`` of :attr:`head` to its end."""
        if start >= len(self.query):
            return memoryview(self.body)[start - len(self.query) :]
        return memoryview(self.query[start:] + self.body)  # data begun in the URL: rare, copied

    def text(self) -> str:
        return (self.query + self.body).decode("utf-8", "replace")


def is_insert(raw: bytes) -> bool:
    """The statement starts with INSERT (after spaces and comments)."""
    return _LEADING.match(raw) is not None


def candidates(stream: QueryStream) -> Iterator[InsertData]:
    """Where an INSERT's query may end and its data start, first the earliest; nothing if the
    stream is not an INSERT. The engine confirms which one (if any) is the query."""
    head = stream.head
    if not is_insert(head):
        return
    for match in _FORMAT.finditer(head):
        try:
            sql = head[: match.end()].decode()
        except UnicodeDecodeError:  # past the query: the data is binary
            return
        start = match.end()
        while start < len(head) and head[start] in b" \t\f":
            start += 1
        if head[start : start + 1] == b"\r":
            start += 1
        if head[start : start + 1] == b"\n":
            start += 1
        yield InsertData(sql, match[1].decode(), stream.after(start))

