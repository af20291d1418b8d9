"""The schema and its migrations."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.events.spec import PARAMS
from ingest.events.table import COLUMN_TYPES, COLUMNS
from ingest.storing import clickhouse, migrations


def test_insert_columns_and_declared_types_match_the_table(ch):
    described = {row[0]: row[1] for row in ch.query("DESCRIBE TABLE pbx.events").result_rows}
    assert list(described)[: len(COLUMNS)] == list(COLUMNS)
    for name, type_ in zip(COLUMNS, COLUMN_TYPES):
        assert described[name] == type_, name


def test_every_spec_parameter_is_a_column_named_as_in_the_spec(ch):
    columns = {row[0] for row in ch.query("DESCRIBE TABLE pbx.events").result_rows}
    assert set(PARAMS) <= columns
    assert {"received_at", "event", "extra"} <= columns


def test_migrations_apply_once_and_rerunning_is_a_no_op(dsn):
    client = clickhouse.connect(dsn)
    try:
        first = migrations.apply_migrations(client)
        assert [m.version for m in first] == [m.version for m in migrations.load_migrations()]
        assert migrations.apply_migrations(client) == []
        recorded = client.query("SELECT version FROM pbx.schema_migrations ORDER BY version").result_rows
        assert [r[0] for r in recorded] == [m.version for m in first]
    finally:
        client.close()


def test_migration_files_are_numbered_verb_object_and_split_into_statements(tmp_path: Path):
    (tmp_path / "0001_create_t.sql").write_text(
        "-- a comment; with a semicolon\nCREATE TABLE x (s String DEFAULT ';') ENGINE = Memory;\n\n"
        "/* block; comment */ CREATE VIEW v AS SELECT 1;\n-- trailing comment only\n"
    )
    [migration] = migrations.load_migrations(tmp_path)
    statements = migration.statements()
    assert len(statements) == 2 and "DEFAULT ';'" in statements[0]
    (tmp_path / "2_bad.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="NNNN_verb_object"):
        migrations.load_migrations(tmp_path)


def test_cluster_rendering_fills_the_placeholders():
    sql = "CREATE TABLE pbx.t ${ON_CLUSTER} (a UInt8) ENGINE = ${REPLICATED}MergeTree ORDER BY a"
    assert migrations.render(sql) == "CREATE TABLE pbx.t  (a UInt8) ENGINE = MergeTree ORDER BY a"
    assert "ON CLUSTER 'pbx' (a UInt8) ENGINE = ReplicatedMergeTree" in migrations.render(sql, "pbx")
