"""``pbx-analytics simulate``: run a scenario, write and send what it produced."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import IO

from ingest.config import SimulateOptions
from ingest.simulation.config import SimConfig
from ingest.simulation.engine import simulate
from ingest.simulation.outputs import write_access_log, write_truth
from ingest.simulation.sender import send_to_target

__all__ = ["run"]


def run(config: SimConfig, options: SimulateOptions, *, out: IO[str] | None = None,
        err: IO[str] | None = None) -> int:
    """Simulate ``config``, write its outputs, send it to ``options.target``: the exit status.
    ``out``/``err``: default ``sys.stdout``/``sys.stderr`` as they are at the call."""
    out, err = out or sys.stdout, err or sys.stderr
    started = time.perf_counter()
    result = simulate(config)
    elapsed = time.perf_counter() - started
    if options.truth:
        write_truth(options.truth, result.truth)
    if options.access_log:
        write_access_log(options.access_log, result.events, tz=options.tz, fmt=options.log_format)
    outcomes = Counter(v["outcome"] for v in result.truth["queue_visits"])
    out.write(
        f"simulated {config.hours:g} h from {config.start:%Y-%m-%d %H:%M} UTC (seed {config.seed}): "
        f"{len(result.events)} events, {len(result.truth['queue_visits'])} queue visits "
        f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}) in {elapsed:.2f}s\n"
    )
    if options.access_log:
        out.write(f"access log: {options.access_log}\n")
    if options.truth:
        out.write(f"truth: {options.truth}\n")
    if options.target:
        sent, failed = send_to_target(result.events, options.target, speed=options.speed,
                                      concurrency=options.concurrency, err=err)
        out.write(f"sent {sent} to {options.target}, {failed} failed\n")
        if failed:
            return 1
    out.flush()
    return 0
