"""The query threads' CPU priority: below the service's own, whatever nice the service runs at,
and again after every call in which the engine may have reset it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import chdb

from ingest.priority import below_service
from ingest.querying.server import _niced


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
    assert below_service(0) == 0  # 0: the engine leaves priorities alone


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
