"""The ``pbx.events`` contract: the row's shortcuts, ids, the clock, the spool record, the insert.

The hot-path shortcuts (``to_row``'s itemgetter, ids from a private generator,
integer time) are pinned against the plain equivalent; the insert runs on the
real embedded engine.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.events.decode import DecodeError, decode, parse_query
from ingest.events.spec import EVENTS, PARAMS
from ingest.events.table import (
    COLUMNS,
    TABLE,
    EventsInsert,
    Remap,
    datetime_to_ms,
    decode_record,
    encode_record,
    meta_columns,
    ms_to_datetime,
    new_event_id,
    now_ms,
    spool_meta,
    to_row,
)

QUERY = st.text(alphabet=st.sampled_from(list("&=%+ab_19fFzé€\x00;#?/")) | st.characters(), max_size=80)


@given(event=st.sampled_from(sorted(EVENTS)), raw=QUERY)
@settings(max_examples=300)
def test_to_row_takes_each_parameter_from_its_field_or_empty(event, raw):
    try:
        ev = decode(event, parse_query(f"call_id=1&userid=u&{raw}"))
    except DecodeError:
        return
    at = datetime_to_ms(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    event_id = new_event_id()
    row = to_row(event, ev, at, "http", event_id, seq=7)
    assert row == (event_id, at, event, "http", *(getattr(ev, p, "") for p in PARAMS), ev.extra, 7)


def test_rows_get_increasing_arrival_order_unless_given():
    ev = decode("queue_in", parse_query("call_id=1&queue_name=q"))
    seqs = [to_row("queue_in", ev, 0)[-1] for _ in range(1000)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 1000


def test_an_old_spool_record_without_seq_replays_with_seq_0():
    old = [c for c in COLUMNS if c != "seq"]
    row = [0, 1, "queue_in", "http", *("" for _ in PARAMS), {}]
    assert Remap(old)(row)[-1] == 0


def test_event_ids_are_version_4_uuids_and_differ_in_a_forked_child():
    ids = {uuid.UUID(int=new_event_id()) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id must not be the parent's next id
        os.write(write, new_event_id().to_bytes(16, "big"))
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = int.from_bytes(os.read(read, 16), "big")
    assert child_id != new_event_id()


def test_arrival_clock_is_utc_now_in_epoch_milliseconds():
    before = dt.datetime.now(dt.timezone.utc)
    at = ms_to_datetime(now_ms())
    after = dt.datetime.now(dt.timezone.utc)
    assert at.tzinfo is dt.timezone.utc and at.microsecond % 1000 == 0
    assert before - dt.timedelta(milliseconds=1) < at <= after


@given(ms=st.integers(0, 253402300799999))
def test_epoch_ms_and_datetime_convert_both_ways_exactly(ms):
    when = ms_to_datetime(ms)
    assert datetime_to_ms(when) == ms
    assert datetime_to_ms(when.replace(tzinfo=None)) == ms, "naive means UTC"


def test_a_row_survives_its_spool_record_unchanged():
    ev = decode("queue_in", parse_query("call_id=7&queue_name=q%C3%A9&zz=1"))
    row = to_row("queue_in", ev, now_ms())
    assert decode_record(encode_record(row)) == list(row)
    assert meta_columns(spool_meta()) == list(COLUMNS)
    assert meta_columns(b"not json") is None


def test_rows_spooled_with_older_columns_map_by_name_and_keep_dropped_values_in_extra():
    old = ["event_id", "received_at", "call_id", "retired", "extra"]
    remap = Remap(old, ["event_id", "received_at", "call_id", "queue_name", "extra"])
    assert remap([1, 2, "c", "kept", {"a": "b"}]) == [1, 2, "c", "", {"a": "b", "retired": "kept"}]
    assert remap([1, 2, "c", "", {}]) == [1, 2, "c", "", {}], "an empty retired value adds nothing"


def test_the_insert_stores_a_block_once_under_its_token_and_the_row_reads_back(ch):
    ev = decode("queue_in", parse_query("call_id=7&queue_name=helpdesk&zz=1"))
    at = datetime_to_ms(dt.datetime(2026, 11, 2, 8, 0, 17, 123000))
    row = to_row("queue_in", ev, at, "import")
    insert = EventsInsert()
    for _ in range(2):  # a replay: the same block under the same token
        insert(ch, list(zip(row)), "token-1")
    stored = ch.query(f"SELECT event_id, received_at, queue_name, extra FROM {TABLE}").result_rows
    assert stored == [(uuid.UUID(int=row[0]), ms_to_datetime(at).replace(tzinfo=None), "helpdesk", {"zz": "1"})]
    insert(ch, list(zip(to_row("call_end", decode("call_end", [("call_id", "7")]), at))), "token-2")
    assert ch.query(f"SELECT count() FROM {TABLE}").result_rows == [(2,)]
