"""The analytics views against the simulator's truth (docs/simulator.md).

A simulated day goes through the real backfill path: written as access logs
split by hour, half of the hours imported in shuffled order and stored by the
refreshes, then the other half, then everything again (every line a
duplicate). The simulator computes the expected metrics from its own state,
independently of the SQL; every column of every view must match twice: right
after the import, with nothing more stored (what a one-shot reader sees at
once: stored rows plus the rest computed live), and once everything is stored.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from ingest.backfill.importer import import_files
from ingest.simulation import SimConfig, simulate, write_access_log
from ingest.testing import query_dicts as rows
from ingest.testing import settle_views

INTERVAL = dt.timedelta(minutes=15)


def _time(iso: str | None) -> dt.datetime | None:
    return None if iso is None else dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")


def _interval(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)


def _pct(num: float, den: float) -> float | None:
    return None if den == 0 else pytest.approx(100 * num / den)


def _avg(total: float, n: int) -> float | None:
    return None if n == 0 else pytest.approx(total / n)


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[Path]]:
    """A simulated day (drain mode: every call ends, every agent logs out) as hourly access logs."""
    sim = simulate(SimConfig(seed=7, hours=24, queues=3, agents=10, calls_per_hour=25))
    folder = tmp_path_factory.mktemp("logs")
    by_hour: dict[int, list] = defaultdict(list)
    for event in sim.events:
        by_hour[event.t // 3600].append(event)
    files = []
    for hour, events in by_hour.items():
        path = folder / f"access-{hour}.log"
        write_access_log(path, events)
        files.append(path)
    return sim.truth, files


@pytest.fixture(scope="module")
def imported(day: tuple[dict[str, Any], list[Path]], tmp_path_factory: pytest.TempPathFactory):
    from ingest.storing import clickhouse, migrations

    truth, files = day
    client = clickhouse.connect(f"chdb://{tmp_path_factory.mktemp('chdata') / 'db'}")
    migrations.apply_migrations(client)
    order = files[:]
    random.Random(1).shuffle(order)
    # Half of the hours, out of order, stored; then the rest: late data for the
    # stored calls and agents, and new ones. Then all again (duplicates).
    import_files(client, order[: len(order) // 2])
    settle_views(client)
    import_files(client, order[len(order) // 2:])
    random.Random(2).shuffle(order)
    import_files(client, order)
    yield client, truth
    client.close()


@pytest.fixture(scope="module", params=["at-once", "stored"])
def read_when(request: pytest.FixtureRequest, imported):
    """The views read right after the import (no refresh run since), then once all is stored."""
    client, truth = imported
    if request.param == "stored":
        settle_views(client)
    return client, truth


def test_every_event_is_stored_once(read_when) -> None:
    client, truth = read_when
    got = {r["event"]: r["n"] for r in rows(client, "SELECT event, count() AS n FROM pbx.events GROUP BY event")}
    assert got == truth["event_counts"]


def test_queue_calls_match_the_truth(read_when) -> None:
    client, truth = read_when
    got = {(r["call_id"], r["queue_name"], r["entered_at"]): r for r in rows(client, "SELECT * FROM pbx.queue_calls")}
    expected = {}
    for v in truth["queue_visits"]:
        expected[(v["call_id"], v["queue_name"], _time(v["entered_at"]))] = dict(
            call_id=v["call_id"], queue_name=v["queue_name"], entered_at=_time(v["entered_at"]),
            left_at=_time(v["left_at"]), answered_at=_time(v["answered_at"]), agent=v["agent"],
            wait_s=v["wait_s"], outcome=v["outcome"], in_sla=int(v["in_sla"]))
    assert {o["outcome"] for o in expected.values()} >= {"answered", "overflow", "abandoned", "short_abandon"}
    assert got == expected


def test_queue_stats_15m_match_the_truth(read_when) -> None:
    client, truth = read_when
    sla, short = truth["thresholds"]["sla_threshold_s"], truth["thresholds"]["short_abandon_s"]
    assert short == 5
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for v in truth["queue_visits"]:
        groups[(_interval(_time(v["entered_at"])), v["queue_name"])].append(v)
    expected = []
    for (interval, queue), visits in sorted(groups.items()):
        n = {o: sum(v["outcome"] == o for v in visits) for o in ("answered", "abandoned", "short_abandon", "overflow")}
        offered = sum(n.values())
        in_sla = sum(bool(v["in_sla"]) for v in visits)
        abandons_in_sla = sum(v["outcome"] in ("abandoned", "short_abandon") and v["wait_s"] <= sla for v in visits)
        waits = [v["wait_s"] for v in visits if v["outcome"] != "waiting" and v["wait_s"] is not None]
        expected.append(dict(
            interval_start=interval, queue_name=queue, offered=offered, answered=n["answered"],
            abandoned=n["abandoned"], short_abandoned=n["short_abandon"], overflowed=n["overflow"],
            answered_in_sla=in_sla,
            sla_pct=_pct(in_sla, n["answered"] + n["abandoned"]),
            sla_answered_pct=_pct(in_sla, n["answered"]),
            sla_inclusive_pct=_pct(in_sla + abandons_in_sla, offered - n["overflow"]),
            abandon_rate_pct=_pct(n["abandoned"], n["answered"] + n["abandoned"]),
            asa_s=_avg(sum(v["wait_s"] for v in visits if v["outcome"] == "answered"), n["answered"]),
            avg_abandon_s=_avg(sum(v["wait_s"] for v in visits if v["outcome"] == "abandoned"), n["abandoned"]),
            max_wait_s=max(waits) if waits else None,
        ))
    got = rows(client, "SELECT * FROM pbx.queue_stats_15m ORDER BY interval_start, queue_name")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == e, (g["interval_start"], g["queue_name"])


@pytest.mark.parametrize(("view", "columns", "has"), [
    ("agent_stats_15m", ["logged_in_s", "paused_s", "talk_s", "idle_s", "calls_answered", "ring_no_answer",
                         "occupancy_pct"], lambda r: True),
    # its halves: its columns, each with the rows that have them
    ("agent_time_15m", ["logged_in_s", "paused_s", "talk_s", "idle_s", "occupancy_pct"],
     lambda r: r["logged_in_s"] > 0),
    ("agent_calls_15m", ["calls_answered", "ring_no_answer"],
     lambda r: r["calls_answered"] + r["ring_no_answer"] > 0),
], ids=["agent_stats_15m", "agent_time_15m", "agent_calls_15m"])
def test_agent_stats_15m_and_its_halves_match_the_truth(read_when, view: str, columns: list[str], has) -> None:
    client, truth = read_when
    truths = sorted((
        dict(interval_start=_time(r["interval_start"]), agent=r["agent"], logged_in_s=r["logged_in_s"],
             paused_s=r["paused_s"], talk_s=r["talk_s"], idle_s=r["idle_s"], calls_answered=r["calls_answered"],
             ring_no_answer=r["ring_no_answer"], occupancy_pct=_pct(r["talk_s"], r["talk_s"] + r["idle_s"]))
        for r in truth["agent_seconds"]), key=lambda r: (r["interval_start"], r["agent"]))
    assert sum(r["paused_s"] for r in truths) > 0 and sum(r["ring_no_answer"] for r in truths) > 0
    expected = [{k: r[k] for k in ["interval_start", "agent", *columns]} for r in truths if has(r)]
    got = rows(client, f"SELECT * FROM pbx.{view} ORDER BY interval_start, agent")
    assert len(got) > 100
    assert [(g["interval_start"], g["agent"]) for g in got] == [(e["interval_start"], e["agent"]) for e in expected]
    for g, e in zip(got, expected):
        assert g == e, (g["interval_start"], g["agent"])


def test_spy_sessions_match_the_truth(read_when) -> None:
    client, truth = read_when
    expected = sorted((
        dict(s, started_at=_time(s["started_at"]), ended_at=_time(s["ended_at"])) for s in truth["spy_sessions"]),
        key=lambda s: (s["call_id"], s["started_at"]))
    assert any(s["ended_at"] is None for s in expected) and any(s["ended_at"] for s in expected)
    got = rows(client, "SELECT * FROM pbx.spy_sessions ORDER BY call_id, started_at")
    assert got == expected


def test_recording_audit_matches_the_truth(read_when) -> None:
    client, truth = read_when
    expected = {
        r["call_id"]: dict(r, answered_at=_time(r["answered_at"]), ended_at=_time(r["ended_at"]),
                           recorded=int(r["recorded"]), unstopped=int(r["unstopped"]),
                           coverage_pct=None if r["coverage_pct"] is None else pytest.approx(r["coverage_pct"]))
        for r in truth["recordings"]
    }
    assert any(r["unstopped"] for r in expected.values()) and any(r["segments"] > 1 for r in expected.values())
    got = {r["call_id"]: r for r in rows(client, "SELECT * FROM pbx.recording_audit")}
    assert got.keys() == expected.keys()
    for call_id, g in got.items():
        # at: the stored order, the answer or else the end (or else the first start)
        at = g.pop("at")
        assert at == (g["answered_at"] or g["ended_at"] or at), call_id
        assert g == expected[call_id], call_id


def test_recording_audit_filtered_on_at_as_well_keeps_every_row(read_when) -> None:
    # The Audit panels filter on at (the stored order: reads one range of history)
    # and on coalesce(answered_at, ended_at) (what they mean): the first must drop nothing.
    client, _ = read_when
    since, until = client.query(
        "SELECT quantileExact(0.3)(coalesce(answered_at, ended_at)), quantileExact(0.7)(coalesce(answered_at, ended_at))"
        " FROM pbx.recording_audit").result_rows[0]
    meant = ("SELECT * FROM pbx.recording_audit WHERE coalesce(answered_at, ended_at) >= {s:DateTime64(3)}"
             " AND coalesce(answered_at, ended_at) <= {u:DateTime64(3)}")
    both = meant + " AND at >= {s:DateTime64(3)} AND at <= {u:DateTime64(3)}"
    expected = rows(client, meant + " ORDER BY call_id", {"s": since, "u": until})
    assert len(expected) > 20
    assert rows(client, both + " ORDER BY call_id", {"s": since, "u": until}) == expected


def test_queue_calls_since_is_queue_calls_from_that_time(read_when) -> None:
    client, _ = read_when
    since = client.query("SELECT quantileExact(0.5)(entered_at) FROM pbx.queue_calls").result_rows[0][0]
    full = rows(client, "SELECT * FROM pbx.queue_calls WHERE entered_at >= {s:DateTime64(3)} ORDER BY ALL",
                {"s": since})
    windowed = rows(client, "SELECT * EXCEPT (sla_threshold_s, short_abandon_s) "
                            "FROM pbx.queue_calls_since(since = {s:DateTime64(3)}) ORDER BY ALL", {"s": since})
    assert len(full) > 100 and windowed == full


@pytest.mark.parametrize("view", ["queue_stats_15m", "agent_stats_15m"])
def test_materialized_equals_computed_from_raw_events(read_when, view: str) -> None:
    client, _ = read_when
    materialized = rows(client, f"SELECT * FROM pbx.{view} ORDER BY interval_start, 2")
    raw = rows(client, f"SELECT * FROM pbx.{view}_raw ORDER BY interval_start, 2")
    assert len(raw) > 100
    assert materialized == [{k: (pytest.approx(v) if isinstance(v, float) else v) for k, v in r.items()} for r in raw]

