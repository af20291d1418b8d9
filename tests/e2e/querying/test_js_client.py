"""The official Node client of ClickHouse (@clickhouse/client, pinned by tests/e2e/querying/js's lock file and
installed there on first use) against serve's query interface."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
from ingest.testing import ServeProcess, npm_installed, spec_example_urls

JS = Path(__file__).parent / "js"


def test_clickhouse_js_gets_typed_results_and_parses_errors(tmp_path, migrated_copy):
    npm_installed(JS, "@clickhouse/client")
    service = ServeProcess(migrated_copy(tmp_path / "chdata"))
    try:
        for url in spec_example_urls():
            httpx.get(url.replace("http://server", service.url))
        run = subprocess.run(["node", str(JS / "client.mjs"), service.query_url], capture_output=True, text=True,
                             timeout=120, cwd=JS)
        assert run.returncode == 0, run.stderr
        got = json.loads(run.stdout)
    finally:
        service.stop()
    assert got["ping"] is True
    assert got["compressed"] == [{"number": 0}, {"number": 1}, {"number": 2}]  # 64-bit ints unquoted: the engine's default
    assert got["typed"]["meta"] == [{"name": "u", "type": "UInt64"}, {"name": "a", "type": "Array(UInt8)"},
                                    {"name": "s", "type": "String"}]
    assert got["typed"]["data"] == [{"u": 7, "a": [1, 2], "s": "x"}]
    assert got["insert"]["code"] == "164" and got["insert"]["type"] == "READONLY"
    assert got["error"] == {"code": "60", "type": "UNKNOWN_TABLE"}
    assert isinstance(got["rows"], list)
