"""pbx.staffing_between(from, to) (issue 15): pbx.staffing_15m's rows of a time range.

It reads only the range's visits, the talk of their calls and each queue's
first visit from pbx.queue_first_visit, so it must give exactly the rows of
pbx.staffing_15m with interval_start in [from, to): on two simulated days
plus hand-made calls (one whose start is three hours before its queue entry,
outside where the stored calls are looked for first; a queue whose first
visit is in the middle of a range), right after the import with no refresh
run (every call live), with part of the calls stored, with all stored, and
with new calls inserted and not refreshed (dirty, one of them a queue's
first visit), for ranges cut mid-day and to the millisecond, before the
first visit, past the data's now and over everything.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from ingest.simulation import SimConfig
from ingest.testing import import_simulation, refresh_views, settle_views
from tests.e2e.views.views_helpers import ev, insert

START = dt.datetime(2026, 11, 2)  # UTC, naive as the client returns times
DAY = dt.timedelta(days=1)
H = dt.timedelta(hours=1)
M = dt.timedelta(minutes=1)
MS = dt.timedelta(milliseconds=1)
COLUMNS = "interval_start, queue_name, offered, aht_s, traffic_erlangs, agents_required"
#: [from, to) ranges, UTC.
RANGES = {
    "a-cut-mid-day": (START + DAY + 9 * H + 7 * M, START + DAY + 13 * H + 52 * M),
    "cut-to-the-millisecond": (START + DAY + 10 * H + MS, START + DAY + 14 * H + 30 * M + MS),
    "the-long-call": (START + DAY + 10 * H, START + DAY + 11 * H),
    "a-queue-starting-inside": (START + DAY + 12 * H, START + DAY + 18 * H),
    "before-the-first-visit": (START - 3 * DAY, START - DAY),
    "past-now": (START + DAY + 20 * H, START + 6 * DAY),
    "everything": (START - DAY, START + 6 * DAY),
}
#: A call that started 3 hours before it queued (in its own queue: its talk is the only one there).
LONG = [ev("start_call", START + DAY + 7 * H + 5 * M, call_id="long.1", caller_num="5550001"),
        ev("queue_in", START + DAY + 10 * H + 5 * M, call_id="long.1", queue_name="longq"),
        ev("answered_internal", START + DAY + 10 * H + 5 * M + 10 * dt.timedelta(seconds=1),
           call_id="long.1", line_userid="zoe"),
        ev("queue_out", START + DAY + 10 * H + 5 * M + 10 * dt.timedelta(seconds=1),
           call_id="long.1", queue_name="longq"),
        ev("call_end", START + DAY + 10 * H + 9 * M, call_id="long.1")]
#: A queue whose first visit is in the middle of a range.
LATE = [ev("queue_in", START + DAY + 14 * H + 20 * M, call_id="late.1", queue_name="lateq"),
        ev("answered_internal", START + DAY + 14 * H + 20 * M + dt.timedelta(seconds=5),
           call_id="late.1", line_userid="zoe"),
        ev("queue_out", START + DAY + 14 * H + 20 * M + dt.timedelta(seconds=5), call_id="late.1",
           queue_name="lateq"),
        ev("call_end", START + DAY + 14 * H + 25 * M, call_id="late.1")]
#: Inserted after everything is stored and not refreshed: a call of the cut range, and a new
#: queue's first visit in it.
DIRTY = [ev("queue_in", START + DAY + 9 * H + 31 * M, call_id="dirty.1", queue_name="longq"),
         ev("answered_internal", START + DAY + 9 * H + 32 * M, call_id="dirty.1", line_userid="zoe"),
         ev("call_end", START + DAY + 9 * H + 40 * M, call_id="dirty.1"),
         ev("queue_in", START + DAY + 11 * H + 2 * M, call_id="dirty.2", queue_name="newq"),
         ev("call_end", START + DAY + 11 * H + 3 * M, call_id="dirty.2")]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    """Two simulated days and the hand-made calls, imported with the refreshes held: nothing stored."""
    ch = import_simulation(SimConfig(seed=15, start=START.replace(tzinfo=dt.timezone.utc), hours=48, queues=3,
                                     agents=10, calls_per_hour=12), tmp_path_factory.mktemp("staffing_between"))
    insert(ch, LONG + LATE)
    queues = [r[0] for r in ch.query("SELECT DISTINCT toString(queue_name) FROM pbx.queue_calls "
                                     "WHERE queue_name NOT IN ('longq', 'lateq') ORDER BY 1").result_rows]
    ch.command("INSERT INTO pbx.queue_settings (queue_name, sla_threshold_s, short_abandon_s, sla_target_pct) "
               f"VALUES ('{queues[0]}', 30, 5, 90), ('{queues[1]}', 10, 5, 100)")
    yield ch
    ch.close()


def _param(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _between(ch: Client, start: dt.datetime, end: dt.datetime) -> list[tuple]:
    return ch.query(f"SELECT {COLUMNS} FROM pbx.staffing_between(from = {{f:String}}, to = {{t:String}}) "
                    "ORDER BY interval_start, queue_name", parameters={"f": _param(start), "t": _param(end)}).result_rows


def _expected(ch: Client, start: dt.datetime, end: dt.datetime) -> list[tuple]:
    return [r for r in ch.query(f"SELECT {COLUMNS} FROM pbx.staffing_15m ORDER BY interval_start, queue_name")
            .result_rows if start <= r[0] < end]


def _same(a: tuple, b: tuple) -> bool:
    # Floats: the same sums, maybe added in another order by the engine's threads.
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isclose(x, y, rel_tol=1e-12))
               for x, y in zip(a, b, strict=True))


def _check(ch: Client) -> None:
    for name, (start, end) in RANGES.items():
        got, want = _between(ch, start, end), _expected(ch, start, end)
        assert [r[:2] for r in got] == [r[:2] for r in want], name
        bad = [(g, w) for g, w in zip(got, want) if not _same(g, w)]
        assert not bad, f"{name}: {len(bad)} of {len(want)} rows differ (between, staffing_15m): {bad[:3]}"


def _dirty_calls(ch: Client) -> int:
    return ch.query("SELECT length(calls) FROM pbx.dirty_call_list_live").result_rows[0][0]


def test_right_after_the_import(client: Client) -> None:
    assert client.query("SELECT count() FROM pbx.calls_data").result_rows[0][0] == 0  # every call live
    _check(client)


def test_with_part_of_the_calls_stored(client: Client) -> None:
    client.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('chunk_rows', 300)")
    refresh_views(client)
    assert 0 < _dirty_calls(client)
    assert client.query("SELECT count() FROM pbx.calls_data").result_rows[0][0] > 0
    _check(client)


def test_with_every_call_stored(client: Client) -> None:
    client.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('chunk_rows', 20000)")
    settle_views(client)
    assert _dirty_calls(client) == 0
    # the long call's record starts 3 h before its visit: found through its span, not the first window
    assert client.query("SELECT count() FROM pbx.calls_data FINAL WHERE call_id = 'long.1' AND is_deleted = 0 "
                        "AND started_at < {t:DateTime64(3)} - INTERVAL 1 HOUR",
                        parameters={"t": START + DAY + 10 * H}).result_rows[0][0] == 1
    _check(client)


def test_with_new_calls_not_refreshed(client: Client) -> None:
    settle_views(client)
    insert(client, DIRTY)
    assert _dirty_calls(client) == 2
    _check(client)


def test_the_data_has_what_the_ranges_test(client: Client) -> None:
    """The long call's talk in its queue's interval, a queue starting inside a range, now inside 'past-now'."""
    rows = _between(client, *RANGES["the-long-call"])
    assert [r[2:4] for r in rows if r[1] == "longq" and r[0] == START + DAY + 10 * H] == [(1, 230.0)]
    rows = _between(client, *RANGES["a-queue-starting-inside"])
    late = [r[0] for r in rows if r[1] == "lateq"]
    assert late[0] == START + DAY + 14 * H + 15 * M and late[-1] == START + DAY + 17 * H + 45 * M
    assert any(r[1] == "longq" and r[0] == START + DAY + 12 * H for r in rows)  # started before: from `from`
    last = max(r[0] for r in _between(client, *RANGES["past-now"]))
    assert last < START + 3 * DAY
    assert _between(client, *RANGES["before-the-first-visit"]) == []


def test_between_has_staffing_15m_columns_and_names_missing_arguments(client: Client) -> None:
    got = client.query("DESCRIBE TABLE pbx.staffing_between(from = '2026-11-02', to = '2026-11-03')").result_rows
    want = client.query("DESCRIBE TABLE pbx.staffing_15m").result_rows
    assert [r[:2] for r in got] == [r[:2] for r in want]
    for args, missing in (("to = '2026-11-03'", "from"), ("from = '2026-11-02'", "to")):
        with pytest.raises(Exception, match=f"Substitution `{missing}` is not set"):
            client.query(f"SELECT * FROM pbx.staffing_between({args})")
