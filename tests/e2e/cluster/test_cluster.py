"""The migrations rendered for a ClickHouse cluster: ON CLUSTER, replicated, Distributed.

No cluster runs here; the embedded engine parses every statement
(``formatQuery``), and the layout rules are checked on the rendered text.
``tests/test_compose.py`` applies the same DDL to a real 2-replica cluster
where Docker is available.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from ingest.storing import clickhouse, cluster, migrations
from ingest.testing import refresh_views

CLUSTER = "pbx"


@pytest.fixture
def parser(tmp_path: Path) -> Iterator[Client]:
    """An embedded engine used only to parse SQL."""
    client = clickhouse.connect(f"chdb://{tmp_path / 'chdata'}")
    yield client
    client.close()


def _plan() -> tuple[cluster.ClusterPlan, list[tuple[migrations.Migration, str]]]:
    loaded = migrations.load_migrations()
    plan = cluster.cluster_plan(loaded, CLUSTER)
    return plan, [(m, s) for m in loaded for s in plan.statements(m)]


def _format(client: Client, sql: str) -> str:
    return client.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0]


def test_every_cluster_statement_of_every_migration_parses(parser: Client):
    _, statements = _plan()
    assert len(statements) > len(migrations.load_migrations())
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
    quarantine = next(s for s in texts if "'events_quarantine_local', " in s)
    assert "cityHash64(batch_token)" in quarantine, "a retried quarantine insert reaches the same shard"


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
    for migration in migrations.load_migrations():
        for sql in migration.statements():
            assert "ON CLUSTER" not in sql and "Replicated" not in sql and "_local" not in sql


def test_a_sharded_table_altered_later_changes_local_and_distributed_tables():
    steps = [
        migrations.Migration(1, "create_t", "CREATE TABLE pbx.t ${ON_CLUSTER} (a UInt8) ENGINE = ${REPLICATED}MergeTree ORDER BY a;"),
        migrations.Migration(2, "add_b", "ALTER TABLE pbx.t ${ON_CLUSTER} ADD COLUMN b UInt8;"
                            "ALTER TABLE pbx.t ${ON_CLUSTER} MODIFY TTL toDate('2000-01-01') + INTERVAL 1 DAY;"),
        migrations.Migration(3, "create_mv", "CREATE MATERIALIZED VIEW pbx.mv ${ON_CLUSTER} TO pbx.t AS SELECT a FROM pbx.t"),
    ]  # fmt: skip
    plan = cluster.cluster_plan(steps, "c1")
    assert plan.statements(steps[1]) == [
        "ALTER TABLE pbx.t_local ON CLUSTER 'c1' ADD COLUMN b UInt8",
        "ALTER TABLE pbx.t ON CLUSTER 'c1' ADD COLUMN b UInt8",
        "ALTER TABLE pbx.t_local ON CLUSTER 'c1' MODIFY TTL toDate('2000-01-01') + INTERVAL 1 DAY",
    ]
    assert plan.statements(steps[2]) == [
        "CREATE MATERIALIZED VIEW pbx.mv ON CLUSTER 'c1' TO pbx.t_local AS SELECT a FROM pbx.t_local"
    ]


def test_a_cluster_name_that_would_need_quoting_is_refused():
    with pytest.raises(ValueError, match="cluster name"):
        cluster.cluster_plan(migrations.load_migrations(), "pbx'; DROP")


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


# -- the cluster layout computes what one server computes ---------------------------------------------

#: Views whose rows depend only on the data (the live views also depend on the wall clock).
COMPARED_VIEWS = ("queue_calls", "queue_stats_15m", "agent_stats_15m", "spy_sessions", "recording_audit", "calls",
                  "repeat_calls(window_s = 86400)", "staffing_15m")


def _one_node_of_the_cluster(client: Client, statements: list[str]) -> None:
    """Run the cluster DDL on one embedded engine: a 1-shard, 1-replica cluster.

    ON CLUSTER is dropped, Replicated*MergeTree becomes *MergeTree (no Keeper
    here), and each Distributed table over ``T_local`` becomes a view selecting
    every column of ``T_local`` (what a 1-shard Distributed table reads); an
    INSERT into it goes to ``T_local`` (where a 1-shard Distributed table sends it).
    Everything else runs exactly as rendered for the cluster.
    """
    client.command("CREATE DATABASE IF NOT EXISTS pbx ENGINE = Atomic")
    distributed: dict[str, str] = {}

    def view_over_local(table: str) -> None:
        columns = [r[0] for r in client.query(
            "SELECT name FROM system.columns WHERE database = 'pbx' AND table = {t:String} ORDER BY position",
            parameters={"t": f"{table}_local"}).result_rows]  # fmt: skip
        client.command(f"CREATE OR REPLACE VIEW pbx.{table} AS SELECT {', '.join(columns)} FROM pbx.{table}_local")

    for sql in statements:
        sql = sql.replace(f" ON CLUSTER '{CLUSTER}'", "")
        sql = re.sub(r"ENGINE = Replicated(\w*MergeTree)", r"ENGINE = \1", sql)
        dist = re.match(r"CREATE TABLE IF NOT EXISTS pbx\.(\w+) AS pbx\.(\w+)\nENGINE = Distributed\(", sql)
        if dist:
            distributed[dist[1]] = dist[2]
            view_over_local(dist[1])
            continue
        altered = re.match(r"\s*ALTER TABLE pbx\.(\w+) ", sql)
        if altered and altered[1] in distributed:
            view_over_local(altered[1])  # the Distributed table follows its local table's columns
            continue
        inserted = re.match(r"\s*INSERT INTO pbx\.(\w+)\b", sql)
        if inserted and inserted[1] in distributed:  # (a 1-shard Distributed insert: into the local table)
            sql = sql.replace(f"INSERT INTO pbx.{inserted[1]}", f"INSERT INTO pbx.{inserted[1]}_local", 1)
        client.command(sql)


def _load_events(client: Client, table: str, log: Path) -> int:
    """The access log's rows, inserted hour by hour (several blocks, as the service writes them)."""
    from ingest.backfill.batches import read_batches, rows_of
    from ingest.backfill.rows import ImportStats
    from ingest.events.table import COLUMN_TYPES, COLUMNS

    rows = [row for batch in read_batches(log, ImportStats()) for row in rows_of(batch)]
    hours: dict[Any, list[tuple[Any, ...]]] = {}
    received = COLUMNS.index("received_at")
    for row in rows:
        hours.setdefault(row[received] // 3_600_000, []).append(row)  # epoch ms -> the hour
    for batch in hours.values():
        client.insert(table, batch, column_names=list(COLUMNS), column_type_names=list(COLUMN_TYPES))
    return len(rows)


def _view_rows(client: Client) -> dict[str, list[tuple[Any, ...]]]:
    refresh_views(client)
    return {v: client.query(f"SELECT * FROM pbx.{v} ORDER BY ALL").result_rows for v in COMPARED_VIEWS}


def test_the_views_give_the_same_rows_on_the_cluster_layout_as_on_one_server(tmp_path: Path):
    from ingest.simulation import SimConfig, simulate, write_access_log

    log = tmp_path / "access.log"
    config = SimConfig(seed=9, start=dt.datetime(2026, 11, 2, 7, tzinfo=dt.UTC), hours=4, queues=3, agents=8)
    write_access_log(log, simulate(config).events)

    single = clickhouse.connect(f"chdb://{tmp_path / 'single'}")
    try:
        migrations.apply_migrations(single)
        stored = _load_events(single, "pbx.events", log)
        expected = _view_rows(single)
    finally:
        single.close()

    _, statements = _plan()
    node = clickhouse.connect(f"chdb://{tmp_path / 'node'}")
    try:
        _one_node_of_the_cluster(node, [s for _, s in statements])
        assert _load_events(node, "pbx.events_local", log) == stored
        got = _view_rows(node)
    finally:
        node.close()
    for view in COMPARED_VIEWS:
        assert expected[view], f"{view} is empty: the comparison would prove nothing"
        assert got[view] == expected[view], f"pbx.{view} differs on the cluster layout"
