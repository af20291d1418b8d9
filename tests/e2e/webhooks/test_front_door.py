"""The two ways into the service answer alike, and a failure of ours is a counted 500.

A webhook GET on ``serve``'s socket takes the protocol's fast path
(``ingest.receiving.protocol``); everything else, and any ASGI server (the
tests' client here), takes the ASGI app (``ingest.receiving.app``). Both call
the same ``Service``: the same requests must get the same answers and store
the same rows.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar.testing import TestClient

from ingest.config import Settings
from ingest.events import decode as decode_module
from ingest.receiving import service as service_module
from ingest.receiving.app import create_app
from ingest.receiving.server import uvicorn_config
from ingest.testing import ServeProcess, exchange, free_port, metric_values, stored

#: (method, target): requests a PBX, a misconfigured PBX or a stranger may send.
REQUESTS = [
    ("GET", "/call_end?call_id=same-1"),
    ("GET", "/call_end/?call_id=same-trailing-slash"),
    ("GET", "/start_int_dial?call_id=same-2&queue_name=a&queue_name=a&queue_name=b&pbx_v2=x"),
    ("GET", "/answered_external?call_id=1&call_id=1&call_id=12&&call_id&call_id=1&call_id=2&&call_id&call_id=1"
            "&call_id=2&"),
    ("GET", "/start_call?call_id=same-3&caller_name=Jan%20Nov%C3%A1k&caller_num=%2B420123"),
    ("GET", "/call_end?call_id=same-4&odd=%ZZ%00%ff"),
    ("GET", "/call_end?call_id=same-5&token=not-configured"),
    ("GET", "/call_end"),
    ("GET", "/call_end?call_id="),
    ("GET", "/pbx_agent_login?exten=1"),
    ("GET", "/no_such_event?call_id=1"),
    ("GET", "/a/b/call_end?call_id=1"),
    ("GET", "/call_end?call_id=1&" + "&".join(f"p{i}=1" for i in range(150))),
    ("GET", "/call_end?call_id=1&pad=" + "x" * 9000),
    ("PUT", "/call_end?call_id=1"),
    ("DELETE", "/call_end?call_id=1"),
]


def _comparable(status: int, body: bytes) -> tuple[int, Any]:
    return status, json.loads(body) if body.startswith(b"{") else body


@pytest.mark.usefixtures("migrated_dsn")  # (the in-process app's engine at dsn)
def test_the_fast_path_and_the_asgi_app_answer_alike_and_store_the_same(tmp_path: Path, dsn: str, migrated_copy):
    settings = Settings(clickhouse_url=dsn, batch_size=100, flush_interval=0.05)
    with TestClient(create_app(settings)) as client:
        through_asgi = [_comparable(r.status_code, r.content) for r in
                        (client.request(method, target) for method, target in REQUESTS)]
    served = ServeProcess(migrated_copy(tmp_path / "served"))
    try:
        through_socket = []
        for method, target in REQUESTS:
            status, _, body = exchange(served.port, f"{method} {target} HTTP/1.1\r\nHost: pbx\r\n\r\n".encode())
            through_socket.append(_comparable(status, body))
    finally:
        assert served.stop() == 0
    assert through_socket == through_asgi
    assert [s for s, _ in through_socket] == [200] * 7 + [422, 422, 422, 404, 404, 413, 414, 405, 405]
    columns = "SELECT * EXCEPT (event_id, received_at, seq) FROM pbx.events ORDER BY call_id"  # seq: arrival order
    assert stored(served.dsn, columns) == stored(dsn, columns)
    assert len(stored(dsn, columns)) == 7


class _InProcess:
    """``serve``'s front door on a real port, in this process (so a fault can be injected)."""

    def __init__(self, settings: Settings) -> None:
        self.url = f"http://127.0.0.1:{settings.port}"
        self.port = settings.port
        self.server = uvicorn.Server(uvicorn_config(settings))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture
def failing_on_boom(migrated_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[_InProcess]:
    """The service, with a fault injected into decoding for call_id=boom (a bug of ours)."""
    real = decode_module.decode

    def decode(event: str, pairs: Any) -> Any:
        pairs = list(pairs)
        if ("call_id", "boom") in pairs:
            raise RuntimeError("injected fault")
        return real(event, pairs)

    monkeypatch.setattr(service_module, "decode", decode)
    server = _InProcess(Settings(clickhouse_url=migrated_dsn, port=free_port(), flush_interval=0.05))
    yield server
    server.stop()


def test_a_failure_of_ours_is_a_counted_500_on_both_paths_and_the_service_goes_on(failing_on_boom, dsn):
    port = failing_on_boom.port
    fast = exchange(port, b"GET /call_end?call_id=boom HTTP/1.1\r\nHost: pbx\r\n\r\n")
    body = b"call_id=boom"
    posted = exchange(port, b"POST /call_end HTTP/1.1\r\nHost: pbx\r\nContent-Type: application/x-www-form-"
                            b"urlencoded\r\nContent-Length: 12\r\n\r\n" + body)
    for status, _, answer in (fast, posted):
        assert status == 500 and json.loads(answer)["reason"] == "internal_error"
    assert exchange(port, b"GET /call_end?call_id=fine HTTP/1.1\r\nHost: pbx\r\n\r\n")[0] == 200
    assert metric_values(failing_on_boom.url)['pbx_requests_rejected_total{reason="internal_error"}'] == 2
    failing_on_boom.stop()
    assert [r["call_id"] for r in stored(dsn, "SELECT call_id FROM pbx.events")] == ["fine"]
