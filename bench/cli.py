"""``python -m bench``: run the benchmarks, print tables, write JSON results.

    python -m bench run [throughput|freshness|queries|memory|query_load|import_load|all ...] [--duration S] [--smoke]
    python -m bench profile [--duration S] [--server uvicorn|granian] [--gil]

Results go to ``bench/results/<UTC time>-<parts>.json`` (gitignored) with the
machine they were measured on; docs/benchmarks.md explains each table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import freshness, import_load, memory, profile, queries, query_load, throughput
from bench._machine import load_average, machine

__all__ = ["main"]

PARTS = ("throughput", "freshness", "queries", "memory", "query_load", "import_load")
RESULTS = Path(__file__).resolve().parent / "results"


def print_table(title: str, rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\n## {title}")
    for n, row in enumerate(rows):
        print("| " + " | ".join(c.rjust(w) if n and i > 1 else c.ljust(w) for i, (c, w) in
                                enumerate(zip(row, widths))) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="pbx-analytics benchmarks (issue 7).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run benchmarks and print their tables",
                              description="Run the named benchmarks (default: all) and print a table each.")
    run.add_argument("parts", nargs="*", metavar="PART",
                     help=f"any of {', '.join(PARTS)}, or all (default)")
    run.add_argument("--duration", type=float, default=None,
                     help="seconds of each measured load run (default 15; --smoke: 2)")
    run.add_argument("--smoke", action="store_true",
                     help="a ~20-second check that the harness works: throughput and freshness, uvicorn "
                     "only, short runs; numbers are not meant to be compared")
    run.add_argument("--servers", default=None,
                     help="comma-separated ASGI servers for throughput: uvicorn,granian (default both; "
                     "--smoke: uvicorn)")
    run.add_argument("--soak", type=float, default=None,
                     help="seconds of the memory soak (default 600; --smoke: 6)")
    run.add_argument("--rate", type=float, default=None,
                     help="requests/s of the freshness background load and of the memory soak "
                     "(default 2000: a rate serve sustains on a small shared machine)")
    run.add_argument("--connections", type=int, default=64,
                     help="closed-loop connections of the throughput runs (default 64)")
    run.add_argument("--rounds", type=int, default=None,
                     help="alternating bare/serve runs per server, medians reported (default 3; --smoke: 1)")
    run.add_argument("--paced-connections", dest="paced_connections", type=int, default=64,
                     help="connections of the paced (half the bare rate) runs (default 64)")
    run.add_argument("--serve-env", dest="serve_env", action="append", default=[], metavar="PBX_NAME=VALUE",
                     help="a setting of serve for this run (repeatable), e.g. PBX_SPOOL_COMMIT_WINDOW=0")
    run.add_argument("--days", type=int, default=30, help="queries: simulated days (default 30)")
    run.add_argument("--calls-per-hour", dest="calls_per_hour", type=float, default=120,
                     help="queries: arrivals per queue per hour at the daily peak (default 120)")
    run.add_argument("--import-days", dest="import_days", type=int, default=2,
                     help="import_load: simulated days (gzip logs of a 60-agent centre) imported per loaded "
                     "round (default 2; enough to outlast a 15 s window on 2 shared CPUs)")
    run.add_argument("--out", type=Path, default=RESULTS, help="directory of the JSON results")

    prof = commands.add_parser("profile", help="profile serve under load with py-spy",
                               description="Sample serve with py-spy under the throughput load; print the "
                               "top frames and keep the collapsed stacks under bench/results/.")
    prof.add_argument("--duration", type=float, default=20, help="seconds sampled (default 20)")
    prof.add_argument("--server", default="uvicorn", choices=["uvicorn", "granian"])
    prof.add_argument("--app", default="serve", choices=["serve", "bare", "naive"],
                      help="what to profile (default serve; bare shows the framework's own share)")
    prof.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    prof.add_argument("--native", action="store_true", help="include native (C/C++/Rust) frames")
    return parser


class _Usage(ValueError):
    """A flag of ``python -m bench run`` that cannot be used (exit status 2)."""


def _serve_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.startswith("PBX_"):
            raise _Usage(f"--serve-env {item!r}: expected PBX_NAME=VALUE")
        env[name] = value
    return env


def _parts(args: argparse.Namespace) -> list[str]:
    chosen = args.parts or ["all"]
    unknown = [p for p in chosen if p not in (*PARTS, "all")]
    if unknown:
        raise _Usage(f"unknown part {unknown[0]!r}: choose from {', '.join(PARTS)}, all")
    if args.smoke and "all" in chosen:
        return ["throughput", "freshness"]
    return list(PARTS) if "all" in chosen else list(dict.fromkeys(chosen))


def _servers(args: argparse.Namespace, parts: list[str]) -> list[str]:
    servers = (args.servers or ("uvicorn" if args.smoke else "uvicorn,granian")).split(",")
    unknown = [s for s in servers if s not in ("uvicorn", "granian")]
    if unknown:
        raise _Usage(f"--servers: unknown server {unknown[0]!r} (uvicorn, granian)")
    if "granian" in servers and "throughput" in parts and importlib.util.find_spec("granian") is None:
        raise _Usage("granian is not installed: pip install -e '.[bench]', or --servers uvicorn")
    return servers


def _run(args: argparse.Namespace) -> int:
    try:
        serve_env = _serve_env(args.serve_env)
        parts = _parts(args)
        servers = _servers(args, parts)
    except _Usage as exc:
        print(f"python -m bench run: {exc}", file=sys.stderr)
        return 2
    seconds = args.duration or (2.0 if args.smoke else 15.0)
    report: dict[str, Any] = {"machine": machine(), "smoke": args.smoke, "duration_s": seconds, "results": {}}
    print(f"machine: {report['machine']['nproc']} × {report['machine']['cpu']}, "
          f"{report['machine']['ram_gib']} GiB, load average {report['machine']['load_average']}")
    with tempfile.TemporaryDirectory(prefix="pbx-bench-") as tmp:
        for part in (p for p in PARTS if p in parts):
            _PART_RUNNERS[part](args, Path(tmp), seconds, servers, serve_env, report["results"])
    report["load_average_end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{'-'.join(parts)}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nload average at end {report['load_average_end']}; results: {path}")
    return 0


def _run_throughput(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
                    serve_env: dict[str, str], results: dict[str, Any]) -> None:
    opts = throughput.Options(seconds=seconds, warmup=1.0 if args.smoke else 3.0, servers=servers,
                              apps=["bare", "serve"] if args.smoke else ["bare", "serve", "naive"],
                              connections=args.connections, paced_connections=args.paced_connections,
                              serve_env=serve_env, rounds=args.rounds or (1 if args.smoke else 3))
    res = results["throughput"] = throughput.run(opts, workdir / "throughput")
    print_table("Webhook throughput", throughput.table(res))


def _run_freshness(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
                   serve_env: dict[str, str], results: dict[str, Any]) -> None:
    res = results["freshness"] = freshness.run(workdir / "freshness", max(seconds, 3.0),
                                               background_rate=args.rate or 2000.0)
    print_table("Freshness", freshness.table(res))


def _run_queries(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
                 serve_env: dict[str, str], results: dict[str, Any]) -> None:
    try:
        res = results["queries"] = queries.run(workdir / "queries", days=args.days,
                                               calls_per_hour=args.calls_per_hour)
    except queries.NotReady as exc:
        results["queries"] = {"not_run": str(exc)}
        print(f"\n## Queries\nnot run: {exc}")
        return
    print(f"\ndata: {res['data']}")
    print_table("Dashboard queries", queries.table(res))
    print_table("Materialized view against raw events", queries.gain_table(res))


def _run_memory(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
                serve_env: dict[str, str], results: dict[str, Any]) -> None:
    soak = args.soak or (6.0 if args.smoke else 600.0)
    res = results["memory"] = memory.run(workdir / "memory", soak, rate=args.rate or 2000.0,
                                         sample_every=1.0 if soak < 60 else 5.0)
    print_table("Memory soak", memory.table(res))


def _run_query_load(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
                    serve_env: dict[str, str], results: dict[str, Any]) -> None:
    res = results["query_load"] = query_load.run(workdir / "query_load", seconds, rate=min(args.rate or 2000.0, 1000.0),
                                                 rounds=args.rounds or (1 if args.smoke else 2), serve_env=serve_env)
    print_table("Webhook latency while dashboards query through serve", query_load.table(res))


def _run_import_load(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
                     serve_env: dict[str, str], results: dict[str, Any]) -> None:
    res = results["import_load"] = import_load.run(
        workdir / "import_load", seconds, rate=min(args.rate or 2000.0, 1000.0),
        rounds=args.rounds or (1 if args.smoke else 2), days_per_round=args.import_days, serve_env=serve_env)
    print(f"\nlogs: {res['log_lines']:,} lines; import alone: {res['alone']['lines_per_s']:,} lines/s")
    print_table("Webhook latency while import goes through serve", import_load.table(res))


#: Each part of ``run``, in PARTS order.
_PART_RUNNERS = {"throughput": _run_throughput, "freshness": _run_freshness, "queries": _run_queries,
                 "query_load": _run_query_load, "import_load": _run_import_load,
                 "memory": _run_memory}


def _profile(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="pbx-profile-") as tmp:
        res = profile.run(Path(tmp), args.duration, server=args.server, gil=args.gil, native=args.native,
                          out_dir=RESULTS, app=args.app)
    print(f"{args.app}/{args.server} at {res['rps']} req/s, {res['samples']} samples "
          f"({'GIL holder only' if args.gil else 'all threads'}); collapsed stacks: {res['collapsed']}")
    for kind in ("self", "total"):
        print_table(f"top frames by {kind} share", [["%", "frame"]] + [[f"{p:.1f}", f] for f, p in res[kind]])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _run(args) if args.command == "run" else _profile(args)
