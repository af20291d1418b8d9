"""The benchmark harness still runs: a short ``python -m bench run --smoke``.

No timing assertions (CI machines are noisy); only that every figure was
measured, is positive, and was printed and saved.
"""

from __future__ import annotations

import json
import subprocess
import sys

from ingest.testing import REPO


def test_bench_smoke_run_prints_tables_and_saves_positive_numbers(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--smoke", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "## Webhook throughput" in out.stdout and "## Freshness" in out.stdout, out.stdout
    assert "| serve/uvicorn " in out.stdout, out.stdout

    (saved,) = tmp_path.glob("*-smoke.json")
    report = json.loads(saved.read_text())
    assert report["machine"]["nproc"] > 0
    tp = report["results"]["throughput"]
    assert tp["baseline"] == "bare/uvicorn"  # granian is a bench extra, not in CI
    runs = tp["runs"]
    for name in ("bare/uvicorn", "serve/uvicorn"):
        assert runs[name]["max"]["rps"] > 0, name
        assert runs[name]["max"]["errors"]["status"] == 0, runs[name]
        paced = runs[name]["paced"]
        assert paced["intended_latency_ms"]["p99"] > 0, name
        # Open loop over a pool: no connection refused or broken, every answer matched to its request.
        assert sum(paced["errors"].values()) == 0, paced
        assert paced["matched"] == paced["requests"] > 0, paced
        assert paced["cpu_us_per_request"]["loop"] > 0, paced
        assert runs[name]["peak_rss_mib"] > 0, name
    serve = runs["serve/uvicorn"]
    assert serve["ratio_to_baseline"] > 0
    # Every 200 that serve answered is a stored row.
    assert serve["stored_rows"] >= serve["acknowledged"] > 0

    fresh = report["results"]["freshness"]
    assert fresh["probes"] > 0
    for where, seen in fresh["visible"].items():  # pbx.events and the live views
        assert seen["missing"] == 0 and seen["p50_ms"] > 0, (where, fresh)
