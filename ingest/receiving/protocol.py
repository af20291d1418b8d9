"""The front door's HTTP/1.1 protocol: uvicorn's httptools protocol, plus the edge's limits
and a fast path for webhook GETs.

``serve`` runs on uvicorn with this protocol class (``ingest.receiving.server``).
It is uvicorn's ``HttpToolsProtocol`` (llhttp, Node.js's parser, through
httptools) with three additions:

* **Limits at the connection** (``ingest.receiving.edge``): connections are
  admitted or shed at accept; every phase of a connection has a deadline;
  the request line and header fields are measured as they arrive, so an
  oversized URL (``414``) or header block (``431``) is refused before it is
  buffered, and a malformed request is a counted ``400``. Refusals are
  answered and the connection closes after a short linger (the client reads
  the answer, not a reset).
* **Lenient request lines**: a target with raw spaces or non-ASCII bytes
  (``caller_name=Jan Novák`` from a PBX that does not encode its URLs) is
  percent-encoded before the parser sees it (``target.normalize_request_line``).
* **The fast path**: a GET to a webhook path, on a connection with nothing
  else in flight and not through a trusted proxy, goes from the parser
  callbacks straight to :meth:`Service.take`; the spool calls back once the
  row is durable and the prebuilt answer is written to the socket. No ASGI
  scope, task, or framework objects: those cost several times the webhook's
  own work (docs/benchmarks.md). Everything else (POST bodies, pipelined
  requests, ``/healthz``, ``/metrics``, proxies) takes uvicorn's ASGI path to
  the same :class:`Service` (``ingest.receiving.app``).

It relies on uvicorn's protocol attributes (``parser``, ``url``, ``cycle``,
``pipeline``, ``flow``, ``server_state``); pyproject pins the uvicorn versions
it is tested with, and ``tests/e2e/webhooks`` drives every path over real sockets.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingest.receiving.answers import Answer, refusal
from ingest.receiving.app import FrontDoor, access_line
from ingest.receiving.edge import LINGER_BYTES, LINGER_S, Edge, Phase
from ingest.receiving.service import Refused, Service
from ingest.receiving.target import normalize_request_line, route

__all__ = ["FrontDoorProtocol", "protocol_class"]

log = logging.getLogger(__name__)

#: Written to a connection shed at accept (best effort: it is closed at once).
_SHED = refusal(503, "connection_limit", "too many connections; try again later",
                ((b"retry-after", b"1"),), close=True).wire(close=True)
_INTERNAL = "the service failed on this request; it is logged"


class _NoEvent:
    @staticmethod
    def set() -> None:
        pass


class _FastCycle:
    """Stands where uvicorn keeps a request's ASGI cycle while a fast-path webhook waits for
    its fsync: uvicorn then queues pipelined requests behind it, and a graceful shutdown
    lets it finish (``keep_alive`` turned off) instead of cutting it."""

    __slots__ = ("disconnected", "keep_alive", "message_event", "response_complete", "target", "version")

    def __init__(self, keep_alive: bool, target: bytes, version: str) -> None:
        self.keep_alive = keep_alive
        self.version = version
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NoEvent
        self.target = target  # as received, for the access log


class _HeadRefused(Exception):
    """Raised from a parser callback: the request's head broke a limit; ``answer`` says which."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.reason)
        self.answer = answer


def protocol_class(door: FrontDoor, edge: Edge) -> type[FrontDoorProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to one app and its edge."""
    return type("FrontDoorProtocol", (FrontDoorProtocol,), {"door": door, "edge": edge, "service": door.service})


class FrontDoorProtocol(HttpToolsProtocol):
    """One client connection (see the module doc). Subclassed per app by :func:`protocol_class`."""

    door: FrontDoor
    edge: Edge
    service: Service
    # uvicorn's `date` header line, rebuilt when uvicorn renews it (once a second).
    _server_fields: tuple[Any, bytes] = (None, b"")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The edge's view (``edge.Connection``): phase, its deadline, the per-client key.
        self.phase = Phase.HEAD
        self.deadline = math.inf
        self.client_key = ""
        self._host = ""
        self._trusted = False
        #: (event, path token) of the fast-path webhook being read, else None.
        self._fast: tuple[str, str | None] | None = None
        self._fast_cycle: _FastCycle | None = None
        self._query = b""
        self._event = ""
        #: A refusal waiting for the answers owed to earlier pipelined requests.
        self._deferred: Answer | None = None
        self._lingered = 0  # bytes discarded while lingering
        #: The next bytes start a request: its request line is checked before the parser sees it.
        self._at_start = True
        self._line = b""  # the start of a request line that has not ended yet
        self._head_bytes = 0  # bytes of the current request's head fed to the parser so far
        self._header_bytes = 0  # its header fields, as counted for max_header_bytes
        self._max_line = self.edge.max_url_bytes + 64
        self._max_head = self.edge.max_url_bytes + self.edge.max_header_bytes + 8192
        self._on_durable = self._durable  # bound once: the spool calls it for every request

    # ---- the connection -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._host = self.client[0] if self.client else ""
        self._trusted = self.edge.is_trusted(self._host)
        if self.edge.admit(self, self._host, self._trusted, self.loop) is not None:
            transport.write(_SHED)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.release(self)
        self.deadline = math.inf
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        """The client sent all it will send. A webhook still waiting for its fsync is answered
        before the connection closes; otherwise close now (as uvicorn does; lingering: the
        client has read our answer)."""
        cycle = self._fast_cycle
        if self.phase == Phase.BUSY and cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            return True
        return None

    def expire(self) -> None:
        """The phase's deadline passed (called by the edge's sweep)."""
        self.deadline = math.inf
        if self.phase != Phase.LINGER:
            self.edge.expired(self)
        self.transport.close()

    def evict(self) -> None:
        """The edge needs this connection's place (it has no request in progress): close it."""
        self.deadline = math.inf
        self.transport.close()

    def _refuse(self, answer: Answer) -> None:
        """Refuse the request being read (a limit or a parse error) and close the connection,
        after the answers still owed to earlier (pipelined) requests: HTTP/1.1 answers in order."""
        fast, cycle = self._fast_cycle, self.cycle
        if self._fast is not None:  # the refused request is a fast-path GET still being read
            fast.response_complete = True  # type: ignore[union-attr]
        owed = bool(self.pipeline) or (fast is not None and not fast.response_complete)
        if cycle is not None and cycle is not fast and not cycle.response_complete:
            if cycle.more_body:  # the refused request is this cycle's own: its app gets a disconnect
                cycle.disconnected = True
                cycle.message_event.set()
            else:
                owed = True
        if owed:
            self._deferred = answer
            self.phase = Phase.BUSY
            self.deadline = math.inf
            self.flow.pause_reading()
        else:
            self._close_with(answer)

    def _close_with(self, answer: Answer) -> None:
        """Answer, stop reading requests, and close once the client has read it: what it still
        sends is discarded for at most ``LINGER_S`` (so it reads the answer, not a reset)."""
        transport = self.transport
        if transport.is_closing() or self.phase == Phase.LINGER:
            return
        transport.write(answer.wire(self._date(), close=True))
        self.phase = Phase.LINGER
        self.deadline = self.loop.time() + LINGER_S
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def _date(self) -> bytes:
        """uvicorn's default header lines (``date``), as bytes, rebuilt when uvicorn renews them."""
        headers = self.server_state.default_headers
        cached = FrontDoorProtocol._server_fields
        if cached[0] is not headers:
            cached = FrontDoorProtocol._server_fields = (
                headers, b"".join(name + b": " + value + b"\r\n" for name, value in headers))
        return cached[1]

    # ---- reading requests -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == Phase.LINGER:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:  # still streaming: stop being polite
                self.transport.close()
            return
        if self._deferred is not None:
            return
        if phase == Phase.IDLE:
            self.phase = Phase.HEAD
            self.deadline = self.loop.time() + self.edge.header_timeout
        if self._at_start:
            data = self._request_line(data)  # type: ignore[assignment]
            if not data:
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # websockets are off: an upgrade request is served as plain HTTP, as uvicorn does
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadRefused):
                self._refuse(cause.answer)
            else:
                self._refuse(self.service.reject(400, "bad_http", "not a valid HTTP/1.1 request", close=True))
            return
        if self.phase == Phase.HEAD and not self._at_start:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:  # one header line that never ends
                self._refuse(self._headers_too_large())

    def _request_line(self, data: bytes) -> bytes | None:
        """``data`` from the start of a request, its request line checked (414) and made
        parseable (``normalize_request_line``); None while the line has not ended."""
        buf = self._line + data if self._line else data
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > self._max_line:
                self._refuse(self._uri_too_long())
            else:
                self._line = buf
            return None
        self._line = b""
        self._at_start = False
        line = buf[:end]
        first, last = line.find(b" "), line.rfind(b" ")
        if last - first - 1 > self.edge.max_url_bytes:
            self._refuse(self._uri_too_long())
            return None
        if line.find(b" ", first + 1) != last or not line.isascii():  # a space in the target, or not ASCII
            cr = line.endswith(b"\r")
            buf = normalize_request_line(line[:-1] if cr else line) + buf[end - cr:]
        return buf

    def _uri_too_long(self) -> Answer:
        limit = self.edge.max_url_bytes
        return self.service.reject(414, "uri_too_long", f"URL longer than {limit} bytes", close=True)

    def _headers_too_large(self) -> Answer:
        limit = self.edge.max_header_bytes
        return self.service.reject(431, "headers_too_large", f"header fields larger than {limit} bytes",
                                   close=True)

    # parser callbacks

    def on_message_begin(self) -> None:
        # What uvicorn's does, but its ASGI scope is built only if the request needs one
        # (_asgi_scope): a fast-path webhook never does.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._at_start = False
        self._fast = None
        self._header_bytes = 0

    def _asgi_scope(self) -> None:
        """uvicorn's per-request ASGI scope, for a request that takes the ASGI path."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.edge.max_url_bytes:  # a pipelined request's URL, not checked as a line
            raise _HeadRefused(self._uri_too_long())

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted as sent on the wire in canonical form: name, ": ", value, CRLF.
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.edge.max_header_bytes:
            raise _HeadRefused(self._headers_too_large())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.phase = Phase.BODY
        self.deadline = self.loop.time() + self.edge.body_timeout
        self._head_bytes = 0
        self.edge.waiting.pop(self, None)  # a request in progress: not to be evicted
        parser = self.parser
        if (not self._trusted and parser.get_method() == b"GET"
                and (self.cycle is None or self.cycle.response_complete)):
            target = self.url
            if b"#" in target:
                target = target.partition(b"#")[0]
            path, _, query = target.partition(b"?")
            webhook = route(path, self.service.token_in_path)
            if webhook is not None:
                self._fast = webhook
                self._query = query
                version = parser.get_http_version()
                keep_alive = version != "1.0" and parser.should_keep_alive()
                cycle = self._fast_cycle
                if cycle is None or not cycle.response_complete:
                    cycle = self._fast_cycle = _FastCycle(keep_alive, self.url, version)
                else:  # the last one is answered: reuse it
                    cycle.__init__(keep_alive, self.url, version)  # type: ignore[misc]
                self.cycle = cycle  # type: ignore[assignment]
                return
        self._asgi_scope()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._fast is None:
            super().on_body(body)
        # else: a GET's body is not read (nor was it ever used)

    def on_message_complete(self) -> None:
        self._at_start = True
        self.phase = Phase.BUSY
        self.deadline = math.inf
        if self._fast is None:
            super().on_message_complete()
            return
        event, path_token = self._fast
        self._fast = None  # read to its end: from here on it is answered through _answer
        service = self.service
        try:
            self._event = service.take("GET", event, path_token, self._query, len(self.url), self._host, b"", b"",
                                       self._on_durable)
        except Refused as refused:
            self._answer(refused.answer)
        except Exception:
            log.exception("webhook failed", extra={"event": event})
            self._answer(service.reject(500, "internal_error", _INTERNAL))

    # ---- answering ---------------------------------------------------------------------

    def _durable(self, error: BaseException | None) -> None:
        """The spool is done with the pending webhook's row (``error`` None: it is durable)."""
        self._answer(self.service.settle(self._event, error))

    def _answer(self, answer: Answer) -> None:
        cycle = self._fast_cycle
        cycle.response_complete = True  # type: ignore[union-attr]
        transport = self.transport
        if transport.is_closing() or self.phase == Phase.LINGER:  # the client went away (what was
            return  # stored stays stored)
        keep_alive = cycle.keep_alive and not answer.closes  # type: ignore[union-attr]
        transport.write(answer.wire(self._date(), close=not keep_alive))
        if self.door.access_log:
            access_line(self.service, self.client, "GET", cycle.target.decode("latin-1"),  # type: ignore[union-attr]
                        cycle.version, answer.status)  # type: ignore[union-attr]
        if keep_alive:
            self.on_response_complete()
        else:
            transport.close()

    def on_response_complete(self) -> None:
        """A response is written (either path): start the next pipelined request, or wait idle."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.pipeline:
            self.flow.resume_reading()
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._deferred is not None:
            self._close_with(self._deferred)
        elif not self._at_start:  # the next request has begun arriving
            self.flow.resume_reading()
            self.phase = Phase.HEAD
            self.deadline = self.loop.time() + self.edge.header_timeout
            self.edge.waiting[self] = None
        else:
            self.flow.resume_reading()
            self.phase = Phase.IDLE
            self.deadline = self.loop.time() + self.edge.keepalive_timeout
            self.edge.waiting[self] = None
