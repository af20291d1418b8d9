"""``serve`` keeps the embedded engine's own threads (refreshes, merges, insert pipelines) below
its webhook threads: an import through the service or the views catching up must not take the
CPU from the webhooks' answers (issue 12; ingest.priority)."""

from __future__ import annotations

import os
import time
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
