"""``--simulate-days``: a copied day is its source day moved in time, with ids of its own.

A small centre (3 agents, one queue), 8 days: the first 7 simulated, the 8th a copy
of the 1st (its weekday). ``--rows-from``: a build interrupted under another engine
finishes from that engine's rows, not from new simulations.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from bench.scale import datasets

CENTRE = datasets.Centre(agents=3, queues=1, calls_per_hour=12, seed=7)
END = dt.date(2026, 3, 9)  # 8 days: 2026-03-01 (Sunday) .. 2026-03-08 (Sunday)
FIRST, LAST = dt.date(2026, 3, 1), dt.date(2026, 3, 8)


def _query(dataset: datasets.Dataset, sql: str, **parameters) -> list[tuple]:
    from ingest.storing.clickhouse import connect

    client = connect(f"chdb://{dataset.chdata}")
    try:
        return client.query(sql, parameters=parameters).result_rows
    finally:
        client.close()


def _day(dataset: datasets.Dataset, view: str, day: dt.date, shift: int) -> list[tuple]:
    """``view``'s rows of ``day``, interval_start moved ``shift`` days, computed_at-like columns left out."""
    names = [r[0] for r in _query(dataset, f"DESCRIBE TABLE pbx.{view}") if r[0] not in {"computed_at", "data_end"}]
    cols = ", ".join(f"interval_start + toIntervalDay({shift})" if n == "interval_start" else n for n in names)
    return _query(dataset, f"SELECT {cols} FROM pbx.{view} WHERE toDate(interval_start) = {{d:Date}} "
                  f"ORDER BY {', '.join(names)}", d=day)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> datasets.Dataset:
    root = tmp_path_factory.mktemp("copies")
    return datasets.build(root, CENTRE, 8, end=END, jobs=1, simulate_days=7, log=lambda m: None)


def test_the_day_after_the_simulated_week_is_a_copy_of_the_same_weekday(built):
    assert built.info["simulated_days"] == 7
    assert built.info["copies"] == {LAST.isoformat(): FIRST.isoformat()}
    assert datasets.source_day(dt.date(2026, 3, 20), FIRST, 7) == dt.date(2026, 3, 6)  # Friday -> the last Friday


@pytest.mark.parametrize("view", ["queue_stats_15m", "agent_stats_15m"])
def test_a_copied_day_has_its_source_days_15_minute_figures_a_week_later(built, view):
    source, copy = _day(built, view, FIRST, 7), _day(built, view, LAST, 0)
    assert len(source) > 20
    assert copy == source


def test_a_copied_day_has_its_source_days_queue_visits_and_events(built):
    visits = "SELECT count(), countIf(answered_at IS NOT NULL) FROM pbx.queue_calls WHERE toDate(entered_at) = {d:Date}"
    assert _query(built, visits, d=LAST) == _query(built, visits, d=FIRST)
    assert _query(built, visits, d=FIRST)[0][0] > 50


@pytest.mark.parametrize("column", ["event_id", "call_id", "cel_id", "custom_call_id", "seq"])
def test_a_copied_day_shares_no_id_with_its_source(built, column):
    shared = _query(built, f"SELECT count() FROM (SELECT DISTINCT {column} AS v FROM pbx.events "
                    f"WHERE toDate(received_at) = {{c:Date}} AND v != defaultValueOfArgumentType(v)) "
                    f"WHERE v IN (SELECT {column} FROM pbx.events WHERE toDate(received_at) = {{s:Date}})",
                    c=LAST, s=FIRST)
    assert shared == [(0,)]
    distinct = _query(built, f"SELECT uniqExact({column}) FROM pbx.events WHERE toDate(received_at) = {{c:Date}}", c=LAST)
    assert distinct[0][0] > 1


def test_a_build_from_an_interrupted_ones_rows_stores_the_same_events(built, tmp_path):
    # The first 7 days of `built`, as an interrupted build's directory (progress.json + chdata).
    old = tmp_path / "old"
    old.mkdir()
    subprocess.run(["cp", "-a", str(built.chdata), str(old / "chdata")], check=True)
    (old / "progress.json").write_text(json.dumps({"days_done": 7, "totals": {"events": 1}, "seconds": {}}))
    again = datasets.build(tmp_path / "new", CENTRE, 8, end=END, jobs=1, simulate_days=7, rows_from=old,
                           log=lambda m: None)

    events = "SELECT event_id, received_at, call_id, seq FROM pbx.events ORDER BY event_id"
    assert _query(again, events) == _query(built, events)
    assert again.info["reused_from"]["days"] == 7 and again.info["simulated"] == {"events": 1}
    assert not (again.home / "reused").exists()
    for view in ("queue_stats_15m", "agent_stats_15m"):
        assert _day(again, view, LAST, 0) == _day(built, view, LAST, 0)


def test_fewer_than_a_week_of_simulated_days_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 7"):
        datasets.build(tmp_path, CENTRE, 8, end=END, simulate_days=3)
