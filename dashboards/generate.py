"""Generate the provisioned Grafana dashboards (``dashboards/json/*.json``).

The JSON files are what Grafana loads; this script is how they are written,
so that the dashboards share one datasource reference, one variable
definition and one layout rule. Edit here, run ``python dashboards/generate.py``,
commit both: ``tests/test_dashboards.py`` fails when the JSON and this script
disagree.

Panel SQL reads the documented views of ``pbx`` (docs/metrics.md) and uses
the ClickHouse plugin's macros: ``$__timeFilter(col)`` for the time picker,
``$__timeInterval(col)`` for time buckets, and
``$__conditionalAll(cond, $var)`` so that "All" adds no filter at all.
Variable values reach the SQL only through ``selected()``: percent-encoded,
decoded by ClickHouse, never parsed as SQL.
Ratios over several 15-minute rows are recomputed from their numerators and
denominators, never averaged. Visit lists read ``pbx.queue_calls`` filtered on ``entered_at``: its history
is a refreshed stored copy, so a 30-day range does not re-pair raw events
(docs/metrics.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "json"

#: Must match ``uid`` in provisioning/datasources/{embedded,server}/pbx.yaml.
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "pbx-clickhouse"}
#: The ClickHouse plugin version the dashboards were checked against (compose pins it).
PLUGIN_VERSION = "4.20.0"
GRAFANA_VERSION = "12.4.0"
SCHEMA_VERSION = 40


def selected(var: str) -> str:
    """The values selected in ``$var`` as a ClickHouse ``Array(String)``, whatever they contain.

    Queue names and agent ids come from webhooks, so a value may hold any text: quotes,
    backslashes, ``$__macros``, SQL. No value may reach the SQL as SQL (docs/dashboards.md,
    "Variable values are data, never SQL"). Grafana's ``customqueryparam`` format writes each
    selected value percent-encoded (RFC 3986: only ``A-Z a-z 0-9 - _ . ~`` stay, every other
    byte of the UTF-8 is ``%XX``) as ``v=<value>`` joined by ``&``: nothing in that text is
    special inside a ClickHouse string literal (no ``'``, no ``\\``), nor to the plugin's macro
    engine (no ``$``), nor to its argument parser (no ``,`` ``(`` ``)``). ClickHouse then splits
    at ``&`` (a value's own ``&`` is ``%26``), drops the ``v=`` and decodes each value back.
    """
    return f"arrayMap(p -> decodeURLComponent(substring(p, 3)), splitByChar('&', '${{{var}:customqueryparam:v}}'))"


def matches(var: str, *columns: str) -> str:
    """``$__conditionalAll``: a column holds a value selected in ``$var``; "All" (or none) adds no filter."""
    values = selected(var)
    cond = " OR ".join(f"has({values}, {column})" for column in columns)
    return f"$__conditionalAll({cond if len(columns) == 1 else f'({cond})'}, ${var})"


def matches_any(var: str, array_column: str) -> str:
    """``$__conditionalAll``: an array column (``pbx.calls.queues``, ``agents``) holds a value selected in ``$var``."""
    return f"$__conditionalAll(hasAny({selected(var)}, {array_column}), ${var})"


def one_value(var: str) -> str:
    """The value of the single-value variable ``$var`` (a text box, the FCR window) as a ClickHouse ``String``.

    The same encoding as :func:`selected` (``v=`` + percent-encoded value), decoded without a lambda:
    ClickHouse refuses lambdas in a parameterized view's argument (``repeat_calls(window_s = ...)``).
    """
    return f"decodeURLComponent(substring('${{{var}:customqueryparam:v}}', 3))"


def typed(var: str) -> str:
    """The text typed in the text box ``$var``; an empty box is "no filter" (``$__conditionalAll`` drops
    a condition whose variable is ``''``)."""
    return one_value(var)


def chosen_number(var: str) -> str:
    """The value of the single-value variable ``$var`` as a ``UInt32``; anything but digits is an error.

    Grafana 12 takes a custom variable's value from the URL even when it is none of its options
    (``var-fcr_window=...``): the value is decoded like every other, then must parse as a number.
    """
    return f"toUInt32({one_value(var)})"


def time_range_arguments() -> str:
    """The time picker's range as the ``from``/``to`` arguments of a range-bounded view
    (``pbx.repeat_calls_between(from, to, ...)``, rows with ``from <= started_at < to``).

    ``$__timeFilter(col)`` keeps ``toDateTime(from) <= col <= toDateTime(to)``: with millisecond
    times those are the rows of ``[from, to + 1 ms)``. Both are passed as UTC values: ClickHouse
    hands a view a computed argument as text in the session's time zone, so a plain ``toDateTime``
    on a server outside UTC would shift the range by its offset.
    """
    return "from = toTimeZone($__fromTime, 'UTC'), to = toTimeZone(addMilliseconds($__toTime, 1), 'UTC')"


QUEUE = matches("queue", "queue_name")
AGENT = matches("agent", "agent")
TIMESERIES, TABLE = 0, 1  # the plugin's target formats


def queue_variable(of_period: bool = True) -> dict[str, Any]:
    """Queues with calls in the period shown (or ever, for the wallboard's short "today")."""
    where = "WHERE $__timeFilter(interval_start) " if of_period else ""
    sql = f"SELECT DISTINCT queue_name FROM pbx.queue_stats_15m {where}ORDER BY queue_name"
    return _query_variable("queue", "Queue", sql, 2 if of_period else 1)


def agent_variable() -> dict[str, Any]:
    """Agents logged in during the period shown."""
    sql = "SELECT DISTINCT agent FROM pbx.agent_time_15m WHERE $__timeFilter(interval_start) AND agent != '' ORDER BY agent"
    return _query_variable("agent", "Agent", sql, 2)


def call_agent_variable() -> dict[str, Any]:
    """Agents who answered a call started in the period shown (pbx.calls, any answer of the call)."""
    sql = "SELECT DISTINCT arrayJoin(agents) AS agent FROM pbx.calls WHERE $__timeFilter(started_at) ORDER BY agent"
    return _query_variable("agent", "Agent", sql, 2)


def textbox_variable(name: str, label: str, description: str) -> dict[str, Any]:
    """Free text typed by the user (or set by a link's ``var-<name>=``); empty means no filter."""
    return {
        "type": "textbox",
        "name": name,
        "label": label,
        "description": description,
        "query": "",
        "current": {"selected": False, "text": "", "value": ""},
        "options": [],
        "hide": 0,
        "skipUrlSync": False,
    }


def custom_variable(
    name: str, label: str, choices: list[tuple[str, str]], *, default: str | None = None, multi: bool = True
) -> dict[str, Any]:
    """A fixed list of ``(text, value)`` choices: multi-value with All, or one value with ``default``."""
    query = ",".join(value if text == value else f"{text} : {value}" for text, value in choices)
    if default is None:
        current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        current = {"selected": True, "text": next(t for t, v in choices if v == default), "value": default}
    return {
        "type": "custom",
        "name": name,
        "label": label,
        "query": query,
        "multi": multi,
        "includeAll": default is None,
        "current": current,
        "options": [{"selected": v == default, "text": t, "value": v} for t, v in choices],
        "hide": 0,
        "skipUrlSync": False,
    }


def _query_variable(name: str, label: str, sql: str, refresh: int) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": sql,
        # 1 = on dashboard load, 2 = also on time-range change (the query filters by period).
        "refresh": refresh,
        "multi": True,
        "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 1,
        "hide": 0,
        "skipUrlSync": False,
    }


class Layout:
    """Places panels left to right in rows of 24 grid columns."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def newline(self) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0


def panel(
    layout: Layout,
    kind: str,
    title: str,
    sql: str,
    *,
    w: int,
    h: int,
    description: str = "",
    unit: str | None = None,
    decimals: int | None = None,
    interval: str | None = None,
    options: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    thresholds: list[tuple[str, float | None]] | None = None,
    min_max: tuple[float, float] | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One panel with one SQL target; its format follows from the visualization."""
    fmt = TIMESERIES if kind == "timeseries" else TABLE
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in thresholds],
        }
    if min_max:
        defaults["min"], defaults["max"] = min_max
    if custom:
        defaults["custom"] = custom
    p: dict[str, Any] = {
        "id": layout.next_id,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": layout.place(w, h),
        "pluginVersion": GRAFANA_VERSION,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "targets": [
            {
                "refId": "A",
                "datasource": DATASOURCE,
                "editorType": "sql",
                "format": fmt,
                "pluginVersion": PLUGIN_VERSION,
                "rawSql": _tidy(sql),
            }
        ],
    }
    if interval:
        p["interval"] = interval
    layout.next_id += 1
    return p


def _tidy(sql: str) -> str:
    lines = [line.rstrip() for line in sql.strip("\n").splitlines()]
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:] for line in lines)


def stat_options(text_mode: str = "value_and_name") -> dict[str, Any]:
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "none",
        "textMode": text_mode,
        "justifyMode": "auto",
        "orientation": "auto",
    }


def table_options() -> dict[str, Any]:
    # No "footer": Grafana 12's table has none in its options (a footer is per field now).
    return {"showHeader": True, "cellHeight": "sm"}


def column(name: str, *properties: tuple[str, Any]) -> dict[str, Any]:
    """A field override: ``properties`` (``(id, value)``) for the result column ``name``."""
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": key, "value": value} for key, value in properties]}  # fmt: skip


CALLS_UID = "pbx-calls"


def link_to_calls(field: str, var: str, title: str) -> tuple[str, Any]:
    """A data link on column ``field``: the Calls dashboard, same time range, ``$var`` = the cell's value.

    The value is percent-encoded into the URL (``:percentencode``); the Calls dashboard reads it
    like any variable value (:func:`selected`), so any text is safe.
    """
    url = f"/d/{CALLS_UID}/calls?${{__url_time_range}}&var-{var}=${{__data.fields[\"{field}\"]:percentencode}}"
    return "links", [{"title": title, "url": url, "targetBlank": False}]


def series_options() -> dict[str, Any]:
    return {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}, "tooltip": {"mode": "multi"}}


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    *,
    time_from: str,
    time_to: str = "now",
    refresh: str = "",
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["pbx-analytics"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": time_to},
        "refresh": refresh,
        "timepicker": {},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [
            # Moving between dashboards keeps the time range and the queue / agent selection.
            {"type": "dashboards", "tags": ["pbx-analytics"], "asDropdown": True, "title": "PBX dashboards",
             "keepTime": True, "includeVars": True, "icon": "external link", "tooltip": "", "targetBlank": False}
        ],
        "panels": panels,
    }


# -- 1. Queue service level -------------------------------------------------------------------------

SLA_THRESHOLDS = [("red", None), ("orange", 70), ("green", 80)]


def queue_service_level() -> dict[str, Any]:
    L = Layout()
    where = f"$__timeFilter(interval_start) AND {QUEUE}"
    panels = [
        panel(L, "stat", "Service level", f"""
            SELECT
                100 * sum(answered_in_sla) / nullIf(sum(answered + abandoned), 0) AS `Answered in threshold / (answered + abandoned)`,
                100 * sum(answered_in_sla) / nullIf(sum(answered), 0) AS `Answered in threshold / answered`,
                sum(sla_inclusive_pct * (offered - overflowed)) / nullIf(sum(offered - overflowed), 0) AS `Inclusive (abandons within threshold count as met)`
            FROM pbx.queue_stats_15m
            WHERE {where}
            """, w=12, h=5, unit="percent", decimals=1, thresholds=SLA_THRESHOLDS,
            description="The three service-level formulas over the selected period and queues "
            "(docs/metrics.md). Each queue's own threshold comes from pbx.queue_settings (default 20 s).",
            options=stat_options()),
        panel(L, "stat", "Calls", f"""
            SELECT sum(offered) AS Offered, sum(answered) AS Answered, sum(abandoned) AS Abandoned,
                   sum(short_abandoned) AS `Short abandons`, sum(overflowed) AS Overflowed
            FROM pbx.queue_stats_15m
            WHERE {where}
            """, w=12, h=5, unit="short", options=stat_options()),
        panel(L, "stat", "Average speed of answer", f"""
            SELECT sum(asa_s * answered) / nullIf(sum(answered), 0) AS ASA
            FROM pbx.queue_stats_15m
            WHERE {where}
            """, w=6, h=4, unit="s", decimals=1, options=stat_options("value")),
        panel(L, "stat", "Longest wait", f"""
            SELECT max(max_wait_s) AS `Max wait`
            FROM pbx.queue_stats_15m
            WHERE {where}
            """, w=6, h=4, unit="s", options=stat_options("value")),
        panel(L, "table", "SLA thresholds in force", f"""
            SELECT q.queue_name AS Queue,
                   if(s.configured, s.sla_threshold_s, 20) AS `SLA threshold (s)`,
                   if(s.configured, s.short_abandon_s, 5) AS `Short abandon below (s)`,
                   if(s.configured, 'queue_settings', 'default') AS `From`
            FROM (SELECT DISTINCT queue_name FROM pbx.queue_stats_15m WHERE {where}) AS q
            LEFT JOIN
            (
                -- The newest row of a queue wins (pbx.queue_settings is append-only).
                SELECT queue_name, argMax(sla_threshold_s, updated_at) AS sla_threshold_s,
                       argMax(short_abandon_s, updated_at) AS short_abandon_s, 1 AS configured
                FROM pbx.queue_settings
                GROUP BY queue_name
            ) AS s ON s.queue_name = q.queue_name
            ORDER BY Queue
            """, w=12, h=4, options=table_options(),
            description="Per-queue thresholds from pbx.queue_settings; queues without a row use 20 s and 5 s."),
        panel(L, "timeseries", "Service level per queue (answered in threshold / answered + abandoned)", f"""
            SELECT $__timeInterval(interval_start) AS time, queue_name,
                   100 * sum(answered_in_sla) / nullIf(sum(answered + abandoned), 0) AS sla_pct
            FROM pbx.queue_stats_15m
            WHERE {where}
            GROUP BY time, queue_name
            ORDER BY time, queue_name
            """, w=12, h=9, unit="percent", interval="15m", min_max=(0, 100), options=series_options(),
            custom={"drawStyle": "line", "lineWidth": 2, "spanNulls": False}),
        panel(L, "timeseries", "Service level, three formulas (selected queues)", f"""
            SELECT $__timeInterval(interval_start) AS time,
                   100 * sum(answered_in_sla) / nullIf(sum(answered + abandoned), 0) AS `Abandons against`,
                   100 * sum(answered_in_sla) / nullIf(sum(answered), 0) AS `Answered only`,
                   sum(sla_inclusive_pct * (offered - overflowed)) / nullIf(sum(offered - overflowed), 0) AS `Inclusive`
            FROM pbx.queue_stats_15m
            WHERE {where}
            GROUP BY time
            ORDER BY time
            """, w=12, h=9, unit="percent", interval="15m", min_max=(0, 100), options=series_options(),
            custom={"drawStyle": "line", "lineWidth": 2, "spanNulls": False}),
        panel(L, "timeseries", "Offered, answered, abandoned", f"""
            SELECT $__timeInterval(interval_start) AS time,
                   sum(answered) AS Answered, sum(abandoned) AS Abandoned,
                   sum(short_abandoned) AS `Short abandons`, sum(overflowed) AS Overflowed
            FROM pbx.queue_stats_15m
            WHERE {where}
            GROUP BY time
            ORDER BY time
            """, w=12, h=8, unit="short", interval="15m", options=series_options(),
            custom={"drawStyle": "bars", "stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 80}),
        panel(L, "timeseries", "Speed of answer and longest wait", f"""
            SELECT $__timeInterval(interval_start) AS time,
                   sum(asa_s * answered) / nullIf(sum(answered), 0) AS ASA,
                   max(max_wait_s) AS `Max wait`
            FROM pbx.queue_stats_15m
            WHERE {where}
            GROUP BY time
            ORDER BY time
            """, w=12, h=8, unit="s", interval="15m", options=series_options(),
            custom={"drawStyle": "line", "lineWidth": 2, "spanNulls": False}),
        panel(L, "table", "Per interval", f"""
            SELECT interval_start AS Interval, queue_name AS Queue, offered AS Offered, answered AS Answered,
                   abandoned AS Abandoned, short_abandoned AS `Short abandons`, overflowed AS Overflowed,
                   round(sla_pct, 1) AS `SLA %`, round(sla_answered_pct, 1) AS `SLA answered-only %`,
                   round(sla_inclusive_pct, 1) AS `SLA inclusive %`, round(asa_s, 1) AS `ASA (s)`,
                   max_wait_s AS `Max wait (s)`
            FROM pbx.queue_stats_15m
            WHERE {where}
            ORDER BY Interval DESC, Queue
            LIMIT 2000
            """, w=24, h=10, options=table_options()),
        panel(L, "table", "First-contact resolution per queue and day", f"""
            SELECT toDate(started_at) AS Day, if(first_queue = '', '(no queue)', first_queue) AS Queue,
                   countIf(answered = 1) AS `Answered calls`,
                   countIf(answered = 1 AND repeat = 1) AS `Answered, called again`,
                   round(100 * countIf(answered = 1 AND repeat = 0) / nullIf(countIf(answered = 1), 0), 1) AS `FCR %`,
                   countIf(answered = 0 AND repeat = 1) AS `Not answered, called again`
            FROM pbx.repeat_calls_between({time_range_arguments()}, window_s = {chosen_number("fcr_window")})
            WHERE {matches("queue", "first_queue")}
            GROUP BY Day, Queue
            HAVING countIf(answered = 1) > 0
            ORDER BY Day DESC, Queue
            """, w=24, h=8, options=table_options(),
            overrides=[column("FCR %", ("unit", "percent"), ("decimals", 1),
                              ("thresholds", {"mode": "absolute", "steps": [
                                  {"color": "red", "value": None}, {"color": "orange", "value": 60},
                                  {"color": "green", "value": 75}]}),
                              ("custom.cellOptions", {"type": "color-text"}))],
            description="First-contact resolution = answered calls whose caller did not call again within the "
            "FCR window / answered calls (pbx.repeat_calls_between, docs/metrics.md). Inbound calls with a caller "
            "number that started in the range, by the queue they reached first; their callers' next calls are "
            "looked for up to one window after the range. Calls of the last window before now are provisional: "
            "their caller may still call again."),
    ]
    return dashboard(
        "pbx-queue-sla", "Queue service level",
        "Are callers answered fast enough? Service level per queue with the three industry formulas, "
        "volumes, speed of answer and waits, per 15-minute interval; first-contact resolution per day.",
        panels, [queue_variable(), fcr_window_variable()], time_from="now-24h",
    )


def fcr_window_variable() -> dict[str, Any]:
    """How soon a call again from the same number makes a call a repeat (pbx.repeat_calls' window_s)."""
    return custom_variable("fcr_window", "FCR window",
                           [("1 hour", "3600"), ("1 day", "86400"), ("7 days", "604800")],
                           default="86400", multi=False)  # fmt: skip


# -- 2. Abandonment ---------------------------------------------------------------------------------


def abandonment() -> dict[str, Any]:
    L = Layout()
    calls = f"$__timeFilter(entered_at) AND {QUEUE}"
    stats = f"$__timeFilter(interval_start) AND {QUEUE}"
    panels = [
        panel(L, "stat", "Abandon rate", f"""
            SELECT 100 * sum(abandoned) / nullIf(sum(answered + abandoned), 0) AS `Abandoned / (answered + abandoned)`
            FROM pbx.queue_stats_15m
            WHERE {stats}
            """, w=6, h=5, unit="percent", decimals=1, options=stat_options("value"),
            thresholds=[("green", None), ("orange", 5), ("red", 10)],
            description="Short abandons (callers who hung up before the queue's short-abandon limit) "
            "and overflows are not counted as abandons."),
        panel(L, "stat", "Abandons", f"""
            SELECT sum(abandoned) AS Abandoned, sum(short_abandoned) AS `Short abandons`, sum(overflowed) AS Overflowed
            FROM pbx.queue_stats_15m
            WHERE {stats}
            """, w=10, h=5, unit="short", options=stat_options()),
        panel(L, "stat", "Average time to abandon", f"""
            SELECT sum(avg_abandon_s * abandoned) / nullIf(sum(abandoned), 0) AS `Time to abandon`
            FROM pbx.queue_stats_15m
            WHERE {stats}
            """, w=8, h=5, unit="s", decimals=1, options=stat_options("value")),
        panel(L, "timeseries", "Abandon rate per queue", f"""
            SELECT $__timeInterval(interval_start) AS time, queue_name,
                   100 * sum(abandoned) / nullIf(sum(answered + abandoned), 0) AS abandon_rate_pct
            FROM pbx.queue_stats_15m
            WHERE {stats}
            GROUP BY time, queue_name
            ORDER BY time, queue_name
            """, w=12, h=8, unit="percent", interval="15m", options=series_options(),
            custom={"drawStyle": "line", "lineWidth": 2, "spanNulls": False}),
        panel(L, "barchart", "How long callers waited before hanging up", f"""
            SELECT bucket AS `Waited`, count() AS Abandoned
            FROM
            (
                SELECT multiIf(wait_s < 5, 0, wait_s < 10, 1, wait_s < 20, 2, wait_s < 30, 3, wait_s < 60, 4,
                               wait_s < 120, 5, wait_s < 300, 6, 7) AS ord,
                       ['0-5 s', '5-10 s', '10-20 s', '20-30 s', '30-60 s', '1-2 min', '2-5 min', '5 min +'][ord + 1] AS bucket
                FROM pbx.queue_calls
                WHERE {calls} AND outcome IN ('abandoned', 'short_abandon')
            )
            GROUP BY bucket
            ORDER BY min(ord)
            """, w=12, h=8, unit="short",
            options={"xField": "Waited", "orientation": "vertical", "showValue": "auto",
                     "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False}},
            description="Abandoned and short-abandoned visits by time waited."),
        panel(L, "piechart", "Outcome of queue visits", f"""
            SELECT outcome AS Outcome, count() AS Visits
            FROM pbx.queue_calls
            WHERE {calls} AND outcome != 'waiting'
            GROUP BY outcome
            ORDER BY Visits DESC
            """, w=8, h=8, unit="short",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                     "pieType": "donut", "displayLabels": ["name", "percent"],
                     "legend": {"displayMode": "table", "placement": "right", "values": ["value", "percent"]}}),
        panel(L, "table", "Overflow flows", f"""
            SELECT from_queue AS `From queue`, to_queue AS `To queue`, count() AS Calls,
                   round(avg(wait_s), 1) AS `Avg wait before overflow (s)`
            FROM
            (
                SELECT queue_name AS from_queue, outcome, wait_s,
                       leadInFrame(queue_name) OVER (PARTITION BY call_id ORDER BY entered_at
                                                     ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS to_queue
                FROM pbx.queue_calls
                WHERE $__timeFilter(entered_at)
            )
            WHERE outcome = 'overflow' AND {matches('queue', 'from_queue')}
            GROUP BY from_queue, to_queue
            ORDER BY Calls DESC
            """, w=16, h=8, options=table_options(),
            description="Calls that left a queue unanswered for another queue, by pair of queues."),
        panel(L, "table", "Abandoned calls", f"""
            SELECT q.entered_at AS `Entered queue`, q.queue_name AS Queue, e.caller_num AS Caller,
                   round(q.wait_s, 1) AS `Waited (s)`, q.outcome AS Outcome, q.call_id AS `Call id`
            FROM pbx.queue_calls AS q
            LEFT JOIN
            (
                -- The caller's number is only in the raw queue_in event.
                SELECT call_id, any(caller_num) AS caller_num
                FROM pbx.events
                WHERE event = 'queue_in' AND $__timeFilter(received_at)
                GROUP BY call_id
            ) AS e ON e.call_id = q.call_id
            WHERE $__timeFilter(q.entered_at) AND q.outcome IN ('abandoned', 'short_abandon')
              AND {matches('queue', 'q.queue_name')}
            ORDER BY q.entered_at DESC, q.call_id, q.queue_name
            LIMIT 1000
            """, w=24, h=10, options=table_options(),
            overrides=[column("Call id", link_to_calls("Call id", "call", "This call in Calls")),
                       column("Caller", link_to_calls("Caller", "caller", "This caller's calls"))],
            description="Who hung up waiting: call back these numbers. Click a call id or a number for its calls."),
    ]
    return dashboard(
        "pbx-abandonment", "Abandonment",
        "Who hangs up before being answered, after how long, and where overflowing calls go.",
        panels, [queue_variable()], time_from="now-24h",
    )


# -- 3. Agents --------------------------------------------------------------------------------------


def agents() -> dict[str, Any]:
    L = Layout()
    where = f"$__timeFilter(interval_start) AND {AGENT}"
    # Panels that show time alone read pbx.agent_time_15m, those that count answers and rings alone
    # pbx.agent_calls_15m: agent_stats_15m computes both on every read (docs/benchmarks.md).
    panels = [
        panel(L, "stat", "Occupancy", f"""
            SELECT 100 * sum(talk_s) / nullIf(sum(talk_s + idle_s), 0) AS `Talk / (talk + idle)`
            FROM pbx.agent_time_15m
            WHERE {where}
            """, w=6, h=5, unit="percent", decimals=1, options=stat_options("value"),
            thresholds=[("blue", None), ("green", 60), ("orange", 90)],
            description="Share of available (not paused) logged-in time spent talking."),
        panel(L, "stat", "Calls", f"""
            SELECT sum(calls_answered) AS Answered, sum(ring_no_answer) AS `Ring, no answer`
            FROM pbx.agent_calls_15m
            WHERE {where}
            """, w=8, h=5, unit="short", options=stat_options()),
        panel(L, "stat", "Logged-in time", f"""
            SELECT sum(talk_s) / 3600 AS Talk, sum(idle_s) / 3600 AS Idle, sum(paused_s) / 3600 AS Paused
            FROM pbx.agent_time_15m
            WHERE {where}
            """, w=10, h=5, unit="h", decimals=1, options=stat_options()),
        panel(L, "timeseries", "Occupancy per agent", f"""
            SELECT $__timeInterval(interval_start) AS time, agent,
                   100 * sum(talk_s) / nullIf(sum(talk_s + idle_s), 0) AS occupancy_pct
            FROM pbx.agent_time_15m
            WHERE {where}
            GROUP BY time, agent
            ORDER BY time, agent
            """, w=12, h=9, unit="percent", interval="15m", min_max=(0, 100), options=series_options(),
            custom={"drawStyle": "line", "lineWidth": 1, "spanNulls": False}),
        panel(L, "barchart", "Talk, idle and paused per agent", f"""
            SELECT agent AS Agent, sum(talk_s) / 3600 AS Talk, sum(idle_s) / 3600 AS Idle, sum(paused_s) / 3600 AS Paused
            FROM pbx.agent_time_15m
            WHERE {where}
            GROUP BY agent
            ORDER BY agent
            """, w=12, h=9, unit="h", decimals=1,
            options={"xField": "Agent", "orientation": "horizontal", "stacking": "normal", "showValue": "never",
                     "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}),
        panel(L, "table", "Per agent", f"""
            SELECT agent AS Agent,
                   round(sum(logged_in_s) / 3600, 2) AS `Logged in (h)`,
                   round(sum(talk_s) / 3600, 2) AS `Talk (h)`,
                   round(sum(idle_s) / 3600, 2) AS `Idle (h)`,
                   round(sum(paused_s) / 3600, 2) AS `Paused (h)`,
                   round(100 * sum(talk_s) / nullIf(sum(talk_s + idle_s), 0), 1) AS `Occupancy %`,
                   sum(calls_answered) AS `Calls answered`,
                   sum(ring_no_answer) AS `Ring, no answer`,
                   round(sum(talk_s) / nullIf(sum(calls_answered), 0), 0) AS `Talk per call (s)`
            FROM pbx.agent_stats_15m
            WHERE {where}
            GROUP BY agent
            ORDER BY agent
            """, w=24, h=10, options=table_options(),
            overrides=[column("Agent", link_to_calls("Agent", "agent", "This agent's calls"))],
            description="Click an agent for the calls they answered (Calls dashboard)."),
        panel(L, "table", "Per team (queue)", f"""
            SELECT queue_name AS Team, uniqExact(agent) AS Agents, count() AS `Calls answered`,
                   round(avg(wait_s), 1) AS `ASA (s)`, round(100 * countIf(in_sla) / count(), 1) AS `In SLA %`
            FROM pbx.queue_calls
            WHERE $__timeFilter(entered_at) AND outcome = 'answered' AND {QUEUE} AND {AGENT}
            GROUP BY queue_name
            ORDER BY queue_name
            """, w=12, h=8, options=table_options(),
            description="A team is the agents answering a queue's calls."),
        panel(L, "timeseries", "Calls answered and rung unanswered", f"""
            SELECT $__timeInterval(interval_start) AS time,
                   sum(calls_answered) AS Answered, sum(ring_no_answer) AS `Ring, no answer`
            FROM pbx.agent_calls_15m
            WHERE {where}
            GROUP BY time
            ORDER BY time
            """, w=12, h=8, unit="short", interval="15m", options=series_options(),
            custom={"drawStyle": "bars", "fillOpacity": 80}),
        panel(L, "barchart", "Paused time by reason", f"""
            SELECT state AS Reason, sum(seconds) / 3600 AS `Paused (h)`
            FROM pbx.agent_states_15m
            WHERE {where} AND paused = 1
            GROUP BY state
            ORDER BY `Paused (h)` DESC, Reason
            """, w=10, h=8, unit="h", decimals=1,
            options={"xField": "Reason", "orientation": "horizontal", "showValue": "auto",
                     "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False}},
            description="Where the paused time went: the state name the agent set to pause (lowercased; "
            "pbx.agent_states_15m, paused = 1). Talk and idle are the rest of logged-in time."),
        panel(L, "table", "Paused time by agent and reason", f"""
            SELECT Agent, Reason, round(paused_s / 3600, 2) AS `Paused (h)`,
                   round(100 * paused_s / nullIf(logged_in_s, 0), 1) AS `Share of logged-in time %`
            FROM
            (
                SELECT agent AS Agent, state AS Reason, paused, sum(seconds) AS paused_s,
                       sum(sum(seconds)) OVER (PARTITION BY agent) AS logged_in_s
                FROM pbx.agent_states_15m
                WHERE {where}
                GROUP BY agent, state, paused
            )
            WHERE paused = 1
            ORDER BY Agent, paused_s DESC, Reason
            """, w=14, h=8, options=table_options(),
            overrides=[column("Agent", link_to_calls("Agent", "agent", "This agent's calls"))]),
    ]
    return dashboard(
        "pbx-agents", "Agents",
        "How busy is each agent and team: occupancy, talk / idle / paused time, answered and missed calls.",
        panels, [agent_variable(), queue_variable()], time_from="now-24h",
    )


# -- 4. Audit ---------------------------------------------------------------------------------------


def audit() -> dict[str, Any]:
    L = Layout()
    spy = f"$__timeFilter(started_at) AND {matches('agent', 'spying_userid', 'spying_target_userid')}"
    # `at` is the stored order of pbx.recording_audit: filtering on it too reads one range of
    # history (docs/metrics.md#pbxrecording_audit); the coalesce is what the panels mean.
    rec = (
        "$__timeFilter(at) AND $__timeFilter(coalesce(answered_at, ended_at)) AND $__conditionalAll(call_id IN "
        "(SELECT call_id FROM pbx.queue_calls WHERE $__timeFilter(entered_at) AND "
        f"has({selected('queue')}, queue_name)), $queue)"
    )
    panels = [
        panel(L, "stat", "Listen-in sessions", f"""
            SELECT count() AS Sessions, countIf(ended_at IS NULL) AS Unfinished,
                   sum(duration_s) / 60 AS `Minutes listened`
            FROM pbx.spy_sessions
            WHERE {spy}
            """, w=12, h=5, unit="short", decimals=0, options=stat_options()),
        panel(L, "piechart", "Sessions by type", f"""
            SELECT spy_type AS Type, count() AS Sessions
            FROM pbx.spy_sessions
            WHERE {spy}
            GROUP BY spy_type
            ORDER BY Sessions DESC
            """, w=12, h=5, unit="short",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                     "pieType": "pie", "displayLabels": ["name", "value"],
                     "legend": {"displayMode": "list", "placement": "right"}}),
        panel(L, "table", "Spy, barge-in and whisper sessions", f"""
            SELECT started_at AS Started, spying_userid AS Who, spying_exten AS `From extension`,
                   spying_target_userid AS Whom, spying_target_exten AS `Target extension`, spy_type AS Type,
                   duration_s AS `Duration (s)`, if(ended_at IS NULL, 'unfinished', 'ended') AS Status, call_id AS `Call id`
            FROM pbx.spy_sessions
            WHERE {spy}
            ORDER BY started_at DESC, call_id, spying_userid, spying_target_userid
            LIMIT 1000
            """, w=24, h=9, options=table_options(),
            description="Who listened to whom, how, and how long. Unfinished: no matching end event."),
        panel(L, "stat", "Recording", f"""
            SELECT 100 * sum(recording_s) / nullIf(sum(talk_s), 0) AS `Coverage %`,
                   countIf(answered_at IS NOT NULL AND recorded = 0) AS `Answered, not recorded`,
                   sum(unstopped) AS `Never stopped`
            FROM pbx.recording_audit
            WHERE {rec}
            """, w=12, h=5, decimals=0, options=stat_options(),
            description="Coverage: recorded talk time / talk time of answered calls."),
        panel(L, "timeseries", "Recording coverage", f"""
            SELECT $__timeInterval(assumeNotNull(answered_at)) AS time,
                   100 * sum(recording_s) / nullIf(sum(talk_s), 0) AS `Coverage %`
            FROM pbx.recording_audit
            WHERE answered_at IS NOT NULL AND {rec}
            GROUP BY time
            ORDER BY time
            """, w=12, h=5, unit="percent", interval="1h", min_max=(0, 100), options=series_options(),
            custom={"drawStyle": "line", "lineWidth": 2, "spanNulls": False}),
        panel(L, "table", "Answered calls without recording", f"""
            SELECT answered_at AS Answered, ended_at AS Ended, talk_s AS `Talk (s)`, call_id AS `Call id`
            FROM pbx.recording_audit
            WHERE answered_at IS NOT NULL AND recorded = 0 AND {rec}
            ORDER BY answered_at DESC, call_id
            LIMIT 1000
            """, w=12, h=9, options=table_options()),
        panel(L, "table", "Recordings never stopped or partial", f"""
            SELECT answered_at AS Answered, call_id AS `Call id`, segments AS Segments,
                   recording_s AS `Recorded (s)`, talk_s AS `Talk (s)`, round(coverage_pct, 1) AS `Coverage %`,
                   if(unstopped = 1, 'yes', 'no') AS `Never stopped`
            FROM pbx.recording_audit
            WHERE recorded = 1 AND (unstopped = 1 OR coverage_pct < 100) AND {rec}
            ORDER BY answered_at DESC, call_id
            LIMIT 1000
            """, w=12, h=9, options=table_options()),
    ]
    return dashboard(
        "pbx-audit", "Audit",
        "Supervisor listen-ins (spy, barge-in, whisper) and call recording compliance.",
        panels, [agent_variable(), queue_variable()], time_from="now-7d",
    )


# -- 5. Wallboard -----------------------------------------------------------------------------------


def wallboard() -> dict[str, Any]:
    L = Layout()
    today = f"$__timeFilter(interval_start) AND {QUEUE}"
    panels = [
        panel(L, "stat", "Calls waiting", f"""
            SELECT sum(waiting) AS `Waiting now`
            FROM pbx.queue_now
            WHERE {QUEUE}
            """, w=6, h=6, unit="short", options=stat_options("value"),
            thresholds=[("green", None), ("orange", 3), ("red", 8)]),
        panel(L, "stat", "Longest wait", f"""
            SELECT max(longest_wait_s) AS `Longest wait now`
            FROM pbx.queue_now
            WHERE {QUEUE}
            """, w=6, h=6, unit="s", options=stat_options("value"),
            thresholds=[("green", None), ("orange", 20), ("red", 60)]),
        panel(L, "gauge", "Service level today", f"""
            SELECT 100 * sum(answered_in_sla) / nullIf(sum(answered + abandoned), 0) AS `SLA today`
            FROM pbx.queue_stats_15m
            WHERE {today}
            """, w=6, h=6, unit="percent", decimals=1, min_max=(0, 100), thresholds=SLA_THRESHOLDS,
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "showThresholdMarkers": True}),
        panel(L, "stat", "Today", f"""
            SELECT sum(offered) AS Offered, sum(answered) AS Answered, sum(abandoned) AS Abandoned
            FROM pbx.queue_stats_15m
            WHERE {today}
            """, w=6, h=6, unit="short", options=stat_options()),
        panel(L, "bargauge", "Waiting per queue", f"""
            SELECT queue_name AS Queue, waiting AS Waiting
            FROM pbx.queue_now
            WHERE {QUEUE}
            ORDER BY queue_name
            """, w=8, h=8, unit="short",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                     "orientation": "horizontal", "displayMode": "lcd", "showUnfilled": True}),
        panel(L, "piechart", "Agents by state", """
            SELECT if(on_call, 'on a call', state) AS State, count() AS Agents
            FROM pbx.agents_now
            GROUP BY State
            ORDER BY Agents DESC
            """, w=8, h=8, unit="short",
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True},
                     "pieType": "donut", "displayLabels": ["name", "value"],
                     "legend": {"displayMode": "table", "placement": "right", "values": ["value"]}}),
        panel(L, "table", "Agents now", """
            SELECT agent AS Agent, if(on_call, 'on a call', state) AS State, since AS Since
            FROM pbx.agents_now
            ORDER BY on_call DESC, state, agent
            """, w=8, h=8, options=table_options()),
    ]
    return dashboard(
        "pbx-wallboard", "Wallboard",
        "For the big screen: calls waiting now, longest wait, agents by state, today's service level.",
        panels, [queue_variable(of_period=False)], time_from="now/d", time_to="now/d", refresh="5s",
    )


# -- 6. Calls ---------------------------------------------------------------------------------------

OUTCOMES = ["answered", "abandoned", "unanswered", "active"]
DIRECTIONS = ["inbound", "outbound", "internal"]


def calls() -> dict[str, Any]:
    L = Layout()
    where = f"""$__timeFilter(started_at)
              AND $__conditionalAll(position(caller_num, {typed('caller')}) > 0, $caller)
              AND $__conditionalAll(call_id = {typed('call')}, $call)
              AND {matches_any('agent', 'agents')}
              AND {matches_any('queue', 'queues')}
              AND {matches('outcome', 'outcome')}
              AND {matches('direction', 'direction')}"""
    panels = [
        panel(L, "stat", "Calls found", f"""
            SELECT count() AS Calls, countIf(outcome = 'answered') AS Answered,
                   countIf(outcome = 'abandoned') AS Abandoned, countIf(outcome = 'unanswered') AS Unanswered,
                   countIf(outcome = 'active') AS Active
            FROM pbx.calls
            WHERE {where}
            """, w=16, h=4, unit="short", options=stat_options()),
        panel(L, "stat", "Talk of calls found", f"""
            SELECT sum(talk_s) / 3600 AS `Talk (h)`, avg(talk_s) AS `Average talk (s)`
            FROM pbx.calls
            WHERE {where}
            """, w=8, h=4, decimals=1, options=stat_options()),
        panel(L, "table", "Calls", f"""
            SELECT started_at AS Started, direction AS Direction, outcome AS Outcome,
                   caller_num AS Caller, dialed_num AS Dialed, arrayStringConcat(queues, ', ') AS Queues,
                   agent AS Agent, arrayStringConcat(agents, ', ') AS Agents,
                   round(wait_s, 1) AS `Wait (s)`, round(talk_s, 1) AS `Talk (s)`, round(duration_s, 1) AS `Duration (s)`,
                   answered_at AS Answered, ended_at AS Ended,
                   if(recorded = 1, 'yes', 'no') AS Recorded, if(spied = 1, 'yes', 'no') AS Spied,
                   call_id AS `Call id`, custom_call_id AS `Custom call id`
            FROM pbx.calls
            WHERE {where}
            ORDER BY started_at DESC, call_id
            LIMIT 1000
            """, w=24, h=16, options=table_options(),
            description="The newest 1000 calls started in the period that match every filter (pbx.calls, one row "
            "per call, docs/metrics.md). Caller number: any part of it. Agent: any agent who answered the call. "
            "Queue: any queue it entered. Wait is from the call's start to its first answer."),
    ]
    variables = [
        textbox_variable("caller", "Caller number", "Calls whose caller number contains this text"),
        textbox_variable("call", "Call id", "One call, by its call_id"),
        call_agent_variable(),
        queue_variable(),
        custom_variable("outcome", "Outcome", [(o, o) for o in OUTCOMES]),
        custom_variable("direction", "Direction", [(d, d) for d in DIRECTIONS]),
    ]
    return dashboard(
        CALLS_UID, "Calls",
        "Find a call: every call in the period, inbound, outbound and internal, with the queues and agents it "
        "touched, by caller number, call id, agent, queue, outcome and direction.",
        panels, variables, time_from="now-24h",
    )


# -- 7. Staffing ------------------------------------------------------------------------------------


def staffing() -> dict[str, Any]:
    L = Layout()
    # pbx.staffing_between reads only the range's visits and calls (pbx.staffing_15m filtered reads every
    # call's talk and every visit: docs/metrics.md#pbxstaffing_between).
    staffing = f"pbx.staffing_between({time_range_arguments()})"
    # Per 15-minute interval: agents required (sum over the selected queues' Erlang C figures), agents
    # staffed (logged-in time not paused / 900 s, all agents: the PBX says nothing of which agent serves
    # which queue) and the shortfall. Required rows exist for every interval from a queue's first visit;
    # a queue without a figure (agents_required NULL) counts 0 and in `unknown`, whether or not agents were
    # logged in then (before, such an interval showed 0 with staffed time and no value without).
    per_interval = f"""
            SELECT interval_start, sum(required) AS required, sum(staffed) AS staffed, sum(erlangs) AS erlangs,
                   sum(offered) AS offered, sum(unknown) AS unknown
            FROM
            (
                SELECT interval_start, toFloat64(sum(ifNull(agents_required, 0))) AS required, 0. AS staffed,
                       sum(traffic_erlangs) AS erlangs, toFloat64(sum(offered)) AS offered,
                       toFloat64(countIf(agents_required IS NULL)) AS unknown
                FROM {staffing}
                WHERE {QUEUE}
                GROUP BY interval_start
                UNION ALL
                SELECT interval_start, 0., sum(talk_s + idle_s) / 900, 0., 0., 0.
                FROM pbx.agent_time_15m
                WHERE $__timeFilter(interval_start)
                GROUP BY interval_start
            )
            GROUP BY interval_start"""
    panels = [
        panel(L, "stat", "Intervals short of agents", f"""
            SELECT countIf(staffed < required) AS `Intervals short`,
                   count() AS Intervals,
                   max(required) AS `Peak agents required`,
                   round(sumIf(required - staffed, staffed < required) / 4, 1) AS `Agent-hours short`,
                   round(sum(erlangs) / 4, 1) AS `Traffic (Erlang-hours)`
            FROM ({per_interval})
            """, w=24, h=5, decimals=1, options=stat_options(),
            description="15-minute intervals in which fewer agents were logged in and not paused than Erlang C "
            "requires for the selected queues' service-level targets (pbx.staffing_between: pbx.staffing_15m's "
            "rows of the range); traffic is offered calls × average handle time (talk) summed over the selected "
            "queues."),
        panel(L, "timeseries", "Agents required vs staffed (selected queues, whole centre staffed)", f"""
            SELECT $__timeInterval(interval_start) AS time,
                   sum(required) * 900 / $__interval_s AS `Agents required`,
                   sum(staffed) * 900 / $__interval_s AS `Agents staffed`,
                   sum(greatest(required - staffed, 0)) * 900 / $__interval_s AS `Short by`
            FROM ({per_interval})
            GROUP BY time
            ORDER BY time
            """, w=24, h=9, unit="short", decimals=1, interval="15m", options=series_options(),
            custom={"drawStyle": "line", "lineWidth": 2, "spanNulls": False, "lineInterpolation": "stepAfter"},
            overrides=[column("Short by", ("color", {"mode": "fixed", "fixedColor": "red"}),
                              ("custom.drawStyle", "bars"), ("custom.fillOpacity", 60))],
            description="Agents required: the sum over the selected queues of the fewest agents that meet each "
            "queue's target by Erlang C, as if each queue had its own team (the upper figure: agents shared by "
            "queues are pooled and need fewer). Agents staffed: logged in and not paused, all agents. "
            "Averages per interval when the range is long."),
        panel(L, "timeseries", "Agents required per queue", f"""
            SELECT $__timeInterval(interval_start) AS time, queue_name,
                   toFloat64(sum(agents_required)) * 900 / $__interval_s AS required
            FROM {staffing}
            WHERE {QUEUE}
            GROUP BY time, queue_name
            ORDER BY time, queue_name
            """, w=12, h=8, unit="short", decimals=1, interval="15m", options=series_options(),
            custom={"drawStyle": "line", "lineWidth": 1, "spanNulls": False, "lineInterpolation": "stepAfter"}),
        panel(L, "timeseries", "Traffic per queue (Erlangs)", f"""
            SELECT $__timeInterval(interval_start) AS time, queue_name,
                   sum(traffic_erlangs) * 900 / $__interval_s AS erlangs
            FROM {staffing}
            WHERE {QUEUE}
            GROUP BY time, queue_name
            ORDER BY time, queue_name
            """, w=12, h=8, unit="short", decimals=2, interval="15m", options=series_options(),
            custom={"drawStyle": "line", "lineWidth": 1, "spanNulls": False, "lineInterpolation": "stepAfter"}),
        panel(L, "table", "Per interval: required, staffed, short by", f"""
            SELECT interval_start AS Interval, round(required) AS `Agents required`,
                   round(staffed, 1) AS `Agents staffed`, round(greatest(required - staffed, 0), 1) AS `Short by`,
                   round(erlangs, 2) AS Erlangs, toUInt64(offered) AS Offered,
                   toUInt64(unknown) AS `Queues without a figure`
            FROM ({per_interval})
            ORDER BY Interval DESC
            LIMIT 2000
            """, w=12, h=10, options=table_options(),
            overrides=[column("Short by", ("thresholds", {"mode": "absolute", "steps": [
                {"color": "transparent", "value": None}, {"color": "red", "value": 0.05}]}),
                ("custom.cellOptions", {"type": "color-background", "mode": "basic"}))],
            description="Intervals under target in red. Queues without a figure: calls offered but no answered "
            "call's handle time known yet (agents required is NULL, not counted)."),
        panel(L, "table", "Per interval and queue", f"""
            SELECT interval_start AS Interval, queue_name AS Queue, offered AS Offered,
                   round(aht_s, 1) AS `AHT (s)`, round(traffic_erlangs, 2) AS Erlangs,
                   agents_required AS `Agents required`
            FROM {staffing}
            WHERE {QUEUE}
            ORDER BY Interval DESC, Queue
            LIMIT 2000
            """, w=12, h=10, options=table_options(),
            description="Erlang C per queue with its own SLA threshold and target (pbx.queue_settings; "
            "defaults 20 s, 80 %). AHT is talk time: the PBX reports no wrap-up."),
    ]
    return dashboard(
        "pbx-staffing", "Staffing",
        "Did we have enough agents? Agents required by Erlang C for each queue's service-level target against "
        "agents logged in and not paused, per 15-minute interval; traffic in Erlangs.",
        panels, [queue_variable()], time_from="now-24h",
    )


DASHBOARDS = {
    "queue-service-level": queue_service_level,
    "abandonment": abandonment,
    "agents": agents,
    "audit": audit,
    "wallboard": wallboard,
    "calls": calls,
    "staffing": staffing,
}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
