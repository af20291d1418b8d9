"""Running a request's query on the embedded engine, beside the webhook writer.

Every request gets its own engine connection (``chdb.connect`` on the service's data
directory; ~3 ms), so settings, ``USE`` and ``SET`` of one request can never reach another:
the connection is the request's session context and is closed after it. A request with
``session_id`` keeps its connection for the session (ClickHouse's HTTP sessions), and the URL
settings of one request in it are restored after that request.

chDB runs queries of several connections at once, each in the calling thread with the GIL
released, and the writer's inserts go on meanwhile (tests/e2e/querying, bench/query_load.py);
queries run in a small pool of threads of their own, never on an event loop.

A request goes: connection -> limits and user's settings (``SET``) -> the checks of
``access`` on the engine's parse -> ``send_query`` (streamed formats) or ``query`` (formats
with a header or footer, such as JSON) -> Native re-framed for the client's revision
(``native``). The result is handed over chunk by chunk; ``max_result_bytes`` is counted here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import chdb

from ingest.querying import access, inserts, native
from ingest.querying.errors import ClickHouseError, from_engine

__all__ = ["Engine", "Execution", "QueryRequest"]

log = logging.getLogger(__name__)

#: Formats whose per-block outputs concatenate to the whole output (no header, no footer):
#: these stream from the engine block by block; the others are produced whole.
STREAMED_FORMATS = frozenset({"Native", "RowBinary", "TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV"})
#: Settings this interface sets itself for a Native answer to a client with a revision.
_NATIVE_OWNED = ("output_format_native_encode_types_in_binary_format", "low_cardinality_allow_in_native_format")


@dataclass
class QueryRequest:
    sql: str
    user: access.User
    query_id: str
    default_format: str = "TabSeparated"
    database: str | None = None
    #: ClickHouse settings from the URL, applied to this request only.
    settings: dict[str, str] = field(default_factory=dict)
    #: ``param_<name>`` values, by name.
    params: dict[str, str] = field(default_factory=dict)
    #: ``client_protocol_version`` (0: none given).
    client_revision: int = 0
    #: GET/HEAD: ClickHouse runs the query with ``readonly = 2`` at least.
    read_only_method: bool = False
    session_id: str | None = None
    session_timeout: float = 60.0
    session_check: bool = False
    #: The owner's POST that starts with INSERT: the query stream (``?query=``, a line break, the
    #: body), since an INSERT's data may follow its query in any format, binary ones included
    #: (``inserts``). ``sql`` is then taken from it only if no such data is found.
    raw: inserts.QueryStream | None = None


@dataclass
class Execution:
    """A query that has started: what the headers say, and the rest of its output."""

    format: str | None
    chunks: Iterator[bytes]
    summary: dict[str, int] = field(default_factory=dict)
    #: Blocks of Native answers (rows of the result, for the summary).
    result_rows: int = 0


class _Session:
    def __init__(self, conn: Any, user: str, timeout: float) -> None:
        self.conn = conn
        self.user = user
        self.timeout = timeout
        self.lock = threading.Lock()
        self.expires = time.monotonic() + timeout


class Engine:
    """The embedded engine as the query interface uses it."""

    def __init__(self, path: str, limits: access.Limits, max_result_bytes: int) -> None:
        self.path = path
        self.limits = limits
        self.max_result_bytes = max_result_bytes
        self._names: dict[bytes, str] = {}
        self._names_lock = threading.Lock()
        self._names_conn: Any = None
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._sessions_lock = threading.Lock()
        self.version = "unknown"
        self.timezone = "UTC"

    def open(self) -> None:
        conn = self._connect()
        try:
            row = bytes(conn.query("SELECT version(), timezone()", "TabSeparated").bytes()).decode().split()
            self.version, self.timezone = row[0], row[1]
        finally:
            conn.close()

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            _close(session.conn)
        with self._names_lock:
            if self._names_conn is not None:
                _close(self._names_conn)
                self._names_conn = None

    def _connect(self) -> Any:
        try:
            return chdb.connect(self.path)
        except Exception as exc:
            raise ClickHouseError(1002, f"Cannot open the embedded engine: {exc}") from exc

    # --- sessions ---------------------------------------------------------------------------

    def _session(self, request: QueryRequest) -> _Session:
        now = time.monotonic()
        key = (request.user.name, request.session_id or "")
        with self._sessions_lock:
            for k, s in list(self._sessions.items()):
                if s.expires < now and not s.lock.locked():
                    del self._sessions[k]
                    _close(s.conn)
            session = self._sessions.get(key)
            if session is None:
                if request.session_check:
                    raise ClickHouseError(372, f"Session {request.session_id} not found")
                if len(self._sessions) >= 64:
                    raise ClickHouseError(202, "Too many HTTP sessions open (64)")
                conn = self._connect()
                try:
                    self._base_settings(conn, request.user)
                except Exception:
                    _close(conn)
                    raise
                session = self._sessions[key] = _Session(conn, request.user.name, request.session_timeout)
        if not session.lock.acquire(blocking=False):
            raise ClickHouseError(373, f"Session {request.session_id} is locked by a concurrent client")
        session.timeout = request.session_timeout
        return session

    def close_session(self, user: str, session_id: str) -> None:
        with self._sessions_lock:
            session = self._sessions.pop((user, session_id), None)
        if session is not None:
            with session.lock:
                _close(session.conn)

    # --- execution ----------------------------------------------------------------------------

    def execute(self, request: QueryRequest) -> Execution:
        """Run ``request`` up to its first output; the caller iterates ``chunks`` to the end
        (in a worker thread: every step may block on the engine)."""
        session = self._session(request) if request.session_id else None
        conn = session.conn if session else self._connect()
        try:
            if session is None:
                self._base_settings(conn, request.user)
                restore: dict[str, tuple[str, bool]] = {}
            else:
                restore = self._snapshot(conn, [*request.settings, *_NATIVE_OWNED])
            execution = self._start(conn, request)
        except BaseException:
            self._finish(conn, session, restore if session else {})
            raise
        return Execution(execution.format, self._guarded(execution, conn, session, restore),
                         execution.summary)

    def _guarded(self, execution: Execution, conn: Any, session: _Session | None,
                 restore: dict[str, tuple[str, bool]]) -> Iterator[bytes]:
        total = 0
        try:
            for chunk in execution.chunks:
                total += len(chunk)
                if total > self.max_result_bytes:
                    raise ClickHouseError(
                        396, f"Limit for result exceeded, max bytes: {_size(self.max_result_bytes)}, current bytes: "
                             f"{_size(total)}")
                yield chunk
            execution.summary["result_bytes"] = total
        finally:
            # The engine's stream first (it cancels a query still running), then the connection:
            # a connection closed under an open stream can hang the engine.
            close = getattr(execution.chunks, "close", None)
            if close is not None:
                close()
            self._finish(conn, session, restore)

    def _finish(self, conn: Any, session: _Session | None, restore: dict[str, tuple[str, bool]]) -> None:
        if session is None:
            _close(conn)
            return
        try:
            self._restore(conn, restore)
        finally:
            session.expires = time.monotonic() + session.timeout
            session.lock.release()

    def _base_settings(self, conn: Any, user: access.User) -> None:
        """A reader's connection: the limits, then ``readonly = 2`` (the engine refuses to lower
        it afterwards)."""
        if user.owner:  # the defaults, which the owner may change
            limits = self.limits.as_settings()
            del limits["max_memory_usage"]
            _query(conn, "SET " + ", ".join(f"{k} = {_quote(v)}" for k, v in limits.items()))
        else:
            limits = ", ".join(f"{k} = {_quote(v)}" for k, v in self.limits.as_settings().items())
            _query(conn, f"SET {limits}, readonly = 2")

    def _start(self, conn: Any, request: QueryRequest) -> Execution:
        user = request.user
        settings = dict(request.settings)
        if not user.owner:
            access.check_settings(settings.items(), self.limits)
        if request.read_only_method and user.owner and not request.session_id:
            # ClickHouse: GET and HEAD run read-only (in a session the owner keeps its rights:
            # readonly could not be restored there).
            _query(conn, "SET readonly = 2")
        # readonly last: once set, a reader may change no more than ClickHouse allows.
        ordered = sorted(settings.items(), key=lambda kv: kv[0] == "readonly")
        if ordered:
            _query(conn, "SET " + ", ".join(f"{_setting_name(k)} = {_quote(v)}" for k, v in ordered))
        if request.database:
            _query(conn, f"USE {_identifier(request.database)}")

        if request.raw is not None:
            found = self._insert_with_data(conn, request.raw)
            if found is not None:
                return self._insert(conn, found)
            request.sql = request.raw.text()
        sql = request.sql
        params = request.params
        shape, writes = self._analyse(conn, request)
        fmt = shape.format if shape else None
        if writes:  # an owner's INSERT, DDL, ...: no result format (ClickHouse sends none)
            result = _query(conn, sql, "TabSeparated", params)
            return Execution(None, iter([bytes(result.bytes())] if result.bytes() else []), _summary(result))

        out_format = fmt or request.default_format
        revision = native.effective_revision(request.client_revision)
        if out_format == "Native" and revision > 0:
            if any(name in _NATIVE_OWNED for name, _ in shape.settings):
                raise ClickHouseError(
                    48, f"Native for client_protocol_version={request.client_revision} is framed by this interface: "
                        f"the query may not set {' or '.join(_NATIVE_OWNED)}")
            owned = {"output_format_native_encode_types_in_binary_format": "1"}
            if revision < native.REVISION_LOW_CARDINALITY:
                owned["low_cardinality_allow_in_native_format"] = "0"
            _query(conn, "SET " + ", ".join(f"{k} = {v}" for k, v in owned.items()))
            return self._stream_native(conn, sql, params, revision, out_format)
        if out_format in STREAMED_FORMATS:
            return self._stream(conn, sql, params, request.default_format, out_format)
        # Formats with a header or footer come whole; the engine bounds their size itself.
        _query(conn, f"SET max_result_bytes = {self.max_result_bytes}, result_overflow_mode = 'throw'")
        result = _query(conn, sql, request.default_format, params)
        data = bytes(result.bytes())
        return Execution(out_format, iter([data] if data else []), _summary(result))

    def _insert_with_data(self, conn: Any, raw: inserts.QueryStream) -> inserts.InsertData | None:
        """The INSERT at the start of ``raw`` and its data, as the engine parses the query (the
        first place the data may start whose query text is an INSERT ending in that FORMAT)."""
        for found in inserts.candidates(raw):
            try:
                formatted = bytes(_query(conn, "SELECT formatQuery({q:String})", "TabSeparatedRaw",
                                         {"q": _escaped(found.sql)}).bytes()).decode()
                ast = bytes(_query(conn, f"EXPLAIN AST {found.sql}", "TabSeparatedRaw").bytes()).decode()
            except ClickHouseError:
                continue  # e.g. a FORMAT inside a string: not the end of the query
            formatted = formatted.rstrip()
            clause = f"FORMAT {found.format}"
            children = [line.split()[0] for line in ast.splitlines() if line.startswith(" ") and line[1] != " "]
            if (ast.startswith("InsertQuery") and "SelectWithUnionQuery" not in children
                    and formatted.endswith(clause) and formatted[-len(clause) - 1].isspace()):
                return inserts.InsertData(formatted[: -len(clause)].rstrip(), found.format, found.data)
        return None

    def _insert(self, conn: Any, insert: inserts.InsertData) -> Execution:
        """The rows of ``insert`` into the engine as bytes, in their format (chDB's streaming
        insert: the query without its FORMAT clause, then the data)."""
        try:
            inserter = conn.send_insert(insert.sql, insert.format)
        except Exception as exc:
            raise from_engine(exc) from None
        try:
            view = memoryview(insert.data)
            for start in range(0, len(view), inserts.APPEND_BYTES):
                inserter.append(view[start : start + inserts.APPEND_BYTES])
            result = inserter.finish()
        except Exception as exc:
            try:
                inserter.cancel()
            except Exception:
                log.debug("cancelling a failed insert failed", exc_info=True)
            raise from_engine(exc) from None
        summary = {"written_rows": int(result.rows_written), "written_bytes": int(result.bytes_written),
                   "elapsed_ns": int(result.elapsed * 1e9)}
        return Execution(None, iter([]), summary)

    def _analyse(self, conn: Any, request: QueryRequest) -> tuple[access.QueryShape | None, bool]:
        """The query's shape; ``writes``: an owner's statement that is not a read.
        Raises the error a ClickHouse server would give this user for it."""
        sql, params = request.sql, request.params
        raw = getattr(conn, "_conn", conn)
        info = raw.classify_query(sql)
        if info["statement_count"] != 1:
            # The engine's own syntax error (multi-statements included), without running anything.
            _query(conn, "SELECT formatQuery({q:String})", "TabSeparated", {"q": _escaped(sql)})
            raise ClickHouseError(62, "Syntax error: cannot parse the query")
        query_class = info["query_class"].name
        if request.user.owner and query_class not in ("READ_ONLY", "CONTROL"):
            return None, True
        try:
            formatted = bytes(_query(conn, "SELECT formatQuery({q:String})", "TabSeparatedRaw",
                                     {"q": _escaped(sql)}).bytes()).decode()
        except ClickHouseError:
            if request.user.owner:  # e.g. an INSERT with inline data: the engine parses it itself
                return None, True
            raise
        shape = access.query_shape(formatted)
        if shape.into_outfile:
            raise ClickHouseError(358, "INTO OUTFILE is not allowed")
        if request.user.owner:
            return shape, query_class != "READ_ONLY" and not _is_set_or_use(conn, sql, params)
        ast = bytes(_query(conn, f"EXPLAIN AST {sql}", "TabSeparatedRaw", params).bytes()).decode()
        root = ast.split(None, 1)[0] if ast else ""
        if query_class != "READ_ONLY" and root not in ("Set", "UseQuery"):
            raise ClickHouseError(164, f"{request.user.name}: Cannot execute query in readonly mode")
        access.check_tree(ast)
        access.check_settings(shape.settings, self.limits)
        return shape, False

    def _stream(self, conn: Any, sql: str, params: dict[str, str], default_format: str, fmt: str) -> Execution:
        stream = _send(conn, sql, default_format, params)
        summary: dict[str, int] = {}
        return Execution(fmt, _chunks(stream, summary), summary)

    def _stream_native(self, conn: Any, sql: str, params: dict[str, str], revision: int, fmt: str) -> Execution:
        stream = _send(conn, sql, "Native", params)
        summary: dict[str, int] = {}
        execution = Execution(fmt, iter(()), summary)

        def reframed() -> Iterator[bytes]:
            chunks = _chunks(stream, summary)
            try:
                yield from _reframe(chunks)
            finally:
                chunks.close()

        def _reframe(chunks: Iterator[bytes]) -> Iterator[bytes]:
            rows = 0
            for chunk in chunks:
                try:
                    blocks = list(native.transcode(chunk, revision, self.type_name))
                except native.UnsupportedType as exc:
                    raise ClickHouseError(
                        48, f"Native output for client_protocol_version={revision} of a column of type {exc.type_name} "
                            f"is not supported by this interface: use another format (JSONEachRow, RowBinary, ...) or "
                            f"CAST the column (e.g. to String)") from None
                info = len(native.block_info(revision))
                for block in blocks:
                    rows += _block_rows(block[info:])
                summary["result_rows"] = rows
                yield from blocks

        execution.chunks = reframed()
        return execution

    def type_name(self, binary_type: bytes) -> str:
        """The engine's name for a binary-encoded type (asked once per type, on a connection of
        its own: the query's connection is busy streaming)."""
        name = self._names.get(binary_type)
        if name is not None:
            return name
        with self._names_lock:
            if self._names_conn is None:
                self._names_conn = self._connect()
            header = b"\x01\x00\x01c" + binary_type  # one column "c", no rows
            literal = "'" + "".join(f"\\x{byte:02x}" for byte in header) + "'"
            result = _query(self._names_conn, f"DESCRIBE format(Native, {literal}) SETTINGS "
                            "input_format_native_decode_types_in_binary_format = 1, print_pretty_type_names = 0",
                            "JSONEachRow")
            name = json.loads(bytes(result.bytes()).splitlines()[0])["type"]
            self._names[binary_type] = name
            return name

    # --- settings of a session's request -------------------------------------------------------

    def _snapshot(self, conn: Any, names: list[str]) -> dict[str, tuple[str, bool]]:
        if not names:
            return {}
        listed = ", ".join(_quote(n) for n in names)
        result = _query(conn, f"SELECT name, value, changed FROM system.settings WHERE name IN ({listed})",
                        "JSONEachRow")
        rows = [json.loads(line) for line in bytes(result.bytes()).splitlines()]
        snapshot = {row["name"]: (row["value"], bool(row["changed"])) for row in rows}
        database = bytes(_query(conn, "SELECT currentDatabase()", "TabSeparatedRaw").bytes()).decode().strip()
        snapshot["\0database"] = (database, True)
        return snapshot

    def _restore(self, conn: Any, snapshot: dict[str, tuple[str, bool]]) -> None:
        database = snapshot.pop("\0database", None)
        for name, (value, changed) in snapshot.items():
            try:
                _query(conn, f"SET {_setting_name(name)} = {_quote(value) if changed else 'DEFAULT'}")
            except ClickHouseError:
                log.debug("could not restore setting", extra={"setting": name})
        if database:
            try:
                _query(conn, f"USE {_identifier(database[0])}")
            except ClickHouseError:
                pass


def _is_set_or_use(conn: Any, sql: str, params: dict[str, str]) -> bool:
    ast = bytes(_query(conn, f"EXPLAIN AST {sql}", "TabSeparatedRaw", params).bytes()).decode()
    return ast.split(None, 1)[0] in ("Set", "UseQuery") if ast else False


def _query(conn: Any, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None) -> Any:
    try:
        return conn.query(sql, fmt, params=params or {})
    except Exception as exc:
        raise from_engine(exc) from None


def _send(conn: Any, sql: str, fmt: str, params: dict[str, str]) -> Any:
    """A streamed query; statements the engine cannot stream (SHOW, DESCRIBE, ...) run whole."""
    try:
        return conn.send_query(sql, fmt, params=params or {})
    except Exception as exc:
        error = from_engine(exc)
        if error.code != 36 or "Streaming query is not supported" not in error.text:
            raise error from None
    return _Whole(_query(conn, sql, fmt, params))


class _Whole:
    """A whole result behind the streaming interface ``_chunks`` reads."""

    def __init__(self, result: Any) -> None:
        self._result: Any = result

    def fetch(self) -> Any:
        result, self._result = self._result, None
        return result

    def close(self) -> None:
        self._result = None


def _chunks(stream: Any, summary: dict[str, int]) -> Iterator[bytes]:
    try:
        while True:
            try:
                chunk = stream.fetch()
            except Exception as exc:
                raise from_engine(exc) from None
            if chunk is None:
                return
            data = bytes(chunk.bytes())
            for key, method in (("read_rows", "rows_read"), ("read_bytes", "bytes_read")):
                try:
                    summary[key] = summary.get(key, 0) + int(getattr(chunk, method)())
                except Exception:
                    pass
            if data:
                yield data
    finally:
        try:
            stream.close()
        except Exception:
            pass


def _block_rows(chunk: bytes) -> int:
    p = native._varint(chunk, 0)[1]
    return native._varint(chunk, p)[0] if chunk else 0


def _summary(result: Any) -> dict[str, int]:
    summary = {}
    for key, method in (("read_rows", "rows_read"), ("read_bytes", "bytes_read"), ("written_rows", "rows_written"),
                        ("written_bytes", "bytes_written")):
        try:
            summary[key] = int(getattr(result, method)())
        except Exception:
            pass
    try:
        summary["elapsed_ns"] = int(result.elapsed() * 1e9)
    except Exception:
        pass
    return summary


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        log.debug("closing an engine connection failed", exc_info=True)


def _escaped(text: str) -> str:
    """A query parameter's value as the engine reads it (TabSeparated escaping)."""
    return (text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
            .replace("\0", "\\0"))


def _quote(value: str) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _setting_name(name: str) -> str:
    if not name.replace("_", "").isalnum() or not (name[0].isalpha() or name[0] == "_"):
        raise ClickHouseError(115, f"Unknown setting '{name}'")
    return name


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return str(n)
