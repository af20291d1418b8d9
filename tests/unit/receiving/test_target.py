"""Reading a request target: the webhook it names, what may be logged of it, lenient request lines."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

import pytest

from ingest.receiving.edge import client_key
from ingest.receiving.target import normalize_request_line, redact, route, target_length

SECRET = "ab+cd/ef=="


@pytest.mark.parametrize(
    "path, token_in_path, expected",
    [
        pytest.param(b"/call_end", False, ("call_end", None), id="event"),
        pytest.param(b"/call_end/", False, ("call_end", None), id="trailing-slash"),
        pytest.param(b"/call%5Fend", False, ("call_end", None), id="escaped-event"),
        pytest.param(b"/nope", False, ("nope", None), id="unknown-event-is-still-a-webhook-path"),
        pytest.param(b"/healthz", True, None, id="healthz"),
        pytest.param(b"/metrics", True, None, id="metrics"),
        pytest.param(b"/a/call_end", False, None, id="two-segments-without-a-secret"),
        pytest.param(b"/s3cret/call_end", True, ("call_end", "s3cret"), id="path-token"),
        pytest.param(b"/ab+cd/ef==/call_end", True, ("call_end", SECRET), id="base64-token-as-sent"),
        pytest.param(b"/" + quote(SECRET, safe="").encode() + b"/call_end", True, ("call_end", SECRET),
                     id="base64-token-encoded"),
    ],
)
def test_route_names_the_event_and_the_path_token(path, token_in_path, expected):
    assert route(path, token_in_path) == expected


@pytest.mark.parametrize(
    "target, expected",
    [
        pytest.param(f"/call_end?call_id=1&token={SECRET}", "/call_end?call_id=1&token=***", id="query-raw"),
        pytest.param(f"/call_end?token={quote(SECRET, safe='')}&x=1", "/call_end?token=***&x=1", id="query-escaped"),
        pytest.param(f"/call_end?token={quote(SECRET, safe='').lower()}", "/call_end?token=***", id="lowercase-escapes"),
        pytest.param("/call_end?%74oken=abc", "/call_end?%74oken=***", id="escaped-name"),
        pytest.param(f"/{SECRET}/call_end?call_id=1", "/***/call_end?call_id=1", id="path-raw"),
        pytest.param(f"/{quote(SECRET, safe='')}/call_end", "/***/call_end", id="path-escaped"),
        pytest.param(f"/call_end?call_id={quote_plus(SECRET)}", "/call_end?call_id=***", id="elsewhere-escaped"),
        pytest.param(f"/call_end?note=x{SECRET}y", "/call_end?note=x***y", id="elsewhere-raw"),
        pytest.param("/call_end?call_id=1", "/call_end?call_id=1", id="nothing-to-hide"),
    ],
)
def test_redact_hides_the_secret_in_every_encoding(target, expected):
    assert redact(target, SECRET, token_in_path=True) == expected


def test_redact_hides_token_parameters_even_without_a_configured_secret():
    assert redact("/call_end?token=guess&a=1") == "/call_end?token=***&a=1"


@pytest.mark.parametrize(
    "line, expected",
    [
        pytest.param(b"GET /call_end?caller_name=Jan Novak HTTP/1.1", b"GET /call_end?caller_name=Jan%20Novak HTTP/1.1",
                     id="space"),
        pytest.param("GET /call_end?n=Nov\u00e1k HTTP/1.1".encode(), b"GET /call_end?n=Nov%C3%A1k HTTP/1.1", id="utf8"),
        pytest.param(b"GET /call_end?a=1 HTTP/1.1", b"GET /call_end?a=1 HTTP/1.1", id="clean-unchanged"),
        pytest.param(b"GET /call_end?a=\x01 HTTP/1.1", b"GET /call_end?a=\x01 HTTP/1.1", id="control-left-for-the-parser"),
        pytest.param(b"GARBAGE", b"GARBAGE", id="not-a-request-line"),
    ],
)
def test_normalize_request_line_percent_encodes_what_a_careless_pbx_sends_raw(line, expected):
    assert normalize_request_line(line) == expected


def test_target_length_counts_the_question_mark():
    assert target_length(b"/call_end", b"a=1") == len("/call_end?a=1")
    assert target_length(b"/call_end", b"") == len("/call_end")


@pytest.mark.parametrize(
    "host, key",
    [
        pytest.param("10.1.2.3", "10.1.2.3", id="ipv4"),
        pytest.param("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64", id="ipv6-by-64"),
        pytest.param("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64", id="same-64"),
        pytest.param("::ffff:10.1.2.3", "10.1.2.3", id="ipv4-mapped"),
    ],
)
def test_the_per_client_limit_counts_ipv4_addresses_and_ipv6_64s(host, key):
    assert client_key(host) == key
