"""The query threads' CPU priority: below the service's own, whatever nice the service runs at,
and again after every call in which the engine may have reset it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import chdb
import pytest

from ingest.querying.server import _niced, below_service


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # Linux: the calling thread


def _in_thread(fn):
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def test_the_query_threads_nice_counts_from_the_services_own() -> None:
    assert below_service(10) == min(19, _own_nice() + 10)
    assert below_service(19) == 19
    assert below_service(0) is None  # 0 steps: priorities left alone


def test_a_service_at_negative_nice_puts_its_query_threads_at_nice_0() -> None:
    """10 steps below a service at nice -10 is nice 0: a priority to set, not "leave alone"
    (the benchmarks run serve at -10; its query threads ran level with the webhooks)."""

    def work() -> tuple[int | None, int]:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)  # this thread as a service at nice -10
        except PermissionError:
            return None, -1
        target = below_service(10)
        _niced(target, lambda: None)
        return target, _own_nice()

    target, after = _in_thread(work)
    if target is None:
        pytest.skip("raising a thread's priority (nice -10) needs CAP_SYS_NICE")
    assert (target, after) == (0, 0)


def test_a_query_thread_is_back_at_the_query_nice_after_the_engine_reset_it(tmp_path: Path) -> None:
    target = below_service(10)

    def work() -> int:
        conn = chdb.connect(str(tmp_path / "engine"))
        try:
            # What every query of the interface sets; with CAP_SYS_NICE (root) the engine applies
            # it to this thread for the query, then resets the thread to nice 0.
            _niced(target, conn.query, f"SELECT 1 SETTINGS os_thread_priority = {target}")
            return _own_nice()
        finally:
            conn.close()

    assert _in_thread(work) == target
