"""How the migrations map onto a ClickHouse cluster (``--cluster``, docs/scaling.md).

The migrations are written once for one server; :class:`ClusterPlan` rewrites
each statement for a cluster: replicated local tables behind Distributed ones,
ON CLUSTER everywhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sqlparse import lexer
from sqlparse import tokens as T

from ingest.events.table import DATABASE

__all__ = ["SHARDING_KEYS", "ClusterPlan", "cluster_plan", "strip_comments"]


class _Statements(Protocol):
    """A migration, as far as the plan needs one."""

    def raw_statements(self) -> list[str]: ...


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

    def statements(self, migration: _Statements) -> list[str]:
        out: list[str] = []
        for statement in migration.raw_statements():
            out.extend(self._rewrite(statement))
        return out

    def _rewrite(self, raw: str) -> list[str]:
        on_cluster = f"ON CLUSTER '{self.cluster}'"
        sql = strip_comments(raw)
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


def cluster_plan(migrations: Iterable[_Statements], cluster: str) -> ClusterPlan:
    """Classify the tables the migrations create (see ``ClusterPlan``)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", cluster):
        raise ValueError(f"cluster name {cluster!r}: letters, digits, '_', '-', '.' only")
    tables: set[str] = set()
    refreshed: set[str] = set()
    for migration in migrations:
        for statement in migration.raw_statements():
            sql = strip_comments(statement)
            created = _CREATE_TABLE.match(sql)
            if created and "${REPLICATED}" in sql:
                tables.add(created[1])
            target = _REFRESH_TARGET.match(sql)
            if target:
                refreshed.add(target[1])
    return ClusterPlan(cluster, frozenset(tables - refreshed), frozenset(tables & refreshed))


@functools.cache
def strip_comments(sql: str) -> str:
    """``sql`` without its comments, trimmed, without a trailing ``;``. Cached by text: a statement
    is stripped to split its migration, to plan the cluster and to rewrite it for the cluster.

    sqlparse's lexer finds the comments (a ``--`` inside a string or a quoted name stays); each
    becomes a space, or the line break that ended it; SQL hints (``/*+ ... */``) stay. Lexing only:
    ``sqlparse.format(strip_comments=True)`` parses the statement into groups first, ~5x the time,
    which on the generated view migrations was most of a fresh engine's migration time (seconds).
    """
    return "".join(_uncommented(ttype, value) for ttype, value in lexer.tokenize(sql)).strip().rstrip(";").strip()


_HINTS = (T.Comment.Single.Hint, T.Comment.Multiline.Hint)


def _uncommented(ttype: T._TokenType, value: str) -> str:
    if ttype not in T.Comment or ttype in _HINTS:
        return value
    return "\n" if value.endswith(("\n", "\r")) else " "


def _rename_table(sql: str, table: str, new: str) -> str:
    """Rename the statement's own object (the first ``pbx.<table>``)."""
    return re.sub(rf"\b{DATABASE}\.{table}\b(?!_)", f"{DATABASE}.{new}", sql, count=1)


