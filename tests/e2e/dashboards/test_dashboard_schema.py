"""The provisioned dashboards against Grafana's own published types, with the TypeScript compiler.

``@grafana/schema`` 12.4.0 (npm) is the dashboard model Grafana 12.4 is built on: the v1
``Dashboard`` type and each panel plugin's ``Options`` / ``FieldConfig`` (the types Grafana's
panel editors read). Each dashboard JSON is written into a TypeScript file as object literals
typed with them and checked by ``tsc --strict``: a missing required field, a wrong type or a
field the type does not have (an excess property of a literal) is an error naming the path.

What it found the first time: dashboard links without ``icon``, ``tooltip`` and ``targetBlank``
(required in 12.4); tables with ``options.footer``, the pre-12 table footer that 12's table
options no longer have; query variables with ``definition``, which 12.4's ``VariableModel``
does not have either.

Node and npm come from the machine (``.ci/run`` installs them where absent); the packages are
pinned in ``schema/package-lock.json`` and installed with ``npm ci`` on first use.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ingest.testing import npm_installed
from tests.e2e.dashboards import grafana_sim as gs

HERE = Path(__file__).resolve().parent / "schema"
BUILD = HERE / "build"

#: Panel type -> the module of its published options types (package.json "exports" of @grafana/schema).
PANEL_TYPES = {
    "timeseries": "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen",
    "stat": "stat/panelcfg/x/StatPanelCfg_types.gen",
    "gauge": "gauge/panelcfg/x/GaugePanelCfg_types.gen",
    "bargauge": "bargauge/panelcfg/x/BarGaugePanelCfg_types.gen",
    "table": "table/panelcfg/x/TablePanelCfg_types.gen",
    "barchart": "barchart/panelcfg/x/BarChartPanelCfg_types.gen",
    "piechart": "piechart/panelcfg/x/PieChartPanelCfg_types.gen",
}


#: JSON cannot hold a TypeScript enum member, only its value: ``Json<T>`` is T with each string
#: enum replaced by the union of its values (a template literal type), recursively. Panel options
#: and field config are stored as changes to the plugin's defaults, which Grafana merges on load:
#: ``Stored<T>`` makes every field optional, and still rejects any field T does not have.
JSON_TYPES = """
type Json<T> = T extends string ? (string extends T ? string : `${T}`)
  : T extends number | boolean | null | undefined ? T
  : T extends Array<infer U> ? Array<Json<U>>
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;
type DeepPartial<T> = T extends Array<infer U> ? Array<DeepPartial<U>>
  : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> }
  : T;
type Stored<T> = DeepPartial<Json<T>>;
"""


def _npm_ready() -> Path:
    return npm_installed(HERE, ".bin/tsc")


def typescript_check(dashboards: list[dict[str, Any]]) -> str:
    """A TypeScript module typing every dashboard and every panel's options with Grafana's types."""
    lines = ["import type { Dashboard } from '@grafana/schema';"]
    for kind, module in PANEL_TYPES.items():
        lines.append(f"import type * as {kind} from '@grafana/schema/dist/esm/raw/composable/{module}';")
    lines.append(JSON_TYPES)
    for d, dash in enumerate(dashboards):
        lines.append(f"\n// {dash['uid']}\nexport const dashboard{d}: Json<Dashboard> = {json.dumps(dash, indent=1)};")
        for panel in gs.iter_panels(dash["panels"]):
            kind, pid = panel["type"], f"{d}_{panel['id']}"
            lines.append(f"// {dash['uid']} panel {panel['id']} {panel['title']!r}")
            lines.append(f"export const options{pid}: Stored<{kind}.Options> = {json.dumps(panel.get('options', {}))};")
            custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
            if custom is not None:
                lines.append(f"export const custom{pid}: Stored<{kind}.FieldConfig> = {json.dumps(custom)};")
    return "\n".join(lines) + "\n"


def _tsc(source: str) -> subprocess.CompletedProcess[str]:
    tsc = _npm_ready()
    BUILD.mkdir(exist_ok=True)
    (BUILD / "check.ts").write_text(source)
    return subprocess.run([str(tsc), "-p", str(HERE / "tsconfig.json")], cwd=HERE, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_every_dashboard_and_panel_matches_grafanas_published_types():
    dashboards = gs.load_dashboards()
    assert {p["type"] for d in dashboards for p in gs.iter_panels(d["panels"])} <= set(PANEL_TYPES)
    done = _tsc(typescript_check(dashboards))
    assert done.returncode == 0, "tsc --strict against @grafana/schema 12.4.0:\n" + done.stdout[-6000:]


def test_the_check_catches_what_it_found():
    """The same check fails on the two findings it was built for, so a pass means something."""
    dash = json.loads(json.dumps(gs.load_dashboards()[0]))
    dash["links"][0].pop("icon")
    table = next(p for p in gs.iter_panels(dash["panels"]) if p["type"] == "table")
    table["options"]["footer"] = {"show": False, "reducer": ["sum"], "fields": ""}
    out = _tsc(typescript_check([dash])).stdout
    assert "Property 'icon' is missing" in out and "'\"footer\"' does not exist" in out, out[-3000:]
