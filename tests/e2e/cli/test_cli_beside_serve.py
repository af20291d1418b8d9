"""``sql`` and ``migrate`` while ``serve`` holds the embedded engine (issue 12): through its
HTTP interface with the user's rights; on the engine itself once the service is gone."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ingest.querying.access import OwnerFile
from ingest.testing import REPO, ServeProcess, Subprocess, free_port, serve_command
from tests.e2e.reliability.test_reliability import wait_health


def run(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "ingest", *args], capture_output=True, text=True,
                          timeout=300, env=os.environ.copy())


def reader_sql(proc: ServeProcess, sql: str) -> str:
    """A query as Grafana would send it: the read-only user, over HTTP."""
    return httpx.post(proc.query_url, content=sql, timeout=30).text


def test_sql_reads_and_the_owner_writes_through_the_running_service(serve: ServeProcess) -> None:
    assert httpx.get(f"{serve.url}/call_end?call_id=c1").status_code == 200
    wait_health(serve.url, lambda h: h["backlog"] == 0)
    out = run("sql", "SELECT call_id FROM pbx.events", "--format", "TSV", "--clickhouse", serve.dsn)
    assert (out.returncode, out.stdout, out.stderr) == (0, "c1\n", "")

    wrote = run("sql", "INSERT INTO pbx.queue_settings (queue_name, sla_threshold_s, short_abandon_s) VALUES ('helpdesk', 30, 8)", "--clickhouse", serve.dsn)
    assert wrote.returncode == 0, wrote.stderr
    assert reader_sql(serve, "SELECT queue_name, sla_threshold_s FROM pbx.queue_settings") == "helpdesk\t30\n"

    bad = run("sql", "SELECT nope FROM pbx.missing", "--clickhouse", serve.dsn)
    assert bad.returncode == 1 and "UNKNOWN_TABLE" in bad.stderr and "Traceback" not in bad.stderr

    migrated = run("migrate", "--clickhouse", serve.dsn)
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 0 migration(s)" in migrated.stdout and "through the running service" in migrated.stderr


def _not_the_owner() -> tuple[str, ...]:
    """Run as a user for whom a mode-000 file is unreadable: root without its file-permission
    override (setpriv), anyone else as they are."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root's file-permission override"
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")


def test_a_user_who_cannot_read_the_service_file_queries_as_the_read_only_user(serve: ServeProcess) -> None:
    owner_file = Path(serve.dsn.removeprefix("chdb://")) / OwnerFile.NAME
    owner_file.chmod(0)
    try:
        env = ("--clickhouse", serve.dsn)
        port = ("env", f"PBX_QUERY_PORT={serve.query_port}")
        read = run("sql", "SELECT count() FROM pbx.events", "--format", "TSV", *env, prefix=(*_not_the_owner(), *port))
        assert read.returncode == 0 and read.stdout == "0\n", read.stderr
        assert "read-only user 'default'" in read.stderr
        write = run("sql", "INSERT INTO pbx.queue_settings SELECT 'x', 1, 1", *env, prefix=(*_not_the_owner(), *port))
        assert write.returncode == 1 and "READONLY" in write.stderr, write.stderr
    finally:
        owner_file.chmod(0o600)
    assert reader_sql(serve, "SELECT count() FROM pbx.queue_settings") == "0\n"


def test_a_dead_service_s_file_leaves_the_commands_on_the_engine(tmp_path: Path, migrated_copy) -> None:
    proc = ServeProcess(migrated_copy(tmp_path / "chdata"))
    assert httpx.get(f"{proc.url}/call_end?call_id=c1").status_code == 200
    wait_health(proc.url, lambda h: h["backlog"] == 0)
    proc.stop(signal.SIGKILL)  # its service.json stays, naming a pid that is gone
    assert (tmp_path / "chdata" / OwnerFile.NAME).exists()
    out = run("sql", "SELECT call_id FROM pbx.events", "--format", "TSV", "--clickhouse", proc.dsn)
    assert (out.returncode, out.stdout) == (0, "c1\n"), out.stderr
    migrated = run("migrate", "--clickhouse", proc.dsn)
    assert migrated.returncode == 0 and "through" not in migrated.stderr, migrated.stderr


@pytest.mark.parametrize("command", [("sql", "SELECT 1"), ("migrate",)], ids=["sql", "migrate"])
def test_with_the_query_interface_off_the_commands_say_who_holds_the_engine(tmp_path: Path, command,
                                                                              migrated_copy) -> None:
    proc = ServeProcess(migrated_copy(tmp_path / "chdata"), "--query-port", "0")
    try:
        out = run(*command, "--clickhouse", proc.dsn)
    finally:
        proc.stop()
    assert out.returncode == 1
    assert "is in use by process" in out.stderr and "Traceback" not in out.stderr


def test_the_readme_s_query_it_commands_work_as_written_while_serve_runs(tmp_path: Path) -> None:
    """Both with the defaults (./data), from the directory serve was started in."""
    section = (REPO / "README.md").read_text().split("## Query it", 1)[1]
    commands = [shlex.split(line) for line in re.search(r"```sh\n(.*?)```", section, re.DOTALL)[1].splitlines()]
    assert commands and all(c[0] == ".venv/bin/pbx-analytics" for c in commands)
    port = free_port()
    proc = Subprocess(serve_command(port, free_port()), tmp_path / "serve.log", port, cwd=tmp_path)
    try:
        proc.wait_ready()
        assert httpx.get(f"{proc.url}/call_end?call_id=c1").status_code == 200
        wait_health(proc.url, lambda h: h["backlog"] == 0)
        for command in commands:
            out = subprocess.run([sys.executable, "-m", "ingest", *command[1:]], capture_output=True, text=True,
                                 timeout=300, cwd=tmp_path)
            assert out.returncode == 0 and "call_end" in out.stdout, (command, out.stderr)
    finally:
        proc.stop()
