"""Storage per million calls, measured on the embedded engine (docs/scaling.md).

    python -m bench.storage --days 3 --queues 5 --agents 40 --calls-per-hour 120

Simulates a call centre day by day (``ingest.simulation``), imports each day's
access log through the real importer, refreshes the 15-minute views, merges
every table (``OPTIMIZE ... FINAL``: what background merges reach on a
server) and reads ``system.parts``: bytes on disk per table, scaled to one
million calls (calls = distinct ``call_id`` of ``start_call``). Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from ingest.backfill import importer
from ingest.simulation import SimConfig, simulate, write_access_log
from ingest.storing import clickhouse, migrations
from ingest.testing import refresh_views


def measure(workdir: Path, days: int, queues: int, agents: int, calls_per_hour: float, seed: int) -> str:
    client = clickhouse.connect(f"chdb://{workdir / 'chdata'}")
    try:
        migrations.apply_migrations(client)
        start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
        t0 = time.monotonic()
        for day in range(days):
            config = SimConfig(
                seed=seed + day, start=start + dt.timedelta(days=day), hours=24, queues=queues, agents=agents,
                calls_per_hour=calls_per_hour,
            )
            log = workdir / f"day{day}.log"
            write_access_log(log, simulate(config).events)
            importer.import_files(client, [log])
            log.unlink()
        refresh_views(client)
        tables = [
            r[0] for r in client.query(
                "SELECT name FROM system.tables WHERE database = 'pbx' AND engine LIKE '%MergeTree'").result_rows
        ]  # fmt: skip
        for table in tables:
            client.command(f"OPTIMIZE TABLE pbx.{table} FINAL")
        calls = client.query("SELECT uniqExact(call_id) FROM pbx.events WHERE event = 'start_call'").result_rows[0][0]
        events = client.query("SELECT count() FROM pbx.events").result_rows[0][0]
        parts = client.query(
            "SELECT table, sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
            "WHERE database = 'pbx' AND active GROUP BY table ORDER BY sum(bytes_on_disk) DESC"
        ).result_rows
        seconds = time.monotonic() - t0
    finally:
        client.close()
    per_million = 1_000_000 / calls
    lines = [
        f"{days} simulated day(s), {queues} queues, {agents} agents, {calls_per_hour:g} calls/queue/hour at the "
        f"hourly profile's 1.0: {calls:,} calls, {events:,} events ({events / calls:.1f} per call); "
        f"chdb {_version()}, measured {dt.date.today()} in {seconds:.0f} s.",
        "",
        "| table | rows | on disk | uncompressed | on disk per 1M calls |",
        "|---|---:|---:|---:|---:|",
    ]
    total = 0
    for table, rows, on_disk, raw in parts:
        total += on_disk
        lines.append(f"| pbx.{table} | {rows:,} | {_mib(on_disk)} | {_mib(raw)} | {_mib(on_disk * per_million)} |")
    lines.append(f"| **all** | | {_mib(total)} | | **{_mib(total * per_million)}** |")
    return "\n".join(lines)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _version() -> str:
    try:
        import chdb

        return str(chdb.__version__)
    except Exception:  # pragma: no cover
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--queues", type=int, default=5)
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--calls-per-hour", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pbx-storage-") as tmp:
        print(measure(Path(tmp), args.days, args.queues, args.agents, args.calls_per_hour, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
