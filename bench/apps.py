"""The apps the benchmarks run, and how each is served.

* ``bare``: the ceiling. The same 17 routes as the service (GET/POST, the
  event in the path), each a handler that reads the query string and answers
  ``200 OK`` without doing anything with it.
* ``naive``: the design the service avoids. Decodes exactly like the service,
  then makes one synchronous clickhouse-connect INSERT per request.
* ``serve-asgi``: the product's ASGI app, ``ingest.receiving.app.create_app``
  with ``Settings.from_env()``, on a plain ASGI server: webhooks answered
  without a framework but through the server's request cycle, and without
  the front door's protocol (its fast path and connection limits). What
  ``serve`` would be on granian, or on uvicorn without the protocol.

``python -m bench.apps APP SERVER PORT`` serves one of them on uvicorn (plain
``uvicorn.Config``, httptools and uvloop) or on granian; the benchmarks start
it as a subprocess. ``serve`` itself is always the real CLI, ``pbx-analytics
serve`` (``bench/_servers.py``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get, route
from litestar.enums import HttpMethod

from ingest.events.spec import EVENTS

__all__ = ["bare_app", "naive_app", "serve_app"]


def _healthz() -> Any:
    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return healthz


def bare_app() -> Litestar:
    """Webhook-shaped routes whose handler does nothing."""

    def webhook_route(event: str) -> Any:
        async def webhook(request: Request[Any, Any, Any]) -> Response[bytes]:
            request.scope["query_string"]  # what the real handler reads first
            return Response(b"OK\n", status_code=200, media_type=MediaType.TEXT)

        return route(f"/{event}", http_method=[HttpMethod.GET, HttpMethod.POST], name=event)(webhook)

    return Litestar(
        route_handlers=[*(webhook_route(e) for e in EVENTS), _healthz()],
        openapi_config=None,
        logging_config=None,
    )


def naive_app() -> Litestar:
    """One synchronous INSERT per request, on the engine of ``PBX_CLICKHOUSE_URL``."""
    from ingest.config import Settings
    from ingest.events.decode import DecodeError, decode, parse_query
    from ingest.events.table import EventsInsert, now_ms, to_row
    from ingest.storing import clickhouse, migrations

    settings = Settings.from_env()
    state: dict[str, Any] = {}
    insert = EventsInsert()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = clickhouse.connect(settings.clickhouse_url)
        migrations.apply_migrations(client)
        state["client"] = client
        try:
            yield
        finally:
            client.close()

    def webhook_route(event: str) -> Any:
        def webhook(request: Request[Any, Any, Any]) -> Response[Any]:
            received_at = now_ms()
            try:
                ev = decode(event, parse_query(request.scope["query_string"].decode("utf-8", "replace")))
            except DecodeError as exc:
                return Response({"error": str(exc)}, status_code=422)
            row = to_row(event, ev, received_at)
            insert(state["client"], list(zip(row)), f"naive-{row[0]}")
            return Response(b"OK\n", status_code=200, media_type=MediaType.TEXT)

        return route(
            f"/{event}", http_method=[HttpMethod.GET, HttpMethod.POST], name=event, sync_to_thread=False
        )(webhook)

    return Litestar(
        route_handlers=[*(webhook_route(e) for e in EVENTS), _healthz()],
        lifespan=[lifespan],
        openapi_config=None,
        logging_config=None,
    )


def serve_app() -> Any:
    """The product's ASGI app, configured from the ``PBX_*`` environment like ``serve``."""
    from ingest.config import Settings
    from ingest.receiving.app import create_app

    return create_app(Settings.from_env())


FACTORIES = {"bare": bare_app, "naive": naive_app, "serve-asgi": serve_app}


def run(app: str, server: str, port: int) -> None:
    if server == "uvicorn":
        import uvicorn

        # uvicorn's defaults as serve used them before the front door's protocol.
        config = uvicorn.Config(
            FACTORIES[app](),
            host="127.0.0.1",
            port=port,
            access_log=False,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        uvicorn.Server(config).run()
    elif server == "granian":
        from granian import Granian
        from granian.constants import Interfaces

        # One worker (one process holds the embedded engine), uvloop as with uvicorn,
        # HTTP/1.1 only, no websockets, no access log: the closest match to serve's uvicorn.
        Granian(
            f"bench.apps:{FACTORIES[app].__name__}",
            factory=True,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            workers=1,
            loop="uvloop",
            http="1",
            websockets=False,
            log_access=False,
            log_level="warning",
        ).serve()
    else:
        raise SystemExit(f"unknown server {server!r}: uvicorn or granian")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in FACTORIES:
        raise SystemExit("usage: python -m bench.apps {bare,naive,serve-asgi} {uvicorn,granian} PORT")
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]))
