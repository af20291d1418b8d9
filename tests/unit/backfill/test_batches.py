"""The batch decoder against the line-by-line rules, every column of every row.

The reference reads a log as any editor does (Python's text reader) and
gives each line to ``LineDecoder`` -- the service's ``parse_query`` ->
``decode`` -> ``to_row`` behind the line's own regex, time and target --,
numbers the (time, target) pairs of the file and hashes ids with
``line_event_id``. ``read_batches`` must give the same rows, counts and
``FILE:LINE`` reports for the vendor spec's URLs, a simulated log and
generated lines (plain and hostile: escapes, repeats, unknown parameters,
missing required ones, absolute targets, non-ASCII bytes, control
characters, every newline convention, impossible dates). The service itself
is the judge in ``tests/e2e/backfill/test_import_matches_serve.py``.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.backfill.accesslog import format_line
from ingest.backfill.batches import read_batches, rows_of
from ingest.backfill.rows import (MAX_REPORTED_PER_FILE, ImportStats, LineDecoder, line_event_id, line_seq,
                                  report_unparsed)
from ingest.events.spec import EVENTS, PARAMS
from ingest.events.table import COLUMNS, to_row
from ingest.simulation import SimConfig, simulate
from ingest.testing import spec_example_urls

T0 = 1_793_577_600  # 2026-11-02 00:00:00 UTC


def reference(path: Path) -> tuple[list[tuple[Any, ...]], ImportStats, str]:
    """The rows of a log line by line (in COLUMNS order), its stats and reports."""
    stats, errors = ImportStats(files=1), io.StringIO()
    decoder = LineDecoder(str(path), stats, errors)
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    seen: dict[tuple[int, str], int] = {}
    first_second = None  # of the file's first row: its seqs count from there
    rows = []
    with opener(path, "rt", encoding="utf-8", errors="replace") as text:
        for lineno, line in enumerate(text, 1):
            stats.lines += 1
            d = decoder.line(line, lineno)
            if d is None:
                continue
            occurrence = seen.get((d.epoch, d.target), 0)
            seen[(d.epoch, d.target)] = occurrence + 1
            event_id = line_event_id(d.epoch, d.target, occurrence)
            row = list(to_row(d.event, d.decoded, d.epoch * 1000, "import", event_id))
            first_second = d.epoch if first_second is None else first_second
            row[COLUMNS.index("seq")] = line_seq(first_second, lineno)  # to_row stamps a counter
            rows.append(tuple(row))
    report_unparsed(str(path), stats.lines, stats.unparsed, stats, errors)  # the file's verdict
    return rows, stats, errors.getvalue()


def batched(path: Path, chunk_bytes: int | None = None) -> tuple[list[tuple[Any, ...]], ImportStats, str]:
    """The rows ``read_batches`` gives, in the reference's form."""
    stats, errors = ImportStats(), io.StringIO()
    rows = []
    kwargs = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    for batch in read_batches(path, stats, errors, **kwargs):
        rows += rows_of(batch)
    return sorted(rows, key=lambda r: r[COLUMNS.index("seq")]), stats, errors.getvalue()


def assert_same(path: Path, chunk_bytes: int | None = None) -> list[tuple[Any, ...]]:
    want, want_stats, want_reports = reference(path)
    got, got_stats, got_reports = batched(path, chunk_bytes)
    assert got_reports == want_reports
    assert got_stats == want_stats
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == w, {c: (a, b) for c, a, b in zip(COLUMNS, g, w) if a != b}
    return got


# ---- lines --------------------------------------------------------------------------------

_EVENT_NAMES = sorted(EVENTS)
_NAMES = [*PARAMS, "token", "extra", "call%5Fid", "queue%5fname", "x", "x[2]", "Call_ID", "", "a=b", "%FF"]
_VALUE_BITS = ["1", "a", "41", "2B", "sales", "+", " ", "%2B", "%2b", "%20", "%41", "%25", "%C3%A9", "%e2%82", "%ZZ",
               "%", "%4", "%0A", "%7F", "=", "/", "?", "#", ";", "1541078811.98", "helpdesk", "-"]


@st.composite
def queries(draw: st.DrawFn) -> str:
    fields = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.sampled_from(_NAMES))
        value = "".join(draw(st.lists(st.sampled_from(_VALUE_BITS), max_size=4)))
        fields.append(name if draw(st.integers(0, 9)) == 0 else f"{name}={value}")
        if draw(st.integers(0, 6)) == 0:
            fields.append(fields[draw(st.integers(0, len(fields) - 1))])  # a repeat
        if draw(st.integers(0, 6)) == 0:  # a repeat with another value
            fields.append(fields[draw(st.integers(0, len(fields) - 1))].partition("=")[0] + "=" + value + "2")
        if draw(st.integers(0, 9)) == 0:
            fields.append("")  # "&&"
    return "&".join(fields)


@st.composite
def targets(draw: st.DrawFn) -> str:
    event = draw(st.sampled_from(_EVENT_NAMES))
    path = draw(st.sampled_from([f"/{event}", f"/pbx/{event}", f"/{event}/", "/healthz", f"/{event}x",
                                 f"http://pbx.example/{event}", "http://pbx.example", f"x://{event}/{event}"]))
    query = draw(queries())
    return path + (f"?{query}" if query or draw(st.booleans()) else "")


_ODD_BYTES = ["\t", "\x0b", "\x1c", "\x00", "\x7f", "é", "\udcff", "€"]


@st.composite
def log_lines(draw: st.DrawFn) -> str:
    """A line (no newline) of a log whose times stay within a few minutes of T0."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.sampled_from(["", "junk", "- - - [", '1 - - [02/Nov/2026:00:00:00 +0000] "GET']))
    t = T0 + draw(st.integers(0, 120))
    line = format_line(t, draw(targets()), draw(st.sampled_from([0, 3600, -19800])),
                       draw(st.sampled_from(["combined", "common"]))).rstrip("\n")
    if kind == 1:  # an impossible or odd date, time or method
        old = line[line.index("[") + 1:line.index("]")]
        line = line.replace(old, draw(st.sampled_from([
            "31/Feb/2026:09:00:21 +0100", "02/Foo/2026:09:00:21 +0100", "00/Nov/2026:09:00:21 +0100",
            "29/Feb/2028:99:99:99 +0100", "02/Nov/0000:09:00:21 +0000", "02/Nov/2026:09:00:21 +0199"])))
    elif kind == 2:
        line = line.replace('"GET ', draw(st.sampled_from(['"POST ', '"get ', '"GET  ', '"M-SEARCH '])))
    elif kind == 3:  # a byte outside printable ASCII somewhere
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from(_ODD_BYTES)) + line[at:]
    elif kind == 4:
        line = line.replace("10.0.0.5", draw(st.sampled_from(["[::1]", "a b", "h\tx", "x[y"])), 1)
    elif kind == 5:  # about the parameter limit
        at = line.index("?") + 1 if "?" in line else line.index(" HTTP")
        line = line[:at] + "&" * draw(st.sampled_from([198, 199, 200, 201])) + line[at:]
    return line


def write_log(path: Path, lines: list[str], newlines: list[str], gzipped: bool) -> Path:
    text = "".join(line + nl for line, nl in zip(lines, newlines))
    data = text.encode("utf-8", "surrogateescape")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(log_lines(), min_size=1, max_size=40), data=st.data())
def test_generated_lines_give_the_rows_counts_and_reports_of_the_line_by_line_rules(tmp_path, lines, data):
    lines = lines + data.draw(st.lists(st.sampled_from(lines), max_size=5))  # identical lines: occurrences
    newlines = data.draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(lines), max_size=len(lines)))
    if data.draw(st.booleans()):
        newlines[-1] = ""  # a last line without a newline
    path = write_log(tmp_path / "gen.log", lines, newlines, data.draw(st.booleans()))
    assert_same(path, chunk_bytes=data.draw(st.sampled_from([64, 1000, 1 << 20])))


@pytest.mark.parametrize("targets", [
    pytest.param(["/call_end?call_id=1&x=%2541", "/call_end?call_id=2&x=%41"], id="escaped-percent-then-hex"),
    pytest.param(["/queue_in?call_id=1&queue_name=a&queue_name=b", "/queue_in?call_id=2&queue_name=c",
                  "/queue_out?call_id=3&queue_name=d"], id="differing-repeat-then-regular-rows"),
    pytest.param(["/start_int_dial?call_id=1&queue_name=q&queue_name=q&caller_type=external"], id="same-repeat"),
    pytest.param(["/call_end?call_id=1" + "&" * 199, "/call_end?call_id=2" + "&" * 200], id="parameter-limit"),
    pytest.param(["/call_end?call%5Fid=1&Call_ID=2&token=s3cret&x", "/call_end?call_id=&call_id=3"], id="names"),
    pytest.param(["http://pbx/call_end?call_id=1", "/pbx/call_end/?call_id=2", "/call_endx?call_id=3"], id="paths"),
    pytest.param(["/call_end?call_id=1+2&caller_num=%2B420+1%2b", "/call_end?call_id=%C3%A9%ff"], id="escapes"),
    pytest.param(["/answered_external?call_id=1&call_id=1&call_id=12&&call_id&call_id=1&call_id=2&&call_id&call_id=1"
                  "&call_id=2&", "/answered_external?cel_id&cel_id=2&&call_id=1&&call_id&cel_id&cel_id=2&&call_id&&"
                  "call_id&cel_id&cel_id=2&", "/queue_in?&&queue_name&call_id=3&queue_name=a&queue_name&&"],
                 id="repeats-bare-names-empty-fields"),
])
def test_rules_at_their_edges_give_the_line_by_line_rows(tmp_path, targets):
    lines = [format_line(T0, target).rstrip("\n") for target in targets * 2]
    assert_same(write_log(tmp_path / "edge.log", lines, ["\n"] * len(lines), False))


def test_the_spec_examples_decode_as_the_service_decodes_them(tmp_path):
    lines = [format_line(T0 + i, url.removeprefix("http://server")).rstrip("\n")
             for i, url in enumerate(spec_example_urls())]
    rows = assert_same(write_log(tmp_path / "spec.log", lines, ["\n"] * len(lines), False))
    assert sorted(r[COLUMNS.index("event")] for r in rows) == sorted(EVENTS)


@pytest.mark.parametrize("chunk_bytes", [None, 4096], ids=["default-chunks", "small-chunks"])
def test_a_simulated_day_decodes_as_line_by_line_whatever_the_chunks(tmp_path, chunk_bytes):
    from ingest.simulation import write_access_log

    log = tmp_path / "sim.log.gz"
    write_access_log(log, simulate(SimConfig(seed=5, hours=6.0)).events, tz="Europe/Prague")
    rows = assert_same(log, chunk_bytes)
    assert len(rows) > 5_000


@pytest.mark.parametrize("odd_time", [
    pytest.param("29/Feb/2028:99:99:99 +0100", id="years-ahead"),
    pytest.param("02/Nov/2026:09:00:21 +0199", id="hours-ahead"),
    pytest.param("02/Nov/2025:00:00:00 +0000", id="a-year-behind"),
])
def test_a_line_with_a_clock_far_off_does_not_end_the_counting_of_the_lines_after_it(tmp_path, odd_time):
    # Found by the generated-lines test: the same line before and after a line whose time is
    # far off, one line per chunk. The window was by the newest time read only, so a line
    # years ahead dropped every count: the repeat got the first line's id (and would have
    # been dropped as already stored).
    line = format_line(T0, "/answered_external?call_id=1&call_id=1&call_id=12&&call_id&call_id=1&call_id=2"
                           "&&call_id&call_id=1&call_id=2&").rstrip("\n")
    odd = format_line(T0, "/call_end?call_id=2").rstrip("\n").replace("02/Nov/2026:00:00:00 +0000", odd_time)
    rows = assert_same(write_log(tmp_path / "odd.log", [line, odd, line], ["\n"] * 3, False), chunk_bytes=64)
    assert len({r[0] for r in rows}) == 3


def test_identical_lines_across_chunk_boundaries_are_counted_as_in_one_pass(tmp_path):
    # The same request three times in each second, lines long enough that chunks cut the seconds.
    lines = [format_line(T0 + i // 3, f"/call_end?call_id={i // 3}.1&pad={'x' * 40}").rstrip("\n")
             for i in range(300)]
    path = write_log(tmp_path / "twins.log", lines, ["\n"] * len(lines), False)
    rows = assert_same(path, chunk_bytes=500)
    assert len({r[0] for r in rows}) == 300  # three events per second, three ids


def test_bad_lines_beyond_the_reported_ones_are_counted(tmp_path):
    bad = format_line(T0, "/queue_in?queue_name=sales").rstrip("\n")
    lines = [bad] * (MAX_REPORTED_PER_FILE + 5)
    _, stats, reports = batched(write_log(tmp_path / "bad.log", lines, ["\n"] * len(lines), False), 2000)
    assert stats.bad == len(lines)
    assert reports.splitlines()[:2] == [f"{tmp_path / 'bad.log'}:1: missing required parameter 'call_id' for "
                                        "queue_in", f"{tmp_path / 'bad.log'}:2: missing required parameter "
                                        "'call_id' for queue_in"]
    assert reports.splitlines()[-1].endswith("more bad lines; only counted from here")
