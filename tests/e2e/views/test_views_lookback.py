"""How far back before a layer's cursor readers look (docs/metrics.md#how-the-views-are-computed-and-why).

A reader looks at the arrival rows less than the commit margin before the start
of the refresh run that set the cursor (sql/0232), not before the cursor's own
arrival time: after a bulk insert with nothing arriving since, the next run
leaves nothing to look back at (every panel used to look up every call of the
insert's last 15 s on every read), and a row that committed late, within the
margin, is still seen.
"""

from __future__ import annotations

import time

from clickhouse_connect.driver.client import Client

from ingest.testing import query_dicts, refresh_views
from tests.e2e.views.test_views import _agent_day, _recording_events, _scenario_calls, _spy_events, _visit_events
from tests.e2e.views.views_helpers import insert, read

#: The contract views a reader sees, each in a fixed order.
VIEWS = [
    "SELECT * FROM pbx.queue_calls ORDER BY ALL",
    "SELECT * FROM pbx.queue_stats_15m ORDER BY ALL",
    "SELECT * FROM pbx.agent_stats_15m ORDER BY ALL",
    "SELECT * FROM pbx.agent_states_15m ORDER BY ALL",
    "SELECT * FROM pbx.spy_sessions ORDER BY ALL",
    "SELECT * FROM pbx.recording_audit ORDER BY ALL",
    "SELECT * FROM pbx.calls ORDER BY ALL",
    "SELECT * FROM pbx.agents_now ORDER BY ALL",
    "SELECT * FROM pbx.queue_now ORDER BY ALL",
]


def set_margin(ch: Client, ms: int) -> None:
    ch.command(f"INSERT INTO pbx.refresh_settings (name, value) VALUES ('commit_margin_ms', {ms})")


def views(ch: Client) -> dict[str, list[dict]]:
    return {sql: query_dicts(ch, sql) for sql in VIEWS}


def looked_back(ch: Client) -> int:
    """Arrival rows readers look at behind the layers' cursors."""
    return ch.query("SELECT (SELECT countIf(taken = 0) FROM pbx.arrivals_from_calls_live) "
                    "+ (SELECT countIf(taken = 0) FROM pbx.arrivals_from_agents_live)").result_rows[0][0]


def behind_the_cursors_within(ch: Client, ms: int) -> int:
    """Arrival rows less than ``ms`` before a layer's cursor's own arrival time (the lookback until
    sql/0232), summed over the two layers."""
    return ch.query(
        "SELECT count() FROM pbx.arrivals AS a, (SELECT layer, max(cursor) AS c FROM pbx.refresh_marks GROUP BY layer) "
        f"AS m WHERE a.arrived_at > m.c.1 - toIntervalMillisecond({ms}) "
        "AND (a.arrived_at, a.kind, a.id) <= m.c").result_rows[0][0]


def dirty_lists(ch: Client) -> tuple[int, int]:
    return ch.query("SELECT (SELECT length(calls) FROM pbx.dirty_call_list_live), "
                    "(SELECT length(agents) FROM pbx.dirty_agent_list_live)").result_rows[0]


def wait_past_the_margin(ch: Client, ms: int) -> None:
    """Until the engine's clock is more than ``ms`` past the newest arrival row."""
    while ch.query(f"SELECT now64(3, 'UTC') - toIntervalMillisecond({ms}) <= (SELECT max(arrived_at) "
                   "FROM pbx.arrivals)").result_rows[0][0]:
        time.sleep(0.2)


def test_after_a_bulk_insert_a_run_past_the_margin_leaves_nothing_to_look_back_at(ch: Client) -> None:
    margin = 2000
    set_margin(ch, margin)
    insert(ch, [*_scenario_calls(), *_agent_day(), *_spy_events(), *_recording_events()])
    truth = views(ch)  # (nothing stored: all computed from the events)
    assert (query_dicts(ch, "SELECT * FROM pbx.agent_stats_15m ORDER BY ALL")
            == query_dicts(ch, "SELECT * FROM pbx.agent_stats_15m_raw ORDER BY ALL"))
    refresh_views(ch)  # (one run a layer takes every row: one chunk)
    wait_past_the_margin(ch, margin)
    refresh_views(ch)  # (the next scheduled run: nothing new arrived)
    # The insert's rows are all within the margin before the cursors (one insert: one stamp):
    # the lookback before sql/0232 would have read every one of them on every query.
    rows = ch.query("SELECT count() FROM pbx.arrivals").result_rows[0][0]
    assert rows > 0 and behind_the_cursors_within(ch, margin) == 2 * rows
    assert looked_back(ch) == 0
    assert dirty_lists(ch) == (0, 0)
    assert views(ch) == truth
    assert (query_dicts(ch, "SELECT * FROM pbx.queue_stats_15m ORDER BY ALL")
            == query_dicts(ch, "SELECT * FROM pbx.queue_stats_15m_raw ORDER BY ALL"))


def test_until_a_run_starts_past_the_margin_the_rows_are_looked_at(ch: Client) -> None:
    # A run that started within the margin of the insert may not have seen all of it:
    # its rows stay looked at, and what it computed is computed again (live, and by the next run).
    set_margin(ch, 600_000)
    insert(ch, [*_scenario_calls(), *_agent_day()])
    truth = views(ch)
    refresh_views(ch)
    rows = ch.query("SELECT count() FROM pbx.arrivals").result_rows[0][0]
    assert looked_back(ch) == 2 * rows
    assert dirty_lists(ch) == (10, 2)  # (every call and agent of the insert)
    assert views(ch) == truth


def test_a_row_committed_late_within_the_margin_is_still_seen(ch: Client) -> None:
    set_margin(ch, 60_000)
    insert(ch, _visit_events("early", "sales", 0, answer=5, out=5, end=50))
    # The late call's events are stored, its arrival row not yet visible (its insert still
    # committing when the run reads: the arrivals' view detached meanwhile)...
    ch.command("DETACH TABLE pbx.arrivals_mv")
    try:
        insert(ch, _visit_events("late", "support", 10, answer=15, out=15, end=60))
    finally:
        ch.command("ATTACH TABLE pbx.arrivals_mv")
    refresh_views(ch)
    assert [r["call_id"] for r in query_dicts(ch, "SELECT call_id FROM pbx.queue_visits_data FINAL")] == ["early"]
    # ... then it commits, stamped before the run started (and before the cursor): behind the cursor.
    ch.command("INSERT INTO pbx.arrivals SELECT (SELECT max(cursor).1 FROM pbx.refresh_marks WHERE layer = 'calls') "
               "- toIntervalMillisecond(1), 'call', 'late', min(first_at), max(last_at) "
               "FROM pbx.call_spans WHERE call_id = 'late'")
    assert ch.query("SELECT max(started) > max(cursor).1 - toIntervalMillisecond(1) FROM pbx.refresh_marks "
                    "WHERE layer = 'calls'").result_rows[0][0] == 1
    assert ch.query("SELECT has(arrayMap(c -> c.1, calls), 'late') FROM pbx.dirty_call_list_live").result_rows[0][0]
    # Every reader sees it at once (computed live), and the next run stores it.
    visits = read(ch, "SELECT call_id, queue_name, outcome FROM pbx.queue_calls ORDER BY call_id")
    assert visits == [dict(call_id="early", queue_name="sales", outcome="answered"),
                      dict(call_id="late", queue_name="support", outcome="answered")]
    assert sorted(r["call_id"] for r in query_dicts(ch, "SELECT call_id FROM pbx.queue_visits_data FINAL")) == [
        "early", "late"]


def test_a_backlog_over_several_runs_under_the_margin_reads_whole_throughout(ch: Client) -> None:
    # Each run takes a few rows and starts within the margin of the inserts: each looks back
    # from its own start, the last one's start counts; then a run past the margin clears it.
    margin = 2000
    set_margin(ch, margin)
    ch.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('chunk_rows', 3)")
    insert(ch, [*_scenario_calls(), *_agent_day()])
    insert(ch, _agent_day(day=1))
    truth = views(ch)
    runs = 0
    while ch.query("SELECT (SELECT countIf(taken = 1) FROM pbx.arrivals_from_calls_live) "
                   "+ (SELECT countIf(taken = 1) FROM pbx.arrivals_from_agents_live)").result_rows[0][0]:
        refresh_views(ch)
        runs += 1
        assert views(ch) == truth
        assert runs < 40
    assert runs >= 3
    wait_past_the_margin(ch, margin)
    refresh_views(ch)
    assert looked_back(ch) == 0
    assert dirty_lists(ch) == (0, 0)
    assert views(ch) == truth
