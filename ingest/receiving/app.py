"""The Litestar app: one route per webhook, plus /healthz and /metrics.

Each webhook route hands its request to :meth:`Service.accept`
(``ingest.receiving.service``), which reads as the webhook's path:
route -> checks -> decode -> row -> spool. This module wires the routes, the
start-up (engine, migrations, spool replay) and shutdown (drain), and the
answers that are not webhooks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get, route
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp

from ingest.config import Settings
from ingest.events.spec import EVENTS
from ingest.metrics import CONTENT_TYPE_LATEST
from ingest.receiving.service import Service
from ingest.storing import clickhouse, migrations

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class _Redact(logging.Filter):
    """Replaces the shared secret in uvicorn's access-log lines (the URL carries it)."""

    secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets and isinstance(record.args, tuple):
            args = []
            for arg in record.args:
                if isinstance(arg, str):
                    for secret in self.secrets:
                        arg = arg.replace(secret, "***")
                args.append(arg)
            record.args = tuple(args)
        return True


_REDACT = _Redact()


def _webhook_route(service: Service, event: str) -> Any:
    async def webhook(request: Request[Any, Any, Any]) -> ASGIApp:  # _OK, or an error Response
        return await service.accept(request, event)

    webhook.__doc__ = (EVENTS[event].__doc__ or "").strip()
    return route(f"/{event}", http_method=[HttpMethod.GET, HttpMethod.POST], name=event)(webhook)


def _token_route(service: Service) -> Any:
    async def webhook_with_token(request: Request[Any, Any, Any]) -> ASGIApp:
        """Any webhook, with the shared secret as the first path segment: ``/<token>/<event>``."""
        params = request.path_params
        return await service.accept(request, params["event"], path_token=params["token"])

    return route("/{token:str}/{event:str}", http_method=[HttpMethod.GET, HttpMethod.POST],
                 name="webhook_with_token")(webhook_with_token)


def _migrate_at_start(service: Service, holder: Any) -> None:
    """Apply the migrations at start. A server that is down must not stop us accepting into
    the spool: the writer applies them once it reaches the server. A changed migration stops
    the start (``MigrationChanged``), as does any failure of the embedded engine we hold."""
    settings = service.settings
    try:
        client = holder or clickhouse.connect(settings.clickhouse_url)
        try:
            migrations.apply_migrations(client, cluster=settings.clickhouse_cluster or None)
        finally:
            if client is not holder:
                client.close()
    except migrations.MigrationChanged as exc:
        log.critical(str(exc))
        raise
    except Exception as exc:
        if holder is not None:
            raise
        log.error("ClickHouse unreachable at start; accepting into the spool", extra={"error": str(exc)})
        service.migrations_pending = True
        service.start_error = str(exc)


def create_app(settings: Settings) -> Litestar:
    service = Service(settings)
    if settings.token:
        _REDACT.secrets.add(settings.token)
        logging.getLogger("uvicorn.access").addFilter(_REDACT)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        holder = None
        if settings.clickhouse_url.startswith("chdb:"):
            # The embedded engine lives while one of its clients is open: hold one for
            # the service's lifetime, so no other process can take the data directory
            # between start-up and the writer's first insert.
            holder = clickhouse.connect(settings.clickhouse_url)
        try:
            if settings.migrate_on_start:
                _migrate_at_start(service, holder)
            service.open(asyncio.get_running_loop())
            try:
                yield
            finally:
                await service.close()
        finally:
            if holder is not None:
                holder.close()

    @get("/healthz", sync_to_thread=False)
    def healthz() -> Response[dict[str, Any]]:
        writer, spool = service.writer, service.spool
        if writer is None or spool is None:
            return Response({"status": "starting"}, status_code=200)
        engine_up = writer.last_error is None
        nearly_full = spool.size_bytes > 0.8 * settings.spool_max_bytes
        return Response(
            {
                "status": "ok" if engine_up and not nearly_full and not spool.last_write_error else "degraded",
                "clickhouse": "up" if engine_up else "down",
                "last_error": writer.last_error,
                "backlog": writer.backlog,
                "spool_bytes": spool.size_bytes,
                "spool_max_bytes": settings.spool_max_bytes,
                "spool_error": spool.last_write_error,
            },
            status_code=200,
        )

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        if exc.status_code == 404:
            return service.reject(
                404, "unknown_event", f"no webhook at {service.redact(request.url.path)}", known_events=list(EVENTS)
            )
        reason = {405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        return service.reject(exc.status_code, reason, service.redact(str(exc.detail)))

    handlers = [*(_webhook_route(service, e) for e in EVENTS), healthz, metrics]
    if settings.token:
        handlers.append(_token_route(service))
    app = Litestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        exception_handlers={HTTPException: http_error},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )
    app.state.service = service
    return app
