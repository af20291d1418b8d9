"""What one running app holds, and the way of one webhook through it.

:meth:`Service.accept` reads as the webhook's path: checked (client address,
URL size, token), decoded (``ingest.events.decode``), made a row
(``ingest.events.table``) stamped with its arrival time, and appended to the
durable spool (``ingest.storing.spool``); it is answered 200 only once the
spool has fsynced it (group commit). The handler never waits for ClickHouse:
the writer (``ingest.storing.writer``) drains the spool in the background.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from typing import Any

from clickhouse_connect.driver.client import Client
from litestar import MediaType, Request, Response
from litestar.enums import HttpMethod
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp

from ingest.config import Settings
from ingest.events.decode import DecodeError, decode, json_pairs, parse_query
from ingest.events.spec import EVENTS, Event
from ingest.events.table import encode_record, now_ms, spool_meta, to_row
from ingest.metrics import Metrics
from ingest.storing import clickhouse, destination, migrations
from ingest.storing.spool import Spool, SpoolClosed, SpoolDiskFull, SpoolError, SpoolFull
from ingest.storing.writer import BatchWriter

__all__ = ["REJECT_LOG_INTERVAL_S", "RETRY_AFTER_S", "Service"]

log = logging.getLogger(__name__)

_STATUS_OF = {"missing_param": 422, "bad_param": 422, "bad_body": 400, "too_many_params": 413}
#: The 200 answer, built once: stateless, so one instance serves every request
#: (a ``Response`` per request cost its construction and conversion on the hot path).
_OK = ASGIResponse(body=b"OK\n", status_code=200, media_type=MediaType.TEXT)
#: "request rejected" is logged at most once per reason per this many seconds.
REJECT_LOG_INTERVAL_S = 1.0
#: Seconds a PBX (or proxy) is asked to wait after a 503.
RETRY_AFTER_S = "5"
#: Spool failures: the 503 each one is answered with (reason, message).
_SPOOL_REFUSALS: tuple[tuple[type[SpoolError], str, str], ...] = (
    (SpoolFull, "buffer_full", "the spool is full: ClickHouse has not been keeping up"),
    (SpoolDiskFull, "spool_disk_full", "{exc}; accepting again once there is room"),
    (SpoolClosed, "shutting_down", "the service is stopping"),
    (SpoolError, "spool_write_failed", "could not store the event: {exc}"),
)


class Refused(Exception):
    """A request answered with an error before anything is stored."""

    def __init__(self, status: int, reason: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status, self.reason, self.fields = status, reason, fields


def error_response(status: int, reason: str, message: str, headers: dict[str, str] | None = None,
                   **fields: Any) -> Response[dict[str, Any]]:
    """The JSON error body every refusal gets: ``error`` (for people), ``reason`` (for machines)."""
    return Response({"error": message, "reason": reason, **fields}, status_code=status, headers=headers)


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
        self._holder: Client | None = None  # keeps the embedded engine ours while we run

    # ---- lifetime ------------------------------------------------------------------

    def _connect(self) -> Client:
        client = clickhouse.connect(self.settings.clickhouse_url)
        if self.migrations_pending:
            migrations.apply_migrations(client, cluster=self.settings.clickhouse_cluster or None)
            self.migrations_pending = False
        return client

    def start_up(self) -> None:
        """Everything that can refuse to start, before the port is bound: hold the embedded engine,
        apply the migrations, open (and replay) the spool.

        Raises ``clickhouse.EngineError``, ``SpoolError`` or ``MigrationChanged``, whose text is
        one line with the cause and the fix. ``serve`` calls it before the server starts; the
        app's lifespan calls it otherwise (once: a second call does nothing).
        """
        if self.spool is not None:
            return
        s = self.settings
        try:
            if s.clickhouse_url.startswith("chdb:") and self._holder is None:
                # The embedded engine lives while one of its clients is open: hold one for the
                # service's lifetime, so no other process can take the data directory between
                # start-up and the writer's first insert.
                self._holder = clickhouse.connect(s.clickhouse_url)
            # The spool belongs to the database (storing.destination): its own default place, and
            # a refusal (SpoolBelongsElsewhere) to replay another database's records into this one.
            where = s.spool_path if s.spool_dir else destination.adopt_legacy_spool(s.clickhouse_url)
            claim = destination.claimer(destination.Destination.of(s.clickhouse_url), s.spool_hand_over)
            self.spool = Spool(where, max_bytes=s.spool_max_bytes, meta=spool_meta(), fsync=s.spool_fsync,
                               commit_window=s.spool_commit_window, claim=claim)
            if s.migrate_on_start:
                self._migrate_at_start()
        except BaseException:
            if self.spool is not None:
                self.spool.close()
                self.spool = None
            self._release_engine()
            raise

    def _migrate_at_start(self) -> None:
        """Apply the migrations. A server that is down must not stop us accepting into the spool:
        the writer applies them once it reaches the server. A changed migration stops the start,
        as does any failure of the embedded engine we hold."""
        settings = self.settings
        try:
            client = self._holder or clickhouse.connect(settings.clickhouse_url)
            try:
                migrations.apply_migrations(client, cluster=settings.clickhouse_cluster or None)
            finally:
                if client is not self._holder:
                    client.close()
        except migrations.MigrationChanged:
            raise
        except Exception as exc:
            if self._holder is not None:
                raise
            self.migrations_pending = True
            self.start_error = clickhouse.describe(exc, settings.clickhouse_url)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the spool's committer on ``loop`` and the writer (after :meth:`start_up`)."""
        self.start_up()
        s, spool, m = self.settings, self.spool, self.metrics
        assert spool is not None
        spool.on_commit = lambda seconds, _records: m.spool_commit.observe(seconds)
        m.track_spool(spool)
        m.spool_limit.set(s.spool_max_bytes)
        self.writer = BatchWriter(self._connect, spool, batch_size=s.batch_size, flush_interval=s.flush_interval,
                                  metrics=m, rows_quarantined=m.rows_quarantined,
                                  describe=lambda exc: clickhouse.describe(exc, s.clickhouse_url))
        if self.start_error is not None:
            self.writer.engine.failed(self.start_error, migrations_pending=self.migrations_pending)
            m.engine_up.set(0)
        spool.start(loop)
        self.writer.start()

    async def close(self) -> None:
        """Stop accepting, write the spool to ClickHouse for at most ``drain_timeout`` s."""
        try:
            if self.spool is None or self.writer is None:
                if self.spool is not None:
                    self.spool.close()
                return
            await self.spool.stop_accepting()
            # Blocking the loop is fine now: no request is left to serve.
            self.writer.close(self.settings.drain_timeout)
            if not self.writer.running:  # else the process exit releases the spool
                self.spool.close()
        finally:
            self._release_engine()

    def _release_engine(self) -> None:
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.close()

    # ---- refusals --------------------------------------------------------------------

    def reject(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None,
               **fields: Any) -> Response[dict[str, Any]]:
        """Count, log (rate-limited) and answer a refused request."""
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
        return error_response(status, reason, message, headers, **fields)

    def redact(self, text: str) -> str:
        return text.replace(self.settings.token, "***") if self.settings.token else text

    # ---- one webhook -------------------------------------------------------------------

    async def accept(self, request: Request[Any, Any, Any], event: str,
                     path_token: str | None = None) -> Response[Any] | ASGIApp:
        """Route -> checks -> decode -> row -> spool: the 200 once the row is durable."""
        received_at = now_ms()
        try:
            ev = await self._decoded(request, event, path_token)
        except Refused as exc:
            return self.reject(exc.status, exc.reason, str(exc), **exc.fields)
        except DecodeError as exc:
            return self.reject(_STATUS_OF[exc.reason], exc.reason, str(exc), parameter=exc.param, event=event)
        return await self._store(to_row(event, ev, received_at), event)

    async def _decoded(self, request: Request[Any, Any, Any], event: str, path_token: str | None) -> Event:
        """The request's event, after the checks; raises :class:`Refused` or ``DecodeError``."""
        scope = request.scope
        settings = self.settings
        if self._networks and not self._client_allowed(scope):
            raise Refused(403, "client_not_allowed", "this client address may not send webhooks")
        query: bytes = scope["query_string"]
        if len(scope["raw_path"]) + len(query) > settings.max_url_bytes:
            raise Refused(414, "uri_too_long", f"URL longer than {settings.max_url_bytes} bytes")
        pairs = parse_query(query.decode("utf-8", "replace"), settings.max_params)
        if self._token:
            pairs = self._without_token(pairs, path_token)
        if event not in EVENTS:
            raise Refused(404, "unknown_event", f"no webhook '{event}'", known_events=list(EVENTS))
        if request.method == HttpMethod.POST:
            pairs += await self._body_pairs(request)
        if len(pairs) > settings.max_params:
            raise DecodeError("too_many_params", f"more than {settings.max_params} parameters")
        return decode(event, pairs)

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

    def _without_token(self, pairs: list[tuple[str, str]], path_token: str | None) -> list[tuple[str, str]]:
        """The secret is checked, then removed: never decoded, stored or logged."""
        given = path_token
        kept = []
        for pair in pairs:
            if pair[0] == "token":
                given = pair[1] if given is None else given
            else:
                kept.append(pair)
        if given is None:
            raise Refused(401, "missing_token", "this service needs the token in the webhook URL")
        if not hmac.compare_digest(given.encode(), self._token):
            raise Refused(403, "bad_token", "wrong token")
        return kept

    async def _body_pairs(self, request: Request[Any, Any, Any]) -> list[tuple[str, str]]:
        """The parameters of a POST body: form-urlencoded or a JSON object."""
        body = await request.body()
        if not body:
            return []
        if request.content_type[0] == "application/json":
            pairs = json_pairs(body)
        else:
            pairs = parse_query(body.decode("utf-8", "replace"), self.settings.max_params)
        return [p for p in pairs if p[0] != "token"] if self._token else pairs

    async def _store(self, row: tuple[Any, ...], event: str) -> Response[Any] | ASGIApp:
        """Append the row to the spool; 200 once durable, 503 if the spool cannot take it."""
        try:
            # The writer inserts the row from memory; the record is read back only on a replay.
            await self.spool.append(encode_record(row), row)  # type: ignore[union-attr]
        except SpoolError as exc:
            reason, message = next((r, m) for kind, r, m in _SPOOL_REFUSALS if isinstance(exc, kind))
            return self.reject(503, reason, message.format(exc=exc), headers={"Retry-After": RETRY_AFTER_S})
        self.metrics.received(event).inc()
        return _OK
