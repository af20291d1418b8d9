"""Where a simulation goes: an access log (``backfill.accesslog``'s format) and the truth as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ingest.backfill.accesslog import format_line, offset_function, open_for_writing
from ingest.simulation.engine import SimEvent

__all__ = ["write_access_log", "write_truth"]


def write_access_log(path: str | Path, events: Iterable[SimEvent], *, tz: str = "+0000",
                     fmt: str = "combined") -> int:
    """Write the events as an nginx access log (gzip if the name ends in .gz). Returns lines written."""
    offset_of = offset_function(tz)
    n = 0
    with open_for_writing(Path(path)) as f:
        for ev in events:
            f.write(format_line(ev.t, ev.target, offset_of(ev.t), fmt))
            n += 1
    return n


def write_truth(path: str | Path, truth: dict[str, Any]) -> None:
    """The expected metrics as indented JSON (docs/simulator.md describes the fields)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(truth, f, indent=1, ensure_ascii=False)
        f.write("\n")
