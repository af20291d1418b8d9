"""The spool's files: record framing, segment files, the checkpoint.

On-disk layout of a spool directory::

    LOCK                       flock'ed by the one process using the spool
    checkpoint.slots           two 4 KiB slots, each a record (seq + JSON), overwritten in turn
    00000000000000000042.seg   MAGIC, then records; the first record is the segment's meta
    damaged/                   bytes cut off a segment by recovery, kept for inspection

A record is ``<u32 length><u32 crc><payload>`` (little endian); the CRC-32
covers the length and the payload, so an all-zero header is not a valid
(empty) record. A crash can leave a torn record at the end of the segment
being written; it was never acknowledged (its fsync had not returned), so
recovery cuts the segment at the first record whose length or CRC does not
check out. :func:`scan` is the one parser of records: recovery, replays and
damage handling all read through it.

Segments are zero-filled ahead of the write position (``ZERO_AHEAD``), so a
group commit overwrites allocated blocks and its ``fdatasync`` has no file
size to journal: on ext4/xfs that makes the per-group sync cheaper and less
sensitive to other processes' metadata traffic. Zeros end the scan like a
torn tail does.

The checkpoint is written in place, never allocated anew: two fixed slots
used in turn, each a record (so a torn write fails its CRC) holding a
sequence number and the checkpoint as JSON; the valid slot with the higher
sequence number is the checkpoint. A write is durable once its
``fdatasync`` returns, and a torn one leaves the other slot -- the previous
checkpoint, which is safe to resume from (the write was not acted upon
before it returned). Writing in place needs no free block, so the writer
can drain the spool into ClickHouse, and delete segments, while the disk
is full; a rename would need a new one each time (the JSON ``checkpoint``
file of earlier versions, read once and replaced by the slots).

What the payloads mean is not this module's business (``ingest.events.table``
defines the events record); the spool's logic is in ``ingest.storing.spool``.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import uuid
import zlib
from pathlib import Path

import msgspec

__all__ = [
    "HEADER_SIZE",
    "Checkpoint",
    "SegmentFiles",
    "SpoolClosed",
    "SpoolDiskFull",
    "SpoolError",
    "SpoolFull",
    "SpoolLocked",
    "frame",
    "no_room",
    "read_records",
    "scan",
]

log = logging.getLogger("ingest.storing.spool")

MAGIC = b"PBXSPL02"
_HEADER = struct.Struct("<II")
_LENGTH = struct.Struct("<I")
HEADER_SIZE = _HEADER.size
#: Zero-filled bytes kept ahead of the write position of the active segment.
ZERO_AHEAD = 1 << 20
#: A record longer than this is treated as damage, not as a record.
MAX_RECORD_BYTES = 16 << 20
_SUFFIX = ".seg"
#: Bytes of one checkpoint slot; the file holds two.
SLOT_BYTES = 4096
_SEQ = struct.Struct("<Q")


class SpoolError(RuntimeError):
    """The spool cannot be used (directory, lock, disk)."""


class SpoolLocked(SpoolError):
    """Another process holds the spool directory."""


class SpoolFull(SpoolError):
    """Accepting the record would exceed ``max_bytes``."""


class SpoolClosed(SpoolError):
    """The spool is shutting down and accepts nothing more."""


class SpoolDiskFull(SpoolError):
    """The spool's disk has no room: nothing is accepted until there is (the spool checks itself)."""


#: Errors that mean "no room on this disk for this write": full, over quota, over a file-size limit.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def no_room(exc: BaseException) -> bool:
    """``exc`` says the disk (or the process's quota or file-size limit) has no room."""
    return isinstance(exc, OSError) and exc.errno in _NO_ROOM


# ---- records ------------------------------------------------------------------------


def _crc(length: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(_LENGTH.pack(length)))


def frame(payload: bytes) -> bytes:
    """``payload`` as a record: header (length, CRC) + payload."""
    return _HEADER.pack(len(payload), _crc(len(payload), payload)) + payload


def scan(buf: bytes | memoryview, offset: int = 0, max_records: int | None = None) -> tuple[list[int], int]:
    """Offsets of the valid records in ``buf`` from ``offset`` (at most ``max_records``),
    and where they end: at the first torn, damaged or zero record, or at ``buf``'s end."""
    offsets = []
    size = len(buf)
    while offset + HEADER_SIZE <= size and (max_records is None or len(offsets) < max_records):
        length, crc = _HEADER.unpack_from(buf, offset)
        end = offset + HEADER_SIZE + length
        if length > MAX_RECORD_BYTES or end > size or _crc(length, buf[offset + HEADER_SIZE : end]) != crc:
            break
        offsets.append(offset)
        offset = end
    return offsets, offset


def payloads(buf: bytes, offsets: list[int], end: int) -> list[bytes]:
    """The payloads of the records at ``offsets`` (from :func:`scan`, ending at ``end``)."""
    bounds = [*offsets[1:], end]
    return [buf[start + HEADER_SIZE : stop] for start, stop in zip(offsets, bounds)]


def read_records(fd: int, start: int, limit: int, max_records: int | None) -> tuple[list[bytes], int]:
    """Payloads of the valid records of ``fd`` in ``[start, limit)`` (at most ``max_records``)
    and the offset after the last one; stops at damage."""
    want = limit - start if max_records is None else min(limit - start, max(max_records * 512, 1 << 20))
    data = os.pread(fd, want, start)
    offsets, end = scan(data, 0, max_records)
    if not offsets and HEADER_SIZE <= len(data) < limit - start:
        # One record larger than the read window: read exactly that record.
        (length,) = _LENGTH.unpack_from(data)
        if length <= MAX_RECORD_BYTES and HEADER_SIZE + length <= limit - start:
            data = os.pread(fd, HEADER_SIZE + length, start)
            offsets, end = scan(data, 0, 1)
    return payloads(data, offsets, end), start + end


# ---- files ---------------------------------------------------------------------------


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoint(msgspec.Struct, kw_only=True):
    #: Random id of this spool directory; part of every deduplication token, so
    #: a new spool (directory wiped) never reuses an old token.
    spool_id: str
    #: Everything before (segment, offset) is confirmed stored.
    segment: int
    offset: int
    #: A batch [offset, intent_end) of ``segment`` that may have been inserted.
    intent_end: int | None = None


class Segment:
    """One segment file, as the spool tracks it."""

    __slots__ = ("number", "path", "data_start", "end", "written", "zeroed", "meta", "records", "fd")

    def __init__(self, number: int, path: Path, data_start: int, end: int, meta: bytes, records: int,
                 fd: int = -1) -> None:
        self.number = number
        self.path = path
        self.data_start = data_start  # offset of the first data record
        self.end = end  # bytes that are durable (fsynced) and valid: what the consumer may read
        self.written = end  # bytes written to the file (the active segment runs ahead of `end`)
        self.zeroed = end  # file size: bytes past `written` are zeros
        self.meta = meta
        self.records = records  # data records in the segment (valid ones)
        self.fd = fd  # write descriptor of the active segment, -1 once sealed


class SegmentFiles:
    """The files of one spool directory: segments, damage, the checkpoint."""

    def __init__(self, directory: Path, *, meta: bytes, fsync: bool, zero_ahead: int) -> None:
        self.directory = directory
        self._meta = meta
        self._fsync = fsync
        self._zero_ahead = zero_ahead
        # The checkpoint slots: written by the consumer thread, and once at start-up.
        self._cp_lock = threading.Lock()
        self._slots_path = directory / "checkpoint.slots"
        self._cp_fd = -1
        self._seq = 0  # sequence number of the newest slot
        self._next_slot = 0  # the slot the next write goes to (the older one)

    @property
    def zero_ahead_bytes(self) -> int:
        """Zero-filled bytes a new segment starts with (the room one segment takes at once)."""
        return self._zero_ahead

    def path(self, number: int) -> Path:
        return self.directory / f"{number:020d}{_SUFFIX}"

    def numbers(self) -> list[int]:
        """Numbers of the segment files present, in order."""
        return sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())

    def create(self, number: int) -> Segment:
        """A new, empty, durable segment (MAGIC + meta record), open for writing."""
        path = self.path(number)
        head = MAGIC + frame(self._meta)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            seg = Segment(number, path, len(head), len(head), self._meta, 0, fd)
            pwrite_all(fd, head, 0)
            self.zero_ahead(seg, len(head))
            if self._fsync:
                os.fdatasync(fd)
                fsync_dir(self.directory)
        except OSError:
            # Never held a record: remove it, so a retry (or a start on a full disk) leaves no file.
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return seg

    def zero_ahead(self, seg: Segment, needed: int) -> None:
        """Make the file zero-filled past ``needed`` bytes (cheap fsyncs, see the module doc)."""
        if needed + self._zero_ahead // 2 <= seg.zeroed:
            return
        target = needed + self._zero_ahead
        pwrite_all(seg.fd, bytes(target - seg.zeroed), seg.zeroed)
        seg.zeroed = target

    def load(self, number: int) -> tuple[Segment, list[int]] | None:
        """A segment found at start-up, sealed, with its data records' offsets; its torn tail
        (if any) cut off and kept in ``damaged/``. None if it holds nothing (removed)."""
        path = self.path(number)
        data = path.read_bytes()
        if data[: len(MAGIC)] != MAGIC:
            self._keep_damage(number, 0, data.rstrip(b"\0"))
            path.unlink()
            return None
        offsets, valid_end = scan(data, len(MAGIC))
        if not offsets:  # not even the meta record: created, never used
            self._keep_damage(number, len(MAGIC), data[len(MAGIC) :].rstrip(b"\0"))
            path.unlink()
            return None
        data_start = offsets[1] if len(offsets) > 1 else valid_end
        meta = bytes(data[offsets[0] + HEADER_SIZE : data_start])
        if valid_end < len(data):
            junk = data[valid_end:].rstrip(b"\0")  # zeros are the unused, pre-filled part
            if junk:
                # A torn tail: the group being written when the process died. Its
                # fsync never returned, so none of it was acknowledged.
                self._keep_damage(number, valid_end, junk)
                log.warning("spool segment had a torn tail; cut it",
                            extra={"segment": number, "offset": valid_end, "bytes": len(junk)})
            with open(path, "r+b") as f:  # sealed from now on: drop the tail
                f.truncate(valid_end)
                if self._fsync:
                    os.fsync(f.fileno())
        return Segment(number, path, data_start, valid_end, meta, len(offsets) - 1), offsets[1:]

    def count_records(self, seg: Segment) -> int:
        """Valid data records of a sealed segment (read from the file)."""
        with open(seg.path, "rb") as f:
            return len(scan(f.read(seg.end), seg.data_start)[0])

    def save_damage(self, number: int, offset: int, data: bytes) -> None:
        if not data:
            return
        damaged = self.directory / "damaged"
        damaged.mkdir(exist_ok=True)
        target = damaged / f"{number:020d}-{offset}.bin"
        try:
            target.write_bytes(data)
        except OSError:
            target.unlink(missing_ok=True)
            raise

    def _keep_damage(self, number: int, offset: int, data: bytes) -> None:
        """:meth:`save_damage` of bytes that were never acknowledged (a torn tail, a segment never
        used): on a full disk they are cut without a copy rather than stop the start."""
        try:
            self.save_damage(number, offset, data)
        except OSError as exc:
            if not no_room(exc):
                raise
            log.error("no room to keep unacknowledged spool bytes in damaged/; cut without a copy",
                      extra={"segment": number, "offset": offset, "bytes": len(data), "error": str(exc)})

    # ---- the checkpoint -----------------------------------------------------------------

    def read_checkpoint(self) -> Checkpoint:
        """The newest valid slot of ``checkpoint.slots`` (or an earlier version's JSON
        ``checkpoint``); a new spool's first checkpoint, with a fresh id, if there is neither."""
        with self._cp_lock:
            slots = self._slots_path
            try:
                fd = os.open(slots, os.O_RDWR)
            except FileNotFoundError:
                return self._read_legacy_checkpoint()
            if self._cp_fd >= 0:
                os.close(self._cp_fd)
            self._cp_fd = fd  # written in place from now on
            data = os.pread(fd, 2 * SLOT_BYTES, 0)
            found = []
            for index in range(2):
                slot = data[index * SLOT_BYTES : (index + 1) * SLOT_BYTES]
                offsets, end = scan(slot, 0, 1)
                if offsets:
                    payload = slot[HEADER_SIZE:end]
                    try:
                        cp = msgspec.json.decode(payload[_SEQ.size :], type=Checkpoint)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        continue
                    found.append((_SEQ.unpack_from(payload)[0], index, cp))
            if not found:
                raise SpoolError(f"{slots}: no readable checkpoint (outside damage?); inspect or remove it")
            self._seq, self._next_slot, cp = max(found, key=lambda f: f[0])
            self._next_slot ^= 1  # write over the older slot
            return cp

    def _read_legacy_checkpoint(self) -> Checkpoint:
        path = self.directory / "checkpoint"
        try:
            return msgspec.json.decode(path.read_bytes(), type=Checkpoint)
        except FileNotFoundError:
            return Checkpoint(spool_id=uuid.uuid4().hex[:16], segment=0, offset=0)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Replaced by rename, so never torn; only outside damage gets here.
            raise SpoolError(f"{path}: unreadable checkpoint ({exc}); inspect or remove it") from exc

    def write_checkpoint(self, cp: Checkpoint) -> None:
        """Make ``cp`` the checkpoint, durably (with fsync on). Allocates nothing once the slots
        file exists, so it works on a full disk."""
        with self._cp_lock:
            payload = _SEQ.pack(self._seq + 1) + msgspec.json.encode(cp)
            block = frame(payload).ljust(SLOT_BYTES, b"\0")
            if len(block) > SLOT_BYTES:
                raise SpoolError(f"checkpoint of {len(payload)} bytes does not fit a slot")
            if self._cp_fd < 0:
                self._create_slots(block)
            else:
                pwrite_all(self._cp_fd, block, self._next_slot * SLOT_BYTES)
                if self._fsync:
                    os.fdatasync(self._cp_fd)
            self._seq += 1
            self._next_slot ^= 1

    def _create_slots(self, first: bytes) -> None:
        """The slots file, created whole (``first`` in slot 0) and renamed into place; an earlier
        version's JSON checkpoint is removed once the slots are durable."""
        tmp = self.directory / "checkpoint.slots.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(first + bytes(SLOT_BYTES))
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self._slots_path)
            if self._fsync:
                fsync_dir(self.directory)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self._cp_fd = os.open(self._slots_path, os.O_RDWR)
        self._next_slot = 0
        for legacy in ("checkpoint", "checkpoint.tmp"):
            (self.directory / legacy).unlink(missing_ok=True)

    def close(self) -> None:
        with self._cp_lock:
            if self._cp_fd >= 0:
                os.close(self._cp_fd)
                self._cp_fd = -1
