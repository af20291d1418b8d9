"""Schema migrations: ``sql/NNNN_verb_object.sql``, each applied once, never edited after.

Applied migrations are recorded with their checksum in ``pbx.schema_migrations``.
A migration that has been applied is history: its text is on users' databases,
and with ``IF NOT EXISTS`` an edited file would silently not reach them. So a
recorded checksum that differs from the file is an error (:class:`MigrationChanged`)
that stops ``serve``, ``migrate`` and ``import``; a change goes into the next
number instead. ``sql/LANDED.sha256`` lists every file that has landed on
``main`` (a test pins them) and the earlier texts some files had before this
rule, which a database may still carry: those start with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import sqlparse
from clickhouse_connect.driver.client import Client

from ingest.events.table import DATABASE
from ingest.storing.cluster import cluster_plan, strip_comments

__all__ = [
    "LANDED",
    "Migration",
    "MigrationChanged",
    "apply_migrations",
    "landed",
    "load_migrations",
    "render",
    "sql_dir",
]

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: The manifest of landed migrations, in the migrations' directory.
LANDED = "LANDED.sha256"


class MigrationChanged(RuntimeError):
    """An applied migration's file differs from the text the database applied."""


def sql_dir() -> Path:
    """The migrations: packaged with the wheel (``ingest/_sql``), or the repo's ``sql/``."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "_sql"
    return packaged if packaged.is_dir() else package.parent / "sql"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def file_name(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def raw_statements(self) -> list[str]:
        """The file's statements, placeholders left in."""
        return list(_split(self.sql))

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


@functools.cache
def _split(sql: str) -> tuple[str, ...]:
    """``sql``'s statements that are more than comments. Cached by text: one process splits a
    migration to apply it, render it and plan it for a cluster (all of ``sql/``: ~2 s each time)."""
    return tuple(s.strip().rstrip(";") for s in sqlparse.split(sql) if strip_comments(s))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The migrations of ``directory`` (default :func:`sql_dir`), in order."""
    directory = directory or sql_dir()
    if not directory.is_dir():
        raise FileNotFoundError(f"no migrations directory at {directory}")
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
    earlier = landed(sql_dir())[1]
    for migration in migrations:
        if migration.version in applied:
            _check_unchanged(migration, applied[migration.version], earlier)
    done = []
    for migration in migrations:
        if migration.version in applied:
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


def landed(directory: Path) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """``LANDED.sha256`` of ``directory``: file -> its checksum as landed, and file -> the
    checksums of earlier texts it had before applied migrations became immutable."""
    current: dict[str, str] = {}
    earlier: dict[str, set[str]] = {}
    path = directory / LANDED
    if not path.is_file():
        return {}, {}
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) == 2:
            current[fields[1]] = fields[0]
        elif len(fields) == 3 and fields[2] == "earlier":
            earlier.setdefault(fields[1], set()).add(fields[0])
    return current, {name: frozenset(sums) for name, sums in earlier.items()}


def _check_unchanged(migration: Migration, applied: str, earlier: dict[str, frozenset[str]]) -> None:
    """Raise :class:`MigrationChanged` if the database applied another text of ``migration``."""
    if applied == migration.checksum:
        return
    if applied in earlier.get(migration.file_name, ()):
        # Applied before the rule, from a text main once had: later migrations own the fix.
        log.warning("database applied an earlier text of a migration", extra={"migration": migration.file_name})
        return
    raise MigrationChanged(
        f"migration {migration.file_name} was changed after this database applied it "
        f"(applied sha256 {applied[:12]}, file {migration.checksum[:12]}): applied migrations are immutable; "
        "restore the file and put the change in a new numbered migration (sql/README.md)"
    )
