"""``python -m bench``: run the benchmarks, print tables, write JSON results.

    python -m bench run [throughput|edge|freshness|queries|memory|query_load|import|import_load|all ...] [--duration S] [--smoke]
    python -m bench run scale --dir DIR [--repo CHECKOUT ...]   (issue 15: a year of data; never in "all")
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

from bench import edge, freshness, import_load, importing, memory, profile, queries, query_load, throughput
from bench._machine import load_average, machine
from bench.scale import run as scale

__all__ = ["main"]

PARTS = ("throughput", "edge", "freshness", "queries", "memory", "query_load", "import", "import_load")
#: Parts run only when named: they take hours and need a data directory.
LONG_PARTS = ("scale",)
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
                     help=f"any of {', '.join(PARTS + LONG_PARTS)}, or all (default: {', '.join(PARTS)})")
    run.add_argument("--duration", type=float, default=None,
                     help="seconds of each measured load run (default 15; --smoke: 2)")
    run.add_argument("--smoke", action="store_true",
                     help="a ~20-second check that the harness works: throughput and freshness, uvicorn "
                     "only, short runs; numbers are not meant to be compared")
    run.add_argument("--baseline", default=None, choices=["granian", "uvicorn"],
                     help="throughput: the server of the bare Litestar app every figure is a ratio of "
                     "(default granian, the fastest available; uvicorn with --smoke or without granian)")
    run.add_argument("--variants", action="store_true",
                     help="throughput: also serve's ASGI app on plain uvicorn and on granian (what the "
                     "front door was chosen against), and the naive one-INSERT-per-request design")
    run.add_argument("--soak", type=float, default=None,
                     help="seconds of the memory soak (default 600; --smoke: 6)")
    run.add_argument("--rate", type=float, default=None,
                     help="requests/s of the freshness background load and of the memory soak "
                     "(default 2000: a rate serve sustains on a small shared machine), and of the "
                     "webhooks during the edge part's flood (default 1000)")
    run.add_argument("--connections", type=int, default=64,
                     help="closed-loop connections of the throughput runs (default 64)")
    run.add_argument("--rounds", type=int, default=None,
                     help="alternating bare/serve runs per server, medians reported (default 3; --smoke: 1)")
    run.add_argument("--paced-connections", dest="paced_connections", type=int, default=120,
                     help="connections of the paced (half the bare rate) runs, one wrk thread's pool "
                     "(default 120: under serve's 128 per client, and more than rate × 8 ms at the "
                     "rates this machine reaches)")
    run.add_argument("--serve-env", dest="serve_env", action="append", default=[], metavar="PBX_NAME=VALUE",
                     help="a setting of serve for this run (repeatable), e.g. PBX_SPOOL_COMMIT_WINDOW=0")
    run.add_argument("--days", type=int, default=30, help="queries: simulated days (default 30)")
    run.add_argument("--calls-per-hour", dest="calls_per_hour", type=float, default=120,
                     help="queries: arrivals per queue per hour at the daily peak (default 120)")
    run.add_argument("--import-days", dest="import_days", type=int, default=3,
                     help="import: simulated days of access logs, one gzip file each (~90k lines a day; "
                     "default 3)")
    run.add_argument("--repeat", type=int, default=3,
                     help="import: runs of each speed measurement, medians reported (default 3)")
    run.add_argument("--memory-lines", dest="memory_lines", default="",
                     help="import: comma-separated log lengths (lines) whose peak RSS to measure, e.g. "
                     "500000,3000000 (default none: minutes each)")
    run.add_argument("--import-load-days", dest="import_load_days", type=int, default=2,
                     help="import_load: simulated days (gzip logs of a 60-agent centre) each round's log is "
                     "copied from, forward in time, until it outlasts the window (default 2)")
    run.add_argument("--import-load-batches", dest="import_load_batches", default="", metavar="ROWS,ROWS",
                     help="import_load: the import's --batch-size in the loaded rounds, comma-separated; with "
                     "several, each round measures each (default: the import's own)")
    run.add_argument("--out", type=Path, default=RESULTS, help="directory of the JSON results")
    sc = run.add_argument_group("scale (issue 15; docs/benchmarks.md#scale-a-year-of-data-issue-15)")
    sc.add_argument("--dir", type=Path, default=None, metavar="DIR",
                    help="scale: where the year datasets are built once and cached (tens of GB; outside the "
                    "repo, e.g. /work/scale-data); each run works on hard-linked copies under DIR/runs/")
    sc.add_argument("--repo", type=Path, action="append", default=[], metavar="CHECKOUT",
                    help="scale: measure this checkout's sql/, dashboards/ and ingest (its .venv if it has one); "
                    "repeat to compare checkouts in one run (default: this checkout)")
    sc.add_argument("--agents", default="40,200", help="scale: centres, comma-separated: 40, 200 (default both); 8 (one queue) for a smoke run")
    sc.add_argument("--scale-days", dest="scale_days", default="30,90,365",
                    help="scale: simulated days of each dataset, comma-separated (default 30,90,365)")
    sc.add_argument("--phases", default="panels,refresh,backfill,settings",
                    help="scale: what to measure, comma-separated (default all: panels, refresh, backfill, "
                    "settings)")
    sc.add_argument("--repeats", type=int, default=5,
                    help="scale: runs per panel query, p50 reported (default 5; 3 for queries over 5 s)")
    sc.add_argument("--refresh-seconds", dest="refresh_seconds", type=float, default=60.0,
                    help="scale: seconds of each refresh-cost measurement (default 60)")
    sc.add_argument("--webhook-rate", dest="webhook_rate", type=float, default=50.0,
                    help="scale: webhooks/s of the loaded refresh-cost measurement (default 50)")
    sc.add_argument("--jobs", type=int, default=2, help="scale: simulating processes when building (default 2)")
    sc.add_argument("--no-build", dest="build", action="store_false",
                    help="scale: measure only datasets already built; report the others as missing")
    sc.add_argument("--memory-limit", dest="memory_limit", type=float, default=12.0, metavar="GIB",
                    help="scale: kill a measuring process whose RSS passes this, and report it (default 12 GiB; "
                    "the machine is shared)")
    sc.add_argument("--timeout", type=float, default=1800.0,
                    help="scale: seconds to wait for the views after a backfill or settings change (default 1800)")
    sc.add_argument("--keep", action="store_true", help="scale: keep the run's engine copies under DIR/runs/")

    prof = commands.add_parser("profile", help="profile serve under load with py-spy",
                               description="Sample serve with py-spy under the throughput load; print the "
                               "top frames and keep the collapsed stacks under bench/results/.")
    prof.add_argument("--duration", type=float, default=20, help="seconds sampled (default 20)")
    prof.add_argument("--server", default="uvicorn", choices=["uvicorn", "granian"])
    prof.add_argument("--app", default="serve", choices=["serve", "serve-asgi", "bare", "naive"],
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
    unknown = [p for p in chosen if p not in (*PARTS, *LONG_PARTS, "all")]
    if unknown:
        raise _Usage(f"unknown part {unknown[0]!r}: choose from {', '.join(PARTS + LONG_PARTS)}, all")
    if args.smoke and "all" in chosen:
        return ["throughput", "freshness"]
    named = [p for p in chosen if p != "all"]
    return list(dict.fromkeys([*PARTS, *named])) if "all" in chosen else list(dict.fromkeys(chosen))


def _baseline(args: argparse.Namespace, parts: list[str]) -> str:
    have_granian = importlib.util.find_spec("granian") is not None
    server = args.baseline or ("granian" if have_granian and not args.smoke else "uvicorn")
    needs_granian = server == "granian" or args.variants
    if needs_granian and "throughput" in parts and not have_granian:
        raise _Usage("granian is not installed: pip install -e '.[bench]', or --baseline uvicorn")
    return server


def _memory_lines(text: str) -> list[int]:
    try:
        counts = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise _Usage(f"--memory-lines {text!r}: expected comma-separated line counts") from None
    if any(n <= 0 for n in counts):
        raise _Usage(f"--memory-lines {text!r}: line counts must be positive")
    return counts


def _run(args: argparse.Namespace) -> int:
    try:
        serve_env = _serve_env(args.serve_env)
        parts = _parts(args)
        servers = [_baseline(args, parts)]
        if "scale" in parts:
            args.scale_options = _scale_options(args)
        args.memory_lines = _memory_lines(args.memory_lines)
    except _Usage as exc:
        print(f"python -m bench run: {exc}", file=sys.stderr)
        return 2
    seconds = args.duration or (2.0 if args.smoke else 15.0)
    report: dict[str, Any] = {"machine": machine(), "smoke": args.smoke, "duration_s": seconds, "results": {}}
    print(f"machine: {report['machine']['nproc']} × {report['machine']['cpu']}, "
          f"{report['machine']['ram_gib']} GiB, load average {report['machine']['load_average']}")
    with tempfile.TemporaryDirectory(prefix="pbx-bench-") as tmp:
        for part in (p for p in PARTS + LONG_PARTS if p in parts):
            _PART_RUNNERS[part](args, Path(tmp), seconds, servers, serve_env, report["results"])
    report["load_average_end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{'-'.join(parts)}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nload average at end {report['load_average_end']}; results: {path}")
    return 0


def _run_throughput(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
                    serve_env: dict[str, str], results: dict[str, Any]) -> None:
    baseline = f"bare/{servers[0]}"
    contenders = ["bare/uvicorn", "serve/uvicorn"]
    if args.variants:
        contenders += ["serve-asgi/uvicorn", "serve-asgi/granian"]
    opts = throughput.Options(seconds=seconds, warmup=1.0 if args.smoke else 3.0, baseline=baseline,
                              contenders=contenders, naive=args.variants,
                              connections=args.connections, paced_connections=args.paced_connections,
                              serve_env=serve_env, rounds=args.rounds or (1 if args.smoke else 3))
    res = results["throughput"] = throughput.run(opts, workdir / "throughput")
    print_table(f"Webhook throughput (ratios to {baseline}; paced at {res['half_baseline_rps']:.0f} req/s, "
                "half its rate)", throughput.table(res))


def _run_edge(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
              serve_env: dict[str, str], results: dict[str, Any]) -> None:
    res = results["edge"] = edge.run(workdir / "edge", seconds, rate=args.rate or 1000.0)
    print_table(f"Webhooks during a connection flood ({res['addresses']} attacker addresses; webhooks paced at "
                f"{res['rate']:.0f} req/s on {res['connections']} keep-alive connections, plus "
                f"{res['new_rate']:.0f}/s on new connections)", edge.table(res))


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


def _run_scale(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
               serve_env: dict[str, str], results: dict[str, Any]) -> None:
    opts = args.scale_options
    res = results["scale"] = scale.run(opts, log=lambda m: print(m, flush=True))
    print(f"\ndata: {opts.data_dir}; now = {res['until']}")
    print_table("Scale (issue 15): one column per dataset", res["table"])


def _csv_ints(text: str, name: str, allowed: Sequence[int] | None = None) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise _Usage(f"{name}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise _Usage(f"{name}: expected positive integers, got {text!r}")
    if allowed is not None and any(v not in allowed for v in values):
        raise _Usage(f"{name}: choose from {', '.join(map(str, allowed))}, got {text!r}")
    return values


def _scale_options(args: argparse.Namespace) -> scale.Options:
    if args.dir is None:
        raise _Usage("scale: --dir is required: where the year datasets are cached (e.g. /work/scale-data)")
    repos = [r.resolve() for r in args.repo] or [scale.HARNESS]
    for repo in repos:
        if not (repo / "sql").is_dir() or not (repo / "dashboards" / "json").is_dir():
            raise _Usage(f"--repo {repo}: not a pbx-analytics checkout (no sql/ or dashboards/json/)")
    phases = [p for p in args.phases.split(",") if p]
    known = ("panels", "refresh", "backfill", "settings")
    if not phases or any(p not in known for p in phases):
        raise _Usage(f"--phases: choose from {', '.join(known)}, got {args.phases!r}")
    return scale.Options(
        data_dir=args.dir.resolve(), repos=repos, agents=_csv_ints(args.agents, "--agents", sorted(scale.CENTRES)),
        days=_csv_ints(args.scale_days, "--scale-days"), phases=phases, build=args.build, jobs=args.jobs,
        repeats=args.repeats, refresh_seconds=args.refresh_seconds, rate=args.webhook_rate,
        timeout=args.timeout, memory_limit_gib=args.memory_limit, keep=args.keep)


def _run_import(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
                serve_env: dict[str, str], results: dict[str, Any]) -> None:
    res = results["import"] = importing.run(workdir / "import", days=args.import_days, repeat=args.repeat,
                                            memory_lines=args.memory_lines)
    print_table(f"Import speed ({res['lines']:,} lines, {res['files']} gzip files, median of {res['repeat']})",
                importing.table(res))
    if res["memory"]:
        print_table("Import memory (pbx-analytics import, one log)", importing.memory_table(res))


def _run_import_load(args: argparse.Namespace, workdir: Path, seconds: float, servers: list[str],
                     serve_env: dict[str, str], results: dict[str, Any]) -> None:
    res = results["import_load"] = import_load.run(
        workdir / "import_load", seconds, rate=min(args.rate or 2000.0, 1000.0),
        rounds=args.rounds or (1 if args.smoke else 2), days=args.import_load_days, serve_env=serve_env,
        batch_sizes=tuple(int(b) for b in args.import_load_batches.split(",") if b))
    print(f"\nlogs: {res['log_lines']:,} lines a round; import alone: {res['alone']['lines_per_s']:,} lines/s")
    print_table("Webhook latency while import goes through serve", import_load.table(res))


#: Each part of ``run``, in PARTS + LONG_PARTS order.
_PART_RUNNERS = {"throughput": _run_throughput, "edge": _run_edge, "freshness": _run_freshness, "queries": _run_queries,
                 "query_load": _run_query_load,
                 "memory": _run_memory, "import": _run_import, "import_load": _run_import_load, "scale": _run_scale}


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
