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

__all__ = ["EngineBusyError", "Migration", "apply_migrations", "connect", "load_migrations", "sql_dir"]

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

    def statements(self, cluster: str | None = None) -> list[str]:
        """The file's statements, rendered for a single server or for ``cluster``."""
        return [render(s.strip().rstrip(";"), cluster) for s in sqlparse.split(self.sql) if _has_code(s)]


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


def apply_migrations(client: Client, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply the migrations not yet recorded in ``pbx.schema_migrations``, in order.

    Returns the ones applied now; running again applies nothing.
    """
    migrations = load_migrations() if migrations is None else migrations
    # Atomic: refreshable materialized views need it (Ordinary would refuse them).
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE} ENGINE = Atomic")
    client.command(
        f"""CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations
        (version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))
        ENGINE = MergeTree ORDER BY version"""
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
        for statement in migration.statements():
            client.command(statement)
        client.insert(
            f"{DATABASE}.schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        log.info("migration applied", extra={"migration": f"{migration.version:04d}_{migration.name}"})
        done.append(migration)
    return done
