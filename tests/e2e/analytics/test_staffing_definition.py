"""pbx.staffing_15m (0225, read cheaply) returns exactly the rows of its first definition (0203).

0225 reads the stored visits and call records plus the dirty calls' computed
live, instead of 0203's whole-history reads; the figures must not move. The
old definition is run from 0203's SELECT text as a subquery, on a simulated
day with per-queue settings (a target of 100 %: NULL agents), and compared row
for row with the view, whole and under a Grafana time filter: right after the
import with no refresh run (every call dirty), after one refresh of a small
chunk (some calls stored, some live) and once every call is stored.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest

from ingest.simulation import SimConfig
from ingest.testing import import_simulation, refresh_views, settle_views

SQL = Path(__file__).resolve().parents[3] / "sql"
COLUMNS = "interval_start, queue_name, offered, aht_s, traffic_erlangs, agents_required"
START = dt.datetime(2026, 11, 2, 0, tzinfo=dt.timezone.utc)


def _old_definition() -> str:
    """0203's SELECT (the view's text after ``AS``), to run as a subquery."""
    text = (SQL / "0203_create_staffing_15m.sql").read_text()
    return text.split("${ON_CLUSTER} AS", 1)[1].strip().rstrip(";")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    ch = import_simulation(SimConfig(seed=15, start=START, hours=24, queues=3, agents=10, calls_per_hour=12),
                           tmp_path_factory.mktemp("staffing"))
    queues = [r[0] for r in ch.query("SELECT DISTINCT toString(queue_name) FROM pbx.queue_calls ORDER BY 1").result_rows]
    assert len(queues) == 3
    ch.command("INSERT INTO pbx.queue_settings (queue_name, sla_threshold_s, short_abandon_s, sla_target_pct) "
               f"VALUES ('{queues[0]}', 30, 5, 90), ('{queues[1]}', 10, 5, 100)")
    yield ch
    ch.close()


def _rows(ch: Any, source: str, where: str) -> list[tuple]:
    return ch.query(f"SELECT {COLUMNS} FROM ({source}) {where} ORDER BY interval_start, queue_name").result_rows


def _same(a: tuple, b: tuple) -> bool:
    # Floats: the same sums, maybe added in another order by the engine's threads.
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isclose(x, y, rel_tol=1e-12))
               for x, y in zip(a, b, strict=True))


def _assert_same_as_0203(ch: Any) -> None:
    old = _old_definition()
    for where in ("", "WHERE interval_start >= toDateTime('2026-11-02 09:07:00') "
                      "AND interval_start <= toDateTime('2026-11-02 13:52:00')"):
        want = _rows(ch, old, where)
        got = _rows(ch, "SELECT * FROM pbx.staffing_15m", where)
        assert len(got) == len(want) and want, where
        bad = [(g, w) for g, w in zip(got, want) if not _same(g, w)]
        assert not bad, f"{len(bad)} of {len(want)} rows differ (0225, 0203) {where}: {bad[:3]}"
    figures = _rows(ch, old, "")
    assert any(r[5] is None and r[2] > 0 for r in figures)  # the 100 % target
    assert sum(r[5] or 0 for r in figures) > 0 and any(r[2] == 0 for r in figures)


def _dirty_calls(ch: Any) -> int:
    return ch.query("SELECT length(calls) FROM pbx.dirty_call_list_live").result_rows[0][0]


def test_staffing_15m_equals_0203_right_after_the_import(client) -> None:
    assert _dirty_calls(client) > 0  # nothing stored yet: every figure computed live
    _assert_same_as_0203(client)


def test_staffing_15m_equals_0203_with_part_of_the_calls_stored(client) -> None:
    client.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('chunk_rows', 300)")
    refresh_views(client)
    assert 0 < _dirty_calls(client)
    assert client.query("SELECT count() FROM pbx.calls_data").result_rows[0][0] > 0
    _assert_same_as_0203(client)


def test_staffing_15m_equals_0203_once_every_call_is_stored(client) -> None:
    client.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('chunk_rows', 20000)")
    settle_views(client)
    assert _dirty_calls(client) == 0
    _assert_same_as_0203(client)
