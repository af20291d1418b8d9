"""ClickHouse's HTTP interface, served by ``serve`` on the embedded engine it holds (issue 11).

Grafana's ClickHouse plugin, clickhouse-connect, @clickhouse/client, clickhouse-client and
DBeaver speak to a ClickHouse server over HTTP; this package answers them the same way from the
process that owns the embedded engine, so the default install needs no ClickHouse server and
no one has to stop ingestion to query (docs/querying.md).

* ``server``: its own HTTP server (uvicorn, in a thread, with its own loop and query threads),
  started and stopped by ``serve`` beside the webhook server;
* ``http``: the protocol (requests, parameters, credentials, compression, answers, errors);
* ``engine``: a request on the engine (a connection of its own, limits, settings, streaming);
* ``access``: the read-only user and the owner, and the checks of what a reader may run;
* ``native``: Native answers in the layout of the client's protocol revision;
* ``errors``: ClickHouse's error shapes and statuses;
* ``inserts``: an INSERT's data after its query (binary formats too), for the owner;
* ``client``: the commands' way in (``sql``, ``migrate``, ``import`` find the service that
  holds a data directory and go through it, issue 12).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.querying.server import QueryServer

__all__ = ["QueryServer"]


def __getattr__(name: str) -> Any:
    # Lazy: the commands that only talk to a running service (``client``) need neither the
    # engine nor the server (importing chDB alone takes ~0.3 s).
    if name == "QueryServer":
        from ingest.querying.server import QueryServer

        return QueryServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
