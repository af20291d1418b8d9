"""Who gets the CPU first inside ``serve``: the webhooks.

A webhook's answer waits only for the spool (``ingest.storing.spool``); everything the embedded
engine does -- queries, the owner's inserts (an import through the service), the refreshable
views catching up, merges -- can wait. On a small machine they compete for the same cores, so
all of it runs ``PBX_QUERY_NICE`` steps below the service (Linux nice values; relative, as
``nice`` is). The query interface's own threads set theirs (``ingest.querying.server``); the
engine's threads are the engine's, so :class:`EngineThreads` lowers them from outside.

The same watcher keeps the process's resident memory down: the engine's allocator (jemalloc)
keeps pages its queries freed for seconds, per arena, and the next refresh run's threads allocate
beside them (docs/benchmarks.md, issue 15). Past ``PBX_ENGINE_PURGE_MIB`` it asks the engine to
return them (``SYSTEM JEMALLOC PURGE``: milliseconds, ~0.1 s a GiB returned).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

__all__ = ["EngineThreads", "below_service", "resident_bytes", "set_thread_nice"]

log = logging.getLogger(__name__)

_TASKS = "/proc/self/task"


def below_service(steps: int) -> int | None:
    """The nice value ``steps`` below the calling thread's (the service's, when called from
    ``serve``'s main thread), at most 19; 0 steps: None (priorities left alone). A service at nice -10
    gets 0: a value to set, not "leave alone".

    Relative, as ``nice`` is: a service started under ``nice -n 10`` (a shared machine, the
    benchmarks) keeps its engine below its webhook threads, where an absolute 10 would put
    them level."""
    if not steps or not hasattr(os, "getpriority"):
        return None
    return min(19, os.getpriority(os.PRIO_PROCESS, 0) + steps)


def set_thread_nice(value: int | None, tid: int | None = None) -> bool:
    """Lower thread ``tid``'s (default: the caller's) CPU priority to nice ``value`` (Linux: a
    thread id is a process id for ``setpriority``); None: left as it is. True if it was lowered."""
    if value is not None and hasattr(os, "setpriority"):
        tid = threading.get_native_id() if tid is None else tid
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < value:
                os.setpriority(os.PRIO_PROCESS, tid, value)
                return True
        except OSError:  # the thread ended meanwhile, or no /proc-style ids here
            log.debug("could not lower thread %s's priority", tid, exc_info=True)
    return False


class EngineThreads:
    """Keeps the embedded engine's own threads at nice ``value`` while the service runs.

    chDB runs the engine inside this process: its refreshes (``BgSchPool``), merges
    (``MergeMutate``) and insert and query pipelines (``ThreadPool``...) are threads here, named by
    the engine, created when it needs them, and, where the process may raise priorities (root),
    put back to nice 0 after each query that set ``os_thread_priority``. Measured during an
    import through the service (docs/benchmarks.md, issue 12): the views catching up on the
    imported rows took more CPU than the webhooks' event loop, at the same priority.

    Every ``interval`` seconds this lowers every thread that is neither a Python thread (the
    service's own: the webhooks' loop, the spool, the writer, the query interface, which sets
    its own) nor unnamed (a native thread that kept the process's name). Lowering needs no
    privilege; it is never raised back.

    And every ``interval`` seconds, while the process's resident set is above ``purge_above``
    bytes, it calls ``purge`` (the service: ``SYSTEM JEMALLOC PURGE``). 0: never.
    """

    def __init__(self, value: int | None, interval: float = 0.5, purge: Callable[[], object] | None = None,
                 purge_above: int = 0) -> None:
        self.value = value
        self.interval = interval
        self.purge = purge if purge_above > 0 else None
        self.purge_above = purge_above
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._names: dict[int, str] = {}  # thread id -> name (its comm), as read once

    def start(self) -> None:
        if (self.value is None and self.purge is None) or not os.path.isdir(_TASKS) or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="pbx-engine-nice", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def lower(self) -> int:
        """One pass: lower the engine's threads now; how many were above ``value``."""
        if self.value is None:
            return 0
        own = _read(f"{_TASKS}/{os.getpid()}/comm")
        entries = os.listdir(_TASKS)
        python = {t.native_id for t in threading.enumerate()}  # after the listing: none started between
        seen, lowered = set(), 0
        for entry in entries:
            tid = int(entry)
            seen.add(tid)
            if tid in python:
                continue
            name = self._names.get(tid)
            if name is None:
                name = self._names[tid] = _read(f"{_TASKS}/{entry}/comm")
            if name and name != own:
                lowered += set_thread_nice(self.value, tid)
        for gone in self._names.keys() - seen:
            del self._names[gone]
        return lowered

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.lower()
                self.purge_if_above()
            except Exception:  # never the service's problem: log once in a while and go on
                log.debug("lowering the engine's threads or purging failed", exc_info=True)

    def purge_if_above(self) -> bool:
        """Call ``purge`` if the resident set is above ``purge_above``; True if it was called."""
        if self.purge is None or resident_bytes() <= self.purge_above:
            return False
        self.purge()
        return True


def resident_bytes() -> int:
    """This process's resident set (``/proc/self/statm``); 0 where there is none."""
    fields = _read("/proc/self/statm").split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") if len(fields) > 1 else 0


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""
