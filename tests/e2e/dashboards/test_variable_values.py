"""No dashboard variable value can break or alter a panel's SQL.

Queue names and agent ids are whatever the PBX sends, and the Queue / Agent
selectors offer exactly those values. Here hostile ones (backslashes, quotes
closing the literal, ``UNION ALL``, ``$__macros``, ``${variables}``, comment
starters, the separators of the encoding itself) are stored through the
service's real webhook path (``serve`` on an embedded engine, HTTP GETs), then
every panel of every dashboard is expanded as Grafana and the plugin would,
with All, one and two values selected, and run on that engine.

A panel passes when its SQL runs and ClickHouse's own lexer sees the same
query as with harmless values (``normalizeQuery`` replaces each literal by
``?``: a value that escaped its literal would change the result). Selecting a
value must select exactly the rows stored under it. The old
``${var:singlequote}`` form fails the same check, so the check can tell.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.simulation import SimConfig, SimEvent, send_now, simulate
from ingest.storing import clickhouse
from ingest.testing import ServeProcess, refresh_views
from tests.e2e.dashboards import grafana_sim as gs

#: Values the simulator's queues and agents are renamed to (same count as SimConfig below).
HOSTILE_QUEUES = [
    "back\\slash\\",
    "zzz\\') OR 1=1 --",
    "x\\') UNION ALL SELECT name FROM system.tables --",
]
HOSTILE_AGENTS = [
    "o'hara",
    "$__timeFilter(x) $__fromTime",
    "${queue} $queue [[queue]]",
    "a,b)",
    "%41&v=x",
    "/* c */ -- d",
    "Tomáš ✓ \t tab",
]
#: Webhook parameters that carry a queue name or an agent id (tests/fixtures/pbx-webhooks.txt).
QUEUE_PARAMS = {"queue_name"}
AGENT_PARAMS = {"userid", "line_userid", "caller_userid", "spying_userid", "spying_target_userid"}

QUERIES = gs.panel_queries()
#: What ``${var:customqueryparam:v}`` can produce: ``v=`` + RFC 3986 unreserved characters and
#: ``%XX``, joined by ``&``. None of it is special in a ClickHouse string literal or to the plugin.
SAFE = re.compile(r"v=(?:[A-Za-z0-9._~-]|%[0-9A-F]{2})*(?:&v=(?:[A-Za-z0-9._~-]|%[0-9A-F]{2})*)*")


def _renamed(events: list[SimEvent], queues: dict[str, str], agents: dict[str, str]) -> list[SimEvent]:
    out = []
    for event in events:
        params = []
        for key, value in parse_qsl(event.query, keep_blank_values=True):
            if key in QUEUE_PARAMS:
                value = queues.get(value, value)
            elif key in AGENT_PARAMS:
                value = agents.get(value, value)
            params.append(f"{key}={quote(value, safe='')}")
        out.append(event._replace(query="&".join(params)))
    return out


@pytest.fixture(scope="module")
def hostile_engine(tmp_path_factory: pytest.TempPathFactory, migrated_copy) -> Iterator[tuple[Client, dt.datetime]]:
    """An hour of call-centre traffic under hostile names, sent as webhooks to a real ``serve``."""
    tmp = tmp_path_factory.mktemp("hostile")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    config = SimConfig(seed=11, start=start, hours=1, queues=len(HOSTILE_QUEUES),
                       agents=len(HOSTILE_AGENTS), end_mode="cut", hourly_profile=(1.0,) * 24)  # fmt: skip
    sim = simulate(config)
    stored_queues = sorted({v for e in sim.events for k, v in parse_qsl(e.query) if k in QUEUE_PARAMS})
    stored_agents = sorted({v for e in sim.events for k, v in parse_qsl(e.query) if k == "userid"})
    assert len(stored_queues) == len(HOSTILE_QUEUES) and len(stored_agents) == len(HOSTILE_AGENTS)
    events = _renamed(sim.events, dict(zip(stored_queues, HOSTILE_QUEUES)), dict(zip(stored_agents, HOSTILE_AGENTS)))

    serve = ServeProcess(migrated_copy(tmp / "chdata"))
    try:
        # One at a time, in order: the service stamps arrival time and pairs events in that order.
        sent, failed = send_now(events, serve.url, concurrency=1)
        assert (sent, failed) == (len(events), 0), serve.log()[-2000:]
    finally:
        assert serve.stop() == 0, serve.log()[-2000:]  # SIGTERM: the spool is written to the engine
    client = clickhouse.connect(serve.dsn)
    refresh_views(client)
    # The service stamps arrival time: the dashboards' "now" is after the last webhook.
    yield client, dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    client.close()


#: What is typed into text boxes (caller number, call id): a user or a link's URL may type anything.
HOSTILE_TEXT = HOSTILE_QUEUES + HOSTILE_AGENTS


#: (engine, dashboard, range) -> its variables' options: the engine is read-only once built, so
#: each dashboard's variable queries run once, not once per panel and pick.
#: (The client itself is the key, not its id(): a later client must not find a closed one's answers.)
_OPTIONS: dict[tuple[Client, str, gs.TimeRange], dict[str, list[str]]] = {}


def _options(client: Client, dash: dict[str, Any], rng: gs.TimeRange) -> dict[str, list[str]]:
    key = (client, dash["uid"], rng)
    if key not in _OPTIONS:
        _OPTIONS[key] = {v["name"]: gs.variable_options(v, rng, lambda sql: client.query(sql).result_rows)
                         for v in dash["templating"]["list"]}  # fmt: skip
    return {name: list(options) for name, options in _OPTIONS[key].items()}


def _pick(variable: dict[str, Any], options: list[str], pick: str, rotate: int) -> str | list[str]:
    """All (the default), or one / two values starting at a different option for each panel (all values
    get chosen); a text box gets hostile text, a single-value list one of its values."""
    if pick == "all":
        return variable["current"]["value"]
    if variable["type"] == "textbox":
        return HOSTILE_TEXT[(rotate + (pick == "two")) % len(HOSTILE_TEXT)]
    start = rotate % len(options)
    values = [options[(start + i) % len(options)] for i in range(1 if pick == "one" else 2)]
    return values if variable.get("multi") else values[-1]


def _harmless(variable: dict[str, Any], current: str | list[str]) -> str | list[str]:
    """The same selection shape with harmless values (a single-value list keeps its own: it is a number)."""
    if current in ([gs.ALL], ""):
        return current
    if isinstance(current, str):
        return "harmless0" if variable["type"] == "textbox" else current
    return [f"harmless{i}" for i in range(len(current))]


def _variables(dash: dict[str, Any], options: dict[str, list[str]],
               current: dict[str, str | list[str]]) -> list[gs.Variable]:  # fmt: skip
    return [gs.dashboard_variable(v, options[v["name"]], current[v["name"]]) for v in dash["templating"]["list"]]


#: (panel, pick) -> the panel had rows: filled by the panel test, judged by the next one.
ran: dict[tuple[str, str], bool] = {}


def _normalized(client: Client, sql: str) -> str:
    return client.query("SELECT normalizeQuery({sql:String})", parameters={"sql": sql}).result_rows[0][0]


def test_the_stored_names_are_the_hostile_ones(hostile_engine: tuple[Client, dt.datetime]):
    client, _ = hostile_engine
    queues = {r[0] for r in client.query("SELECT DISTINCT queue_name FROM pbx.queue_calls").result_rows}
    agents = {r[0] for r in client.query("SELECT DISTINCT agent FROM pbx.agent_stats_15m WHERE agent != ''").result_rows}
    assert queues == set(HOSTILE_QUEUES) and agents == set(HOSTILE_AGENTS)


@pytest.mark.parametrize("pick", ["all", "one", "two"])
@pytest.mark.parametrize("index", range(len(QUERIES)), ids=[q.id for q in QUERIES])
def test_no_variable_value_breaks_or_alters_a_panels_sql(hostile_engine: tuple[Client, dt.datetime], index: int, pick: str):
    client, now = hostile_engine
    query = QUERIES[index]
    rng = gs.default_time_range(query.dashboard, now)
    options = _options(client, query.dashboard, rng)
    defined = {v["name"]: v for v in query.dashboard["templating"]["list"]}
    assert all(opts for name, opts in options.items() if defined[name]["type"] != "textbox"), options
    hostile = {name: _pick(defined[name], opts, pick, index) for name, opts in options.items()}
    assert set(options["queue"]) == set(HOSTILE_QUEUES), "the Queue selector offers the stored names"
    harmless = {name: _harmless(defined[name], value) for name, value in hostile.items()}
    interval = query.interval_ms(rng)
    sql = gs.expand(query.sql, rng, _variables(query.dashboard, options, hostile), interval)
    try:
        rows = client.query(sql).result_rows
    except Exception as exc:
        pytest.fail(f"{query.id} {query.panel['title']!r} with {hostile} fails: {exc}\n--- SQL sent ---\n{sql}")
    ran[(query.id, pick)] = bool(rows)
    reference = gs.expand(query.sql, rng, _variables(query.dashboard, options, harmless), interval)
    assert _normalized(client, sql) == _normalized(client, reference), f"the values changed the SQL:\n{sql}"


def test_most_panels_show_data_under_hostile_names():
    """The check above ran on real data: with All selected, nearly every panel has rows."""
    if len(ran) < 3 * len(QUERIES):
        pytest.skip("runs after the full panel matrix only")
    empty = [panel for (panel, pick), has_rows in ran.items() if pick == "all" and not has_rows]
    assert len(empty) <= 4, f"panels without rows on All: {empty}"


def test_selecting_a_value_selects_exactly_its_rows(hostile_engine: tuple[Client, dt.datetime]):
    """Each queue / agent alone: the panel counts what a bound query parameter counts; All is the sum."""
    client, now = hostile_engine
    checks = [
        ("pbx-abandonment", "Outcome of queue visits", "queue",
         "SELECT count() FROM pbx.queue_calls WHERE queue_name = {v:String} AND outcome != 'waiting' "
         "AND entered_at >= toDateTime({f:Int64}) AND entered_at <= toDateTime({t:Int64})"),
        ("pbx-agents", "Calls", "agent",
         "SELECT sum(calls_answered) FROM pbx.agent_stats_15m WHERE agent = {v:String} "
         "AND interval_start >= toDateTime({f:Int64}) AND interval_start <= toDateTime({t:Int64})"),
    ]  # fmt: skip
    for uid, title, var, direct in checks:
        query = next(q for q in QUERIES if q.dashboard["uid"] == uid and q.panel["title"] == title)
        rng = gs.default_time_range(query.dashboard, now)
        options = _options(client, query.dashboard, rng)
        every = {v["name"]: v["current"]["value"] for v in query.dashboard["templating"]["list"]}

        def panel_total(current: dict[str, str | list[str]]) -> int:
            rows = client.query(gs.expand(query.sql, rng, _variables(query.dashboard, options, current))).result_rows
            return sum(v or 0 for row in rows for v in row[1 if title == "Outcome of queue visits" else 0:][:1])

        singles = []
        for value in options[var]:
            got = panel_total({**every, var: [value]})
            want = client.query(direct, parameters={"v": value, "f": rng.from_ms // 1000, "t": rng.to_ms // 1000}).result_rows[0][0]
            assert got == want, f"{title}: {value!r} selects {got}, its rows hold {want}"
            singles.append(got)
        assert sum(singles) == panel_total(every) and any(singles), title


def test_the_old_singlequote_form_fails_this_check(hostile_engine: tuple[Client, dt.datetime]):
    """Grafana's singlequote escapes ' but not \\: ClickHouse reads back\\slash\\' as an escaped quote."""
    client, now = hostile_engine
    old = "SELECT count() FROM pbx.queue_calls WHERE $__conditionalAll(queue_name IN (${queue:singlequote}), $queue)"
    rng = gs.TimeRange.of(now - dt.timedelta(hours=2), now)
    queue = lambda value: [gs.Variable("queue", [value], HOSTILE_QUEUES, multi=True, include_all=True)]  # noqa: E731
    harmless = gs.expand(old, rng, queue("harmless0"))
    broken = 0
    for value in HOSTILE_QUEUES:
        sql = gs.expand(old, rng, queue(value))
        try:
            broken += _normalized(client, sql) != _normalized(client, harmless) or not client.query(sql).result_rows
        except Exception:
            broken += 1
    assert broken == len(HOSTILE_QUEUES)


def test_every_panel_reads_its_variables_through_the_encoding():
    for query in QUERIES:
        for match in re.finditer(r"\$\{(\w+):([^}]*)\}", query.sql):
            assert match.group(2) == "customqueryparam:v", f"{query.id}: ${{{match.group(1)}:{match.group(2)}}}"



@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.text(max_size=12), min_size=1, max_size=3))
def test_any_selection_is_encoded_in_the_safe_alphabet_and_decoded_exactly(hostile_engine: tuple[Client, dt.datetime],
                                                                         values: list[str]):
    """The proof's two steps, checked on arbitrary text (any Unicode but lone surrogates, which
    JavaScript's encodeURIComponent refuses and UTF-8 webhooks cannot carry)."""
    client, _ = hostile_engine
    generator = _generator()
    variable = gs.Variable("queue", values, values, multi=True, include_all=True)
    literal = gs.replace_variables("${queue:customqueryparam:v}", [variable])
    assert SAFE.fullmatch(literal), literal
    (decoded,) = client.query(f"SELECT {gs.replace_variables(generator.selected('queue'), [variable])}").result_rows[0]
    assert decoded == values
    # A text box (one value): the same encoding, decoded without the array.
    box = gs.Variable("caller", values[0])
    assert SAFE.fullmatch(gs.replace_variables("${caller:customqueryparam:v}", [box]))
    (typed,) = client.query(f"SELECT {gs.replace_variables(generator.one_value('caller'), [box])}").result_rows[0]
    assert typed == values[0]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards_generate", gs.REPO / "dashboards" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
