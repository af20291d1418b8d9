"""``pbx-analytics simulate``: deterministic, in the spec's format, and its truth follows issue 4.

The truth is checked here against a second, deliberately naive implementation
of the definitions that reads only the emitted webhooks (second by second for
agent time), so the analytics views are compared with something trustworthy.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter, defaultdict
from urllib.parse import parse_qsl

import pytest

from ingest.cli import main
from ingest.events.decode import decode, parse_query
from ingest.events.spec import EVENTS
from ingest.simulation import SimConfig, SimConfigError, simulate
from ingest.simulation.config import READY_STATES

UTC = dt.timezone.utc


def iso(t: int | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def webhooks(sim):
    return [(e.t, e.event, dict(parse_qsl(e.query, keep_blank_values=True))) for e in sim.events]


@pytest.fixture(scope="module")
def default_sim():
    return simulate(SimConfig())


@pytest.fixture(scope="module")
def busy_cut_sim():
    """Heavier load, output cut at the end: waiting calls and open talk exist."""
    return simulate(SimConfig(seed=5, hours=1.5, calls_per_hour=70, end_mode="cut"))


def test_same_seed_same_output_and_another_seed_differs():
    a, b = simulate(SimConfig(seed=42)), simulate(SimConfig(seed=42))
    assert a.events == b.events
    assert json.dumps(a.truth) == json.dumps(b.truth)
    assert simulate(SimConfig(seed=43)).events != a.events


def test_default_scenario_is_fast_and_emits_every_webhook(default_sim):
    started = time.perf_counter()
    simulate(SimConfig(seed=2))
    assert time.perf_counter() - started < 1.0
    assert set(default_sim.truth["event_counts"]) == set(EVENTS)
    assert sum(default_sim.truth["event_counts"].values()) == len(default_sim.events)
    assert [e.t for e in default_sim.events] == sorted(e.t for e in default_sim.events)


def test_every_webhook_decodes_through_the_service_decoding_path(default_sim):
    for e in default_sim.events:
        decode(e.event, parse_query(e.query))  # raises on a missing required parameter
    dial = next(e for e in default_sim.events if e.event == "start_int_dial")
    assert dial.query.count("&queue_name=") == 2  # as the PBX sends it
    assert [k for k, _ in parse_qsl(dial.query, keep_blank_values=True)] == [
        "caller_num", "caller_exten", "caller_name", "dialed_num", "dialed_exten", "line_num", "line_name",
        "line_userid", "custom_call_id", "call_id", "cel_id", "queue_name", "caller_type", "queue_name",
        "direction",
    ]


def test_scenario_has_the_cases_the_views_must_handle(default_sim, busy_cut_sim):
    outcomes = Counter(v["outcome"] for v in busy_cut_sim.truth["queue_visits"])
    assert {"answered", "overflow", "short_abandon", "abandoned", "waiting"} <= set(outcomes)
    hooks = webhooks(busy_cut_sim) + webhooks(default_sim)
    states = {p["state_name"] for _, e, p in hooks if e == "pbx_agent_set_state"}
    assert states & {"break", "lunch", "meeting", "training"} and states & {"available", "Online", "ready"}
    assert any(p["reason"] == "unanswered_queue_call" for _, e, p in hooks if e == "exten_paused")
    spies = default_sim.truth["spy_sessions"] + busy_cut_sim.truth["spy_sessions"]
    assert any(s["ended_at"] is None for s in spies) and any(s["ended_at"] for s in spies)
    recs = default_sim.truth["recordings"] + busy_cut_sim.truth["recordings"]
    assert any(r["unstopped"] for r in recs) and any(r["segments"] >= 2 for r in recs)
    assert any(e == "start_call" and p["caller_type"] == "internal" for _, e, p in hooks)


def test_drain_mode_ends_everything_it_started(default_sim):
    counts = default_sim.truth["event_counts"]
    assert counts["pbx_agent_login"] == counts["pbx_agent_logout"]
    lost = sum(c["ended_at"] is None for c in default_sim.truth["calls"])  # call_end lost by the PBX
    assert counts["start_call"] == counts["call_end"] + lost and 0 < lost < counts["start_call"] / 20
    assert all(v["outcome"] != "waiting" for v in default_sim.truth["queue_visits"])
    assert default_sim.truth["period"]["until"] is None


def literal_visits(sim, short_abandon_s: int = 5, sla: int = 20) -> list[dict]:
    """Issue 4's queue-visit definitions, read straight off the webhooks."""
    hooks = webhooks(sim)
    visits = []
    for t, e, p in hooks:
        if e != "queue_in":
            continue
        cid, q = p["call_id"], p["queue_name"]
        left = next((t2 for t2, e2, p2 in hooks if e2 == "queue_out" and p2["call_id"] == cid
                     and p2["queue_name"] == q and t2 >= t), None)
        if left is None:
            left = next((t2 for t2, e2, p2 in hooks if e2 == "call_end" and p2["call_id"] == cid), None)
        ans = None
        if left is not None:
            ans = next(((t2, p2["line_userid"]) for t2, e2, p2 in hooks if e2 == "answered_internal"
                        and p2["call_id"] == cid and t <= t2 <= left), None)
        later = any(e2 == "queue_in" and p2["call_id"] == cid and t2 > t for t2, e2, p2 in hooks)
        if ans:
            outcome, wait = "answered", ans[0] - t
        elif later:
            outcome, wait = "overflow", left - t
        elif left is None:
            outcome, wait = "waiting", None
        else:
            wait = left - t
            outcome = "short_abandon" if wait < short_abandon_s else "abandoned"
        visits.append({
            "call_id": cid, "queue_name": q, "entered_at": iso(t), "left_at": iso(left),
            "answered_at": iso(ans[0]) if ans else None, "agent": ans[1] if ans else None, "wait_s": wait,
            "outcome": outcome, "in_sla": outcome == "answered" and wait <= sla,
        })
    return visits


@pytest.mark.parametrize("which", ["default_sim", "busy_cut_sim"])
def test_truth_queue_visits_follow_the_definitions_literally(which, request):
    sim = request.getfixturevalue(which)
    assert sim.truth["queue_visits"] == literal_visits(sim)
    assert sim.truth["thresholds"] == {"sla_threshold_s": 20, "short_abandon_s": 5, "sla_target_pct": 80.0}
    stats = sim.truth["queue_stats_15m"]
    outcomes = Counter(v["outcome"] for v in sim.truth["queue_visits"])
    assert sum(r["offered"] for r in stats) == len(sim.truth["queue_visits"]) - outcomes["waiting"]
    assert sum(r["short_abandoned"] for r in stats) == outcomes["short_abandon"]
    assert sum(r["answered_in_sla"] for r in stats) == sum(v["in_sla"] for v in sim.truth["queue_visits"])


def literal_agent_seconds(sim, until: int | None) -> dict[tuple[str, str], dict]:
    """Issue 4's agent time, one second at a time, from the webhooks alone."""
    hooks = webhooks(sim)
    by_agent: dict[str, list] = defaultdict(list)
    for t, e, p in hooks:
        if e in ("pbx_agent_login", "pbx_agent_logout", "pbx_agent_set_state"):
            by_agent[p["userid"]].append((t, e, p))
    talks: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for t, e, p in hooks:
        if e in ("answered_internal", "answered_external"):
            agent, cid = p["line_userid"], p["call_id"]
            end = next((t2 for t2, e2, p2 in hooks if e2 == "hangup_internal" and p2["call_id"] == cid
                        and p2["line_userid"] == agent and t2 >= t), None)
            if end is None:
                end = next((t2 for t2, e2, p2 in hooks if e2 == "call_end" and p2["call_id"] == cid), until)
            talks[agent].append((t, end))
    last = until if until is not None else max(t for t, _, _ in hooks)
    out: dict[tuple[str, str], dict] = {}
    for agent, evs in by_agent.items():
        i, logged, ready = 0, False, True
        for s in range(evs[0][0], last):
            while i < len(evs) and evs[i][0] <= s:  # the state after every event of second s
                _, e, p = evs[i]
                if e == "pbx_agent_login":
                    logged, ready = True, True
                elif e == "pbx_agent_logout":
                    logged = False
                else:
                    ready = p["state_name"].lower() in READY_STATES
                i += 1
            if not logged:
                continue
            key = (agent, iso(s - s % 900))
            row = out.setdefault(key, {"logged_in_s": 0, "paused_s": 0, "talk_s": 0, "idle_s": 0})
            row["logged_in_s"] += 1
            if any(a <= s < b for a, b in talks[agent]):
                row["talk_s"] += 1
            elif not ready:
                row["paused_s"] += 1
            else:
                row["idle_s"] += 1
    answered = {(p["call_id"], p["line_userid"]) for _, e, p in hooks if e == "answered_internal"}
    for t, e, p in hooks:
        key = (p.get("line_userid"), iso(t - t % 900))
        if e == "answered_internal":
            out.setdefault(key, {})["calls_answered"] = out.get(key, {}).get("calls_answered", 0) + 1
        elif e == "start_int_dial" and (p["call_id"], p["line_userid"]) not in answered:
            out.setdefault(key, {})["ring_no_answer"] = out.get(key, {}).get("ring_no_answer", 0) + 1
    return out


@pytest.mark.parametrize("which", ["default_sim", "busy_cut_sim"])
def test_truth_agent_seconds_follow_the_definitions_second_by_second(which, request):
    sim = request.getfixturevalue(which)
    until = int(sim.config.end_s) if sim.config.end_mode == "cut" else None
    literal = literal_agent_seconds(sim, until)
    truth = {(r["agent"], r["interval_start"]): r for r in sim.truth["agent_seconds"]}
    assert set(truth) == {k for k, v in literal.items() if any(v.values())}
    for key, row in truth.items():
        want = literal[key]
        for col in ("logged_in_s", "paused_s", "talk_s", "idle_s", "calls_answered", "ring_no_answer"):
            assert row[col] == want.get(col, 0), (key, col)
        assert row["logged_in_s"] == row["paused_s"] + row["talk_s"] + row["idle_s"]
    assert sum(r["paused_s"] for r in truth.values()) > 0


def test_truth_recordings_and_spy_sessions_follow_the_definitions(default_sim):
    hooks = webhooks(default_sim)
    for rec in default_sim.truth["recordings"]:
        cid = rec["call_id"]
        mine = [(t, e) for t, e, p in hooks if p.get("call_id") == cid]
        answer = min(t for t, e in mine if e in ("answered_internal", "answered_external"))
        end = next((t for t, e in mine if e == "call_end"), None)  # None: the PBX lost it
        marks = [(t, e) for t, e in mine if e.startswith("call_recording_")]
        total, unstopped = 0, False
        for i, (t, e) in enumerate(marks):
            if e == "call_recording_start":
                stop = next((t2 for t2, e2 in marks[i + 1:] if e2 == "call_recording_stop"), None)
                unstopped |= stop is None
                if end is not None:
                    total += max(0, min(stop if stop is not None else end, end) - max(t, answer))
        if end is None and marks:
            total = None  # recorded, not ended: no bound to clip at
        talk = None if end is None else end - answer
        assert (rec["answered_at"], rec["ended_at"], rec["talk_s"]) == (iso(answer), iso(end), talk)
        assert (rec["recording_s"], rec["unstopped"]) == (total, unstopped)
        assert rec["segments"] == sum(e == "call_recording_start" for _, e in marks)
    starts = [(t, p) for t, e, p in hooks if e == "call_spy_start"]
    assert len(default_sim.truth["spy_sessions"]) == len(starts)
    for (t, p), s in zip(starts, default_sim.truth["spy_sessions"]):
        key = (p["call_id"], p["spying_userid"], p["spying_target_userid"])
        end = next((t2 for t2, e2, p2 in hooks if e2 == "call_spy_end" and t2 >= t
                    and (p2["call_id"], p2["spying_userid"], p2["spying_target_userid"]) == key), None)
        assert (s["started_at"], s["ended_at"], s["spy_type"]) == (iso(t), iso(end), p["spy_type"])


def test_no_same_second_ties_whose_order_would_change_a_metric(busy_cut_sim, default_sim):
    for sim in (default_sim, busy_cut_sim):
        hooks = webhooks(sim)
        state = Counter((t, p["userid"]) for t, e, p in hooks if e.startswith("pbx_agent_"))
        assert max(state.values()) == 1  # one login/logout/set_state per agent per second
        ends = {(t, p["line_userid"]) for t, e, p in hooks if e == "hangup_internal"}
        starts = {(t, p["line_userid"]) for t, e, p in hooks if e in ("answered_internal", "start_int_dial")}
        assert not ends & starts  # never rung or answering in the second of a hang-up
        outs = {(p["call_id"], t) for t, e, p in hooks if e == "queue_out"}
        for t, e, p in hooks:
            if e == "queue_in":
                assert (p["call_id"], t) not in outs  # an overflow re-enters a second later
        recs = Counter((t, p["call_id"]) for t, e, p in hooks if e.startswith("call_recording_"))
        assert max(recs.values()) == 1


def test_truth_file_and_access_log_from_the_command_line(tmp_path, capsys):
    log, truth = tmp_path / "sim.log", tmp_path / "truth.json"
    code = main(["simulate", "--seed", "3", "--hours", "0.5", "--queues", "2", "--agents", "4",
                 "--start", "2026-07-01T10:00+02:00", "--access-log", str(log), "--log-format", "common",
                 "--tz-offset", "-0500", "--truth", str(truth)])
    assert code == 0 and "events" in capsys.readouterr().out
    data = json.loads(truth.read_text())
    assert {"event_counts", "queue_visits", "agent_seconds", "spy_sessions", "recordings", "thresholds",
            "period"} <= set(data)
    assert data["period"]["start"] == "2026-07-01T08:00:00Z"
    lines = log.read_text().splitlines()
    assert len(lines) == sum(data["event_counts"].values())
    assert lines[0].endswith('HTTP/1.1" 200 3') and "/Jul/2026:0" in lines[0] and "-0500]" in lines[0]


def test_without_start_the_file_ends_now(tmp_path, capsys):
    """Today's figures for the dashboards' default ranges; nothing stamped in the future."""
    log = tmp_path / "now.log"
    before = time.time()
    assert main(["simulate", "--hours", "0.5", "--agents", "3", "--access-log", str(log)]) == 0
    times = [dt.datetime.strptime(line.split("[", 1)[1][:26], "%d/%b/%Y:%H:%M:%S %z").timestamp()
             for line in log.read_text().splitlines()]
    assert before - 3 * 3600 < times[0] < before - 0.4 * 3600 and max(times) <= time.time()
    assert max(times) > before - 3600


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(["--hours", "0"], "hours must be positive", id="hours"),
        pytest.param(["--start", "yesterday"], "expected an ISO date-time", id="start"),
        pytest.param(["--tz-offset", "Mars/Olympus"], "expected +HHMM", id="tz"),
        pytest.param(["--speed", "60", "--target", "http://127.0.0.1:9"], "--speed is gone", id="speed"),
        pytest.param(["--concurrency", "0"], "concurrency must be at least 1", id="concurrency"),
        pytest.param(["--jitter-ms", "-1"], "--jitter-ms must be within 0..10000", id="jitter"),
        pytest.param(["--live-hours", "1"], "--live-hours needs --target", id="live-without-target"),
        pytest.param(["--start", "2026-11-02T08:00", "--live-hours", "1", "--target", "http://127.0.0.1:9"],
                     "with --start, --hours is the whole period", id="live-with-start"),
        pytest.param(["--hours", "0"], "nothing to simulate", id="nothing"),
        pytest.param(["--set", "mean_talk_s"], "expected NAME=VALUE", id="set-without-value"),
        pytest.param(["--set", "no_such=1"], "expected NAME=VALUE with NAME one of", id="set-unknown"),
        pytest.param(["--set", "max_talk_s=ten"], "expected a int", id="set-type"),
    ],
)
def test_bad_flags_are_named(flags, message, capsys):
    assert main(["simulate", *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_scenario_outside_the_model_is_refused():
    with pytest.raises(SimConfigError):
        SimConfig(end_mode="later")
