"""The hot-path shortcuts of ``ingest.decode`` mean exactly what the slow, obvious code means.

``parse_query`` is a hand-written ``parse_qsl``, ``to_row`` picks values with an
itemgetter, ids come from a private generator: each is pinned here against the
standard-library or plain-Python equivalent.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.decode import DecodeError, PARAMS, decode, new_event_id, parse_query, to_row, utc_now_ms
from ingest.spec import EVENTS

# Query-string-ish text: separators, escapes (valid, truncated, non-UTF-8), '+', any Unicode.
QUERY = st.text(alphabet=st.sampled_from(list("&=%+ab_19fFzé€\x00;#?/")) | st.characters(), max_size=80)


@given(raw=QUERY, max_params=st.integers(1, 12))
@settings(max_examples=500)
def test_parse_query_gives_the_pairs_and_limit_of_parse_qsl(raw, max_params):
    try:
        expected = parse_qsl(raw, keep_blank_values=True, errors="replace", max_num_fields=max_params)
    except ValueError:
        with pytest.raises(DecodeError) as err:
            parse_query(raw, max_params)
        assert err.value.reason == "too_many_params"
        return
    assert parse_query(raw, max_params) == expected


@given(event=st.sampled_from(sorted(EVENTS)), raw=QUERY)
@settings(max_examples=300)
def test_to_row_takes_each_parameter_from_its_field_or_empty(event, raw):
    try:
        ev = decode(event, parse_query(f"call_id=1&userid=u&{raw}"))
    except DecodeError:
        return
    at = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    event_id = uuid.uuid4()
    row = to_row(event, ev, at, "http", event_id)
    assert row == (event_id, at, event, "http", *(getattr(ev, p, "") for p in PARAMS), ev.extra)


def test_event_ids_are_version_4_uuids_and_differ_in_a_forked_child():
    ids = {new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id must not be the parent's next id
        os.write(write, new_event_id().bytes)
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = uuid.UUID(bytes=os.read(read, 16))
    assert child_id != new_event_id()


def test_arrival_time_is_utc_now_truncated_to_the_millisecond():
    before = dt.datetime.now(dt.timezone.utc)
    at = utc_now_ms()
    after = dt.datetime.now(dt.timezone.utc)
    assert at.tzinfo is dt.timezone.utc and at.microsecond % 1000 == 0
    assert before - dt.timedelta(milliseconds=1) < at <= after
