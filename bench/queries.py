"""Dashboard queries over 30 simulated days (issue 7, benchmark 4). Not built yet.

What it will do, once its inputs exist:

1. data: ``pbx-analytics simulate`` a 40-agent, 5-queue centre for 30 days into
   an access log, then ``pbx-analytics import`` it into a fresh embedded
   engine (tens of millions of events; cached under ``bench/results/`` by seed);
2. for each panel of each ``dashboards/*.json``, render its SQL the way the
   Grafana ClickHouse plugin would (the dashboards' own macro renderer, used by
   their tests) for a 1-day and a 30-day range, and run it N times: p50/p99 ms;
3. baseline in the same run: the same panel computed from raw ``pbx.events``
   instead of the materialized views, to show the views' gain as a ratio.

Until the simulator, the importer and the dashboards land, ``run()`` raises
:class:`NotReady` naming what is missing: this benchmark reports no number it
did not measure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench._servers import REPO

__all__ = ["NotReady", "missing", "run"]


class NotReady(RuntimeError):
    """An input of the queries benchmark does not exist yet."""


#: What the benchmark needs, and where it comes from.
NEEDS: dict[str, str] = {
    "ingest/simulate.py": "the simulator (`pbx-analytics simulate`, issue 3)",
    "ingest/importer.py": "the access-log importer (`pbx-analytics import`, issue 3)",
    "dashboards": "the Grafana dashboards with their panel SQL (issue 5)",
}


def missing(repo: Path = REPO) -> list[str]:
    """The inputs that are not there yet."""
    absent = []
    for rel, what in NEEDS.items():
        path = repo / rel
        if not path.exists() or (path.is_dir() and not any(path.glob("**/*.json"))):
            absent.append(f"{rel}: {what}")
    return absent


def run(workdir: Path, *, days: int = 30, agents: int = 40, queues: int = 5) -> dict[str, Any]:
    absent = missing()
    if absent:
        raise NotReady("needs simulator, importer and dashboards; missing: " + "; ".join(absent))
    raise NotReady(
        "the inputs exist now, but the queries benchmark is not written yet: wire the simulator's "
        "command line and the dashboards' SQL renderer into bench/queries.py (see its docstring)"
    )
