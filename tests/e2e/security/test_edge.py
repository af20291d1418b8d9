"""Hostile and broken clients over real sockets: every one gets a bounded, counted answer.

One ``serve`` for the module, with short timeouts and small connection limits
so each case takes about a second (loopback only; every case connects from its
own 127.0.x.y address, so the per-client limit of one does not touch the
others). Webhooks answered 200 here are recorded; after the module the
service is stopped and exactly those are stored, with the values each case
expects: nothing acknowledged lost, nothing refused stored.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from ingest.testing import ServeProcess, closes_within, exchange, metric_values, read_answer, stored

#: A base64-style secret: '+', '/' and '=' all need care in a URL.
SECRET = "ab+cd/ef=="
TIMEOUT_S = 2.0
PER_CLIENT = 10
TOTAL = 120
#: A timeout fires within its length plus one sweep (half the shortest timeout) plus slack.
CLOSE_BY_S = 2 * TIMEOUT_S + 1.5
_addresses = (f"127.0.{a}.{b}" for a in range(1, 250) for b in range(1, 250))


def new_client() -> str:
    """A loopback source address no other case has used."""
    return next(_addresses)


@dataclass
class Edge:
    proc: ServeProcess
    #: call_id -> the columns its stored row must have (answered 200).
    acked: dict[str, dict[str, str]] = field(default_factory=dict)
    ids: Iterator[int] = field(default_factory=itertools.count)

    @property
    def port(self) -> int:
        return self.proc.port

    def call_id(self, name: str) -> str:
        return f"{name}-{next(self.ids)}"

    def metric(self, key: str) -> float:
        return metric_values(self.proc.url).get(key, 0.0)

    def webhook(self, call_id: str, source: str | None = None, extra: str = "") -> int:
        status, _, _ = exchange(self.port, get(f"/{SECRET}/call_end?call_id={call_id}{extra}"),
                                source or new_client())
        if status == 200:
            self.acked[call_id] = {}
        return status


def get(target: str, headers: bytes = b"Host: pbx\r\n") -> bytes:
    return b"GET " + target.encode() + b" HTTP/1.1\r\n" + headers + b"\r\n"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, migrated_copy) -> Iterator[Edge]:
    data = migrated_copy(tmp_path_factory.mktemp("edge") / "chdata")
    proc = ServeProcess(data, "--access-log", env={
        "PBX_TOKEN": SECRET,
        "PBX_HEADER_TIMEOUT": str(TIMEOUT_S), "PBX_BODY_TIMEOUT": str(TIMEOUT_S),
        "PBX_KEEPALIVE_TIMEOUT": str(TIMEOUT_S),
        "PBX_MAX_CONNECTIONS": str(TOTAL), "PBX_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT),
        "PBX_FLUSH_INTERVAL": "0.05",
    })
    state = Edge(proc)
    yield state
    assert proc.stop() == 0, proc.log()
    rows = {r["call_id"]: r for r in stored(proc.dsn, "SELECT * FROM pbx.events")}
    assert set(rows) == set(state.acked), "stored must be exactly the webhooks answered 200"
    for call_id, columns in state.acked.items():
        for name, value in columns.items():
            assert rows[call_id][name] == value, (call_id, name)


def _idle(port: int, source: str, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
            for _ in range(n)]


def _refused_at_accept(sock: socket.socket) -> bool:
    """The server answered 503 at once (or reset the connection) without a request."""
    sock.settimeout(5)
    with sock.makefile("rb") as fp:
        status, _, body = read_answer(fp)
    return status in (0, 503)


# ---- connections -----------------------------------------------------------------------


def test_connections_over_the_per_client_limit_are_shed_at_accept_and_counted(edge):
    shed_before = edge.metric('pbx_connections_shed_total{reason="max_connections_per_client"}')
    attacker = new_client()
    held = _idle(edge.port, attacker, PER_CLIENT)
    extra = _idle(edge.port, attacker, 5)
    try:
        assert all(_refused_at_accept(s) for s in extra)
        assert all(closes_within(s, 0.01) is None for s in held), "the first ten are kept (until their timeout)"
        assert edge.webhook(edge.call_id("while-shedding")) == 200, "another client is served"
    finally:
        for s in held + extra:
            s.close()
    shed = edge.metric('pbx_connections_shed_total{reason="max_connections_per_client"}') - shed_before
    assert shed == 5


def test_at_the_total_limit_idle_connections_make_room_for_a_pbx(edge):
    evicted_before = edge.metric('pbx_connections_closed_total{reason="evicted"}')
    socks = []
    try:
        for _ in range(TOTAL // PER_CLIENT + 2):  # two addresses' worth more than the total
            socks += _idle(edge.port, new_client(), PER_CLIENT)
        assert edge.metric("pbx_connections_open") <= TOTAL
        # The service is full of idle connections from many addresses; a PBX still gets in.
        assert edge.webhook(edge.call_id("while-full")) == 200
    finally:
        for s in socks:
            s.close()
    evicted = edge.metric('pbx_connections_closed_total{reason="evicted"}') - evicted_before
    assert evicted >= 2 * PER_CLIENT  # the oldest idle ones made room, one per newcomer


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"GET /call_end?call_id=half HTTP/1.1\r\nHost: pbx\r\n", id="half-a-head"),
        pytest.param(b"GET /call_end?call_id=half-line", id="half-a-request-line"),
    ],
)
def test_a_connection_that_does_not_finish_its_headers_is_closed_after_the_header_timeout(edge, sent):
    before = edge.metric('pbx_connections_closed_total{reason="header_timeout"}')
    with socket.create_connection(("127.0.0.1", edge.port), source_address=(new_client(), 0)) as sock:
        sock.sendall(sent)
        took = closes_within(sock, CLOSE_BY_S)
    assert took is not None and took >= TIMEOUT_S - 0.05
    assert edge.metric('pbx_connections_closed_total{reason="header_timeout"}') == before + 1


def test_a_slowloris_client_is_cut_off_by_the_header_timeout_though_it_keeps_sending(edge):
    with socket.create_connection(("127.0.0.1", edge.port), source_address=(new_client(), 0)) as sock:
        sock.sendall(b"GET /call_end?call_id=slow HTTP/1.1\r\n")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < CLOSE_BY_S and not closed:
            try:
                sock.sendall(b"X-a: b\r\n")  # a header line every 0.2 s: never idle, never done
            except OSError:
                closed = True
                break
            closed = closes_within(sock, 0.2) is not None
    assert closed and time.monotonic() - start < CLOSE_BY_S


def test_a_body_that_stalls_is_cut_off_by_the_body_timeout_and_not_stored(edge):
    before = edge.metric('pbx_connections_closed_total{reason="body_timeout"}')
    head = (f"POST /{SECRET}/call_end HTTP/1.1\r\nHost: pbx\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 100\r\n\r\ncall_id=stalled-body").encode()
    with socket.create_connection(("127.0.0.1", edge.port), source_address=(new_client(), 0)) as sock:
        sock.sendall(head)
        took = closes_within(sock, CLOSE_BY_S)
    assert took is not None
    assert edge.metric('pbx_connections_closed_total{reason="body_timeout"}') == before + 1


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(edge):
    before = edge.metric('pbx_connections_closed_total{reason="keepalive_timeout"}')
    call_id = edge.call_id("keep-alive")
    with socket.create_connection(("127.0.0.1", edge.port), source_address=(new_client(), 0)) as sock:
        sock.sendall(get(f"/{SECRET}/call_end?call_id={call_id}"))
        with sock.makefile("rb") as fp:
            status, headers, _ = read_answer(fp)
        assert status == 200 and "connection" not in headers
        edge.acked[call_id] = {}
        took = closes_within(sock, CLOSE_BY_S)
    assert took is not None and took >= TIMEOUT_S - 0.05
    assert edge.metric('pbx_connections_closed_total{reason="keepalive_timeout"}') == before + 1


# ---- request heads -----------------------------------------------------------------------


def test_the_request_target_limit_is_exact_and_longer_urls_get_414(edge):
    call_id = edge.call_id("long-url")
    prefix = f"/{SECRET}/call_end?call_id={call_id}&pad="
    at_limit = prefix + "x" * (8192 - len(prefix))
    assert len(at_limit) == 8192
    source = new_client()
    assert exchange(edge.port, get(at_limit), source)[0] == 200
    edge.acked[call_id] = {"extra": {"pad": "x" * (8192 - len(prefix))}}  # type: ignore[dict-item]
    before = edge.metric('pbx_requests_rejected_total{reason="uri_too_long"}')
    for size in (8193, 64 * 1024, 1 << 20):
        status, _, body = exchange(edge.port, get(prefix + "x" * (size - len(prefix))), source)
        assert status == 414 and b"uri_too_long" in body, size
    assert edge.metric('pbx_requests_rejected_total{reason="uri_too_long"}') == before + 3


def test_the_header_limit_is_exact_and_larger_heads_get_431(edge):
    call_id = edge.call_id("big-head")
    target = f"/{SECRET}/call_end?call_id={call_id}"
    # Counted as on the wire: name + ": " + value + CRLF; Host: pbx is 9 + 2 = 11 bytes.
    pad = 16384 - 11 - len("X-Pad: \r\n")
    ok = get(target, b"Host: pbx\r\nX-Pad: " + b"p" * pad + b"\r\n")
    assert exchange(edge.port, ok, new_client())[0] == 200
    edge.acked[call_id] = {}
    over = get(target.replace(call_id, call_id + "-over"), b"Host: pbx\r\nX-Pad: " + b"p" * (pad + 1) + b"\r\n")
    status, _, body = exchange(edge.port, over, new_client())
    assert status == 431 and b"headers_too_large" in body


def test_an_endless_header_is_refused_before_it_is_read_and_memory_stays_flat(edge):
    pid = edge.proc.proc.pid
    peak_before = _peak_rss_kib(pid)
    sent = 0
    status = 0
    with socket.create_connection(("127.0.0.1", edge.port), source_address=(new_client(), 0), timeout=5) as sock:
        sock.sendall(b"GET /call_end?call_id=endless HTTP/1.1\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            while sent < 100 << 20:  # up to the 100 MB that used to be read in full
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        with sock.makefile("rb") as fp:
            status, _, _ = read_answer(fp)
    assert status in (431, 0)
    assert sent < 16 << 20, "the server stopped reading long before 100 MB (socket buffers hold a few MB)"
    assert _peak_rss_kib(pid) - peak_before < 20 * 1024


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="not-http"),
        pytest.param(b"GET /call_end?a=\x01 HTTP/1.1\r\nHost: pbx\r\n\r\n", id="control-byte-in-url"),
        pytest.param(b"POST /call_end HTTP/1.1\r\nHost: pbx\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"),
        pytest.param(b"GET /call_end HTTP/1.1\r\nHost pbx\r\n\r\n", id="header-without-colon"),
    ],
)
def test_malformed_requests_get_a_counted_400(edge, raw):
    before = edge.metric('pbx_requests_rejected_total{reason="bad_http"}')
    status, headers, body = exchange(edge.port, raw, new_client())
    assert status == 400 and b"bad_http" in body and headers.get("connection") == "close"
    assert edge.metric('pbx_requests_rejected_total{reason="bad_http"}') == before + 1


def test_raw_utf8_and_spaces_in_the_query_are_stored_as_a_pbx_meant_them(edge):
    for name, raw_value, value in [("utf8", "Nov\u00e1k", "Nov\u00e1k"), ("space", "Jan Novak", "Jan Novak"),
                                   ("both", "Jan Nov\u00e1k 2", "Jan Nov\u00e1k 2")]:
        call_id = edge.call_id(name)
        request = (f"GET /{SECRET}/start_int_dial?call_id={call_id}&caller_name={raw_value} HTTP/1.1\r\n"
                   "Host: pbx\r\n\r\n").encode()
        assert exchange(edge.port, request, new_client())[0] == 200, name
        edge.acked[call_id] = {"caller_name": value}


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD", "PUT", "DELETE"])
def test_other_methods_on_a_webhook_get_405_with_allow(edge, method):
    request = f"{method} /{SECRET}/call_end?call_id=m HTTP/1.1\r\nHost: pbx\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", edge.port), source_address=(new_client(), 0), timeout=5) as sock:
        sock.sendall(request)
        line = sock.makefile("rb").readline()
    assert line.startswith(b"HTTP/1.1 405"), line
    if method != "HEAD":
        status, headers, body = exchange(edge.port, request, new_client())
        assert headers["allow"] == "GET, POST" and b"method_not_allowed" in body


# ---- requests on one connection ------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(edge):
    ids = [edge.call_id("pipelined") for _ in range(3)]
    body = f"call_id={ids[2]}".encode()
    requests = (get(f"/{SECRET}/call_end?call_id={ids[0]}") + get(f"/{SECRET}/no_such_event?call_id=x")
                + get(f"/{SECRET}/call_end?call_id={ids[1]}")
                + f"POST /{SECRET}/call_end HTTP/1.1\r\nHost: pbx\r\nContent-Type: application/x-www-form-urlencoded"
                  f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                + get("/healthz"))
    with socket.create_connection(("127.0.0.1", edge.port), source_address=(new_client(), 0), timeout=10) as sock:
        sock.sendall(requests)
        with sock.makefile("rb") as fp:
            answers = [read_answer(fp) for _ in range(5)]
    assert [a[0] for a in answers] == [200, 404, 200, 200, 200]
    assert answers[4][2].startswith(b'{"status"')
    edge.acked.update({i: {} for i in ids})


def test_a_client_that_half_closes_after_its_request_still_gets_its_answer(edge):
    call_id = edge.call_id("half-close")
    with socket.create_connection(("127.0.0.1", edge.port), source_address=(new_client(), 0), timeout=10) as sock:
        sock.sendall(get(f"/{SECRET}/call_end?call_id={call_id}"))
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as fp:
            status, _, _ = read_answer(fp)
    assert status == 200
    edge.acked[call_id] = {}


# ---- the secret ----------------------------------------------------------------------------


def test_a_base64_token_works_in_every_form_and_never_reaches_the_log(edge):
    forms = {
        "query-percent-encoded": f"/call_end?call_id={{}}&token={quote(SECRET, safe='')}",
        "query-lowercase-escapes": f"/call_end?call_id={{}}&token={quote(SECRET, safe='').lower()}",
        "path-as-is": f"/{SECRET}/call_end?call_id={{}}",
        "path-percent-encoded": f"/{quote(SECRET, safe='')}/call_end?call_id={{}}",
    }
    for name, template in forms.items():
        call_id = edge.call_id(name)
        assert exchange(edge.port, get(template.format(call_id)), new_client())[0] == 200, name
        edge.acked[call_id] = {}
    # '+' in a query string means a space: the raw form is a different (wrong) token.
    assert exchange(edge.port, get(f"/call_end?call_id=plus&token={SECRET}"), new_client())[0] == 403
    assert exchange(edge.port, get("/call_end?call_id=empty&token="), new_client())[0] == 401
    log = edge.proc.log()
    assert '"GET /***/call_end' in log and "token=***" in log
    for form in {SECRET, quote(SECRET, safe=""), quote(SECRET, safe="").lower(), quote_plus(SECRET, safe=""),
                 SECRET.replace("+", " "), "cd/ef"}:
        assert form not in log, form


# ---- JSON bodies -----------------------------------------------------------------------------


def _post_json(edge: Edge, body: bytes) -> tuple[int, dict[str, Any]]:
    import json

    request = (f"POST /{SECRET}/start_call HTTP/1.1\r\nHost: pbx\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    status, _, answer = exchange(edge.port, request, new_client())
    return status, json.loads(answer) if answer.startswith(b"{") else {}


def test_json_numbers_keep_the_senders_text_and_repeated_keys_follow_the_query_rule(edge):
    call_id = "1541078811.10"
    status, _ = _post_json(edge, b'{"call_id":1541078811.10,"caller_num":1e3,"queue_name":"a","queue_name":"a",'
                                 b'"dialed_num":"1","dialed_num":"2"}')
    assert status == 200
    edge.acked[call_id] = {"caller_num": "1e3", "dialed_num": "1",  # type: ignore[dict-item]
                           "extra": {"queue_name": "a", "dialed_num[2]": "2"}}


@pytest.mark.parametrize(
    "body, status, reason, parameter",
    [
        pytest.param(b'{"call_id":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 413, "body_too_large", None,
                     id="nested-over-the-body-limit"),
        pytest.param(b'{"call_id":"1","x":' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "bad_body", None,
                     id="nested-deeply"),
        pytest.param(b'{"call_id":"1","x":{"y":1}}', 422, "bad_param", "x", id="object-value"),
        pytest.param(b'{"call_id":NaN}', 400, "bad_body", None, id="not-a-json-number"),
        pytest.param(b'[{"call_id":"1"}]', 400, "bad_body", None, id="not-an-object"),
    ],
)
def test_json_that_is_not_one_flat_object_gets_a_4xx_naming_the_problem(edge, body, status, reason, parameter):
    got, answer = _post_json(edge, body)
    assert got == status and answer["reason"] == reason
    assert answer.get("parameter") == parameter
