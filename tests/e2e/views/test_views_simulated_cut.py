"""The analytics views against the simulator's truth when the output stops mid-day.

Calls still in progress, recordings and spying not ended, visits without an
end. (Its own module: the embedded engine holds one data directory per
process, and ``test_views_simulated`` keeps its engine open for the module.)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ingest.backfill.importer import import_files
from ingest.simulation import SimConfig, simulate, write_access_log
from tests.e2e.views.views_helpers import read


def _time(iso: str | None) -> dt.datetime | None:
    return None if iso is None else dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")


def test_a_period_cut_mid_call_matches_the_truth(tmp_path: Path) -> None:
    """Output stopped at the period end: truth and views agree on what is still open."""
    from ingest.storing import clickhouse, migrations

    sim = simulate(SimConfig(seed=11, hours=6, queues=3, agents=6, calls_per_hour=60, end_mode="cut"))
    log = tmp_path / "cut.log"
    write_access_log(log, sim.events)
    client = clickhouse.connect(f"chdb://{tmp_path / 'db'}")
    try:
        migrations.apply_migrations(client)
        import_files(client, [log])
        # Read at once (no refresh has run: everything computed live), then stored (read() does both).
        truth = sim.truth
        calls = {(r["call_id"], r["queue_name"], r["entered_at"]): r
                 for r in read(client, "SELECT * FROM pbx.queue_calls")}
        assert calls == {
            (v["call_id"], v["queue_name"], _time(v["entered_at"])): dict(
                call_id=v["call_id"], queue_name=v["queue_name"], entered_at=_time(v["entered_at"]),
                left_at=_time(v["left_at"]), answered_at=_time(v["answered_at"]), agent=v["agent"],
                wait_s=v["wait_s"], outcome=v["outcome"], in_sla=int(v["in_sla"]))
            for v in truth["queue_visits"]}
        recordings = {r["call_id"]: r for r in read(client, "SELECT * EXCEPT at FROM pbx.recording_audit")}
        expected = {
            r["call_id"]: dict(r, answered_at=_time(r["answered_at"]), ended_at=_time(r["ended_at"]),
                               recorded=int(r["recorded"]), unstopped=int(r["unstopped"]),
                               coverage_pct=None if r["coverage_pct"] is None else pytest.approx(r["coverage_pct"]))
            for r in truth["recordings"]}
        assert any(r["ended_at"] is None and r["recorded"] for r in expected.values())
        assert recordings == expected
        spies = read(client, "SELECT * FROM pbx.spy_sessions ORDER BY call_id, started_at")
        assert spies == sorted((dict(s, started_at=_time(s["started_at"]), ended_at=_time(s["ended_at"]))
                                for s in truth["spy_sessions"]), key=lambda s: (s["call_id"], s["started_at"]))
    finally:
        client.close()
