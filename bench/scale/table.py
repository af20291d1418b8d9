"""The one table of ``bench run scale``: every issue-15 figure, one column per dataset.

Rows come from the probe results (:func:`rows`) and from other benchmark parts
through :data:`HOOKS`: a part that measures something issue 15 asks for but that
does not depend on the dataset (webhook throughput, import speed and memory)
registers a function here, which the scale run calls in the same run, so the
figures sit in the same table with the same machine and load::

    from bench.scale import table

    def _throughput_rows(ctx: table.Context) -> list[table.Row]:
        ...measure...
        return [table.Row("Webhook throughput", "serve / bare app (granian)", ">= 0.7x", {table.ANY: "0.61x"})]

    table.HOOKS["throughput"] = _throughput_rows

and names its module in :data:`HOOK_MODULES` (the scale run imports those
first). A hook's row with the (section, figure) of a placeholder replaces it;
until a part registers, its rows are printed as placeholders naming the command
that measures them today (:data:`PLACEHOLDERS`).
"""

from __future__ import annotations

import dataclasses
import importlib
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ANY", "HOOKS", "HOOK_MODULES", "PLACEHOLDERS", "Context", "Row", "render", "rows", "with_hooks"]

#: A value that does not depend on the dataset: printed in the first dataset column.
ANY = "*"


@dataclasses.dataclass
class Row:
    section: str
    figure: str
    target: str
    #: Column label (a dataset, or :data:`ANY`) -> cell text.
    values: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Context:
    """What a hook gets: where the datasets are, the checkout under test, a scratch directory."""

    data_dir: Path
    repo: Path
    workdir: Path
    smoke: bool


#: name -> function(context) -> rows; called once per run, after the datasets' probes.
HOOKS: dict[str, Callable[[Context], list[Row]]] = {}

#: Modules that register hooks when imported (e.g. "bench.throughput"); none yet.
HOOK_MODULES: list[str] = []

#: Figures of issue 15 measured elsewhere today: (section, figure, target, how to measure it now).
PLACEHOLDERS: list[tuple[str, str, str, str]] = [
    ("Webhook throughput", "serve / bare app, req/s (granian)", ">= 0.7x", "python -m bench run throughput"),
    ("Webhook throughput", "serve p99 ms at half the bare rate", "< 10", "python -m bench run throughput"),
    ("Import", "lines/s / engine-side parse of the same file", ">= 0.5x", "python -m bench run import"),
    ("Import", "peak RSS, MiB, by lines in the log", "< 1024, flat", "python -m bench run import"),
]


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _mrows(value: Any) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f} M"


def _panel_target(panel: dict[str, Any], label: str) -> str:
    return "< 100" if panel["dashboard"] == "Audit" and label == "1d" else "< 300"


def rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    """Rows of the probe results: {column label: {"data": ..., "prepare": ..., "probe": ...}}."""
    out: list[Row] = []

    def put(section: str, figure: str, target: str, label: str, value: str) -> None:
        for row in out:
            if row.section == section and row.figure == figure:
                row.values[label] = value
                return
        out.append(Row(section, figure, target, {label: value}))

    for label, res in results.items():
        data, prep, probe = res.get("data", {}), res.get("prepare", {}), res.get("probe", {})
        phases = probe.get("phases", {})
        if "error" in res:
            put("Data", "error", "", label, res["error"][:60])
        put("Data", "events (built)", "", label, _mrows(data.get("events")))
        copies = len(data.get("copies", {}))
        put("Data", "days: simulated + copied", "", label,
            f"{data['days'] - copies} + {copies}" if data.get("days") else "-")
        put("Data", "queue visits (built)", "", label, _mrows(data.get("visits_stored")))
        put("Data", "engine on disk, GiB", "", label, _cell((data.get("bytes_on_disk") or 0) / 2**30, 2))
        caught = prep.get("caught_up", {})
        put("Data", "caught up to now: days / events", "", label,
            f"{_cell(caught.get('days'), 2)} / {_cell(caught.get('events'))}" if caught else "-")
        opened = phases.get("open", {})
        put("Data", "first refresh after catch-up (+ migrations), s", "", label, _cell(opened.get("first_refresh_s")))
        for panel in phases.get("panels", []) if isinstance(phases.get("panels"), list) else []:
            for rng in ("1d", "30d"):
                figure = f"{panel['dashboard']} / {panel['panel']} ({rng})"
                cell = panel.get(rng, {})
                text = cell.get("error", "error")[:40] if "p50_ms" not in cell else _cell(cell["p50_ms"])
                if "cpu_ms" in cell:
                    text += f" ({_cell(cell['cpu_ms'], 0)})"
                put("Panel p50 ms (CPU ms)", figure, _panel_target(panel, rng), label, text)
        refresh = phases.get("refresh", {})
        for load in ("idle", "load"):
            r = refresh.get(load)
            if not isinstance(r, dict):
                continue
            name = "nothing arriving" if load == "idle" else f"{refresh.get('rate', 50):g} webhooks/s"
            put("Refresh cost", f"CPU-s/min, {name}, views running", "", label,
                _cell(r["cpu_s_per_min_views_running"], 2))
            put("Refresh cost", f"CPU-s/min, {name}, views stopped", "", label,
                _cell(r["cpu_s_per_min_views_stopped"], 2))
            put("Refresh cost", f"CPU-s/min, {name}, the refreshes' share", "reduce where it pays", label,
                _cell(r["cpu_s_per_min_refresh"], 2))
        for key, section in (("backfill", "Backfill: the day before the data"), ("settings", "Settings change")):
            b = phases.get(key)
            if not isinstance(b, dict):
                continue
            if "error" in b:
                put(section, "error", "", label, b["error"][:60])
                continue
            if key == "backfill":
                put(section, "day imported (days back)", "", label, f"{b['day']}")
                put(section, "import itself, s", "", label, _cell(b["act_s"]))
            if b.get("failed"):
                put(section, "refresh failed", "", label, b["failed"][0]["exception"][:60])
            put(section, "until pbx.queue_stats_15m shows it, s", "< 10" if key == "backfill" else "cheap", label,
                _cell(b["until_queue_stats_s"]))
            put(section, "until every view is done, s", "", label, _cell(b["until_all_views_s"]))
            put(section, "rows read by the refreshes", "", label, _mrows(b["read_rows"]))
            heavy = sum(v["heavy"] for v in b["per_view"].values())
            put(section, "refreshes that recomputed something (all views)", "", label, _cell(heavy))
            put(section, "peak RSS of the engine process, MiB", "< 1536", label, _cell(b["peak_rss_mib"], 0))
            if key == "backfill":
                dups = b.get("duplicates", {})
                for table, d in dups.items():
                    put("After a full recompute", f"{table}: rows awaiting merge / rows", "", label,
                        f"{_mrows(d['awaiting_merge'])} / {_mrows(d['rows'])}")
                before = {p["id"]: p for p in phases.get("panels", []) if isinstance(p, dict)}
                for when, key2 in (("right after", "visit_panels_after_recompute"),
                                   ("after OPTIMIZE FINAL", "visit_panels_after_merge")):
                    ratios = []
                    for p in b.get(key2, []):
                        for rng in ("1d", "30d"):
                            old = before.get(p["id"], {}).get(rng, {}).get("p50_ms")
                            new = p.get(rng, {}).get("p50_ms")
                            if old and new:
                                ratios.append(new / old)
                    put("After a full recompute", f"visit panels p50 {when} / before (median, max)", "", label,
                        f"{statistics.median(ratios):.2f}x, {max(ratios):.2f}x" if ratios else "-")
        put("Run", "probe wall time, s", "", label, _cell(sum(probe.get("phase_seconds", {}).values()), 0))
        put("Run", "peak RSS of the engine process over the run, MiB (sampled)", "", label,
            _cell(res.get("probe_process", {}).get("peak_rss_mib"), 0))
    return out


def with_hooks(table_rows: list[Row], ctx: Context, log: Callable[[str], None] = print) -> list[Row]:
    """``table_rows`` plus every registered hook's rows, then the placeholders nobody filled."""
    out = list(table_rows)
    for module in HOOK_MODULES:
        importlib.import_module(module)
    for name, hook in HOOKS.items():
        try:
            out.extend(hook(ctx))
        except Exception as exc:  # noqa: BLE001 - one part failing leaves the table
            out.append(Row(name, "error", "", {ANY: f"{type(exc).__name__}: {exc}"[:80]}))
    have = {(r.section, r.figure) for r in out}
    for section, figure, target, how in PLACEHOLDERS:
        if (section, figure) not in have:
            out.append(Row(section, figure, target, {ANY: f"not in this run: {how}"}))
    return out


def render(table_rows: list[Row], columns: list[str]) -> list[list[str]]:
    """Rows for ``bench.cli.print_table``: section, figure, target, one cell per column."""
    out = [["section", "figure", "target", *columns]]
    for row in table_rows:
        cells = [row.values.get(c, "") for c in columns]
        if ANY in row.values and columns:
            cells[0] = row.values[ANY]
        out.append([row.section, row.figure, row.target, *cells])
    return out
