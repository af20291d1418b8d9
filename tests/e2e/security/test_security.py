"""The shared secret, the client allow-list and request limits: refused requests store nothing.

The secret travels in the URL (PBX webhooks are configured as URLs only), so
besides the status codes these tests check it never reaches the events table
or the log, even with the access log on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from ingest.config import ConfigError, Settings
from ingest.receiving.app import create_app
from ingest.testing import ServeProcess, stored

SECRET = "pbx-s3cret-Zq9"
#: What the tests look at: each stored call and its unknown parameters.
CALLS = "SELECT call_id, extra FROM pbx.events ORDER BY call_id"


@pytest.fixture
def with_token(migrated_dsn: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(clickhouse_url=migrated_dsn, token=SECRET, flush_interval=0.02)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    "url, status, reason",
    [
        pytest.param("/call_end?call_id=no-token", 401, "missing_token", id="missing"),
        pytest.param("/call_end?call_id=wrong&token=guess", 403, "bad_token", id="wrong-query"),
        pytest.param("/call_end?call_id=empty&token=", 401, "missing_token", id="empty-query-is-missing"),
        pytest.param(f"/call_end?call_id=prefix&token={SECRET}x", 403, "bad_token", id="secret-plus-suffix"),
        pytest.param("/guess/call_end?call_id=wrong-path", 403, "bad_token", id="wrong-path"),
        pytest.param(f"/{SECRET}/no_such_event?call_id=1", 404, "unknown_event", id="right-token-unknown-event"),
    ],
)
def test_wrong_or_missing_token_is_refused_and_nothing_is_stored(with_token, dsn, url, status, reason):
    response = with_token.get(url)
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason
    assert SECRET not in response.text
    assert with_token.get(f"/call_end?call_id=ok&token={SECRET}").status_code == 200
    with_token.__exit__(None, None, None)
    assert [r["call_id"] for r in stored(dsn, CALLS)] == ["ok"]


def test_token_in_query_or_path_is_accepted_and_never_stored(with_token, dsn):
    assert with_token.get(f"/call_end?token={SECRET}&call_id=q&pbx_extra=1").status_code == 200
    assert with_token.get(f"/{SECRET}/call_end?call_id=p").status_code == 200
    assert with_token.post(f"/call_end?token={SECRET}", data={"call_id": "f", "token": SECRET}).status_code == 200
    with_token.__exit__(None, None, None)
    rows = stored(dsn, CALLS)
    assert [r["call_id"] for r in rows] == ["f", "p", "q"]
    assert rows[2]["extra"] == {"pbx_extra": "1"}
    assert all("token" not in r["extra"] and SECRET not in str(r["extra"]) for r in rows)


@pytest.mark.parametrize(
    "kwargs, status",
    [
        pytest.param({"method": "GET", "url": f"/call_end?token={SECRET}&call_id=1&pad=" + "x" * 9000}, 414, id="url"),
        pytest.param({"method": "GET", "url": f"/call_end?token={SECRET}&call_id=1&"
                      + "&".join(f"p{i}=1" for i in range(150))}, 413, id="params"),
        pytest.param({"method": "POST", "url": f"/call_end?token={SECRET}", "content": "call_id=1&pad=" + "x" * 70000,
                      "headers": {"content-type": "application/x-www-form-urlencoded"}}, 413, id="body"),
        pytest.param({"method": "POST", "url": f"/call_end?token={SECRET}", "content": "call_id=1&"
                      + "&".join(f"p{i}=1" for i in range(150)),
                      "headers": {"content-type": "application/x-www-form-urlencoded"}}, 413, id="body-params"),
    ],
)
def test_oversized_requests_are_refused_and_nothing_is_stored(with_token, dsn, kwargs, status):
    assert with_token.request(**kwargs).status_code == status
    with_token.__exit__(None, None, None)
    assert stored(dsn, CALLS) == []


def test_allow_list_token_and_redaction_in_a_real_process(tmp_path: Path, migrated_copy):
    """One served process: the allow-list by source address, and the secret absent from its log."""
    proc = ServeProcess(migrated_copy(tmp_path / "chdata"), "--access-log", "--allow-cidrs", "127.0.0.2/32, 10.0.0.0/8",
                        env={"PBX_TOKEN": SECRET})
    allowed = httpx.Client(base_url=proc.url,
                           transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    other = httpx.Client(base_url=proc.url)  # from 127.0.0.1: not on the list
    try:
        assert allowed.get(f"/call_end?call_id=allowed&token={SECRET}").status_code == 200
        assert allowed.get(f"/{SECRET}/call_end?call_id=allowed-path").status_code == 200
        assert allowed.get("/call_end?call_id=wrong&token=nope").status_code == 403
        denied = other.get(f"/call_end?call_id=denied&token={SECRET}")
        assert denied.status_code == 403 and denied.json()["reason"] == "client_not_allowed"
        # No trusted proxy configured: a forged X-Forwarded-For changes nothing.
        forged = other.get(f"/call_end?call_id=forged&token={SECRET}", headers={"x-forwarded-for": "10.1.1.1"})
        assert forged.status_code == 403
        # Everything before the last segment is the path's token: these carry the secret
        # plus more, or name no webhook; the log and the answers must not show it.
        assert allowed.get(f"/{SECRET}/nope/deeper").status_code == 403
        unknown = allowed.get(f"/{SECRET}/nope")
        assert unknown.status_code == 404 and SECRET not in unknown.text
    finally:
        allowed.close()
        other.close()
    assert proc.stop() == 0
    assert [r["call_id"] for r in stored(proc.dsn, CALLS)] == ["allowed", "allowed-path"]
    log = proc.log()
    assert "GET /call_end" in log, "the access log is on"
    assert SECRET not in log


def test_bad_allow_list_names_the_variable():
    with pytest.raises(ConfigError, match="PBX_ALLOW_CIDRS.*'10.0.0.300/8'"):
        Settings.from_env({"PBX_ALLOW_CIDRS": "10.0.0.0/8,10.0.0.300/8"})


def test_token_is_not_in_the_settings_repr():
    assert SECRET not in repr(Settings(token=SECRET))
