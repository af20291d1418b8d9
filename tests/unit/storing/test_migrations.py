"""Applied migrations are history: the landed files cannot change, and a database that applied
another text of a migration refuses to start.

When a migration lands on ``main``, its line goes into ``sql/LANDED.sha256`` (``sql/README.md``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from litestar.testing import TestClient

from ingest.cli import main
from ingest.config import Settings
from ingest.receiving.app import create_app
from ingest.storing import clickhouse, migrations
from ingest.testing import REPO, free_port

SQL = REPO / "sql"


def test_every_migration_that_landed_on_main_is_unchanged():
    landed, earlier = migrations.landed(SQL)
    assert landed, "sql/LANDED.sha256 lists the landed migrations"
    for name, checksum in sorted(landed.items()):
        path = SQL / name
        assert path.is_file(), f"{name} landed on main and must stay (add a new migration instead)"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == checksum, (
            f"{name} landed on main and was edited: restore it and put the change in a new numbered migration")
    assert set(earlier) <= set(landed)


def test_the_manifest_checksum_is_the_one_the_database_records():
    landed, _ = migrations.landed(SQL)
    by_file = {m.file_name: m.checksum for m in migrations.load_migrations(SQL)}
    assert {name: by_file[name] for name in landed} == landed


def _tamper(dsn: str, version: int = 4) -> None:
    """Record another checksum for an applied migration, as a database that applied an edited text has."""
    client = clickhouse.connect(dsn)
    try:
        migrations.apply_migrations(client)
        client.command(f"ALTER TABLE pbx.schema_migrations UPDATE checksum = 'f00d' WHERE version = {version}",
                       settings={"mutations_sync": 2})
    finally:
        client.close()


def test_an_applied_migration_that_changed_is_an_error_naming_it(dsn):
    _tamper(dsn)
    client = clickhouse.connect(dsn)
    try:
        with pytest.raises(migrations.MigrationChanged, match=r"0004_create_agent_segments\.sql .*immutable"):
            migrations.apply_migrations(client)
    finally:
        client.close()


def test_migrate_says_so_in_one_line_and_fails(dsn, capsys):
    _tamper(dsn)
    capsys.readouterr()
    assert main(["migrate", "--clickhouse", dsn]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "0004_create_agent_segments.sql was changed" in err


def test_serve_does_not_start_on_a_changed_migration(dsn, tmp_path: Path, capsys):
    _tamper(dsn)
    with pytest.raises(ExceptionGroup) as failed, TestClient(create_app(Settings(clickhouse_url=dsn))):
        pass
    assert failed.group_contains(migrations.MigrationChanged)
    capsys.readouterr()
    # serve: one line, before the port is bound
    assert main(["serve", "--port", str(free_port()), "--clickhouse", dsn,
                 "--spool-dir", str(tmp_path / "spool")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    line = json.loads(err)
    assert line["level"] == "critical" and line["msg"].startswith("cannot start: ")
    assert "0004_create_agent_segments.sql was changed" in line["msg"]


def test_an_earlier_text_that_landed_before_the_rule_only_warns(dsn, caplog):
    _, earlier = migrations.landed(SQL)
    old = min(earlier["0007_create_stats_15m.sql"])
    client = clickhouse.connect(dsn)
    try:
        migrations.apply_migrations(client)
        client.command(f"ALTER TABLE pbx.schema_migrations UPDATE checksum = '{old}' WHERE version = 7",
                       settings={"mutations_sync": 2})
        assert migrations.apply_migrations(client) == []
    finally:
        client.close()
    assert any(r.getMessage() == "database applied an earlier text of a migration" for r in caplog.records)
