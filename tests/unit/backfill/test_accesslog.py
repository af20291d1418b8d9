"""The access-log format both ways: what the simulator writes, the importer reads back exactly."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.backfill.accesslog import LINE, LogTimes, format_line, offset_function, origin_form, parse_log_time

UTC = dt.timezone.utc


def test_offsets_of_fixed_offsets_utc_and_zones():
    prague = offset_function("Europe/Prague")
    assert prague(int(dt.datetime(2026, 7, 1, tzinfo=UTC).timestamp())) == 7200
    assert prague(int(dt.datetime(2026, 12, 1, tzinfo=UTC).timestamp())) == 3600
    assert offset_function("-0530")(0) == -19800
    assert offset_function("UTC")(0) == 0
    with pytest.raises(ValueError, match=r"expected \+HHMM"):
        offset_function("Mars/Olympus")


def test_a_line_in_common_and_combined_format():
    t = int(dt.datetime(2026, 11, 2, 8, 0, 17, tzinfo=UTC).timestamp())
    assert format_line(t, "/call_end?call_id=1", 3600, "common") == (
        '10.0.0.5 - - [02/Nov/2026:09:00:17 +0100] "GET /call_end?call_id=1 HTTP/1.1" 200 3\n')
    assert format_line(t, "/x", 0, "combined").endswith('200 3 "-" "pbx-webhook/1.0"\n')
    with pytest.raises(ValueError, match="log format"):
        format_line(t, "/x", 0, "json")


@given(t=st.integers(0, 4_102_444_799), offset_min=st.integers(-14 * 60, 14 * 60),
       fmt=st.sampled_from(["combined", "common"]))
def test_what_is_written_parses_back_to_the_same_second_and_target(t, offset_min, fmt):
    line = format_line(t, "/queue_in?call_id=1.2&queue_name=a%20b", offset_min * 60, fmt)
    m = LINE.match(line)
    assert m is not None
    date, clock, offset, target = m.groups()
    assert parse_log_time(f"{date}:{clock} {offset}") == t
    assert LogTimes().epoch(date, clock, offset) == t
    assert target == "/queue_in?call_id=1.2&queue_name=a%20b"


def test_impossible_dates_are_not_times():
    with pytest.raises(ValueError):
        parse_log_time("31/Feb/2026:09:00:21 +0100")
    assert LogTimes().epoch("31/Feb/2026", "09:00:21", "+0100") is None


def test_an_absolute_form_target_is_read_as_its_path():
    assert origin_form("http://pbx.example/call_end?call_id=2.1") == "/call_end?call_id=2.1"
    assert origin_form("http://pbx.example") == "/"
    assert origin_form("/call_end") == "/call_end"
