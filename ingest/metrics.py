"""Prometheus metrics of one service instance (``GET /metrics``).

A registry per instance, not the process-global one, so tests and embedded
uses can run several apps in one process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_received = Counter(
            "pbx_events_received", "Webhooks accepted, by event type", ["event"], registry=r
        )
        self.requests_rejected = Counter(
            "pbx_requests_rejected", "Requests answered with an error, by reason", ["reason"], registry=r
        )
        self.rows_written = Counter("pbx_rows_written", "Rows inserted into ClickHouse", registry=r)
        self.batches_written = Counter("pbx_batches_written", "Insert batches written", registry=r)
        self.insert_failures = Counter("pbx_insert_failures", "Insert attempts that failed", registry=r)
        self.flush_seconds = Histogram(
            "pbx_flush_seconds",
            "Time to insert one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.buffer_depth = Gauge("pbx_buffer_depth", "Accepted rows not yet written", registry=r)
        self.engine_up = Gauge("pbx_clickhouse_up", "1 if the last insert succeeded", registry=r)
        self.spool_bytes = Gauge("pbx_spool_bytes", "Bytes of the durable spool on disk", registry=r)
        self.spool_limit = Gauge("pbx_spool_max_bytes", "Spool size at which webhooks get 503", registry=r)
        self.spool_disk_full = Gauge(
            "pbx_spool_disk_full", "1 while the spool's disk has no room: new webhooks get 503", registry=r
        )
        self.spool_disk_free = Gauge(
            "pbx_spool_disk_free_bytes", "Bytes free on the spool's disk (for this service's user)", registry=r
        )
        self.spool_commit = Histogram(
            "pbx_spool_commit_seconds", "Time to write and fsync one group of webhooks",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5), registry=r,
        )
        self.rows_quarantined = Counter(
            "pbx_rows_quarantined", "Rows ClickHouse refused, kept in pbx.events_quarantine", registry=r
        )
        # The embedded engine's allocator asked to return freed memory (ingest.priority, PBX_ENGINE_PURGE_MIB).
        self.engine_purge = Histogram(
            "pbx_engine_purge_seconds", "SYSTEM JEMALLOC PURGE issued: the resident set was past PBX_ENGINE_PURGE_MIB",
            buckets=(0.001, 0.005, 0.02, 0.1, 0.5), registry=r,
        )
        # The edge (ingest.receiving.edge): connections held, and those refused or closed by a limit.
        self.connections_open = Gauge("pbx_connections_open", "Client connections open now", registry=r)
        self.connections_shed_total = Counter(
            "pbx_connections_shed", "Connections closed at accept: over a connection limit, or a client "
            "outside the allow-list", ["reason"], registry=r,
        )
        self.connections_closed_total = Counter(
            "pbx_connections_closed", "Connections closed by a timeout (header, body, keep-alive)", ["reason"],
            registry=r,
        )
        # One labelled child per event / reason, looked up once: ``labels()`` on
        # every request cost more than the increment itself (hot path).
        self._received: dict[str, Any] = {}
        self._rejected: dict[str, Any] = {}
        self._shed: dict[str, Any] = {}
        self._closed: dict[str, Any] = {}

    def received(self, event: str) -> Any:
        """The ``pbx_events_received`` child of ``event`` (call ``.inc()``)."""
        child = self._received.get(event)
        if child is None:
            child = self._received[event] = self.events_received.labels(event)
        return child

    def rejected(self, reason: str) -> Any:
        """The ``pbx_requests_rejected`` child of ``reason`` (call ``.inc()``)."""
        child = self._rejected.get(reason)
        if child is None:
            child = self._rejected[reason] = self.requests_rejected.labels(reason)
        return child

    def connections_shed(self, reason: str) -> Any:
        """The ``pbx_connections_shed`` child of ``reason`` (call ``.inc()``)."""
        child = self._shed.get(reason)
        if child is None:
            child = self._shed[reason] = self.connections_shed_total.labels(reason)
        return child

    def connections_closed(self, reason: str) -> Any:
        """The ``pbx_connections_closed`` child of ``reason`` (call ``.inc()``)."""
        child = self._closed.get(reason)
        if child is None:
            child = self._closed[reason] = self.connections_closed_total.labels(reason)
        return child

    def track_buffer(self, depth: Callable[[], float]) -> None:
        self.buffer_depth.set_function(depth)

    def track_spool(self, spool: Any) -> None:
        """The spool's gauges, read at each scrape from ``spool`` (an ``ingest.storing.spool.Spool``)."""
        self.spool_bytes.set_function(lambda: spool.size_bytes)
        self.spool_disk_full.set_function(lambda: spool.state == "disk_full")
        self.spool_disk_free.set_function(lambda: spool.disk_free_bytes() or 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
