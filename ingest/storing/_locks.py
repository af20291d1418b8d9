"""Who holds a lock file: for messages that name the other process.

The embedded engine ``flock``s ``<data>/status`` and the spool its ``LOCK``;
``/proc/locks`` lists each such lock with its process. Linux only: elsewhere
(or without ``/proc``) nobody is named and callers fall back to their own
detection.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["flock_holder", "process_label"]


def flock_holder(path: str | os.PathLike[str]) -> int | None:
    """The process holding a ``flock`` on ``path`` if it is not this one (None: free, ours, unknown)."""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key:
            pid = int(fields[4]) if fields[4].isdigit() else 0
            return None if pid == os.getpid() else pid
    return None


def process_label(pid: int | None) -> str:
    """``process 123 (pbx-analytics serve --port 8080)``, or ``another process``."""
    if pid is None:
        return "another process"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"process {pid}"
    words = [a.decode(errors="replace") for a in argv if a]
    # `python -m ingest serve`, `.../bin/pbx-analytics serve`: from the program's name on
    for i, word in enumerate(words):
        if word.endswith("pbx-analytics") or word == "ingest":
            words = ["pbx-analytics", *words[i + 1 :]]
            break
    text = " ".join(" ".join(words).split())
    return f"process {pid} ({text[:80]})" if text else f"process {pid}"
