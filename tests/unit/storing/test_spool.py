"""The spool alone: durability, torn tails, group commit, and the exactly-once hand-off.

The property test drives a spool through random appends, torn writes,
crashes, replays and confirmations, with a store that behaves like
ClickHouse's token deduplication (a token seen before is dropped), and
checks every acknowledged record ends up stored exactly once, in order.
Appends take the service's own path (``Spool.append`` on an event loop, group
commits; ``ingest.testing.append``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.storing._spool_files import frame
from ingest.storing.spool import Batch, Spool, SpoolFull, SpoolLocked
from ingest.testing import append


def _open(path: Path, **kw: object) -> Spool:
    kw.setdefault("max_bytes", 1 << 30)
    kw.setdefault("fsync", False)  # a simulated crash never loses the page cache; the real-process tests fsync
    return Spool(path, meta=b"meta", **kw)  # type: ignore[arg-type]


class DedupStore:
    """What ClickHouse does with ``insert_deduplication_token``: a repeat is dropped."""

    def __init__(self) -> None:
        self.blocks: dict[str, list[bytes]] = {}

    def insert(self, batch: Batch) -> None:
        seen = self.blocks.get(batch.token)
        if seen is not None:
            assert seen == batch.payloads, f"token {batch.token} reused for different records"
            return
        self.blocks[batch.token] = list(batch.payloads)

    def rows(self) -> list[bytes]:
        return [p for block in self.blocks.values() for p in block]


def _drain(spool: Spool, store: DedupStore, max_records: int = 1000) -> None:
    while (batch := spool.next_batch(max_records)) is not None:
        store.insert(batch)
        spool.confirm(batch)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 6)),
        st.tuples(st.just("torn"), st.integers(0, 60), st.booleans()),
        st.tuples(st.just("crash")),
        st.tuples(st.just("insert"), st.integers(1, 5), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops, segment_bytes=st.sampled_from([80, 200, 100_000]))
def test_every_acknowledged_record_is_stored_exactly_once(tmp_path_factory: pytest.TempPathFactory,
                                                          steps: list[tuple], segment_bytes: int) -> None:
    path = tmp_path_factory.mktemp("spool")
    spool = _open(path, segment_bytes=segment_bytes)
    store = DedupStore()
    acked: list[bytes] = []  # append() returned: the HTTP clients got their 200s
    unacked: set[bytes] = set()  # written when the process died: may or may not survive
    n = 0
    for step in steps:
        if step[0] == "append":
            records = [f"r{n + i}".encode() for i in range(step[1])]
            n += step[1]
            append(spool, records)
            acked.extend(records)
        elif step[0] == "torn":
            # The process dies inside a group write: a prefix of it (or garbage) is on disk.
            _, cut, garbage = step
            records = [f"r{n + i}".encode() for i in range(3)]
            n += 3
            unacked.update(records)
            tail = bytes(range(200, 256))[:cut] if garbage else b"".join(map(frame, records))[:cut]
            with open(spool._active.path, "r+b") as f:  # at the write position, over the zero fill
                f.seek(spool._active.written)
                f.write(tail)
            spool.close()
            spool = _open(path, segment_bytes=segment_bytes)
        elif step[0] == "crash":
            spool.close()
            spool = _open(path, segment_bytes=segment_bytes)
        elif step[0] == "insert":
            # Insert one batch; without confirm = the process died between insert and checkpoint.
            _, size, confirmed = step
            batch = spool.next_batch(size)
            if batch is not None:
                store.insert(batch)
                if confirmed:
                    spool.confirm(batch)
    spool.close()
    spool = _open(path, segment_bytes=segment_bytes)
    _drain(spool, store)
    assert spool.backlog == 0
    spool.close()

    stored = store.rows()
    assert len(stored) == len(set(stored)), "a record was stored twice"
    assert [r for r in stored if r not in unacked] == acked, "an acknowledged record was lost or reordered"


def test_torn_tail_is_cut_and_kept_for_inspection(tmp_path: Path) -> None:
    spool = _open(tmp_path)
    append(spool, [b"one", b"two"])
    segment, end = spool._active.path, spool._active.written
    spool.close()
    with open(segment, "r+b") as f:
        f.seek(end)
        f.write(frame(b"three")[:5])
    spool = _open(tmp_path)
    assert spool.backlog == 2
    batch = spool.next_batch(10)
    assert batch is not None and batch.payloads == [b"one", b"two"]
    spool.close()
    assert [p.name.endswith(".bin") for p in (tmp_path / "damaged").iterdir()] == [True]


def test_replayed_batch_has_the_same_bounds_and_token(tmp_path: Path) -> None:
    spool = _open(tmp_path)
    append(spool, [b"a", b"b", b"c"])
    first = spool.next_batch(2)
    append(spool, [b"d"])
    spool.close()  # died after the insert, before confirm
    spool = _open(tmp_path)
    again = spool.next_batch(100)
    assert again == first
    spool.confirm(again)
    rest = spool.next_batch(100)
    assert rest is not None and rest.payloads == [b"c", b"d"] and rest.token != first.token
    spool.close()


def test_a_new_spool_directory_never_reuses_tokens(tmp_path: Path) -> None:
    tokens = []
    for name in ("a", "b"):
        spool = _open(tmp_path / name)
        append(spool, [b"x"])
        batch = spool.next_batch(10)
        assert batch is not None
        tokens.append(batch.token)
        spool.close()
    assert tokens[0] != tokens[1]


def test_confirmed_segments_are_deleted(tmp_path: Path) -> None:
    spool = _open(tmp_path, segment_bytes=100)
    for i in range(20):
        append(spool, [b"x" * 40])
    assert len(list(tmp_path.glob("*.seg"))) > 5
    _drain(spool, DedupStore())
    spool.next_batch(10)
    assert len(list(tmp_path.glob("*.seg"))) == 1
    assert spool.size_bytes < 100
    spool.close()


def test_full_spool_refuses_records(tmp_path: Path) -> None:
    spool = _open(tmp_path, max_bytes=300)
    with pytest.raises(SpoolFull):
        for _ in range(100):
            append(spool, [b"x" * 50])
    spool.close()


def test_second_process_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    spool = _open(tmp_path)
    with pytest.raises(SpoolLocked, match="PBX_SPOOL_DIR"):
        _open(tmp_path)
    spool.close()


def test_group_commit_acknowledges_concurrent_appends_after_one_fsync(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 30, fsync=True, segment_bytes=2000)
    groups: list[int] = []
    spool.on_commit = lambda seconds, records: groups.append(records)

    async def client(i: int) -> None:
        for j in range(10):
            await spool.append(f"e{i}-{j}".encode())

    async def main() -> None:
        spool.start(asyncio.get_running_loop())
        await asyncio.gather(*(client(i) for i in range(50)))
        await spool.stop_accepting()

    asyncio.run(main())
    assert sum(groups) == 500 and len(groups) <= 20, groups  # 50 concurrent clients share each fsync
    assert len(list(tmp_path.glob("*.seg"))) > 2, "segments rotated"
    spool.close()
    spool = _open(tmp_path)
    store = DedupStore()
    _drain(spool, store)
    spool.close()
    stored = store.rows()
    assert sorted(stored) == sorted(f"e{i}-{j}".encode() for i in range(50) for j in range(10))
    for i in range(50):  # each client's records in the order it sent them
        mine = [r for r in stored if r.startswith(f"e{i}-".encode())]
        assert mine == [f"e{i}-{j}".encode() for j in range(10)]


def test_a_full_spool_accepts_again_once_written(tmp_path: Path) -> None:
    """Space comes back when the writer catches up, even with no new record to trigger it."""
    spool = _open(tmp_path, max_bytes=40_000)
    with pytest.raises(SpoolFull):
        for _ in range(1000):
            append(spool, [b"x" * 60])
    _drain(spool, DedupStore())
    assert spool.size_bytes <= 4096 + 100
    append(spool, [b"y" * 60] * 200)
    spool.close()


def test_damage_inside_a_sealed_segment_is_set_aside_and_the_rest_still_flows(tmp_path: Path) -> None:
    """A record failing its CRC at read time (an I/O error under a written segment) never blocks the spool."""
    spool = _open(tmp_path, segment_bytes=150)
    for i in range(6):
        append(spool, [f"rec-{i}".encode() * 5])
    first = sorted(tmp_path.glob("*.seg"))[0]
    with open(first, "r+b") as f:  # damage the first segment's last record under the running spool
        f.seek(spool._segments[min(spool._segments)].end - 3)
        f.write(b"\xff\xff\xff")
    store = DedupStore()
    _drain(spool, store)
    assert spool.backlog == 0
    append(spool, [b"after"])
    _drain(spool, store)
    spool.close()
    rows = store.rows()
    assert len(rows) == 6 and rows[-1] == b"after", rows
    assert list((tmp_path / "damaged").iterdir())


def test_the_zero_fill_ahead_of_the_write_position_is_not_damage(tmp_path: Path) -> None:
    spool = _open(tmp_path, fsync=True)
    append(spool, [b"a", b"b"])
    assert os.path.getsize(spool._active.path) > spool._active.written  # pre-filled
    spool.close()
    spool = _open(tmp_path)
    assert spool.backlog == 2
    spool.close()
    assert not (tmp_path / "damaged").exists()


@pytest.mark.parametrize("fsync", [False, True])
def test_batches_served_from_memory_are_the_ones_on_disk(tmp_path: Path, fsync: bool) -> None:
    """Rows handed over in memory (``append(payload, row)``) give the same batches, bounds and
    tokens as reading the segments back; a small memory bound makes some batches come from disk;
    a batch inserted but not confirmed is replayed from disk with the same token and records."""
    spool = Spool(tmp_path, max_bytes=1 << 30, meta=b"meta", fsync=fsync, segment_bytes=600, memory_records=7)
    store = DedupStore()
    sources = {"memory": 0, "disk": 0}
    expected: list[bytes] = []
    replayed = [""]

    def row_of(payload: bytes) -> tuple[str, int, int]:
        k, i = payload[1:].decode().split("-")
        return ("row", int(k), int(i))

    async def main() -> None:
        spool.start(asyncio.get_running_loop())
        for k in range(60):
            payloads = [f"r{k}-{i}".encode() for i in range(k % 5 + 1)]
            expected.extend(payloads)
            await asyncio.gather(*(spool.append(p, row_of(p)) for p in payloads))
            if k % 3:
                continue
            while (batch := spool.next_batch(4)) is not None:
                if batch.rows is not None:
                    sources["memory"] += 1
                    assert batch.rows == [row_of(p) for p in batch.payloads]
                    on_disk = spool._read(spool._segments[batch.segment], batch.start, batch.end, None)
                    assert (on_disk.payloads, on_disk.end, on_disk.token) == (batch.payloads, batch.end, batch.token)
                else:
                    sources["disk"] += 1
                store.insert(batch)
                if batch.token == replayed[-1] or (k + batch.start) % 2:
                    spool.confirm(batch)
                else:  # inserted, not confirmed (a crash before the checkpoint): the next call replays it
                    replayed.append(batch.token)
        await spool.stop_accepting()

    asyncio.run(main())
    spool.close()  # a crash: whatever is not confirmed is replayed from disk
    spool = _open(tmp_path)
    _drain(spool, store)
    spool.close()
    assert sources["memory"] > 5 and sources["disk"] > 5 and len(replayed) > 3, (sources, replayed)
    assert store.rows() == expected, "every record stored once, in order"


def _slots(path: Path) -> list[tuple[int, int]]:
    """(sequence number, slot index) of the valid slots of ``checkpoint.slots``, newest first."""
    import struct

    from ingest.storing._spool_files import HEADER_SIZE, SLOT_BYTES, scan

    data = (path / "checkpoint.slots").read_bytes()
    found = []
    for index in range(2):
        slot = data[index * SLOT_BYTES:(index + 1) * SLOT_BYTES]
        if scan(slot, 0, 1)[0]:
            found.append((struct.unpack_from("<Q", slot, HEADER_SIZE)[0], index))
    return sorted(found, reverse=True)


def test_the_checkpoint_is_two_slots_written_in_turn_and_a_torn_one_falls_back_to_the_other(tmp_path: Path) -> None:
    from ingest.storing._spool_files import SLOT_BYTES

    spool = _open(tmp_path)
    append(spool, [b"a", b"b", b"c"])
    first = spool.next_batch(2)  # writes the intent
    assert first is not None
    spool.confirm(first)  # writes the confirmation into the other slot
    size = (tmp_path / "checkpoint.slots").stat().st_size
    spool.close()
    assert size == 2 * SLOT_BYTES and not (tmp_path / "checkpoint").exists()
    (newest, newest_slot), (older, _) = _slots(tmp_path)
    assert newest == older + 1
    # A power loss tore the newest write (the confirmation): the intent before it is the checkpoint,
    # so the batch is replayed with the same bounds and token -- deduplicated, never lost.
    with open(tmp_path / "checkpoint.slots", "r+b") as f:
        f.seek(newest_slot * SLOT_BYTES + 10)
        f.write(b"\xff" * 20)
    spool = _open(tmp_path)
    assert spool.next_batch(100) == first
    spool.close()


def test_a_checkpoint_file_of_an_earlier_version_is_read_then_replaced_by_the_slots(tmp_path: Path) -> None:
    import msgspec

    from ingest.storing._spool_files import Checkpoint

    spool = _open(tmp_path)
    append(spool, [b"a", b"b"])
    spool_id, segment, offset = spool.spool_id, spool._checkpoint.segment, spool._checkpoint.offset
    spool.close()
    (tmp_path / "checkpoint.slots").unlink()  # as an earlier version left it: JSON, replaced by rename
    (tmp_path / "checkpoint").write_bytes(msgspec.json.encode(
        Checkpoint(spool_id=spool_id, segment=segment, offset=offset)))
    spool = _open(tmp_path)
    assert spool.spool_id == spool_id and spool.backlog == 2
    batch = spool.next_batch(10)
    assert batch is not None and batch.payloads == [b"a", b"b"]
    spool.close()
    assert (tmp_path / "checkpoint.slots").exists() and not (tmp_path / "checkpoint").exists()
