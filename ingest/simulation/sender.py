"""Send simulated webhooks to a running ``serve``, as GET requests."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import IO

from ingest.simulation.engine import SimEvent

__all__ = ["send_to_target"]


async def _send(events: Sequence[SimEvent], target: str, speed: float, concurrency: int,
                err: IO[str]) -> tuple[int, int]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    failures = 0
    sent = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = events[0].t if events else 0

    async def one(client: httpx.AsyncClient, ev: SimEvent) -> None:
        nonlocal failures, sent
        try:
            for attempt in range(5):
                resp = await client.get(ev.target)
                if resp.status_code == 503:
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")) if attempt < 4 else 0)
                    continue
                if resp.status_code != 200:
                    failures += 1
                    if failures <= 10:
                        err.write(f"simulate: {ev.target[:80]}...: HTTP {resp.status_code} {resp.text[:200]}\n")
                else:
                    sent += 1
                return
            failures += 1
        except httpx.HTTPError as exc:
            failures += 1
            if failures <= 10:
                err.write(f"simulate: {target}: {exc!r}\n")
        finally:
            sem.release()

    async with httpx.AsyncClient(base_url=target.rstrip("/"), timeout=30) as client:
        tasks = set()
        for ev in events:
            if speed > 0:
                delay = t0 + (ev.t - first) / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await sem.acquire()
            task = asyncio.create_task(one(client, ev))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return sent, failures


def send_to_target(events: Sequence[SimEvent], target: str, *, speed: float = 0.0, concurrency: int = 8,
                   err: IO[str] = sys.stderr) -> tuple[int, int]:
    """GET every event from a running ``serve`` at ``target``; ``speed`` 1 = real time, 0 = no waiting.

    Returns (sent, failed). With ``concurrency`` > 1, events of the same
    second may arrive in a different order; the service stamps arrival time.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    return asyncio.run(_send(events, target, speed, concurrency, err))
