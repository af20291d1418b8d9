"""What one running app holds, and the way of one webhook through it.

:meth:`Service.take` reads as the webhook's path: checked (client address,
method, URL size, token), decoded (``ingest.events.decode``), made a row
(``ingest.events.table``) stamped with its arrival time, and appended to the
durable spool (``ingest.storing.spool``); :meth:`Service.settle` gives the
``200`` once the spool has fsynced it (group commit). The handler never waits
for ClickHouse: the writer (``ingest.storing.writer``) drains the spool in the
background.

Nothing here knows about HTTP servers: the protocol's fast path
(``ingest.receiving.protocol``) and the ASGI app (``ingest.receiving.app``)
both hand a request over as bytes and get :class:`~ingest.receiving.answers.Answer`
objects back, so a webhook means the same whichever way it came in.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from clickhouse_connect.driver.client import Client

from ingest.config import Settings
from ingest.events.decode import DecodeError, decode, json_pairs, parse_query
from ingest.events.spec import EVENTS
from ingest.events.table import encode_record, now_ms, spool_meta, to_row
from ingest.metrics import Metrics
from ingest.priority import EngineThreads, below_service
from ingest.receiving.answers import OK, Answer, refusal
from ingest.receiving.target import redact
from ingest.storing import clickhouse, destination, migrations
from ingest.storing.spool import Spool, SpoolClosed, SpoolDiskFull, SpoolError, SpoolFull
from ingest.storing.writer import BatchWriter

__all__ = ["REJECT_LOG_INTERVAL_S", "RETRY_AFTER_S", "LogBudget", "Refused", "Service"]

log = logging.getLogger(__name__)

_STATUS_OF = {"missing_param": 422, "bad_param": 422, "bad_body": 400, "too_many_params": 413}
#: "request rejected" (and each connection-limit line) is logged at most once per reason per this many seconds.
REJECT_LOG_INTERVAL_S = 1.0
#: Seconds a PBX (or proxy) is asked to wait after a 503.
RETRY_AFTER_S = "5"
_RETRY_AFTER = ((b"retry-after", RETRY_AFTER_S.encode()),)
_ALLOW = ((b"allow", b"GET, POST"),)
#: Spool failures: the 503 each one is answered with (reason, message).
_SPOOL_REFUSALS: tuple[tuple[type[SpoolError], str, str], ...] = (
    (SpoolFull, "buffer_full", "the spool is full: ClickHouse has not been keeping up"),
    (SpoolDiskFull, "spool_disk_full", "{exc}; accepting again once there is room"),
    (SpoolClosed, "shutting_down", "the service is stopping"),
    (SpoolError, "spool_write_failed", "could not store the event: {exc}"),
)


class Refused(Exception):
    """A request answered with an error before anything is stored (``answer`` is counted and logged)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.reason)
        self.answer = answer


class LogBudget:
    """At most one log line per reason per :data:`REJECT_LOG_INTERVAL_S`; the next line carries
    ``suppressed``, the count not logged meanwhile (a flood must not flood the log; the
    metrics count every one)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._last: dict[str, tuple[float, int]] = {}  # reason -> (last logged, not logged since)

    def warning(self, msg: str, reason: str, **fields: Any) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(reason, (-REJECT_LOG_INTERVAL_S, 0))
        if now - last >= REJECT_LOG_INTERVAL_S:
            self._last[reason] = (now, 0)
            self._log.warning(msg, extra={"reason": reason, **fields, "suppressed": suppressed})
        else:
            self._last[reason] = (last, suppressed + 1)

#: How recent the last webhook must be for webhooks to count as arriving (``webhooks_active``).
WEBHOOKS_ACTIVE_S = 1.0


class Service:
    """The state one running app holds: settings, metrics, the spool and the writer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.spool: Spool | None = None
        self.writer: BatchWriter | None = None
        self._token = settings.token.encode()
        #: A secret is configured: ``/<token>/<event>`` is a webhook path.
        self.token_in_path = bool(settings.token)
        self._networks = settings.allowed_networks
        self._allowed: dict[str, bool] = {}  # client address -> allowed (bounded cache)
        self.log_budget = LogBudget(log)
        #: The server was down at start: migrate on the writer's first connection.
        self.migrations_pending = False
        self.start_error: str | None = None
        self._holder: Client | None = None  # keeps the embedded engine ours while we run
        #: The embedded engine's own threads (refreshes, merges, inserts) below the webhooks.
        #: And its allocator's freed memory returned past ``engine_purge_mib`` (embedded engine only).
        self._engine_threads = EngineThreads(below_service(settings.query_nice), purge=self._purge,
                                             purge_above=settings.engine_purge_mib << 20)

    def _purge(self) -> None:
        if self._holder is not None:
            started = time.monotonic()
            self._holder.command("SYSTEM JEMALLOC PURGE")
            self.metrics.engine_purge.observe(time.monotonic() - started)

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
                self._engine_threads.start()
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
        self._engine_threads.stop()
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.close()

    # ---- refusals --------------------------------------------------------------------

    def reject(self, status: int, reason: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = (),
               close: bool = False, **fields: Any) -> Answer:
        """Count, log (rate-limited) and build the answer to a refused request."""
        self.metrics.rejected(reason).inc()
        self.log_budget.warning("request rejected", reason, status=status, detail=message)
        return refusal(status, reason, message, headers, close, **fields)

    def refuse(self, status: int, reason: str, message: str, **fields: Any) -> Refused:
        """:meth:`reject` as an exception to raise."""
        return Refused(self.reject(status, reason, message, **fields))

    def redact(self, target: str) -> str:
        """A request target as it may be logged or quoted: no shared secret in any encoding."""
        return redact(target, self.settings.token, self.token_in_path)

    def import_yield(self) -> float:
        """How much an import beside this service should yield to the webhooks now:
        ``import_yield`` while webhooks arrive (a group of them was made durable within the last
        :data:`WEBHOOKS_ACTIVE_S` seconds), else 0 (``ingest.backfill.sink``)."""
        spool = self.spool
        if spool is not None and time.monotonic() - spool.last_commit < WEBHOOKS_ACTIVE_S:
            return self.settings.import_yield
        return 0.0

    # ---- one webhook -------------------------------------------------------------------

    def take(self, method: str, event: str, path_token: str | None, query: bytes, target_bytes: int,
             client: str, body: bytes, content_type: bytes, done: Callable[[BaseException | None], None]) -> str:
        """Checks -> decode -> row -> spool append; returns the event name.

        ``done(None)`` is called once the row is durable, ``done(error)`` if the spool
        failed to make it so; answer with :meth:`settle`. Raises :class:`Refused` when
        the request is answered with an error before anything is stored.
        """
        received_at = now_ms()
        settings = self.settings
        if self._networks and not self._client_allowed(client):
            raise self.refuse(403, "client_not_allowed", "this client address may not send webhooks")
        if method != "GET" and method != "POST":
            raise Refused(self.reject(405, "method_not_allowed", f"{method} is not allowed: webhooks are GET "
                                      "(or POST)", _ALLOW))
        if target_bytes > settings.max_url_bytes:
            raise self.refuse(414, "uri_too_long", f"URL longer than {settings.max_url_bytes} bytes")
        try:
            pairs = parse_query(query.decode("utf-8", "replace"), settings.max_params)
            if self._token:
                pairs = self._without_token(pairs, path_token)
            if event not in EVENTS:
                raise self.refuse(404, "unknown_event", f"no webhook '{self.redact(event)}'",
                                  known_events=list(EVENTS))
            if method == "POST" and body:
                pairs += self._body_pairs(body, content_type)
            if len(pairs) > settings.max_params:
                raise DecodeError("too_many_params", f"more than {settings.max_params} parameters")
            ev = decode(event, pairs)
        except DecodeError as exc:
            raise self.refuse(_STATUS_OF[exc.reason], exc.reason, str(exc), parameter=exc.param,
                              event=event) from None
        row = to_row(event, ev, received_at)
        try:
            # The writer inserts the row from memory; the record is read back only on a replay.
            self.spool.append(encode_record(row), row, done)  # type: ignore[union-attr]
        except SpoolError as exc:
            raise Refused(self._spool_refusal(exc)) from None
        return event

    def settle(self, event: str, error: BaseException | None) -> Answer:
        """The answer once the spool is done with ``event``'s row: 200, or 503 if it failed."""
        if error is None:
            self.metrics.received(event).inc()
            return OK
        return self._spool_refusal(error)

    def _spool_refusal(self, exc: BaseException) -> Answer:
        reason, message = next((r, m) for kind, r, m in _SPOOL_REFUSALS if isinstance(exc, kind))
        return self.reject(503, reason, message.format(exc=exc), _RETRY_AFTER)

    def _client_allowed(self, host: str) -> bool:
        allowed = self._allowed.get(host)
        if allowed is None:
            allowed = client_in(host, self._networks)
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
        if not given:  # absent, or empty (``?token=``): both are "no token"
            raise self.refuse(401, "missing_token", "this service needs the token in the webhook URL")
        if not hmac.compare_digest(given.encode(), self._token):
            raise self.refuse(403, "bad_token", "wrong token")
        return kept

    def _body_pairs(self, body: bytes, content_type: bytes) -> list[tuple[str, str]]:
        """The parameters of a POST body: a JSON object, or form-urlencoded."""
        if content_type.split(b";", 1)[0].strip().lower() == b"application/json":
            pairs = json_pairs(body)
        else:
            pairs = parse_query(body.decode("utf-8", "replace"), self.settings.max_params)
        return [p for p in pairs if p[0] != "token"] if self._token else pairs


def client_in(host: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """Whether the address ``host`` is in one of ``networks`` (an IPv4-mapped IPv6 address as IPv4)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
