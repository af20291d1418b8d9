"""The embedded engine under the query interface: queries of several connections run at the
same time as each other and as the writer's inserts; one request's state stays its own."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import chdb
import pytest

from ingest.querying import access
from ingest.querying.engine import Engine, QueryRequest
from ingest.querying.errors import ClickHouseError

READER = access.User("default")


@pytest.fixture
def path(tmp_path: Path):
    p = str(tmp_path / "engine")
    holder = chdb.connect(p)  # as serve holds it
    holder.query("CREATE TABLE default.t (a UInt64) ENGINE = MergeTree ORDER BY a")
    yield p
    holder.close()


def test_queries_of_two_connections_run_at_once_while_a_third_inserts(path):
    slow = "SELECT sleepEachRow(0.5) FROM numbers(4) SETTINGS max_block_size = 1, function_sleep_max_microseconds_per_block = 0"
    finished = threading.Event()

    def run_slow():
        c = chdb.connect(path)
        try:
            c.query(slow, "TabSeparated")
        finally:
            c.close()
            finished.set()

    threads = [threading.Thread(target=run_slow) for _ in range(2)]
    for t in threads:
        t.start()
    watcher, writer = chdb.connect(path), chdb.connect(path)
    try:
        deadline = time.monotonic() + 10
        running = 0
        while running < 2 and time.monotonic() < deadline:
            running = int(bytes(watcher.query("SELECT count() FROM system.processes WHERE query LIKE '%sleepEachRow(0.5)%' "
                                              "AND query NOT LIKE '%system.processes%'", "TabSeparated").bytes()))
        assert running == 2, "the two queries did not run at the same time"
        for i in range(20):
            writer.query(f"INSERT INTO default.t VALUES ({i})")
        assert not finished.is_set(), "the inserts waited for the queries"
        assert bytes(writer.query("SELECT count() FROM default.t", "TabSeparated").bytes()) == b"20\n"
    finally:
        for t in threads:
            t.join()
        watcher.close()
        writer.close()


def test_a_session_used_by_two_requests_at_once_is_locked(path):
    e = Engine(path, access.Limits(60, 1 << 30), max_result_bytes=1 << 20)
    e.open()
    first = e.execute(QueryRequest("SELECT 1", READER, "q1", session_id="s"))
    with pytest.raises(ClickHouseError) as locked:
        e.execute(QueryRequest("SELECT 1", READER, "q2", session_id="s"))
    assert locked.value.code == 373
    assert list(first.chunks) == [b"1\n"]
    assert list(e.execute(QueryRequest("SELECT 2", READER, "q3", session_id="s")).chunks) == [b"2\n"]
    e.close()


def test_an_answer_larger_than_the_limit_fails_with_too_many_rows_or_bytes(path):
    e = Engine(path, access.Limits(60, 1 << 30), max_result_bytes=1000)
    e.open()
    with pytest.raises(ClickHouseError) as too_big:
        list(e.execute(QueryRequest("SELECT number FROM numbers(100000)", READER, "q")).chunks)
    assert too_big.value.code == 396
    with pytest.raises(ClickHouseError) as too_big_json:  # formats made whole: the engine's own limit
        list(e.execute(QueryRequest("SELECT number FROM numbers(100000) FORMAT JSON", READER, "q")).chunks)
    assert too_big_json.value.code == 396
    e.close()


def test_the_limits_are_the_readers_and_the_owner_keeps_its_rights(path):
    e = Engine(path, access.Limits(7, 1 << 30, max_threads=1, nice=10), max_result_bytes=1 << 20)
    e.open()
    got = b"".join(e.execute(QueryRequest(
        "SELECT getSetting('max_execution_time'), getSetting('max_threads'), getSetting('readonly')",
        READER, "q")).chunks)
    assert got == b"7\t1\t2\n"
    owner = access.User(access.OWNER, owner=True)
    list(e.execute(QueryRequest("INSERT INTO default.t VALUES (42)", owner, "w")).chunks)
    assert b"".join(e.execute(QueryRequest("SELECT a FROM default.t", READER, "r")).chunks) == b"42\n"
    e.close()
