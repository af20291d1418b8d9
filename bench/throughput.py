"""Webhook throughput: ``serve`` against the bare app and the naive design, per ASGI server.

For each server (uvicorn, granian): the bare app's closed-loop requests/s is
the baseline; ``serve`` and ``naive`` are measured the same way, as ratios of
it. Bare and serve run side by side and are measured alternately, a few
rounds, so a noisy neighbour hits both alike; the ratio is the median of the
rounds' ratios. Then ``serve`` (and the bare app, for reference) is paced at
half the bare app's rate, open loop, and its p50/p99 latency measured from
each request's intended send time. Afterwards the rows ``serve`` stored are counted against
the 200s it answered, so a fast-but-lossy service cannot look good.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._servers import Server
from bench._wrk import WrkResult, run_wrk

__all__ = ["Options", "run"]


@dataclass
class Options:
    seconds: float
    warmup: float
    servers: list[str]
    apps: list[str]
    #: Closed-loop connections (bare, serve and naive alike).
    connections: int = 64
    #: Paced runs: one connection per wrk thread. A connection carries at most 1/latency
    #: requests/s, so a service that acknowledges after an fsync needs enough of them.
    paced_connections: int = 64
    #: Alternating bare/serve closed-loop runs; the table shows medians.
    rounds: int = 3
    #: Extra environment of serve (PBX_* settings), e.g. {"PBX_SPOOL_COMMIT_WINDOW": "0"}.
    serve_env: dict[str, str] = dataclasses.field(default_factory=dict)


def stored_rows(dsn: str) -> int:
    """Rows in pbx.events, read by the CLI once the server has released the engine."""
    out = subprocess.run(
        [sys.executable, "-m", "ingest", "sql", "SELECT count() FROM pbx.events", "--clickhouse", dsn,
         "--format", "TSV"],
        capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"counting rows of {dsn}: {out.stderr}")
    return int(out.stdout.strip())


def _ok(result: WrkResult) -> int:
    return result.requests - result.errors["status"]


def _measure(server: Server, opts: Options) -> tuple[WrkResult, int]:
    """The measured closed-loop run, and the 2xx answered including the warm-up."""
    acked = 0
    if opts.warmup > 0:
        acked += _ok(run_wrk(server.url, opts.warmup, connections=opts.connections))
    result = run_wrk(server.url, opts.seconds, connections=opts.connections)
    return result, acked + _ok(result)


def _median_run(runs: list[WrkResult]) -> WrkResult:
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def run(opts: Options, workdir: Path) -> dict[str, Any]:
    """Per server: bare and serve up together, measured alternately ``rounds`` times (so both see
    the same moments of a shared machine); medians. Then paced runs, then naive on its own."""
    results: dict[str, Any] = {}
    for server_name in opts.servers:
        res: dict[str, Any] = {}
        bare = Server("bare", server_name, workdir / f"bare-{server_name}")
        srv = Server("serve", server_name, workdir / f"serve-{server_name}", env=opts.serve_env)
        try:
            bare.wait_ready()
            srv.wait_ready()
            acked = 0
            if opts.warmup > 0:
                run_wrk(bare.url, opts.warmup, connections=opts.connections)
                acked += _ok(run_wrk(srv.url, opts.warmup, connections=opts.connections))
            pairs: list[tuple[WrkResult, WrkResult]] = []
            for _ in range(opts.rounds):
                b = run_wrk(bare.url, opts.seconds, connections=opts.connections)
                m = run_wrk(srv.url, opts.seconds, connections=opts.connections)
                acked += _ok(m)
                pairs.append((b, m))
            base = _median_run([b for b, _ in pairs])
            measured = _median_run([m for _, m in pairs])
            ratios = sorted(m.rps / b.rps for b, m in pairs if b.rps)
            half = base.rps / 2
            res["bare"] = {"max": base.as_dict(), "rounds_rps": [round(b.rps) for b, _ in pairs]}
            res["bare"]["paced"] = run_wrk(bare.url, opts.seconds, connections=opts.paced_connections,
                                           rate=half).as_dict()
            paced = run_wrk(srv.url, opts.seconds, connections=opts.paced_connections, rate=half)
            acked += _ok(paced)
            res["serve"] = {
                "max": measured.as_dict(), "paced": paced.as_dict(), "acknowledged": acked,
                "rounds_rps": [round(m.rps) for _, m in pairs], "rounds_ratio": [round(r, 3) for r in ratios],
                "ratio_to_bare": round(ratios[len(ratios) // 2], 3) if ratios else None,
            }
            res["bare"]["peak_rss_mib"] = round(bare.peak_rss_kib() / 1024, 1)
            res["serve"]["peak_rss_mib"] = round(srv.peak_rss_kib() / 1024, 1)
        finally:
            bare.stop()
            srv.stop()
        # Every 200 answered (warm-up included) must be a stored row.
        res["serve"]["stored_rows"] = stored_rows(srv.dsn)
        if "naive" in opts.apps:
            naive = Server("naive", server_name, workdir / f"naive-{server_name}")
            with naive:
                result, naive_acked = _measure(naive, opts)
                res["naive"] = {"max": result.as_dict(), "acknowledged": naive_acked,
                                "ratio_to_bare": round(result.rps / base.rps, 3) if base.rps else None,
                                "peak_rss_mib": round(naive.peak_rss_kib() / 1024, 1)}
            res["naive"]["stored_rows"] = stored_rows(naive.dsn)
        res["half_bare_rps"] = round(half, 1)
        res["connections"] = opts.connections
        res["paced_connections"] = opts.paced_connections
        res["rounds"] = opts.rounds
        res["serve_env"] = opts.serve_env
        results[server_name] = res
    return results


def table(results: dict[str, Any]) -> list[list[str]]:
    rows = [["server", "app", "req/s", "× bare", "p50 ms", "p99 ms", "paced req/s", "paced p50", "paced p99",
             "peak RSS MiB", "stored/2xx", "rounds × bare"]]
    for server_name, res in results.items():
        for app in ("bare", "serve", "naive"):
            if not isinstance(res.get(app), dict):
                continue
            e = res[app]
            m = e["max"]
            p = e.get("paced", {})
            pl = p.get("intended_latency_ms", {}) if p else {}
            ratio = "1.000" if app == "bare" else f"{e['ratio_to_bare']:.3f}"
            stored = f"{e['stored_rows']}/{e['acknowledged']}" if "stored_rows" in e else ""
            rows.append([
                server_name, app, f"{m['rps']:.0f}", ratio, f"{m['latency_ms']['p50']:.2f}",
                f"{m['latency_ms']['p99']:.2f}", f"{p['rps']:.0f}" if p else "",
                f"{pl['p50']:.2f}" if pl else "", f"{pl['p99']:.2f}" if pl else "",
                f"{e['peak_rss_mib']:.0f}", stored, " ".join(f"{r:.2f}" for r in e.get("rounds_ratio", [])),
            ])
    return rows
