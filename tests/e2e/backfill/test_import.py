"""``pbx-analytics import``: access logs -> pbx.events, on the real embedded engine."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.backfill import importer
from ingest.backfill.accesslog import format_line, offset_function, parse_log_time
from ingest.cli import main as cli_main
from ingest.config import ImportOptions
from ingest.simulation import SimConfig, SimEvent, simulate
from ingest.storing import clickhouse
from ingest.testing import ServeProcess, settle_views

UTC = dt.timezone.utc


def _snapshot(client) -> list[tuple]:
    """Every stored event, every column but ``seq``, in a stable order.

    (``seq`` is a line's place in the file it was first imported from, counted from
    that file's first second: the same line read from another file of an overlapping
    rotation has another.)
    """
    return client.query("SELECT * EXCEPT seq FROM pbx.events ORDER BY event_id").result_rows


def _lines(events: list[SimEvent], tz: str = "+0100", fmt: str = "combined") -> list[str]:
    offset = offset_function(tz)
    return [format_line(e.t, e.target, offset(e.t), fmt) for e in events]


def _write(path: Path, lines: list[str]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(lines)
    return path


@pytest.fixture(scope="module")
def sim():
    return simulate(SimConfig(seed=7, hours=1.0))


def _with_same_second_twin(lines: list[str]) -> list[str]:
    """Two genuinely identical requests in one second: both are events."""
    i = next(n for n, line in enumerate(lines) if "/call_recording_start?" in line)
    return [*lines[: i + 1], lines[i], *lines[i + 1:]]


def test_shuffled_overlapping_files_imported_twice_store_the_same_events_as_one_clean_import(sim, tmp_path,
                                                                                              migrated_copy):
    lines = _with_same_second_twin(_lines(sim.events))
    clean = _write(tmp_path / "access.log", lines)
    # Rotation-style overlap: each file repeats the last lines of the one before.
    third = len(lines) // 3
    parts = [
        _write(tmp_path / "access.log.3.gz", lines[: third + 50]),
        _write(tmp_path / "access.log.2", lines[third - 20: 2 * third + 40]),
        _write(tmp_path / "access.log.1.gz", lines[2 * third:]),
    ]

    client = clickhouse.connect(f"chdb://{migrated_copy(tmp_path / 'clean')}")
    try:
        stats = importer.import_files(client, [clean])
        expected = _snapshot(client)
    finally:
        client.close()
    assert stats.imported == len(lines) == len(expected)
    assert stats.duplicates == stats.bad == stats.skipped == 0

    client = clickhouse.connect(f"chdb://{migrated_copy(tmp_path / 'messy')}")
    try:
        order = parts[::-1]  # newest first
        first = importer.import_files(client, order, batch_size=300, jobs=2)  # two decoding processes
        random.Random(3).shuffle(order)
        second = importer.import_files(client, [*order, clean], batch_size=1000, jobs=1)  # pipelined
        got = _snapshot(client)
    finally:
        client.close()
    assert got == expected
    assert first.imported == len(lines) and first.duplicates == 70 + 40
    assert second.imported == 0 and second.duplicates == second.lines


def test_rows_carry_the_log_time_in_utc_and_the_decoded_parameters(sim, tmp_path, ch):
    log = _write(tmp_path / "a.log", _lines(sim.events[:50], tz="+0100"))
    importer.import_files(ch, [log])
    first = sim.events[0]
    row = ch.query(
        "SELECT received_at, event, source, userid, exten FROM pbx.events ORDER BY received_at, event LIMIT 1"
    ).result_rows[0]
    assert row == (dt.datetime.fromtimestamp(first.t, UTC).replace(tzinfo=None), first.event, "import",
                   *[v for k, v in (p.split("=") for p in first.query.split("&"))])
    dial = ch.query(
        "SELECT queue_name, extra FROM pbx.events WHERE event = 'start_int_dial' LIMIT 1").result_rows
    if dial:  # the repeated queue_name is one value, as the live service stores it
        assert dial[0][0] and dial[0][1] == {}


@pytest.mark.parametrize("states", [["meeting", "online"], ["online", "meeting"]],
                         ids=["meeting-then-online", "online-then-meeting"])
@pytest.mark.parametrize("file_order", [[0, 1], [1, 0]], ids=["older-file-first", "newer-file-first"])
def test_two_rotated_files_cutting_one_second_keep_the_logs_order(tmp_path, ch, states, file_order):
    # The log rotated within second S: its last line before the cut is on line 4 of the older
    # file, its first line after the cut on line 1 of the newer one. The views must take the
    # two states in the log's order, whichever file is imported first.
    t0 = 1_793_610_000  # 2026-11-02 09:00:00 UTC, an interval's start
    older = [(t0, "pbx_agent_login?userid=a1"), (t0 + 10, "call_start?call_id=c1"),
             (t0 + 20, "call_end?call_id=c1"), (t0 + 100, f"pbx_agent_set_state?userid=a1&state_name={states[0]}")]
    newer = [(t0 + 100, f"pbx_agent_set_state?userid=a1&state_name={states[1]}"),
             (t0 + 700, "pbx_agent_logout?userid=a1")]
    files = [_write(tmp_path / name, [format_line(t, "/" + target, 3600) for t, target in lines])
             for name, lines in (("access.log.1", older), ("access.log", newer))]
    importer.import_files(ch, [files[i] for i in file_order])

    in_order = ch.query("SELECT state_name FROM pbx.events WHERE event = 'pbx_agent_set_state' "
                        "ORDER BY received_at, seq").result_rows
    assert [r[0] for r in in_order] == states
    settle_views(ch)
    paused, idle = ch.query("SELECT paused_s, idle_s FROM pbx.agent_stats_15m").result_rows[0]
    assert (paused, idle) == ((600.0, 100.0) if states[-1] == "meeting" else (0.0, 700.0))


def test_the_same_events_in_common_and_combined_format_plain_and_gzip_are_the_same_rows(sim, tmp_path, ch):
    common = _write(tmp_path / "common.log", _lines(sim.events, fmt="common"))
    combined = _write(tmp_path / "combined.log.gz", _lines(sim.events, fmt="combined"))
    a = importer.import_files(ch, [common])
    b = importer.import_files(ch, [combined])
    assert a.imported == len(sim.events)
    assert b.imported == 0 and b.duplicates == len(sim.events)


def test_gzip_is_recognised_by_content_whatever_the_name(sim, tmp_path, ch):
    log = _write(tmp_path / "rotated.gz", _lines(sim.events[:100]))
    renamed = log.rename(tmp_path / "access.log.7")
    assert importer.import_files(ch, [renamed]).imported == 100


@pytest.mark.parametrize(
    ("day", "before", "after"),
    [
        # Europe/Prague leaves summer time at 01:00 UTC on 25 Oct 2026: local 02:00-02:59 happens twice.
        pytest.param(dt.datetime(2026, 10, 25, tzinfo=UTC), "[25/Oct/2026:02:55:00 +0200]",
                     "[25/Oct/2026:02:00:00 +0100]", id="summer-to-winter"),
        # ...and enters it at 01:00 UTC on 29 Mar 2026: local 02:00-02:59 never happens.
        pytest.param(dt.datetime(2026, 3, 29, tzinfo=UTC), "[29/Mar/2026:01:55:00 +0100]",
                     "[29/Mar/2026:03:00:00 +0200]", id="winter-to-summer"),
    ],
)
def test_offset_change_within_a_file_gives_monotonic_utc_times(day, before, after, tmp_path, ch):
    start = int(day.timestamp())
    times = [start + 300 * i for i in range(25)]  # 00:00 .. 02:00 UTC
    events = [SimEvent(t, "call_end", f"call_id={t}.1") for t in times]
    lines = _lines(events, tz="Europe/Prague")
    assert before in lines[11] and after in lines[12]
    lines.append('10.0.0.5 - - [02/Nov/2026:09:00:17 +0100] "GET /call_end?call_id=x HTTP/1.1" 200 3\n')
    importer.import_files(ch, [_write(tmp_path / "dst.log", lines)])
    got = [r[0] for r in ch.query("SELECT received_at FROM pbx.events ORDER BY call_id").result_rows]
    assert got[:-1] == [dt.datetime.fromtimestamp(t, UTC).replace(tzinfo=None) for t in times]
    assert got[-1] == dt.datetime(2026, 11, 2, 8, 0, 17)


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        pytest.param("02/Nov/2026:09:00:17 +0100", "2026-11-02 08:00:17", id="east-of-utc"),
        pytest.param("01/Jan/2027:00:30:00 +0200", "2026-12-31 22:30:00", id="crosses-year"),
        pytest.param("31/Mar/2026:20:00:00 -0530", "2026-04-01 01:30:00", id="half-hour-west"),
        pytest.param("29/Feb/2028:12:00:00 +0000", "2028-02-29 12:00:00", id="leap-day"),
    ],
)
def test_log_time_is_converted_to_utc(stamp, utc):
    assert dt.datetime.fromtimestamp(parse_log_time(stamp), UTC).strftime("%Y-%m-%d %H:%M:%S") == utc


def test_bad_webhook_lines_are_reported_with_file_and_line_and_the_rest_is_imported(tmp_path, migrated_dsn):
    log = _write(tmp_path / "mixed.log", [
        '10.0.0.5 - - [02/Nov/2026:09:00:17 +0100] "GET /call_end?call_id=1.1 HTTP/1.1" 200 3\n',
        '10.0.0.5 - - [02/Nov/2026:09:00:18 +0100] "GET /healthz HTTP/1.1" 200 3 "-" "kube-probe"\n',
        "this is not an access log line\n",
        '10.0.0.5 - - [02/Nov/2026:09:00:19 +0100] "GET /queue_in?queue_name=sales HTTP/1.1" 404 0\n',
        '10.0.0.5 - - [02/Nov/2026:09:00:20 +0100] "GET /pbx_agent_login?exten=101 HTTP/1.1" 200 3\n',
        '10.0.0.5 - - [02/Nov/2026:09:00:21 +0100] "GET http://pbx.example/call_end?call_id=2.1&x=1 HTTP/1.1" 200 3\n',
        '10.0.0.5 - - [31/Feb/2026:09:00:21 +0100] "GET /call_end?call_id=3.1 HTTP/1.1" 200 3\n',
    ])
    out, err = io.StringIO(), io.StringIO()
    assert importer.run(migrated_dsn, ImportOptions(files=(str(log),)), out=out, err=err) == 0
    assert err.getvalue().splitlines() == [
        f"{log}:4: missing required parameter 'call_id' for queue_in",
        f"{log}:5: missing required parameter 'userid' for pbx_agent_login",
        f"{log}: 2 of 7 lines are not access-log lines; skipped",
    ]
    assert "imported 2," in out.getvalue()
    assert "skipped 1 (not a webhook) + 2 (not a log line), bad 2" in out.getvalue()
    client = clickhouse.connect(migrated_dsn)
    try:
        rows = client.query("SELECT call_id, extra FROM pbx.events ORDER BY call_id").result_rows
    finally:
        client.close()
    assert rows == [("1.1", {}), ("2.1", {"x": "1"})]


def test_decoding_processes_report_bad_lines_and_counts_like_one_process(tmp_path, ch):
    bad = '10.0.0.5 - - [02/Nov/2026:09:00:19 +0100] "GET /queue_out?queue_name=sales HTTP/1.1" 200 3\n'
    good = '10.0.0.5 - - [02/Nov/2026:09:00:{:02d} +0100] "GET /call_end?call_id={} HTTP/1.1" 200 3\n'
    a = _write(tmp_path / "a.log", [good.format(1, "a.1"), bad, "junk\n"])
    b = _write(tmp_path / "b.log.gz", [good.format(2, "b.1"), good.format(3, "b.2"), bad])
    err = io.StringIO()
    stats = importer.import_files(ch, [a, b], errors=err, jobs=2)
    assert sorted(err.getvalue().splitlines()) == [
        f"{a}: 1 of 3 lines are not access-log lines; skipped",
        f"{a}:2: missing required parameter 'call_id' for queue_out",
        f"{b}:3: missing required parameter 'call_id' for queue_out",
    ]
    assert (stats.files, stats.lines, stats.imported, stats.bad, stats.unparsed) == (2, 6, 3, 2, 1)


def test_a_missing_file_is_an_error_naming_it_and_nothing_is_imported(sim, tmp_path, migrated_dsn):
    good = _write(tmp_path / "good.log", _lines(sim.events[:10]))
    err = io.StringIO()
    code = importer.run(migrated_dsn, ImportOptions(files=(str(good), str(tmp_path / "nope.log"))),
                        out=io.StringIO(), err=err)
    assert code == 1
    assert f"{tmp_path / 'nope.log'}: cannot open" in err.getvalue()
    client = clickhouse.connect(migrated_dsn)
    try:
        assert client.query("SELECT count() FROM pbx.events").result_rows == [(0,)]
    finally:
        client.close()


def test_no_migrate_on_an_empty_engine_says_to_migrate(sim, tmp_path, dsn):
    log = _write(tmp_path / "a.log", _lines(sim.events[:5]))
    err = io.StringIO()
    assert importer.run(dsn, ImportOptions(files=(str(log),), migrate=False), out=io.StringIO(), err=err) == 1
    assert "pbx.events does not exist" in err.getvalue() and "pbx-analytics migrate" in err.getvalue()


def test_an_unreachable_server_is_a_message_without_the_password(sim, tmp_path):
    from ingest.testing import free_port

    log = _write(tmp_path / "a.log", _lines(sim.events[:5]))
    err = io.StringIO()
    dsn = f"http://importer:s3cret@127.0.0.1:{free_port()}/pbx"
    assert importer.run(dsn, ImportOptions(files=(str(log),)), out=io.StringIO(), err=err) == 1
    assert "cannot reach ClickHouse at http://importer:***@127.0.0.1" in err.getvalue()
    assert "connection refused" in err.getvalue() and len(err.getvalue().splitlines()) == 1
    assert "s3cret" not in err.getvalue()


def test_a_truncated_gzip_keeps_the_lines_before_the_damage(sim, tmp_path, migrated_dsn):
    log = _write(tmp_path / "cut.log.gz", _lines(sim.events))
    data = log.read_bytes()
    log.write_bytes(data[: len(data) // 2])
    err = io.StringIO()
    assert importer.run(migrated_dsn, ImportOptions(files=(str(log),)), out=io.StringIO(), err=err) == 1
    assert f"{log}: unreadable after line" in err.getvalue()
    client = clickhouse.connect(migrated_dsn)
    try:
        stored = client.query("SELECT count() FROM pbx.events").result_rows[0][0]
    finally:
        client.close()
    assert 0 < stored < len(sim.events)


def test_imported_simulation_matches_the_truth_event_counts(tmp_path, dsn, capsys):
    log, truth = tmp_path / "sim.log.gz", tmp_path / "truth.json"
    assert cli_main(["simulate", "--seed", "11", "--hours", "1.5", "--access-log", str(log),
                     "--tz-offset", "Europe/Prague", "--truth", str(truth)]) == 0
    assert cli_main(["import", "--clickhouse", dsn, "--no-progress", str(log)]) == 0
    capsys.readouterr()
    expected = json.loads(truth.read_text())["event_counts"]
    client = clickhouse.connect(dsn)
    try:
        got = dict(client.query("SELECT event, count() FROM pbx.events GROUP BY event").result_rows)
    finally:
        client.close()
    assert got == expected


def test_import_while_serve_holds_the_engine_without_its_query_interface_says_what_to_do(tmp_path, migrated_copy):
    serve = ServeProcess(migrated_copy(tmp_path / "chdata"), "--query-port", "0")  # nothing to go through
    log = _write(tmp_path / "a.log", ['10.0.0.5 - - [02/Nov/2026:09:00:17 +0100] "GET /call_end?call_id=1.1 '
                                      'HTTP/1.1" 200 3\n'])
    out = subprocess.run(
        [sys.executable, "-m", "ingest", "import", "--clickhouse", serve.dsn, str(log)],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )
    serve.stop()
    assert out.returncode == 1
    assert f"in use by process {serve.proc.pid} (pbx-analytics serve" in out.stderr
    assert "stop that process" in out.stderr and "Traceback" not in out.stderr


def _import_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingest", "import", "--no-progress", *args],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())


def test_a_file_with_no_log_line_at_all_is_an_error_naming_it(sim, tmp_path, migrated_dsn):
    good = _write(tmp_path / "good.log", _lines(sim.events[:10]))
    binary = tmp_path / "ls"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 40)
    as_json = tmp_path / "events.json"
    as_json.write_text(json.dumps([{"event": "call_end", "call_id": "1.1"}]) + "\n")
    empty = tmp_path / "rotated-just-now.log"
    empty.write_text("")
    out = _import_cli("--clickhouse", migrated_dsn, str(good), str(binary), str(as_json), str(empty))
    assert out.returncode == 1, out.stderr
    lines = out.stderr.splitlines()
    assert f"{binary}: not an access log: no nginx/Apache combined or common log line in its" in out.stderr
    assert f"{as_json}: not an access log: no nginx/Apache combined or common log line in its 1 line;" in out.stderr
    assert not any(str(good) in line or str(empty) in line for line in lines)
    assert "imported 10," in out.stdout and "not access logs 2" in out.stdout  # the good file is imported
    alone = _import_cli("--clickhouse", migrated_dsn, str(good), str(empty))
    assert alone.returncode == 0 and "already stored 10" in alone.stdout
