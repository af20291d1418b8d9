"""The ASGI app: webhooks answered directly, everything else by a small Litestar app.

A webhook path (``/<event>``, ``/<token>/<event>``: ``target.route``) goes
straight to :meth:`Service.take` from the ASGI scope, without a framework's
routing, request and response objects per call (they cost more than the
webhook itself). The Litestar app behind it answers ``/healthz``,
``/metrics`` and any other path, and runs the lifespan (``Service.start`` --
engine, migrations, spool replay, writer -- and the drain at shutdown).

``serve`` runs this app on uvicorn with the front door's own protocol
(``ingest.receiving.protocol``), which answers plain webhook GETs before they
become ASGI requests at all and enforces the connection limits; every other
request (POST bodies, pipelined requests, requests through a trusted proxy)
comes here. Any ASGI server can run it without that protocol, as the tests'
client does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.exceptions import HTTPException

from ingest.config import Settings
from ingest.events.spec import EVENTS
from ingest.metrics import CONTENT_TYPE_LATEST
from ingest.receiving.answers import Answer
from ingest.receiving.service import Refused, Service
from ingest.receiving.target import route, target_length

__all__ = ["FrontDoor", "access_line", "create_app"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("ingest.access")


def access_line(service: Service, client: Any, method: str, target: str, version: str, status: int) -> None:
    """One access-log line (``--access-log``), the target redacted: no secret in any encoding."""
    host = f"{client[0]}:{client[1]}" if client else "-"
    access_log.info('%s - "%s %s HTTP/%s" %d', host, method, service.redact(target), version, status)


class _ClientGone(Exception):
    """The client disconnected (or was disconnected) before its request's body ended."""


class FrontDoor:
    """The service's ASGI app (see the module doc). ``service`` is what it runs on."""

    def __init__(self, settings: Settings, service: Service | None = None) -> None:
        self.settings = settings
        self.service = service or Service(settings)
        self.litestar = _litestar_app(self.service)
        self.access_log = settings.access_log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw_path = _raw_path(scope)
            webhook = route(raw_path, self.service.token_in_path)
            if webhook is not None:
                status = await self._webhook(scope, receive, send, raw_path, *webhook)
            else:
                status = await self._other(scope, receive, send)
            if self.access_log:
                query = scope["query_string"].decode("latin-1")
                target = raw_path.decode("latin-1") + ("?" + query if query else "")
                access_line(self.service, scope.get("client"), scope["method"], target, scope["http_version"],
                            status)
            return
        await self.litestar(scope, receive, send)

    async def _other(self, scope: Any, receive: Any, send: Any) -> int:
        status = 0

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.litestar(scope, receive, send_status)
        return status

    async def _webhook(self, scope: Any, receive: Any, send: Any, raw_path: bytes, event: str,
                       path_token: str | None) -> int:
        service = self.service
        method = scope["method"]
        query: bytes = scope["query_string"]
        try:
            body, content_type = (await self._body(scope, receive)) if method == "POST" else (b"", b"")
            loop = asyncio.get_running_loop()
            durable: asyncio.Future[BaseException | None] = loop.create_future()
            client = scope.get("client")
            service.take(method, event, path_token, query, target_length(raw_path, query),
                         client[0] if client else "", body, content_type,
                         lambda error: durable.done() or durable.set_result(error))
            answer = service.settle(event, await durable)
        except Refused as refused:
            answer = refused.answer
        except _ClientGone:
            return 0  # nothing stored, nobody to answer
        except Exception:
            log.exception("webhook failed", extra={"event": event})
            answer = service.reject(500, "internal_error", "the service failed on this request; it is logged")
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": answer.body})
        return answer.status

    async def _body(self, scope: Any, receive: Any) -> tuple[bytes, bytes]:
        """The request body, at most ``max_body_bytes`` (413 before reading more), and its type."""
        limit = self.settings.max_body_bytes
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise self._too_large()
            if name == b"content-type":
                content_type = value
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # gone (or cut off) before its body ended
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), content_type

    def _too_large(self) -> Refused:
        # The rest of the body is not read: the connection closes after the answer.
        return Refused(self.service.reject(413, "body_too_large",
                                           f"body larger than {self.settings.max_body_bytes} bytes", close=True))


def _raw_path(scope: Any) -> bytes:
    """The path as received (ASGI ``raw_path``; some clients' scopes append the query to it)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    return raw.partition(b"?")[0] if b"?" in raw else raw


def _litestar_response(answer: Answer) -> Response[bytes]:
    headers = {k.decode(): v.decode() for k, v in answer.headers if k not in (b"content-length", b"content-type")}
    media_type = dict(answer.headers)[b"content-type"].decode()
    return Response(answer.body, status_code=answer.status, media_type=media_type, headers=headers)


def _litestar_app(service: Service) -> Litestar:
    """Health, metrics, the answer to any path that is not a webhook, and the lifespan."""
    settings = service.settings

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
            answer = service.reject(404, "unknown_event", f"no webhook at {service.redact(request.url.path)}",
                                    known_events=list(EVENTS))
        else:
            reason = {405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
            answer = service.reject(exc.status_code, reason, service.redact(str(exc.detail)))
        return _litestar_response(answer)

    def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        log.error("request failed", exc_info=exc, extra={"path": service.redact(request.url.path)})
        return _litestar_response(service.reject(500, "internal_error",
                                                 "the service failed on this request; it is logged"))

    return Litestar(
        route_handlers=[healthz, metrics],
        lifespan=[lifespan],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )


def create_app(settings: Settings, service: Service | None = None) -> FrontDoor:
    """The service's ASGI app for ``settings`` (``app.service`` is its :class:`Service`);
    ``service`` may have been started up already (``serve`` does that before binding the port,
    so a refusal to start is one line, not a traceback)."""
    return FrontDoor(settings, service)
