"""Prometheus metrics of one service instance (``GET /metrics``).

A registry per instance, not the process-global one, so tests and embedded
uses can run several apps in one process.
"""

from __future__ import annotations

from collections.abc import Callable

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

    def track_buffer(self, depth: Callable[[], float]) -> None:
        self.buffer_depth.set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
