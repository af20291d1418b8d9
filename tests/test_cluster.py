"""The migrations rendered for a ClickHouse cluster: ON CLUSTER, replicated, Distributed.

No cluster runs here; the embedded engine parses every statement
(``formatQuery``), and the layout rules are checked on the rendered text.
``tests/test_compose.py`` applies the same DDL to a real 2-replica cluster
where Docker is available.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from ingest import db

CLUSTER = "pbx"


@pytest.fixture(scope="module")
def parser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """An embedded engine used only to parse SQL."""
    client = db.connect(f"chdb://{tmp_path_factory.mktemp('parse') / 'chdata'}")
    yield client
    client.close()


def _plan() -> tuple[db.ClusterPlan, list[tuple[db.Migration, str]]]:
    migrations = db.load_migrations()
    plan = db.cluster_plan(migrations, CLUSTER)
    return plan, [(m, s) for m in migrations for s in plan.statements(m)]


def _format(client: Client, sql: str) -> str:
    return client.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0]


def test_every_cluster_statement_of_every_migration_parses(parser: Client):
    _, statements = _plan()
    assert len(statements) > len(db.load_migrations())
    for migration, sql in statements:
        try:
            formatted = _format(parser, sql)
        except Exception as exc:  # pragma: no cover - the message is the diagnosis
            pytest.fail(f"{migration.version:04d}_{migration.name}: cluster DDL does not parse: {exc}\n{sql}")
        # Parsing the formatted text again gives the same text: nothing was misread.
        assert _format(parser, formatted) == formatted


def test_every_ddl_statement_runs_on_cluster():
    _, statements = _plan()
    for migration, sql in statements:
        if re.match(r"\s*(CREATE|ALTER|DROP|RENAME|TRUNCATE)\b", sql, re.IGNORECASE):
            assert f"ON CLUSTER '{CLUSTER}'" in sql, f"{migration.name}: no ON CLUSTER in {sql[:120]}"
        assert "${" not in sql, f"{migration.name}: unfilled placeholder in {sql[:120]}"


def test_stored_tables_are_replicated_local_tables_behind_distributed_tables_of_the_same_name():
    plan, statements = _plan()
    assert "events" in plan.sharded
    texts = [sql for _, sql in statements]
    for table in plan.sharded:
        local = next(s for s in texts if re.match(rf"\s*CREATE TABLE IF NOT EXISTS pbx\.{table}_local\b", s))
        assert re.search(r"ENGINE = Replicated\w*MergeTree", local), local[:200]
        dist = next(s for s in texts if re.match(rf"\s*CREATE TABLE IF NOT EXISTS pbx\.{table}\b(?!_)", s))
        assert f"ENGINE = Distributed('{CLUSTER}', 'pbx', '{table}_local'" in dist
    events = next(s for s in texts if "'events_local', " in s)
    assert "cityHash64(call_id)" in events, "events are sharded by call"


def test_refreshed_tables_are_a_full_copy_on_every_node():
    plan, statements = _plan()
    for table in plan.per_node:
        create = next(s for _, s in statements if re.match(rf"\s*CREATE TABLE IF NOT EXISTS pbx\.{table}\b(?!_)", s))
        assert "Replicated" not in create and "Distributed" not in create
    assert not plan.per_node & plan.sharded


def test_incremental_views_read_and_write_local_tables_and_plain_views_read_distributed_ones():
    plan, statements = _plan()
    for migration, sql in statements:
        if re.match(r"\s*CREATE MATERIALIZED VIEW", sql) and not re.search(r"\bREFRESH\s+(EVERY|AFTER)\b", sql):
            for table in plan.sharded:
                assert not re.search(rf"\bpbx\.{table}\b(?!_)", sql), f"{migration.name}: {table} not local"
        if re.match(r"\s*CREATE (OR REPLACE )?VIEW", sql) or re.search(r"\bREFRESH\s+(EVERY|AFTER)\b", sql):
            assert "_local" not in sql, f"{migration.name}: a view reads a node-local table"


def test_single_server_rendering_keeps_plain_names_and_engines():
    for migration in db.load_migrations():
        for sql in migration.statements():
            assert "ON CLUSTER" not in sql and "Replicated" not in sql and "_local" not in sql


def test_a_sharded_table_altered_later_changes_local_and_distributed_tables():
    migrations = [
        db.Migration(1, "create_t", "CREATE TABLE pbx.t ${ON_CLUSTER} (a UInt8) ENGINE = ${REPLICATED}MergeTree ORDER BY a;"),
        db.Migration(2, "add_b", "ALTER TABLE pbx.t ${ON_CLUSTER} ADD COLUMN b UInt8;"
                     "ALTER TABLE pbx.t ${ON_CLUSTER} MODIFY TTL toDate('2000-01-01') + INTERVAL 1 DAY;"),
        db.Migration(3, "create_mv", "CREATE MATERIALIZED VIEW pbx.mv ${ON_CLUSTER} TO pbx.t AS SELECT a FROM pbx.t"),
    ]  # fmt: skip
    plan = db.cluster_plan(migrations, "c1")
    assert plan.statements(migrations[1]) == [
        "ALTER TABLE pbx.t_local ON CLUSTER 'c1' ADD COLUMN b UInt8",
        "ALTER TABLE pbx.t ON CLUSTER 'c1' ADD COLUMN b UInt8",
        "ALTER TABLE pbx.t_local ON CLUSTER 'c1' MODIFY TTL toDate('2000-01-01') + INTERVAL 1 DAY",
    ]
    assert plan.statements(migrations[2]) == [
        "CREATE MATERIALIZED VIEW pbx.mv ON CLUSTER 'c1' TO pbx.t_local AS SELECT a FROM pbx.t_local"
    ]


def test_a_cluster_name_that_would_need_quoting_is_refused():
    with pytest.raises(ValueError, match="cluster name"):
        db.cluster_plan(db.load_migrations(), "pbx'; DROP")


def test_the_cluster_setting_comes_from_the_environment_and_needs_a_server():
    from ingest.config import ConfigError, Settings

    env = {"PBX_CLICKHOUSE_URL": "http://writer:pw@ch1:8123/pbx", "PBX_CLICKHOUSE_CLUSTER": "pbx"}
    assert Settings.from_env(env).clickhouse_cluster == "pbx"
    assert Settings.from_env({**env, "PBX_CLICKHOUSE_CLUSTER": ""}).clickhouse_cluster == ""
    with pytest.raises(ConfigError, match="needs ClickHouse servers"):
        Settings(clickhouse_cluster="pbx")
    with pytest.raises(ConfigError, match="clickhouse cluster"):
        Settings(clickhouse_url="http://ch:8123", clickhouse_cluster="a b")


def test_migrate_with_cluster_on_the_embedded_engine_is_refused_clearly(tmp_path, capsys):
    from ingest.cli import main

    assert main(["migrate", "--clickhouse", f"chdb://{tmp_path / 'd'}", "--cluster", "pbx"]) == 2
    assert "cluster needs ClickHouse servers" in capsys.readouterr().err
