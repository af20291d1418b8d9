"""Webhook throughput: ``serve`` against a do-nothing Litestar app on the fastest server we have.

The baseline is the bare app (``bench.apps.bare_app``: the same 17 routes,
handlers that do nothing) on granian, the fastest ASGI server available to us
(on uvicorn when granian is not installed, as in CI). Every contender is
measured as a ratio of it:

* ``bare/uvicorn`` -- the same app on uvicorn, for reference;
* ``serve/uvicorn`` -- the product, ``pbx-analytics serve`` (uvicorn with the
  front door's protocol and its fast path; spool with fsync on, defaults);
* with ``variants``: ``serve-asgi/uvicorn`` and ``serve-asgi/granian`` --
  serve's ASGI app (webhooks answered without a framework, but through an ASGI
  server's request cycle) on plain uvicorn and on granian: the alternatives
  the front door was chosen against (docs/benchmarks.md).

All run side by side and are measured in turn, a few rounds, so a noisy
neighbour hits all alike; a ratio is the median of the rounds' ratios. Then
the baseline and every serve are paced at half the baseline's rate, open loop
(a schedule of due requests over a pool of connections, ``bench/mix.lua``),
latency measured from each request's intended send time, and the CPU time each
used per request counted from ``/proc`` by thread kind (event loop, other
Python threads, engine): a per-request cost the neighbours' load moves far
less than it moves req/s or p99. Afterwards the rows each
serve stored are counted against the 200s it answered, so a fast-but-lossy
service cannot look good.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._servers import Server, cpu_seconds
from bench._wrk import WrkResult, run_wrk

__all__ = ["Options", "run", "table"]

#: The serves whose rows are counted (they hold an engine).
SERVES = ("serve", "serve-asgi")


@dataclass
class Options:
    seconds: float
    warmup: float
    #: ``app/server`` of the baseline, then of each contender.
    baseline: str = "bare/granian"
    contenders: list[str] = dataclasses.field(default_factory=lambda: ["bare/uvicorn", "serve/uvicorn"])
    #: Also measure the naive design (one INSERT per request) on uvicorn.
    naive: bool = False
    #: Closed-loop connections (every app alike).
    connections: int = 64
    #: Paced runs: the pool of one wrk thread's keep-alive connections; the schedule's due
    #: requests go out on whichever is free. It must exceed rate × the latency measured (a
    #: service that answers after an fsync holds each connection for that long), else the
    #: client's queue is what is measured. At most serve's PBX_MAX_CONNECTIONS_PER_CLIENT
    #: (128): past it, connections are shed with 503s.
    paced_connections: int = 120
    #: Closed-loop rounds over all apps; the table shows medians.
    rounds: int = 3
    #: Extra environment of every serve (PBX_* settings), e.g. {"PBX_SPOOL_COMMIT_WINDOW": "0"}.
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


def _median_run(runs: list[WrkResult]) -> WrkResult:
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def _server(name: str, workdir: Path, opts: Options) -> Server:
    app, server = name.split("/")
    env = opts.serve_env if app in SERVES else {}
    return Server(app, server, workdir / name.replace("/", "-"), env=env)


def run(opts: Options, workdir: Path) -> dict[str, Any]:
    """Baseline and contenders up together, measured in turn ``rounds`` times; medians and
    ratios; then each serve paced at half the baseline's rate; then rows counted."""
    names = [opts.baseline, *[c for c in opts.contenders if c != opts.baseline]]
    servers = {name: _server(name, workdir, opts) for name in names}
    runs: dict[str, list[WrkResult]] = {name: [] for name in names}
    acked = dict.fromkeys(names, 0)
    res: dict[str, Any] = {}
    try:
        for srv in servers.values():
            srv.wait_ready()
        if opts.warmup > 0:
            for name, srv in servers.items():
                acked[name] += _ok(run_wrk(srv.url, opts.warmup, connections=opts.connections))
        for _ in range(opts.rounds):
            for name, srv in servers.items():
                result = run_wrk(srv.url, opts.seconds, connections=opts.connections)
                acked[name] += _ok(result)
                runs[name].append(result)
        base_runs = runs[opts.baseline]
        half = _median_run(base_runs).rps / 2
        for name, srv in servers.items():
            ratios = sorted(m.rps / b.rps for b, m in zip(base_runs, runs[name]) if b.rps)
            entry: dict[str, Any] = {
                "max": _median_run(runs[name]).as_dict(),
                "rounds_rps": [round(r.rps) for r in runs[name]],
                "rounds_ratio": [round(r, 3) for r in ratios],
                "ratio_to_baseline": round(ratios[len(ratios) // 2], 3) if ratios else None,
            }
            if name == opts.baseline or name.split("/")[0] in SERVES:
                before = cpu_seconds(srv.pids())
                paced = run_wrk(srv.url, opts.seconds, connections=opts.paced_connections, rate=half)
                after = cpu_seconds(srv.pids())
                acked[name] += _ok(paced)
                entry["paced"] = paced.as_dict()
                # CPU per answered request at the same rate: what the neighbours' load barely moves.
                entry["paced"]["cpu_us_per_request"] = {
                    kind: round(1e6 * (after[kind] - before[kind]) / max(paced.requests, 1), 1) for kind in after}
            entry["peak_rss_mib"] = round(srv.peak_rss_kib() / 1024, 1)
            res[name] = entry
    finally:
        for srv in servers.values():
            srv.stop()
    for name, srv in servers.items():
        if name.split("/")[0] in SERVES:
            res[name]["acknowledged"] = acked[name]
            res[name]["stored_rows"] = stored_rows(srv.dsn)
    if opts.naive:
        naive = Server("naive", "uvicorn", workdir / "naive-uvicorn")
        with naive:
            if opts.warmup > 0:
                acked_naive = _ok(run_wrk(naive.url, opts.warmup, connections=opts.connections))
            result = run_wrk(naive.url, opts.seconds, connections=opts.connections)
            base = _median_run(base_runs).rps
            res["naive/uvicorn"] = {"max": result.as_dict(), "acknowledged": acked_naive + _ok(result),
                                    "ratio_to_baseline": round(result.rps / base, 3) if base else None,
                                    "peak_rss_mib": round(naive.peak_rss_kib() / 1024, 1)}
        res["naive/uvicorn"]["stored_rows"] = stored_rows(naive.dsn)
    return {"baseline": opts.baseline, "half_baseline_rps": round(half, 1), "connections": opts.connections,
            "paced_connections": opts.paced_connections, "rounds": opts.rounds, "serve_env": opts.serve_env,
            "runs": res}


def _cpu(per: dict[str, float] | None) -> str:
    if not per:
        return ""
    return f"{sum(per.values()):.0f} ({per['loop']:.0f}+{per['python']:.0f}+{per['engine']:.0f})"


def table(results: dict[str, Any]) -> list[list[str]]:
    rows = [["app/server", "req/s", "× baseline", "p50 ms", "p99 ms", "paced req/s", "paced p50", "paced p99",
             "paced CPU µs/req (loop+python+engine)", "peak RSS MiB", "stored/2xx", "rounds × baseline"]]
    for name, e in results["runs"].items():
        m = e["max"]
        p = e.get("paced", {})
        pl = p.get("intended_latency_ms", {}) if p else {}
        stored = f"{e['stored_rows']}/{e['acknowledged']}" if "stored_rows" in e else ""
        rows.append([
            name + (" (baseline)" if name == results["baseline"] else ""), f"{m['rps']:.0f}",
            f"{e['ratio_to_baseline']:.3f}", f"{m['latency_ms']['p50']:.2f}", f"{m['latency_ms']['p99']:.2f}",
            f"{p['rps']:.0f}" if p else "", f"{pl['p50']:.2f}" if pl else "", f"{pl['p99']:.2f}" if pl else "",
            _cpu(p.get("cpu_us_per_request")) if p else "",
            f"{e['peak_rss_mib']:.0f}", stored, " ".join(f"{r:.2f}" for r in e.get("rounds_ratio", [])),
        ])
    return rows
