"""How the commands find the service that holds a data directory (``querying.client``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ingest.querying.access import OwnerFile
from ingest.querying.client import RunningService, connect, find_service


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write(data_dir: Path, pid: int, url: str = "http://127.0.0.1:1") -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / OwnerFile.NAME).write_text(json.dumps({"url": url, "user": "pbx_owner", "key": "k", "pid": pid}))


def test_no_file_no_service(tmp_path: Path) -> None:
    assert find_service(tmp_path) is None


def test_a_live_pid_names_the_service(tmp_path: Path) -> None:
    _write(tmp_path, os.getpid())
    assert find_service(tmp_path) == RunningService("http://127.0.0.1:1", "pbx_owner", "k", os.getpid())


def test_a_dead_pid_s_file_is_no_service(tmp_path: Path) -> None:
    _write(tmp_path, _dead_pid())
    assert find_service(tmp_path) is None


def test_a_damaged_file_is_no_service(tmp_path: Path) -> None:
    (tmp_path / OwnerFile.NAME).write_text('{"url": ')
    assert find_service(tmp_path) is None


def test_a_service_that_does_not_answer_leaves_the_command_on_the_engine(tmp_path: Path, dsn: str) -> None:
    data_dir = Path(dsn.removeprefix("chdb://"))
    _write(data_dir, os.getpid())  # alive (this process), but nothing listens at the url
    conn = connect(dsn)
    try:
        assert conn.service is None and conn.client.command("SELECT 1") == 1
    finally:
        conn.close()
