"""One Markdown table from the JSON results of one or more ``bench run scale`` runs.

    python -m bench.scale.report bench/results/20261203T115600Z-scale.json [more.json ...]

Columns are datasets (a later file's column replaces an earlier one of the same
label); each column says which run measured it, with that run's machine, load
and commit, so figures measured apart stay marked as such.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.scale import table

__all__ = ["main", "merge"]


def merge(paths: list[Path]) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    """(results by column, column order, the runs) of the files, later files winning."""
    results: dict[str, Any] = {}
    columns: list[str] = []
    runs = []
    for n, path in enumerate(paths, 1):
        report = json.loads(path.read_text())
        scale = report["results"]["scale"]
        machine = report["machine"]
        runs.append({"run": n, "file": path.name, "date": machine["date"], "commit": machine.get("commit"),
                     "load_start": machine["load_average"], "load_end": report.get("load_average_end"),
                     "columns": scale["columns"]})
        for label in scale["columns"]:
            results[label] = {**scale["datasets"][label], "run": n}
            if label not in columns:
                columns.append(label)
    columns.sort(key=lambda c: tuple(int(x.split()[0]) for x in c.split(",")[:2]) if c[0].isdigit() else (0, 0))
    return results, columns, runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="JSON files written by `bench run scale`")
    args = parser.parse_args(argv)
    results, columns, runs = merge(args.results)
    rows = table.rows(results)
    rows.append(table.Row("Run", "measured in run", "", {c: str(results[c]["run"]) for c in columns}))
    rendered = table.render(rows, columns)
    print("| " + " | ".join(rendered[0]) + " |")
    print("|" + "---|" * 3 + "---:|" * len(columns))
    for row in rendered[1:]:
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    print()
    for run in runs:
        print(f"Run {run['run']}: {run['file']}, {run['date']}, commit {run['commit']}, load average "
              f"{run['load_start']} at the start, {run['load_end']} at the end; columns: {', '.join(run['columns'])}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
