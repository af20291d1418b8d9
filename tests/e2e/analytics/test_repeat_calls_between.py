"""pbx.repeat_calls_between(from, to, window_s) (issue 15): the repeat callers of a time range.

It reads pbx.calls only in [from, to + window_s), so it must give exactly the
rows of pbx.repeat_calls(window_s) with started_at in [from, to) (issue 12:
complete figures at once): on a simulated three-day log (callers who call back
1-30 hours later, some within 30 s of a day), right after the import with no
refresh run (every call computed live) and again when every call is stored,
for ranges in the middle, ranges whose window runs past the data's end, ranges
cut to the millisecond, and a range with nothing, for two windows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from ingest.simulation import SimConfig
from ingest.testing import import_simulation, query_dicts, settle_views

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


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    """Three simulated days imported with the refreshes held: nothing stored yet."""
    config = SimConfig(seed=15, start=START, hours=72, queues=2, agents=6, calls_per_hour=12, callback_share=0.3)
    ch = import_simulation(config, tmp_path_factory.mktemp("between"))
    yield ch
    ch.close()


def _param(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _between(ch: Client, start: dt.datetime, end: dt.datetime, window: int) -> list[dict[str, Any]]:
    return query_dicts(ch, "SELECT * FROM pbx.repeat_calls_between(from = {f:String}, to = {t:String}, "
                           "window_s = {w:UInt32}) ORDER BY started_at, call_id",
                       parameters={"f": _param(start), "t": _param(end), "w": window})


def _expected(ch: Client, start: dt.datetime, end: dt.datetime, window: int) -> list[dict[str, Any]]:
    """pbx.repeat_calls' rows of the range; next_call_at only when it is before `to + window_s`
    (the between view reads no further: the contract's one difference)."""
    rows = query_dicts(ch, "SELECT * FROM pbx.repeat_calls(window_s = {w:UInt32}) ORDER BY started_at, call_id",
                       parameters={"w": window})
    reach = end + dt.timedelta(seconds=window)
    return [dict(r, next_call_at=r["next_call_at"] if r["next_call_at"] is not None and r["next_call_at"] < reach
                 else None)
            for r in rows if start <= r["started_at"] < end]


def _check(ch: Client, start: dt.datetime, end: dt.datetime) -> None:
    for window in WINDOWS:
        got = _between(ch, start, end, window)
        assert got == _expected(ch, start, end, window), window


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_between_is_repeat_calls_of_the_range_before_any_refresh(imported: Client, start, end) -> None:
    assert imported.query("SELECT count() FROM pbx.calls_data").result_rows[0][0] == 0  # every call live
    _check(imported, start, end)


@pytest.mark.parametrize(("start", "end"), RANGES)
def test_between_is_repeat_calls_of_the_range_with_every_call_stored(imported: Client, start, end) -> None:
    settle_views(imported)
    assert imported.query("SELECT count() FROM pbx.calls_data").result_rows[0][0] > 0
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
