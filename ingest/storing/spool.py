"""The durable spool: a write-ahead log between the HTTP handler and ClickHouse.

A webhook is acknowledged only once its record is on disk (``fdatasync``
returned). Records are appended to numbered segment files; a writer drains
them to ClickHouse in batches and records its progress in a checkpoint.

The files (segments, record framing, the checkpoint, damage kept aside) are
``ingest.storing._spool_files``; this module is the logic around them.

Group commit: :meth:`Spool.append` queues a payload and returns an asyncio
future; everything queued in one event-loop iteration is written with one
``write`` and made durable with one ``fdatasync`` (in a helper thread, so the
loop keeps serving), and all of that group's futures complete together.

Exactly-once hand-off: :meth:`Spool.next_batch` persists the batch's bounds
(the *intent*) in the checkpoint before returning it; after a crash the same
bounds are replayed, so the batch's deduplication token (derived from the
spool id and the bounds) is the same and ClickHouse drops the repeat.
:meth:`Spool.confirm` then moves the checkpoint past the batch and deletes
segments that are fully written.

In-memory hand-off: :meth:`Spool.append` may be given, beside the record's
bytes, the row they encode. Once durable, the pair is kept in a bounded
in-memory queue keyed by (segment, offset); :meth:`Spool.next_batch` serves a
batch from it when its records follow the checkpoint contiguously, so the
consumer does not read back and decode what this process just wrote. The
bounds (and so the token) are still spool offsets, persisted as the intent
before the batch is returned; a replay after a crash (or after a failed
insert) reads the segment files, as does anything the queue does not hold.

A full disk: when a segment cannot be started or filled for lack of room
(``ENOSPC``, a quota, a file-size limit), the spool stops accepting --
:meth:`Spool.append` raises :class:`SpoolDiskFull`, answered 503 -- and
checks once a second (on the event loop) whether there is room again: a new
segment started, zero fill included, so every resumption begins with that
much room reserved (it cannot flap record by record at the edge of full).
Meanwhile the consumer drains what the
spool holds: the checkpoint is overwritten in place (no new block needed)
and drained segments are deleted, which is often what makes room. A start
on a full disk works the same way: the service starts, drains, refuses new
webhooks until there is room. One log line when the disk fills, one when
there is room again (``logs.StateLog``).
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from ingest.logs import StateLog
from ingest.storing._locks import flock_holder, process_label
from ingest.storing._spool_files import (
    HEADER_SIZE,
    ZERO_AHEAD,
    Checkpoint,
    Segment,
    SegmentFiles,
    SpoolClosed,
    SpoolDiskFull,
    SpoolError,
    SpoolFull,
    SpoolLocked,
    frame,
    no_room,
    pwrite_all,
    read_records,
    scan,
)

__all__ = ["Batch", "Spool", "SpoolClosed", "SpoolDiskFull", "SpoolError", "SpoolFull", "SpoolLocked"]

log = logging.getLogger(__name__)

#: Seconds between checks for room while the spool's disk is full.
ROOM_CHECK_INTERVAL_S = 1.0


class Batch(NamedTuple):
    """Records ``[start, end)`` of one segment, handed to the writer."""

    spool_id: str
    segment: int
    start: int
    end: int
    meta: bytes
    payloads: list[bytes]
    #: The rows the payloads encode, when served from memory (see the module doc);
    #: None when read back from disk.
    rows: list[Any] | None = None

    @property
    def token(self) -> str:
        """Deterministic: the same bounds give the same token after a replay."""
        return f"{self.spool_id}-{self.segment}-{self.start}-{self.end}"


class Spool:
    """Segment files plus checkpoint in one directory, used by one process.

    Thread model: producers call :meth:`append` on the event loop given to
    :meth:`start`; a helper thread only runs ``fdatasync``; one consumer thread calls
    :meth:`next_batch` / :meth:`confirm`. ``_cond`` guards what they share.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int,
        meta: bytes = b"",
        segment_bytes: int | None = None,
        fsync: bool = True,
        commit_window: float = 0.0,
        memory_records: int = 50_000,
        claim: Callable[[Path, int], None] | None = None,
    ) -> None:
        """``claim``, if given, is called with the directory and its unwritten records once the
        spool is locked and recovered, before anything is replayed; it may refuse the spool by
        raising (``ingest.storing.destination``: a spool belongs to its database)."""
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # Small enough that written segments are deleted long before the limit; 64 MiB at most.
        self.segment_bytes = segment_bytes or min(64 << 20, max(4096, max_bytes // 16))
        self._files = SegmentFiles(self.directory, meta=meta, fsync=fsync,
                                   zero_ahead=min(ZERO_AHEAD, self.segment_bytes))
        self._fsync = fsync
        self._window = commit_window
        self._cond = threading.Condition()  # guards what the consumer reads
        self._pending: list[bytes] = []
        self._pending_rows: list[Any] = []
        #: Durable records with their rows, (segment, offset, end, payload, row), in
        #: spool order, at most ``memory_records`` (past that, the consumer reads disk).
        self._memory: collections.deque[tuple[int, int, int, bytes, Any]] = collections.deque()
        self._memory_max = memory_records
        self._waiters: list[Callable[[BaseException | None], None]] = []
        self._pending_bytes = 0
        self._flush_scheduled = False
        self._syncing = False
        self._sync_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closing = False
        self._suspect = False  # the active segment's tail is in doubt (a failed write or fsync)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        #: The consumer is woken when the backlog stops being empty and when it reaches this
        #: many records (its batch size), not at every group: between those it waits on its
        #: own timer, and a wake-up per group cost a thread switch per group.
        self.wake_at = 1
        #: ``time.monotonic()`` of the last group of records made durable (0: none yet): how
        #: others in the process tell whether webhooks are arriving (``Service.import_yield``).
        self.last_commit = 0.0
        #: Called with (seconds, records) after each fsync'd group (metrics).
        self.on_commit: Callable[[float, int], None] | None = None
        #: Writes and fsyncs of groups (I/O errors; a full disk is ``disk``): failing or not.
        self.writes = StateLog(log, "spool write failed; webhooks get 503 while it fails",
                               "spool writes work again")
        #: Room on the spool's disk: while it has none, webhooks get 503 (``SpoolDiskFull``).
        self.disk = StateLog(log, "spool disk full; new webhooks get 503 until there is room again",
                             "spool disk has room again; accepting webhooks")
        self._no_room: str | None = None  # = disk.error, read on every append
        self._room_check_scheduled = False
        #: Free bytes below which a full spool does not even try to start a segment (its zero fill).
        self.resume_free_bytes = self._files.zero_ahead_bytes + 4096
        self._rotate_error: str | None = None  # last logged failure to start a segment (not room)

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"spool directory {self.directory}: {exc}") from exc
        try:
            self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"spool directory {self.directory}: cannot create its LOCK file: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked(
                f"spool directory {self.directory} is in use by {process_label(flock_holder(self.directory / 'LOCK'))}: "
                "stop it, or give each service its own --spool-dir / PBX_SPOOL_DIR"
            ) from None
        try:
            self._recover()
        except BaseException:
            self._files.close()
            os.close(self._lock_fd)
            raise
        if claim is not None:
            try:
                claim(self.directory, self._backlog)
            except BaseException:
                self.close()
                raise
        if self._backlog:
            log.info("spool has unwritten records from a previous run; replaying them",
                     extra={"records": self._backlog, "segments": len(self._segments) - (self._active is not None)})

    # ---- recovery -------------------------------------------------------

    def _recover(self) -> None:
        cp = self._files.read_checkpoint()
        self._read_fds: dict[int, int] = {}
        offsets_of = self._load_segments(cp.segment)
        cp = self._checkpoint_within_data(cp)
        self._backlog = sum(
            sum(1 for o in offs if o >= cp.offset) if n == cp.segment else len(offs)
            for n, offs in offsets_of.items()
        )
        self._bytes = sum(s.end for s in self._segments.values())
        # Always write into a fresh segment after a start: older ones are sealed,
        # and a number is never reused (tokens name segments).
        self._next_number = max([cp.segment, *self._segments]) + 1
        self._active: Segment | None = None
        self._checkpoint = cp
        try:
            self._start_segment()
        except OSError as exc:
            if not no_room(exc):
                raise SpoolError(f"spool directory {self.directory}: cannot start a segment: {exc}") from exc
            self._out_of_room(exc)  # start anyway: drain what is here, refuse new records
        cp = self._advance(cp)
        try:
            self._set_checkpoint(cp)
        except OSError as exc:  # a new spool (or one from an earlier version) on a full disk
            if not no_room(exc):
                raise SpoolError(f"spool directory {self.directory}: cannot write its checkpoint: {exc}") from exc
            self._out_of_room(exc)
            self._checkpoint = cp  # written by the consumer's first batch, once there is room

    def _load_segments(self, first: int) -> dict[int, list[int]]:
        """Load the segments from number ``first`` on (older ones were fully confirmed before
        the crash; their deletion was pending); their data records' offsets."""
        self._segments: dict[int, Segment] = {}
        offsets_of: dict[int, list[int]] = {}
        for number in self._files.numbers():
            if number < first:
                self._files.path(number).unlink()
                continue
            loaded = self._files.load(number)
            if loaded is not None:
                self._segments[number], offsets_of[number] = loaded
        return offsets_of

    def _checkpoint_within_data(self, cp: Checkpoint) -> Checkpoint:
        """``cp`` moved inside the segments found (outside damage may have shortened them)."""
        seg = self._segments.get(cp.segment)
        if seg is not None and cp.offset > seg.end:
            log.error("spool segment shorter than its checkpoint (outside damage?)",
                      extra={"segment": cp.segment, "offset": cp.offset, "end": seg.end})
            cp = Checkpoint(spool_id=cp.spool_id, segment=cp.segment, offset=seg.end)
        elif seg is not None and cp.offset < seg.data_start:
            cp = Checkpoint(spool_id=cp.spool_id, segment=cp.segment, offset=seg.data_start)
        elif seg is None and self._segments:
            first = self._segments[min(self._segments)]
            cp = Checkpoint(spool_id=cp.spool_id, segment=first.number, offset=first.data_start)
        if cp.intent_end is not None:
            seg = self._segments.get(cp.segment)
            if seg is None or cp.intent_end > seg.end or cp.intent_end <= cp.offset:
                log.error("spool checkpoint intent outside the data; dropping the intent",
                          extra={"segment": cp.segment, "offset": cp.offset, "intent_end": cp.intent_end})
                cp.intent_end = None
        return cp

    # ---- producers ------------------------------------------------------
    #
    # Group commit, driven by the event loop: the first append of a group
    # schedules a flush at the end of the current loop iteration, so every
    # request handled in that iteration joins the group. The flush write()s the
    # group in the loop (page cache, microseconds) and hands the fdatasync to
    # the sync thread; requests arriving meanwhile form the next group, flushed
    # as soon as that sync returns. One thread hop per group, none per request,
    # and none at all with fsync off.

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Accept :meth:`append` calls on ``loop``; start the sync thread (once)."""
        self._loop = loop
        if self._fsync and self._thread is None:
            self._thread = threading.Thread(target=self._sync_loop, name="pbx-spool-sync", daemon=True)
            self._thread.start()
        if self._no_room is not None:
            self._schedule_room_check()

    def append(self, payload: bytes, row: Any = None,
               done: Callable[[BaseException | None], None] | None = None) -> asyncio.Future[None] | None:
        """Queue one record; ``done(None)`` is called once it is durable, ``done(error)`` (a
        :class:`SpoolError`) if its write or fsync failed. Without ``done``, returns a future
        that completes the same way.

        ``row``, if given, is what ``payload`` encodes, handed to the consumer
        from memory (:attr:`Batch.rows`) instead of being read back.

        Raises :class:`SpoolFull` (answer 503) or :class:`SpoolClosed`.
        Call on the loop given to :meth:`start`.
        """
        if self._closing:
            raise SpoolClosed("spool is shutting down")
        if self._no_room is not None:
            raise SpoolDiskFull(self._no_room)
        size = len(payload) + HEADER_SIZE
        if self._bytes + self._pending_bytes + size > self.max_bytes:
            raise SpoolFull(f"spool holds {self._bytes} bytes, limit {self.max_bytes}")
        fut = None
        if done is None:
            fut = self._loop.create_future()  # type: ignore[union-attr]
            done = functools.partial(_settle_future, fut)
        self._pending.append(payload)
        self._pending_rows.append(row)
        self._waiters.append(done)
        self._pending_bytes += size
        if not self._flush_scheduled and not self._syncing:
            self._flush_scheduled = True
            if self._window > 0:
                self._loop.call_later(self._window, self._flush)  # type: ignore[union-attr]
            else:
                self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        return fut

    def _flush(self) -> None:
        """Write the pending group (in the loop); fsync it in the sync thread."""
        self._flush_scheduled = False
        if not self._pending:
            return
        payloads, waiters, rows = self._pending, self._waiters, self._pending_rows
        self._pending, self._waiters, self._pending_rows, self._pending_bytes = [], [], [], 0
        started = time.perf_counter()
        try:
            seg, written = self._write_group(payloads)
        except OSError as exc:
            self._fail(waiters, exc)
            return
        if not self._fsync:
            self._durable(seg, written, payloads, rows)
            _resolve(waiters, None)
            self._maybe_rotate()
            return
        self._syncing = True
        self._sync_queue.put((seg, written, payloads, rows, waiters, started))

    def _sync_loop(self) -> None:
        while (item := self._sync_queue.get()) is not None:
            seg, written, payloads, rows, waiters, started = item
            error: OSError | None = None
            try:
                os.fdatasync(seg.fd)
            except OSError as exc:
                error = exc
            self._loop.call_soon_threadsafe(self._synced, seg, written, payloads, rows, waiters, started, error)  # type: ignore[union-attr]

    def _synced(self, seg: Segment, written: int, payloads: list[bytes], rows: list[Any],
                waiters: list[Callable[[BaseException | None], None]], started: float,
                error: OSError | None) -> None:
        self._syncing = False
        # The bytes are in the file either way: later records start after them.
        # After a failed fsync the consumer reads them from the file (damage checks), not from memory.
        self._durable(seg, written, payloads, rows if error is None else None)
        if error is not None:
            # After a failed fsync the kernel may have dropped those pages: never
            # append acknowledged records behind them.
            self._suspect = True
            self._fail(waiters, error)
        else:
            if self.writes.error is not None:
                self.writes.ok()
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started, len(payloads))
            _resolve(waiters, None)
        self._maybe_rotate()
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    def _fail(self, waiters: list[Callable[[BaseException | None], None]], exc: OSError) -> None:
        """A group could not be made durable: its requests get 503 (``SpoolDiskFull`` when the disk
        has no room, which also stops further appends until it has)."""
        if no_room(exc):
            self._out_of_room(exc)
        if self._no_room is not None:
            _resolve(waiters, SpoolDiskFull(self._no_room))
            return
        self.writes.failed(str(exc), records=len(waiters))
        _resolve(waiters, SpoolError(f"spool write failed: {exc}"))

    def _write_group(self, payloads: list[bytes]) -> tuple[Segment, int]:
        """Append records to the active segment file (not yet durable)."""
        if self._suspect:
            # An fsync of the active segment failed, so its pages may be gone: seal
            # it (recovery cuts what is damaged) and put later records in a fresh file.
            self._maybe_rotate(force=True)
            if self._suspect:
                raise OSError("spool segment unusable and no new one could be started")
        seg = self._active
        buf = b"".join([frame(p) for p in payloads])
        # Positional writes: a group that fails half-way is overwritten by the next one.
        self._files.zero_ahead(seg, seg.written + len(buf))
        pwrite_all(seg.fd, buf, seg.written)
        seg.written += len(buf)
        return seg, len(buf)

    def _durable(self, seg: Segment, written: int, payloads: list[bytes], rows: list[Any] | None) -> None:
        """``written`` more bytes of ``seg`` (``payloads``) are on disk: let the consumer see them."""
        records = len(payloads)
        self.last_commit = time.monotonic()
        with self._cond:
            if rows is not None and len(self._memory) + records <= self._memory_max:
                memory, number, offset = self._memory, seg.number, seg.end
                for payload, row in zip(payloads, rows):
                    end = offset + HEADER_SIZE + len(payload)
                    if row is not None:
                        memory.append((number, offset, end, payload, row))
                    offset = end
            seg.end += written
            seg.records += records
            self._bytes += written
            before = self._backlog
            self._backlog = before + records
            if before == 0 or before < self.wake_at <= before + records:
                self._cond.notify_all()  # wake the consumer

    def _maybe_rotate(self, force: bool = False) -> None:
        """Seal the active segment once it is big enough; start the next one."""
        seg = self._active
        if not force and (seg is None or seg.end < self.segment_bytes or seg.written != seg.end):
            return
        try:
            self._start_segment()
        except OSError as exc:  # keep appending to the current one; retried after the next group
            if no_room(exc):
                self._out_of_room(exc)
            elif str(exc) != self._rotate_error:
                log.error("could not start a new spool segment", extra={"error": str(exc)})
            self._rotate_error = str(exc)

    def _start_segment(self) -> None:
        """Start the next segment and write into it from now on; the active one (if any) is sealed.
        Raises ``OSError`` (and leaves no file) if it cannot be created."""
        new = self._files.create(self._next_number)
        self._next_number += 1
        old = self._active
        with self._cond:
            self._segments[new.number] = new
            self._active = new
            self._bytes += new.end
        if old is not None:
            os.close(old.fd)
            old.fd = -1
        self._suspect = False
        self._rotate_error = None

    # ---- a full disk ------------------------------------------------------

    def _out_of_room(self, exc: OSError) -> None:
        """No room on the spool's disk: refuse appends until :meth:`_check_room` finds room."""
        first = self._no_room is None
        self._no_room = f"the spool's disk is full: {exc.strerror or exc}"
        self._suspect = True  # resume in a fresh segment
        seg = self._active
        if seg is not None and seg.fd >= 0 and first:
            # Its zero fill (and any half-written group) will not be used: give the room back, so
            # that draining the spool is enough to start the next segment even on a small disk.
            try:
                os.ftruncate(seg.fd, seg.written)
                seg.zeroed = seg.written
            except OSError:
                pass
        self.disk.failed(str(exc), directory=str(self.directory), free_bytes=self.disk_free_bytes(),
                         backlog=self._backlog)
        if first:
            self._schedule_room_check()

    def _schedule_room_check(self) -> None:
        if self._loop is not None and not self._room_check_scheduled and not self._closing:
            self._room_check_scheduled = True
            self._loop.call_later(ROOM_CHECK_INTERVAL_S, self._check_room)

    def _check_room(self) -> None:
        """On the loop, once a second while the disk is full: accept again once a new segment
        (with its zero fill) can be started."""
        self._room_check_scheduled = False
        if self._no_room is None or self._closing:
            return
        free = self.disk_free_bytes()
        if self._syncing or self._flush_scheduled or (free is not None and free < self.resume_free_bytes):
            self._schedule_room_check()
            return
        try:
            self._start_segment()
        except OSError as exc:
            if no_room(exc):
                self.disk.failed(str(exc), free_bytes=free)
            else:
                self._no_room = f"the spool's disk cannot be written: {exc.strerror or exc}"
                self.disk.failed(str(exc), free_bytes=free)
            self._schedule_room_check()
            return
        self._no_room = None
        self.disk.ok(free_bytes=free, backlog=self._backlog)

    def disk_free_bytes(self) -> int | None:
        """Bytes free on the spool's disk for this process (None if it cannot be asked)."""
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    @property
    def state(self) -> str:
        """``ok``, ``disk_full`` (refusing new records until there is room) or ``error`` (the
        last group write or fsync failed)."""
        if self._no_room is not None:
            return "disk_full"
        return "error" if self.writes.error is not None else "ok"

    @property
    def error(self) -> str | None:
        """Why the spool is not ``ok``, in a line (None when it is)."""
        return self._no_room or self.writes.error

    # ---- consumer -------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Durable records not yet confirmed stored."""
        return self._backlog

    @property
    def size_bytes(self) -> int:
        """Bytes of all segment files on disk."""
        return self._bytes

    @property
    def spool_id(self) -> str:
        return self._checkpoint.spool_id

    @property
    def replay_pending(self) -> bool:
        """A batch may have been inserted before a crash: :meth:`next_batch` replays it."""
        return self._checkpoint.intent_end is not None

    def wait_for_change(self, backlog: int, timeout: float) -> None:
        """Block while the backlog is still ``backlog`` (at most ``timeout`` s); woken early only
        when it stops being empty or reaches :attr:`wake_at`."""
        with self._cond:
            if self._backlog == backlog:
                self._cond.wait(timeout)

    def wake(self) -> None:
        """Wake a consumer blocked in :meth:`wait_for_change`."""
        with self._cond:
            self._cond.notify_all()

    def next_batch(self, max_records: int) -> Batch | None:
        """The next records to store, at most ``max_records``, from one segment.

        The bounds are made durable before returning, so a batch returned again
        after a crash has the same bounds (and token). None when nothing is due.
        Consumer thread only; checkpoint IO happens outside ``_cond``.
        """
        cp = self._checkpoint
        with self._cond:
            cp = self._advance(cp)
            seg = self._segments.get(cp.segment)
            if seg is None:  # no segment at all: nothing to do
                return None
            limit = seg.end if cp.intent_end is None else cp.intent_end
        if cp.intent_end is not None:  # replay exactly what may have been inserted
            return self._read(seg, cp.offset, limit, None)
        if cp is not self._checkpoint:
            self._set_checkpoint(cp)  # passed whole segments: delete them
        if cp.offset >= limit:
            return None
        batch = self._from_memory(seg, cp.offset, limit, max_records) or self._read(seg, cp.offset, limit, max_records)
        if not batch.payloads:  # the record at the checkpoint is damaged
            return self.next_batch(max_records) if self._skip_damage(seg, cp) else None
        self._set_checkpoint(
            Checkpoint(spool_id=cp.spool_id, segment=seg.number, offset=batch.start, intent_end=batch.end)
        )
        return batch

    def _from_memory(self, seg: Segment, start: int, limit: int, max_records: int) -> Batch | None:
        """The batch from the in-memory queue, if it holds the records at ``start`` (else None).

        Takes records while they follow each other in ``seg`` up to ``limit``;
        the first gap (a record kept only on disk) ends the batch.
        """
        payloads: list[bytes] = []
        rows: list[Any] = []
        number, offset = seg.number, start
        with self._cond:
            memory = self._memory
            while memory and (memory[0][0] < number or (memory[0][0] == number and memory[0][1] < start)):
                memory.popleft()  # already confirmed (or skipped)
            for n, at, end, payload, row in memory:
                if n != number or at != offset or end > limit or len(rows) >= max_records:
                    break
                payloads.append(payload)
                rows.append(row)
                offset = end
        if not rows:
            return None
        return Batch(self._checkpoint.spool_id, number, start, offset, seg.meta, payloads, rows)

    def _read(self, seg: Segment, start: int, limit: int, max_records: int | None) -> Batch:
        """Valid records in ``[start, limit)``, at most ``max_records``; stops at damage."""
        fd = self._read_fds.get(seg.number)
        if fd is None:
            fd = self._read_fds[seg.number] = os.open(seg.path, os.O_RDONLY)
        payloads, end = read_records(fd, start, limit, max_records)
        return Batch(self._checkpoint.spool_id, seg.number, start, end, seg.meta, payloads)

    def _skip_damage(self, seg: Segment, cp: Checkpoint) -> bool:
        """Damage at the checkpoint (after a failed write or fsync): set the rest of
        that segment aside in ``damaged/`` and go on with the next segment (True)."""
        if seg is self._active:
            self._suspect = True  # the producer seals it at its next group; skipped then
            return False
        data = os.pread(self._read_fds[seg.number], seg.end - cp.offset, cp.offset)
        self._files.save_damage(seg.number, cp.offset, data)
        lost = len(scan(data)[0])
        log.error("damaged spool records set aside", extra={"segment": seg.number, "offset": cp.offset,
                                                             "bytes": len(data), "valid_records_after": lost})
        with self._cond:
            # Valid records after the damage are in damaged/ too, no longer in the backlog.
            self._backlog = self._recount_backlog(seg.number)
            nxt = self._advance(Checkpoint(spool_id=cp.spool_id, segment=seg.number, offset=seg.end))
        self._set_checkpoint(nxt)
        return True

    def _recount_backlog(self, after: int) -> int:
        """Records in the segments after ``after`` (rare: only after damage)."""
        return sum(self._files.count_records(seg) for number, seg in self._segments.items() if number > after)

    def confirm(self, batch: Batch) -> None:
        """``batch`` is stored: move the checkpoint past it, durably."""
        cp = self._checkpoint
        if (cp.segment, cp.offset, cp.intent_end) != (batch.segment, batch.start, batch.end):
            raise SpoolError(f"confirm of {batch.token} does not match the checkpoint {cp}")
        done = Checkpoint(spool_id=cp.spool_id, segment=batch.segment, offset=batch.end)
        with self._cond:
            done = self._advance(done)
        self._set_checkpoint(done)
        with self._cond:
            self._backlog -= len(batch.payloads)

    def _advance(self, cp: Checkpoint) -> Checkpoint:
        """``cp`` moved over sealed segments it has fully passed (so they can be deleted)."""
        seg = self._segments.get(cp.segment)
        if seg is None:  # no segment yet (a start on a full disk), or the checkpoint's is gone
            if not self._segments:
                return cp
            seg = self._segments[min(self._segments)]
            cp = Checkpoint(spool_id=cp.spool_id, segment=seg.number, offset=seg.data_start)
        while cp.intent_end is None and cp.offset >= seg.end and seg is not self._active:
            later = [n for n in self._segments if n > seg.number]
            if not later:  # the last one, and no active segment to move on to (a full disk)
                break
            seg = self._segments[min(later)]
            cp = Checkpoint(spool_id=cp.spool_id, segment=seg.number, offset=seg.data_start)
        return cp

    def _set_checkpoint(self, cp: Checkpoint) -> None:
        """Persist ``cp``, then delete the segments wholly before it."""
        self._files.write_checkpoint(cp)
        self._checkpoint = cp
        with self._cond:
            old = [self._segments.pop(n) for n in [n for n in self._segments if n < cp.segment]]
            self._bytes -= sum(seg.end for seg in old)
        for seg in old:
            fd = self._read_fds.pop(seg.number, None)
            if fd is not None:
                os.close(fd)
            seg.path.unlink(missing_ok=True)

    # ---- shutdown -------------------------------------------------------

    async def stop_accepting(self, timeout: float = 5.0) -> None:
        """Refuse new appends; wait until the queued ones are durable and answered."""
        self._closing = True
        deadline = time.monotonic() + timeout
        while (self._pending or self._flush_scheduled or self._syncing) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    def close(self) -> None:
        """Release files and the lock (after :meth:`stop_accepting`, or after a simulated crash)."""
        self._closing = True
        if self._thread is not None:
            self._sync_queue.put(None)
            self._thread.join(5)
            self._thread = None
        with self._cond:
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            if self._active is not None and self._active.fd >= 0:
                os.close(self._active.fd)
                self._active.fd = -1
            self._files.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


def _resolve(waiters: list[Callable[[BaseException | None], None]], error: SpoolError | None) -> None:
    for done in waiters:
        try:
            done(error)
        except Exception:  # one waiter's failure must not keep the others from their answer
            log.exception("spool waiter failed")


def _settle_future(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():  # the client went away
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
