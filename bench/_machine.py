"""What the numbers were measured on: CPU, memory, load, versions."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["load_average", "machine"]


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return 0.0


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except OSError:
        return None


def machine() -> dict[str, Any]:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": _mem_gib(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": _git_commit(),
        "versions": {d: _version(d) for d in ("litestar", "uvicorn", "granian", "uvloop", "httptools",
                                              "msgspec", "clickhouse-connect", "chdb", "chdb-core")},
        "wrk": wrk.strip(),
    }
