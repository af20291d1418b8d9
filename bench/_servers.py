"""Start the benchmarked apps as subprocesses, each in its own scratch directory.

The process harness (free port, readiness on ``/healthz``, graceful stop, the
log) is the tests' own, ``ingest.testing``; this adds the benchmarked apps and
their memory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ingest.testing import REPO, Subprocess, free_port

__all__ = ["REPO", "Server", "cpu_seconds", "free_port", "process_tree", "rss_kib"]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (granian serves from a child worker process)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            continue
    return pids


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of one process, in KiB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU time (user + system) the threads of ``pids`` have used so far, by kind: ``loop``
    (a process's main thread: the event loop of serve and of the bare apps), ``python`` (its
    other Python threads: spool sync, writer, query interface), ``engine`` (every other
    thread: chDB's inserts, merges and view refreshes; granian's Rust workers)."""
    out = dict.fromkeys(("loop", "python", "engine"), 0.0)
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            kind = "loop" if int(task) == pid else "python" if name.startswith("python") else "engine"
            out[kind] += (int(fields[11]) + int(fields[12])) / _TICK
    return out


class Server(Subprocess):
    """One app (``bare``, ``naive``, ``serve`` or ``serve-asgi``) on one ASGI server, on a free port.

    ``serve`` is the real command line, ``python -m ingest serve`` (on uvicorn);
    the rest go through ``python -m bench.apps``. Every process runs in
    ``workdir`` (the embedded engine's data and any relative path land there).
    Use as a context manager: ready on entry, stopped on exit.
    """

    def __init__(self, app: str, server: str, workdir: Path, env: dict[str, str] | None = None) -> None:
        if app == "serve" and server != "uvicorn":
            app = "serve-asgi"  # serve runs on uvicorn; on another server, its ASGI app
        self.app, self.server = app, server
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.dsn = f"chdb://{workdir / 'chdata'}"
        if app == "serve" and server == "uvicorn":
            # The query interface on a free port (never the default 8123, shared by every run on the machine).
            self.query_port = free_port()
            cmd = [sys.executable, "-m", "ingest", "serve", "--port", str(port), "--query-port", str(self.query_port),
                   "--clickhouse", self.dsn]
        else:
            cmd = [sys.executable, "-m", "bench.apps", app, server, str(port)]
        super().__init__(cmd, workdir / f"{app}-{server}.log", port, cwd=workdir, name=f"{app}/{server}", env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "PBX_CLICKHOUSE_URL": self.dsn,
            "PBX_LOG_LEVEL": "WARNING",
            **(env or {}),
        })

    def wait_ready(self, timeout: float = 90.0) -> None:
        super().wait_ready(timeout)

    def __enter__(self) -> Server:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def rss_kib(self) -> int:
        """Resident memory of the whole process tree now."""
        return sum(rss_kib(p) for p in self.pids())

    def peak_rss_kib(self) -> int:
        """Peak resident memory (VmHWM) of the largest process of the tree: the serving one."""
        return max((rss_kib(p, "VmHWM") for p in self.pids()), default=0)

    def serving_pid(self) -> int:
        """The process that runs the app (granian's worker, or uvicorn's only process)."""
        return max(self.pids(), key=lambda p: rss_kib(p))
