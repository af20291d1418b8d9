"""pbx.repeat_calls_between(from, to, window_s) (issue 15): the repeat callers of a time range.

It reads only [from, to + window_s), the callers not touched by a dirty call
from pbx.caller_calls (sql/0235, the stored calls by caller), so it must give
exactly the rows of the contract's window over pbx.calls (sql/0230's text,
_CONTRACT below) with started_at in [from, to) (issue 12: complete figures at
once): on a simulated three-day log (callers who call back 1-30 hours later,
some within 30 s of a day) plus hand-made calls, right after the import with
no refresh run (every call computed live), with part of the calls stored,
with every call stored, with new calls not refreshed (dirty: a stored call
whose late start_call changes its caller, a new call between two stored ones
of a caller) and once those are stored too; for ranges in the middle, ranges
whose window runs past the data's end, ranges cut to the millisecond, and a
range with nothing, for two windows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from ingest.simulation import SimConfig
from ingest.testing import import_simulation, query_dicts, refresh_views, settle_views
from tests.e2e.views.views_helpers import ev, insert

START = dt.datetime(2026, 11, 2)  # UTC, naive as the client returns times
DAY = dt.timedelta(days=1)
WINDOWS = (3600, 86400)
#: [from, to) ranges, UTC.
RANGES = [
    pytest.param(START + DAY, START + 2 * DAY, id="a-day-in-the-middle"),
    pytest.param(START + 2 * DAY + dt.timedelta(hours=12), START + 3 * DAY, id="window-past-the-end"),
    pytest.param(START + dt.timedelta(hours=9, minutes=17, seconds=3, milliseconds=250),
                 START + DAY + dt.timedelta(hours=10, milliseconds=1), id="cut-to-the-millisecond"),
    pytest.param(START - DAY, START + 4 * DAY, id="everything"),
    pytest.param(START - 30 * DAY, START - 29 * DAY, id="nothing"),
]
H = dt.timedelta(hours=1)
#: Hand-made callers: 5550100 calls at 7:00, 10:00 (the call that changes caller: its only caller
#: number is on its queue_in until a start_call arrives) and 12:00 of the middle day; 5550200 at 9:00.
MOVED_AT = START + DAY + 10 * H
HAND = [ev("queue_in", START + DAY + 7 * H, call_id="a.0", queue_name="handq", caller_num="5550100"),
        ev("call_end", START + DAY + 7 * H + 60 * dt.timedelta(seconds=1), call_id="a.0"),
        ev("queue_in", MOVED_AT, call_id="moved.1", queue_name="handq", caller_num="5550100"),
        ev("answered_internal", MOVED_AT + dt.timedelta(seconds=5), call_id="moved.1", line_userid="zoe"),
        ev("call_end", MOVED_AT + dt.timedelta(minutes=3), call_id="moved.1"),
        ev("queue_in", START + DAY + 12 * H, call_id="a.2", queue_name="handq", caller_num="5550100"),
        ev("call_end", START + DAY + 12 * H + dt.timedelta(minutes=1), call_id="a.2"),
        ev("queue_in", START + DAY + 9 * H, call_id="b.1", queue_name="handq", caller_num="5550200"),
        ev("call_end", START + DAY + 9 * H + dt.timedelta(minutes=1), call_id="b.1")]
#: Inserted once everything is stored, not refreshed: moved.1's start_call (after its first event,
#: so the call keeps its start) names 5550200; 5550200 calls again at 11:00.
DIRTY = [ev("start_call", MOVED_AT + dt.timedelta(seconds=1), call_id="moved.1", caller_num="5550200",
            caller_type="external"),
         ev("queue_in", START + DAY + 11 * H, call_id="b.2", queue_name="handq", caller_num="5550200"),
         ev("call_end", START + DAY + 11 * H + dt.timedelta(minutes=2), call_id="b.2")]
#: The contract (sql/0230's window over pbx.calls), the reference every state is checked against.
_CONTRACT = """
    SELECT call_id, caller_num, started_at, first_queue, answered, next_call_at,
           toUInt8(ifNull(dateDiff('millisecond', started_at, next_call_at) <= {w:UInt32} * 1000, 0)) AS repeat
    FROM
    (
        SELECT call_id, caller_num, started_at, ended_at, if(empty(queues), '', queues[1]) AS first_queue,
               toUInt8(answered_at IS NOT NULL) AS answered,
               leadInFrame(toNullable(started_at)) OVER (PARTITION BY caller_num ORDER BY started_at, call_id
                                                         ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next_call_at
        FROM pbx.calls
        WHERE direction = 'inbound' AND caller_num != ''
    )
    WHERE ended_at IS NOT NULL
    ORDER BY started_at, call_id"""


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    """Three simulated days imported with the refreshes held: nothing stored yet."""
    config = SimConfig(seed=15, start=START, hours=72, queues=2, agents=6, calls_per_hour=12, callback_share=0.3)
    ch = import_simulation(config, tmp_path_factory.mktemp("between"))
    insert(ch, HAND)
    yield ch
    ch.close()


def _param(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _between(ch: Client, start: dt.datetime, end: dt.datetime, window: int) -> list[dict[str, Any]]:
    return query_dicts(ch, "SELECT * FROM pbx.repeat_calls_between(from = {f:String}, to = {t:String}, "
                           "window_s = {w:UInt32}) ORDER BY started_at, call_id",
                       parameters={"f": _param(start), "t": _param(end), "w": window})


def _expected(ch: Client, start: dt.datetime, end: dt.datetime, window: int) -> list[dict[str, Any]]:
    """The contract's rows of the range; next_call_at only when it is before `to + window_s`
    (the between view reads no further: the contract's one difference)."""
    rows = query_dicts(ch, _CONTRACT, parameters={"w": window})
    reach = end + dt.timedelta(seconds=window)
    return [dict(r, next_call_at=r["next_call_at"] if r["next_call_at"] is not None and r["next_call_at"] < reach
                 else None)
            for r in rows if start <= r["started_at"] < end]


def _check(ch: Client, start: dt.datetime, end: dt.datetime) -> None:
    for window in WINDOWS:
        got = _between(ch, start, end, window)
        assert got == _expected(ch, start, end, window), window
    # pbx.repeat_calls (the between view over every time) is the contract
    assert query_dicts(ch, "SELECT * FROM pbx.repeat_calls(window_s = 86400) ORDER BY started_at, call_id") == \
        query_dicts(ch, _CONTRACT, parameters={"w": 86400})


def _dirty_calls(ch: Client) -> int:
    return ch.query("SELECT length(calls) FROM pbx.dirty_call_list_live").result_rows[0][0]


def _stored_by_caller(ch: Client) -> list[tuple]:
    return ch.query("SELECT caller_num, started_at, call_id FROM pbx.caller_calls FINAL WHERE is_deleted = 0 "
                    "ORDER BY ALL").result_rows


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_between_is_repeat_calls_of_the_range_before_any_refresh(imported: Client, start, end) -> None:
    assert imported.query("SELECT count() FROM pbx.calls_data").result_rows[0][0] == 0  # every call live
    _check(imported, start, end)


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_between_is_repeat_calls_of_the_range_with_part_of_the_calls_stored(imported: Client, start, end) -> None:
    if not imported.query("SELECT count() FROM pbx.calls_data").result_rows[0][0]:
        imported.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('chunk_rows', 300)")
        refresh_views(imported)
    assert _dirty_calls(imported) > 0
    assert imported.query("SELECT count() FROM pbx.caller_calls").result_rows[0][0] > 0
    _check(imported, start, end)


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_between_is_repeat_calls_of_the_range_with_every_call_stored(imported: Client, start, end) -> None:
    imported.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('chunk_rows', 20000)")
    settle_views(imported)
    assert _dirty_calls(imported) == 0
    # the stored copy by caller is the stored inbound calls with a caller
    assert _stored_by_caller(imported) == imported.query(
        "SELECT caller_num, started_at, call_id FROM pbx.calls_data FINAL WHERE is_deleted = 0 "
        "AND direction = 'inbound' AND caller_num != '' ORDER BY ALL").result_rows
    _check(imported, start, end)


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_between_is_repeat_calls_of_the_range_with_new_calls_not_refreshed(imported: Client, start, end) -> None:
    if not imported.query("SELECT count() FROM pbx.calls WHERE call_id = 'b.2'").result_rows[0][0]:
        settle_views(imported)
        insert(imported, DIRTY)
    assert _dirty_calls(imported) == 2
    _check(imported, start, end)


def test_a_call_that_changed_caller_once_stored(imported: Client) -> None:
    """moved.1's record keeps its key (started_at, call_id) but names 5550200: stored, its row under
    5550100 is deleted (through pbx.call_callers), and the next calls follow the new caller."""
    if not imported.query("SELECT count() FROM pbx.calls WHERE call_id = 'b.2'").result_rows[0][0]:
        settle_views(imported)  # moved.1 stored under 5550100 first
        insert(imported, DIRTY)
    settle_views(imported)
    assert [r[0] for r in _stored_by_caller(imported) if r[2] == "moved.1"] == ["5550200"]
    day = {r["call_id"]: r for r in _between(imported, START + DAY, START + 2 * DAY, 86400)}
    assert day["a.0"]["next_call_at"] == START + DAY + 12 * H  # a.2, no longer moved.1
    assert day["b.1"]["next_call_at"] == MOVED_AT
    assert day["moved.1"]["next_call_at"] == START + DAY + 11 * H  # b.2
    for start, end in ((START + DAY, START + 2 * DAY), (START - DAY, START + 4 * DAY)):
        _check(imported, start, end)


def test_the_data_has_what_the_ranges_test(imported: Client) -> None:
    """Repeats across the middle day's end, next calls beyond a range's reach, rows with nothing next."""
    day = _between(imported, START + DAY, START + 2 * DAY, 86400)
    assert len(day) > 100
    assert any(r["repeat"] and r["next_call_at"] >= START + 2 * DAY for r in day)  # found after `to`
    day = _between(imported, START + DAY, START + 2 * DAY, 3600)
    full = {r["call_id"]: r for r in _expected(imported, START - DAY, START + 4 * DAY, 3600)}
    assert any(r["next_call_at"] is None and full[r["call_id"]]["next_call_at"] is not None for r in day)
    assert any(r["next_call_at"] is None and full[r["call_id"]]["next_call_at"] is None for r in day)
    assert _between(imported, START - 30 * DAY, START - 29 * DAY, 86400) == []


def test_between_has_repeat_calls_columns_and_names_missing_arguments(imported: Client) -> None:
    ch = imported
    got = ch.query("DESCRIBE TABLE pbx.repeat_calls_between(from = '2026-11-02', to = '2026-11-03', "
                   "window_s = 86400)").result_rows
    want = ch.query("DESCRIBE TABLE pbx.repeat_calls(window_s = 86400)").result_rows
    assert [r[:2] for r in got] == [r[:2] for r in want]
    for args, missing in (("to = '2026-11-03', window_s = 60", "from"), ("from = '2026-11-02', window_s = 60", "to"),
                          ("from = '2026-11-02', to = '2026-11-03'", "window_s")):
        with pytest.raises(Exception, match=f"Substitution `{missing}` is not set"):
            ch.query(f"SELECT * FROM pbx.repeat_calls_between({args})")
