"""Native in the client's revision: byte-exact frames, and every supported type read back by
the real clients' decoders (tests/e2e/querying/native_reader.py) equal to the engine's own output."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import chdb
import pytest
from tests.e2e.querying.native_reader import read_blocks

from ingest.querying import native


@pytest.fixture
def engine(tmp_path: Path):
    conn = chdb.connect(str(tmp_path / "engine"))
    yield conn
    conn.close()


def type_names(conn):
    cache: dict[bytes, str] = {}

    def name(blob: bytes) -> str:
        if blob not in cache:
            literal = "'" + "".join(f"\\x{b:02x}" for b in b"\x01\x00\x01c" + blob) + "'"
            out = conn.query(f"DESCRIBE format(Native, {literal}) SETTINGS input_format_native_decode_types_in_binary_format"
                             " = 1, print_pretty_type_names = 0", "JSONEachRow")
            cache[blob] = json.loads(bytes(out.bytes()).splitlines()[0])["type"]
        return cache[blob]

    return name


def test_block_info_is_the_two_documented_fields_then_field_3_from_54480():
    assert native.block_info(54405) == bytes([1, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0])
    assert native.block_info(54460) == bytes([1, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0])
    assert native.block_info(54480) == bytes([1, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 3, 0, 0])


def test_one_uint8_column_is_framed_byte_for_byte_as_the_native_protocol_documents():
    # Revision 0 block of SELECT 1::UInt8 AS x, binary type 0x01 = UInt8.
    plain = bytes([1, 1, 1]) + b"x" + bytes([0x01, 0x01])
    names = {bytes([0x01]): "UInt8"}.__getitem__
    assert b"".join(native.transcode(plain, 54460, names)) == (
        bytes([1, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0])  # block info
        + bytes([1, 1])  # columns, rows
        + bytes([1]) + b"x" + bytes([5]) + b"UInt8"  # name, type
        + bytes([0])  # no custom serialization
        + bytes([1])  # the value
    )
    assert b"".join(native.transcode(plain, 54405, names)) == bytes([1, 0, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, 1, 1]) + \
        b"x" + bytes([5]) + b"UInt8" + bytes([1])


def instants(value):
    if isinstance(value, datetime.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)).timestamp()
    if isinstance(value, (list, tuple)):
        return [instants(v) for v in value]
    return value


TYPES = [
    pytest.param("number", id="UInt64"),
    pytest.param("toInt8(number) - 3", id="Int"),
    pytest.param("toUInt256(number) * 1000000000000", id="UInt256"),
    pytest.param("number / 3", id="Float64"),
    pytest.param("toString(number * 1000)", id="String"),
    pytest.param("repeat('é', number * 70)", id="String with long varint lengths"),
    pytest.param("toFixedString(toString(number), 3)", id="FixedString"),
    pytest.param("toDate('2024-01-01') + number", id="Date"),
    pytest.param("toDate32('2024-01-01') + number", id="Date32"),
    pytest.param("toDateTime(1700000000 + number, 'Europe/Prague')", id="DateTime with zone"),
    pytest.param("toDateTime(1700000000 + number)", id="DateTime"),
    pytest.param("toDateTime64(1700000000 + number, 3, 'UTC')", id="DateTime64"),
    pytest.param("toDecimal32(number, 2)", id="Decimal32"),
    pytest.param("toDecimal128(number, 10)", id="Decimal128"),
    pytest.param("toUUID('00000000-0000-0000-0000-00000000000' || toString(number))", id="UUID"),
    pytest.param("toIPv4('10.0.0.1')", id="IPv4"),
    pytest.param("toIPv6('::1')", id="IPv6"),
    pytest.param("CAST(number % 2, 'Enum8(\\'a\\' = 0, \\'b\\' = 1)')", id="Enum8"),
    pytest.param("CAST(1000 * (number % 2), 'Enum16(\\'x y\\' = 0, \\'z\\' = 1000)')", id="Enum16"),
    pytest.param("number % 2 = 0", id="Bool"),
    pytest.param("if(number % 2 = 0, NULL, number)", id="Nullable"),
    pytest.param("if(number % 2 = 0, NULL, toString(number))", id="Nullable(String)"),
    pytest.param("toLowCardinality(toString(number % 2))", id="LowCardinality"),
    pytest.param("toLowCardinality(if(number = 1, NULL, toString(number)))", id="LowCardinality(Nullable)"),
    pytest.param("range(number)", id="Array"),
    pytest.param("[range(number), []]", id="Array(Array)"),
    pytest.param("arrayMap(x -> toLowCardinality(toString(x)), range(number))", id="Array(LowCardinality)"),
    pytest.param("(number, toString(number))", id="Tuple"),
    pytest.param("CAST((number, 'x'), 'Tuple(a UInt64, `b c` String)')", id="named Tuple"),
    pytest.param("map(toString(number), number, 'k', 0)", id="Map"),
    pytest.param("map('k', [toNullable(number)])", id="Map of Array of Nullable"),
    pytest.param("(1.5, 2.5)::Point", id="Point"),
    pytest.param("[(1.0, 2.0), (3.0, 4.0)]::Ring", id="Ring"),
    pytest.param("NULL", id="Nullable(Nothing)"),
    pytest.param("[]", id="Array(Nothing)"),
]


@pytest.mark.parametrize("expression", TYPES)
@pytest.mark.parametrize("revision", [54405, 54460])
def test_every_supported_type_reads_back_equal_in_the_clients_revision(engine, expression, revision):
    sql = f"SELECT {expression} AS c, number AS after FROM numbers(4)"
    plain = bytes(engine.query(sql, "Native").bytes())
    binary = bytes(engine.query(sql + " SETTINGS output_format_native_encode_types_in_binary_format = 1",
                                "Native").bytes())
    framed = b"".join(native.transcode(binary, revision, type_names(engine)))
    expected = read_blocks(plain, 0)
    got = read_blocks(framed, revision)
    # The same instants (the revision-0 layout drops a top-level DateTime's zone: naive values there).
    assert instants([b["columns"] for b in got]) == instants([b["columns"] for b in expected])
    # Type names as the engine prints them, the zone of a top-level DateTime included.
    want_type = json.loads(bytes(engine.query(f"SELECT toTypeName({expression}) AS t FROM numbers(1) SETTINGS "
                                              "print_pretty_type_names = 0",
                                              "JSONEachRow").bytes()).splitlines()[0])["t"]
    assert got[0]["types"] == [want_type, "UInt64"]


def test_variant_columns_are_walked_by_their_discriminators(engine):
    sql = ("SELECT CAST(if(number % 3 = 0, toString(number), if(number % 3 = 1, NULL, number)), "
           "'Variant(String, UInt64)') AS v, number AS after FROM numbers(6)")
    binary = bytes(engine.query(sql + " SETTINGS output_format_native_encode_types_in_binary_format = 1",
                                "Native").bytes())
    got = read_blocks(b"".join(native.transcode(binary, 54460, type_names(engine))), 54460)
    assert got[0]["types"] == ["Variant(String, UInt64)", "UInt64"]
    assert got[0]["columns"][1] == [0, 1, 2, 3, 4, 5]


def test_several_blocks_in_one_chunk_are_each_framed(engine):
    sql = ("SELECT number, toString(number) AS s FROM numbers(10) SETTINGS max_block_size = 3, "
           "output_format_native_encode_types_in_binary_format = 1")
    binary = bytes(engine.query(sql, "Native").bytes())
    blocks = read_blocks(b"".join(native.transcode(binary, 54460, type_names(engine))), 54460)
    assert [b["rows"] for b in blocks] == [3, 3, 3, 1]
    assert [v for b in blocks for v in b["columns"][1]] == [str(i) for i in range(10)]


@pytest.mark.parametrize("expression, type_name", [
    pytest.param("'{\"a\": 1}'::JSON", "JSON", id="JSON"),
    pytest.param("1::Dynamic", "Dynamic", id="Dynamic"),
    pytest.param("sumState(1)", "AggregateFunction", id="AggregateFunction"),
])
def test_types_without_a_known_layout_are_refused_by_name(engine, expression, type_name):
    binary = bytes(engine.query(f"SELECT {expression} AS c SETTINGS output_format_native_encode_types_in_binary_format"
                                " = 1", "Native").bytes())
    with pytest.raises(native.UnsupportedType) as refused:
        list(native.transcode(binary, 54460, type_names(engine)))
    assert refused.value.type_name == type_name


def test_revisions_above_the_last_known_are_answered_in_its_layout():
    assert native.effective_revision(54515) == native.MAX_REVISION
    assert native.effective_revision(54460) == 54460
