"""A migration's text into statements: comments out, strings and quoted names intact.

``strip_comments`` lexes (sqlparse's lexer) where ``sqlparse.format(strip_comments=True)`` parses
the whole statement first; the two must agree on the text, whitespace aside.
"""

from __future__ import annotations

import re

import pytest
import sqlparse

from ingest.storing import migrations
from ingest.storing.cluster import strip_comments

CASES = {
    "line comment": ("SELECT 1 -- one\nFROM t;", "SELECT 1 FROM t"),
    "comment glued to code": ("SELECT a--x\n+ b FROM t", "SELECT a + b FROM t"),
    "block comment": ("SELECT /* the answer */ 42", "SELECT 42"),
    "a comment's marks in a string stay": ("SELECT '-- not a comment /* nor this */'", None),
    "in a quoted name": ('SELECT 1 AS "a--b", 2 AS `c/*d*/`', None),
    "leading comments": ("-- header\n/* more */\nCREATE TABLE pbx.t (a UInt8) ENGINE = Memory;",
                         "CREATE TABLE pbx.t (a UInt8) ENGINE = Memory"),
    "a hint stays": ("SELECT /*+ hint */ 1", "SELECT /*+ hint */ 1"),
    "only comments": ("-- nothing\n/* at all */\n", ""),
}


def _words(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


@pytest.mark.parametrize("sql, expected", CASES.values(), ids=CASES.keys())
def test_strip_comments_agrees_with_sqlparse_format(sql: str, expected: str | None) -> None:
    got = strip_comments(sql)
    assert _words(got) == _words(sqlparse.format(sql, strip_comments=True).strip().rstrip(";").strip())
    assert _words(got) == (sql if expected is None else expected)


def test_a_migration_splits_into_its_statements_and_drops_comment_only_ones() -> None:
    text = ("-- What this migration does.\nCREATE TABLE pbx.t (a String) ENGINE = Memory;\n"
            "-- a note between statements;\nINSERT INTO pbx.t VALUES ('x;y -- z');\n/* the end */\n")
    assert migrations.Migration(1, "t", text).raw_statements() == [
        "-- What this migration does.\nCREATE TABLE pbx.t (a String) ENGINE = Memory",
        "-- a note between statements;\nINSERT INTO pbx.t VALUES ('x;y -- z')",
    ]
