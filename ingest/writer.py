"""The batch writer: accepted rows -> ClickHouse, from one background thread.

Request handlers only append to an in-memory buffer; a single thread turns
the buffer into column-oriented inserts, by size (``batch_size``) or by age
(``flush_interval``), so a slow or failing insert never blocks a request.
A failed insert is retried with capped exponential backoff, with the same
``insert_deduplication_token``, so a retry of an insert that did land is
dropped by ClickHouse instead of stored twice.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from ingest.metrics import Metrics

__all__ = ["BatchWriter"]

log = logging.getLogger(__name__)

#: Backoff between failed inserts: doubles from the first value up to the cap.
BACKOFF_START_S = 0.1
BACKOFF_CAP_S = 10.0


class BatchWriter:
    def __init__(
        self,
        connect: Callable[[], Client],
        table: str,
        columns: Sequence[str],
        column_types: Sequence[str],
        *,
        batch_size: int,
        flush_interval: float,
        max_rows: int,
        metrics: Metrics,
    ) -> None:
        self._connect = connect
        self._table = table
        self._columns = list(columns)
        self._types = list(column_types)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_rows = max_rows
        self._metrics = metrics
        self._rows: collections.deque[tuple[Any, ...]] = collections.deque()
        self._first_at = 0.0  # monotonic time the oldest buffered row arrived
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        #: Last insert error (None while healthy); read by /healthz.
        self.last_error: str | None = None
        self.last_success: float | None = None
        metrics.track_buffer(lambda: len(self._rows))

    @property
    def backlog(self) -> int:
        return len(self._rows)

    def submit(self, row: tuple[Any, ...]) -> bool:
        """Buffer one row. False when the buffer is full (the caller answers 503)."""
        rows = self._rows
        if len(rows) >= self._max_rows:
            return False
        with self._cond:
            if not rows:
                self._first_at = time.monotonic()
            rows.append(row)
            if len(rows) == 1 or len(rows) >= self._batch_size:
                self._cond.notify()
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pbx-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> bool:
        """Stop after writing everything buffered. True if the buffer was drained."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        drained = not self._rows
        if not drained:
            log.error("shutdown with unwritten rows", extra={"rows": len(self._rows)})
        if self._client is not None:
            self._client.close()
        return drained

    def _next_batch(self) -> list[tuple[Any, ...]] | None:
        """Wait until a batch is due; None when stopping with nothing left."""
        rows = self._rows
        with self._cond:
            while not rows and not self._stopping:
                self._cond.wait()
            if not rows:
                return None
            deadline = self._first_at + self._flush_interval
            while len(rows) < self._batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(itertools.islice(rows, self._batch_size))

    def _run(self) -> None:
        backoff = BACKOFF_START_S
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            token = uuid.uuid4().hex
            while True:
                try:
                    self._insert(batch, token)
                except Exception as exc:  # any failure: keep the rows, back off, retry
                    self._client = None
                    self._metrics.insert_failures.inc()
                    self._metrics.engine_up.set(0)
                    if self.last_error is None:
                        log.error("insert failed, retrying", extra={"error": str(exc), "rows": len(batch)})
                    self.last_error = str(exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_CAP_S)
                    continue
                break
            if self.last_error is not None:
                log.warning("inserts recovered", extra={"rows": len(batch)})
            self.last_error = None
            self.last_success = time.time()
            self._metrics.engine_up.set(1)
            backoff = BACKOFF_START_S
            with self._cond:
                for _ in range(len(batch)):
                    self._rows.popleft()
                if self._rows:
                    self._first_at = time.monotonic()

    def _insert(self, batch: list[tuple[Any, ...]], token: str) -> None:
        if self._client is None:
            self._client = self._connect()
        started = time.perf_counter()
        self._client.insert(
            self._table,
            list(zip(*batch)),
            column_names=self._columns,
            column_type_names=self._types,
            column_oriented=True,
            settings={
                "insert_deduplication_token": token,
                "deduplicate_blocks_in_dependent_materialized_views": 1,
            },
        )
        self._metrics.flush_seconds.observe(time.perf_counter() - started)
        self._metrics.batches_written.inc()
        self._metrics.rows_written.inc(len(batch))
