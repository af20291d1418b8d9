"""Send simulated webhooks to a running ``serve`` as the PBX does: live, concurrently, jittered.

A PBX fires its webhooks when things happen, as concurrent HTTP requests, and
sends no timestamps: the service stamps each event on arrival. So the only
honest way to send a simulation over HTTP is in real time. :func:`send_live`
plans each event at its simulated time (an epoch second) plus a random delay
of up to ``jitter_s`` (the network and the PBX's own scheduling), so events of
one instant go out together and arrive in either order; it then sends each at
its planned moment, concurrently, and reports how far behind plan the requests
went out. The truth is computed from the simulated times, so a view over the
arrival times matches it within the jitter plus that lag.

What is already due when sending starts cannot be sent truthfully;
``simulation.command`` stores it through the import path with its own times
(docs/simulator.md#live).

:func:`send_now` sends events as fast as the service takes them, for tests of
the webhook path (names, parameters, decoding) that do not care about times:
every event is stored at its arrival time, not at its simulated one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import sys
import time
from collections.abc import Sequence
from typing import IO

from ingest.simulation.model import SimEvent

__all__ = ["LiveReport", "plan_live", "quiet_http_log", "send_live", "send_now", "send_planned"]

#: Tries of one request answered 503 (the service's spool is full): after Retry-After each time.
ATTEMPTS = 5


@dataclasses.dataclass
class LiveReport:
    """What a send did: requests answered 200, failed, and how far behind plan they went out."""

    sent: int = 0
    failed: int = 0
    #: Largest delay of a request's start behind its planned moment (seconds).
    max_behind_s: float = 0.0
    #: Requests that started more than 50 ms behind plan.
    behind: int = 0
    seconds: float = 0.0

    def summary(self, target: str, jitter_s: float) -> str:
        return (f"live: sent {self.sent} to {target} in real time in {self.seconds:.1f} s, {self.failed} failed; "
                f"jitter up to {jitter_s * 1000:.0f} ms; latest {self.max_behind_s * 1000:.0f} ms behind plan "
                f"({self.behind} over 50 ms)")


def plan_live(events: Sequence[SimEvent], jitter_s: float, seed: int) -> list[tuple[float, SimEvent]]:
    """(planned epoch time, event) for each event, in sending order: its second plus a uniform
    jitter in [0, jitter_s). Same events and seed, same plan."""
    if jitter_s < 0:
        raise ValueError("jitter must be >= 0")
    rng = random.Random(f"jitter:{seed}")
    plan = [(ev.t + rng.random() * jitter_s, ev) for ev in events]
    plan.sort(key=lambda p: p[0])
    return plan


class _Line:
    """The one progress line (``\\r``-rewritten, at most twice a second) on a terminal."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.shown = 0.0
        self.width = 0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not force and now - self.shown < 0.5):
            return
        self.shown = now
        self.stream.write("\r" + text.ljust(self.width))
        self.width = len(text)
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


async def _send(plan: Sequence[tuple[float, SimEvent]], target: str, concurrency: int, err: IO[str],
                progress: IO[str] | None) -> LiveReport:
    import httpx

    report = LiveReport()
    line = _Line(progress)
    sem = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one(client: httpx.AsyncClient, planned: float, ev: SimEvent) -> None:
        async with sem:
            behind = time.time() - planned
            report.max_behind_s = max(report.max_behind_s, behind)
            report.behind += behind > 0.05
            try:
                for attempt in range(ATTEMPTS):
                    resp = await client.get(ev.target)
                    if resp.status_code == 503 and attempt < ATTEMPTS - 1:
                        await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                        continue
                    if resp.status_code == 200:
                        report.sent += 1
                        return
                    report.failed += 1
                    if report.failed <= 10:
                        err.write(f"\nsimulate: {ev.target[:80]}...: HTTP {resp.status_code} {resp.text[:200]}\n")
                    return
            except httpx.HTTPError as exc:
                report.failed += 1
                if report.failed <= 10:
                    err.write(f"\nsimulate: {target}: {exc!r}\n")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=target.rstrip("/"), timeout=30, limits=limits) as client:
        tasks: set[asyncio.Task[None]] = set()
        for i, (planned, ev) in enumerate(plan):
            while (delay := planned - time.time()) > 0:
                line.show(f"live: {report.sent}/{len(plan)} sent, {report.failed} failed, next "
                          f"{time.strftime('%H:%M:%S', time.gmtime(ev.t))} UTC in {delay:.0f} s")
                await asyncio.sleep(min(delay, 0.5))
            task = asyncio.create_task(one(client, planned, ev))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            line.show(f"live: {report.sent}/{len(plan)} sent, {report.failed} failed, {len(tasks)} in flight, "
                      f"at {time.strftime('%H:%M:%S', time.gmtime(ev.t))} UTC")
            if i % 64 == 63:
                await asyncio.sleep(0)  # let requests start between the events of one busy instant
        if tasks:
            await asyncio.gather(*tasks)
    line.close()
    report.seconds = time.monotonic() - started
    return report


def quiet_http_log() -> None:
    """httpx logs each request at INFO: the progress line and the summary count them instead."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def send_live(events: Sequence[SimEvent], target: str, *, jitter_s: float = 0.15, seed: int = 1,
              concurrency: int = 32, err: IO[str] | None = None, progress: IO[str] | None = None) -> LiveReport:
    """GET every event from a running ``serve`` at ``target`` at its simulated second plus a
    seeded jitter (:func:`plan_live`): :func:`send_planned` of that plan."""
    return send_planned(plan_live(events, jitter_s, seed), target, concurrency=concurrency, err=err,
                        progress=progress)


def send_planned(plan: Sequence[tuple[float, SimEvent]], target: str, *, concurrency: int = 32,
                 err: IO[str] | None = None, progress: IO[str] | None = None) -> LiveReport:
    """GET each event of ``plan`` (planned epoch time, event) at its moment, up to ``concurrency``
    requests in flight; 503 answers are retried after Retry-After. Events already due go at
    once, behind plan (:attr:`LiveReport.max_behind_s`): callers store those through the import
    path instead. ``progress``: a stream for the one updating progress line (a terminal), or None."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    quiet_http_log()
    return asyncio.run(_send(plan, target, concurrency, err or sys.stderr, progress))


def send_now(events: Sequence[SimEvent], target: str, *, concurrency: int = 8,
             err: IO[str] | None = None) -> tuple[int, int]:
    """GET every event at once, ``concurrency`` in flight, for tests of the webhook path: each is
    stored at its arrival time, not its simulated one. Returns (sent, failed)."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    quiet_http_log()
    plan = [(0.0, ev) for ev in events]  # all due: no waiting, no jitter
    report = asyncio.run(_send(plan, target, concurrency, err or sys.stderr, None))
    return report.sent, report.failed
