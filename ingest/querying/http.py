"""ClickHouse's HTTP interface: the requests its clients send, the answers they expect.

As ClickHouse's ``HTTPHandler`` (``src/Server/HTTPHandler.cpp``) and its docs
(interfaces/http) define them, and as clickhouse-connect (``driver/httpclient.py``),
clickhouse-go (``conn_http*.go``) and clickhouse-js send them:

* ``GET /ping``, ``GET /`` (no query) and ``/replicas_status``: ``Ok.\\n``.
* The query: the ``query`` URL parameter, the body, or both (the parameter, a line break, the
  body); in a ``multipart/form-data`` body, its ``query`` and ``param_*`` fields.
* URL parameters: ``database`` (or header ``X-ClickHouse-Database``), ``default_format`` (or
  ``X-ClickHouse-Format``; default TabSeparated, a FORMAT clause wins), ``query_id`` (or
  ``X-ClickHouse-Query-Id``), ``session_id``/``session_timeout``/``session_check``/
  ``close_session``, ``param_<name>``, ``client_protocol_version``, ``wait_end_of_query``,
  ``buffer_size``; every other parameter is a ClickHouse setting for this query alone.
* Credentials: ``X-ClickHouse-User``/``X-ClickHouse-Key``, HTTP Basic, or ``user``/``password``
  parameters (one scheme per request); none is ``default`` with an empty password.
* Compression: the answer is compressed when ``enable_http_compression=1`` and
  ``Accept-Encoding`` names gzip, deflate, zstd or lz4; a body with ``Content-Encoding`` is
  decompressed. ClickHouse's own block compression (``compress=1``/``decompress=1``) is not
  offered (NOT_IMPLEMENTED): no Grafana or clickhouse-connect setting needs it over HTTP.
* Headers: ``X-ClickHouse-Server-Display-Name``, ``-Query-Id``, ``-Format``, ``-Timezone``,
  ``-Summary``, ``-Exception-Tag``, ``-Exception-Code`` on errors. The first ``buffer_size``
  bytes (1 MiB; all with ``wait_end_of_query=1``) are held back so an early error still gets
  its status; a later one is written into the body in ClickHouse's tagged frame.

A plain ASGI app: the protocol is one endpoint whose every byte is specified, so it is
written out here rather than adapted from a web framework's conventions.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import secrets
import socket
import string
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import multipart

from ingest.querying import access, inserts
from ingest.querying.engine import Engine, Execution, QueryRequest
from ingest.querying.errors import ClickHouseError, exception_block

__all__ = ["QueryApp"]

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: URL parameters that are not settings (ClickHouse's ``reserved_param_names``).
RESERVED = frozenset({
    "query", "compress", "decompress", "user", "password", "quota_key", "query_id", "stacktrace", "role",
    "buffer_size", "wait_end_of_query", "session_id", "session_timeout", "session_check",
    "client_protocol_version", "close_session", "database", "default_format",
})
#: Bytes of a reader's request body (the query: readers send no data); the owner's may be
#: INSERT data.
READER_BODY_LIMIT = 1 << 20
OWNER_BODY_LIMIT = 1 << 30
DEFAULT_BUFFER = 1 << 20
#: Bytes pulled from the engine per trip to a query thread once the answer streams.
STREAM_STEP = 1 << 20
MAX_SESSION_TIMEOUT = 3600
_TAG_ALPHABET = string.ascii_lowercase + string.digits
_EXPOSE = ("X-ClickHouse-Query-Id,X-ClickHouse-Summary,X-ClickHouse-Server-Display-Name,X-ClickHouse-Format,"
           "X-ClickHouse-Timezone,X-ClickHouse-Exception-Code,X-ClickHouse-Exception-Tag")


def content_type(fmt: str | None) -> str:
    """The ``Content-Type`` ClickHouse's output formats declare (IOutputFormat::getContentType)."""
    if not fmt:
        return "text/plain; charset=UTF-8"
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8; header=" + ("present" if "withnames" in f else "absent")
    if f.startswith(("json", "ndjson", "jsonl")):
        return ("application/x-ndjson; charset=UTF-8" if "eachrow" in f or f in ("ndjson", "jsonl")
                else "application/json; charset=UTF-8")
    if f in ("xml",):
        return "application/xml; charset=UTF-8"
    if f == "markdown" or f == "md":
        return "text/markdown; charset=UTF-8"
    if f.startswith(("native", "rowbinary", "parquet", "arrow", "orc", "avro", "protobuf", "capnproto",
                     "msgpack", "bson", "npy", "rawblob")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


class _Compressor:
    """HTTP response compression in the methods ClickHouse's clients ask for."""

    def __init__(self, method: str, level: int) -> None:
        self.method = method
        if method in ("gzip", "deflate"):
            self._z = zlib.compressobj(level, zlib.DEFLATED, 31 if method == "gzip" else 15)
            self.compress, self.flush = self._z.compress, self._z.flush
        elif method == "zstd":
            from backports import zstd  # clickhouse-connect's own dependency

            self._z = zstd.ZstdCompressor(level=level)
            self.compress = self._z.compress
            self.flush = lambda: self._z.flush(zstd.ZstdCompressor.FLUSH_FRAME)
        else:
            import lz4.frame  # clickhouse-connect's own dependency

            self._z = lz4.frame.LZ4FrameCompressor()
            first = [self._z.begin()]
            self.compress = lambda data: (first.pop() if first else b"") + self._z.compress(data)
            self.flush = lambda: (first.pop() if first else b"") + self._z.flush()


def _available(method: str) -> bool:
    try:
        if method == "zstd":
            from backports import zstd  # noqa: F401
        elif method == "lz4":
            import lz4.frame  # noqa: F401
    except ImportError:
        return False
    return True


def choose_compression(accept: str) -> str | None:
    """The method to answer in, from ``Accept-Encoding`` (ClickHouse prefers zstd, lz4, gzip,
    deflate in that order)."""
    offered = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    for method in ("zstd", "lz4", "gzip", "deflate"):
        if method in offered and _available(method):
            return method
    return None


def decompress_body(body: bytes | bytearray, encoding: str, limit: int) -> bytes | bytearray:
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding in ("gzip", "deflate"):
            d = zlib.decompressobj(47)  # gzip or zlib header
            out = d.decompress(body, limit + 1)
        elif encoding == "zstd":
            from backports import zstd

            out = zstd.decompress(body)
        elif encoding == "lz4":
            import lz4.frame

            out = lz4.frame.decompress(body)
        else:
            raise ClickHouseError(89, f"Unknown compression method: {encoding}")
    except ClickHouseError:
        raise
    except Exception as exc:
        raise ClickHouseError(271, f"Cannot decompress the request body ({encoding}): {exc}") from None
    if len(out) > limit:
        raise ClickHouseError(229, f"The request body is larger than {limit} bytes")
    return out


class QueryApp:
    """The ASGI app of the query interface."""

    def __init__(self, engine: Engine, users: access.Users, max_concurrent: int, queue_timeout: float,
                 run: Callable[..., Awaitable[Any]], import_yield: Callable[[], float] | None = None) -> None:
        self.engine = engine
        self.users = users
        self.display_name = socket.gethostname()
        self._slots: asyncio.Semaphore | None = None  # made on the server's own loop
        self._max_concurrent = max_concurrent
        self._queue_timeout = queue_timeout
        #: Runs a blocking call on the query threads: ``await run(fn, *args)``.
        self._run = run
        #: How much an insert's client should yield to the webhooks now (the answer's
        #: ``pbx_import_yield``; None: not said).
        self._import_yield = import_yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_concurrent)
        tag = "".join(secrets.choice(_TAG_ALPHABET) for _ in range(16))
        try:
            await self._handle(scope, receive, send, tag)
        except ClickHouseError as exc:
            await self._send_error(send, exc, tag, "")

    async def _simple(self, send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                      head: bool = False) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/html; charset=UTF-8"),
                                (b"content-length", str(len(body)).encode()), *(headers or [])]})
        await send({"type": "http.response.body", "body": b"" if head else body})

    async def _send_error(self, send: Send, exc: ClickHouseError, tag: str, query_id: str) -> None:
        body = exc.body(self.engine.version).encode()
        headers = [
            (b"content-type", b"text/plain; charset=UTF-8"),
            (b"content-length", str(len(body)).encode()),
            (b"x-clickhouse-server-display-name", self.display_name.encode()),
            (b"x-clickhouse-exception-code", str(exc.code).encode()),
            (b"x-clickhouse-exception-tag", tag.encode()),
            (b"access-control-expose-headers", _EXPOSE.encode()),
        ]
        if query_id:
            headers.append((b"x-clickhouse-query-id", query_id.encode()))
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive, send: Send, tag: str) -> None:
        method = scope["method"]
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        params: dict[str, str] = {}
        for key, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
            params.setdefault(key.encode("latin-1").decode("utf-8", "replace"), value)
        head = method == "HEAD"
        if method == "OPTIONS":
            await self._simple(send, 204, b"")
            return
        if path in ("/ping", "/replicas_status") or (path == "/" and method in ("GET", "HEAD") and "query" not in params
                                                      and not headers.get("content-length", "0").strip("0")
                                                      and "transfer-encoding" not in headers):
            await self._simple(send, 200, b"Ok.\n", head=head)
            return

        user = self._authenticate(scope, headers, params)
        limit = OWNER_BODY_LIMIT if user.owner else READER_BODY_LIMIT
        body = await _read_body(receive, limit)
        body = decompress_body(body, headers.get("content-encoding", ""), limit)
        if params.get("decompress", "0") not in ("", "0", "false") or params.get("compress", "0") not in ("", "0", "false"):
            raise ClickHouseError(48, "ClickHouse's internal block compression (compress=1, decompress=1) is not "
                                      "supported by this interface: use HTTP compression (enable_http_compression=1 "
                                      "and Accept-Encoding: gzip, zstd or lz4)")
        query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        ctype = headers.get("content-type", "")
        raw = None
        if ctype.startswith("multipart/form-data"):
            sql = self._form(ctype, body, query_params, params)
        elif user.owner and method == "POST" and inserts.is_insert(
                (stream := inserts.QueryStream(params.get("query", ""), body)).head):
            # An INSERT: its data may follow the query in a binary format (ingest.querying.inserts).
            sql, raw = "INSERT", stream
        else:
            text = body.decode("utf-8", "replace")
            sql = params.get("query", "")
            sql = f"{sql}\n{text}" if sql and text else (sql or text)
        if not sql.strip():
            raise ClickHouseError(62, "Empty query")

        query_id = params.get("query_id") or headers.get("x-clickhouse-query-id") or str(uuid.uuid4())
        request = QueryRequest(
            sql=sql,
            user=user,
            query_id=query_id,
            default_format=headers.get("x-clickhouse-format") or params.get("default_format") or "TabSeparated",
            database=headers.get("x-clickhouse-database") or params.get("database") or None,
            settings={k: v for k, v in params.items() if k and k not in RESERVED and not k.startswith("param_")},
            params=query_params,
            client_revision=_uint(params.get("client_protocol_version", "0"), "client_protocol_version"),
            read_only_method=method != "POST",
            session_id=params.get("session_id") or None,
            session_timeout=_session_timeout(params.get("session_timeout")),
            session_check=params.get("session_check") == "1",
            raw=raw,
        )
        try:
            await self._answer(send, receive, request, headers, params, tag, head)
        except ClickHouseError as exc:
            await self._send_error(send, exc, tag, query_id)
        finally:
            if request.session_id and params.get("close_session") == "1":
                await self._run(self.engine.close_session, user.name, request.session_id)

    def _authenticate(self, scope: Scope, headers: dict[str, str], params: dict[str, str]) -> access.User:
        peer = (scope.get("client") or ("", 0))[0]
        in_headers = "x-clickhouse-user" in headers or "x-clickhouse-key" in headers
        basic = headers.get("authorization", "")
        in_params = "user" in params or "password" in params
        if sum((in_headers, bool(basic), in_params)) > 1:
            raise ClickHouseError(516, "Invalid authentication: it is not allowed to use Authorization HTTP header and "
                                       "authentication via parameters simultaneously")
        name, password = None, ""
        if in_headers:
            name, password = headers.get("x-clickhouse-user"), headers.get("x-clickhouse-key", "")
        elif basic:
            scheme, _, value = basic.partition(" ")
            if scheme.lower() != "basic":
                raise ClickHouseError(516, f"Invalid authentication: '{scheme}' HTTP Authorization scheme is not supported")
            try:
                name, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise ClickHouseError(516, "Invalid authentication: the Basic credentials cannot be decoded") from None
        elif in_params:
            name, password = params.get("user"), params.get("password", "")
        return self.users.authenticate(name, password, peer)

    def _form(self, ctype: str, body: bytes | bytearray, query_params: dict[str, str], params: dict[str, str]) -> str:
        boundary = multipart.parse_options_header(ctype)[1].get("boundary", "")
        if not boundary:
            raise ClickHouseError(36, "multipart/form-data without a boundary")
        sql = params.get("query", "")
        try:
            for part in multipart.MultipartParser(io.BytesIO(body), boundary):
                if part.filename is not None:
                    raise ClickHouseError(48, "External data for query processing (files in a multipart body) is not "
                                              "supported by this interface")
                if part.name == "query":
                    sql += part.value
                elif part.name.startswith("param_"):
                    query_params.setdefault(part.name[6:], part.value)
        except multipart.MultipartError as exc:
            raise ClickHouseError(36, f"Cannot parse the multipart/form-data body: {exc}") from None
        return sql

    async def _answer(self, send: Send, receive: Receive, request: QueryRequest, headers: dict[str, str],
                      params: dict[str, str], tag: str, head: bool) -> None:
        started = time.monotonic_ns()
        try:
            await asyncio.wait_for(self._slots.acquire(), self._queue_timeout)  # type: ignore[union-attr]
        except TimeoutError:
            raise ClickHouseError(202, f"Too many simultaneous queries: {self._max_concurrent} running, waited "
                                       f"{self._queue_timeout:g} s") from None
        try:
            settings = request.settings
            buffer_size = DEFAULT_BUFFER
            if params.get("wait_end_of_query") == "1" or settings.get("http_wait_end_of_query") in ("1", "true"):
                buffer_size = 1 << 62
            elif "buffer_size" in params:
                buffer_size = max(_uint(params["buffer_size"], "buffer_size"), 1 << 20)
            # One trip to a query thread runs the query up to its first buffer_size bytes (each
            # trip waits for a CPU on a loaded machine: fewer trips, lower latency).
            execution, held, done = await self._run(self._begin, request, buffer_size)
            if request.raw is not None and self._import_yield is not None:
                execution.summary["pbx_import_yield"] = self._import_yield()
            held_bytes = sum(map(len, held))

            method = None
            if settings.get("enable_http_compression") in ("1", "true") and "accept-encoding" in headers:
                method = choose_compression(headers["accept-encoding"])
            level = _int(settings.get("http_zlib_compression_level", "3"))
            response_headers = [
                (b"content-type", content_type(execution.format).encode()),
                (b"x-clickhouse-server-display-name", self.display_name.encode()),
                (b"x-clickhouse-query-id", request.query_id.encode()),
                (b"x-clickhouse-timezone", self.engine.timezone.encode()),
                (b"x-clickhouse-exception-tag", tag.encode()),
                (b"access-control-expose-headers", _EXPOSE.encode()),
                (b"x-clickhouse-summary", _summary(execution, held_bytes if not done else None, started).encode()),
            ]
            if execution.format:
                response_headers.append((b"x-clickhouse-format", execution.format.encode()))
            if method:
                response_headers.append((b"content-encoding", method.encode()))
            compressor = _Compressor(method, level) if method else None
            data = b"".join(held)
            if done and compressor is None:
                response_headers.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": response_headers})
            if head:
                await send({"type": "http.response.body", "body": b""})
                await self._drain(execution)
                return
            await self._stream(send, receive, execution, data, done, compressor, tag)
        finally:
            self._slots.release()  # type: ignore[union-attr]

    def _begin(self, request: QueryRequest, buffer_size: int) -> tuple[Execution, list[bytes], bool]:
        execution = self.engine.execute(request)
        held, done = self._pull(execution, buffer_size)
        return execution, held, done

    @staticmethod
    def _pull(execution: Execution, size: int) -> tuple[list[bytes], bool]:
        """Chunks of ``execution`` up to ``size`` bytes; True when it has ended."""
        held: list[bytes] = []
        total = 0
        while total < size:
            chunk = next(execution.chunks, None)
            if chunk is None:
                return held, True
            held.append(chunk)
            total += len(chunk)
        return held, False

    async def _stream(self, send: Send, receive: Receive, execution: Execution, data: bytes, done: bool,
                      compressor: _Compressor | None, tag: str) -> None:
        def out(chunk: bytes) -> bytes:
            return compressor.compress(chunk) if compressor else chunk

        gone = asyncio.Event()

        async def watch() -> None:  # a client that hangs up stops its query (the engine cancels it)
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            if data:
                await send({"type": "http.response.body", "body": out(data), "more_body": True})
            while not done:
                if gone.is_set():
                    await self._drain(execution)
                    return
                try:
                    chunks, done = await self._run(self._pull, execution, STREAM_STEP)
                except ClickHouseError as exc:
                    await send({"type": "http.response.body",
                                "body": out(exception_block(exc.body(self.engine.version), tag)), "more_body": True})
                    break
                if chunks:
                    await send({"type": "http.response.body", "body": out(b"".join(chunks)), "more_body": True})
            await send({"type": "http.response.body", "body": compressor.flush() if compressor else b""})
        except OSError:  # the client went away: stop the query
            await self._drain(execution)
            raise
        finally:
            watcher.cancel()

    async def _drain(self, execution: Execution) -> None:
        close = getattr(execution.chunks, "close", None)
        if close is not None:
            await self._run(close)


def _summary(execution: Execution, partial_bytes: int | None, started: int) -> str:
    s = execution.summary
    values = {
        "read_rows": s.get("read_rows", 0),
        "read_bytes": s.get("read_bytes", 0),
        "written_rows": s.get("written_rows", 0),
        "written_bytes": s.get("written_bytes", 0),
        "total_rows_to_read": s.get("total_rows_to_read", 0),
        "result_rows": s.get("result_rows", 0),
        "result_bytes": s.get("result_bytes", partial_bytes or 0),
        "elapsed_ns": s.get("elapsed_ns", time.monotonic_ns() - started),
    }
    if "pbx_import_yield" in s:  # ours: an insert's client yields this much to the webhooks
        values["pbx_import_yield"] = f"{s['pbx_import_yield']:g}"
    # Numbers as strings, as ClickHouse writes them (64-bit integers survive JavaScript).
    return json.dumps({k: str(v) for k, v in values.items()}, separators=(",", ":"))


async def _read_body(receive: Receive, limit: int) -> bytearray:
    """The request's body, appended as it arrives: each piece is copied once, between awaits (a
    ``join`` of an import's tens of MB at the end would hold the GIL, and the webhooks, for as
    long as the copy takes)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClickHouseError(394, "The client closed the connection")
        chunk = message.get("body", b"")
        if len(body) + len(chunk) > limit:
            raise ClickHouseError(229, f"The request body is larger than {limit} bytes")
        body += chunk
        if not message.get("more_body"):
            return body


def _uint(value: str, name: str) -> int:
    try:
        number = int(value or "0")
    except ValueError:
        raise ClickHouseError(36, f"Cannot parse {name}={value!r} as an unsigned integer") from None
    if number < 0:
        raise ClickHouseError(36, f"Cannot parse {name}={value!r} as an unsigned integer")
    return number


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 3


def _session_timeout(value: str | None) -> float:
    if value is None:
        return 60.0
    try:
        timeout = int(value)
    except ValueError:
        raise ClickHouseError(374, f"Invalid session timeout: '{value}'") from None
    if timeout < 0 or timeout > MAX_SESSION_TIMEOUT:
        raise ClickHouseError(374, f"Session timeout '{value}' is larger than max_session_timeout: "
                                   f"{MAX_SESSION_TIMEOUT}. Maximum session timeout could be modified in configuration file.")
    return float(timeout)
