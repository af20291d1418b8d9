"""Where ``serve`` spends its time under load: py-spy on the serving process.

``python -m bench profile`` starts ``serve``, loads it with ``wrk`` (closed
loop, the throughput mix) and samples it with ``py-spy record`` for the same
time. It writes the collapsed stacks (any flame-graph tool reads
them, e.g. speedscope) under ``bench/results/`` and prints the functions with the most samples: *self*
(the frame on top of the stack) and *total* (anywhere in the stack), as a
share of all samples of all threads. ``--gil`` samples only the thread
holding the GIL: what serializes the one worker.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench._servers import Server
from bench._wrk import run_wrk

__all__ = ["run", "top_frames"]

_LINE = re.compile(r":\d+\)$")


def top_frames(collapsed: str, n: int = 20) -> dict[str, list[tuple[str, float]]]:
    """Self and total shares (%) per frame from py-spy's ``raw`` (collapsed stacks) output."""
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        # "func (path/file.py:123)" -> "func (path/file.py)": one row per function, not per line.
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        if frames and frames[0].startswith(("process ", "thread ")):
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += k
        self_counts[frames[-1]] += k
        for frame in set(frames):
            total_counts[frame] += k
    share = lambda c: [(f, round(100 * v / samples, 1)) for f, v in c.most_common(n)]  # noqa: E731
    return {"samples": samples, "self": share(self_counts), "total": share(total_counts)}


def run(workdir: Path, seconds: float, *, server: str = "uvicorn", gil: bool = False, native: bool = False,
        out_dir: Path, app: str = "serve") -> dict[str, Any]:
    # The virtualenv's own bin directory need not be on PATH.
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if pyspy is None:
        raise RuntimeError("py-spy not found: pip install -e '.[bench]'")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = out_dir / f"profile-{app}-{server}{'-gil' if gil else ''}-{stamp}.txt"
    srv = Server(app, server, workdir / f"profile-{app}-{server}")
    with srv:
        run_wrk(srv.url, 2)  # warm-up
        box: dict[str, Any] = {}
        load = threading.Thread(target=lambda: box.setdefault("wrk", run_wrk(srv.url, seconds + 2)), daemon=True)
        load.start()
        time.sleep(1)
        flags = ["--nonblocking", "--rate", "200", "--duration", str(int(seconds)), "--pid", str(srv.serving_pid())]
        flags += ["--gil"] if gil else []
        flags += ["--native"] if native else []
        subprocess.run([pyspy, "record", "--format", "raw", "-o", str(raw), *flags], check=True,
                       capture_output=True, timeout=seconds + 60)
        load.join(seconds + 60)
    result = top_frames(raw.read_text())
    result.update({"collapsed": str(raw), "server": server, "app": app, "gil": gil,
                   "rps": round(box["wrk"].rps, 1) if "wrk" in box else None})
    return result
