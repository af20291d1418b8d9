"""``serve`` keeps the embedded engine's own threads (refreshes, merges, insert pipelines) below
its webhook threads: an import through the service or the views catching up must not take the
CPU from the webhooks' answers (issue 12; ingest.priority)."""

from __future__ import annotations

import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ingest.testing import ServeProcess


def _threads(pid: int) -> dict[int, tuple[str, int]]:
    """Thread id -> (name, nice) of process ``pid``, from /proc."""
    found = {}
    for entry in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{entry}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry)] = (name, int(fields[16]))  # the 19th field: nice
    return found


def test_the_engines_threads_run_below_the_webhooks(tmp_path: Path, migrated_copy: Callable[[Path], Path]) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)  # serve inherits it
    below = min(19, own + 10)  # PBX_QUERY_NICE's default: 10 steps
    serve = ServeProcess(migrated_copy(tmp_path / "chdata"))
    try:
        deadline = time.monotonic() + 30
        while True:
            threads = _threads(serve.proc.pid)
            engine = {tid: nice for tid, (name, nice) in threads.items() if name in ("BgSchPool", "MergeMutate")}
            if engine and all(nice == below for nice in engine.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert engine, f"no engine threads found among {sorted({n for n, _ in threads.values()})}"
        assert set(engine.values()) == {below}, threads
        assert threads[serve.proc.pid][1] == own  # the main thread: the webhooks' event loop
    finally:
        serve.stop()


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0



def test_serve_has_the_engine_return_freed_memory_past_its_bound(
        tmp_path: Path, migrated_copy: Callable[[Path], Path]) -> None:
    """Past PBX_ENGINE_PURGE_MIB resident, serve has the engine's allocator return the memory its
    queries freed (issue 15; ingest.priority): with a bound of 1 MiB, every pass of the watcher
    issues SYSTEM JEMALLOC PURGE, which the engine runs (only an answered purge is counted), in
    milliseconds, while the service answers."""
    serve = ServeProcess(migrated_copy(tmp_path / "chdata"), env={"PBX_ENGINE_PURGE_MIB": "1"})
    try:
        deadline = time.monotonic() + 30
        while _metric(serve.url, "pbx_engine_purge_seconds_count") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        purges = _metric(serve.url, "pbx_engine_purge_seconds_count")
        assert purges >= 3, serve.log()
        assert _metric(serve.url, "pbx_engine_purge_seconds_sum") / purges < 0.5
        with urllib.request.urlopen(f"{serve.url}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        serve.stop()
