"""The simulator as a live PBX (issue 10): real time, concurrent requests, jitter, over HTTP.

``pbx-analytics simulate --target`` runs as its own process against ``serve``
on the embedded engine: a short, dense scenario (about 50 calls in 12 seconds,
answered, abandoned, short-abandoned, overflowed; 35 seconds of webhooks) sent
at each event's second plus up to 150 ms of seeded jitter, so events of one
instant arrive in either order -- among them each answered call's
``answered_internal`` and ``queue_out``, the hazard of issue 10. The service
stamps arrival times; the truth holds the intended ones. Every
``pbx.queue_calls`` row must match the truth (outcome, agent, times within the
jitter: the largest delay of an arrival stamp behind its event's second, which
is the jitter plus whatever the sender and the service lag on a loaded
machine), and ``pbx.agent_stats_15m``'s talk and idle time within that per call.

Which assertions need which branch: the pairing rules that tolerate reordering
are issue 10's SQL (sqlcore); until they are in ``sql/``, the queue_calls test
is an expected failure, and must fail with an AssertionError naming the answered
visits the reordering broke (strict: if it passes without them, the test no
longer catches the hazard).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from ingest.simulation import SimConfig, simulate
from ingest.storing import clickhouse
from ingest.testing import REPO, ServeProcess, query_dicts, refresh_views, stored

UTC = dt.timezone.utc

JITTER_MS = 150
#: The dense scenario: flat hourly profile, everyone logged in at once, short talks and patience.
DENSE = ["--seed", "4", "--hours", "0", "--live-hours", "0.0034", "--queues", "3", "--agents", "10",
         "--calls-per-hour", "3000", "--set", "hourly_profile=1", "--set", "login_spread_s=0",
         "--set", "mean_talk_s=6", "--set", "min_talk_s=3", "--set", "max_talk_s=10",
         "--set", "mean_patience_s=6", "--set", "short_abandon_share=0.2", "--set", "overflow_after_s=5",
         "--set", "ring_timeout_s=10", "--set", "drain_check_s=1"]
#: serve applies every migration on a fresh engine before it answers (a minute or more on a
#: loaded machine, for a schema with many views).
SERVE_START_S = 300

#: Arrivals later than this behind their second could reorder events the simulator keeps a
#: second apart because their order matters (docs/simulator.md, same-second ties).
MAX_DEVIATION_S = 1.0


def _epoch(iso: str | None) -> float | None:
    return None if iso is None else dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=UTC).timestamp()


def _simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingest", "simulate", *args], capture_output=True, text=True,
                          timeout=180, cwd=REPO)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, migrated_copy) -> dict[str, Any]:
    """The dense scenario sent live to serve; then serve stopped and the views read."""
    tmp = tmp_path_factory.mktemp("live")
    serve = ServeProcess(migrated_copy(tmp / "chdata"), timeout=SERVE_START_S)
    try:
        run = _simulate("--target", serve.url, "--jitter-ms", str(JITTER_MS), "--truth", str(tmp / "truth.json"),
                        "--clickhouse", f"chdb://{tmp / 'unused'}", *DENSE)
    finally:
        assert serve.stop() == 0, serve.log()[-3000:]
    assert run.returncode == 0, run.stdout + run.stderr
    truth = json.loads((tmp / "truth.json").read_text())
    client = clickhouse.connect(serve.dsn)
    try:  # read everything, then close: the embedded engine is one path per process
        refresh_views(client)
        events = query_dicts(client, "SELECT event, received_at, call_id, cel_id, userid FROM pbx.events")
        data = {
            "truth": truth, "stdout": run.stdout, "stderr": run.stderr, "events": events,
            "deviation_s": _arrival_deviations(events, truth),
            "queue_calls": query_dicts(client, "SELECT * FROM pbx.queue_calls"),
            "agent_stats": query_dicts(client, "SELECT * FROM pbx.agent_stats_15m"),
        }
    finally:
        client.close()
    data["tolerance_s"] = max(data["deviation_s"]) + 0.001  # received_at is stamped to the ms
    return data


def _arrival_deviations(events: list[dict[str, Any]], truth: dict[str, Any]) -> list[float]:
    """How far behind its simulated second each stored event was stamped (the same seed and
    config give the same events: recomputed here). Call events are matched by cel_id, agent
    events by agent and order."""
    config = dict(truth["config"], start=dt.datetime.fromisoformat(truth["config"]["start"]),
                  hourly_profile=tuple(truth["config"]["hourly_profile"]))
    intended: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for e in simulate(SimConfig(**config)).events:
        p = dict(parse_qsl(e.query))
        key = ("cel", p["cel_id"]) if "cel_id" in p else (e.event, p.get("userid", ""), p.get("call_id", ""))
        intended[key].append(e.t)
    arrived: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for e in events:
        key = ("cel", e["cel_id"]) if e["cel_id"] else (e["event"], e["userid"], e["call_id"])
        arrived[key].append(_ts(e["received_at"]))  # type: ignore[arg-type]
    assert arrived.keys() == intended.keys()
    return [a - t for key in intended for a, t in zip(sorted(arrived[key]), sorted(intended[key]))]


def test_the_live_send_reports_one_summary_and_no_request_log(live) -> None:
    assert re.search(r"live: sent \d+ to .* in real time .*, 0 failed; jitter up to 150 ms; latest \d+ ms behind",
                     live["stdout"]), live["stdout"]
    assert "past:" not in live["stdout"]  # live only: nothing was due when sending started
    assert "HTTP Request" not in live["stderr"] and live["stderr"].count("\n") < 5  # no line per request


def test_every_event_is_stored_once_at_its_second_plus_the_jitter(live) -> None:
    truth, deviations = live["truth"], sorted(live["deviation_s"])
    assert Counter(e["event"] for e in live["events"]) == truth["event_counts"]
    assert deviations[0] >= 0, "an event was stamped before its second"
    # Spread over the jitter (uniform in [0, 150 ms)); the tail is the machine's lag.
    assert deviations[len(deviations) // 10] < 0.1 and deviations[len(deviations) // 2] > 0.03
    assert deviations[-1] < MAX_DEVIATION_S, (
        f"arrivals up to {deviations[-1]:.3f} s behind their second (median {deviations[len(deviations) // 2]:.3f} "
        f"s): the sender or the service lagged too much for a live comparison (a loaded machine?)")


def test_events_of_one_instant_arrived_in_either_order(live) -> None:
    """The scenario exercises issue 10's hazard: cel_ids rise in the PBX's order of events."""
    by_call: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in live["events"]:
        if e["cel_id"]:
            by_call[e["call_id"]].append(e)
    overtaken = Counter()
    for evs in by_call.values():
        evs.sort(key=lambda e: e["received_at"])
        for i, a in enumerate(evs):
            for b in evs[i + 1:]:
                if int(b["cel_id"]) < int(a["cel_id"]):
                    overtaken[(b["event"], a["event"])] += 1
    assert overtaken[("answered_internal", "queue_out")] >= 2, overtaken
    assert sum(overtaken.values()) >= 5, overtaken


def _visit_mismatches(rows: list[dict[str, Any]], truth: dict[str, Any], tol: float) -> list[str]:
    """What differs between pbx.queue_calls and the truth beyond the tolerance, one line each.
    An outcome or in_sla that depends on a wait within ``tol`` of a threshold may go either way."""
    short, sla = truth["thresholds"]["short_abandon_s"], truth["thresholds"]["sla_threshold_s"]
    got = {(r["call_id"], r["queue_name"]): r for r in rows}
    want = {(v["call_id"], v["queue_name"]): v for v in truth["queue_visits"]}
    assert len(want) == len(truth["queue_visits"])  # one visit per call and queue in this scenario
    out = [f"{k}: not in pbx.queue_calls" for k in want.keys() - got.keys()]
    out += [f"{k}: not in the truth" for k in got.keys() - want.keys()]

    def near(a: float | None, b: float | None) -> bool:
        return (a is None) == (b is None) and (a is None or abs(a - b) <= tol)  # type: ignore[operator]

    for key in sorted(want.keys() & got.keys()):
        v, r = want[key], got[key]
        outcome_ok = r["outcome"] == v["outcome"] or (
            {r["outcome"], v["outcome"]} == {"abandoned", "short_abandon"} and abs(v["wait_s"] - short) <= tol)
        sla_ok = bool(r["in_sla"]) == v["in_sla"] or (v["outcome"] == "answered" and abs(v["wait_s"] - sla) <= tol)
        checks = {
            "outcome": outcome_ok, "agent": r["agent"] == v["agent"], "in_sla": sla_ok,
            "wait_s": near(r["wait_s"], v["wait_s"]),
            "entered_at": near(_ts(r["entered_at"]), _epoch(v["entered_at"])),
            "left_at": near(_ts(r["left_at"]), _epoch(v["left_at"])),
            "answered_at": near(_ts(r["answered_at"]), _epoch(v["answered_at"])),
        }
        if not all(checks.values()):
            bad = [k for k, ok in checks.items() if not ok]
            out.append(f"{v['outcome']} visit {key} ({v['agent']}, wait {v['wait_s']}) stored as {r['outcome']} "
                       f"({r['agent']}, wait {r['wait_s']}): {', '.join(bad)} differ")
    return out


def test_every_queue_visit_matches_the_truth_within_the_jitter(live) -> None:
    truth = live["truth"]
    outcomes = Counter(v["outcome"] for v in truth["queue_visits"])
    assert {"answered", "abandoned", "short_abandon", "overflow"} <= set(outcomes) and len(truth["calls"]) >= 30
    bad = _visit_mismatches(live["queue_calls"], truth, live["tolerance_s"])
    assert not bad, (f"{len(bad)} of {len(truth['queue_visits'])} visits differ beyond "
                     f"{live['tolerance_s'] * 1000:.0f} ms:\n" + "\n".join(bad[:12]))


def test_agent_talk_and_idle_time_match_the_truth_within_the_jitter_per_call(live) -> None:
    """Each talk segment's two ends may each move by the tolerance; so may a login and a logout."""
    tol = live["tolerance_s"]
    want = {(r["agent"], _epoch(r["interval_start"])): r for r in live["truth"]["agent_seconds"]}
    got = {(r["agent"], _ts(r["interval_start"])): r for r in live["agent_stats"]}
    answers = Counter(a for c in live["truth"]["calls"] for a in c["agents"])  # talk segments per agent
    assert sum(r["talk_s"] for r in want.values()) > 60 and sum(r["idle_s"] for r in want.values()) > 60
    zero = {"logged_in_s": 0, "paused_s": 0, "talk_s": 0, "idle_s": 0, "calls_answered": 0, "ring_no_answer": 0}
    for key in want.keys() | got.keys():
        w, g = want.get(key, zero), got.get(key, zero)
        segments = answers[key[0]]
        for col, slack in (("logged_in_s", 2), ("talk_s", 2 * segments), ("idle_s", 2 + 2 * segments),
                           ("paused_s", 0)):
            assert abs(g[col] - w[col]) <= slack * tol + 1e-9, (key, col, g[col], w[col], f"{segments} calls")
    for col in ("calls_answered", "ring_no_answer"):  # counts: per agent, whatever the interval
        for agent in {k[0] for k in want}:
            assert (sum(r[col] for k, r in got.items() if k[0] == agent)
                    == sum(r[col] for k, r in want.items() if k[0] == agent)), (agent, col)


# ---- what is already due goes through the import path, with its own times ----------------


def test_the_past_part_is_imported_with_its_own_times_and_the_rest_sent_live(tmp_path: Path, migrated_copy) -> None:
    """A period ending now plus a few live seconds: the events already due land in the engine
    of --clickhouse at their own seconds, the rest reach the service live, none twice."""
    serve = ServeProcess(migrated_copy(tmp_path / "served"), timeout=SERVE_START_S)
    past_dsn = f"chdb://{migrated_copy(tmp_path / 'past')}"  # migrated beforehand: the import itself takes a moment
    try:
        run = _simulate("--target", serve.url, "--clickhouse", past_dsn, "--truth", str(tmp_path / "truth.json"),
                        "--seed", "2", "--hours", "0.01", "--live-hours", "0.002", "--queues", "2", "--agents", "4",
                        "--calls-per-hour", "600", "--set", "hourly_profile=1", "--set", "login_spread_s=5",
                        "--set", "max_talk_s=12", "--set", "min_talk_s=3", "--set", "mean_patience_s=10",
                        "--set", "drain_check_s=1")
    finally:
        assert serve.stop() == 0, serve.log()[-3000:]
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"past: imported \d+ events", run.stdout), run.stdout
    truth = json.loads((tmp_path / "truth.json").read_text())
    past = stored(past_dsn, "SELECT event, received_at FROM pbx.events")
    sent = stored(serve.dsn, "SELECT event, received_at FROM pbx.events")
    assert past and sent
    assert Counter(e["event"] for e in past + sent) == truth["event_counts"]
    assert all(e["received_at"].microsecond == 0 for e in past)  # the log's whole seconds
    assert max(e["received_at"] for e in past) <= min(e["received_at"] for e in sent) + dt.timedelta(seconds=1)


def test_a_past_part_while_serve_holds_the_embedded_engine_is_refused_before_sending(tmp_path: Path,
                                                                                     migrated_copy) -> None:
    serve = ServeProcess(migrated_copy(tmp_path / "chdata"), timeout=SERVE_START_S)
    try:
        run = _simulate("--target", serve.url, "--clickhouse", serve.dsn, "--hours", "0.05", "--live-hours", "0.01")
    finally:
        assert serve.stop() == 0
    assert run.returncode == 1
    assert "already due" in run.stderr and "--hours 0" in run.stderr and "is in use by process" in run.stderr
    assert stored(serve.dsn, "SELECT count() AS n FROM pbx.events") == [{"n": 0}]
