"""The read-only checks on the engine's own parse, the users, the owner's file."""

from __future__ import annotations

from pathlib import Path

import chdb
import pytest

from ingest.querying import access
from ingest.querying.errors import ClickHouseError

LIMITS = access.Limits(max_execution_time=60, max_memory_usage=1 << 30, max_threads=4, nice=10)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    conn = chdb.connect(str(tmp_path_factory.mktemp("access") / "engine"))
    yield conn
    conn.close()


def ast(engine, sql: str) -> str:
    return bytes(engine.query(f"EXPLAIN AST {sql}", "TabSeparatedRaw").bytes()).decode()


def formatted(engine, sql: str) -> str:
    escaped = sql.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    return bytes(engine.query("SELECT formatQuery({q:String})", "TabSeparatedRaw", params={"q": escaped}).bytes()).decode()


@pytest.mark.parametrize("sql", [
    pytest.param("SELECT * FROM url('http://x/')", id="url"),
    pytest.param("SELECT 1 FROM numbers(1) AS n JOIN s3('http://x/a.csv') AS s ON 1", id="s3 in a join"),
    pytest.param("SELECT * FROM (SELECT * FROM remoteSecure('h', system.one))", id="remoteSecure in a subquery"),
    pytest.param("SELECT 1 WHERE 1 IN (SELECT * FROM postgresql('h', 'd', 't', 'u', 'p'))", id="postgresql in IN"),
    pytest.param("WITH x AS (SELECT * FROM FILE('/etc/passwd')) SELECT * FROM x", id="FILE upper case in a CTE"),
    pytest.param("SELECT * FROM view(SELECT * FROM executable('a', 'TSV', 'x String'))", id="executable in view"),
    pytest.param("SELECT file('/etc/hostname')", id="file function"),
    pytest.param("SELECT aiGenerate('x')", id="AI function"),
])
def test_the_tree_check_finds_what_reaches_outside_at_any_depth(engine, sql):
    with pytest.raises(ClickHouseError) as refused:
        access.check_tree(ast(engine, sql))
    assert refused.value.code in (446, 497)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM numbers(10)", "SELECT * FROM system.tables", "SELECT * FROM merge('system', '^one$')",
    "SELECT * FROM view(SELECT 1)", "SELECT * FROM generateRandom('a UInt8') LIMIT 1",
    "SELECT * FROM format(JSONEachRow, '{\"a\": 1}')", "SELECT filename FROM numbers(1) AS filename",
    "SELECT * FROM pbx.repeat_calls(window_s = 86400)",  # a parameterized view (the FCR panel)
    "SELECT * FROM pbx.repeat_calls(window_s = toUInt32(decodeURLComponent(substring('v=3600', 3))))",
])
def test_the_tree_check_lets_the_engines_own_tables_through(engine, sql):
    access.check_tree(ast(engine, sql))


def test_the_canonical_text_names_format_outfile_and_settings(engine):
    shape = access.query_shape(formatted(engine, "select 1 into outfile 'x' format JSON settings max_threads=2"))
    assert shape.format == "JSON" and shape.into_outfile and ("max_threads", "2") in shape.settings
    nested = access.query_shape(formatted(engine, "SELECT * FROM (SELECT 1 SETTINGS max_execution_time = 900)"))
    assert ("max_execution_time", "900") in nested.settings and nested.format is None
    literal = access.query_shape(formatted(engine, "SELECT 'FORMAT JSON\nINTO OUTFILE x' AS s"))
    assert literal.format is None and not literal.into_outfile
    assert access.query_shape(formatted(engine, "SET max_threads = 1, readonly = 2")).settings == (
        ("max_threads", "1"), ("readonly", "2"))


@pytest.mark.parametrize("changes, allowed", [
    ([("max_execution_time", "30")], True),
    ([("max_execution_time", "61")], False),
    ([("max_execution_time", "0")], False),
    ([("max_memory_usage", str(2 << 30))], False),
    ([("max_threads", "2")], True),
    ([("max_threads", "8")], False),
    ([("os_thread_priority", "19")], True),
    ([("os_thread_priority", "0")], False),
    ([("dialect", "'kusto'")], False),
    ([("output_format_schema", "'/tmp/x'")], False),
])
def test_settings_constraints(changes, allowed):
    if allowed:
        access.check_settings(changes, LIMITS)
    else:
        with pytest.raises(ClickHouseError) as refused:
            access.check_settings(changes, LIMITS)
        assert refused.value.code == 452


def test_users_and_the_owners_key_only_from_loopback():
    users = access.Users("grafana", "pw", "owner-key")
    assert users.authenticate("grafana", "pw", "10.0.0.5") == access.User("grafana")
    assert users.authenticate(access.OWNER, "owner-key", "127.0.0.1").owner
    assert users.authenticate(access.OWNER, "owner-key", "::ffff:127.0.0.1").owner
    for name, password, peer in [("grafana", "", "127.0.0.1"), (None, "", "127.0.0.1"),
                                 (access.OWNER, "owner-key", "10.0.0.5"), (access.OWNER, "", "127.0.0.1")]:
        with pytest.raises(ClickHouseError) as refused:
            users.authenticate(name, password, peer)
        assert refused.value.code == 516 and refused.value.status == 403


def test_the_owner_file_is_private_and_removed_only_by_its_writer(tmp_path: Path):
    owner = access.OwnerFile(tmp_path, "http://127.0.0.1:8123")
    owner.write()
    assert (tmp_path / "service.json").stat().st_mode & 0o777 == 0o600
    assert access.OwnerFile.read(tmp_path) | {"pid": 0} == {"url": "http://127.0.0.1:8123", "user": access.OWNER,
                                                             "key": owner.key, "pid": 0}
    newer = access.OwnerFile(tmp_path, "http://127.0.0.1:9000")
    newer.write()
    owner.remove()  # a later service's file stays
    assert access.OwnerFile.read(tmp_path)["url"] == "http://127.0.0.1:9000"
    newer.remove()
    assert access.OwnerFile.read(tmp_path) is None
