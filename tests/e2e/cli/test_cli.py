"""The command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ingest.config import ConfigError, Settings, default_dsn
from ingest.testing import free_port


def run(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, cwd=cwd,
    )


def test_migrate_then_sql_prints_query_results_in_the_chosen_format(dsn):
    migrated = run("migrate", "--clickhouse", dsn)
    assert migrated.returncode == 0, migrated.stderr
    assert "0001_create_events" in migrated.stdout
    again = run("migrate", "--clickhouse", dsn)
    assert "applied 0 migration(s)" in again.stdout
    out = run("sql", "SELECT name FROM system.tables WHERE database = 'pbx' AND name = 'events'",
              "--format", "TSV", env={"PBX_CLICKHOUSE_URL": dsn})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "events\n"


def test_sql_error_is_a_message_not_a_traceback(dsn):
    out = run("sql", "SELECT nope FROM pbx.missing", "--clickhouse", dsn)
    assert out.returncode == 1
    assert "pbx-analytics:" in out.stderr and "Traceback" not in out.stderr


def test_default_engine_lives_under_data_in_the_working_directory(tmp_path):
    out = run("sql", "SELECT 1", "--format", "TSV", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "data").is_dir()


def test_a_second_serve_on_a_served_engine_or_spool_is_refused_in_one_line_naming_the_first(serve, tmp_path):
    holder = f"process {serve.proc.pid} (pbx-analytics serve --port {serve.port}"
    # serve twice on one data directory: one JSON line with the cause and the fix, before binding a port
    again = run("serve", "--port", str(free_port()), "--clickhouse", serve.dsn)
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again.stderr
    line = json.loads(again.stderr)
    assert line["level"] == "critical" and line["msg"].startswith("cannot start: the embedded engine at ")
    assert f"in use by {holder}" in line["msg"] and "give this one another --clickhouse" in line["msg"]
    # another engine, but the first one's spool directory
    held = tmp_path / "chdata" / "spool"  # the first one's default: inside its data directory
    spool = run("serve", "--port", str(free_port()), "--clickhouse", f"chdb://{tmp_path / 'other'}",
                "--spool-dir", str(held), "--no-migrate")
    assert spool.returncode == 1 and spool.stderr.count("\n") == 1, spool.stderr
    assert f"spool directory {held} is in use by {holder}" in json.loads(spool.stderr)["msg"]


def test_a_server_that_is_down_is_one_line_without_the_library_retries_or_the_password():
    dsn = f"http://writer:s3cret@127.0.0.1:{free_port()}/pbx"
    for args in (("migrate",), ("sql", "SELECT 1"), ("import", "/dev/null")):
        out = run(*args, "--clickhouse", dsn)
        assert out.returncode == 1, out.stderr
        assert out.stderr.count("\n") == 1, out.stderr  # not 80 lines of traceback, no urllib3 retry line
        assert "cannot reach ClickHouse at http://writer:***@127.0.0.1:" in out.stderr
        assert "connection refused" in out.stderr and "s3cret" not in out.stderr


def test_global_flags_work_after_the_command_too():
    # The README's `serve --log-level DEBUG`: accepted (this run stops at the bad port it is given).
    out = run("serve", "--log-level", "DEBUG", env={"PBX_PORT": "eighty"})
    assert out.returncode == 2 and "PBX_PORT" in out.stderr
    # After the command wins over before it; either alone works.
    assert "INFO" not in Settings.from_env({}, log_level="ERROR").log_level
    quiet = run("--log-level", "DEBUG", "sql", "SELECT 1", "--log-level", "ERROR", "--format", "TSV")
    assert quiet.returncode == 0 and quiet.stdout == "1\n" and quiet.stderr == ""


def test_version_names_the_package_and_the_engine():
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("pbx-analytics 0.") and "embedded engine: chdb " in out.stdout


def test_sql_dash_reads_the_query_from_stdin(dsn):
    out = subprocess.run([sys.executable, "-m", "ingest", "sql", "-", "--format", "TSV", "--clickhouse", dsn],
                         input="SELECT 40 + 2\n", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\n"


def test_sql_errors_quote_the_users_query_not_the_format_the_tool_adds(dsn):
    cut = run("sql", "SELECT 1 +", "--clickhouse", dsn)
    assert cut.returncode == 1 and cut.stderr.count("\n") == 1
    assert "FORMAT" not in cut.stderr and "PrettyCompactMonoBlock" not in cut.stderr
    assert "Syntax error: failed at position 11 (end of query)" in cut.stderr
    unknown = run("sql", "SELECT 1", "--format", "Nope", "--clickhouse", dsn)
    assert unknown.returncode == 1
    assert unknown.stderr.count("Code: 73") == 1 and unknown.stderr.count("DB::Exception") == 0
    assert unknown.stderr.startswith("pbx-analytics: --format Nope: Code: 73. Unknown format Nope.")
    own = run("sql", "SELECT 7 AS n FORMAT JSONEachRow", "--clickhouse", dsn)
    assert own.returncode == 0 and own.stdout == '{"n":7}\n'
    own_unknown = run("sql", "SELECT 1 FORMAT Nope", "--clickhouse", dsn)  # the query's format, not --format's
    assert own_unknown.returncode == 1 and "--format" not in own_unknown.stderr
    assert own_unknown.stderr.startswith("pbx-analytics: Code: 73. Unknown format Nope.")


def test_simulate_help_is_for_users_and_a_run_without_output_says_so(tmp_path):
    helps = run("simulate", "--help").stdout + run("import", "--help").stdout + run("serve", "--help").stdout
    assert "SIM_" not in helps and "IMPORT_" not in helps and "LOG_LEVEL" not in helps.replace("PBX_LOG_LEVEL", "")
    nothing = run("simulate", "--hours", "0.1", cwd=tmp_path)
    assert nothing.returncode == 2
    assert "nothing to write: give --access-log FILE, --target URL and/or --truth FILE" in nothing.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_missing_embedded_engine_is_one_line_naming_the_extra(tmp_path):
    # The embedded engine not importable, as in an install without the `embedded` extra.
    without = ("import sys; sys.modules['chdb'] = None; from ingest.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    for args in (["sql", "SELECT 1"], ["serve", "--port", str(free_port())]):
        out = subprocess.run([sys.executable, "-c", without, *args, "--clickhouse", f"chdb://{tmp_path / 'x'}"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
        assert "the embedded engine is not installed" in out.stderr
        assert "pip install 'pbx-analytics[embedded]'" in out.stderr and "--clickhouse http://" in out.stderr


def test_serve_beyond_loopback_without_a_token_warns(caplog):
    from ingest.cli import _warn_if_open

    with caplog.at_level("WARNING", logger="ingest.cli"):
        _warn_if_open(Settings(host="127.0.0.1"))
        _warn_if_open(Settings(host="0.0.0.0", token="t0ken"))
        assert caplog.records == []
        _warn_if_open(Settings(host="0.0.0.0"))
    assert [r.getMessage() for r in caplog.records] == [
        "listening on 0.0.0.0 without a token: anyone who can reach port 8080 can store webhooks; "
        "set PBX_TOKEN (docs/reliability.md, Security)"
    ]


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="PBX_BATCH_SIZE"):
        Settings.from_env({"PBX_BATCH_SIZE": "lots"})
    with pytest.raises(ConfigError, match="PBX_IMPORT_YIELD must be 0 to 100, got -1"):
        Settings.from_env({"PBX_IMPORT_YIELD": "-1"})
    out = run("serve", env={"PBX_PORT": "eighty"})
    assert out.returncode == 2 and "PBX_PORT" in out.stderr


def test_flags_override_environment_and_environment_overrides_defaults(tmp_path):
    settings = Settings.from_env({"PBX_PORT": "9000", "PBX_BATCH_SIZE": "7", "PBX_ACCESS_LOG": "yes"}, port=9100)
    assert (settings.port, settings.batch_size, settings.access_log) == (9100, 7, True)
    assert Settings().clickhouse_url == default_dsn() and default_dsn().startswith("chdb:///")
    with pytest.raises(ConfigError, match="clickhouse url"):
        Settings(clickhouse_url="mysql://x")


def test_sql_runs_statements_that_return_no_rows(ch, dsn):
    ch.close()
    inserted = run("sql", "-- per-queue targets\nINSERT INTO pbx.queue_settings (queue_name, sla_threshold_s, short_abandon_s) VALUES ('helpdesk', 30, 8)",
                   "--clickhouse", dsn)
    assert inserted.returncode == 0, inserted.stderr
    out = run("sql", "SELECT queue_name, sla_threshold_s FROM pbx.queue_settings", "--format", "CSV",
              "--clickhouse", dsn)
    assert out.stdout == '"helpdesk",30\n'


def test_serve_freezes_its_start_up_heap_before_taking_webhooks(tmp_path, migrated_copy):
    import httpx

    from ingest.testing import ServeProcess

    proc = ServeProcess(migrated_copy(tmp_path / "chdata"), env={"PBX_LOG_LEVEL": "DEBUG"})
    try:
        with httpx.Client(base_url=proc.url) as http:
            assert http.get("/call_end", params={"call_id": "after-freeze"}).status_code == 200
    finally:
        assert proc.stop() == 0
    lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    (frozen,) = [line for line in lines if line["msg"] == "start-up heap frozen"]
    # Every module, the engine's client and the app: out of the collector's sight (~100 k objects).
    assert frozen["objects"] > 20_000, frozen


def test_serve_with_clickhouse_down_logs_one_line_of_its_own_not_the_library_retries(tmp_path):
    import time

    import httpx

    from ingest.testing import ServeProcess

    down = f"http://writer:s3cret@127.0.0.1:{free_port()}/pbx"  # nothing listens there
    proc = ServeProcess(tmp_path / "chdata", "--clickhouse", down, "--spool-dir", str(tmp_path / "spool"),
                        env={"PBX_DRAIN_TIMEOUT": "1"})
    try:
        with httpx.Client(base_url=proc.url) as http:
            deadline = time.monotonic() + 5  # several retries: 0.1 s doubling
            i = 0
            while time.monotonic() < deadline:
                assert http.get("/call_end", params={"call_id": f"d{i}"}).status_code == 200
                i += 1
                time.sleep(0.05)
            health = http.get("/healthz").json()
        assert health["clickhouse"] == "down" and health["spool"] == "ok"
        assert health["last_error"].startswith("cannot reach ClickHouse at http://writer:***@127.0.0.1:")
    finally:
        assert proc.stop() == 0
    lines = [json.loads(line) for line in proc.log().splitlines()]
    own = [line for line in lines if line["msg"].startswith("ClickHouse unavailable")]
    assert len(own) == 1 and "connection refused" in own[0]["error"], own
    assert not [line for line in lines if line["logger"].startswith(("urllib3", "clickhouse_connect"))]
    assert "s3cret" not in proc.log()
