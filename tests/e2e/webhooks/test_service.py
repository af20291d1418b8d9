"""The webhook service end to end: real HTTP, real embedded ClickHouse, no mocks."""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from litestar.testing import TestClient

from ingest.config import Settings
from ingest.events.decode import parse_query
from ingest.events.spec import AGENT_EVENTS, CALL_EVENTS, EVENTS
from ingest.receiving.app import create_app
from ingest.testing import spec_example_urls, stored

SPEC_URLS = {urlsplit(u).path.strip("/"): u for u in spec_example_urls()}


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    """The app in-process; leaving the block runs its shutdown (the writer drains)."""
    with TestClient(create_app(settings)) as client:
        yield client


def _path_and_params(url: str) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(url)
    return parts.path, parse_query(parts.query)


def test_spec_examples_sent_as_is_are_stored_with_their_values_and_survive_sigterm(serve):
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with httpx.Client(base_url=serve.url) as http:
        for url in spec_example_urls():
            path = url.removeprefix("http://server")
            response = http.get(path)
            assert response.status_code == 200, (url, response.text)
    assert serve.stop(signal.SIGTERM) == 0, serve.log()
    after = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    rows = stored(serve.dsn)
    assert sorted(r["event"] for r in rows) == sorted(EVENTS)
    by_event = {r["event"]: r for r in rows}
    for event, url in SPEC_URLS.items():
        row = by_event[event]
        for name, value in parse_query(urlsplit(url).query):
            assert row[name] == value, (event, name)
        assert row["extra"] == {}
        assert row["source"] == "http"
        assert before <= row["received_at"] <= after
        assert row["received_at"].microsecond % 1000 == 0, "millisecond precision"
    assert by_event["start_call"]["target_num"] == "591166200"
    assert by_event["start_int_dial"]["queue_name"] == "helpdesk"
    # cel_id repeats across the call's events and is stored as sent, not used as a key.
    with_cel = [e for e, u in SPEC_URLS.items() if "cel_id=" in u]
    assert len(with_cel) == 9 and {by_event[e]["cel_id"] for e in with_cel} == {"28254912"}
    assert len({r["event_id"] for r in rows}) == 17


@pytest.mark.parametrize("encoding", ["form", "json"])
def test_post_bodies_store_the_same_values_as_get(app_client, settings, encoding):
    for event, url in SPEC_URLS.items():
        path, params = _path_and_params(url)
        if encoding == "form":
            response = app_client.post(path, content=urlencode(params),
                                       headers={"content-type": "application/x-www-form-urlencoded"})
        else:
            response = app_client.post(path, json=dict(params))
        assert response.status_code == 200, (event, response.text)
    app_client.__exit__(None, None, None)
    rows = {r["event"]: r for r in stored(settings.clickhouse_url)}
    assert set(rows) == set(EVENTS)
    for event, url in SPEC_URLS.items():
        for name, value in parse_query(urlsplit(url).query):
            assert rows[event][name] == value


def test_quirks_repeats_and_unknown_parameters_are_kept(app_client, settings):
    assert app_client.get("/start_int_dial?call_id=1&queue_name=a&queue_name=a&queue_name=b&pbx_v2=x").status_code == 200
    app_client.__exit__(None, None, None)
    [row] = stored(settings.clickhouse_url)
    assert row["queue_name"] == "a"
    assert row["extra"] == {"queue_name[2]": "b", "pbx_v2": "x"}


@pytest.mark.parametrize("event", sorted(CALL_EVENTS | AGENT_EVENTS))
def test_missing_required_parameter_is_422_naming_it(app_client, event):
    required = "userid" if event in AGENT_EVENTS else "call_id"
    response = app_client.get(f"/{event}?cel_id=1&{required}=")
    assert response.status_code == 422
    body = response.json()
    assert body["parameter"] == required and required in body["error"]


def test_unknown_event_is_404_listing_the_known_events(app_client):
    response = app_client.get("/call_start?call_id=1")
    assert response.status_code == 404
    assert response.json()["known_events"] == list(EVENTS)


@pytest.mark.parametrize(
    "request_kwargs, status",
    [
        pytest.param({"method": "GET", "url": "/call_end?call_id=1&pad=" + "x" * 9000}, 414, id="url-too-long"),
        pytest.param({"method": "POST", "url": "/call_end", "content": "call_id=1&pad=" + "x" * 70000,
                      "headers": {"content-type": "application/x-www-form-urlencoded"}}, 413, id="body-too-large"),
        pytest.param({"method": "GET", "url": "/call_end?call_id=1&" + "&".join(f"p{i}=1" for i in range(150))},
                     413, id="too-many-params"),
        pytest.param({"method": "POST", "url": "/call_end", "content": "{nope",
                      "headers": {"content-type": "application/json"}}, 400, id="bad-json"),
        pytest.param({"method": "POST", "url": "/call_end", "json": {"call_id": [1]}}, 422, id="json-non-scalar"),
        pytest.param({"method": "PUT", "url": "/call_end?call_id=1"}, 405, id="wrong-method"),
        pytest.param({"method": "GET", "url": "/call_end?call_id=%ZZ%00%ff"}, 200, id="odd-escapes-accepted"),
    ],
)
def test_bad_requests_get_a_clear_4xx_and_good_ones_around_them_are_stored(app_client, settings, request_kwargs, status):
    assert app_client.get("/call_end?call_id=before").status_code == 200
    response = app_client.request(**request_kwargs)
    assert response.status_code == status, response.text
    if status >= 400:
        assert response.json()["error"]
    assert app_client.get("/call_end?call_id=after").status_code == 200
    app_client.__exit__(None, None, None)
    call_ids = [r["call_id"] for r in stored(settings.clickhouse_url)]
    assert call_ids[0] == "before" and call_ids[-1] == "after"
    assert len(call_ids) == (3 if status == 200 else 2)


def test_batches_by_size_and_by_time(dsn):
    settings = Settings(clickhouse_url=dsn, batch_size=10, flush_interval=0.2)
    with TestClient(create_app(settings)) as client:
        for i in range(25):
            assert client.get(f"/call_end?call_id={i}").status_code == 200
        metrics = _metrics_until(client, "pbx_rows_written_total", 25.0)
    assert metrics["pbx_batches_written_total"] >= 3  # two full batches, then the 5-row rest by age
    assert metrics['pbx_events_received_total{event="call_end"}'] == 25.0
    assert len(stored(dsn)) == 25


def _metrics_until(client: TestClient, name: str, value: float, timeout: float = 10.0) -> dict[str, float]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        text = client.get("/metrics").text
        metrics = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, number = line.rpartition(" ")
                metrics[key] = float(number)
        if metrics.get(name) == value or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


def test_healthz_and_metrics_report_the_service(app_client):
    assert app_client.get("/queue_in?call_id=1&queue_name=q").status_code == 200
    assert app_client.get("/queue_in").status_code == 422
    assert app_client.get("/nowhere").status_code == 404
    health = app_client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = _metrics_until(app_client, "pbx_rows_written_total", 1.0)
    assert metrics['pbx_events_received_total{event="queue_in"}'] == 1.0
    assert metrics['pbx_requests_rejected_total{reason="missing_param"}'] == 1.0
    assert metrics['pbx_requests_rejected_total{reason="unknown_event"}'] == 1.0
    assert metrics["pbx_batches_written_total"] >= 1
    assert "pbx_flush_seconds_count" in metrics and "pbx_buffer_depth" in metrics


def test_accepted_webhooks_are_not_logged_but_rejections_are_one_line_each(serve):
    with httpx.Client(base_url=serve.url) as http:
        for i in range(20):
            assert http.get(f"/call_end?call_id={i}").status_code == 200
        assert http.get("/call_end").status_code == 422
    serve.stop()
    lines = [line for line in serve.log().splitlines() if '"request rejected"' in line]
    assert len(lines) == 1 and '"reason":"missing_param"' in lines[0]
    assert "call_id=3" not in serve.log()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="not-http"),
        pytest.param(b"GET /call_end?call_id=1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", id="huge-header"),
        pytest.param(b"GET /call_end?call_id=\xff\xfe\x00 HTTP/1.1\r\nHost: x\r\n\r\n", id="raw-bytes-in-url"),
        pytest.param(b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", id="traversal"),
        pytest.param(b"POST /call_end HTTP/1.1\r\nHost: x\r\nContent-Length: 999\r\n\r\ncall_id=1", id="short-body"),
        pytest.param(b"POST /call_end HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"),
    ],
)
def test_malformed_http_never_takes_the_service_down(serve, raw):
    import socket

    with socket.create_connection(("127.0.0.1", serve.port), timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        try:
            answer = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]
    with httpx.Client(base_url=serve.url) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/call_end?call_id=still-serving").status_code == 200
    assert serve.stop() == 0
    assert [r["call_id"] for r in stored(serve.dsn, "SELECT call_id FROM pbx.events WHERE call_id = 'still-serving'")] == ["still-serving"]
