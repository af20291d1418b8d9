"""ClickHouse connections and schema migrations.

One code path for both engines: clickhouse-connect's ``get_client(dsn=...)``
opens the embedded chDB engine for ``chdb:///path`` and a server for
``http(s)://`` URLs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import clickhouse_connect
import sqlparse
from clickhouse_connect.driver.client import Client

__all__ = [
    "ClusterPlan",
    "EngineBusyError",
    "Migration",
    "apply_migrations",
    "cluster_plan",
    "connect",
    "load_migrations",
    "sql_dir",
]

log = logging.getLogger(__name__)

DATABASE = "pbx"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class EngineBusyError(RuntimeError):
    """The embedded engine's data directory is held by another process."""


def connect(dsn: str) -> Client:
    """A client for ``dsn``; explains the embedded engine's one-process rule."""
    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except Exception as exc:
        text = str(exc)
        if dsn.startswith("chdb:") and ("EmbeddedServer" in text or "already initialized" in text):
            raise EngineBusyError(
                f"the embedded engine at {dsn} is in use by another process (a running "
                "`pbx-analytics serve`?). The embedded engine allows one process per data "
                "directory: stop that process first, or run this against a ClickHouse server "
                "(--clickhouse http://user:pass@host:8123/pbx)."
            ) from exc
        raise


def sql_dir() -> Path:
    """The migrations: packaged with the wheel, or the repo's ``sql/``."""
    packaged = Path(__file__).parent / "_sql"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "sql"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def raw_statements(self) -> list[str]:
        """The file's statements, placeholders left in."""
        return [s.strip().rstrip(";") for s in sqlparse.split(self.sql) if _has_code(s)]

    def statements(self, cluster: str | None = None) -> list[str]:
        """The file's statements with placeholders filled (``ClusterPlan`` does the full cluster layout)."""
        return [render(s, cluster) for s in self.raw_statements()]


def render(sql: str, cluster: str | None = None) -> str:
    """Fill the migration placeholders.

    Migrations are written once for both deployments:

    * ``${ON_CLUSTER}`` after the object name of every CREATE/ALTER/DROP:
      nothing on one server, ``ON CLUSTER '<name>'`` on a cluster;
    * ``${REPLICATED}`` before every ``*MergeTree`` engine: nothing on one
      server, ``Replicated`` on a cluster (the server's default replica path
      and name are used, so no Keeper path is hard-coded here).
    """
    return sql.replace("${ON_CLUSTER}", f"ON CLUSTER '{cluster}'" if cluster else "").replace(
        "${REPLICATED}", "Replicated" if cluster else ""
    )


_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + DATABASE + r"\.(\w+)\b", re.IGNORECASE
)
_REFRESH_TARGET = re.compile(
    r"^\s*CREATE\s+MATERIALIZED\s+VIEW\b.*?\bREFRESH\b.*?\bTO\s+" + DATABASE + r"\.(\w+)\b",
    re.IGNORECASE | re.DOTALL,
)
_MATERIALIZED_VIEW = re.compile(r"^\s*CREATE\s+MATERIALIZED\s+VIEW\b", re.IGNORECASE)
_REFRESH = re.compile(r"\bREFRESH\s+(?:EVERY|AFTER)\b", re.IGNORECASE)
_ALTER_OR_DROP_TABLE = re.compile(
    r"^\s*(ALTER|DROP)\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + DATABASE + r"\.(\w+)\b", re.IGNORECASE
)
_COLUMN_ALTER = re.compile(r"^\s*ALTER\s+TABLE\s+\S+\s+(?:ON\s+CLUSTER\s+\S+\s+)?"
                           r"(?:ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.IGNORECASE)

#: How a Distributed table spreads inserted rows over shards. Events: by call,
#: so a retried batch lands on the same shards (deduplication) and a call's
#: events sit together. Other sharded tables are only written by their
#: materialized views on the local table; rand() serves direct inserts.
SHARDING_KEYS = {
    "events": "cityHash64(call_id)",
    # A retried quarantine insert must reach the shard that may already hold it,
    # or its dedup token cannot drop it.
    "events_quarantine": "cityHash64(batch_token)",
}


@dataclass(frozen=True)
class ClusterPlan:
    """How the migrations map onto a ClickHouse cluster.

    * ``sharded``: every ``${REPLICATED}*MergeTree`` table ``pbx.T`` becomes
      ``pbx.T_local`` (Replicated*MergeTree, on every node, ON CLUSTER) plus
      ``pbx.T``, a Distributed table over ``T_local``. Readers and writers keep
      using ``pbx.T``: the single-server names are the cluster's names.
    * Incremental materialized views run per insert on the node that stores
      the block, so they read ``*_local`` sources and write ``*_local`` targets;
      replication copies their output, it does not re-trigger them.
    * ``per_node``: targets of refreshable materialized views. A refresh
      recomputes the whole result from the Distributed sources, so each node
      keeps its own full copy (plain MergeTree, not sharded): every node can
      answer alone, and replicas never race to replace a shared table.
    * Plain views keep reading the Distributed names.
    """

    cluster: str
    sharded: frozenset[str]
    per_node: frozenset[str]

    def local(self, table: str) -> str:
        return f"{table}_local" if table in self.sharded else table

    def statements(self, migration: Migration) -> list[str]:
        out: list[str] = []
        for statement in migration.raw_statements():
            out.extend(self._rewrite(statement))
        return out

    def _rewrite(self, raw: str) -> list[str]:
        on_cluster = f"ON CLUSTER '{self.cluster}'"
        sql = _strip_comments(raw)
        created = _CREATE_TABLE.match(sql)
        if created and created[1] in self.per_node:
            return [sql.replace("${ON_CLUSTER}", on_cluster).replace("${REPLICATED}", "")]
        sql = sql.replace("${ON_CLUSTER}", on_cluster).replace("${REPLICATED}", "Replicated")
        if created and created[1] in self.sharded:
            table = created[1]
            local = _rename_table(sql, table, f"{table}_local")
            key = SHARDING_KEYS.get(table, "rand()")
            distributed = (
                f"CREATE TABLE IF NOT EXISTS {DATABASE}.{table} {on_cluster} AS {DATABASE}.{table}_local\n"
                f"ENGINE = Distributed('{self.cluster}', '{DATABASE}', '{table}_local', {key})"
            )
            return [local, distributed]
        altered = _ALTER_OR_DROP_TABLE.match(sql)
        if altered and altered[2] in self.sharded:
            table = altered[2]
            local = _rename_table(sql, table, f"{table}_local")
            if altered[1].upper() == "DROP" or _COLUMN_ALTER.match(sql):
                return [local, sql]  # the Distributed table follows the columns of its local table
            return [local]
        if _MATERIALIZED_VIEW.match(sql) and not _REFRESH.search(sql):
            for table in self.sharded:
                sql = re.sub(rf"\b{DATABASE}\.{table}\b(?!_)", f"{DATABASE}.{table}_local", sql)
            return [sql]
        return [sql]


def cluster_plan(migrations: list[Migration], cluster: str) -> ClusterPlan:
    """Classify the tables the migrations create (see ``ClusterPlan``)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cluster):
        raise ValueError(f"cluster name {cluster!r}: letters, digits, '_', '-', '.' only")
    tables: set[str] = set()
    refreshed: set[str] = set()
    for migration in migrations:
        for statement in migration.raw_statements():
            sql = _strip_comments(statement)
            created = _CREATE_TABLE.match(sql)
            if created and "${REPLICATED}" in sql:
                tables.add(created[1])
            target = _REFRESH_TARGET.match(sql)
            if target:
                refreshed.add(target[1])
    return ClusterPlan(cluster, frozenset(tables - refreshed), frozenset(tables & refreshed))


def _strip_comments(sql: str) -> str:
    return sqlparse.format(sql, strip_comments=True).strip().rstrip(";").strip()


def _rename_table(sql: str, table: str, new: str) -> str:
    """Rename the statement's own object (the first ``pbx.<table>``)."""
    return re.sub(rf"\b{DATABASE}\.{table}\b(?!_)", f"{DATABASE}.{new}", sql, count=1)


def _has_code(statement: str) -> bool:
    return bool(sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip())


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"{path}: migration files are named NNNN_verb_object.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{directory}: two migrations share a number")
    return migrations


def apply_migrations(
    client: Client, migrations: list[Migration] | None = None, cluster: str | None = None
) -> list[Migration]:
    """Apply the migrations not yet recorded in ``pbx.schema_migrations``, in order.

    ``cluster``: the ``remote_servers`` name of a ClickHouse cluster; every
    statement then runs ON CLUSTER with replicated and Distributed tables
    (``ClusterPlan``), and the record of applied migrations is replicated.
    Returns the ones applied now; running again applies nothing.
    """
    migrations = load_migrations() if migrations is None else migrations
    plan = cluster_plan(migrations, cluster) if cluster else None
    on_cluster = f" ON CLUSTER '{cluster}'" if cluster else ""
    # Atomic: refreshable materialized views need it (Ordinary would refuse them).
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}{on_cluster} ENGINE = Atomic")
    client.command(
        f"""CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations{on_cluster}
        (version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))
        ENGINE = {"Replicated" if cluster else ""}MergeTree ORDER BY version"""
    )
    applied = {
        row[0]: row[1]
        for row in client.query(f"SELECT version, checksum FROM {DATABASE}.schema_migrations").result_rows
    }
    done = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                log.warning(
                    "applied migration changed on disk",
                    extra={"migration": f"{migration.version:04d}_{migration.name}"},
                )
            continue
        for statement in plan.statements(migration) if plan else migration.statements():
            client.command(statement)
        client.insert(
            f"{DATABASE}.schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        log.info("migration applied", extra={"migration": f"{migration.version:04d}_{migration.name}"})
        done.append(migration)
    return done
