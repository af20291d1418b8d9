"""Connection limits at the edge: who may hold a connection, and for how long.

Every resource a stranger can hold is bounded, one limit per concern, with
its default documented (docs/reliability.md, "Limits") and a metric when it
bites, as nginx (``limit_conn``, ``client_header_timeout``,
``keepalive_timeout``) and Envoy do:

* **connections per client** (``max_connections_per_client``; a client is
  an IPv4 address or an IPv6 /64, since one host owns a whole /64): the
  excess is closed at accept, before a byte is read, with a best-effort
  ``503``; ``pbx_connections_shed_total{reason}``. Trusted proxies are not
  limited per client (a proxy carries many clients);
* **connections in total** (``max_connections``): a new connection evicts
  the one that has waited longest without a request in progress
  (``pbx_connections_closed_total{reason="evicted"}``); only when all are
  working on requests is it shed. So connections held idle by many
  addresses at once still cannot keep a PBX out;
* ``PBX_ALLOW_CIDRS`` is checked per request, as soon as the request's
  headers are in (``/healthz`` and ``/metrics`` stay open to monitors): a
  client outside it holds connections only within the limits here, like any
  other;
* **time**: a connection must deliver a request's headers within
  ``header_timeout`` of its accept (or of its next request's first byte), the
  body within ``body_timeout``, and may stay idle between requests for
  ``keepalive_timeout``; past that it is closed,
  ``pbx_connections_closed_total{reason}``. While the service itself works on
  a request (the spool's fsync) no timer runs.

Deadlines are plain numbers on each connection, checked by one sweep a
second (or at half the shortest timeout), not a timer per request: the hot
path only stores a float.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
from typing import Any, Protocol

from ingest.config import Settings
from ingest.metrics import Metrics
from ingest.receiving.service import LogBudget, client_in

__all__ = ["Edge", "Phase"]

log = logging.getLogger(__name__)

#: File descriptors kept for everything but client connections (the engine's parts, the spool,
#: the query interface, logs): ``max_connections`` is lowered to fit under RLIMIT_NOFILE.
FD_RESERVE = 1024


class Phase:
    """What a connection is doing; each phase has its own deadline."""

    HEAD = 0  #: waiting for (the rest of) a request's headers: ``header_timeout``
    BODY = 1  #: reading a request's body: ``body_timeout``
    BUSY = 2  #: the service works on the request: no deadline
    IDLE = 3  #: between two requests: ``keepalive_timeout``
    LINGER = 4  #: answered and closing, reading what the client still sends: ``LINGER_S``


#: Seconds a connection that was refused stays open to read (and discard) the rest of what its
#: client sends, so the client reads the answer instead of a reset (nginx's lingering close).
LINGER_S = 2.0
#: ...and at most this many bytes: a client still streaming after that is cut off.
LINGER_BYTES = 256 * 1024
_CLOSE_REASONS = {Phase.HEAD: "header_timeout", Phase.BODY: "body_timeout", Phase.IDLE: "keepalive_timeout"}


class Connection(Protocol):
    """What the edge needs of a connection (``ingest.receiving.protocol.FrontDoorProtocol``)."""

    phase: int
    deadline: float
    client_key: str

    def expire(self) -> None: ...

    def evict(self) -> None: ...


def _trusted(spec: str) -> tuple[bool, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    """``trusted_proxies`` as (every peer, networks); entries that are not addresses are skipped
    (uvicorn also accepts unix-socket names there)."""
    items = [item.strip() for item in spec.split(",") if item.strip()]
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return "*" in items, tuple(networks)


def client_key(host: str) -> str:
    """The unit of the per-client limit: an IPv4 address, or the /64 of an IPv6 address."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


def connection_budget(wanted: int) -> int:
    """``wanted`` connections, or fewer if the process may not open that many files; raises the
    soft RLIMIT_NOFILE towards the hard one first (as Go's runtime does)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        fitted = max(16, soft - FD_RESERVE)
        log.warning("fewer connections than configured: the open-files limit is too low",
                    extra={"max_connections": wanted, "allowed": fitted, "nofile": soft,
                           "fix": "raise the open-files limit (ulimit -n, LimitNOFILE=) or lower PBX_MAX_CONNECTIONS"})
        return fitted
    return wanted


class Edge:
    """The connections one server holds, their limits and deadlines (see the module doc)."""

    def __init__(self, settings: Settings, metrics: Metrics, log_budget: LogBudget) -> None:
        self.max_connections = connection_budget(settings.max_connections)
        self.max_per_client = settings.max_connections_per_client
        self.header_timeout = settings.header_timeout
        self.body_timeout = settings.body_timeout
        self.keepalive_timeout = settings.keepalive_timeout
        self.max_url_bytes = settings.max_url_bytes
        self.max_header_bytes = settings.max_header_bytes
        self._trust_all, self._trusted = _trusted(settings.trusted_proxies)
        self._log = log_budget
        self._metrics = metrics
        self.connections: set[Connection] = set()
        #: Connections without a request in progress, longest-waiting first (the eviction order):
        #: a connection enters at accept and each time it goes idle, leaves when a request's
        #: headers are in.
        self.waiting: dict[Connection, None] = {}
        self._per_client: dict[str, int] = {}
        self._sweep_every = min(1.0, settings.header_timeout / 2, settings.body_timeout / 2,
                                settings.keepalive_timeout / 2)
        self._sweeper: asyncio.TimerHandle | None = None
        metrics.connections_open.set_function(lambda: len(self.connections))

    def is_trusted(self, host: str) -> bool:
        """The peer is a trusted proxy (its ``X-Forwarded-For`` names the client)."""
        return self._trust_all or (bool(self._trusted) and client_in(host, self._trusted))

    def admit(self, conn: Connection, host: str, trusted: bool, loop: asyncio.AbstractEventLoop) -> str | None:
        """Register a new connection, or the reason to shed it (it is then not registered:
        close it now), counted in ``pbx_connections_shed``.

        At ``max_connections``, the connection that has waited longest without a request in
        progress (idle since its accept, a head still incomplete, or idle between requests)
        is closed to make room (``pbx_connections_closed{reason="evicted"}``): a flood of idle
        connections then cannot keep a PBX out. Only when every connection is working on a
        request is the newcomer shed.
        """
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep, loop)
        key = "" if trusted else client_key(host)
        if key and self._per_client.get(key, 0) >= self.max_per_client:
            reason = "max_connections_per_client"
        elif len(self.connections) >= self.max_connections and not self._evict_one():
            reason = "max_connections"
        else:
            conn.client_key = key
            conn.phase = Phase.HEAD
            conn.deadline = loop.time() + self.header_timeout
            self.connections.add(conn)
            self.waiting[conn] = None
            if key:
                self._per_client[key] = self._per_client.get(key, 0) + 1
            return None
        self._metrics.connections_shed(reason).inc()
        self._log.warning("connection refused", reason, client=host, open=len(self.connections))
        return reason

    def _evict_one(self) -> bool:
        """Close the longest-waiting connection without a request in progress (False: none)."""
        for victim in self.waiting:
            break
        else:
            return False
        self.release(victim)
        self._metrics.connections_closed("evicted").inc()
        self._log.warning("connection evicted to admit another", "evicted", open=len(self.connections))
        victim.evict()
        return True

    def release(self, conn: Connection) -> None:
        """``conn`` is closed."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.waiting.pop(conn, None)
        key = conn.client_key
        if key:
            left = self._per_client[key] - 1
            if left:
                self._per_client[key] = left
            else:
                del self._per_client[key]

    def expired(self, conn: Connection) -> None:
        """Count (and log, rate-limited) a connection closed for its phase's timeout."""
        reason = _CLOSE_REASONS.get(conn.phase)
        if reason is None:
            return
        self._metrics.connections_closed(reason).inc()
        if reason != "keepalive_timeout":  # an idle keep-alive ending is normal
            self._log.warning("connection timed out", reason)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in [c for c in self.connections if c.deadline <= now]:
            try:
                conn.expire()
            except Exception:
                log.exception("closing an expired connection failed")
                self.release(conn)
        self._sweeper = loop.call_later(self._sweep_every, self._sweep, loop)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def info(self) -> dict[str, Any]:
        """The limits in force (logged at start)."""
        return {"max_connections": self.max_connections, "max_connections_per_client": self.max_per_client,
                "header_timeout": self.header_timeout, "body_timeout": self.body_timeout,
                "keepalive_timeout": self.keepalive_timeout, "max_url_bytes": self.max_url_bytes,
                "max_header_bytes": self.max_header_bytes}
