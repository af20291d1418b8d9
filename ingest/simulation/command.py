"""``pbx-analytics simulate``: run a scenario, write what it produced, store it where it belongs.

With ``--target``, every event is either *past* or *live* (docs/simulator.md#live):

* past: already due when sending starts. The PBX would have sent it then, so
  sending it now would stamp it with a wrong time. It is stored through the
  import path (an access log of those events, imported into ``--clickhouse``)
  with its own time, in rounds until nothing is due within half a second;
* live: sent to the service at its second plus the jitter, in real time.

Nothing is ever sent faster than real time: a compressed send would store
compressed arrival times as if they were real (hours of calls in seconds: 100 %
SLA, answer times of milliseconds).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO

from ingest.config import SimulateOptions
from ingest.simulation.config import SimConfig
from ingest.simulation.engine import simulate
from ingest.simulation.model import SimEvent, Simulation
from ingest.simulation.outputs import write_access_log, write_truth
from ingest.simulation.sender import plan_live, quiet_http_log, send_planned

__all__ = ["BackfillError", "backfill_due", "run"]

#: Events due within this much of the moment sending starts are imported rather than sent.
LEAD_S = 0.5


class BackfillError(RuntimeError):
    """The events already due could not be stored through the import path."""


def run(config: SimConfig, options: SimulateOptions, *, out: IO[str] | None = None,
        err: IO[str] | None = None) -> int:
    """Simulate ``config``, write its outputs, send it to ``options.target``: the exit status.
    ``out``/``err``: default ``sys.stdout``/``sys.stderr`` as they are at the call."""
    out, err = out or sys.stdout, err or sys.stderr
    started = time.perf_counter()
    ends_by = options.end_by is not None and not options.target
    result = _ending_by(config, options.end_by) if ends_by else simulate(config)  # type: ignore[arg-type]
    config = result.config
    elapsed = time.perf_counter() - started
    if options.truth:
        write_truth(options.truth, result.truth)
    if options.access_log:
        write_access_log(options.access_log, result.events, tz=options.tz, fmt=options.log_format)
    outcomes = Counter(v["outcome"] for v in result.truth["queue_visits"])
    out.write(
        f"simulated {config.hours:g} h from {config.start:%Y-%m-%d %H:%M:%S} UTC (seed {config.seed}): "
        f"{len(result.events)} events, {len(result.truth['queue_visits'])} queue visits "
        f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}) in {elapsed:.2f}s\n"
    )
    if options.access_log:
        out.write(f"access log: {options.access_log}\n")
    if options.truth:
        out.write(f"truth: {options.truth}\n")
    out.flush()
    if not options.target:
        return 0
    show = err.isatty() if options.progress is None else options.progress
    jitter_s = options.jitter_ms / 1000
    plan = plan_live(result.events, jitter_s, config.seed)
    try:
        _check_target(options.target)
        live_from = 0
        if options.backfill:
            live_from = backfill_due(plan, result.events, options.backfill_to, err=err,
                                     progress=err if show else None)
    except BackfillError as exc:
        err.write(f"pbx-analytics simulate: {exc}\n")
        return 1
    if live_from:
        out.write(f"past: imported {live_from} events due before "
                  f"{time.strftime('%H:%M:%S', time.gmtime(plan[live_from - 1][0]))} UTC with their own times\n")
        out.flush()
    report = send_planned(plan[live_from:], options.target, concurrency=options.concurrency, err=err,
                          progress=err if show else None)
    out.write(report.summary(options.target, jitter_s) + "\n")
    out.flush()
    return 1 if report.failed else 0


def _ending_by(config: SimConfig, end_by: float) -> Simulation:
    """The scenario moved earlier until its last event is at or before ``end_by``: a period
    that ends now, drain included. The drain's length depends on the start (arrivals follow
    the hour of day), so the start moves by the overshoot a few times; if that does not
    settle, the output is cut at the period's end instead."""
    result = simulate(config)
    for _ in range(5):
        late = result.events[-1].t - end_by if result.events else 0
        if late <= 0:
            return result
        config = dataclasses.replace(config, start=config.start - dt.timedelta(seconds=late))
        result = simulate(config)
    return simulate(dataclasses.replace(config, end_mode="cut", start=config.start - dt.timedelta(
        seconds=max(0, config.end_s - int(end_by)))))


def _check_target(target: str) -> None:
    """Fail before storing anything if nothing answers at ``target`` (any HTTP answer will do)."""
    import httpx

    quiet_http_log()
    try:
        httpx.get(f"{target.rstrip('/')}/healthz", timeout=10)
    except httpx.HTTPError as exc:
        raise BackfillError(f"--target {target}: no answer ({exc}); is `pbx-analytics serve` running there?") from None


def backfill_due(plan: list[tuple[float, SimEvent]], events: list[SimEvent], dsn: str, *,
                 err: IO[str], progress: IO[str] | None) -> int:
    """Import the events of ``plan`` that are due (planned before now + :data:`LEAD_S`) into the
    engine at ``dsn``, with their own times; repeat for those that fell due meanwhile.

    Returns how many were imported: the index in ``plan`` of the first event to send live.
    The access log of each round keeps the simulation's order (``events``): the order of one
    second's lines is the only record of their true order."""
    times = [p for p, _ in plan]
    cut = bisect.bisect_right(times, time.time() + LEAD_S)
    if cut == 0:
        return 0
    from ingest.backfill.importer import import_files
    from ingest.storing import clickhouse, migrations

    try:
        client = clickhouse.connect(dsn)
    except clickhouse.EngineBusyError as exc:
        raise BackfillError(
            f"{cut} events are already due (the past part of the period, which ends now) and go through "
            f"the import path with their own times, but {exc} To send only live events, give --hours 0."
        ) from None
    except Exception as exc:
        raise BackfillError(f"cannot store the {cut} events already due at {dsn}: {exc}") from None
    order = {id(ev): i for i, ev in enumerate(events)}
    done = 0
    try:
        migrations.apply_migrations(client)
        with tempfile.TemporaryDirectory(prefix="pbx-simulate-") as folder:
            while cut > done:
                batch = sorted((ev for _, ev in plan[done:cut]), key=lambda ev: order[id(ev)])
                path = Path(folder) / f"past-{done}.log"
                write_access_log(path, batch)
                import_files(client, [path], errors=err, progress=progress, jobs=0)
                done = cut
                cut = bisect.bisect_right(times, time.time() + LEAD_S)
    finally:
        client.close()
    return done
