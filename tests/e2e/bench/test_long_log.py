"""The import benches' long logs: each copy of the simulated days is other calls, as a PBX
would send them (a copy that kept the ids joined every copy's events to the same calls)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from bench.importing import long_log

LINE = ('127.0.0.1 - - [02/Nov/2026:06:00:0{s} +0000] "GET /call_start?call_id=1541078811.9{s}&custom_call_id=c{s}'
        '&caller=100 HTTP/1.1" 200 2 "-" "pbx"\n')


def test_every_copy_of_the_days_is_other_calls(tmp_path: Path) -> None:
    base = tmp_path / "base.log.gz"
    with gzip.open(base, "wt") as f:
        f.writelines(LINE.format(s=s) for s in range(3))
    out = tmp_path / "long.log.gz"
    assert long_log(out, [base], 9, first_copy=0) == 9
    with gzip.open(out, "rt") as f:
        lines = f.read().splitlines()
    ids = [re.search(r"[?&]call_id=([^&\s]+)", line)[1] for line in lines]
    customs = [re.search(r"custom_call_id=([^&\s]+)", line)[1] for line in lines]
    assert ids[:3] == ["1541078811.90", "1541078811.91", "1541078811.92"]  # the days themselves
    assert len(set(ids)) == len(set(customs)) == 9  # each copy: other calls
    assert [line.split("[")[1][:11] for line in lines[::3]] == ["02/Nov/2026", "03/Nov/2026", "04/Nov/2026"]
    assert "&caller=100 " in lines[-1]  # nothing else changes
