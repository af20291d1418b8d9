"""Where an INSERT's data starts, by ClickHouse's parser's rule (ParserInsertQuery)."""

from __future__ import annotations

import pytest

from ingest.querying.inserts import QueryStream, candidates, is_insert


@pytest.mark.parametrize(("raw", "data"), [
    pytest.param(b"INSERT INTO t FORMAT TSV\n1\n", b"1\n", id="newline"),
    pytest.param(b"INSERT INTO t FORMAT TSV \t\r\n  1\n", b"  1\n", id="spaces-then-crlf-data-keeps-its-spaces"),
    pytest.param(b"INSERT INTO t FORMAT TSV   1\n", b"1\n", id="no-newline-all-whitespace-skipped"),
    pytest.param(b"INSERT INTO t FORMAT Native\n\x20\x00binary", b"\x20\x00binary", id="binary-starting-with-a-space"),
    pytest.param(b"-- note\n/* x */ insert into t (a, b) format CSV\n1,2", b"1,2", id="comments-and-case"),
])
def test_the_data_starts_after_the_format_its_spaces_and_one_line_break(raw: bytes, data: bytes) -> None:
    first = next(candidates(QueryStream("", raw)))
    assert first.data == data and raw.startswith(first.sql.encode())


def test_every_format_word_is_a_candidate_for_the_engine_to_confirm() -> None:
    raw = b"INSERT INTO t SELECT 'FORMAT TSV' FORMAT Native\n\x01"
    assert [c.format for c in candidates(QueryStream("", raw))] == ["TSV", "Native"]


def test_binary_data_is_never_decoded_as_the_query() -> None:
    raw = b"INSERT INTO t FORMAT RowBinary\n\xff\xfe FORMAT TSV\n"
    assert [c.format for c in candidates(QueryStream("", raw))] == ["RowBinary"]


@pytest.mark.parametrize("raw", [b"SELECT 1 FORMAT TSV", b"  -- INSERT\nSELECT 1", b"INSERTED"])
def test_only_an_insert_has_data(raw: bytes) -> None:
    assert not is_insert(raw) and list(candidates(QueryStream("", raw))) == []


def test_a_long_run_of_whitespace_is_read_in_linear_time() -> None:
    assert not is_insert(b" " * 200_000 + b"SELECT 1")


@pytest.mark.parametrize("raw", [
    b"INSERT INTO t FORMAT TSV\n1\n",
    b"INSERT INTO t (a, b) FORMAT Native\n\x20\x00binary after",
    b"-- note\ninsert into t format CSV \r\n1,2\n3,4",
])
def test_the_url_query_and_the_body_are_one_stream_wherever_they_are_cut(raw: bytes) -> None:
    """``?query=`` then a line break then the body, as ClickHouse reads them: the same query and
    data wherever the client cut the stream (clickhouse-connect puts an Arrow insert's query in
    the URL, other clients the whole statement in the body)."""
    whole = [(c.sql, c.format, bytes(c.data)) for c in candidates(QueryStream("", raw))]
    for cut in range(1, len(raw)):
        if raw[cut - 1 : cut] != b"\n" or not raw[: cut - 1].isascii():
            continue  # the URL's part ends where a line break was (the stream puts one there)
        stream = QueryStream(raw[: cut - 1].decode(), raw[cut:])
        assert [(c.sql, c.format, bytes(c.data)) for c in candidates(stream)] == whole, cut


def test_the_body_after_a_query_in_the_url_is_not_copied() -> None:
    body = bytearray(b"\x01\x02" * 1000)
    found = next(candidates(QueryStream("INSERT INTO t FORMAT Arrow", body)))
    assert found.sql == "INSERT INTO t FORMAT Arrow" and found.data.obj is body  # a view of the body itself
