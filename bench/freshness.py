"""Freshness: from a webhook's 2xx to the event being visible to queries.

The embedded engine is one process: only the process that serves can query
its data. So this benchmark runs the product's front door (uvicorn set up as
``serve`` sets it up, ``receiving.server.uvicorn_config``, default settings)
in a thread of the benchmark process, and queries through a second client of the same engine.
Meanwhile ``wrk`` sends background traffic at a fixed rate, so batches form
as they would under load.

A probe is a ``pbx_agent_login`` of an agent id of its own, sent every
``probe_interval``; a poller queries every ``poll_interval`` for the probes
not yet seen. A probe's freshness is the time from its 2xx to the end of the
first query that returned it: an upper bound, too high by at most one poll.
"""

from __future__ import annotations

import dataclasses
import http.client
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench._servers import free_port
from bench._wrk import run_wrk

__all__ = ["VISIBILITY_QUERIES", "run"]

#: Where a probe must become visible: name -> SQL returning the probe ids seen among ``{ids}``.
#: A probe is an agent logging in as a new agent, so it shows in the wallboard's live view too.
VISIBILITY_QUERIES: dict[str, str] = {
    "pbx.events": "SELECT userid FROM pbx.events WHERE event = 'pbx_agent_login' AND userid IN {ids:Array(String)}",
    "pbx.agents_now (live view)": "SELECT agent FROM pbx.agents_now WHERE agent IN {ids:Array(String)}",
}


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(workdir: Path, seconds: float, *, background_rate: float, probe_interval: float = 0.1,
        poll_interval: float = 0.01) -> dict[str, Any]:
    import uvicorn

    from ingest.config import Settings
    from ingest.receiving.server import uvicorn_config
    from ingest.storing import clickhouse

    workdir.mkdir(parents=True, exist_ok=True)
    dsn = f"chdb://{workdir / 'chdata'}"
    # Default settings; any directory or file the service keeps (a spool) goes under workdir.
    paths = {f.name: str(workdir / f.name) for f in dataclasses.fields(Settings) if f.name.endswith(("_dir", "_path"))}
    settings = Settings.from_env({}, clickhouse_url=dsn, log_level="WARNING", **paths)
    port = free_port()
    config = uvicorn_config(settings, host="127.0.0.1", port=port)  # serve's own front door
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="bench-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("in-process serve did not start")
        time.sleep(0.05)

    acked: dict[str, float] = {}  # probe id -> monotonic time of its 2xx
    seen: dict[str, dict[str, float]] = {name: {} for name in VISIBILITY_QUERIES}
    lock = threading.Lock()
    stop = threading.Event()
    query_ms: list[float] = []

    def poll() -> None:
        client = clickhouse.connect(dsn)
        try:
            while not stop.is_set() or any(len(s) < len(acked) for s in seen.values()):
                with lock:
                    snapshot = dict(acked)
                for name, sql in VISIBILITY_QUERIES.items():
                    waiting = [c for c in snapshot if c not in seen[name]]
                    if not waiting:
                        continue
                    started = time.monotonic()
                    found = client.query(sql, parameters={"ids": waiting}).result_rows
                    now = time.monotonic()
                    query_ms.append((now - started) * 1000)
                    for (probe,) in found:
                        seen[name].setdefault(probe, now)
                if stop.is_set() and time.monotonic() > stop_at + 30:
                    return  # never seen: reported as missing
                time.sleep(poll_interval)
        finally:
            client.close()

    background = threading.Thread(
        target=lambda: run_wrk(f"http://127.0.0.1:{port}", seconds, connections=32, rate=background_rate),
        name="bench-wrk", daemon=True,
    )
    poller = threading.Thread(target=poll, name="bench-poll", daemon=True)
    stop_at = float("inf")
    try:
        background.start()
        poller.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        run_id = int(time.time())
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            n += 1
            probe = f"fresh.{run_id}.{n}"
            conn.request("GET", f"/pbx_agent_login?userid={probe}&exten=9{n}")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                with lock:
                    acked[probe] = time.monotonic()
            time.sleep(probe_interval)
        conn.close()
        stop_at = time.monotonic()
        stop.set()
        background.join(seconds + 60)
        poller.join(60)
    finally:
        stop.set()
        server.should_exit = True
        thread.join(60)

    result: dict[str, Any] = {
        "probes": len(acked),
        "background_rate": background_rate,
        "poll_interval_ms": poll_interval * 1000,
        "query_ms_p50": round(statistics.median(query_ms), 2) if query_ms else None,
        "flush_interval_s": settings.flush_interval,
        "visible": {},
    }
    for name in VISIBILITY_QUERIES:
        lags = [(seen[name][c] - t) * 1000 for c, t in acked.items() if c in seen[name]]
        result["visible"][name] = {
            "seen": len(lags),
            "missing": len(acked) - len(lags),
            "p50_ms": round(_percentile(lags, 50), 1) if lags else None,
            "p99_ms": round(_percentile(lags, 99), 1) if lags else None,
            "max_ms": round(max(lags), 1) if lags else None,
        }
    return result


def table(result: dict[str, Any]) -> list[list[str]]:
    rows = [["visible in", "probes", "seen", "p50 ms", "p99 ms", "max ms", "background req/s", "poll ms"]]
    for name, v in result["visible"].items():
        rows.append([name, str(result["probes"]), str(v["seen"]), str(v["p50_ms"]), str(v["p99_ms"]),
                     str(v["max_ms"]), f"{result['background_rate']:.0f}",
                     f"{result['poll_interval_ms']:.0f} (+{result['query_ms_p50']} query)"])
    return rows
