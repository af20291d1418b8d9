"""A spool belongs to its database (issue 12), with the real ``serve``.

Webhooks are taken with a long flush interval and the service is killed (``kill -9``), so
every one of them is still only in the spool; then a service for another database starts.
Before, it replayed them all into its own database.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx

from ingest.events.decode import decode
from ingest.events.table import encode_record, now_ms, spool_meta, to_row
from ingest.storing.destination import LABEL
from ingest.storing.spool import Spool
from ingest.testing import ServeProcess, append, free_port, serve_command, stored
from tests.e2e.reliability.test_reliability import KEYS_SQL, assert_exactly_once, stored_keys, wait_health

#: Nothing is written to the engine while the test looks (the records stay in the spool).
HOLD = ("--flush-interval", "600", "--batch-size", "100000")
COUNT = "SELECT count() AS n FROM pbx.events"


def take(proc: ServeProcess, prefix: str, n: int = 300) -> set[str]:
    with httpx.Client(base_url=proc.url) as http:
        for i in range(n):
            assert http.get(f"/call_end?call_id={prefix}{i}").status_code == 200
    return {f"{prefix}{i}" for i in range(n)}


def count(data: Path) -> int:
    return stored(f"chdb://{data}", COUNT)[0]["n"]


def replayed(proc: ServeProcess) -> None:
    """Wait until the spool is written, then stop."""
    wait_health(proc.url, lambda h: h["backlog"] == 0 and h["status"] == "ok")
    assert proc.stop() == 0, proc.log()


def refused_start(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``serve`` that is expected to refuse to start."""
    cmd = [*serve_command(free_port(), free_port()), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_two_embedded_databases_in_one_directory_each_keep_their_own_spool(tmp_path: Path) -> None:
    db1, db2 = tmp_path / "db1", tmp_path / "db2"
    proc = ServeProcess(db1, *HOLD, cwd=tmp_path)
    keys = take(proc, "one-")
    proc.stop(signal.SIGKILL)
    assert json.loads((db1 / "spool" / LABEL).read_text())["database"] == f"chdb://{db1}"

    replayed(ServeProcess(db2, cwd=tmp_path))  # before: db2 got all 300
    assert count(db2) == 0

    proc = ServeProcess(db1, cwd=tmp_path)
    replayed(proc)
    assert_exactly_once(keys, stored_keys(stored(proc.dsn, KEYS_SQL)))


def test_a_shared_spool_is_refused_to_another_database_and_replays_into_its_own(tmp_path: Path) -> None:
    db1, db2, spool = tmp_path / "db1", tmp_path / "db2", tmp_path / "shared"
    proc = ServeProcess(db1, "--spool-dir", str(spool), *HOLD)
    keys = take(proc, "one-")
    proc.stop(signal.SIGKILL)

    out = refused_start(tmp_path, "--clickhouse", f"chdb://{db2}", "--spool-dir", str(spool))
    assert out.returncode != 0
    said = out.stdout + out.stderr
    assert "300 webhook(s)" in said and f"chdb://{db1}" in said and f"chdb://{db2}" in said, said
    assert "--hand-over-spool" in said

    proc = ServeProcess(db1, "--spool-dir", str(spool))
    replayed(proc)
    assert_exactly_once(keys, stored_keys(stored(proc.dsn, KEYS_SQL)))
    # Refused before anything was written there (its migrations included).
    assert stored(f"chdb://{db2}", "SELECT count() AS n FROM system.databases WHERE name = 'pbx'")[0]["n"] == 0


def test_a_server_that_was_down_then_the_default_engine_keep_their_spools_apart(tmp_path: Path) -> None:
    port = free_port()
    down = f"http://default:s3cret@127.0.0.1:{port}/pbx"  # nothing listens there
    data = tmp_path / "data"
    proc = ServeProcess(data, "--clickhouse", down, cwd=tmp_path)
    keys = take(proc, "srv-")
    proc.stop(signal.SIGKILL)
    server_spool = tmp_path / f"spool-127.0.0.1-{port}"
    label = (server_spool / LABEL).read_text()
    assert "s3cret" not in label and json.loads(label)["dsn"] == f"http://default:***@127.0.0.1:{port}/pbx"

    replayed(ServeProcess(data, cwd=tmp_path))  # the default engine: before, it got all 300
    assert count(data) == 0

    out = refused_start(tmp_path, "--clickhouse", f"chdb://{data}", "--spool-dir", str(server_spool))
    said = out.stdout + out.stderr
    assert out.returncode != 0 and f"127.0.0.1:{port}" in said and f"chdb://{data}" in said, said
    assert "s3cret" not in said

    proc = ServeProcess(data, "--spool-dir", str(server_spool), "--hand-over-spool")
    replayed(proc)
    assert_exactly_once(keys, stored_keys(stored(proc.dsn, KEYS_SQL)))
    assert "spool handed over" in proc.log()


def test_a_spool_an_earlier_version_left_beside_the_data_directory_is_replayed_into_it(tmp_path: Path) -> None:
    # What a version before the label left: ./spool beside ./data, recording no database.
    rows = [to_row("call_end", decode("call_end", [("call_id", f"old-{i}")]), now_ms()) for i in range(50)]
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, meta=spool_meta())
    append(spool, [encode_record(r) for r in rows])
    spool.close()

    proc = ServeProcess(tmp_path / "data", cwd=tmp_path)
    replayed(proc)
    assert_exactly_once({f"old-{i}" for i in range(50)}, stored_keys(stored(proc.dsn, KEYS_SQL)))
    assert not (tmp_path / "spool").exists()
    assert json.loads((tmp_path / "data" / "spool" / LABEL).read_text())["database"] == proc.dsn
    assert "earlier version" in proc.log()
