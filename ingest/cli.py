"""``pbx-analytics``: the command line.

Thin on purpose: flags -> one Settings object -> run. ``--help`` of each
command is user documentation.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from ingest import db, logs
from ingest.config import ENV_NAMES, ConfigError, Settings

__all__ = ["main"]


def _add_engine_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clickhouse",
        metavar="DSN",
        dest="clickhouse_url",
        help="where events are stored: chdb:///abs/path (embedded engine) or "
        f"http(s)://user:pass@host:port/db (server). Env: {ENV_NAMES['clickhouse_url']}. "
        "Default: the embedded engine under ./data",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbx-analytics",
        description="Call-centre analytics from PBX webhooks, stored in ClickHouse.",
    )
    parser.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="receive webhooks and store them",
        description="Run the webhook receiver. Point the PBX at http://HOST:PORT/<event>?... "
        "Every option can also be set with the PBX_* environment variable named in the README.",
    )
    _add_engine_flag(serve)
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--batch-size", dest="batch_size", type=int, help="rows per insert (default 5000)")
    serve.add_argument(
        "--flush-interval", dest="flush_interval", type=float,
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

    migrate = commands.add_parser(
        "migrate", help="apply the sql/ migrations", description="Apply pending sql/ migrations, each once."
    )
    _add_engine_flag(migrate)

    sql = commands.add_parser(
        "sql",
        help="run a query and print the result",
        description="Run SQL against the pbx database and print the result, e.g. "
        "pbx-analytics sql \"SELECT event, count() FROM pbx.events GROUP BY event\"",
    )
    _add_engine_flag(sql)
    sql.add_argument("query", help="the SQL to run")
    sql.add_argument(
        "--format", default="PrettyCompactMonoBlock",
        help="any ClickHouse output format: PrettyCompactMonoBlock (default), CSVWithNames, "
        "TSVWithNames, JSONEachRow, Markdown, ...",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = vars(args).copy()
    command = options.pop("command")
    query, fmt = options.pop("query", None), options.pop("format", None)
    try:
        settings = Settings.from_env(**options)
    except ConfigError as exc:
        print(f"pbx-analytics: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        if command == "serve":
            return _serve(settings)
        client = db.connect(settings.clickhouse_url)
        try:
            if command == "migrate":
                applied = db.apply_migrations(client)
                print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m.version:04d}_{m.name}" for m in applied))
            elif command == "sql":
                sys.stdout.buffer.write(client.raw_query(query, fmt=fmt))
                sys.stdout.flush()
        finally:
            client.close()
    except db.EngineBusyError as exc:
        print(f"pbx-analytics: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a query error is the analyst's to fix: say it, no traceback
        if command != "sql":
            raise
        print(f"pbx-analytics: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve(settings: Settings) -> int:
    import uvicorn

    from ingest.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        log_config=None,
        lifespan="on",
        # The writer drains on shutdown; uvicorn only waits for open requests.
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal
    # under the handler that was there before it: make that a clean exit, so a
    # supervisor sees status 0 after a graceful stop.
    signal.signal(signal.SIGTERM, _exit_zero)
    server.run()
    return 0 if server.started else 1


def _exit_zero(signum: int, frame: object) -> None:
    raise SystemExit(0)
