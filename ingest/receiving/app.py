"""The Litestar app: one route per webhook, plus /healthz and /metrics.

Each webhook route hands its request to :meth:`Service.accept`
(``ingest.receiving.service``), which reads as the webhook's path:
route -> checks -> decode -> row -> spool. This module wires the routes, the
lifespan (``Service.start`` -- engine, migrations, spool replay, writer --
and the drain at shutdown), and the answers that are not webhooks.
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


def create_app(settings: Settings, service: Service | None = None) -> Litestar:
    """The app for ``settings``; ``service`` may have been started up already (``serve`` does
    that before binding the port, so a refusal to start is one line, not a traceback)."""
    service = service or Service(settings)
    if settings.token:
        _REDACT.secrets.add(settings.token)
        logging.getLogger("uvicorn.access").addFilter(_REDACT)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            service.start(asyncio.get_running_loop())
            yield
        finally:
            await service.close()

    @get("/healthz", sync_to_thread=False)
    def healthz() -> Response[dict[str, Any]]:
        writer, spool = service.writer, service.spool
        if writer is None or spool is None:
            return Response({"status": "starting"}, status_code=200)
        engine_up = writer.last_error is None
        nearly_full = spool.size_bytes > 0.8 * settings.spool_max_bytes
        # The spool's own state (a full disk, failing writes), else the writer's trouble reading it
        # or writing its checkpoint: the spool's disk, not ClickHouse.
        spool_state, spool_error = spool.state, spool.error
        if spool_state == "ok" and writer.spool_io.error is not None:
            spool_state, spool_error = "error", writer.spool_io.error
        return Response(
            {
                "status": "ok" if engine_up and not nearly_full and spool_state == "ok" else "degraded",
                "clickhouse": "up" if engine_up else "down",
                "last_error": writer.last_error,
                "backlog": writer.backlog,
                "spool": spool_state,
                "spool_error": spool_error,
                "spool_bytes": spool.size_bytes,
                "spool_max_bytes": settings.spool_max_bytes,
                "spool_disk_free_bytes": spool.disk_free_bytes(),
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
