"""ClickHouse's HTTP interface of a running ``serve`` on the embedded engine, with webhooks
flowing: real clients (clickhouse-connect, curl, clickhouse-go's Native framing) get typed
answers; the read-only rules hold per forbidden class; settings stay in their request."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from tests.e2e.querying.native_reader import read_blocks
from ingest.testing import ServeProcess, spec_example_urls

from ingest.querying.access import OWNER, OwnerFile


@pytest.fixture(scope="module")
def service(tmp_path_factory, migrated_copy) -> ServeProcess:
    proc = ServeProcess(migrated_copy(tmp_path_factory.mktemp("query") / "chdata"))
    for url in spec_example_urls():
        assert httpx.get(url.replace("http://server", proc.url)).status_code == 200
    deadline = time.monotonic() + 30
    while post(proc, "SELECT count() FROM pbx.events").text != f"{len(spec_example_urls())}\n":
        assert time.monotonic() < deadline, "the webhooks were not stored"
        time.sleep(0.1)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(service):
    c = clickhouse_connect.get_client(host="127.0.0.1", port=service.query_port, username="default", password="")
    yield c
    c.close()


def post(service, sql: str, **params) -> httpx.Response:
    return httpx.post(service.query_url, params=params, content=sql, timeout=30)


def test_ping_and_root_answer_ok(service):
    assert httpx.get(f"{service.query_url}/ping").text == "Ok.\n"
    assert httpx.get(f"{service.query_url}/").text == "Ok.\n"


def test_clickhouse_connect_reads_typed_results_while_webhooks_flow(service, client):
    assert client.protocol_version == 54405  # its probe of the Native layout with block info passed
    stop = threading.Event()

    def send_webhooks():
        urls = spec_example_urls()
        while not stop.is_set():
            for url in urls:
                httpx.get(url.replace("http://server", service.url))

    sender = threading.Thread(target=send_webhooks)
    sender.start()
    try:
        result = client.query("SELECT event, count() AS n, max(received_at) AS last FROM pbx.events "
                              "WHERE event != {e:String} GROUP BY event ORDER BY event", parameters={"e": "none"})
        assert result.column_names == ("event", "n", "last")
        event, n, last = result.result_rows[0]
        assert event and n >= 1 and last.year >= 2024
        typed = client.query("SELECT toDecimal64(1.5, 2) AS d, [1, 2] AS a, map('k', 1) AS m, "
                             "toDateTime('2024-01-02 03:04:05', 'UTC') AS t, NULL::Nullable(UInt8) AS n").result_rows[0]
        assert str(typed[0]) == "1.50" and typed[1] == [1, 2] and typed[2] == {"k": 1} and typed[4] is None
    finally:
        stop.set()
        sender.join()


def test_curl_gets_tab_separated_and_gzip_when_asked(service):
    plain = subprocess.run(["curl", "-sS", f"{service.query_url}/?query=SELECT%20number%20FROM%20numbers(3)"],
                           capture_output=True, text=True, check=True)
    assert plain.stdout == "0\n1\n2\n"
    zipped = subprocess.run(["curl", "-sS", "--compressed", "-H", "Accept-Encoding: gzip", "-D", "-", "--data-binary",
                             "SELECT 'x' FORMAT JSONEachRow", f"{service.query_url}/?enable_http_compression=1"],
                            capture_output=True, text=True, check=True)
    assert "content-encoding: gzip" in zipped.stdout.lower()
    assert zipped.stdout.rstrip().endswith('{"\'x\'":"x"}')


def test_query_in_the_url_and_body_is_the_url_part_a_line_break_and_the_body(service):
    r = httpx.post(service.query_url, params={"query": "SELECT 1 AS a"}, content="FORMAT JSONEachRow")
    assert r.text == '{"a":1}\n'
    assert r.headers["x-clickhouse-format"] == "JSONEachRow"
    assert r.headers["content-type"].startswith("application/x-ndjson")
    summary = json.loads(r.headers["x-clickhouse-summary"])
    assert set(summary) >= {"read_rows", "read_bytes", "written_rows", "result_rows", "elapsed_ns"}
    assert r.headers["x-clickhouse-timezone"] and r.headers["x-clickhouse-query-id"]
    assert post(service, "SELECT 1", query_id="mine").headers["x-clickhouse-query-id"] == "mine"


def test_default_format_database_and_params(service):
    r = post(service, "SELECT count() > 0 AS any FROM events WHERE event != {e:String}", database="pbx",
             default_format="JSONCompact", param_e="none")
    assert json.loads(r.text)["data"] == [[True]]


def test_errors_carry_the_code_in_body_header_and_status(service):
    r = post(service, "SELECT * FROM pbx.nope")
    assert r.status_code == 404 and r.headers["x-clickhouse-exception-code"] == "60"
    assert r.text.startswith("Code: 60. DB::Exception:") and "(UNKNOWN_TABLE)" in r.text
    syntax = post(service, "SELEC 1")
    assert syntax.status_code == 400 and syntax.headers["x-clickhouse-exception-code"] == "62"


@pytest.mark.parametrize("how", ["basic", "headers", "params"])
def test_wrong_credentials_get_authentication_failed(service, how):
    kwargs: dict = {}
    params = {"query": "SELECT 1"}
    if how == "basic":
        kwargs["auth"] = ("default", "wrong")
    elif how == "headers":
        kwargs["headers"] = {"X-ClickHouse-User": "nobody", "X-ClickHouse-Key": ""}
    else:
        params |= {"user": "default", "password": "wrong"}
    r = httpx.get(service.query_url, params=params, **kwargs)
    assert r.status_code == 403 and r.headers["x-clickhouse-exception-code"] == "516"
    assert "(AUTHENTICATION_FAILED)" in r.text


def test_clickhouse_connect_parses_errors(client):
    with pytest.raises(DatabaseError) as refused:
        client.command("INSERT INTO pbx.queue_settings (queue) VALUES ('q')")
    assert refused.value.code == 164


FORBIDDEN = [
    pytest.param("INSERT INTO pbx.events (event) VALUES ('x')", 164, id="INSERT"),
    pytest.param("CREATE TABLE pbx.t (a UInt8) ENGINE = Memory", 164, id="DDL"),
    pytest.param("CREATE TEMPORARY TABLE t (a UInt8)", 164, id="temporary table"),
    pytest.param("DROP TABLE pbx.events", 164, id="DROP"),
    pytest.param("SYSTEM FLUSH LOGS", 164, id="SYSTEM"),
    pytest.param("KILL QUERY WHERE 1", 164, id="KILL"),
    pytest.param("SELECT 1 INTO OUTFILE '/tmp/pbx-outfile'", 358, id="INTO OUTFILE"),
    pytest.param("SELECT * FROM file('/etc/passwd', 'LineAsString')", 497, id="file()"),
    pytest.param("SELECT * FROM (SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString'))", 497, id="url() in subquery"),
    pytest.param("SELECT * FROM s3('http://127.0.0.1:1/x.csv')", 497, id="s3()"),
    pytest.param("SELECT * FROM remote('127.0.0.1:9000', system.one)", 497, id="remote()"),
    pytest.param("SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')", 497, id="mysql()"),
    pytest.param("SELECT * FROM postgresql('127.0.0.1:1', 'd', 't', 'u', 'p')", 497, id="postgresql()"),
    pytest.param("SELECT * FROM executable('x.sh', 'TSV', 'a String')", 497, id="executable()"),
    pytest.param("WITH t AS (SELECT * FROM python('x')) SELECT * FROM t", 497, id="python() in a CTE"),
    pytest.param("SELECT file('/etc/hostname')", 446, id="file function"),
    pytest.param("DESCRIBE TABLE file('/etc/passwd')", 497, id="DESCRIBE a table function"),
    pytest.param("EXPLAIN SELECT * FROM file('/etc/passwd')", 497, id="EXPLAIN a table function"),
    pytest.param("SELECT 1; DROP TABLE pbx.events", 62, id="multi-statement"),
    pytest.param("SELECT 1 SETTINGS max_execution_time = 100000", 452, id="raising max_execution_time in SQL"),
    pytest.param("SELECT 1 SETTINGS readonly = 0", 164, id="lowering readonly in SQL"),
    pytest.param("SET dialect = 'kusto'", 452, id="changing the dialect"),
]


@pytest.mark.parametrize("sql, code", FORBIDDEN)
def test_the_read_only_user_may_not(service, sql, code):
    r = post(service, sql)
    assert r.headers.get("x-clickhouse-exception-code") == str(code), r.text
    assert not Path("/tmp/pbx-outfile").exists()


def test_the_read_only_user_may(service):
    for sql in ["SHOW DATABASES", "SHOW TABLES FROM pbx", "DESCRIBE TABLE pbx.events", "EXISTS pbx.events",
                "EXPLAIN SELECT 1", "SET max_threads = 1", "SELECT * FROM numbers(2)",
                "SELECT count() FROM system.tables", "SELECT 1 SETTINGS max_execution_time = 5"]:
        r = post(service, sql)
        assert r.status_code == 200, (sql, r.text)


def test_url_settings_beyond_the_limits_are_refused(service):
    r = post(service, "SELECT 1", max_execution_time="100000")
    assert r.status_code == 500 and r.headers["x-clickhouse-exception-code"] == "452"
    assert post(service, "SELECT 1", readonly="0").headers["x-clickhouse-exception-code"] == "164"


def test_settings_do_not_leak_into_another_request(service):
    default = post(service, "SELECT getSetting('max_threads')").text
    assert post(service, "SELECT getSetting('max_threads')", max_threads="1").text == "1\n"
    assert post(service, "SET max_threads = 1").status_code == 200
    assert post(service, "SELECT getSetting('max_threads')").text == default
    # In a session SET stays, URL settings stay in their request.
    assert post(service, "SET max_block_size = 1234", session_id="s1").status_code == 200
    assert post(service, "SELECT getSetting('max_threads')", session_id="s1", max_threads="1").text == "1\n"
    assert post(service, "SELECT getSetting('max_block_size'), getSetting('max_threads')",
                session_id="s1").text == f"1234\t{default.strip()}\n"
    assert post(service, "SELECT getSetting('max_block_size')").text != "1234\n"


GRAFANA = {"default_format": "Native", "client_protocol_version": "54460"}


def grafana(service, sql: str) -> list[dict]:
    """A query as Grafana's plugin sends it over HTTP (clickhouse-go: POST, Native, 54460, gzip)."""
    r = httpx.post(service.query_url, params=GRAFANA, content=sql, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    return read_blocks(r.content, 54460)


def test_grafana_start_up_queries_answer_in_the_54460_layout(service):
    hello = grafana(service, "SELECT displayName(), version(), revision(), timezone()")[0]
    assert hello["types"] == ["String", "String", "UInt32", "String"]
    assert hello["columns"][1][0].count(".") == 3 and hello["columns"][2][0] > 54454
    one = grafana(service, "SELECT 1")[0]
    assert one["names"] == ["1"] and one["columns"] == [[1]]
    assert grafana(service, "SELECT version()")[0]["rows"] == 1


def test_grafana_schema_browsing_answers_in_the_54460_layout(service):
    databases = [v for b in grafana(service, "SHOW DATABASES") for v in b["columns"][0]]
    assert "pbx" in databases
    tables = [v for b in grafana(service, 'SHOW TABLES FROM "pbx"') for v in b["columns"][0]]
    assert "events" in tables
    described = grafana(service, 'DESC TABLE "pbx"."events"')[0]
    assert described["names"][:2] == ["name", "type"] and "call_id" in described["columns"][0]
    columns = grafana(service, "SELECT name, type, table FROM system.columns WHERE database IN ('pbx') "
                               "AND table = 'events'")[0]
    assert "received_at" in columns["columns"][0]
    series = grafana(service, "SELECT toStartOfInterval(toDateTime(received_at), INTERVAL 60 second) AS time, count() "
                              "FROM pbx.events GROUP BY time ORDER BY time")
    assert series[0]["types"][0] == "DateTime('UTC')"


def test_a_type_without_native_layout_is_refused_with_a_way_around(service):
    r = httpx.post(service.query_url, params=GRAFANA, content="SELECT 1::Dynamic AS d")
    assert r.headers["x-clickhouse-exception-code"] == "48"
    assert "Dynamic" in r.text and "JSONEachRow" in r.text


def test_an_error_after_the_body_started_is_framed_with_the_exception_tag(service):
    r = post(service, "SELECT repeat('x', 100), throwIf(number = 30000) FROM numbers(40000) SETTINGS max_block_size = 100")
    assert r.status_code == 200  # the first MiB had gone out
    tag = r.headers["x-clickhouse-exception-tag"]
    assert r.content.endswith(b" " + tag.encode() + b"\r\n__exception__\r\n")
    assert b"\r\n__exception__\r\n" + tag.encode() + b"\r\nCode: 395." in r.content


def test_the_owner_writes_with_the_key_only_the_local_owner_can_read(service):
    data_dir = Path(service.dsn.removeprefix("chdb://"))
    owner = OwnerFile.read(data_dir)
    assert owner["url"] == service.query_url and owner["user"] == OWNER
    assert (data_dir / OwnerFile.NAME).stat().st_mode & 0o077 == 0
    auth = {"X-ClickHouse-User": owner["user"], "X-ClickHouse-Key": owner["key"]}
    r = httpx.post(service.query_url, headers=auth, content="CREATE TABLE IF NOT EXISTS default.owned (a UInt8) "
                                                            "ENGINE = MergeTree ORDER BY a")
    assert r.status_code == 200, r.text
    r = httpx.post(service.query_url, headers=auth, content="INSERT INTO default.owned VALUES (7)")
    assert r.status_code == 200, r.text
    assert post(service, "SELECT a FROM default.owned").text == "7\n"
    # Data in the body after the query in the URL (as `import` will hand rows over, issue 12).
    r = httpx.post(service.query_url, headers=auth, params={"query": "INSERT INTO default.owned FORMAT TSV"},
                   content="9\n10\n")
    assert r.status_code == 200, r.text
    assert json.loads(r.headers["x-clickhouse-summary"])["written_rows"] == "2"
    assert post(service, "SELECT count() FROM default.owned").text == "3\n"
    # GET is read-only, for the owner too (ClickHouse's rule).
    r = httpx.get(service.query_url, headers=auth, params={"query": "INSERT INTO default.owned VALUES (8)"})
    assert r.headers["x-clickhouse-exception-code"] == "164"
    wrong = httpx.post(service.query_url, headers={**auth, "X-ClickHouse-Key": "guess"}, content="SELECT 1")
    assert wrong.headers["x-clickhouse-exception-code"] == "516"


def owner_client(service):
    owner = OwnerFile.read(Path(service.dsn.removeprefix("chdb://")))
    return clickhouse_connect.get_client(host="127.0.0.1", port=service.query_port, username=owner["user"],
                                         password=owner["key"], compress=False, autogenerate_session_id=False)


def test_the_owner_inserts_typed_rows_with_clickhouse_connect_in_native(service):
    """clickhouse-connect sends ``INSERT ... FORMAT Native`` and the binary block in one body; 32
    columns make the block start with a space (0x20), which is data, not the query's whitespace."""
    owner = owner_client(service)
    columns = ", ".join(f"c{i} UInt8" for i in range(29))
    owner.command(f"CREATE TABLE IF NOT EXISTS default.typed (id UUID, at DateTime64(3, 'UTC'), "
                  f"m Map(String, String), {columns}) ENGINE = MergeTree ORDER BY at "
                  "SETTINGS non_replicated_deduplication_window = 100")
    rows = [[uuid.UUID(int=i), dt.datetime(2026, 11, 2, 8, 0, i, 1000, tzinfo=dt.UTC), {"k": f"v{i}"}, *[i] * 29]
            for i in range(3)]
    for _ in range(2):  # the same block under the same token: stored once
        owner.insert("default.typed", rows, settings={"insert_deduplication_token": "typed-1"})
    read = owner.query("SELECT id, at, m, c28 FROM default.typed ORDER BY at").result_rows
    assert read == [(r[0], r[1].replace(tzinfo=None), r[2], r[-1]) for r in rows]
    owner.close()


def test_an_insert_s_data_starts_after_its_format_s_line_as_clickhouse_parses_it(service):
    auth = owner_headers(service)
    httpx.post(service.query_url, headers=auth,
               content="CREATE TABLE IF NOT EXISTS default.lines (s String) ENGINE = MergeTree ORDER BY s")
    r = httpx.post(service.query_url, headers=auth, params={"query": "INSERT INTO default.lines FORMAT TSV  "},
                   content="  kept spaces\n")
    assert r.status_code == 200, r.text
    # A FORMAT inside a string is not the query's end: this runs as the query it is.
    r = httpx.post(service.query_url, headers=auth, content="INSERT INTO default.lines SELECT 'FORMAT TSV\nx'")
    assert r.status_code == 200, r.text
    assert post(service, "SELECT s FROM default.lines ORDER BY s FORMAT JSONEachRow").text.splitlines() == [
        '{"s":"  kept spaces"}', '{"s":"FORMAT TSV\\nx"}']
    broken = httpx.post(service.query_url, headers=auth, params={"query": "INSERT INTO default.lines FORMAT Native"},
                        content=b"\x01\x05garbage")
    assert broken.status_code != 200 and broken.headers["x-clickhouse-exception-code"] != "0"
    reader = httpx.post(service.query_url, params={"query": "INSERT INTO default.lines FORMAT TSV"}, content="no\n")
    assert reader.headers["x-clickhouse-exception-code"] == "164"
    assert post(service, "SELECT count() FROM default.lines").text == "2\n"


def owner_headers(service) -> dict[str, str]:
    owner = OwnerFile.read(Path(service.dsn.removeprefix("chdb://")))
    return {"X-ClickHouse-User": owner["user"], "X-ClickHouse-Key": owner["key"]}


def test_gzip_request_bodies_are_read(service):
    r = httpx.post(service.query_url, content=gzip.compress(b"SELECT 42"), headers={"Content-Encoding": "gzip"})
    assert r.text == "42\n"


def test_a_heavy_query_does_not_hold_back_webhooks(service):
    heavy: dict = {}

    def run_heavy():  # a query that keeps a CPU busy for 4 s, then answers what it has
        started = time.monotonic()
        heavy["response"] = post(service, "SELECT count() FROM numbers(1000000000000) "
                                          "SETTINGS max_execution_time = 4, timeout_overflow_mode = 'break'")
        heavy["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run_heavy)
    thread.start()
    time.sleep(0.5)
    url = spec_example_urls()[0].replace("http://server", service.url)
    slowest, sent, until = 0.0, 0, time.monotonic() + 1.5
    while time.monotonic() < until:
        t = time.monotonic()
        assert httpx.get(url).status_code == 200
        slowest, sent = max(slowest, time.monotonic() - t), sent + 1
    query_still_running = "seconds" not in heavy
    thread.join()
    assert heavy["response"].status_code == 200, heavy["response"].text
    assert query_still_running and sent > 0
    assert slowest < 1.0, f"a webhook waited {slowest:.2f} s behind a query"
