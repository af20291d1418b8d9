"""A full spool disk, for real: the service starts, drains, answers 503, says why, and recovers by itself.

Each test runs ``serve`` (the real CLI, in a subprocess) on two kinds of full disk:

* ``tmpfs``: a real, small filesystem, filled with a ballast file or by the spool itself.
  Mounting needs root with CAP_SYS_ADMIN (this sandbox, CI as root on a VM); where it is
  refused, this case is not collected (``SmallDisk.can_mount``).
* ``file-size-limit``: the serve process may write no file beyond an offset (RLIMIT_FSIZE, set
  and lifted from outside with ``prlimit``), so the spool's writes fail with ``EFBIG`` as they
  would with ``ENOSPC``, with no filesystem of its own. It needs nothing, so it runs everywhere.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ingest.querying.access import OwnerFile
from ingest.testing import (
    ServeProcess,
    SmallDisk,
    file_size_limit,
    lift_file_size_limit,
    limit_file_size,
    stored,
)
from tests.e2e.reliability.test_reliability import (
    KEYS_SQL,
    Load,
    assert_exactly_once,
    metric_values,
    stored_keys,
    wait_health,
)

DISK_FULL_LINE = "spool disk full; new webhooks get 503 until there is room again"
ROOM_LINE = "spool disk has room again; accepting webhooks"
OUTAGE_LINE = "ClickHouse unavailable; webhooks are kept in the spool and written when it is back"
#: The kinds of full disk this machine can make (see the module's docstring).
DISKS = ["tmpfs", "file-size-limit"] if SmallDisk.can_mount() else ["file-size-limit"]


class FullSpoolDisk:
    """Where the spool lives, how to fill its disk, how to make room again."""

    def __init__(self, kind: str, spool: Path, disk: SmallDisk | None) -> None:
        self.kind, self.spool, self.disk = kind, spool, disk
        #: For the serve process started on the full disk (the file-size limit is per process).
        self.preexec: Callable[[], None] | None = None if disk else file_size_limit(256 << 10)

    def fill(self) -> None:
        if self.disk is not None:
            self.disk.fill()
            assert self.disk.free_bytes() < 4096

    def make_room(self, pid: int) -> None:
        if self.disk is not None:
            self.disk.make_room()
        else:
            lift_file_size_limit(pid)


@pytest.fixture(params=DISKS)
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullSpoolDisk]:
    if request.param == "tmpfs":
        disk = SmallDisk.mount(tmp_path / "disk", 16 << 20)
        assert disk is not None, "a tmpfs could be mounted a moment ago"
        try:
            yield FullSpoolDisk("tmpfs", disk.path / "spool", disk)
        finally:
            disk.unmount()
    else:
        yield FullSpoolDisk("file-size-limit", tmp_path / "spool", None)


def _webhook(http: httpx.Client, key: str) -> httpx.Response:
    return http.get("/call_end", params={"call_id": key})


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_restart_on_a_full_spool_disk_drains_refuses_new_webhooks_and_recovers_by_itself(
        full_disk: FullSpoolDisk, tmp_path: Path) -> None:
    data, spool = tmp_path / "chdata", full_disk.spool
    # A run that keeps what it acknowledges in the spool (it would write after an hour), then dies.
    first = ServeProcess(data, "--spool-dir", str(spool), "--flush-interval", "3600", "--batch-size", "1000000")
    with httpx.Client(base_url=first.url, timeout=10) as http:
        acked = [f"before-{i}" for i in range(200) if _webhook(http, f"before-{i}").status_code == 200]
    assert len(acked) == 200
    first.stop(signal.SIGKILL)
    full_disk.fill()
    segments = sorted(p.name for p in spool.glob("*.seg"))

    second = ServeProcess(data, "--spool-dir", str(spool), preexec_fn=full_disk.preexec)  # it starts
    after: list[str] = []
    try:
        with httpx.Client(base_url=second.url, timeout=10) as http:
            health = http.get("/healthz").json()
            assert health["spool"] == "disk_full" and health["status"] == "degraded", health
            assert health["clickhouse"] == "up" and "disk is full" in health["spool_error"], health
            refused = _webhook(http, "refused-1")
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            assert refused.json()["reason"] == "spool_disk_full"
            # What it holds goes to ClickHouse meanwhile.
            _until(lambda: http.get("/healthz").json()["backlog"] == 0, 60, "the spool was not drained")
            time.sleep(2.5)  # two checks for room: still none
            assert _webhook(http, "refused-2").status_code == 503
            assert sorted(p.name for p in spool.glob("*.seg")) == segments  # no file left per attempt
            metrics = metric_values(http.get("/metrics").text)
            assert metrics["pbx_spool_disk_full"] == 1 and metrics["pbx_rows_written_total"] == 200
            assert metrics['pbx_requests_rejected_total{reason="spool_disk_full"}'] == 2

            full_disk.make_room(second.proc.pid)
            _until(lambda: _webhook(http, "after-0").status_code == 200, 15, "no webhook accepted after room came")
            after = ["after-0", *(f"after-{i}" for i in range(1, 20) if _webhook(http, f"after-{i}").status_code == 200)]
            health = http.get("/healthz").json()
            assert health["spool"] == "ok" and health["spool_error"] is None, health
            assert metric_values(http.get("/metrics").text)["pbx_spool_disk_full"] == 0
    finally:
        assert second.stop() == 0
    log = second.log()
    assert log.count(DISK_FULL_LINE) == 1 and log.count(ROOM_LINE) == 1, log
    assert "Traceback" not in log
    keys = stored_keys(stored(second.dsn, KEYS_SQL))
    assert len(after) == 20
    assert_exactly_once({*acked, *after}, keys)
    assert not {"refused-1", "refused-2"} & set(keys)


@pytest.mark.parametrize("kind", DISKS)
def test_a_spool_disk_that_fills_during_an_outage_drains_once_clickhouse_is_back_and_accepts_again(
        kind: str, tmp_path: Path) -> None:
    # tmpfs: 3 MiB, 16 MiB allowed in segments of 1 MiB: the spool fills the disk itself.
    disk = SmallDisk.mount(tmp_path / "disk", 3 << 20) if kind == "tmpfs" else None
    spool = (disk.path if disk else tmp_path) / "spool"
    try:
        serve = ServeProcess(tmp_path / "chdata", "--spool-dir", str(spool), "--spool-max-bytes", str(16 << 20),
                             "--batch-size", "100", "--flush-interval", "0.02")
        owner = OwnerFile.read(tmp_path / "chdata")
        assert owner is not None

        def admin(sql: str) -> None:  # the owner, through the service's ClickHouse HTTP interface
            auth = {"X-ClickHouse-User": owner["user"], "X-ClickHouse-Key": owner["key"]}
            httpx.post(owner["url"], headers=auth, content=sql, timeout=60).raise_for_status()

        try:
            admin("DETACH TABLE pbx.events")  # ClickHouse refuses: the spool grows
            load = Load(serve.url, "d", threads=4, stop_on_error=False)
            if disk is None:  # the disk fills: no write beyond 256 KiB into any file from now on
                wait_health(serve.url, lambda h: h["backlog"] > 0, timeout=60)
                time.sleep(0.5)
                limit_file_size(serve.proc.pid, 256 << 10)
            health = wait_health(serve.url, lambda h: h["spool"] == "disk_full", timeout=180)
            time.sleep(0.5)
            load.stop()
            assert health["clickhouse"] == "down" and health["status"] == "degraded"
            assert set(load.statuses) == {200, 503}, load.statuses
            metrics = metric_values(httpx.get(f"{serve.url}/metrics").text)
            assert metrics["pbx_spool_disk_full"] == 1
            assert metrics['pbx_requests_rejected_total{reason="spool_disk_full"}'] > 0
            if disk is not None:
                assert metrics["pbx_spool_disk_free_bytes"] < 1 << 20

            admin("ATTACH TABLE pbx.events")
            if disk is None:  # it drains while the disk is still full, then room comes
                health = wait_health(serve.url, lambda h: h["clickhouse"] == "up" and h["backlog"] == 0,
                                     timeout=120)
                assert health["spool"] == "disk_full", health
                lift_file_size_limit(serve.proc.pid)
            health = wait_health(serve.url, lambda h: h["status"] == "ok" and h["backlog"] == 0, timeout=120)
            assert (health["clickhouse"], health["spool"], health["last_error"]) == ("up", "ok", None)
            with httpx.Client(base_url=serve.url) as http:
                assert _webhook(http, "after").status_code == 200
            load.acked.add("after")
            wait_health(serve.url, lambda h: h["backlog"] == 0)
        finally:
            assert serve.stop() == 0
        log = serve.log()
        assert "Traceback" not in log and "Logging error" not in log, log
        lines = [json.loads(line)["msg"] for line in log.splitlines()]
        assert lines.count(DISK_FULL_LINE) == 1 and lines.count(ROOM_LINE) == 1, lines
        assert lines.count(OUTAGE_LINE) == 1, lines
        assert_exactly_once(load.acked, stored_keys(stored(serve.dsn, KEYS_SQL)))
    finally:
        if disk is not None:
            disk.unmount()
