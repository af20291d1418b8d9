"""Run ``wrk`` with ``bench/mix.lua`` and read the JSON line its ``done()`` prints."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["WrkResult", "run_wrk"]

SCRIPT = Path(__file__).with_name("mix.lua")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    #: Paced runs: latency from each request's intended send time (coordinated-omission corrected).
    intended_latency_ms: dict[str, float] = field(default_factory=dict)
    #: Paced runs: answers matched to a request's intended send time (all of them, normally).
    matched: int = 0
    events: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "intended_latency_ms": self.intended_latency_ms,
            "matched": self.matched,
            "events": self.events,
        }


def _ms(us: dict[str, float]) -> dict[str, float]:
    return {k: round(v / 1000, 3) for k, v in us.items() if k != "count"}


def run_wrk(url: str, seconds: float, *, connections: int = 32, threads: int = 1, rate: float | None = None,
            timeout_s: float = 5.0) -> WrkResult:
    """Closed loop at ``connections`` when ``rate`` is None, else open loop: ``rate`` requests/s
    overall, due on a fixed schedule per wrk thread and sent by whichever of the thread's
    connections is free (``bench/mix.lua``). A paced run needs more connections than
    ``rate`` × the latency it is to measure: when all are busy, the requests falling due wait
    in the client and are charged to the server (from their intended send time)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found: apt-get install wrk (.ci/run does)")
    tag = str(int(time.time() * 1000) % 10**12)
    if rate is None:
        mode = "max"
    else:
        mode = str(int(1e6 * threads / rate))
    cmd = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
           "--timeout", f"{timeout_s:g}s", "-s", str(SCRIPT), url, "--", tag, mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("BENCHJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line.removeprefix("BENCHJSON "))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=data["errors"],
        latency_ms=_ms(data["latency_us"]),
        intended_latency_ms=_ms(data.get("intended_latency_us", {})),
        matched=int(data.get("intended_latency_us", {}).get("count", 0)),
        events=data["events"],
    )
