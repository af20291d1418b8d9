"""Errors as ClickHouse's HTTP interface sends them.

A failed request answers ``Code: N. DB::Exception: <message>. (NAME) (version V)`` and a line
break, with the status ClickHouse maps the code to (``exceptionCodeToHTTPStatus`` in
``src/Server/HTTP/exceptionCodeToHTTPStatus.cpp``) and the code again in the
``X-ClickHouse-Exception-Code`` header. clickhouse-connect and clickhouse-go read the header and
the ``(NAME)``; the engine's own errors already have this shape and are passed on unchanged.
An error after the body started goes into the body as ClickHouse frames it (``exception_block``).
"""

from __future__ import annotations

import re

__all__ = ["ClickHouseError", "exception_block", "from_engine", "http_status"]

#: Codes this module raises itself (the engine knows them: ``errorCodeToName``).
NAMES = {
    1: "UNSUPPORTED_METHOD",
    36: "BAD_ARGUMENTS",
    48: "NOT_IMPLEMENTED",
    62: "SYNTAX_ERROR",
    89: "UNKNOWN_COMPRESSION_METHOD",
    164: "READONLY",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    229: "QUERY_IS_TOO_LARGE",
    271: "CANNOT_DECOMPRESS",
    358: "INTO_OUTFILE_NOT_ALLOWED",
    372: "SESSION_NOT_FOUND",
    373: "SESSION_IS_LOCKED",
    374: "INVALID_SESSION_TIMEOUT",
    394: "QUERY_WAS_CANCELLED",
    396: "TOO_MANY_ROWS_OR_BYTES",
    446: "FUNCTION_NOT_ALLOWED",
    452: "SETTING_CONSTRAINT_VIOLATION",
    497: "ACCESS_DENIED",
    516: "AUTHENTICATION_FAILED",
}

#: ClickHouse's status for an error, by the error's name (``exceptionCodeToHTTPStatus``).
_STATUS_BY_NAME = {
    **dict.fromkeys(["REQUIRED_PASSWORD"], 401),
    **dict.fromkeys(["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE"], 403),
    **dict.fromkeys([
        "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT", "CANNOT_PARSE_ESCAPE_SEQUENCE",
        "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE", "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER",
        "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING", "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED", "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN",
        "UNKNOWN_ELEMENT_IN_AST", "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST",
        "TOO_BIG_AST", "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    ], 400),
    **dict.fromkeys([
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE", "UNKNOWN_STORAGE",
        "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING", "UNKNOWN_AGGREGATE_FUNCTION",
        "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE", "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE",
    ], 404),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "CANNOT_SCHEDULE_TASK": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
}
_CODE = re.compile(r"Code: (\d+)\.")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?:\s*\(version [^)]*\))?\s*$")
_IN_SCOPE = re.compile(r"\s*:\s*In scope SELECT formatQuery\(.*\)\.(?=\s*\([A-Z_]+\)\s*$)", re.DOTALL)


def http_status(name: str) -> int:
    """ClickHouse's HTTP status for an error name (500 for any other)."""
    return _STATUS_BY_NAME.get(name, 500)


class ClickHouseError(Exception):
    """An error with a ClickHouse code, formatted as the server formats it."""

    def __init__(self, code: int, message: str, *, raw: bool = False) -> None:
        self.code = code
        #: ``message`` is already ``Code: N. DB::Exception: ... (NAME)`` (the engine's text).
        self.text = message if raw else f"Code: {code}. DB::Exception: {message}. ({NAMES.get(code, 'UNKNOWN')})"
        super().__init__(self.text)

    @property
    def name(self) -> str:
        match = _NAME.search(self.text)
        return match[1] if match else NAMES.get(self.code, "UNKNOWN")

    @property
    def status(self) -> int:
        return http_status(self.name)

    def body(self, version: str) -> str:
        text = self.text.rstrip()
        if "(version " not in text[-60:]:
            text += f" (version {version})"
        return text + "\n"


def from_engine(exc: BaseException) -> ClickHouseError:
    """The engine's exception as ClickHouse would send it (its text starts at ``Code:``)."""
    text = str(exc)
    start = text.find("Code: ")
    if start < 0:
        return ClickHouseError(1002, f"Unexpected engine error: {text}")
    text = _IN_SCOPE.sub("", text[start:].strip())
    match = _CODE.match(text)
    return ClickHouseError(int(match[1]) if match else 1002, text, raw=True)


def exception_block(message: str, tag: str) -> bytes:
    """An error after the body started: ``\\r\\n__exception__\\r\\n<tag>\\r\\n<message>\\n<length>
    <tag>\\r\\n__exception__\\r\\n``, at most 16 KiB (ClickHouse's framing since 25.11, read by
    clickhouse-connect, clickhouse-go and clickhouse-js through ``X-ClickHouse-Exception-Tag``)."""
    data = message.rstrip("\n").encode()[: 16 * 1024 - 128]
    return b"\r\n__exception__\r\n%s\r\n%s\n%d %s\r\n__exception__\r\n" % (
        tag.encode(), data, len(data), tag.encode())
