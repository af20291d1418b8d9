"""The Litestar app: one route per webhook, plus /healthz and /metrics.

A webhook request is decoded (``ingest.decode``), stamped with its arrival
time and handed to the writer; the handler never waits for ClickHouse.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get, route
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException

from ingest import db
from ingest.config import Settings
from ingest.decode import COLUMNS, COLUMN_TYPES, DecodeError, decode, json_pairs, parse_query, to_row, utc_now_ms
from ingest.metrics import CONTENT_TYPE_LATEST, Metrics
from ingest.spec import EVENTS
from ingest.writer import BatchWriter

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_STATUS_OF = {"missing_param": 422, "bad_param": 422, "bad_body": 400, "too_many_params": 413}


def _error(status: int, reason: str, message: str, **fields: Any) -> Response[dict[str, Any]]:
    return Response({"error": message, "reason": reason, **fields}, status_code=status)


class Service:
    """The state one running app holds: settings, metrics and the writer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.writer = BatchWriter(
            lambda: db.connect(settings.clickhouse_url),
            f"{db.DATABASE}.events",
            COLUMNS,
            COLUMN_TYPES,
            batch_size=settings.batch_size,
            flush_interval=settings.flush_interval,
            max_rows=settings.max_buffer_rows,
            metrics=self.metrics,
        )

    def reject(self, status: int, reason: str, message: str, **fields: Any) -> Response[dict[str, Any]]:
        self.metrics.requests_rejected.labels(reason).inc()
        log.warning("request rejected", extra={"status": status, "reason": reason, "detail": message})
        return _error(status, reason, message, **fields)

    async def accept(self, request: Request[Any, Any, Any], event: str) -> Response[Any]:
        received_at = utc_now_ms()
        scope = request.scope
        query: bytes = scope["query_string"]
        if len(scope["raw_path"]) + len(query) > self.settings.max_url_bytes:
            return self.reject(414, "uri_too_long", f"URL longer than {self.settings.max_url_bytes} bytes")
        try:
            pairs = parse_query(query.decode("utf-8", "replace"), self.settings.max_params)
            if request.method == HttpMethod.POST:
                body = await request.body()
                if body:
                    if request.content_type[0] == "application/json":
                        pairs += json_pairs(body)
                    else:
                        pairs += parse_query(body.decode("utf-8", "replace"), self.settings.max_params)
            if len(pairs) > self.settings.max_params:
                raise DecodeError("too_many_params", f"more than {self.settings.max_params} parameters")
            ev = decode(event, pairs)
        except DecodeError as exc:
            return self.reject(_STATUS_OF[exc.reason], exc.reason, str(exc), parameter=exc.param, event=event)
        if not self.writer.submit(to_row(event, ev, received_at)):
            return self.reject(
                503, "buffer_full", "event buffer full: ClickHouse is not keeping up", headers={"Retry-After": "5"}
            )
        self.metrics.events_received.labels(event).inc()
        return Response(b"OK\n", status_code=200, media_type=MediaType.TEXT)


def _webhook_route(service: Service, event: str) -> Any:
    async def webhook(request: Request[Any, Any, Any]) -> Response[Any]:
        return await service.accept(request, event)

    webhook.__doc__ = (EVENTS[event].__doc__ or "").strip()
    return route(f"/{event}", http_method=[HttpMethod.GET, HttpMethod.POST], name=event)(webhook)


def create_app(settings: Settings) -> Litestar:
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # The embedded engine lives while one of its clients is open: hold one for
        # the service's lifetime, so no other process can take the data directory
        # between start-up and the writer's first insert.
        holder = db.connect(settings.clickhouse_url)
        try:
            if settings.migrate_on_start:
                db.apply_migrations(holder)
            service.writer.start()
            try:
                yield
            finally:
                service.writer.close()
        finally:
            holder.close()

    @get("/healthz", sync_to_thread=False)
    def healthz() -> Response[dict[str, Any]]:
        writer = service.writer
        healthy = writer.last_error is None
        return Response(
            {
                "status": "ok" if healthy else "degraded",
                "clickhouse": "up" if healthy else "down",
                "last_error": writer.last_error,
                "backlog": writer.backlog,
            },
            status_code=200,
        )

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
        if exc.status_code == 404:
            return service.reject(
                404, "unknown_event", f"no webhook at {request.url.path}", known_events=list(EVENTS)
            )
        reason = {405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        return service.reject(exc.status_code, reason, exc.detail)

    app = Litestar(
        route_handlers=[*(_webhook_route(service, e) for e in EVENTS), healthz, metrics],
        lifespan=[lifespan],
        exception_handlers={HTTPException: http_error},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )
    app.state.service = service
    return app
