"""Connections to ClickHouse: the embedded engine or a server, one code path.

clickhouse-connect's ``get_client(dsn=...)`` opens the embedded chDB engine for
``chdb:///path`` and a server for ``http(s)://`` URLs.

What can stop a connection is a person's to fix (the engine is not installed,
another process holds the data directory, the server is down or refuses the
user), so those failures become an :class:`EngineError` whose text is one
line: the cause, then what to do. :func:`describe` does the same for any
error the client raises later (a query, an insert), for log lines and the
CLI.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from ingest.events.table import DATABASE
from ingest.storing._locks import flock_holder, process_label

__all__ = [
    "DATABASE",
    "EngineBusyError",
    "EngineError",
    "EngineMissing",
    "EngineUnreachable",
    "connect",
    "describe",
    "engine_message",
    "redact",
]

#: The extra that installs the embedded engine (pyproject.toml).
EMBEDDED_EXTRA = "pbx-analytics[embedded]"


class EngineError(RuntimeError):
    """ClickHouse cannot be used as configured. ``str()`` is one line: the cause, then the fix."""


class EngineBusyError(EngineError):
    """The embedded engine's data directory is held by another process."""


class EngineMissing(EngineError):
    """A ``chdb://`` DSN, but the embedded engine is not installed."""


class EngineUnreachable(EngineError):
    """The ClickHouse server cannot be reached or refuses us (down, wrong host, password, TLS)."""


def redact(dsn: str) -> str:
    """``dsn`` without its password."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", dsn)


def connect(dsn: str) -> Client:
    """A client for ``dsn``; raises :class:`EngineError` with the cause and the fix."""
    if dsn.startswith("chdb:"):
        holder = _engine_holder(dsn)
        if holder is not None:  # ask before chdb tries: it prints its own lock error to stderr
            raise EngineBusyError(_busy_message(dsn, holder))
    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except ImportError as exc:
        if dsn.startswith("chdb:") and "chdb" in str(exc):
            raise EngineMissing(
                f"the embedded engine is not installed (needed for {dsn}): pip install '{EMBEDDED_EXTRA}', "
                "or use a ClickHouse server: --clickhouse http://user:pass@host:8123/pbx"
            ) from exc
        raise
    except Exception as exc:
        text = str(exc)
        if dsn.startswith("chdb:") and ("EmbeddedServer" in text or "already initialized" in text):
            raise EngineBusyError(_busy_message(dsn, None)) from exc
        if dsn.startswith("chdb:"):
            raise
        raise EngineUnreachable(describe(exc, dsn)) from exc


def _busy_message(dsn: str, pid: int | None) -> str:
    return (
        f"the embedded engine at {dsn} is in use by {process_label(pid)}. The embedded engine allows one "
        "process per data directory: stop that process, give this one another --clickhouse chdb:///path, "
        "or use a ClickHouse server (--clickhouse http://user:pass@host:8123/pbx)"
    )


def _engine_holder(dsn: str) -> int | None:
    """The process holding the engine at ``dsn`` if it is not this one: a running engine ``flock``s
    ``<data>/status``. This process's own lock is no conflict: chdb serves any number of clients
    of the one engine a process hosts."""
    return flock_holder(Path(dsn.removeprefix("chdb:").removeprefix("//") or ".") / "status")


# ---- error text ------------------------------------------------------------------------

_CODE_PREFIX = re.compile(r"(?:Code: (\d+)\. DB::Exception: )+")
_VERSION_TAIL = re.compile(r" \(version [^)]*\)\.?")
#: clickhouse-connect's suffix naming the URL it used (the DSN's, said elsewhere when it matters).
_FOR_URL = re.compile(r" ?\(for url [^)]*\)")
_QUERY_ID = re.compile(r"/\?query_id=[0-9a-f-]+")


def engine_message(exc: BaseException) -> str:
    """The engine's own message of ``exc`` once, on one line: chDB nests ``Code: N. DB::Exception:``
    and ``(version ...)`` once per layer; this keeps one of each, the error's name (``(READONLY)``),
    and drops the version and clickhouse-connect's ``(for url ...)``."""
    text = " ".join(str(exc).split())
    match = _CODE_PREFIX.search(text)
    if match is None:
        return text
    body = _FOR_URL.sub("", _VERSION_TAIL.sub("", text[match.end() :])).strip()
    return f"Code: {match.group(1)}. {body}"


def describe(exc: BaseException, dsn: str) -> str:
    """``exc`` (from connecting, a query or an insert) as one line a person can act on."""
    if isinstance(exc, EngineError):
        return str(exc)
    where = redact(dsn)
    if isinstance(exc, DatabaseError) and not isinstance(exc, OperationalError):
        code = getattr(exc, "code", None)
        if code == 516:  # AUTHENTICATION_FAILED
            return (f"ClickHouse at {where} refused the user or password: check the credentials in "
                    "--clickhouse / PBX_CLICKHOUSE_URL (percent-encode @ : / in a password)")
        if code == 81:  # UNKNOWN_DATABASE
            return (f"ClickHouse at {where}: {engine_message(exc)}; create the database, or name an "
                    "existing one at the end of the URL")
        return engine_message(exc)
    cause = _network_cause(exc)
    if cause is not None:
        return (f"cannot reach ClickHouse at {where} ({cause}): is the server running and is this its "
                "HTTP port? Check --clickhouse / PBX_CLICKHOUSE_URL")
    return engine_message(exc)


def _network_cause(exc: BaseException) -> str | None:
    """Why a connection failed, in a few words, if ``exc`` is a network failure."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    network = isinstance(exc, OperationalError)
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "host name not found"
        if isinstance(e, ssl.SSLError):
            return f"TLS: {e.reason or e}"
        if isinstance(e, (TimeoutError, socket.timeout)) or "timed out" in type(e).__name__.lower():
            return "timed out"
        if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return os.strerror(e.errno).lower()
        if isinstance(e, ConnectionError):
            return "connection lost"
        stack.extend(x for x in (e.__cause__, e.__context__, getattr(e, "reason", None))
                     if isinstance(x, BaseException))
    text = str(exc)
    if network or "HTTPConnectionPool" in text or "HTTPSConnectionPool" in text:
        if "Connection refused" in text:
            return "connection refused"
        if "Name or service not known" in text or "nodename nor servname" in text:
            return "host name not found"
        if "timed out" in text:
            return "timed out"
        return "connection failed"
    return None
