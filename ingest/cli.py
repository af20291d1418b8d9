"""``pbx-analytics``: the command line.

Thin on purpose: flags -> one Settings object -> run. ``--help`` of each
command is user documentation.

A failure a person must act on (the engine busy or not installed, the server
down, a changed migration, a query error) is one line on stderr with the cause
and the fix, and exit status 1; a traceback means a bug. ``serve`` says it as
one JSON log line, like the rest of its output, before it binds its port.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import ipaddress
import logging
import re
import signal
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import sqlparse
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.exceptions import Error as ClientError

from ingest import cli_remote, logs
from ingest.config import ENV_NAMES, ConfigError, ImportOptions, Settings, SimulateOptions
from ingest.storing import clickhouse, migrations
from ingest.storing.spool import SpoolError

__all__ = ["main"]

log = logging.getLogger("ingest.cli")

#: Errors whose text is the whole story (cause and fix): printed as one line, no traceback.
_OPERATOR_ERRORS = (clickhouse.EngineError, migrations.MigrationChanged, SpoolError, ClientError, OSError)


def _add_engine_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clickhouse",
        metavar="DSN",
        dest="clickhouse_url",
        help="where events are stored: chdb:///abs/path (embedded engine) or "
        f"http(s)://user:pass@host:port/db (server). Env: {ENV_NAMES['clickhouse_url']}. "
        "Default: the embedded engine under ./data",
    )


def _add_cluster_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        metavar="NAME",
        dest="clickhouse_cluster",
        help="apply migrations ON CLUSTER NAME (a remote_servers cluster of ClickHouse servers): "
        "replicated tables behind Distributed tables, see docs/scaling.md. "
        f"Env: {ENV_NAMES['clickhouse_cluster']}. Default: one server",
    )


def _version() -> str:
    """This package's version, and the engine's: what a bug report needs."""

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    chdb, engine = installed("chdb"), installed("chdb-core")
    embedded = (f"chdb {chdb}" + (f" (ClickHouse {engine})" if engine else "") if chdb
                else f"not installed (pip install '{clickhouse.EMBEDDED_EXTRA}')")
    return (f"pbx-analytics {installed('pbx-analytics') or 'unknown'}\n"
            f"clickhouse-connect {installed('clickhouse-connect')}\nembedded engine: {embedded}")


def _global_flags(default: Any) -> argparse.ArgumentParser:
    """The flags every command takes, before or after its name (``serve --log-level DEBUG``)."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--log-level", dest="log_level", metavar="LEVEL", default=default,
                       help="DEBUG, INFO, WARNING or ERROR (default INFO). Env: PBX_LOG_LEVEL")
    return flags


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbx-analytics",
        description="Call-centre analytics from PBX webhooks, stored in ClickHouse.",
        parents=[_global_flags(None)],
        formatter_class=argparse.RawDescriptionHelpFormatter,  # --version's lines as they are
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = _Commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
                         # A flag given after the command name overrides one given before it;
                         # one not given there leaves the other alone (SUPPRESS: no default).
                         parents=[_global_flags(argparse.SUPPRESS)])

    serve = commands.add_parser(
        "serve",
        help="receive webhooks and store them",
        description="Run the webhook receiver. Point the PBX at http://HOST:PORT/<event>?... "
        "Every option can also be set with the PBX_* environment variable named in the README.",
    )
    _add_engine_flag(serve)
    _add_cluster_flag(serve)
    serve.add_argument("--host", metavar="ADDRESS",
                       help="interface to listen on (default 127.0.0.1: this machine only). 0.0.0.0 lets every "
                       "machine that reaches the port send webhooks and read /healthz and /metrics: set PBX_TOKEN")
    serve.add_argument("--port", type=int, metavar="PORT", help="port to listen on (default 8080)")
    serve.add_argument("--batch-size", dest="batch_size", type=int, metavar="ROWS",
                       help="rows per insert (default 5000)")
    serve.add_argument(
        "--flush-interval", dest="flush_interval", type=float, metavar="SECONDS",
        help="seconds a row may wait before its batch is inserted (default 0.5)",
    )
    serve.add_argument(
        "--no-migrate", dest="migrate_on_start", action="store_const", const=False,
        help="do not apply sql/ migrations at start",
    )
    serve.add_argument(
        "--access-log", dest="access_log", action="store_const", const=True,
        help="log every HTTP request (off by default: only problems are logged)",
    )
    serve.add_argument(
        "--spool-dir", dest="spool_dir", metavar="DIR",
        help="durable spool: webhooks are fsynced here before the 200 (default: inside the embedded engine's "
        "data directory, ./data/spool; ./spool-HOST-PORT for a ClickHouse server). One running service per "
        "spool directory; a spool keeps the database it was written for",
    )
    serve.add_argument(
        "--hand-over-spool", dest="spool_hand_over", action="store_const", const=True,
        help="the spool holds webhooks taken for another database (serve refuses to start and names it): "
        "write them into this one instead. For one start; see docs/reliability.md",
    )
    serve.add_argument(
        "--spool-max-bytes", dest="spool_max_bytes", type=int, metavar="BYTES",
        help="spool size at which webhooks get 503 + Retry-After while ClickHouse is down (default 1 GiB)",
    )
    serve.add_argument(
        "--query-host", dest="query_host", metavar="HOST",
        help="interface of ClickHouse's HTTP interface on the embedded engine, for Grafana and SQL clients "
        "(default 127.0.0.1; another address needs PBX_QUERY_PASSWORD). See docs/querying.md",
    )
    serve.add_argument(
        "--query-port", dest="query_port", type=int, metavar="PORT",
        help="port of that interface (default 8123; 0 turns it off). Only with the embedded engine",
    )
    serve.add_argument(
        "--allow-cidrs", dest="allow_cidrs", metavar="CIDRS",
        help="comma-separated client networks allowed to send webhooks, e.g. 10.1.2.0/24 (default: any). "
        "The shared secret has no flag: set PBX_TOKEN (flags are visible in ps)",
    )

    migrate = commands.add_parser(
        "migrate", help="apply the sql/ migrations",
        description="Apply pending sql/ migrations, each once. While `serve` holds the embedded engine, "
        "through the service (it says so).",
    )
    _add_engine_flag(migrate)
    _add_cluster_flag(migrate)

    sql = commands.add_parser(
        "sql",
        help="run a query and print the result",
        description="Run SQL against the pbx database and print the result, e.g. "
        "pbx-analytics sql \"SELECT event, count() FROM pbx.events GROUP BY event\". While `serve` holds "
        "the embedded engine, through the service, with your rights: its owner may write, others read "
        "as its read-only user (docs/querying.md). "
        "A query ending in its own FORMAT clause is printed in that format.",
    )
    _add_engine_flag(sql)
    sql.add_argument("query", metavar="QUERY", help="the SQL to run; - reads it from stdin")
    sql.add_argument(
        "--format", default="PrettyCompactMonoBlock", metavar="FORMAT",
        help="any ClickHouse output format: PrettyCompactMonoBlock (default), CSVWithNames, "
        "TSVWithNames, JSONEachRow, Markdown, ...",
    )
    _add_backfill_commands(commands)
    return parser


class _Commands:
    """``add_subparsers()``'s action, giving every command the global flags."""

    def __init__(self, action: Any, parents: list[argparse.ArgumentParser]) -> None:
        self._action, self._parents = action, parents

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self._action.add_parser(name, parents=self._parents, **kwargs)  # type: ignore[no-any-return]


def _add_backfill_commands(commands: Any) -> None:
    """``import`` and ``simulate`` (docs/import.md, docs/simulator.md); their flags are prefixed
    ``import_``/``sim_`` so they stay out of Settings: they become ``ImportOptions``,
    ``SimulateOptions`` and the scenario's ``SimConfig``."""
    imp = commands.add_parser(
        "import",
        help="backfill events from web-server access logs",
        description="Import webhook requests from nginx/Apache access logs (combined or common format, "
        "plain or .gz) into pbx.events, with each line's own time. Safe to repeat and to give "
        "overlapping files in any order: a line is stored once. Bad webhook lines are reported as "
        "FILE:LINE on stderr and skipped. While `serve` holds the embedded engine, the rows go through it "
        "(webhooks keep flowing).",
    )
    _add_engine_flag(imp)
    imp.add_argument("import_files", nargs="+", metavar="FILE", help="access-log files (.gz read as gzip)")
    imp.add_argument("--batch-size", dest="import_batch_size", type=int, default=100_000, metavar="ROWS",
                     help="rows per insert (default 100000)")
    imp.add_argument("--jobs", dest="import_jobs", type=int, metavar="N",
                     help="decoding processes working on different files; 0 = decode in the importing "
                     "process (default: with 3 or more CPUs and 8 MB or more of input, one per CPU but "
                     "one, at most one per file; else 0)")
    imp.add_argument("--no-progress", dest="import_progress", action="store_const", const=False,
                     help="no progress line (shown only when stderr is a terminal anyway)")
    imp.add_argument("--no-migrate", dest="import_migrate", action="store_false",
                     help="do not apply sql/ migrations first")

    sim = commands.add_parser(
        "simulate",
        help="generate a realistic, seeded call centre: an access log, a live PBX, the expected figures",
        description="Simulate queues, callers and agents and emit the PBX webhooks: to an access log "
        "that `import` reads, and/or to a running service as the PBX does (--target: in real time, "
        "concurrently, jittered). By default the period ends now: with --target its past part is "
        "imported with its own times and the simulation continues live. --truth writes the metrics "
        "the simulator expects (docs/simulator.md). At least one of --access-log, --target and --truth. "
        "Same seed and --start, same output.",
    )
    _add_engine_flag(sim)
    sim.add_argument("--seed", dest="sim_seed", type=int, metavar="N", help="random seed (default 1)")
    sim.add_argument("--start", dest="sim_start", metavar="TIME", help="simulated start, ISO date-time, UTC unless an offset "
                     "is given; the period is then --hours long (default: --hours before now, so the period "
                     "ends now)")
    sim.add_argument("--hours", dest="sim_hours", type=float, metavar="HOURS",
                     help="hours of arrivals: before now, or from --start (default 1; 0 with --target: live only)")
    sim.add_argument("--live-hours", dest="sim_live_hours", type=float, metavar="HOURS",
                     help="with --target: hours of arrivals after now, sent live in real time (default 1)")
    sim.add_argument("--queues", dest="sim_queues", type=int, metavar="N", help="number of queues (default 3)")
    sim.add_argument("--agents", dest="sim_agents", type=int, metavar="N", help="number of agents (default 8)")
    sim.add_argument("--calls-per-hour", dest="sim_calls_per_hour", type=float, metavar="RATE",
                     help="mean arrivals per queue per hour at the daily peak profile 1.0 (default 40)")
    sim.add_argument("--end-mode", dest="sim_end_mode", choices=["drain", "cut"],
                     help="drain (default): calls in progress finish after the period; cut: output stops "
                     "at the period's end, leaving calls waiting")
    sim.add_argument("--set", dest="sim_set", action="append", metavar="NAME=VALUE",
                     help="any other scenario setting (docs/simulator.md: SimConfig), e.g. --set mean_talk_s=60; "
                     "repeatable")
    sim.add_argument("--access-log", dest="sim_access_log", metavar="FILE",
                     help="write an nginx access log (gzip if FILE ends in .gz)")
    sim.add_argument("--log-format", dest="sim_log_format", choices=["combined", "common"],
                     help="access-log format (default combined)")
    sim.add_argument("--tz-offset", dest="sim_tz_offset", metavar="OFFSET",
                     help="time zone of the access log: +HHMM, -HHMM, UTC or a zone such as Europe/Prague "
                     "(default +0000)")
    sim.add_argument("--target", dest="sim_target", metavar="URL",
                     help="a running service, e.g. http://127.0.0.1:8080: events due from now on are sent "
                     "there in real time; those already due are imported into --clickhouse with their own "
                     "times (on the embedded engine, that needs serve stopped: see docs/simulator.md)")
    sim.add_argument("--jitter-ms", dest="sim_jitter_ms", type=float, metavar="MS",
                     help="with --target: each request goes out up to this much after its second, at random, "
                     "so events of one instant arrive in either order (default 150)")
    sim.add_argument("--concurrency", dest="sim_concurrency", type=int, metavar="N",
                     help="with --target: requests in flight at once (default 32)")
    sim.add_argument("--no-progress", dest="sim_progress", action="store_const", const=False,
                     help="no progress line (shown only when stderr is a terminal anyway)")
    sim.add_argument("--truth", dest="sim_truth", metavar="FILE", help="write the expected metrics as JSON")
    # Gone: a compressed send stored compressed times as if they were real. Refused with the reason.
    sim.add_argument("--speed", dest="sim_speed", help=argparse.SUPPRESS)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags = vars(args).copy()
    command = flags.pop("command")
    own = {k: flags.pop(k) for k in list(flags) if k.startswith(("import_", "sim_")) or k in ("query", "format")}
    try:
        settings = Settings.from_env(**flags)
    except ConfigError as exc:
        print(f"pbx-analytics: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    return _COMMANDS[command](settings, own)


def _serve_command(settings: Settings, flags: dict[str, Any]) -> int:
    return _serve(settings)


def _with_engine(run: Callable[[Any, Settings, dict[str, Any]], None],
                 name: str) -> Callable[[Settings, dict[str, Any]], int]:
    """A command that runs on a client of the engine (through the running service that holds
    it, if one does: ``cli_remote``): one-line errors, no traceback."""

    def command(settings: Settings, flags: dict[str, Any]) -> int:
        try:
            client = cli_remote.engine_connection(settings, name).client
            try:
                run(client, settings, flags)
            finally:
                client.close()
        except (_QueryError, *_OPERATOR_ERRORS) as exc:
            print(f"pbx-analytics: {clickhouse.describe(exc, settings.clickhouse_url)}", file=sys.stderr)
            return 1
        return 0

    return command


def _migrate(client: Any, settings: Settings, flags: dict[str, Any]) -> None:
    applied = migrations.apply_migrations(client, cluster=settings.clickhouse_cluster or None)
    print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.version:04d}_{m.name}" for m in applied))


#: First keywords of statements that return rows; anything else (INSERT, CREATE,
#: TRUNCATE, ...) runs as a command, since a FORMAT clause would change its meaning.
_ROW_STATEMENTS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS", "CHECK"}
#: A query that names its own output format at its end.
_OWN_FORMAT = re.compile(r"\bFORMAT\s+\w+\s*;?\s*$", re.IGNORECASE)
#: ClickHouse's UNKNOWN_FORMAT.
_UNKNOWN_FORMAT = 73


class _QueryError(Exception):
    """A query failed; the text is the engine's message, about the user's own query."""


def _run_sql(client: Any, settings: Settings, flags: dict[str, Any]) -> None:
    query, fmt = flags["query"], flags["format"]
    if query == "-":
        query = sys.stdin.read()
    code = sqlparse.format(query, strip_comments=True).strip()
    if not code:
        raise _QueryError("no query given (QUERY is empty)")
    first = code.split(None, 1)[0].upper()
    if first in _ROW_STATEMENTS or first.startswith("("):
        own = _OWN_FORMAT.search(code) is not None
        try:
            result = client.raw_query(query, fmt=None if own else fmt)
        except DatabaseError as exc:
            raise _QueryError(_query_error(client, query, None if own else fmt, exc)) from None
        sys.stdout.buffer.write(result)
        sys.stdout.flush()
    else:
        try:
            client.command(query)
        except DatabaseError as exc:
            raise _QueryError(clickhouse.engine_message(exc)) from None
        print("ok", file=sys.stderr)


def _query_error(client: Any, query: str, fmt: str | None, exc: DatabaseError) -> str:
    """The error of ``query`` as the user wrote it. The output format rides on the query as a
    FORMAT clause the client appends; when the engine's message quotes that clause (a syntax
    error at the end of the query), the query is sent again alone for the message about it
    (it fails again, in parsing: nothing runs twice). ``fmt`` is None when the query names its
    own format."""
    message = clickhouse.engine_message(exc)
    if fmt is None:
        return message
    if getattr(exc, "code", None) == _UNKNOWN_FORMAT:
        return f"--format {fmt}: {message}"
    if fmt not in message or fmt in query:
        return message
    try:
        client.raw_query(query)
    except DatabaseError as again:
        return clickhouse.engine_message(again)
    return message


def _import(settings: Settings, flags: dict[str, Any]) -> int:
    from ingest.backfill import importer

    try:
        options = ImportOptions(files=tuple(flags["import_files"]), batch_size=flags["import_batch_size"],
                                jobs=flags["import_jobs"], progress=flags["import_progress"],
                                migrate=flags["import_migrate"])
    except ConfigError as exc:
        print(f"pbx-analytics import: {exc}", file=sys.stderr)
        return 2
    return importer.run(settings.clickhouse_url, options)


def _simulate(settings: Settings, flags: dict[str, Any]) -> int:
    from ingest.simulation.command import run
    from ingest.simulation.config import SimConfigError, scenario

    given = {k.removeprefix("sim_"): v for k, v in flags.items() if v is not None}
    outputs = {f.name: given[f.name] for f in dataclasses.fields(SimulateOptions) if f.name in given}
    if "tz_offset" in given:
        outputs["tz"] = given["tz_offset"]
    try:
        if "speed" in given:
            raise ConfigError("--speed is gone: a compressed send stored compressed arrival times as if they "
                              "were real. With --target, events already due are imported with their own times "
                              "and the rest are sent in real time (docs/simulator.md#live); for a file, use "
                              "--access-log and `import`")
        config = scenario(given, settings=given.get("set", ()), live=bool(given.get("target")))
        # A live-only period (--hours 0) has nothing to import: events late at the start go out late.
        # A file of a period that ends now holds nothing after now (its drain included).
        end_by = config.end_s if "start" not in given and "target" not in given else None
        options = SimulateOptions(**outputs, backfill=given.get("hours", 1) > 0 or "start" in given,
                                  backfill_to=settings.clickhouse_url, end_by=end_by)
    except (SimConfigError, ConfigError) as exc:
        print(f"pbx-analytics simulate: {exc}", file=sys.stderr)
        return 2
    if not (options.access_log or options.target or options.truth):
        print("pbx-analytics simulate: nothing to write: give --access-log FILE, --target URL and/or "
              "--truth FILE (the simulation is not kept otherwise)", file=sys.stderr)
        return 2
    return run(config, options)


def _serve(settings: Settings) -> int:
    import uvicorn

    from ingest.receiving.app import create_app
    from ingest.receiving.server import uvicorn_config
    from ingest.receiving.service import Service

    service = Service(settings)
    try:
        # Engine, migrations, spool, the query interface's port: a refusal is one line, before
        # the webhooks' port is bound.
        service.start_up()
        query = _start_query_interface(settings, service)
    except (ConfigError, *_OPERATOR_ERRORS) as exc:
        log.critical(f"cannot start: {clickhouse.describe(exc, settings.clickhouse_url)}")
        return 1
    _warn_if_open(settings)
    # uvicorn with the front door's protocol: limits, the fast path (ingest.receiving.server).
    server = uvicorn.Server(uvicorn_config(settings, create_app(settings, service)))
    _freeze_start_up_heap()
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal
    # under the handler that was there before it: make that a clean exit, so a
    # supervisor sees status 0 after a graceful stop.
    signal.signal(signal.SIGTERM, _exit_zero)
    try:
        server.run()
    finally:
        if query is not None:
            query.stop()
    return 0 if server.started else 1


def _freeze_start_up_heap() -> None:
    """Take what start-up made (every module, the engine's client, the app: ~100 k objects that live
    as long as the process) out of the garbage collector's sight. A full collection then scans only
    what the requests leave behind: under load one ran every ~3 s and held the event loop ~45 ms
    (median), the webhooks' p99 (docs/benchmarks.md, "The garbage collector's pauses")."""
    gc.collect()
    gc.freeze()
    log.debug("start-up heap frozen", extra={"objects": gc.get_freeze_count()})


def _start_query_interface(settings: Settings, service: Any) -> Any:
    """ClickHouse's HTTP interface on the embedded engine (docs/querying.md): its own server,
    so it does not depend on which server answers the webhooks; its inserts' clients are told
    how much to yield to ``service``'s webhooks. Raises ``OSError`` (its port) or ``clickhouse.EngineError`` with a
    one-line message."""
    if not settings.query_enabled:
        return None
    from ingest.querying import QueryServer

    query = QueryServer(settings, holder=clickhouse.connect(settings.clickhouse_url),
                        import_yield=service.import_yield)
    try:
        query.start()
    except BaseException:
        query.stop()
        raise
    return query


def _warn_if_open(settings: Settings) -> None:
    """Listening beyond this machine with no token: anyone who reaches the port can write events."""
    if settings.token:
        return
    try:
        loopback = ipaddress.ip_address(settings.host.strip("[]")).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback:
        log.warning(f"listening on {settings.host} without a token: anyone who can reach port {settings.port} can "
                    "store webhooks; set PBX_TOKEN (docs/reliability.md, Security)")


def _exit_zero(signum: int, frame: object) -> None:
    raise SystemExit(0)


#: Each command's function: (settings, its own flags) -> exit status.
_COMMANDS: dict[str, Callable[[Settings, dict[str, Any]], int]] = {
    "serve": _serve_command,
    "migrate": _with_engine(_migrate, "migrate"),
    "sql": _with_engine(_run_sql, "sql"),
    "import": _import,
    "simulate": _simulate,
}
