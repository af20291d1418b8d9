"""Memory soak: ``serve`` under steady paced traffic, its RSS sampled as it runs.

Flat means: after warm-up (the first fifth of the run), resident memory does
not keep growing. Reported: RSS at the end of warm-up, at the end, the peak
(VmHWM), and the slope of a least-squares line through the post-warm-up
samples in MiB per minute.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench._servers import Server
from bench._wrk import run_wrk

__all__ = ["run"]


def _slope_per_min(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in samples) / var * 60


def run(workdir: Path, seconds: float, *, rate: float, sample_every: float, server: str = "uvicorn") -> dict[str, Any]:
    srv = Server("serve", server, workdir / f"soak-{server}")
    with srv:
        result_box: dict[str, Any] = {}
        load = threading.Thread(
            target=lambda: result_box.setdefault("wrk", run_wrk(srv.url, seconds, connections=64, rate=rate)),
            name="bench-soak-wrk", daemon=True,
        )
        started = time.monotonic()
        load.start()
        samples: list[tuple[float, float]] = []
        while load.is_alive():
            samples.append((time.monotonic() - started, srv.rss_kib() / 1024))
            load.join(sample_every)
        samples.append((time.monotonic() - started, srv.rss_kib() / 1024))
        peak = srv.peak_rss_kib() / 1024
    load_result = result_box.get("wrk")
    warm = [s for s in samples if s[0] >= seconds / 5] or samples
    return {
        "server": server,
        "seconds": seconds,
        "rate": rate,
        "achieved_rps": round(load_result.rps, 1) if load_result else None,
        "errors": load_result.error_count if load_result else None,
        "p99_ms": load_result.intended_latency_ms.get("p99") if load_result else None,
        "latency_ms": load_result.intended_latency_ms if load_result else None,
        "rss_after_warmup_mib": round(warm[0][1], 1),
        "rss_end_mib": round(samples[-1][1], 1),
        "peak_rss_mib": round(peak, 1),
        "slope_mib_per_min": round(_slope_per_min(warm), 2),
        "samples": [(round(t, 1), round(v, 1)) for t, v in samples],
    }


def table(result: dict[str, Any]) -> list[list[str]]:
    return [
        ["server", "seconds", "req/s", "errors", "RSS after warm-up MiB", "RSS end MiB", "peak MiB",
         "slope MiB/min"],
        [result["server"], f"{result['seconds']:.0f}", str(result["achieved_rps"]), str(result["errors"]),
         str(result["rss_after_warmup_mib"]), str(result["rss_end_mib"]), str(result["peak_rss_mib"]),
         str(result["slope_mib_per_min"])],
    ]
