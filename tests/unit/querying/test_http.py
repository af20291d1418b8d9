"""The protocol's small rules: content types, compression, error frames, statuses."""

from __future__ import annotations

import gzip
import zlib

import pytest

from ingest.querying import errors, http


@pytest.mark.parametrize("fmt, ctype", [
    ("TabSeparated", "text/tab-separated-values; charset=UTF-8"),
    ("JSON", "application/json; charset=UTF-8"),
    ("JSONEachRow", "application/x-ndjson; charset=UTF-8"),
    ("CSVWithNames", "text/csv; charset=UTF-8; header=present"),
    ("Native", "application/octet-stream"),
    ("PrettyCompact", "text/plain; charset=UTF-8"),
    (None, "text/plain; charset=UTF-8"),
])
def test_content_type_of_each_format(fmt, ctype):
    assert http.content_type(fmt) == ctype


def test_compression_follows_accept_encoding():
    assert http.choose_compression("gzip") == "gzip"
    assert http.choose_compression("gzip, deflate, br, zstd") == "zstd"
    assert http.choose_compression("br") is None
    for method, decode in [("gzip", gzip.decompress), ("deflate", zlib.decompress)]:
        c = http._Compressor(method, 3)
        assert decode(c.compress(b"abc" * 100) + c.flush()) == b"abc" * 100


def test_compressed_bodies_are_read_within_their_limit():
    assert http.decompress_body(gzip.compress(b"SELECT 1"), "gzip", 100) == b"SELECT 1"
    with pytest.raises(errors.ClickHouseError) as too_big:
        http.decompress_body(gzip.compress(b"x" * 1000), "gzip", 100)
    assert too_big.value.code == 229
    with pytest.raises(errors.ClickHouseError) as broken:
        http.decompress_body(b"not gzip", "gzip", 100)
    assert broken.value.code == 271


def test_statuses_are_clickhouses():
    assert errors.from_engine(RuntimeError("Code: 60. DB::Exception: no. (UNKNOWN_TABLE)")).status == 404
    assert errors.from_engine(RuntimeError("x Code: 62. DB::Exception: Syntax error. (SYNTAX_ERROR)")).status == 400
    assert errors.from_engine(RuntimeError("Code: 159. DB::Exception: Timeout exceeded. (TIMEOUT_EXCEEDED)")).status == 408
    assert errors.ClickHouseError(516, "who").status == 403
    assert errors.ClickHouseError(497, "no").status == 500  # ACCESS_DENIED: ClickHouse maps it to nothing else


def test_exception_frame_is_clickhouses():
    block = errors.exception_block("Code: 395. DB::Exception: boom. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)\n", "t" * 16)
    message = b"Code: 395. DB::Exception: boom. (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)"
    assert block == b"\r\n__exception__\r\n" + b"t" * 16 + b"\r\n" + message + b"\n%d " % len(message) + b"t" * 16 + \
        b"\r\n__exception__\r\n"
