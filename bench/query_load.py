"""Webhook latency while dashboards query the embedded engine through ``serve`` (issue 11).

One ``serve`` (the real command line) takes paced webhooks from ``wrk``; in the *loaded*
rounds, ``clients`` threads also run dashboard-like queries (the contract views, as Grafana's
plugin sends them: POST, Native, client_protocol_version 54460, gzip) through its query
interface without pause. *Baseline* rounds are the same webhooks without queries. Rounds
alternate (baseline, loaded, baseline, loaded, ...) on the same process and data, and the
table reports the webhook latency of each kind (median over rounds) and its ratio to the
baseline of the same run: the figure that means something on a shared machine.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench._servers import Server
from bench._wrk import run_wrk

__all__ = ["QUERIES", "run", "table"]

#: Panels of the kind the dashboards show: live views, 15-minute statistics, raw-event series.
QUERIES = [
    "SELECT * FROM pbx.queue_now",
    "SELECT * FROM pbx.agents_now",
    "SELECT * FROM pbx.queue_stats_15m ORDER BY 1 DESC LIMIT 200",
    "SELECT * FROM pbx.agent_stats_15m ORDER BY 1 DESC LIMIT 200",
    "SELECT toStartOfInterval(toDateTime(received_at), INTERVAL 60 second) AS time, event, count() AS n "
    "FROM pbx.events WHERE received_at > now() - INTERVAL 1 DAY GROUP BY time, event ORDER BY time",
    "SELECT * FROM pbx.queue_calls ORDER BY 1 DESC LIMIT 500",
]
GRAFANA = urlencode({"default_format": "Native", "client_protocol_version": "54460"})


def _query_loop(port: int, stop: threading.Event, done: list[int], failed: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    i = 0
    while not stop.is_set():
        sql = QUERIES[i % len(QUERIES)]
        i += 1
        try:
            conn.request("POST", f"/?{GRAFANA}", body=sql.encode(), headers={"Accept-Encoding": "gzip"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                failed.append(body.decode(errors="replace")[:200])
            done.append(1)
        except OSError as exc:
            failed.append(str(exc))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.close()


def run(workdir: Path, seconds: float, *, rate: float, rounds: int = 2, clients: int = 2,
        serve_env: dict[str, str] | None = None) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"rate": rate, "seconds": seconds, "clients": clients, "queries": QUERIES,
                              "baseline": [], "loaded": []}
    with Server("serve", "uvicorn", workdir / "serve", env=serve_env) as server:
        run_wrk(f"{server.url}/", 3.0, rate=rate, connections=16)  # data for the queries, warm caches
        for _ in range(rounds):
            for kind in ("baseline", "loaded"):
                stop = threading.Event()
                done: list[int] = []
                failed: list[str] = []
                threads = [threading.Thread(target=_query_loop, args=(server.query_port, stop, done, failed))
                           for _ in range(clients if kind == "loaded" else 0)]
                for t in threads:
                    t.start()
                try:
                    res = run_wrk(f"{server.url}/", seconds, rate=rate, connections=16)
                finally:
                    stop.set()
                    for t in threads:
                        t.join()
                result[kind].append({
                    "intended_latency_ms": res.intended_latency_ms, "latency_ms": res.latency_ms,
                    "rps": round(res.rps, 1), "errors": res.error_count,
                    "queries_per_s": round(len(done) / seconds, 1), "query_failures": failed[:3],
                    "query_failure_count": len(failed),
                })
    for kind in ("baseline", "loaded"):
        for p in ("p50", "p99"):
            result[f"{kind}_{p}_ms"] = statistics.median(r["intended_latency_ms"][p] for r in result[kind])
    result["p99_ratio"] = round(result["loaded_p99_ms"] / result["baseline_p99_ms"], 2)
    result["p50_ratio"] = round(result["loaded_p50_ms"] / result["baseline_p50_ms"], 2)
    result["queries_per_s"] = statistics.median(r["queries_per_s"] for r in result["loaded"])
    return result


def table(res: dict[str, Any]) -> list[list[str]]:
    rows = [["webhooks", "dashboard queries", "p50 ms", "p99 ms", "p99 / baseline", "queries/s"]]
    for kind in ("baseline", "loaded"):
        rows.append([f"{res['rate']:g}/s", "none" if kind == "baseline" else f"{res['clients']} clients, no pause",
                     f"{res[f'{kind}_p50_ms']:.2f}", f"{res[f'{kind}_p99_ms']:.2f}",
                     "1.00" if kind == "baseline" else f"{res['p99_ratio']:.2f}",
                     "-" if kind == "baseline" else f"{res['queries_per_s']:g}"])
    return rows
