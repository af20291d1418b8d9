"""The hot-path shortcuts of ``ingest.events.decode`` mean exactly what the slow, obvious code means.

``parse_query`` is a hand-written ``parse_qsl``: pinned here against it. (The
row's shortcuts are pinned in ``test_table.py``.)
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.events.decode import DecodeError, parse_query

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
