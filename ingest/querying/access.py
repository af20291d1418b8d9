"""Who may query, and what a read-only user may run.

Two users, as a ClickHouse server would have them:

* the **reader** (``PBX_QUERY_USER``, default ``default``; password ``PBX_QUERY_PASSWORD``,
  required when the interface is reachable from other machines): what ClickHouse gives a user
  with ``readonly = 2`` and no SOURCES grant. SELECT, SHOW, DESCRIBE, EXISTS, EXPLAIN, SET and
  USE; settings may change except ``readonly`` and within the limits below; no INSERT, DDL,
  SYSTEM, KILL, no ``INTO OUTFILE``, and no table function or function that reaches files,
  URLs, other databases, executables or models.
* the **owner** (``pbx_owner``): the process's own rights, for the local user who runs the
  service (issue 12: ``pbx-analytics sql "INSERT ..."`` through the service). Its key is made
  anew at each start and written only to ``<data directory>/service.json`` (mode 0600, with the
  endpoint's URL), and it is accepted only from a loopback address. ClickHouse's HTTP rule
  still holds for it: GET requests run with ``readonly = 2``.

The rules are enforced by the engine where it can (``readonly = 2`` on the reader's connection:
the engine refuses writes, DDL and SYSTEM itself) and by reading the engine's own parse of the
query where it cannot: ``classify_query`` (statement count and class), ``EXPLAIN AST`` (every
table function and function the query names, at any depth) and ``formatQuery`` (the canonical
text, for ``INTO OUTFILE``, ``FORMAT`` and ``SETTINGS``). Nothing here is a regular expression
over the client's text.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.querying.errors import ClickHouseError

__all__ = [
    "OWNER",
    "Limits",
    "OwnerFile",
    "QueryShape",
    "User",
    "Users",
    "check_settings",
    "check_tree",
    "endpoint_url",
    "query_shape",
]

OWNER = "pbx_owner"

#: Table functions that read nothing outside the engine's own tables (everything else, such
#: as file, url, s3, remote, mysql, postgresql, executable, python, is refused).
SAFE_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "primes", "generaterandom", "generate_series",
    "generateseries", "values", "null", "view", "viewifpermitted", "merge", "format", "loop",
})
#: Functions (not table functions) that reach outside: files, other servers, AI services.
UNSAFE_FUNCTIONS = frozenset({
    "file", "hascolumnintable", "catboostevaluate", "aigenerate", "aiclassify", "aiextract",
    "aifilter", "aiembed", "airedact", "aisimilarity", "aitranslate",
})
#: Settings a reader may not change at all: they name files to read or write, or change the
#: language the engine parses (which our checks read in ClickHouse's own dialect).
CONST_SETTINGS = frozenset({
    "dialect", "format_schema", "format_schema_source", "format_schema_message_name",
    "output_format_schema", "allow_experimental_kusto_dialect", "allow_experimental_prql_dialect",
})


@dataclass(frozen=True)
class User:
    name: str
    #: The local owner: the engine's full rights (no ``readonly``, no limits to respect).
    owner: bool = False


@dataclass(frozen=True)
class Limits:
    """What a reader may not raise (ClickHouse's settings constraints with a ``max``)."""

    max_execution_time: float
    max_memory_usage: int
    max_threads: int = 1
    #: Nice value of every query's threads (a reader may not ask for less with
    #: ``os_thread_priority``). Not sent as that setting: the threads are kept there from outside
    #: (``ingest.priority``), and where the process may raise priorities (root) the engine puts a
    #: thread back to nice 0 after every query that set it.
    nice: int = 0

    def as_settings(self) -> dict[str, str]:
        return {"max_execution_time": _number(self.max_execution_time),
                "max_memory_usage": str(self.max_memory_usage), "max_threads": str(self.max_threads)}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class Users:
    """The reader and the owner, and the check of a request's credentials."""

    def __init__(self, reader: str, reader_password: str, owner_key: str) -> None:
        self._reader = reader
        self._reader_password = reader_password.encode()
        self._owner_key = owner_key.encode()

    def authenticate(self, name: str | None, password: str, peer: str) -> User:
        """The user ``name``/``password`` names; no name is ClickHouse's ``default``."""
        name = name or "default"
        given = password.encode()
        if name == self._reader and hmac.compare_digest(given, self._reader_password):
            return User(name)
        if name == OWNER and self._owner_key and is_loopback(peer) and hmac.compare_digest(given, self._owner_key):
            return User(name, owner=True)
        raise ClickHouseError(
            516, f"{name}: Authentication failed: password is incorrect, or there is no user with such name")


def endpoint_url(host: str, port: int) -> str:
    """How a local client reaches the interface (a wildcard bind is reached on loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class OwnerFile:
    """``<data directory>/service.json``: the query endpoint and the owner's key, readable by
    the owner only. Written when the interface starts, removed when it stops."""

    NAME = "service.json"

    def __init__(self, data_dir: Path, url: str) -> None:
        self.path = Path(data_dir) / self.NAME
        self.key = secrets.token_urlsafe(32)
        self.url = url

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.NAME}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": self.url, "user": OWNER, "key": self.key, "pid": os.getpid()}, f)
            f.write("\n")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("key") == self.key:
                self.path.unlink()
        except (OSError, ValueError):
            pass

    @staticmethod
    def read(data_dir: Path) -> dict[str, Any] | None:
        """What a running service wrote (for the CLI of issue 12), or None."""
        try:
            return json.loads((Path(data_dir) / OwnerFile.NAME).read_text())
        except (OSError, ValueError):
            return None


# --- the query's shape, from the engine's own parse -------------------------------------------


@dataclass(frozen=True)
class QueryShape:
    """What ``formatQuery``'s canonical text says about a statement's output clauses."""

    #: The FORMAT clause's format, or None (the request's default format applies).
    format: str | None
    into_outfile: bool
    #: ``(name, value)`` of every SETTINGS clause and SET statement in the query.
    settings: tuple[tuple[str, str], ...]


# In the canonical text every clause of the outer query starts its own, unindented line; string
# literals never span lines (a line break in one is written as \n).
_FORMAT_LINE = re.compile(r"^FORMAT (\S+)$", re.MULTILINE)
_OUTFILE_LINE = re.compile(r"^INTO OUTFILE ", re.MULTILINE)
_SETTINGS = re.compile(r"(?:^|\s)(?:SETTINGS|SET)\s+(.*)$", re.MULTILINE)
_ASSIGNMENT = re.compile(r"`?([A-Za-z_][A-Za-z0-9_]*)`?\s*=\s*('(?:[^'\\]|\\.)*'|[^,\s]+)")


def query_shape(formatted: str) -> QueryShape:
    fmt = _FORMAT_LINE.findall(formatted)
    settings: list[tuple[str, str]] = []
    for match in _SETTINGS.finditer(formatted):
        settings += _ASSIGNMENT.findall(match[1])
    return QueryShape(fmt[-1] if fmt else None, bool(_OUTFILE_LINE.search(formatted)), tuple(settings))


def check_tree(ast: str) -> None:
    """Refuse the table functions and functions that reach outside the engine's own tables,
    wherever they are in ``EXPLAIN AST``'s tree (subqueries, joins, CTEs, explained queries)."""
    lines = ast.splitlines()
    for i, line in enumerate(lines):
        depth = len(line) - len(line.lstrip(" "))
        words = line.split()
        if len(words) >= 2 and words[0] == "Function" and words[1].lower() in UNSAFE_FUNCTIONS:
            raise ClickHouseError(446, f"Function {words[1]} is not allowed for this user: it reads outside "
                                       f"the database")
        if words[:1] == ["TableExpression"] and i + 1 < len(lines):
            child = lines[i + 1]
            child_words = child.split()
            # A database-qualified name is a parameterized view (``pbx.repeat_calls(window_s = 86400)``):
            # the engine resolves it to that view, never to a table function (they have no database),
            # and a server grants it with SELECT on the view.
            if (len(child) - len(child.lstrip(" ")) == depth + 1 and child_words[:1] == ["Function"]
                    and len(child_words) > 1 and child_words[1].lower() not in SAFE_TABLE_FUNCTIONS
                    and "." not in child_words[1]):
                raise ClickHouseError(
                    497, f"Not enough privileges: the read-only user may not use table function "
                         f"{child_words[1]} (it reads files, URLs, other databases or programs)")


def check_settings(changes: Iterable[tuple[str, str]], limits: Limits) -> None:
    """Refuse changes a reader may not make (SETTING_CONSTRAINT_VIOLATION, as ClickHouse)."""
    maxima = {"max_execution_time": limits.max_execution_time, "max_memory_usage": limits.max_memory_usage,
              "max_threads": limits.max_threads}
    for name, raw in changes:
        key = name.lower()
        if key in CONST_SETTINGS:
            raise ClickHouseError(452, f"Setting {name} should not be changed")
        if key == "os_thread_priority":
            try:
                lower = int(raw.strip("'")) < limits.nice
            except ValueError:
                lower = True
            if lower:
                raise ClickHouseError(452, f"Setting {name} shouldn't be less than {limits.nice}")
        if key in maxima:
            value = raw.strip("'")
            try:
                number = float(value)
            except ValueError:
                raise ClickHouseError(452, f"Setting {name} shouldn't be greater than "
                                           f"{_number(maxima[key])}") from None
            if number <= 0 or number > maxima[key]:
                raise ClickHouseError(452, f"Setting {name} shouldn't be greater than {_number(maxima[key])}")
