"""The decoding path shared by the service and the importer: quirks and errors."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.events.decode import DecodeError, decode, json_pairs, parse_query
from ingest.events.spec import AGENT_EVENTS, CALL_EVENTS, EVENTS, PARAMS
from ingest.events.table import COLUMNS, datetime_to_ms, now_ms, to_row
from ingest.testing import REPO, SPEC, spec_example_urls

#: The vendor's spec beside the checkout (developer machines, CI): the vendored copy must match it.
SHARED_SPEC = REPO.parent / "shared" / "spec" / "pbx-webhooks.txt"


def _split(url: str) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(url)
    return parts.path.strip("/"), parse_query(parts.query)


def test_vendored_spec_is_the_published_one():
    if SHARED_SPEC.exists():  # beside the checkout on developer machines and in CI
        assert SPEC.read_text() == SHARED_SPEC.read_text()
    assert "http://server/start_call?" in SPEC.read_text()


def test_spec_lists_seventeen_events_split_into_call_and_agent_events():
    assert len(EVENTS) == 17
    assert len(spec_example_urls()) == 17
    assert CALL_EVENTS | AGENT_EVENTS == set(EVENTS)
    assert AGENT_EVENTS == {"pbx_agent_login", "pbx_agent_logout", "pbx_agent_set_state"}


@pytest.mark.parametrize("url", spec_example_urls(), ids=lambda u: urlsplit(u).path.strip("/"))
def test_every_spec_example_decodes_with_every_parameter_in_a_field(url):
    event, pairs = _split(url)
    ev = decode(event, pairs)
    assert ev.extra == {}, "the spec's own parameters must not land in extra"
    for name, value in pairs:
        assert getattr(ev, name) == value


def test_a_parameter_sent_twice_with_the_same_value_is_one_value():
    pairs = parse_query("call_id=1.1&queue_name=helpdesk&queue_name=helpdesk")
    ev = decode("start_int_dial", pairs)
    assert ev.queue_name == "helpdesk" and ev.extra == {}


def test_a_repeat_with_a_different_value_is_kept_in_extra_numbered():
    pairs = parse_query("call_id=1.1&queue_name=a&queue_name=b&queue_name=c&queue_name=a")
    ev = decode("start_int_dial", pairs)
    assert ev.queue_name == "a"
    assert ev.extra == {"queue_name[2]": "b", "queue_name[3]": "c"}


def test_unknown_parameters_are_kept_in_extra():
    ev = decode("call_end", parse_query("call_id=9&new_field=x&other=%C3%A9"))
    assert ev.extra == {"new_field": "x", "other": "é"}


def test_deprecated_target_num_is_stored():
    ev = decode("start_call", parse_query("call_id=1&dialed_num=5&target_num=5"))
    row = dict(zip(COLUMNS, to_row("start_call", ev, now_ms())))
    assert row["target_num"] == "5" and row["dialed_num"] == "5"


@pytest.mark.parametrize("event", sorted(CALL_EVENTS))
def test_call_events_require_call_id(event):
    with pytest.raises(DecodeError) as err:
        decode(event, parse_query("cel_id=1"))
    assert err.value.param == "call_id" and "call_id" in str(err.value)


@pytest.mark.parametrize("event", sorted(AGENT_EVENTS))
def test_agent_events_require_userid(event):
    with pytest.raises(DecodeError) as err:
        decode(event, parse_query("userid="))
    assert err.value.param == "userid" and err.value.reason == "missing_param"


def test_unknown_event_is_an_error():
    with pytest.raises(DecodeError) as err:
        decode("start_calls", [("call_id", "1")])
    assert err.value.reason == "unknown_event"


def test_json_scalars_become_strings_and_objects_are_refused_naming_the_parameter():
    assert json_pairs(b'{"call_id": 12.5, "n": 3, "b": true, "z": null}') == [
        ("call_id", "12.5"), ("n", "3"), ("b", "true"), ("z", "")
    ]
    with pytest.raises(DecodeError) as err:
        json_pairs(b'{"call_id": {"x": 1}}')
    assert err.value.param == "call_id"
    with pytest.raises(DecodeError):
        json_pairs(b"[1, 2]")
    with pytest.raises(DecodeError):
        json_pairs(b"{not json")


def test_json_numbers_keep_the_senders_text():
    assert json_pairs(b'{"call_id": 1541078811.10, "caller_num": 1e3, "a": -0, "b": 12345678901234567890}') == [
        ("call_id", "1541078811.10"), ("caller_num", "1e3"), ("a", "-0"), ("b", "12345678901234567890")
    ]


def test_json_repeated_keys_follow_the_query_string_rule():
    pairs = json_pairs(b'{"call_id": "1", "queue_name": "a", "queue_name": "a", "queue_name": "b"}')
    assert pairs == [("call_id", "1"), ("queue_name", "a"), ("queue_name", "a"), ("queue_name", "b")]
    event = decode("queue_in", pairs)
    query = decode("queue_in", parse_query("call_id=1&queue_name=a&queue_name=a&queue_name=b"))
    assert event == query and event.queue_name == "a" and event.extra == {"queue_name[2]": "b"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="objects"),
        pytest.param(b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}", id="arrays"),
    ],
)
def test_deeply_nested_json_is_a_bad_body_naming_the_problem(body):
    with pytest.raises(DecodeError) as err:
        json_pairs(body)
    assert err.value.reason == "bad_body" and "nested too deeply" in str(err.value)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_constants_that_are_not_numbers_are_refused(constant):
    with pytest.raises(DecodeError) as err:
        json_pairs(b'{"call_id": ' + constant + b"}")
    assert err.value.reason == "bad_body"


def test_too_many_parameters_is_an_error():
    with pytest.raises(DecodeError) as err:
        parse_query("&".join(f"p{i}=1" for i in range(11)), max_params=10)
    assert err.value.reason == "too_many_params"


def test_row_has_one_value_per_column_in_column_order():
    ev = decode("queue_in", parse_query("call_id=7&queue_name=q&zz=1"))
    at = datetime_to_ms(dt.datetime(2026, 11, 2, 8, 0, 17, 123000, tzinfo=dt.timezone.utc))
    row = to_row("queue_in", ev, at, source="import")
    assert len(row) == len(COLUMNS) == 4 + len(PARAMS) + 2
    values = dict(zip(COLUMNS, row))
    assert values["received_at"] == at and values["event"] == "queue_in" and values["source"] == "import"
    assert values["call_id"] == "7" and values["queue_name"] == "q" and values["userid"] == ""
    assert values["extra"] == {"zz": "1"}


@settings(max_examples=300, deadline=None)
@given(event=st.sampled_from(sorted(EVENTS)), raw=st.text(max_size=300))
def test_any_query_string_either_decodes_or_raises_decode_error(event, raw):
    try:
        ev = decode(event, parse_query(raw))
    except DecodeError as exc:
        assert exc.reason in {"missing_param", "too_many_params"}
    else:
        to_row(event, ev, now_ms())
