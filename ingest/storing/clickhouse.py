"""Connections to ClickHouse: the embedded engine or a server, one code path.

clickhouse-connect's ``get_client(dsn=...)`` opens the embedded chDB engine for
``chdb:///path`` and a server for ``http(s)://`` URLs.
"""

from __future__ import annotations

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from ingest.events.table import DATABASE

__all__ = ["DATABASE", "EngineBusyError", "connect"]


class EngineBusyError(RuntimeError):
    """The embedded engine's data directory is held by another process."""


def connect(dsn: str) -> Client:
    """A client for ``dsn``; explains the embedded engine's one-process rule."""
    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except Exception as exc:
        text = str(exc)
        if dsn.startswith("chdb:") and ("EmbeddedServer" in text or "already initialized" in text):
            raise EngineBusyError(
                f"the embedded engine at {dsn} is in use by another process (a running "
                "`pbx-analytics serve`?). The embedded engine allows one process per data "
                "directory: stop that process first, or run this against a ClickHouse server "
                "(--clickhouse http://user:pass@host:8123/pbx)."
            ) from exc
        raise
