"""``sql`` and ``migrate`` beside a running ``serve`` (issue 12).

On an embedded data directory that a ``serve`` holds, the commands go through that service's
ClickHouse HTTP interface (``ingest.querying.client``): ``sql`` with the user's rights (the
owner's key if the user can read the service's file, else the read-only user), ``migrate``
as the owner, saying so. With no service (or a dead one's file), they open the engine itself.
``import`` does the same inside ``ingest.backfill.importer.run``.
"""

from __future__ import annotations

import sys

from ingest.config import Settings
from ingest.querying.client import Connection, Reader, connect

__all__ = ["engine_connection"]


def engine_connection(settings: Settings, command: str) -> Connection:
    """The connection ``command`` runs on; what goes through a service is said on stderr (but
    for ``sql``, whose output may be piped: it says nothing unless it runs as a reader)."""
    conn = connect(settings.clickhouse_url, Reader.of(settings))
    if conn.reader:
        print(f"pbx-analytics {command}: the service holding this data directory is another user's: running as "
              f"its read-only user {settings.query_user!r} at {conn.service.url} (writes need that user's "
              "service key: run this as that user)", file=sys.stderr)
    elif conn.service is not None and command != "sql":
        print(f"pbx-analytics {command}: through the running service (pid {conn.service.pid}, "
              f"{conn.service.url})", file=sys.stderr)
    return conn
