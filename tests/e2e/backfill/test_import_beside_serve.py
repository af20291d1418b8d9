"""``pbx-analytics import`` and ``sql`` while ``serve`` holds the embedded engine and webhooks
flow (issue 12): the rows go through the service, nothing is lost or stored twice, and the
webhooks keep their latency."""

from __future__ import annotations

import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from ingest.simulation import SimConfig, simulate, write_access_log
from ingest.testing import ServeProcess, stored
from tests.e2e.reliability.test_reliability import KEYS_SQL, assert_exactly_once, stored_keys, wait_health


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingest", *args], capture_output=True, text=True, timeout=600,
                          env=os.environ.copy())


class Webhooks:
    """Paced webhooks with unique call ids from a few threads; each answer's time and latency."""

    def __init__(self, url: str, threads: int = 2, interval: float = 0.01) -> None:
        self.url, self.interval = url, interval
        self.sent: list[tuple[float, float, int, str]] = []  # (start, seconds, status, key)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            i = 0
            next_at = time.monotonic()
            while not self._stop.is_set():
                key = f"live-{n}-{i}"
                i += 1
                started = time.monotonic()
                status = http.get(f"/queue_in?call_id={key}&queue_name=helpdesk").status_code
                self.sent.append((started, time.monotonic() - started, status, key))
                next_at += self.interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def p99(self, start: float, end: float) -> float:
        latencies = sorted(s for t, s, _, _ in self.sent if start <= t < end)
        assert len(latencies) > 20, "too few webhooks in the window"
        return statistics.quantiles(latencies, n=100)[98]


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("log") / "history.log.gz"
    lines = write_access_log(path, simulate(SimConfig(seed=3, hours=8, agents=12)).events)
    return path, lines


def test_import_and_sql_go_through_the_running_service_while_webhooks_flow(tmp_path: Path, access_log,
                                                                            migrated_copy) -> None:
    log, lines = access_log
    proc = ServeProcess(migrated_copy(tmp_path / "chdata"))
    hooks = Webhooks(proc.url)
    try:
        time.sleep(3.0)  # the baseline: webhooks alone
        started = time.monotonic()
        first = cli("import", "--clickhouse", proc.dsn, str(log))
        ended = time.monotonic()
        again = cli("import", "--clickhouse", proc.dsn, str(log))
        counted = cli("sql", "SELECT source, count() FROM pbx.events GROUP BY source ORDER BY source", "--format",
                      "TSV", "--clickhouse", proc.dsn)
    finally:
        hooks.stop()
    wait_health(proc.url, lambda h: h["backlog"] == 0)
    assert proc.stop() == 0, proc.log()

    assert first.returncode == 0, first.stderr
    assert "through the running service" in first.stderr
    assert f"imported {lines}, already stored 0" in first.stdout
    assert again.returncode == 0 and f"imported 0, already stored {lines}" in again.stdout, again.stdout
    assert counted.returncode == 0 and f"import\t{lines}\n" in counted.stdout, counted.stderr

    acked = {key for _, _, status, key in hooks.sent if status == 200}
    assert len(acked) == len(hooks.sent), "every webhook answered 200"
    keys = stored_keys(stored(proc.dsn, KEYS_SQL + " HAVING k LIKE 'live-%'"))
    assert_exactly_once(acked, keys)
    assert stored(proc.dsn, "SELECT count() AS n FROM pbx.events WHERE source = 'import'")[0]["n"] == lines

    baseline = hooks.p99(started - 3.0, started)
    during = hooks.p99(started, ended)
    print(f"webhook p99: {baseline * 1000:.1f} ms alone, {during * 1000:.1f} ms during the import "
          f"({during / baseline:.2f}x, {ended - started:.1f} s import of {lines} lines)")
    assert during < 1.0, f"a webhook p99 of {during:.2f} s during the import"



def waited(stderr: str) -> float:
    """The seconds an import says it waited for the service's webhooks (0 if it says nothing)."""
    match = re.search(r"waited ([\d.]+) s of it for the service's webhooks", stderr)
    return float(match[1]) if match else 0.0

def test_import_gives_way_to_webhooks_only_while_they_arrive(tmp_path: Path, migrated_copy) -> None:
    """PBX_IMPORT_YIELD: with no webhooks an import runs flat out; while webhooks arrive it waits
    ``factor`` times each batch's cycle before the next, and everything is stored."""
    # Two imports of 4 files each (a day a file, no line of one day is a line of another):
    # the importer inserts each file's rows apart, so each import makes 4 inserts.
    days: list[list[Path]] = [[], []]
    lines = [0, 0]
    for day in range(2, 10):
        path = tmp_path / f"day-{day}.log.gz"
        start = dt.datetime(2026, 11, day, 8, tzinfo=dt.timezone.utc)
        lines[day % 2] += write_access_log(path, simulate(SimConfig(seed=day, hours=2, agents=8, start=start)).events)
        days[day % 2].append(path)
    proc = ServeProcess(migrated_copy(tmp_path / "chdata"), env={**os.environ, "PBX_IMPORT_YIELD": "3"})
    try:
        quiet = cli("import", "--batch-size", "1000", "--clickhouse", proc.dsn, *map(str, days[0]))
        hooks = Webhooks(proc.url)
        try:
            time.sleep(1.0)
            started = time.monotonic()
            busy = cli("import", "--batch-size", "1000", "--clickhouse", proc.dsn, *map(str, days[1]))
            took = time.monotonic() - started
        finally:
            hooks.stop()
        wait_health(proc.url, lambda h: h["backlog"] == 0)
    finally:
        proc.stop()
    counted = stored(proc.dsn, "SELECT count() AS n FROM pbx.events WHERE source = 'import'")[0]["n"]

    assert quiet.returncode == 0 and busy.returncode == 0, quiet.stderr + busy.stderr
    assert "through the running service" in busy.stderr
    assert counted == sum(lines), "every imported line stored"
    assert waited(quiet.stderr) == 0.0, quiet.stderr
    # Each batch after the first waited 3x its predecessor's cycle (decoding and inserting: tens of ms).
    paused = waited(busy.stderr)
    assert paused > 0.03 * 3 * (len(days[1]) - 1), busy.stderr
    assert paused < took, "the pauses are part of the import's time"
