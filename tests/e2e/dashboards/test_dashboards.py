"""The provisioned Grafana dashboards, tested without Grafana.

Three layers:

* the macro and template-variable expansion of ``tests/grafana_sim.py``,
  pinned to what the ClickHouse plugin and Grafana produce;
* each dashboard's structure, as Grafana's provisioning would load it;
* every panel's SQL, expanded as Grafana would, run on the embedded engine
  over a simulated day, with the result shape its visualization needs.

Panels are discovered from the JSON: a new panel is covered with no new test.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver.client import Client

from ingest.storing import clickhouse
from ingest.testing import refresh_views
from tests.e2e.dashboards import grafana_sim as gs

REPO = Path(__file__).resolve().parents[3]
DASHBOARDS = REPO / "dashboards"
PROVISIONING = DASHBOARDS / "provisioning"

EXPECTED_UIDS = {"pbx-queue-sla", "pbx-abandonment", "pbx-agents", "pbx-audit", "pbx-wallboard", "pbx-calls",
                 "pbx-staffing"}
#: Views panels may read (issue 4's contract); raw events only where no view has the field.
CONTRACT_VIEWS = {
    "queue_calls", "queue_stats_15m", "agent_stats_15m", "spy_sessions", "recording_audit",
    "queue_now", "agents_now", "queue_settings",
    "queue_calls_since",  # queue_calls from a start time (docs/metrics.md)
    "calls", "repeat_calls", "staffing_15m", "agent_states_15m",  # issue 14's contract
    "repeat_calls_between",  # repeat_calls of a time range (docs/metrics.md)
    "agent_time_15m", "agent_calls_15m",  # agent_stats_15m in halves (sql/0239)
    "staffing_between",  # staffing_15m of a time range (docs/metrics.md)
}  # fmt: skip
RAW_EVENTS_ALLOWED = {"pbx-abandonment/Abandoned calls"}  # caller_num is in no view

# 2026-11-02 00:00:00 .. 2026-11-03 00:00:00 UTC
DAY = gs.TimeRange(1793577600000, 1793664000000)


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: One data source file per kind of engine; a deployment mounts exactly one folder (docs/dashboards.md).
DATASOURCE_FILES = {kind: PROVISIONING / "datasources" / kind / "pbx.yaml" for kind in ("embedded", "server")}


def _datasource(kind: str) -> dict[str, Any]:
    config = yaml.safe_load(DATASOURCE_FILES[kind].read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    return source


def _datasource_uid() -> str:
    uids = {_datasource(kind)["uid"] for kind in DATASOURCE_FILES}
    assert len(uids) == 1, "both data source files must carry the uid the panels reference"
    return uids.pop()


ALL_DASHBOARDS = gs.load_dashboards()
ALL_QUERIES = gs.panel_queries(ALL_DASHBOARDS)


# -- macros and variables: pinned to the plugin's and Grafana's output --------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param("WHERE $__timeFilter(t)", "WHERE t >= toDateTime(1793577600) AND t <= toDateTime(1793664000)",
                     id="timeFilter"),
        pytest.param("WHERE $__timeFilter_ms(t)",
                     "WHERE t >= fromUnixTimestamp64Milli(1793577600000) AND t <= fromUnixTimestamp64Milli(1793664000000)",
                     id="timeFilter_ms"),
        pytest.param("$__fromTime, $__toTime", "toDateTime(1793577600), toDateTime(1793664000)", id="fromTime-toTime"),
        pytest.param("$__fromTime_ms $__toTime_ms",
                     "fromUnixTimestamp64Milli(1793577600000) fromUnixTimestamp64Milli(1793664000000)", id="fromTime_ms"),
        pytest.param("$__dateFilter(d)", "d >= toDate('2026-11-02') AND d <= toDate('2026-11-03')", id="dateFilter"),
        pytest.param("$__dateTimeFilter(d, t)",
                     "(d >= toDate('2026-11-02') AND d <= toDate('2026-11-03')) AND "
                     "(t >= toDateTime(1793577600) AND t <= toDateTime(1793664000))", id="dateTimeFilter"),
        pytest.param("$__dt(d,t)",
                     "(d >= toDate('2026-11-02') AND d <= toDate('2026-11-03')) AND "
                     "(t >= toDateTime(1793577600) AND t <= toDateTime(1793664000))", id="dt"),
        pytest.param("$__timeInterval(t)", "toStartOfInterval(toDateTime(t), INTERVAL 900 second)", id="timeInterval"),
        pytest.param("$__timeInterval_ms(t)", "toStartOfInterval(toDateTime64(t, 3), INTERVAL 900000 millisecond)",
                     id="timeInterval_ms"),
        pytest.param("x / $__interval_s", "x / 900", id="interval_s"),
        pytest.param("$__timeFilter(coalesce(a, b))",
                     "coalesce(a, b) >= toDateTime(1793577600) AND coalesce(a, b) <= toDateTime(1793664000)",
                     id="argument-with-comma-inside-brackets"),
        pytest.param("$__fromTime AND f(x) > 1", "toDateTime(1793577600) AND f(x) > 1",
                     id="no-arguments-unless-bracket-follows-directly"),
        pytest.param("$__fromTime_msX", "$__fromTime_msX", id="longer-names-are-not-macros"),
        # Since plugin 4.19 (macropro): ClickHouse functions, not the SDK's RFC 3339 strings.
        pytest.param("$__timeFrom(t)", "t >= toDateTime(1793577600)", id="timeFrom"),
        pytest.param("$__timeTo(t)", "t <= toDateTime(1793664000)", id="timeTo"),
        pytest.param("$__timeGroup(t, 15m)", "toStartOfInterval(toDateTime(t), INTERVAL 900 second)", id="timeGroup"),
        # Comments become spaces of the same length: a macro in a comment is not expanded.
        pytest.param("a -- $__timeFilter(\nb", "a " + " " * 17 + "\nb", id="line-comment-blanked"),
        pytest.param("a /* $__fromTime */ b", "a " + " " * 17 + " b", id="block-comment-blanked"),
        # The engine knows no SQL literals: a macro inside quotes is expanded all the same.
        pytest.param("'$__fromTime'", "'toDateTime(1793577600)'", id="expanded-inside-a-string-literal"),
        pytest.param("$__timeFilter($__fromTime)",
                     "toDateTime(1793577600) >= toDateTime(1793577600) AND toDateTime(1793577600) <= toDateTime(1793664000)",
                     id="nested-macro-first"),
        pytest.param("$__fromTime(x", "toDateTime(1793577600)(x", id="unclosed-bracket-is-not-arguments"),
        pytest.param("$__timeFilter(t) OR $__timeFilter(t)",
                     "t >= toDateTime(1793577600) AND t <= toDateTime(1793664000) OR "
                     "t >= toDateTime(1793577600) AND t <= toDateTime(1793664000)", id="repeated"),
    ],
)  # fmt: skip
def test_plugin_macros_expand_like_the_plugin(sql: str, expected: str):
    assert gs.interpolate_macros(sql, DAY, 900_000) == expected


MACRO_CASES = json.loads((REPO / "tests/fixtures/grafana/macro_cases.json").read_text())


def _rfc3339_ms(text: str) -> int:
    return round(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.parametrize("case", MACRO_CASES["plugin_macros"], ids=lambda c: c["name"])
def test_the_plugins_own_macro_test_cases(case: dict[str, Any]):
    """grafana/clickhouse-datasource v4.20.0 pkg/macros/macros_test.go, as data (the fixture says so)."""
    ctx = gs.MacroContext(gs.TimeRange(_rfc3339_ms(case["from"]), _rfc3339_ms(case["to"])), case["interval_ms"],
                          case.get("table", ""), case.get("column", ""))  # fmt: skip
    if case.get("error"):
        with pytest.raises(gs.MacroError):
            gs.expand_macros(case["sql"], gs.CLICKHOUSE_MACROS, ctx)
    else:
        assert gs.expand_macros(case["sql"], gs.CLICKHOUSE_MACROS, ctx) == case["expected"]


def _toy_macro(template: str) -> gs.MacroFunc:
    def handler(_ctx: gs.MacroContext, args: list[str]) -> str:
        if template.startswith("!error"):
            if len(args) != 2:
                raise gs.MacroError(f"need 2 args, got {len(args)}")
            return "ok"
        return template.format(*args)

    return handler


@pytest.mark.parametrize("case", MACRO_CASES["engine"], ids=lambda c: c["name"])
def test_macropros_own_engine_test_cases(case: dict[str, Any]):
    """grafana/macropro's parser tests, with their toy macros, as data."""
    macros = {name: _toy_macro(t) for name, t in MACRO_CASES["toy_macros"].items()}
    ctx = gs.MacroContext(DAY, 1000)
    if case.get("error"):
        with pytest.raises(gs.MacroError):
            gs.expand_macros(case["sql"], macros, ctx)
    else:
        assert gs.expand_macros(case["sql"], macros, ctx) == case["expected"]


@pytest.mark.parametrize("case", MACRO_CASES["strip_comments"], ids=lambda c: c["name"])
def test_macropros_own_comment_stripping_cases(case: dict[str, Any]):
    got = gs.strip_comments(case["sql"])
    assert got == case["expected"] and len(got) == len(case["sql"])


def test_interval_macros_never_go_below_one_second():
    assert gs.interpolate_macros("$__interval_s $__timeInterval(t)", DAY, 20) == (
        "1 toStartOfInterval(toDateTime(t), INTERVAL 1 second)"
    )
    assert gs.interpolate_macros("$__timeInterval_ms(t)", DAY, 0).endswith("INTERVAL 1 millisecond)")


@pytest.mark.parametrize(
    "sql",
    [pytest.param("$__timeFilter(a, b)", id="two"), pytest.param("$__dateTimeFilter(a)", id="one-of-two"),
     pytest.param("$__timeFilter(a", id="unclosed"), pytest.param("$__timeFilter()", id="empty-brackets-are-no-argument")],
)  # fmt: skip
def test_macros_with_wrong_arguments_are_errors_as_in_the_plugin(sql: str):
    with pytest.raises(gs.MacroError, match=r"\$__"):
        gs.interpolate_macros(sql, DAY, 1000)


QUEUE_ALL = gs.Variable("queue", [gs.ALL], ["billing", "helpdesk", "o'hara"], multi=True, include_all=True)
QUEUE_TWO = gs.Variable("queue", ["billing", "o'hara"], ["billing", "helpdesk", "o'hara"], multi=True, include_all=True)
QUEUE_ONE = gs.Variable("queue", ["helpdesk"], ["billing", "helpdesk"], multi=True, include_all=True)
AGENT_SINGLE = gs.Variable("agent", "jana", ["jana", "petr"])


@pytest.mark.parametrize(
    ("sql", "variables", "expected"),
    [
        pytest.param("IN ($queue)", [QUEUE_TWO], "IN ('billing','o'hara')", id="plugin-default-format-list"),
        pytest.param("= $agent", [AGENT_SINGLE], "= jana", id="plugin-default-format-single-is-raw"),
        pytest.param("IN (${queue})", [QUEUE_ONE], "IN ('helpdesk')", id="multi-with-one-value-is-a-list"),
        pytest.param("IN (${queue:singlequote})", [QUEUE_TWO], "IN ('billing','o\\'hara')", id="singlequote"),
        pytest.param("= ${agent:singlequote}", [AGENT_SINGLE], "= 'jana'", id="singlequote-single"),
        pytest.param("IN (${queue:sqlstring})", [QUEUE_TWO], "IN ('billing','o''hara')", id="sqlstring"),
        pytest.param("${queue:doublequote}", [QUEUE_TWO], '"billing","o\'hara"', id="doublequote"),
        pytest.param("'${queue:csv}'", [QUEUE_TWO], "'billing,o'hara'", id="csv"),
        pytest.param("${queue:pipe}", [QUEUE_TWO], "billing|o'hara", id="pipe"),
        pytest.param("${queue:raw}", [QUEUE_TWO], "billing,o'hara", id="raw"),
        pytest.param("${queue:text}", [QUEUE_ALL], "All", id="text-of-all"),
        pytest.param("${queue:json}", [QUEUE_TWO], '["billing","o\'hara"]', id="json"),
        pytest.param("${queue:customqueryparam:v}", [QUEUE_TWO], "v=billing&v=o%27hara", id="customqueryparam"),
        pytest.param("${queue:nosuchformat}", [QUEUE_TWO], "{billing,o'hara}", id="unknown-format-falls-back-to-glob"),
        pytest.param("IN (${queue:singlequote})", [QUEUE_ALL], "IN ('billing','helpdesk','o\\'hara')",
                     id="all-means-every-option"),
        pytest.param("IN ([[queue]])", [QUEUE_TWO], "IN ('billing','o'hara')", id="deprecated-brackets"),
        pytest.param("$nosuchvar ${nosuchvar:csv}", [QUEUE_TWO], "$nosuchvar ${nosuchvar:csv}", id="unknown-kept"),
        pytest.param("$__timeFilter(t) $__interval_s", [QUEUE_TWO], "$__timeFilter(t) $__interval_s",
                     id="macros-left-for-the-backend"),
    ],
)  # fmt: skip
def test_template_variables_interpolate_like_grafana(sql: str, variables: list[gs.Variable], expected: str):
    assert gs.replace_variables(sql, variables) == expected


FORMAT_CASES = json.loads((REPO / "tests/fixtures/grafana/variable_format_cases.json").read_text())


@pytest.mark.parametrize("case", FORMAT_CASES["cases"],
                         ids=lambda c: f"{c['format']}:{c['value']!r}:{':'.join(c.get('args', []))}")  # fmt: skip
def test_grafanas_own_variable_format_cases(case: dict[str, Any]):
    """@grafana/scenes formatRegistry.test.ts (what Grafana 12 dashboards run), as data."""
    fmt = ":".join([case["format"], *case.get("args", [])])
    got = gs.format_value(case["value"], fmt, case.get("text", ""), FORMAT_CASES["variable"])
    assert got == case["expected"]


def test_custom_all_value_is_inserted_unformatted():
    queue = gs.Variable("queue", [gs.ALL], ["a", "b"], multi=True, include_all=True, all_value=".*")
    assert gs.replace_variables("match(q, ${queue:singlequote})", [queue]) == "match(q, .*)"
    assert gs.replace_variables("${queue:text}", [queue]) == "All"


def test_builtin_interval_and_range_variables_come_from_the_request():
    sql = "$__interval $__interval_ms ${__from} $__to"
    assert gs.expand(sql, DAY, [], 900_000) == "15m 900000 1793577600000 1793664000000"


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        pytest.param(QUEUE_ALL, "WHERE 1=1 AND x", id="all-removes-the-condition"),
        pytest.param(gs.Variable("queue", "", [], include_all=True), "WHERE 1=1 AND x", id="empty-is-like-all"),
        pytest.param(QUEUE_TWO, "WHERE q IN ('billing','o\\'hara') AND x", id="selection-keeps-it"),
    ],
)  # fmt: skip
def test_conditional_all_is_applied_before_variables(variable: gs.Variable, expected: str):
    sql = "WHERE $__conditionalAll(q IN (${queue:singlequote}), $queue) AND x"
    assert gs.expand(sql, DAY, [variable]) == expected


def test_conditional_all_accepts_braced_variable_and_nested_brackets():
    sql = "$__conditionalAll(id IN (SELECT id FROM t WHERE q IN ($queue)), ${queue}) AND $__conditionalAll(a, $queue)"
    assert gs.apply_conditional_all(sql, [QUEUE_ALL]) == "1=1 AND 1=1"
    assert gs.apply_conditional_all(sql, [QUEUE_ONE]) == "id IN (SELECT id FROM t WHERE q IN ($queue)) AND a"


def test_conditional_all_with_wrong_arity_is_left_alone():
    sql = "$__conditionalAll(a, b, $queue)"
    assert gs.apply_conditional_all(sql, [QUEUE_ALL]) == sql


@pytest.mark.parametrize(
    ("range_ms", "min_interval", "expected_ms"),
    [
        pytest.param(86_400_000, None, 60_000, id="1d-1000px"),
        pytest.param(86_400_000, "15m", 900_000, id="1d-min-15m"),
        pytest.param(7 * 86_400_000, "15m", 900_000, id="7d-min-15m"),
        pytest.param(30 * 86_400_000, "15m", 1_800_000, id="30d"),
        pytest.param(3_600_000, None, 5000, id="1h"),
        pytest.param(400 * 86_400_000, None, 43_200_000, id="400d"),
    ],
)  # fmt: skip
def test_panel_interval_is_grafanas_rounded_interval(range_ms: int, min_interval: str | None, expected_ms: int):
    assert gs.calculate_interval_ms(gs.TimeRange(0, range_ms), 1000, min_interval) == expected_ms


# -- structure ---------------------------------------------------------------------------------------


def test_the_committed_json_is_what_the_generator_writes():
    rendered = _generator().render()
    on_disk = {p.name: p.read_text() for p in gs.DASHBOARD_DIR.glob("*.json")}
    assert on_disk == rendered, "dashboards/json is stale: run python dashboards/generate.py"


def test_the_dashboards_have_fixed_unique_uids():
    uids = [d["uid"] for d in ALL_DASHBOARDS]
    assert sorted(uids) == sorted(EXPECTED_UIDS)


@pytest.mark.parametrize("dash", ALL_DASHBOARDS, ids=lambda d: d["uid"])
def test_dashboard_structure_is_what_grafana_provisions(dash: dict[str, Any]):
    assert dash["title"] and 39 <= dash["schemaVersion"] <= 42
    assert dash["time"]["from"].startswith("now") and dash["time"]["to"].startswith("now")
    gs.default_time_range(dash, dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC))  # resolvable
    assert "id" not in dash or dash["id"] is None, "provisioned dashboards carry no numeric id"
    panels = list(gs.iter_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] >= 0 and g["y"] >= 0
        assert g["x"] + g["w"] <= 24, f"panel {p['id']} {p['title']!r} is wider than the 24-column grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {p['id']} overlap at {(x, y)}"
                cells[(x, y)] = p["id"]
        assert p["type"] in {"timeseries", "stat", "gauge", "bargauge", "table", "barchart", "piechart"}
        assert p["title"]


@pytest.mark.parametrize("dash", ALL_DASHBOARDS, ids=lambda d: d["uid"])
def test_variables_are_sql_queries_and_every_referenced_variable_exists(dash: dict[str, Any]):
    uid = _datasource_uid()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert "queue" in variables
    for v in variables.values():
        assert v["type"] in ("query", "custom", "textbox"), v["name"]
        if v["type"] == "query":
            assert v["datasource"]["uid"] == uid
            assert v["query"].lstrip().upper().startswith("SELECT")
            # Refreshed on time-range change exactly when the query depends on the period.
            assert v["refresh"] == (2 if "$__timeFilter" in v["query"] else 1)
            assert _views_read(v["query"]) <= CONTRACT_VIEWS
        if v["type"] == "textbox":
            assert v["current"]["value"] == "", f"{v['name']}: an empty text box (no filter) by default"
            assert v["name"] in TEXTBOX_SAMPLES, f"{v['name']}: give the panel tests a value to type"
            continue
        if v["type"] == "custom":
            values = [value for _text, value in gs.custom_options(v["query"])]
            assert values and [o["value"] for o in v["options"]] == values
        if v.get("multi"):
            assert v["includeAll"], f"{v['name']}: multi-select with All"
            assert v["current"]["value"] == [gs.ALL]
        else:  # one value of a fixed list, with a default (the FCR window)
            assert v["type"] == "custom" and not v["includeAll"]
            assert v["current"]["value"] in [value for _text, value in gs.custom_options(v["query"])]
    generator = _generator()
    for panel in gs.iter_panels(dash["panels"]):
        for target in panel.get("targets", []):
            for match in re.finditer(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)", target["rawSql"]):
                name = match.group(1) or match.group(2) or match.group(3)
                if not name.startswith("__"):
                    assert name in variables, f"{panel['title']!r} uses ${name}, not a variable of {dash['uid']}"
            # A value reaches the SQL only through the generator's selected() or one_value(): percent-encoded,
            # decoded by ClickHouse. The only other use of a variable is naming it to $__conditionalAll, which
            # the front end removes with the whole macro before any value is interpolated.
            rest = target["rawSql"]
            for name in variables:
                rest = (rest.replace(generator.selected(name), "").replace(generator.one_value(name), "")
                        .replace(f", ${name})", ")"))  # fmt: skip
            leftover = re.findall(r"\$\{?(?!__)\w+|\[\[\w+", rest)
            assert not leftover, f"{panel['title']!r}: {leftover} interpolates a value outside selected()"


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.id)
def test_targets_carry_editor_type_format_plugin_version_and_the_provisioned_datasource(query: gs.PanelQuery):
    uid = _datasource_uid()
    target, panel = query.target, query.panel
    assert target["editorType"] == "sql" and target["refId"] and target["pluginVersion"].startswith("4.")
    assert target["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": uid}
    assert panel["datasource"]["uid"] == uid
    assert target["format"] == (0 if panel["type"] == "timeseries" else 1)
    for name in re.findall(r"\$__(\w+)", query.sql):
        assert name in gs.MACROS or name == "conditionalAll", f"unknown macro $__{name}"
    if panel["type"] == "timeseries":
        assert re.search(r"\bAS time\b", query.sql) and re.search(r"ORDER BY time\b", query.sql)
        assert "$__timeInterval(" in query.sql and panel.get("interval")
    if not query.sql.lstrip().upper().startswith(("SELECT", "WITH")):
        pytest.fail("panel SQL must be one SELECT")
    # The Grafana user is readonly=1: a query may not change settings.
    assert not re.search(r"\bSETTINGS\b", query.sql, re.IGNORECASE), "no SETTINGS clause in panel SQL"


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.id)
def test_panels_read_the_documented_views(query: gs.PanelQuery):
    read = _views_read(query.sql)
    assert read, "reads no pbx view"
    allowed = CONTRACT_VIEWS | ({"events"} if f"{query.dashboard['uid']}/{query.panel['title']}" in RAW_EVENTS_ALLOWED else set())
    assert read <= allowed, f"reads {read - CONTRACT_VIEWS}"


def _views_read(sql: str) -> set[str]:
    return set(re.findall(r"\bpbx\.(\w+)", sql))


@pytest.mark.parametrize(("kind", "protocol", "port"), [("embedded", "http", 8123), ("server", "native", 9000)])
def test_datasource_provisioning_per_engine(kind: str, protocol: str, port: int):
    source = _datasource(kind)
    assert source["type"] == "grafana-clickhouse-datasource" and source["isDefault"]
    data = source["jsonData"]
    for key in ("host", "port", "protocol", "defaultDatabase", "username"):
        assert key in data, key
    assert (data["protocol"], data["port"], data["defaultDatabase"]) == (protocol, port, "pbx")
    assert source["secureJsonData"]["password"].startswith("${"), "password comes from the environment"
    # Plugin versions up to 4.13 panic on a number here (grafana/clickhouse-datasource#1559).
    for key in ("dialTimeout", "queryTimeout"):
        assert isinstance(data[key], str) and data[key].isdigit(), f"{key} must be a string of seconds"


def test_dashboard_provisioning():
    uid = _datasource_uid()
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "pbx.yaml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"]
    for dash in ALL_DASHBOARDS:
        for p in gs.iter_panels(dash["panels"]):
            assert p["datasource"]["uid"] == uid


# -- every panel's SQL on a simulated day ---------------------------------------------------------------

SIM_QUEUES = 3
SIM_AGENTS = 8


@pytest.fixture(scope="module")
def sim_engine(tmp_path_factory: pytest.TempPathFactory, migrated_copy) -> Iterator[tuple[Client, dt.datetime]]:
    """A day of simulated call-centre traffic, imported from its access log; ends now.

    The day ends at the wall clock so the live views (queue_now, agents_now)
    have calls waiting and agents logged in.
    """
    from ingest.backfill import importer
    from ingest.simulation import SimConfig, simulate, write_access_log

    tmp = tmp_path_factory.mktemp("sim")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = now.replace(minute=0, second=0) - dt.timedelta(hours=23)
    config = SimConfig(
        seed=5, start=start, hours=(now - start).total_seconds() / 3600, queues=SIM_QUEUES, agents=SIM_AGENTS,
        # A flat day: every hour (the test's wall-clock hour included) has traffic.
        end_mode="cut", calls_per_hour=40, hourly_profile=(1.0,) * 24,
    )
    log = tmp / "access.log"
    write_access_log(log, simulate(config).events)
    client = clickhouse.connect(f"chdb://{migrated_copy(tmp / 'chdata')}")
    stats = importer.import_files(client, [log])
    assert stats.imported > 5000
    refresh_views(client)  # (the views are complete without it: panels read stored rows, as in production)
    yield client, now
    client.close()


#: What the panel tests type into each text box (the newest value of the simulated day; "two":
#: the last four characters, a search for part of a value). Empty box = the "all" pick.
TEXTBOX_SAMPLES = {
    "caller": "SELECT caller_num FROM pbx.calls WHERE $__timeFilter(started_at) AND caller_num != '' "
              "ORDER BY started_at DESC, call_id LIMIT 1",
    "call": "SELECT call_id FROM pbx.calls WHERE $__timeFilter(started_at) ORDER BY started_at DESC, call_id LIMIT 1",
}  # fmt: skip


#: (engine, dashboard, pick, range) -> its variables: the simulated day is read-only, so each
#: dashboard's variable queries run once per pick, not once per panel.
#: (The client itself is the key, not its id(): a later client must not find a closed one's answers.)
_VARIABLES: dict[tuple[Client, str, str, gs.TimeRange], list[gs.Variable]] = {}


def _variables(client: Client, dash: dict[str, Any], pick: str, rng: gs.TimeRange) -> list[gs.Variable]:
    """The dashboard's variables with options from their own SQL; ``pick`` = all | one | two.

    All: the dashboard's defaults (All, the default window, empty text boxes). One / two: the first
    one or two options; a single-value list its first or last option; a text box a sample value.
    """
    key = (client, dash["uid"], pick, rng)
    if key not in _VARIABLES:
        _VARIABLES[key] = _variables_now(client, dash, pick, rng)
    return _VARIABLES[key]


def _variables_now(client: Client, dash: dict[str, Any], pick: str, rng: gs.TimeRange) -> list[gs.Variable]:
    out = []
    for v in dash["templating"]["list"]:
        options = gs.variable_options(v, rng, lambda sql: client.query(sql).result_rows)
        current: str | list[str] | None = None
        if v["type"] == "textbox":
            if pick != "all":
                (sample,) = client.query(gs.expand(TEXTBOX_SAMPLES[v["name"]], rng)).result_rows[0]
                current = sample if pick == "one" or v["name"] == "call" else sample[-4:]
        else:
            assert options, f"variable {v['name']} has no options on the simulated day"
            if pick != "all":
                current = options[: 1 if pick == "one" else 2] if v.get("multi") else options[0 if pick == "one" else -1]
        out.append(gs.dashboard_variable(v, options, current))
    return out


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_shape(panel: dict[str, Any], columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """The result a panel type can draw (README of the plugin; Grafana panel data requirements)."""
    kind = panel["type"]
    if kind == "timeseries":
        assert columns[0] == "time", "time series: first column is `time`"
        times = [r[0] for r in rows]
        assert all(isinstance(t, dt.datetime) for t in times)
        assert times == sorted(times), "time series: `time` ascending"
        # (time, label, value...) is long format; the plugin pivots it per label.
        values = [c for i, c in enumerate(columns[1:], 1) if not all(isinstance(r[i], str) for r in rows)]
        assert values, "time series: at least one numeric column"
        for r in rows:
            for i in range(1, len(columns)):
                assert _is_number(r[i]) or isinstance(r[i], str)
    elif kind in ("stat", "gauge"):
        assert len(rows) == 1, f"{kind}: one row"
        assert all(_is_number(v) for v in rows[0]), f"{kind}: numbers only, got {rows[0]}"
    elif kind in ("barchart", "piechart", "bargauge"):
        assert len(columns) >= 2
        assert all(isinstance(r[0], str) for r in rows), f"{kind}: first column is the label"
        assert all(_is_number(v) for r in rows for v in r[1:]), f"{kind}: the rest are numbers"
        if kind == "barchart":
            assert panel["options"]["xField"] == columns[0]
    elif kind == "table":
        assert columns and len(set(columns)) == len(columns)
    else:  # pragma: no cover - structure test forbids other types
        pytest.fail(f"no shape rule for {kind}")


# A panel whose result can legitimately be empty on a busy simulated day (rare events).
MAY_BE_EMPTY = {"Recordings never stopped or partial", "Overflow flows"}
# Live figures: nobody may be waiting at the very moment the test runs.
MAY_BE_ZERO = {"Calls waiting", "Longest wait"}


@pytest.mark.parametrize("pick", ["all", "one", "two"])
@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.id)
def test_panel_sql_runs_on_a_simulated_day_with_the_shape_its_panel_needs(
    sim_engine: tuple[Client, dt.datetime], query: gs.PanelQuery, pick: str
):
    client, now = sim_engine
    rng = gs.default_time_range(query.dashboard, now)
    variables = _variables(client, query.dashboard, pick, rng)
    sql = gs.expand(query.sql, rng, variables, query.interval_ms(rng))
    assert "$" not in sql.replace("'$", ""), f"unexpanded: {sql}"
    try:
        result = client.query(sql)
    except Exception as exc:
        pytest.fail(f"{query.id} {query.panel['title']!r} fails on ClickHouse: {exc}\n--- SQL sent ---\n{sql}")
    rows = result.result_rows
    # Column names from the query's own description: an empty result still has columns.
    described = client.query(f"DESCRIBE TABLE ({sql})").result_rows
    columns = [r[0] for r in described]
    check_shape(query.panel, columns, rows)
    for override in query.panel["fieldConfig"]["overrides"]:  # column options and data links
        assert override["matcher"]["options"] in columns, f"override for a column the panel does not have: {override}"
    if query.panel["type"] == "timeseries":
        assert re.match(r"DateTime(64)?\b", described[0][1]), f"time column is {described[0][1]}, not a DateTime"
    # "Today" just after midnight UTC holds minutes of data: judge only the shape then.
    young_day = query.dashboard["time"]["from"] == "now/d" and now.hour == 0
    if pick == "all" and query.panel["title"] not in MAY_BE_EMPTY and not young_day:
        assert rows, f"{query.panel['title']!r} is empty on a simulated day"
        if query.panel["type"] in ("stat", "gauge") and query.panel["title"] not in MAY_BE_ZERO:
            assert any(v not in (None, 0) for v in rows[0]), f"{query.panel['title']!r}: all zero"


def test_queue_selection_narrows_a_panel_and_all_is_the_union(sim_engine: tuple[Client, dt.datetime]):
    """The same panel: All = sum over single queues (the filter really filters)."""
    client, now = sim_engine
    query = next(q for q in ALL_QUERIES if q.dashboard["uid"] == "pbx-abandonment" and q.panel["title"] == "Outcome of queue visits")
    rng = gs.default_time_range(query.dashboard, now)
    (queue,) = _variables(client, query.dashboard, "all", rng)
    total = lambda vs: sum(r[1] for r in client.query(gs.expand(query.sql, rng, vs)).result_rows)  # noqa: E731
    per_queue = [total([gs.Variable("queue", [q], queue.options, multi=True, include_all=True)]) for q in queue.options]
    assert len(queue.options) == SIM_QUEUES and all(per_queue)
    assert sum(per_queue) == total([queue])


def test_generated_dashboards_are_valid_json_files():
    paths = sorted(gs.DASHBOARD_DIR.glob("*.json"))
    assert paths, f"no dashboards in {gs.DASHBOARD_DIR}"
    for path in paths:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"] and dash["panels"], path.name


def test_service_level_over_many_intervals_equals_the_formulas_over_the_visits(sim_engine: tuple[Client, dt.datetime]):
    """The stat panel re-aggregates 15-minute rows; it must equal each formula over the raw visits."""
    client, now = sim_engine
    query = next(q for q in ALL_QUERIES if q.dashboard["uid"] == "pbx-queue-sla" and q.panel["title"] == "Service level")
    rng = gs.default_time_range(query.dashboard, now)
    variables = _variables(client, query.dashboard, "all", rng)
    (panel,) = client.query(gs.expand(query.sql, rng, variables)).result_rows
    visits = f"""
        SELECT
            100 * countIf(in_sla = 1) / countIf(outcome IN ('answered', 'abandoned')),
            100 * countIf(in_sla = 1) / countIf(outcome = 'answered'),
            100 * (countIf(in_sla = 1) + countIf(outcome IN ('abandoned', 'short_abandon') AND wait_s <= 20))
                / countIf(outcome IN ('answered', 'abandoned', 'short_abandon'))
        FROM pbx.queue_calls
        WHERE toStartOfFifteenMinutes(entered_at) >= toDateTime({rng.from_ms // 1000})
          AND toStartOfFifteenMinutes(entered_at) <= toDateTime({rng.to_ms // 1000})
    """
    (direct,) = client.query(visits).result_rows
    assert client.query("SELECT count() FROM pbx.queue_settings").result_rows == [(0,)], "default thresholds"
    assert panel == pytest.approx(direct, rel=1e-9)
    assert 0 < direct[0] < direct[1] <= 100


def test_the_expander_prints_every_panel_for_a_given_range(capsys: pytest.CaptureFixture[str]):
    assert gs.main(["--from", "2026-11-02T00:00", "--to", "2026-11-03T00:00"]) == 0
    out = capsys.readouterr().out
    assert out.count("-- pbx-") == len(ALL_QUERIES)
    assert "$__" not in out and "toDateTime(1793577600)" in out


# -- data links between dashboards --------------------------------------------------------------------

#: The one link form the generator writes (``link_to_calls``): the same time range, one variable set to
#: the clicked cell's value, percent-encoded for the URL.
LINK = re.compile(r"/d/(?P<uid>[\w-]+)/[\w-]+\?\$\{__url_time_range\}&var-(?P<var>\w+)="
                  r"\$\{__data\.fields\[\"(?P<field>[^\"]+)\"\]:percentencode\}")  # fmt: skip


def _links(dash: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(panel, column, link) of every data link on a column."""
    for panel in gs.iter_panels(dash["panels"]):
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "links":
                    assert override["matcher"]["id"] == "byName"
                    for link in prop["value"]:
                        yield panel, override["matcher"]["options"], link


def test_data_links_open_a_provisioned_dashboard_on_one_of_its_variables():
    by_uid = {d["uid"]: d for d in ALL_DASHBOARDS}
    found = set()
    for dash in ALL_DASHBOARDS:
        for panel, column, link in _links(dash):
            m = LINK.fullmatch(link["url"])
            assert m, f"{dash['uid']} {panel['title']!r}: unexpected link {link['url']}"
            assert m["field"] == column, "the link carries the value of the column it is on"
            target = by_uid[m["uid"]]
            assert m["var"] in {v["name"] for v in target["templating"]["list"]}, link["url"]
            found.add((dash["uid"], panel["title"], column, m["uid"], m["var"]))
    assert {("pbx-abandonment", "Abandoned calls", "Call id", "pbx-calls", "call"),
            ("pbx-abandonment", "Abandoned calls", "Caller", "pbx-calls", "caller"),
            ("pbx-agents", "Per agent", "Agent", "pbx-calls", "agent")} <= found  # fmt: skip


def _panel(uid: str, title: str) -> gs.PanelQuery:
    return next(q for q in ALL_QUERIES if q.dashboard["uid"] == uid and q.panel["title"] == title)


def _run(client: Client, query: gs.PanelQuery, rng: gs.TimeRange, session: dict[str, str] | None = None,
         **current: Any) -> list[dict[str, Any]]:
    """The panel's rows as dicts, its variables at their defaults but ``current`` (name -> value);
    ``session``: settings of the panel's query."""
    variables = [gs.dashboard_variable(v, gs.variable_options(v, rng, lambda s: client.query(s).result_rows),
                                       current.get(v["name"]))
                 for v in query.dashboard["templating"]["list"]]  # fmt: skip
    result = client.query(gs.expand(query.sql, rng, variables, query.interval_ms(rng)), settings=session)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def test_following_a_link_finds_that_call_that_caller_and_that_agent(sim_engine: tuple[Client, dt.datetime]):
    """What a click opens: the Calls list filtered by the clicked value, as Grafana would fill it."""
    client, now = sim_engine
    abandoned = _panel("pbx-abandonment", "Abandoned calls")
    calls = _panel("pbx-calls", "Calls")
    rng = gs.default_time_range(abandoned.dashboard, now)
    assert gs.default_time_range(calls.dashboard, now) == rng, "the link keeps the time range"
    clicked = next(r for r in _run(client, abandoned, rng) if r["Caller"])
    (one,) = _run(client, calls, rng, call=clicked["Call id"])
    # A visit abandoned in one queue after the call was answered in another (a transfer) leaves the
    # call answered: the call's outcome is the visits' (pbx.queue_calls), not the clicked row's.
    answered_visits = client.query("SELECT countIf(outcome = 'answered') FROM pbx.queue_calls WHERE call_id = {c:String}",
                                   parameters={"c": clicked["Call id"]}).result_rows[0][0]
    assert one["Call id"] == clicked["Call id"]
    assert one["Outcome"] == ("answered" if answered_visits else "abandoned")
    by_caller = _run(client, calls, rng, caller=clicked["Caller"])
    assert clicked["Call id"] in {r["Call id"] for r in by_caller}
    assert all(clicked["Caller"] in r["Caller"] for r in by_caller)

    agent = _run(client, _panel("pbx-agents", "Per agent"), rng)[0]["Agent"]
    listed = _run(client, calls, rng, agent=[agent])
    direct = client.query(
        "SELECT count() FROM pbx.calls WHERE has(agents, {a:String}) AND started_at >= toDateTime({f:Int64}) "
        "AND started_at <= toDateTime({t:Int64})", parameters={"a": agent, "f": rng.from_ms // 1000, "t": rng.to_ms // 1000},
    ).result_rows[0][0]  # fmt: skip
    assert 0 < len(listed) == min(direct, 1000)
    assert all(agent in r["Agents"].split(", ") for r in listed)


def test_fcr_panel_is_the_contracts_formula_for_each_window(sim_engine: tuple[Client, dt.datetime]):
    """First-contact resolution per queue and day = 100 * answered calls with repeat = 0 / answered calls,
    from pbx.repeat_calls with the window chosen on the dashboard."""
    client, now = sim_engine
    fcr = _panel("pbx-queue-sla", "First-contact resolution per queue and day")
    rng = gs.default_time_range(fcr.dashboard, now)
    (window,) = [v for v in fcr.dashboard["templating"]["list"] if v["name"] == "fcr_window"]
    seen = set()
    for _text, seconds in gs.custom_options(window["query"]):
        direct = client.query(
            "SELECT toDate(started_at), if(first_queue = '', '(no queue)', first_queue), countIf(answered = 1), "
            "round(100 * countIf(answered = 1 AND repeat = 0) / countIf(answered = 1), 1) "
            "FROM pbx.repeat_calls(window_s = {w:UInt32}) "
            "WHERE started_at >= toDateTime({f:Int64}) AND started_at <= toDateTime({t:Int64}) "
            "GROUP BY 1, 2 HAVING countIf(answered = 1) > 0 ORDER BY 1 DESC, 2",
            parameters={"w": int(seconds), "f": rng.from_ms // 1000, "t": rng.to_ms // 1000}).result_rows  # fmt: skip
        rows = [(r["Day"], r["Queue"], r["Answered calls"], r["FCR %"]) for r in _run(client, fcr, rng, fcr_window=seconds)]
        assert rows == [tuple(r) for r in direct] and rows
        seen.add(tuple(r[3] for r in rows))
    assert len(seen) > 1, "the window changes the figures"


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York"])
def test_fcr_panel_keeps_its_range_in_any_session_time_zone(sim_engine: tuple[Client, dt.datetime], zone: str):
    """The FCR panel hands the range to pbx.repeat_calls_between as view arguments, which ClickHouse passes
    as text in the session's time zone: the panel passes UTC values, so its rows are the same in any zone."""
    client, now = sim_engine
    fcr = _panel("pbx-queue-sla", "First-contact resolution per queue and day")
    rng = gs.default_time_range(fcr.dashboard, now)
    utc = _run(client, fcr, rng, session={"session_timezone": "UTC"})
    assert utc and _run(client, fcr, rng, session={"session_timezone": zone}) == utc


def test_staffing_sets_required_against_staffed_per_interval(sim_engine: tuple[Client, dt.datetime]):
    """Agents required = sum over queues of staffing_15m.agents_required, a queue without a figure (NULL) not
    counted; staffed = (logged_in_s - paused_s) / 900 summed over agents; short by = the difference when positive."""
    client, now = sim_engine
    table = _panel("pbx-staffing", "Per interval: required, staffed, short by")
    rng = gs.default_time_range(table.dashboard, now)
    rows = _run(client, table, rng)
    f, t = rng.from_ms // 1000, rng.to_ms // 1000
    required = dict(client.query(
        f"SELECT interval_start, coalesce(sum(agents_required), 0) FROM pbx.staffing_15m WHERE interval_start >= toDateTime({f}) "
        f"AND interval_start <= toDateTime({t}) GROUP BY 1").result_rows)  # fmt: skip
    staffed = dict(client.query(
        f"SELECT interval_start, sum(logged_in_s - paused_s) / 900 FROM pbx.agent_stats_15m "
        f"WHERE interval_start >= toDateTime({f}) AND interval_start <= toDateTime({t}) GROUP BY 1").result_rows)  # fmt: skip
    assert {r["Interval"] for r in rows} == set(required) | set(staffed)
    for r in rows:
        need, have = required.get(r["Interval"], 0), staffed.get(r["Interval"], 0.0)
        assert r["Agents required"] == need and r["Agents staffed"] == pytest.approx(round(have, 1))
        assert r["Short by"] == pytest.approx(round(max(need - have, 0), 1))
    assert any(r["Short by"] > 0 for r in rows) and any(r["Short by"] == 0 for r in rows)


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York"])
def test_staffing_panels_keep_their_range_in_any_session_time_zone(sim_engine: tuple[Client, dt.datetime], zone: str):
    """The Staffing panels hand the range to pbx.staffing_between as view arguments (UTC values): the same rows
    in any session time zone."""
    client, now = sim_engine
    for title in ("Per interval: required, staffed, short by", "Per interval and queue"):
        table = _panel("pbx-staffing", title)
        rng = gs.default_time_range(table.dashboard, now)
        utc = _run(client, table, rng, session={"session_timezone": "UTC"})
        assert utc and _run(client, table, rng, session={"session_timezone": zone}) == utc, title


def test_paused_time_by_reason_adds_up_to_the_agents_paused_time(sim_engine: tuple[Client, dt.datetime]):
    """agent_states_15m splits paused time by reason: over the reasons it is agent_stats_15m's paused_s."""
    client, now = sim_engine
    chart = _panel("pbx-agents", "Paused time by reason")
    table = _panel("pbx-agents", "Paused time by agent and reason")
    rng = gs.default_time_range(chart.dashboard, now)
    f, t = rng.from_ms // 1000, rng.to_ms // 1000
    paused = dict(client.query(
        f"SELECT agent, sum(paused_s) / 3600 FROM pbx.agent_stats_15m WHERE interval_start >= toDateTime({f}) "
        f"AND interval_start <= toDateTime({t}) GROUP BY agent HAVING sum(paused_s) > 0").result_rows)  # fmt: skip
    reasons = _run(client, chart, rng)
    assert len(reasons) > 1, "the simulated day has named pause states"
    assert sum(r["Paused (h)"] for r in reasons) == pytest.approx(sum(paused.values()), rel=1e-9)
    rows = _run(client, table, rng)
    for agent, hours in paused.items():
        mine = [r["Paused (h)"] for r in rows if r["Agent"] == agent]
        assert sum(mine) == pytest.approx(hours, abs=0.005 * len(mine)), agent
