"""The Litestar app: one route per webhook, plus /healthz and /metrics.

A webhook request is checked (client address, token, limits), decoded
(``ingest.decode``), stamped with its arrival time and appended to the durable
spool; it is answered 200 only once the spool has fsynced it (group commit,
``ingest.spool``). The handler never waits for ClickHouse: the writer drains
the spool in the background (``ingest.writer``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get, route
from litestar.enums import HttpMethod
from litestar.exceptions import HTTPException
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp

from ingest import db
from ingest.config import Settings
from ingest.decode import COLUMNS, COLUMN_TYPES, DecodeError, decode, json_pairs, parse_query, to_row, utc_now_ms
from ingest.metrics import CONTENT_TYPE_LATEST, Metrics
from ingest.spec import EVENTS
from ingest.spool import Spool, SpoolClosed, SpoolError, SpoolFull
from ingest.writer import BatchWriter, encode_row_for_insert, spool_meta

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_STATUS_OF = {"missing_param": 422, "bad_param": 422, "bad_body": 400, "too_many_params": 413}
#: The 200 answer, built once: stateless, so one instance serves every request
#: (a ``Response`` per request cost its construction and conversion on the hot path).
_OK = ASGIResponse(body=b"OK\n", status_code=200, media_type=MediaType.TEXT)
#: "request rejected" is logged at most once per reason per this many seconds.
REJECT_LOG_INTERVAL_S = 1.0
#: Seconds a PBX (or proxy) is asked to wait after a 503.
RETRY_AFTER_S = "5"


def _error(status: int, reason: str, message: str, headers: dict[str, str] | None = None,
           **fields: Any) -> Response[dict[str, Any]]:
    return Response({"error": message, "reason": reason, **fields}, status_code=status, headers=headers)


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


class Service:
    """The state one running app holds: settings, metrics, the spool and the writer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.spool: Spool | None = None
        self.writer: BatchWriter | None = None
        self._token = settings.token.encode()
        self._networks = settings.allowed_networks
        self._allowed: dict[str, bool] = {}  # client address -> allowed (bounded cache)
        self._reject_log: dict[str, tuple[float, int]] = {}  # reason -> (last logged, not logged since)
        #: The server was down at start: migrate on the writer's first connection.
        self.migrations_pending = False
        self.start_error: str | None = None

    def _connect(self) -> Any:
        client = db.connect(self.settings.clickhouse_url)
        if self.migrations_pending:
            db.apply_migrations(client, cluster=self.settings.clickhouse_cluster or None)
            self.migrations_pending = False
        return client

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open (and replay) the spool, start its committer and the writer."""
        s = self.settings
        spool = Spool(s.spool_path, max_bytes=s.spool_max_bytes, meta=spool_meta(COLUMNS),
                      fsync=s.spool_fsync, commit_window=s.spool_commit_window)
        m = self.metrics
        spool.on_commit = lambda seconds, _records: m.spool_commit.observe(seconds)
        m.spool_bytes.set_function(lambda: spool.size_bytes)
        m.spool_limit.set(s.spool_max_bytes)
        self.writer = BatchWriter(
            self._connect,
            spool,
            f"{db.DATABASE}.events",
            COLUMNS,
            COLUMN_TYPES,
            batch_size=s.batch_size,
            flush_interval=s.flush_interval,
            metrics=self.metrics,
            rows_quarantined=m.rows_quarantined,
        )
        if self.start_error is not None:
            self.writer.last_error = self.start_error
            self.metrics.engine_up.set(0)
        spool.start(loop)
        self.spool = spool
        self.writer.start()

    async def close(self) -> None:
        """Stop accepting, write the spool to ClickHouse for at most ``drain_timeout`` s."""
        if self.spool is None or self.writer is None:
            return
        await self.spool.stop_accepting()
        # Blocking the loop is fine now: no request is left to serve.
        self.writer.close(self.settings.drain_timeout)
        if not self.writer.running:  # else the process exit releases the spool
            self.spool.close()

    def reject(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None,
               **fields: Any) -> Response[dict[str, Any]]:
        self.metrics.rejected(reason).inc()
        # At most one line per reason per second (a flood of 503s must not flood the log);
        # the next line says how many were not logged. The counter above counts them all.
        now = time.monotonic()
        last, suppressed = self._reject_log.get(reason, (-REJECT_LOG_INTERVAL_S, 0))
        if now - last >= REJECT_LOG_INTERVAL_S:
            self._reject_log[reason] = (now, 0)
            log.warning("request rejected", extra={"status": status, "reason": reason, "detail": message,
                                                   "suppressed": suppressed})
        else:
            self._reject_log[reason] = (last, suppressed + 1)
        return _error(status, reason, message, headers, **fields)

    def redact(self, text: str) -> str:
        return text.replace(self.settings.token, "***") if self.settings.token else text

    def _client_allowed(self, scope: Any) -> bool:
        host = (scope.get("client") or ("",))[0]
        allowed = self._allowed.get(host)
        if allowed is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                allowed = False
            else:
                if address.version == 6 and address.ipv4_mapped is not None:
                    address = address.ipv4_mapped
                allowed = any(address in network for network in self._networks)
            if len(self._allowed) > 4096:
                self._allowed.clear()
            self._allowed[host] = allowed
        return allowed

    async def accept(self, request: Request[Any, Any, Any], event: str,
                     path_token: str | None = None) -> Response[Any] | ASGIApp:
        received_at = utc_now_ms()
        scope = request.scope
        settings = self.settings
        if self._networks and not self._client_allowed(scope):
            return self.reject(403, "client_not_allowed", "this client address may not send webhooks")
        query: bytes = scope["query_string"]
        if len(scope["raw_path"]) + len(query) > settings.max_url_bytes:
            return self.reject(414, "uri_too_long", f"URL longer than {settings.max_url_bytes} bytes")
        try:
            pairs = parse_query(query.decode("utf-8", "replace"), settings.max_params)
            if self._token:
                # The secret is checked, then removed: never decoded, stored or logged.
                given = path_token
                kept = []
                for pair in pairs:
                    if pair[0] == "token":
                        given = pair[1] if given is None else given
                    else:
                        kept.append(pair)
                pairs = kept
                if given is None:
                    return self.reject(401, "missing_token", "this service needs the token in the webhook URL")
                if not hmac.compare_digest(given.encode(), self._token):
                    return self.reject(403, "bad_token", "wrong token")
            if event not in EVENTS:
                return self.reject(404, "unknown_event", f"no webhook '{event}'", known_events=list(EVENTS))
            if request.method == HttpMethod.POST:
                body = await request.body()
                if body:
                    if request.content_type[0] == "application/json":
                        pairs += json_pairs(body)
                    else:
                        pairs += parse_query(body.decode("utf-8", "replace"), settings.max_params)
                    if self._token:
                        pairs = [p for p in pairs if p[0] != "token"]
            if len(pairs) > settings.max_params:
                raise DecodeError("too_many_params", f"more than {settings.max_params} parameters")
            ev = decode(event, pairs)
        except DecodeError as exc:
            return self.reject(_STATUS_OF[exc.reason], exc.reason, str(exc), parameter=exc.param, event=event)
        try:
            # The writer gets the insert values from memory; the record is read back only on a replay.
            await self.spool.append(*encode_row_for_insert(to_row(event, ev, received_at)))  # type: ignore[union-attr]
        except SpoolFull:
            return self.reject(503, "buffer_full", "the spool is full: ClickHouse has not been keeping up",
                               headers={"Retry-After": RETRY_AFTER_S})
        except SpoolClosed:
            return self.reject(503, "shutting_down", "the service is stopping",
                               headers={"Retry-After": RETRY_AFTER_S})
        except SpoolError as exc:
            return self.reject(503, "spool_write_failed", f"could not store the event: {exc}",
                               headers={"Retry-After": RETRY_AFTER_S})
        self.metrics.received(event).inc()
        return _OK


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
            holder = db.connect(settings.clickhouse_url)
        try:
            if settings.migrate_on_start:
                try:
                    client = holder or db.connect(settings.clickhouse_url)
                    try:
                        db.apply_migrations(client, cluster=settings.clickhouse_cluster or None)
                    finally:
                        if client is not holder:
                            client.close()
                except Exception as exc:
                    if holder is not None:
                        raise
                    # A server that is down must not stop us accepting into the spool;
                    # the writer applies the migrations once it reaches the server.
                    log.error("ClickHouse unreachable at start; accepting into the spool",
                              extra={"error": str(exc)})
                    service.migrations_pending = True
                    service.start_error = str(exc)
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
