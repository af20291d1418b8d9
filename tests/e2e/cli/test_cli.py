"""The command line, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ingest.config import ConfigError, Settings, default_dsn


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


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="PBX_BATCH_SIZE"):
        Settings.from_env({"PBX_BATCH_SIZE": "lots"})
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
