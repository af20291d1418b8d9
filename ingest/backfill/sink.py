"""Where imported rows go: the :class:`Sink` interface, and :class:`EngineSink` (``pbx.events``).

The importer produces rows (``ingest.backfill.batches``: Arrow record batches
of ``ingest.events.table.arrow_schema()``) and hands them to a sink; the sink
decides where they go and what "already stored" means there. Today the one
sink writes straight into the engine the command connected to. A sink that
hands the rows to a running ``serve`` instead (issue 12) implements the same
three methods.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.client import Client

from ingest.backfill.rows import ImportStats
from ingest.events.table import TABLE, EventsInsert, ms_to_datetime

__all__ = ["INSERT_ATTEMPTS", "EngineSink", "Sink"]

#: Tries of one insert (server hiccups); retries reuse the dedup token.
INSERT_ATTEMPTS = 3


class Sink(Protocol):
    """Takes the import's rows. Counts ``imported``, ``duplicates`` and the time span into the
    :class:`ImportStats` it was made with."""

    def add(self, batch: pa.RecordBatch) -> None:
        """Take some rows (any number); may store them now or later."""

    def flush(self) -> None:
        """Store every row taken so far; raise if they cannot be stored."""

    def close(self) -> None:
        """Release what the sink holds (after :meth:`flush`, or on an error)."""


class EngineSink:
    """Inserts rows into ``pbx.events`` in batches, dropping rows whose event_id is already stored.

    One batch is inserted on a background thread while the next is decoded
    (the engine's share of the work runs without the GIL). At most one batch is
    in flight, so each batch's "already stored?" query sees every earlier batch.

    Beside a running ``serve`` (its query interface), each insert's answer says how much to
    yield to the webhooks (``pbx_import_yield``: the service's ``PBX_IMPORT_YIELD`` while
    webhooks arrive, else 0). The import then waits that many times its own last cycle (decoding
    and inserting one batch) before the next batch: decoding included, since it is most of an
    import's CPU, and a pause of the insert alone would overlap it.
    """

    def __init__(self, client: Client, stats: ImportStats, batch_size: int) -> None:
        self._client = client
        self._stats = stats
        self._batch_size = batch_size
        self._batches: list[pa.RecordBatch] = []
        self._ranges: list[tuple[int, int]] = []  # received_at ms range of each queued batch
        self._pending = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pbx-import")
        self._inflight: Future[None] | None = None
        # On a cluster: the next batch's "already stored?" check must see this batch.
        self._insert = EventsInsert(wait_for_shards=True)
        self._inserts = 0
        # The dedup token is reused for retries of one batch within this run only, so a
        # retried insert that did land is dropped. Not derived from the content: a
        # re-import after deleting rows would then be dropped by the dedup window.
        self._run_id = uuid.uuid4().hex
        #: What the last insert's answer said to yield (set on the insert thread).
        self._yield = 0.0
        self._cycle_started = time.monotonic()

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        received = batch.column("received_at").cast(pa.int64())
        bounds = pc.min_max(received)
        self._batches.append(batch)
        self._ranges.append((bounds["min"].as_py(), bounds["max"].as_py()))
        self._pending += batch.num_rows
        if self._pending >= self._batch_size:
            self._submit()

    def flush(self) -> None:
        self._submit()
        self._wait()

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._pool.shutdown()

    def _submit(self) -> None:
        batches, self._batches, self._pending = self._batches, [], 0
        ranges, self._ranges = _merge_ranges(self._ranges), []
        self._wait()
        if batches:
            self._yield_to_webhooks()
            self._inserts += 1
            token = f"import:{self._run_id}:{self._inserts}"
            self._inflight = self._pool.submit(self._write, pa.Table.from_batches(batches), ranges, token)

    def _yield_to_webhooks(self) -> None:
        """Wait ``yield`` times the cycle since the last batch went out (0: none)."""
        now = time.monotonic()
        if self._yield > 0:
            pause = self._yield * (now - self._cycle_started)
            time.sleep(pause)
            self._stats.yielded_s += pause
            now = time.monotonic()
        self._cycle_started = now

    def _wait(self) -> None:
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()  # re-raises an insert error here, in the importing thread

    def _write(self, rows: pa.Table, ranges: list[tuple[int, int]], token: str) -> None:
        count = rows.num_rows
        rows = self._not_stored(rows, ranges)
        self._stats.duplicates += count - rows.num_rows
        if not rows.num_rows:
            return
        for attempt in range(INSERT_ATTEMPTS):
            try:
                summary = self._insert.arrow(self._client, rows, token)
                self._yield = float(summary.get("pbx_import_yield", 0) or 0)
                break
            except Exception:
                if attempt + 1 == INSERT_ATTEMPTS:
                    raise
                time.sleep(0.5 * 2**attempt)
        stats = self._stats
        stats.imported += rows.num_rows
        bounds = pc.min_max(rows.column("received_at").cast(pa.int64()))
        first, last = ms_to_datetime(bounds["min"].as_py()), ms_to_datetime(bounds["max"].as_py())
        stats.first_time = first if stats.first_time is None else min(stats.first_time, first)
        stats.last_time = last if stats.last_time is None else max(stats.last_time, last)

    def _not_stored(self, rows: pa.Table, ranges: list[tuple[int, int]]) -> pa.Table:
        """``rows`` without those whose id is already stored or earlier in the batch."""
        # Imported ids are deterministic; only source='import' rows can collide. The time
        # ranges of the batch (files decoded in parallel interleave) prune partitions and
        # granules. Measured: fetching the ranges' ids and comparing here is ~10x cheaper
        # than sending an IN list of 100k ids.
        params: dict[str, Any] = {}
        where = []
        for i, (lo, hi) in enumerate(ranges):
            params[f"lo{i}"], params[f"hi{i}"] = ms_to_datetime(lo), ms_to_datetime(hi)
            where.append(f"received_at BETWEEN {{lo{i}:DateTime64(3, 'UTC')}} AND {{hi{i}:DateTime64(3, 'UTC')}}")
        stored = self._client.query_arrow(
            f"SELECT event_id FROM {TABLE} WHERE source = 'import' AND ({' OR '.join(where)})",
            parameters=params,
        ).column(0)
        ids = rows.column("event_id").combine_chunks()
        keep = np.ones(len(ids), bool)
        if len(stored):
            # UUIDs come back as 16 bytes, big endian: the form of our ids.
            stored_ids = pa.chunked_array([_bytes16(chunk) for chunk in stored.chunks], pa.binary(16))
            keep &= ~pc.is_in(ids, value_set=stored_ids).to_numpy(zero_copy_only=False)
        if pc.count_distinct(ids).as_py() < len(ids):  # the same line twice within the batch
            as_pairs = np.frombuffer(ids.buffers()[1], np.uint64)[2 * ids.offset:2 * (ids.offset + len(ids))]
            _, first = np.unique(as_pairs.reshape(-1, 2), axis=0, return_index=True)
            once = np.zeros(len(ids), bool)
            once[first] = True
            keep &= once
        return rows if keep.all() else rows.filter(pa.array(keep))


def _bytes16(chunk: pa.Array) -> pa.Array:
    """A UUID column's chunk as plain 16-byte binaries (the driver may hand an extension type)."""
    return chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk.cast(pa.binary(16))


def _merge_ranges(ranges: list[tuple[int, int]], gap_ms: int = 60_000) -> list[tuple[int, int]]:
    """Overlapping or nearby (within ``gap_ms``) ranges merged, in order."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + gap_ms:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged
