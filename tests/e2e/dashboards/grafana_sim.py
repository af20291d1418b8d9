"""What Grafana and the ClickHouse data source plugin do to a panel's SQL, without Grafana.

A panel query goes through three steps before ClickHouse sees it, and this
module reproduces each one's behaviour (re-implemented from the public
sources, not copied):

1. the plugin's front end (``CHDatasource.applyConditionalAll``) replaces
   ``$__conditionalAll(condition, $var)`` by ``1=1`` when ``$var`` is All or
   empty, else by ``condition`` — before any variable is interpolated;
2. Grafana's ``templateSrv.replace`` interpolates template variables
   (``$var``, ``${var}``, ``${var:format}``, ``[[var]]``), with the plugin's
   own formatter as default: a list becomes ``'a','b'``, a single value is
   inserted raw; an explicit ``:format`` wins over the plugin's formatter;
3. the plugin's back end (``pkg/macros`` on grafana/macropro since plugin
   4.19) blanks SQL comments, then expands ``$__name`` / ``$__name(args)``
   macros in one pass: arguments only when ``(`` follows the name directly,
   inner macros first, split at top-level commas.

The panel interval (``$__interval_s``, ``$__timeInterval``) is Grafana's
``calculateInterval``: range / max data points rounded by ``roundInterval``,
raised to the panel's minimum interval.

Also: loading the provisioned dashboards and walking their panels, so tests
and benchmarks share one definition of "every panel's SQL".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = [
    "ALL",
    "DASHBOARD_DIR",
    "CLICKHOUSE_MACROS",
    "MacroContext",
    "MacroError",
    "PanelQuery",
    "TimeRange",
    "Variable",
    "apply_conditional_all",
    "encode_uri_component_strict",
    "calculate_interval_ms",
    "custom_options",
    "dashboard_variable",
    "default_variables",
    "expand",
    "expand_macros",
    "format_value",
    "interpolate_macros",
    "interval_to_ms",
    "load_dashboards",
    "panel_queries",
    "replace_variables",
    "round_interval_ms",
    "strip_comments",
    "variable_options",
]

REPO = Path(__file__).resolve().parents[3]
DASHBOARD_DIR = REPO / "dashboards" / "json"

#: Grafana's value of a variable whose "All" option is selected.
ALL = "$__all"


class MacroError(ValueError):
    """A macro the plugin would reject (wrong argument count, missing bracket)."""


@dataclass(frozen=True)
class TimeRange:
    """The dashboard's time picker, in epoch milliseconds (UTC)."""

    from_ms: int
    to_ms: int

    @classmethod
    def of(cls, start: datetime, end: datetime) -> TimeRange:
        return cls(int(start.timestamp() * 1000), int(end.timestamp() * 1000))

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.from_ms / 1000, UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.to_ms / 1000, UTC)


@dataclass
class Variable:
    """A dashboard template variable as Grafana holds it at query time.

    ``current`` is a list for multi-value variables (Grafana stores even one
    selected value as a list there) and a string otherwise; ``[ALL]`` / ``ALL``
    means the All option. ``options`` are the values the variable's query
    returned (without the All option).
    """

    name: str
    current: str | list[str]
    options: list[str] = field(default_factory=list)
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    type: str = "query"

    @property
    def is_all(self) -> bool:
        value = self.current
        return value == ALL or (isinstance(value, list) and bool(value) and value[0] == ALL)

    @property
    def text(self) -> str:
        if self.is_all:
            return "All"
        return " + ".join(self.current) if isinstance(self.current, list) else self.current


# -- 1. $__conditionalAll (plugin front end) -------------------------------------------------------

_CONDITIONAL_ALL = "$__conditionalAll("
_VAR_IN_ARG = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+")


def _macro_args_frontend(sql: str, open_index: int) -> list[str]:
    """The front end's argument scan: brackets counted, commas split at depth 1, no trimming."""
    args: list[str] = []
    depth = 0
    last = 1
    text = sql[open_index:]
    for match in re.finditer(r"[(),]", text):
        char = match.group()
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 1:
            args.append(text[last : match.start()])
            last = match.end()
        if depth == 0:
            args.append(text[last : match.start()])
            return args
    return []


def apply_conditional_all(sql: str, variables: Sequence[Variable]) -> str:
    """Replace each ``$__conditionalAll(cond, $var)``, last one first, as the plugin does."""
    by_name = {v.name: v for v in variables}
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        args = _macro_args_frontend(sql, index + len(_CONDITIONAL_ALL) - 1)
        if len(args) != 2:
            return sql  # the plugin gives up and leaves the query as it is
        phrase = args[0]
        name = _VAR_IN_ARG.search(args[1].strip())
        if name:
            variable = by_name.get(name.group())
            if variable is not None:
                value = variable.current
                joined = ",".join(value) if isinstance(value, list) else value
                if joined in ("", ALL):
                    phrase = "1=1"
        sql = sql.replace(f"{_CONDITIONAL_ALL}{args[0]},{args[1]})", phrase, 1)
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


# -- 2. template variables (Grafana templateSrv) ---------------------------------------------------

# Grafana's variableRegex: $var | [[var:fmt]] | ${var.fieldPath:fmt}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")


def _plugin_format(value: Any) -> str:
    """The ClickHouse plugin's default formatter: lists quoted and comma-joined, scalars raw."""
    if isinstance(value, list):
        return "'" + "','".join(value) + "'"
    return str(value)


def _quote_each(value: str | list[str], quote: str) -> str:
    """Grafana's singlequote/doublequote: each value quoted, the quote (only) escaped with a backslash."""

    def one(v: str) -> str:
        return quote + v.replace(quote, "\\" + quote) + quote

    return one(value) if isinstance(value, str) else ",".join(one(v) for v in value)


def _js_string(value: Any) -> str:
    """How JavaScript turns the value into text when splicing it into the query."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def encode_uri_component_strict(value: str) -> str:
    """Grafana's encodeURIComponentStrict: encodeURIComponent, then ``!'()*`` percent-encoded too.

    That is RFC 3986 percent-encoding of the UTF-8 bytes with only the unreserved characters
    ``A-Z a-z 0-9 - _ . ~`` left as they are, which is what ``quote(value, safe="")`` does.
    """
    return quote(value, safe="")


def _encode_uri_strict(value: str) -> str:
    """Grafana's encodeURIStrict: encodeURI (URI syntax characters kept), then ``!'()*`` encoded."""
    return quote(value, safe=";,/?:@&=+$#")


def _escape_regex(value: str) -> str:
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(), value)


def _lucene_escape(value: str) -> str:
    try:
        float(value)
        return value
    except ValueError:
        return re.sub(r'([!*+\-=<>\s&|()\[\]{}^~?:\\/"])', r"\\\1", value)


def _escape_html(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))  # fmt: skip


def _custom_query_param(value: str | list[str], args: list[str], name: str) -> str:
    """``${var:customqueryparam[:name[:prefix]]}``: ``name=prefix<value>`` per value, joined by ``&``."""
    key = encode_uri_component_strict(args[0] if args and args[0] else name)
    prefix = encode_uri_component_strict(args[1] if len(args) > 1 else "")
    items = [value] if isinstance(value, str) else value
    return "&".join(f"{key}={prefix}{encode_uri_component_strict(v)}" for v in items)


def format_value(value: str | list[str], fmt: str, text: str, name: str = "") -> str:
    """One of Grafana's variable formats (``${var:fmt[:arg...]}``), as @grafana/scenes' formatRegistry.

    Grafana 12 dashboards interpolate through Scenes; an unknown format name falls back to glob.
    ``queryparam`` is not simulated: for a dashboard variable Scenes renders it from the variable's
    URL state, not from the value.
    """
    fmt_name, *args = fmt.split(":")
    many = isinstance(value, list)
    if fmt_name == "singlequote":
        return _quote_each(value, "'")
    if fmt_name == "doublequote":
        return _quote_each(value, '"')
    if fmt_name == "sqlstring":
        items = [value] if isinstance(value, str) else value
        return ",".join("'" + v.replace("'", "''").replace('"', '\\"') + "'" for v in items)
    if fmt_name in ("csv", "raw"):
        return _js_string(value)
    if fmt_name == "pipe":
        return "|".join(value) if many else value
    if fmt_name == "join":
        return (args[0] if args else ",").join(value) if many else str(value)
    if fmt_name == "distributed":
        return ",".join(v if i == 0 else f"{name}={v}" for i, v in enumerate(value)) if many else value
    if fmt_name == "text":
        return text
    if fmt_name == "json":
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if fmt_name == "html":
        return _escape_html(", ".join(value) if many else value)
    if fmt_name == "regex":
        if not many:
            return _escape_regex(value)
        escaped = [_escape_regex(v) for v in value]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt_name == "lucene":
        if not many:
            return _lucene_escape(value)
        return "(" + " OR ".join(f'"{_lucene_escape(v)}"' for v in value) + ")" if value else "__empty__"
    if fmt_name == "percentencode":
        return encode_uri_component_strict("{" + ",".join(value) + "}" if many else value)
    if fmt_name == "uriencode":
        return _encode_uri_strict("{" + ",".join(value) + "}" if many else value)
    if fmt_name == "customqueryparam":
        return _custom_query_param(value, args, name)
    if fmt_name == "queryparam":
        raise NotImplementedError("queryparam renders the variable's URL state, which is not simulated")
    # "glob" is Grafana's default and its fallback for an unknown format name.
    if many and len(value) > 1:
        return "{" + ",".join(value) + "}"
    return _js_string(value)


def replace_variables(
    sql: str,
    variables: Sequence[Variable],
    scoped: Mapping[str, str] | None = None,
    time_range: TimeRange | None = None,
) -> str:
    """Interpolate template variables as ``templateSrv.replace(sql, scopedVars, pluginFormat)``.

    ``scoped`` holds request-scoped values (``__interval``, ``__interval_ms``);
    ``time_range`` provides ``$__from`` / ``$__to`` (epoch ms). A name that is
    neither stays as written: ``$__timeFilter`` and friends reach the back end.
    """
    by_name = {v.name: v for v in variables}
    builtins: dict[str, str] = dict(scoped or {})
    if time_range is not None:
        builtins.setdefault("__from", str(time_range.from_ms))
        builtins.setdefault("__to", str(time_range.to_ms))

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in builtins:
            value = builtins[name]
            return value if fmt is None else format_value(value, fmt, value, name)
        variable = by_name.get(name)
        if variable is None:
            return match.group(0)
        value: str | list[str] = variable.current
        text = variable.text
        if variable.is_all:
            if variable.all_value:
                # A custom all value is inserted unformatted (except :text / :percentencode).
                if fmt not in ("text", "percentencode"):
                    return replace_variables(variable.all_value, variables, scoped, time_range)
                value = variable.all_value
            else:
                value = list(variable.options)
        if fmt is None:
            return _plugin_format(value)
        return format_value(value, fmt, text, name)

    return _VARIABLE.sub(one, sql)


# -- 3. macros (plugin back end: grafana/macropro, plugin 4.19 and later) ------------------------------
#
# Since plugin 4.19 the back end expands macros with grafana/macropro (plugin 4.20.0 pins v1.0.1):
#
# * comments are blanked first: ``--`` to the end of the line and ``/* ... */`` (an unterminated one
#   to the end of the query) become spaces of the same length, so a macro in a comment is never
#   expanded; quoted text is kept as it is, and for ClickHouse a backslash escapes the next byte
#   inside '...' and "..." (the plugin's BackslashEscape style);
# * one forward pass: at each ``$__`` the longest run of [A-Za-z0-9_] is the name; a name the plugin
#   does not know stays as written; ``(`` directly after the name opens the arguments, closed by the
#   matching ``)`` (quotes respected); without a matching ``)`` the macro has no arguments;
# * macros inside the arguments are expanded first (plugin 4.20.0, macropro v1.0.1), then the
#   arguments are split at top-level commas and trimmed; empty brackets are no argument at all;
# * a handler's error fails the whole query (MacroError here).
#
# The engine knows nothing of SQL literals: a ``$__name`` inside a string literal is expanded too.


@dataclass(frozen=True)
class MacroContext:
    """What a macro handler sees of the query (macropro's QueryContext)."""

    time_range: TimeRange
    interval_ms: int
    table: str = ""
    column: str = ""


MacroFunc = Callable[[MacroContext, list[str]], str]


def _scan_quoted(sql: str, start: int, backslash: bool) -> int:
    """Index just past the literal opening at ``start`` (doubled quote escapes; ``\\x`` if ``backslash``)."""
    quote = sql[start]
    i = start + 1
    while i < len(sql):
        if backslash and sql[i] == "\\":
            i += 2
            continue
        if sql[i] == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return len(sql)  # unterminated: the rest is quoted text


def strip_comments(sql: str) -> str:
    """macropro's StripComments with the plugin's ClickHouse style (line, block, backslash escapes)."""
    out: list[str] = []
    i = 0
    while i < len(sql):
        char = sql[i]
        if char in "'\"":
            end = _scan_quoted(sql, i, backslash=True)
        elif sql.startswith("--", i):
            end = next((j for j in range(i, len(sql)) if sql[j] in "\r\n"), len(sql))
            out.append(" " * (end - i))
            i = end
            continue
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            end = len(sql) if close < 0 else close + 2
            out.append(" " * (end - i))
            i = end
            continue
        else:
            end = i + 1
        out.append(sql[i:end])
        i = end
    return "".join(out)


def _closing_bracket(sql: str, open_index: int) -> int:
    """Index of the ``)`` matching the ``(`` at ``open_index``, or -1 (quotes respected)."""
    depth = 0
    i = open_index
    while i < len(sql):
        char = sql[i]
        if char in "'\"":
            i = _scan_quoted(sql, i, backslash=False)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _split_args(raw: str) -> list[str]:
    """macropro's parseArgs: top-level commas, each argument trimmed; blank means none."""
    raw = raw.strip()
    if not raw:
        return []
    args, depth, start, i = [], 0, 0, 0
    while i < len(raw):
        char = raw[i]
        if char in "'\"":
            i = _scan_quoted(raw, i, backslash=False)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            args.append(raw[start:i].strip())
            start = i + 1
        i += 1
    args.append(raw[start:].strip())
    return args


def expand_macros(sql: str, macros: Mapping[str, MacroFunc], ctx: MacroContext, prefix: str = "$__") -> str:
    """macropro's Interpolate: comments blanked, then every known ``$__name(args)`` replaced."""
    return _expand(strip_comments(sql), macros, ctx, prefix)


def _expand(sql: str, macros: Mapping[str, MacroFunc], ctx: MacroContext, prefix: str) -> str:
    out: list[str] = []
    i = 0
    while (found := sql.find(prefix, i)) != -1:
        out.append(sql[i:found])
        name_end = found + len(prefix)
        while name_end < len(sql) and (sql[name_end].isascii() and (sql[name_end].isalnum() or sql[name_end] == "_")):
            name_end += 1
        name = sql[found + len(prefix) : name_end]
        handler = macros.get(name)
        if handler is None:
            out.append(sql[found:name_end])
            i = name_end
            continue
        args: list[str] = []
        i = name_end
        if sql.startswith("(", name_end) and (close := _closing_bracket(sql, name_end)) != -1:
            args = _split_args(_expand(sql[name_end + 1 : close], macros, ctx, prefix))
            i = close + 1
        try:
            out.append(handler(ctx, args))
        except MacroError as exc:
            raise MacroError(f"macro {prefix}{name}({', '.join(args)}): {exc}") from None
    out.append(sql[i:])
    return "".join(out)


# The plugin's handlers (pkg/macros/macros.go) over macropro's defaults.


def _to_datetime(ms: int) -> str:
    return f"toDateTime({ms // 1000})"


def _to_datetime64(ms: int) -> str:
    return f"fromUnixTimestamp64Milli({ms})"


def _to_date(ms: int) -> str:
    return "toDate('" + datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d") + "')"


def _need(name: str, args: list[str], count: int) -> list[str]:
    if len(args) != count:
        raise MacroError(f"$__{name} expected {count} argument(s), received {len(args)}")
    return args


def _seconds(interval_ms: int) -> int:
    return int(max(interval_ms / 1000, 1))


_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_GO_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration_s(text: str) -> float:
    """Go's time.ParseDuration (what the plugin's $__timeGroup uses): ``5m``, ``1h30m``, ``0.5s``."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    parts = _GO_DURATION.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise MacroError(f"invalid duration {text!r}")
    seconds = sum(float(n) * _GO_UNIT_S[u] for n, u in parts)
    return -seconds if text.startswith("-") else seconds


def _macro_handlers() -> dict[str, MacroFunc]:
    def fixed(render: Callable[[MacroContext], str]) -> MacroFunc:
        return lambda ctx, _args: render(ctx)

    def filter_(name: str, low: Callable[[int], str]) -> MacroFunc:
        def handler(ctx: MacroContext, args: list[str]) -> str:
            (col,) = _need(name, args, 1)
            f, t = ctx.time_range.from_ms, ctx.time_range.to_ms
            return f"{col} >= {low(f)} AND {col} <= {low(t)}"

        return handler

    def date_time_filter(ctx: MacroContext, args: list[str]) -> str:
        date_col, time_col = _need("dateTimeFilter", args, 2)
        f, t = ctx.time_range.from_ms, ctx.time_range.to_ms
        return (
            f"({date_col} >= {_to_date(f)} AND {date_col} <= {_to_date(t)}) AND "
            f"({time_col} >= {_to_datetime(f)} AND {time_col} <= {_to_datetime(t)})"
        )

    def time_interval(ctx: MacroContext, args: list[str]) -> str:
        (col,) = _need("timeInterval", args, 1)
        return f"toStartOfInterval(toDateTime({col}), INTERVAL {_seconds(ctx.interval_ms)} second)"

    def time_interval_ms(ctx: MacroContext, args: list[str]) -> str:
        (col,) = _need("timeInterval_ms", args, 1)
        return f"toStartOfInterval(toDateTime64({col}, 3), INTERVAL {max(ctx.interval_ms, 1)} millisecond)"

    def time_from(ctx: MacroContext, args: list[str]) -> str:
        (col,) = _need("timeFrom", args, 1)
        return f"{col} >= {_to_datetime(ctx.time_range.from_ms)}"

    def time_to(ctx: MacroContext, args: list[str]) -> str:
        (col,) = _need("timeTo", args, 1)
        return f"{col} <= {_to_datetime(ctx.time_range.to_ms)}"

    def time_group(_ctx: MacroContext, args: list[str]) -> str:
        col, period = _need("timeGroup", args, 2)
        seconds = round(_go_duration_s(period.strip().strip("'\"")))
        if seconds <= 0:
            raise MacroError(f"$__timeGroup: interval must be positive, got {period!r}")
        return f"toStartOfInterval(toDateTime({col.strip()}), INTERVAL {seconds} second)"

    def from_context(name: str, attr: str) -> MacroFunc:
        def handler(ctx: MacroContext, _args: list[str]) -> str:
            value: str = getattr(ctx, attr)
            if not value:
                raise MacroError(f"$__{name}: no {name} name in query context")
            return value

        return handler

    return {
        # macropro's defaults the plugin keeps.
        "interval": fixed(lambda c: _hms(max(c.interval_ms, 1))),
        "interval_ms": fixed(lambda c: str(c.interval_ms)),
        "table": from_context("table", "table"),
        "column": from_context("column", "column"),
        # The plugin's own, and its overrides of macropro's defaults.
        "timeFilter": filter_("timeFilter", _to_datetime),
        "timeFilter_ms": filter_("timeFilter_ms", _to_datetime64),
        "dateFilter": filter_("dateFilter", _to_date),
        "timeFrom": time_from,
        "timeTo": time_to,
        "timeGroup": time_group,
        "fromTime": fixed(lambda c: _to_datetime(c.time_range.from_ms)),
        "toTime": fixed(lambda c: _to_datetime(c.time_range.to_ms)),
        "fromTime_ms": fixed(lambda c: _to_datetime64(c.time_range.from_ms)),
        "toTime_ms": fixed(lambda c: _to_datetime64(c.time_range.to_ms)),
        "dateTimeFilter": date_time_filter,
        "dt": date_time_filter,
        "timeInterval": time_interval,
        "timeInterval_ms": time_interval_ms,
        "interval_s": fixed(lambda c: str(_seconds(c.interval_ms))),
    }


#: The plugin's macro set (plugin 4.20.0 ``ClickHouseMacros``), by name without ``$__``.
CLICKHOUSE_MACROS: Mapping[str, MacroFunc] = _macro_handlers()
#: Every macro name the back end knows.
MACROS = tuple(CLICKHOUSE_MACROS)


def interpolate_macros(sql: str, time_range: TimeRange, interval_ms: int) -> str:
    """Expand the back end's ``$__macros``, as the plugin does after the front end's work."""
    return expand_macros(sql, CLICKHOUSE_MACROS, MacroContext(time_range, interval_ms))


# -- the panel interval ----------------------------------------------------------------------------

_ROUNDING = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
    (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
    (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
    (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000),
    (32400000, 21600000), (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000),
    (3628800000, 2592000000),
)  # fmt: skip
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}


def round_interval_ms(interval_ms: float) -> int:
    """Grafana's ``roundInterval``: the nice interval a raw interval snaps to."""
    for limit, rounded in _ROUNDING:
        if interval_ms < limit:
            return rounded
    return 31_536_000_000


def interval_to_ms(text: str) -> int:
    """``'15m'`` → 900000 (Grafana interval strings; a leading ``>`` is allowed)."""
    m = re.fullmatch(r">?(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text.strip())
    if not m:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(float(m[1]) * _UNIT_MS[m[2]])


def calculate_interval_ms(time_range: TimeRange, max_data_points: int = 1000, min_interval: str | None = None) -> int:
    """Grafana's ``calculateInterval``: the interval a panel's query gets."""
    interval = round_interval_ms((time_range.to_ms - time_range.from_ms) / max_data_points)
    if min_interval:
        interval = max(interval, interval_to_ms(min_interval))
    return interval


def expand(
    sql: str,
    time_range: TimeRange,
    variables: Sequence[Variable] = (),
    interval_ms: int = 60_000,
) -> str:
    """The SQL ClickHouse receives for a panel query: all three steps in Grafana's order."""
    sql = apply_conditional_all(sql, variables)
    scoped = {"__interval": _hms(interval_ms), "__interval_ms": str(interval_ms)}
    sql = replace_variables(sql, variables, scoped, time_range)
    return interpolate_macros(sql, time_range, interval_ms)


def _hms(ms: int) -> str:
    for unit, size in (("y", 31_536_000_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# -- dashboards ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, with what a test needs to run and judge it."""

    dashboard: dict[str, Any]
    panel: dict[str, Any]
    target: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.dashboard['uid']}/{self.panel['id']}{self.target.get('refId', 'A')}"

    @property
    def sql(self) -> str:
        return self.target["rawSql"]

    def interval_ms(self, time_range: TimeRange) -> int:
        """The interval Grafana computes for this panel (maxDataPoints default: 1000 px-ish)."""
        return calculate_interval_ms(
            time_range, self.panel.get("maxDataPoints") or 1000, self.panel.get("interval") or None
        )


def load_dashboards(directory: Path = DASHBOARD_DIR) -> list[dict[str, Any]]:
    """Every provisioned dashboard JSON, sorted by file name."""
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def panel_queries(dashboards: list[dict[str, Any]] | None = None) -> list[PanelQuery]:
    """Every SQL target of every panel of every dashboard."""
    out = []
    for dash in load_dashboards() if dashboards is None else dashboards:
        for panel in iter_panels(dash.get("panels", [])):
            for target in panel.get("targets", []):
                if target.get("rawSql"):
                    out.append(PanelQuery(dash, panel, target))
    return out


def custom_options(query: str) -> list[tuple[str, str]]:
    """A custom variable's choices from its ``query``, as @grafana/scenes' ``CustomVariable`` reads it:
    comma-separated (``\\,`` is a comma in a value), each ``text : value`` or just a value."""
    out = []
    for item in re.findall(r"(?:\\,|[^,])+", query):
        item = item.replace("\\,", ",")
        pair = re.fullmatch(r"\s*(.+)\s:\s(.+)", item, re.DOTALL)
        out.append((pair[1].strip(), pair[2].strip()) if pair else (item.strip(), item.strip()))
    return out


Rows = Sequence[Sequence[Any]]


def variable_options(variable: Mapping[str, Any], time_range: TimeRange, run: Callable[[str], Rows]) -> list[str]:
    """The values a dashboard variable offers: a query variable's rows (``run`` executes the expanded
    SQL), a custom variable's fixed values; a text box offers none (the user types)."""
    kind = variable["type"]
    if kind == "query":
        return [str(row[0]) for row in run(expand(variable["query"], time_range))]
    if kind == "custom":
        return [value for _text, value in custom_options(variable["query"])]
    if kind == "textbox":
        return []
    raise ValueError(f"variable type {kind!r} is not simulated")


def dashboard_variable(
    variable: Mapping[str, Any], options: list[str], current: str | list[str] | None = None
) -> Variable:
    """The JSON variable at query time: ``current`` selected (default: the dashboard's own default)."""
    return Variable(
        variable["name"], variable["current"]["value"] if current is None else current, options,
        multi=bool(variable.get("multi")), include_all=bool(variable.get("includeAll")),
        all_value=variable.get("allValue") or None, type=variable["type"],
    )  # fmt: skip


def default_variables(dashboard: Mapping[str, Any], time_range: TimeRange, run: Callable[[str], Rows]) -> list[Variable]:
    """Every variable of the dashboard at its default (All, the default window, an empty text box),
    as a dashboard opened without URL parameters queries."""
    return [dashboard_variable(v, variable_options(v, time_range, run)) for v in dashboard["templating"]["list"]]


def default_time_range(dashboard: Mapping[str, Any], now: datetime) -> TimeRange:
    """The dashboard's default ``time`` (``now-24h`` .. ``now``, ``now/d`` ..) resolved at ``now``."""
    return TimeRange.of(_resolve(dashboard["time"]["from"], now), _resolve(dashboard["time"]["to"], now, end=True))


def _resolve(expr: str, now: datetime, end: bool = False) -> datetime:
    m = re.fullmatch(r"now(?:-(\d+)([smhdw]))?(?:/([dhw]))?", expr)
    if not m:
        return datetime.fromisoformat(expr)
    t = now
    if m[1]:
        t = datetime.fromtimestamp(now.timestamp() - interval_to_ms(m[1] + m[2]) / 1000, UTC)
    if m[3]:
        size = interval_to_ms("1" + m[3]) / 1000
        start = math.floor(t.timestamp() / size) * size
        t = datetime.fromtimestamp(start + (size - 0.001 if end else 0), UTC)
    return t


def main(argv: Sequence[str] | None = None) -> int:
    """Print every panel's SQL as ClickHouse would receive it (All selected): for humans and benchmarks."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python tests/grafana_sim.py",
        description="Expand the dashboards' panel SQL as Grafana and the ClickHouse plugin would, with "
        "every variable on All, and print it.",
    )
    parser.add_argument("--from", dest="start", help="range start, ISO UTC (default: the dashboard's own range)")
    parser.add_argument("--to", dest="end", help="range end, ISO UTC (default: now)")
    parser.add_argument("--dashboard", help="only this dashboard uid")
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    for query in panel_queries():
        if args.dashboard and query.dashboard["uid"] != args.dashboard:
            continue
        if args.start:
            end = datetime.fromisoformat(args.end).replace(tzinfo=UTC) if args.end else now
            rng = TimeRange.of(datetime.fromisoformat(args.start).replace(tzinfo=UTC), end)
        else:
            rng = default_time_range(query.dashboard, now)
        # All selected, without running the variables' queries: All needs no options here.
        variables = [dashboard_variable(v, []) for v in query.dashboard["templating"]["list"]]
        print(f"-- {query.id} {query.panel['title']} ({query.panel['type']})")
        print(expand(query.sql, rng, variables, query.interval_ms(rng)) + ";\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
