"""The spool drainer: durable spool -> ClickHouse, from one background thread.

Request handlers only append to the spool (``ingest.storing.spool``); this
thread reads committed records in batches (by size, ``batch_size``, or age,
``flush_interval``) and inserts them column-oriented through the one insert
of ``pbx.events`` (``ingest.events.table.EventsInsert``). Each batch's bounds are
made durable before its insert and its ``insert_deduplication_token`` is
derived from them, so a batch inserted just before a crash is replayed with
the same token and ClickHouse drops the repeat: exactly once, not at least once.

Failures:

* the engine is unreachable or refuses the table (server down, table
  detached, disk full): the batch stays in the spool, retried with capped
  exponential backoff; the spool keeps accepting until its size limit. One
  log line when inserts start failing and one when they work again
  (``logs.StateLog``), whatever the number of retries;
* the spool cannot be read or its checkpoint written (the spool's disk): the
  same, reported as the spool's problem, not ClickHouse's;
* the engine rejects the *data* (constraint, parse error in a view): the batch
  is split in halves until the offending rows are alone; those go to
  ``pbx.events_quarantine`` with the reason, the rest is stored.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, DataError

from ingest.events.table import COLUMNS, DATABASE, EventsInsert, Remap, decode_record, meta_columns, ms_to_datetime
from ingest.logs import StateLog
from ingest.metrics import Metrics
from ingest.storing.clickhouse import engine_message
from ingest.storing.spool import Batch, Spool

__all__ = ["BatchWriter"]

log = logging.getLogger(__name__)

#: Backoff between failed inserts: doubles from the first value up to the cap.
BACKOFF_START_S = 0.1
BACKOFF_CAP_S = 10.0

#: ClickHouse error codes that blame the inserted rows, not the engine: a batch
#: failing with one of these is split to find and quarantine the bad rows.
#: Anything else (unknown table, read-only, no space, memory, network) is an
#: outage: the batch waits in the spool and is retried unchanged.
DATA_ERROR_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (throwIf in a view)
    407,  # DECIMAL_OVERFLOW
    469,  # VIOLATED_CONSTRAINT
})

QUARANTINE_TABLE = f"{DATABASE}.events_quarantine"


def _is_data_error(exc: BaseException) -> bool:
    if isinstance(exc, DatabaseError) and getattr(exc, "code", None) in DATA_ERROR_CODES:
        return True
    # Raised by the client while serialising a value: the row, not the engine.
    return isinstance(exc, (DataError, TypeError, ValueError, OverflowError))


class BatchWriter:
    def __init__(
        self,
        connect: Callable[[], Client],
        spool: Spool,
        *,
        batch_size: int,
        flush_interval: float,
        metrics: Metrics,
        rows_quarantined: Any = None,
        describe: Callable[[BaseException], str] = engine_message,
    ) -> None:
        self._connect = connect
        self._spool = spool
        self._columns = list(COLUMNS)
        self._insert_events = EventsInsert()
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._metrics = metrics
        self._quarantined = rows_quarantined if rows_quarantined is not None else metrics.rows_quarantined
        self._remaps: dict[bytes, Remap | None] = {}
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        #: One line (``describe``) of an insert error, for the log and /healthz.
        self._describe = describe
        #: Inserts into ClickHouse: failing or not, since when, the last error (/healthz).
        self.engine = StateLog(log, "ClickHouse unavailable; webhooks are kept in the spool and written when it is back",
                               "ClickHouse available again; writing the spool")
        #: Reading the spool and writing its checkpoint (the spool's disk, not ClickHouse).
        self.spool_io = StateLog(log, "spool checkpoint or read failing; writing to ClickHouse paused and retried",
                                 "spool checkpoint and reads work again")
        #: Set if the writer thread died (a bug); the spool keeps everything for the next start.
        self.crashed: str | None = None
        metrics.track_buffer(lambda: spool.backlog)
        spool.wake_at = batch_size  # woken when a batch is full; its age is our own timer

    @property
    def last_error(self) -> str | None:
        """The last insert error while inserts fail (None while they work); read by /healthz."""
        return self.crashed or self.engine.error

    @property
    def backlog(self) -> int:
        """Acknowledged rows not yet confirmed stored in ClickHouse."""
        return self._spool.backlog

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pbx-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Write what the spool holds for at most ``timeout`` s, then stop.

        True if everything was written; otherwise the rest stays in the spool
        and is written at the next start.
        """
        self._deadline = time.monotonic() + timeout
        self._stop.set()
        self._spool.wake()
        if self._thread is not None:
            # An insert in flight cannot be interrupted: give it a little longer.
            self._thread.join(timeout + 30)
            if self._thread.is_alive():
                log.error("insert still running at shutdown; the spool replays its batch at the next start")
                return False
        drained = self._spool.backlog == 0
        if not drained:
            log.warning("shutdown with rows still in the spool; they are written at the next start",
                        extra={"rows": self._spool.backlog})
        self._drop_client()
        return drained

    # ---- the loop -----------------------------------------------------------

    def _out_of_time(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _wait_due(self) -> bool:
        """Wait until a batch is due: full, old enough, a replay, or shutting down."""
        spool = self._spool
        seen_at: float | None = None
        while True:
            if self._out_of_time():
                return False
            backlog = spool.backlog
            if backlog >= self._batch_size or spool.replay_pending:
                return True
            if backlog == 0:
                if self._stop.is_set():
                    return False
                seen_at = None
                spool.wait_for_change(0, 1.0)
                continue
            if self._stop.is_set():
                return True
            now = time.monotonic()
            seen_at = seen_at or now
            if now - seen_at >= self._flush_interval:
                return True
            spool.wait_for_change(backlog, self._flush_interval - (now - seen_at))

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # a bug: say so loudly; the spool keeps everything for the next start
            log.critical("writer stopped; acknowledged webhooks stay in the spool", exc_info=True)
            self.crashed = "writer stopped (see the log); restart the service"
            raise

    def _loop(self) -> None:
        backoff = BACKOFF_START_S
        while self._wait_due():
            try:
                batch = self._spool.next_batch(self._batch_size)
            except OSError as exc:  # the checkpoint could not be written, a segment not read
                self.spool_io.failed(f"spool: {exc}", backlog=self._spool.backlog)
                self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
                continue
            if batch is None:
                self.spool_io.ok()
                self._spool.wait_for_change(self._spool.backlog, 0.05)
                continue
            try:
                self._store(batch)
            except Exception as exc:  # an outage: the batch stays in the spool
                self._drop_client()
                self._metrics.insert_failures.inc()
                self._metrics.engine_up.set(0)
                self.engine.failed(self._describe(exc), rows=len(batch.payloads), backlog=self._spool.backlog)
                if self._stop.is_set() and self._out_of_time():
                    return
                self._pause(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP_S)
                continue
            self._metrics.engine_up.set(1)
            self.engine.ok(backlog=self._spool.backlog)
            try:
                self._spool.confirm(batch)
            except OSError as exc:  # stored, but not recorded: the replay is deduplicated
                self.spool_io.failed(f"spool checkpoint: {exc}", backlog=self._spool.backlog)
                self._pause(backoff)
                continue
            self.spool_io.ok()
            backoff = BACKOFF_START_S

    def _pause(self, seconds: float) -> None:
        if self._stop.is_set():
            time.sleep(min(seconds, 0.5))  # draining: keep trying until the deadline
        else:
            self._stop.wait(seconds)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    # ---- one batch ------------------------------------------------------------

    def _store(self, batch: Batch) -> None:
        if batch.rows is not None:  # appended by this process: current columns, no decoding
            self._insert_or_split(batch.rows, batch.token)
            return
        remap = self._remap(batch.meta)
        rows: list[list[Any]] = []
        bad: list[tuple[bytes, str]] = []
        for payload in batch.payloads:
            try:
                row = decode_record(payload)
                if remap is not None:
                    row = remap(row)
                if len(row) != len(self._columns):
                    raise ValueError(f"{len(row)} values for {len(self._columns)} columns")
                rows.append(row)
            except (msgspec.DecodeError, ValueError, TypeError) as exc:
                bad.append((payload, f"undecodable spool record: {exc}"))
        if bad:
            self._quarantine_payloads(bad, f"{batch.token}:u")
        if rows:
            self._insert_or_split(rows, batch.token)

    def _remap(self, meta: bytes) -> Remap | None:
        """How the rows of a segment with this meta record map onto the current columns."""
        if meta not in self._remaps:
            columns = meta_columns(meta) or self._columns
            self._remaps[meta] = None if columns == self._columns else Remap(columns, self._columns)
        return self._remaps[meta]

    def _insert_or_split(self, rows: Sequence[Sequence[Any]], token: str) -> None:
        """Insert; on a data error, bisect down to the bad rows and quarantine them.

        Halves get tokens derived from the parent's, so a replay after a crash
        mid-split inserts nothing twice.
        """
        try:
            self._insert(rows, token)
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            if len(rows) == 1:
                self._quarantine_rows(rows, str(exc), token)
                return
            mid = len(rows) // 2
            self._insert_or_split(rows[:mid], token + "a")
            self._insert_or_split(rows[mid:], token + "b")

    def _client_for_insert(self) -> Client:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _insert(self, rows: Sequence[Sequence[Any]], token: str) -> None:
        client = self._client_for_insert()
        started = time.perf_counter()
        self._insert_events(client, list(zip(*rows)), token)
        self._metrics.flush_seconds.observe(time.perf_counter() - started)
        self._metrics.batches_written.inc()
        self._metrics.rows_written.inc(len(rows))

    # ---- quarantine -------------------------------------------------------------

    def _row_json(self, row: Sequence[Any]) -> str:
        out = dict(zip(self._columns, row))
        if isinstance(out.get("event_id"), int):
            out["event_id"] = str(uuid.UUID(int=out["event_id"]))
        if isinstance(out.get("received_at"), int):
            at = ms_to_datetime(out["received_at"])
            out["received_at"] = at.strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d}"
        return json.dumps(out, ensure_ascii=False, default=str)

    def _quarantine_rows(self, rows: Sequence[Sequence[Any]], reason: str, token: str) -> None:
        self._quarantine([(self._row_json(r), reason) for r in rows], token)

    def _quarantine_payloads(self, bad: list[tuple[bytes, str]], token: str) -> None:
        self._quarantine([(json.dumps({"spool_record_hex": p.hex()}), reason) for p, reason in bad], token)

    def _quarantine(self, items: list[tuple[str, str]], token: str) -> None:
        """Keep rows the engine will not take, with why; never drop them."""
        now = dt.datetime.now(dt.timezone.utc)
        log.error("rows quarantined", extra={"rows": len(items), "reason": items[0][1][:500], "token": token})
        try:
            self._client_for_insert().insert(
                QUARANTINE_TABLE,
                [[now, reason, token, row] for row, reason in items],
                column_names=["quarantined_at", "reason", "batch_token", "row"],
                column_type_names=["DateTime64(3, 'UTC')", "String", "String", "String"],
                settings={"insert_deduplicate": 1, "insert_deduplication_token": token + ":q"},
            )
        except Exception as exc:
            if isinstance(exc, DatabaseError) and getattr(exc, "code", None) not in (60, 81):
                raise  # the engine is down: retry the whole batch later
            # No quarantine table (migrations off?): keep them in a file beside the spool.
            path = Path(self._spool.directory) / "quarantine.jsonl"
            with open(path, "a", encoding="utf-8") as f:
                for row, reason in items:
                    f.write(json.dumps({"at": now.isoformat(), "reason": reason, "batch_token": token,
                                        "row": row}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            log.error("quarantine table unavailable; rows kept in a file", extra={"path": str(path)})
        if self._quarantined is not None:
            self._quarantined.inc(len(items))
