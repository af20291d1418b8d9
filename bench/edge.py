"""Legitimate webhooks while a stranger floods the service with connections.

``serve`` runs with its defaults. A PBX-like load -- ``wrk`` with the
call-centre mix, paced at ``rate`` on keep-alive connections, plus a client
that opens a new connection for every webhook (a PBX that does not keep
connections alive) -- is measured twice: quiet, then while an attacker holds
as many connections as it can. The attacker is a separate process, needs no
token, and connects from ``addresses`` loopback addresses (127.0.9.x), as
many connections from each as it may: half idle (nothing sent), half
half-sent (a request line and one header, then a byte every two seconds,
slowloris style); it reopens each connection as soon as the service closes
it. Reported: webhooks answered 2xx of those sent and their latency (from
each request's intended send time), the new-connection client's failures and
latency, the connections the service held (its ``pbx_connections_open``,
sampled), and the edge's counters (shed, evicted, timed out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench._servers import Server
from bench._wrk import run_wrk
from ingest.testing import exchange, metric_values

__all__ = ["run", "table"]

_COUNTERS = ('pbx_connections_shed_total{reason="max_connections_per_client"}',
             'pbx_connections_shed_total{reason="max_connections"}',
             'pbx_connections_closed_total{reason="evicted"}',
             'pbx_connections_closed_total{reason="header_timeout"}')


class _NewConnections(threading.Thread):
    """One webhook per new connection at ``rate`` per second; latencies and failures."""

    def __init__(self, port: int, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.interval, self.seconds = port, 1 / rate, seconds
        self.latencies: list[float] = []
        self.failures = 0

    def run(self) -> None:
        start = time.monotonic()
        n = 0
        while (due := start + n * self.interval) < start + self.seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            request = f"GET /call_end?call_id=new-conn-{time.time_ns()} HTTP/1.1\r\nHost: pbx\r\n\r\n".encode()
            try:
                status = exchange(self.port, request, timeout=5)[0]
            except OSError:
                status = 0
            if status == 200:
                self.latencies.append(time.monotonic() - due)
            else:
                self.failures += 1
            n += 1


def _quantile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000 if values else 0.0


def _phase(srv: Server, seconds: float, rate: float, connections: int, new_rate: float) -> dict[str, Any]:
    before = metric_values(srv.url)
    opened: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            try:
                opened.append(metric_values(srv.url).get("pbx_connections_open", 0))
            except OSError:
                pass

    sampler = threading.Thread(target=sample, daemon=True)
    newconn = _NewConnections(srv.port, new_rate, seconds)
    sampler.start()
    newconn.start()
    result = run_wrk(srv.url, seconds, connections=connections, rate=rate)
    newconn.join(seconds + 30)
    stop.set()
    sampler.join(5)
    after = metric_values(srv.url)
    return {
        "wrk": result.as_dict(),
        "ok": result.requests - result.errors["status"] - result.errors["timeout"],
        "new_connections": {"sent": len(newconn.latencies) + newconn.failures, "failures": newconn.failures,
                            "p50_ms": round(_quantile(newconn.latencies, 0.5), 2),
                            "p99_ms": round(_quantile(newconn.latencies, 0.99), 2)},
        "connections_open_max": max(opened, default=0),
        "counters": {k: after.get(k, 0) - before.get(k, 0) for k in _COUNTERS},
    }


def run(workdir: Path, seconds: float, *, rate: float = 1000.0, connections: int = 16, new_rate: float = 20.0,
        addresses: int = 40) -> dict[str, Any]:
    srv = Server("serve", "uvicorn", workdir / "edge")
    with srv:
        run_wrk(srv.url, 2, connections=connections)  # warm-up
        quiet = _phase(srv, seconds, rate, connections, new_rate)
        attacker = subprocess.Popen(
            [sys.executable, "-m", "bench.edge", "--port", str(srv.port), "--addresses", str(addresses),
             "--seconds", str(seconds + 10)],
            stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(5)  # let it fill the service
            attack = _phase(srv, seconds, rate, connections, new_rate)
        finally:
            out, _ = attacker.communicate(timeout=seconds + 60)
        attack["attacker"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        defaults = metric_values(srv.url)
    return {"rate": rate, "connections": connections, "new_rate": new_rate, "addresses": addresses,
            "quiet": quiet, "attack": attack, "open_at_end": defaults.get("pbx_connections_open", 0)}


def table(results: dict[str, Any]) -> list[list[str]]:
    rows = [["phase", "webhooks 2xx/sent", "p50 ms", "p99 ms", "new-conn failed/sent", "new-conn p99 ms",
             "service held (max)", "shed per client", "shed total", "evicted", "header timeouts"]]
    for phase in ("quiet", "attack"):
        e = results[phase]
        w = e["wrk"]
        c = e["counters"]
        rows.append([phase, f"{e['ok']}/{w['requests']}", f"{w['intended_latency_ms']['p50']:.2f}",
                     f"{w['intended_latency_ms']['p99']:.2f}",
                     f"{e['new_connections']['failures']}/{e['new_connections']['sent']}",
                     f"{e['new_connections']['p99_ms']:.1f}", f"{e['connections_open_max']:.0f}",
                     *(f"{c[k]:.0f}" for k in _COUNTERS)])
    return rows


# ---- the attacker (a process of its own: python -m bench.edge --port P) -------------------------


async def _hold(port: int, source: str, half_sent: bool, until: float, stats: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((source, 0))
            await loop.sock_connect(sock, ("127.0.0.1", port))
            stats["attempts"] += 1
            stats["open"] += 1
            stats["max_open"] = max(stats["max_open"], stats["open"])
            try:
                if half_sent:
                    await loop.sock_sendall(sock, b"GET /call_end?call_id=x HTTP/1.1\r\nX-a: ")
                while loop.time() < until:
                    try:
                        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 2.0)
                    except TimeoutError:
                        if half_sent:
                            await loop.sock_sendall(sock, b"a")
                        continue
                    if not data:
                        break
            finally:
                stats["open"] -= 1
        except OSError:
            stats["errors"] += 1
        finally:
            sock.close()
        await asyncio.sleep(0.05)  # then reconnect at once, as an attacker would


async def _attack(port: int, addresses: int, per_address: int, seconds: float) -> dict[str, int]:
    stats = {"attempts": 0, "open": 0, "max_open": 0, "errors": 0}
    until = asyncio.get_running_loop().time() + seconds
    tasks = [_hold(port, f"127.0.9.{a + 1}", n % 2 == 1, until, stats)
             for a in range(addresses) for n in range(per_address)]
    await asyncio.gather(*tasks)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description="hold connections to a service (bench/edge.py's attacker)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--addresses", type=int, default=40)
    parser.add_argument("--per-address", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    stats = asyncio.run(_attack(args.port, args.addresses, args.per_address, args.seconds))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
