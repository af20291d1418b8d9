"""The measuring process of ``bench run scale``: one engine copy, one checkout's code.

Run by :mod:`bench.scale.run` as ``<repo>/.venv/bin/python bench/scale/probe.py``
with ``PYTHONPATH=<repo>``, so the ``ingest`` package, ``sql/`` migrations and
``dashboards/`` measured are those of the checkout under test (``--repo``), while
this file and the Grafana expansion (``tests/e2e/dashboards/grafana_sim.py``) come from the
checkout that holds the harness. It imports nothing else from ``bench``.

The embedded engine belongs to one process, so this process is "``serve``": the
product's app runs on uvicorn in a thread (as ``bench/freshness.py`` does) for
the whole run, and measurements go through a second client of the same engine.
Its CPU time and resident memory are the service's. Phases, in order (each one's
result is a key of the JSON written to ``--out``):

``open``      the checkout's migrations applied, then every refreshable view
              brought up to date (the data was caught up to now before this ran);
``panels``    every panel's SQL, expanded as Grafana would, for the last day and
              the last 30 days: p50/max of ``--repeats`` runs; CPU ms, memory and
              rows read from the query log this process enables;
``refresh``   CPU-seconds per minute of this process with nothing arriving and at
              ``--rate`` webhooks/s (the call-centre mix, ``bench/mix.lua``), each
              with the refreshable views running and with them stopped;
``backfill``  ``import`` of one simulated day just before the data's first day
              (the late backfill that recomputes everything after it): until
              ``pbx.queue_stats_15m`` shows the day, until every view has caught
              up (:func:`views_settled`), rows read by the refreshes, peak RSS
              (the harness kills this process past its memory limit, and this
              process volunteers for the OOM killer); then duplicate rows awaiting
              merge and the visit panels' p50 before and after ``OPTIMIZE FINAL``;
``settings``  a ``pbx.queue_settings`` change: the same figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib
import importlib.util
import json
import os
import re
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
HARNESS = HERE.parent.parent  # the checkout holding the harness
#: Grafana's and the plugin's expansion of panel SQL, shared with the dashboard tests.
GRAFANA_SIM = HARNESS / "tests" / "e2e" / "dashboards" / "grafana_sim.py"

#: Views a settings change or late data makes the refresh recompute.
#: (Those of either schema: the watermark refreshes' tables, or the per-call and per-agent layers'.)
DATA_TABLES = ("queue_calls_data", "queue_stats_15m_data", "agent_stats_15m_data",
               "queue_visits_data", "recordings_data", "calls_data", "agent_time_data", "agent_time_15m_data")


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _first(*candidates: str) -> Any:
    """``module:attr`` from the first module path that has it (the layout moves, issue 16)."""
    for candidate in candidates:
        module_name, _, attr = candidate.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, attr):
            return getattr(module, attr)
    raise ImportError(f"none of {candidates} in the checkout under test")


class Code:
    """What this process uses of the checkout under test."""

    def __init__(self) -> None:
        self.connect = _first("ingest.storing.clickhouse:connect", "ingest.db:connect")
        self.load_migrations = _first("ingest.storing.migrations:load_migrations", "ingest.db:load_migrations")
        self.apply_migrations = _first("ingest.storing.migrations:apply_migrations", "ingest.db:apply_migrations")
        self.import_files = _first("ingest.backfill.importer:import_files", "ingest.importer:import_files")
        self.create_app = _first("ingest.receiving.app:create_app", "ingest.app:create_app")
        self.Settings = _first("ingest.config:Settings")


# ---------------------------------------------------------------------------- process figures


def cpu_seconds() -> float:
    """CPU time of this process, every thread (the engine's included)."""
    return time.process_time()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Start a new VmHWM window (Linux: ``5`` to ``clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples this process's RSS every ``every`` s in a thread: the peak, even without VmHWM reset."""

    def __init__(self, every: float = 0.2) -> None:
        self.every = every
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self.peak_kib = _status_kib("VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, _status_kib("VmRSS"))


# ---------------------------------------------------------------------------- the service


class Serve:
    """The product's app on uvicorn in a thread of this process, on a free port."""

    def __init__(self, code: Code, dsn: str, workdir: Path) -> None:
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        fields = {f.name for f in dataclasses.fields(code.Settings)}
        paths = {name: str(workdir / name) for name in fields if name.endswith(("_dir", "_path"))}
        settings = code.Settings.from_env({}, clickhouse_url=dsn, log_level="WARNING", **paths)
        config = uvicorn.Config(code.create_app(settings), host="127.0.0.1", port=self.port, access_log=False,
                                log_config=None, lifespan="on", timeout_graceful_shutdown=10)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="scale-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Serve:
        self.thread.start()
        deadline = time.monotonic() + 300
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("in-process serve did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(120)


# ---------------------------------------------------------------------------- views


def refreshed_views(client: Any) -> list[str]:
    # (system.view_refreshes: a name match on the DDL also picks incremental views whose
    # query mentions a table named *refresh*)
    return [r[0] for r in client.query(
        "SELECT view FROM system.view_refreshes WHERE database = 'pbx' ORDER BY view").result_rows]


def refresh_all(client: Any) -> None:
    """Per view: wait for a running refresh, request one, wait for it (``tests/views_helpers.refresh``)."""
    for view in refreshed_views(client):
        try:
            client.command(f"SYSTEM WAIT VIEW pbx.{view}")
        except Exception as exc:  # noqa: BLE001 - checked: only a failed scheduled run is let pass
            # A scheduled run that failed (chDB's first refresh at engine open can: "Database
            # system does not exist", and the next one succeeds): the one requested below counts.
            if "REFRESH_FAILED" not in str(exc):
                raise
        client.command(f"SYSTEM REFRESH VIEW pbx.{view}")
        client.command(f"SYSTEM WAIT VIEW pbx.{view}")


def backlog(client: Any) -> int | None:
    """Arrival rows past the furthest-behind layer's cursor (None: no layers in this schema).

    One refresh run of a layer takes at most ``chunk_rows`` of them (``pbx.refresh_settings``),
    so a catch-up of hundreds of thousands of events (a day of the 200-agent centre) leaves
    a backlog after one :func:`refresh_all`, which every panel then reads live.
    """
    try:
        rows = client.query(
            "SELECT count() FROM pbx.arrivals WHERE (arrived_at, kind, id) > (SELECT min(cursor) FROM "
            "(SELECT layer, max(cursor) AS cursor FROM pbx.refresh_marks GROUP BY layer))").result_rows
    except Exception:  # noqa: BLE001 - the watermark schema (before the layers) has no cursor
        return None
    return int(rows[0][0])


def refresh_until_caught_up(client: Any, max_rounds: int = 200) -> dict[str, Any]:
    """:func:`refresh_all` until no layer has a backlog: the state a running service reaches.

    Stops too when a round takes nothing off the backlog (nothing to gain from more).
    """
    before = left = backlog(client)
    rounds = 0
    while True:
        refresh_all(client)
        rounds += 1
        previous, left = left, backlog(client)
        if not left or previous is None or left >= previous or rounds >= max_rounds:
            return {"backlog_rows": before, "refresh_rounds": rounds, "backlog_left": left}


@contextlib.contextmanager
def margin_settled(client: Any) -> Iterator[None]:
    """The layers' commit margin at 0 while panels are read, then back to what it was.

    After the catch-up (one bulk insert, nothing arriving since) every arrival row sits within
    the margin (15 s) before a cursor, and each read looks all of them up again: the agent
    panels then cost ~2 s at 200 agents (docs/benchmarks.md, "Agent panels at 200 agents").
    Under live traffic the margin holds the last 15 s of arrivals. Nothing is inserting here, so
    0 is exact: every insert has committed.
    """
    rows = client.query("SELECT argMax(value, updated_at) FROM pbx.refresh_settings "
                        "WHERE name = 'commit_margin_ms'").result_rows
    before = int(rows[0][0]) if rows and rows[0][0] is not None else 15000
    client.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('commit_margin_ms', 0)")
    try:
        yield
    finally:
        time.sleep(0.01)  # (updated_at is in ms: the restoring row must be newer)
        client.command(f"INSERT INTO pbx.refresh_settings (name, value) VALUES ('commit_margin_ms', {before})")


class RefreshWatch:
    """Every refresh of every refreshable view, from ``system.view_refreshes`` polled in a thread.

    While a refresh runs, its row shows ``last_refresh_time`` = its start and its
    rows read and written so far (kept as maxima here). It has completed when
    ``last_success_time`` (the start of the latest success) becomes its start --
    often while the next refresh is already running, when the schedule slipped,
    so completion is not read from ``status``. A refresh is keyed by its start
    second (two refreshes of a view never start in the same second: 5-s periods).
    """

    def __init__(self, code: Code, dsn: str, every: float = 0.1) -> None:
        self.client = code.connect(dsn)
        self.every = every
        #: (view, start) -> {"view", "started", "duration_ms", "read_rows", "written_rows", "done_seen"}
        self.refreshes: dict[tuple[str, str], dict[str, Any]] = {}
        #: (view, message) -> when first seen (monotonic).
        self.errors: dict[tuple[str, str], float] = {}
        self._running: dict[tuple[str, str], dict[str, int]] = {}
        self._last_success: dict[str, str] = {}
        self._stop = threading.Event()
        #: Cleared while CPU time is measured: the polling would be counted in it.
        self.polling = threading.Event()
        self.polling.set()
        self._thread = threading.Thread(target=self._run, name="scale-refreshes", daemon=True)
        self.lock = threading.Lock()

    def _poll(self) -> None:
        rows = self.client.query(
            "SELECT view, status, toString(last_success_time), last_success_duration_ms, "
            "toString(last_refresh_time), read_rows, written_rows, exception "
            "FROM system.view_refreshes WHERE database = 'pbx'").result_rows
        now = time.monotonic()
        with self.lock:
            for view, status, success, duration, attempt, read, written, exception in rows:
                running = status == "Running"
                if running and attempt:
                    seen = self._running.setdefault((view, attempt), {"read_rows": 0, "written_rows": 0})
                    seen["read_rows"] = max(seen["read_rows"], read or 0)
                    seen["written_rows"] = max(seen["written_rows"], written or 0)
                if success and self._last_success.get(view) != success:
                    seen = self._running.pop((view, success), {"read_rows": 0, "written_rows": 0})
                    if not running:  # the row still shows the completed refresh's own figures
                        seen = {"read_rows": max(seen["read_rows"], read or 0),
                                "written_rows": max(seen["written_rows"], written or 0)}
                    self.refreshes[(view, success)] = {"view": view, "started": success, "duration_ms": duration,
                                                       **seen, "done_seen": now}
                    self._last_success[view] = success
                if exception:
                    self.errors.setdefault((view, exception[:300]), now)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.polling.wait(0.5):
                continue
            try:
                self._poll()
            except Exception:  # noqa: BLE001 - a failed poll is retried
                pass
            self._stop.wait(self.every)

    def __enter__(self) -> RefreshWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()

    def since(self, monotonic: float) -> list[dict[str, Any]]:
        """Refreshes completed after ``monotonic``, in completion order."""
        with self.lock:
            done = [dict(r) for r in self.refreshes.values() if r["done_seen"] > monotonic]
        return sorted(done, key=lambda r: r["done_seen"])


@dataclasses.dataclass(frozen=True)
class Idle:
    """What a view's refresh reads and writes when there is nothing to do (seen before a change)."""

    read_rows: dict[str, int]
    written_rows: dict[str, int]

    def did_work(self, refresh: dict[str, Any]) -> bool:
        """A refresh recomputed something: it wrote more rows than an idle one, or read much more."""
        view = refresh["view"]
        return (refresh.get("written_rows", 0) > self.written_rows.get(view, 0)
                or refresh["read_rows"] > 1.5 * self.read_rows.get(view, 0) + 100_000)


def views_settled(watch: RefreshWatch, views: list[str], t0: float, t1: float, t1_wall: float,
                  idle: Idle) -> dict[str, Any] | None:
    """Whether every view has caught up with a change made between ``t0`` and ``t1`` (monotonic).

    A view has caught up when it completed a refresh that started after the change
    (``t1_wall``, wall clock) and its latest refresh did no work (:meth:`Idle.did_work`):
    nothing was left to recompute, whether the design recomputes all at once or in
    chunks. It was done when its last refresh that did work completed, or its first
    refresh after the change if none did. Refreshes completed after ``t0`` up to then
    are counted. None while some view has not caught up.
    """
    done = watch.since(t0)
    start_floor = dt.datetime.fromtimestamp(int(t1_wall), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    finish: dict[str, float] = {}
    for view in views:
        mine = [r for r in done if r["view"] == view]
        after = [r for r in mine if r["done_seen"] > t1 and r["started"] >= start_floor]
        if not after or idle.did_work(mine[-1]):
            return None
        worked = [r for r in mine if idle.did_work(r)]
        finish[view] = worked[-1]["done_seen"] if worked else after[0]["done_seen"]
    counted = [r for r in done if r["done_seen"] <= finish[r["view"]]]
    return {"finished": max(finish.values()), "refreshes": counted}


def layers_settled(client: Any, watch: RefreshWatch, t0: float) -> dict[str, Any] | None:
    """For the per-call and per-agent layers (sql/0214-0218): caught up when no call or agent
    is dirty (everything stored; readers saw it all along). Refreshes completed since ``t0``
    are counted. None while some are dirty."""
    dirty = client.query("SELECT (SELECT count() FROM pbx.dirty_calls_live) "
                         "+ (SELECT count() FROM pbx.dirty_agents_live)").result_rows[0][0]
    if dirty:
        return None
    return {"finished": time.monotonic(), "refreshes": watch.since(t0)}


# ---------------------------------------------------------------------------- panels


#: Enables ``system.query_log`` (chdb has none otherwise): CPU time and memory per panel query.
#: (chdb does not enforce ``max_server_memory_usage`` or a profile's ``max_memory_usage`` from
#: here, so memory is bounded by the parent's watchdog instead.)
ENGINE_CONFIG = """<clickhouse>
  <query_log><database>system</database><table>query_log</table>
    <flush_interval_milliseconds>7500</flush_interval_milliseconds></query_log>
</clickhouse>
"""


def open_engine(chdata: Path, config: Path) -> Any:
    """Open the engine first through a raw chdb handle whose startup arguments add a query log.

    The first handle of a path starts the engine for the whole process; the
    clients opened later (ours, the app's) share it. Keep the handle open.
    """
    import chdb

    config.write_text(ENGINE_CONFIG)
    return chdb.connect(f"{chdata}?config-file={config}")


def volunteer_for_oom_killer() -> None:
    """On a shared machine, if memory runs out, the kernel should kill this process, not a neighbour's."""
    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass


def query_log_figures(client: Any, prefix: str) -> dict[str, dict[str, Any]]:
    """Per ``log_comment`` starting with ``prefix``: median CPU ms, peak memory MiB, rows read."""
    try:
        client.command("SYSTEM FLUSH LOGS")
        rows = client.query(
            "SELECT log_comment, quantileExact(0.5)(ProfileEvents['UserTimeMicroseconds'] "
            "+ ProfileEvents['SystemTimeMicroseconds']) / 1000, max(memory_usage), max(read_rows) "
            "FROM system.query_log WHERE type = 'QueryFinish' AND startsWith(log_comment, {p:String}) "
            "GROUP BY log_comment", parameters={"p": prefix}).result_rows
    except Exception:  # noqa: BLE001 - no query log: the figures are left out
        return {}
    return {tag: {"cpu_ms": round(cpu, 1), "memory_mib": round(mem / 2**20, 1), "read_rows": read}
            for tag, cpu, mem, read in rows}


#: A panel query slower than this (every run) is run 3 times, not ``--repeats``.
SLOW_MS = 5000.0


def _timed(client: Any, sql: str, repeats: int, tag: str = "") -> dict[str, Any]:
    """p50/max wall ms of ``repeats`` runs and the rows returned (rows read: from the query log)."""
    times: list[float] = []
    rows = 0
    for i in range(repeats):
        if i == 3 and min(times) > SLOW_MS:
            break  # three runs of a multi-second query give its median; save the time of the rest
        started = time.perf_counter()
        result = client.query(sql, settings={"log_comment": tag} if tag else None)
        times.append((time.perf_counter() - started) * 1000)
        rows = len(result.result_rows)
    return {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "rows": rows,
            "runs": len(times)}


class Panels:
    """Every panel query of the checkout's dashboards, expanded as Grafana would (:data:`GRAFANA_SIM`)."""

    def __init__(self, repo: Path) -> None:
        self.gs = _load("_scale_grafana_sim", GRAFANA_SIM)
        self.queries = self.gs.panel_queries(self.gs.load_dashboards(repo / "dashboards" / "json"))
        #: (dashboard, range) -> its variables at their defaults: their queries run once per
        #: dashboard and range, not once per panel (they are not what is measured).
        self._variables: dict[tuple[Any, Any], Any] = {}

    def ranges(self, now: dt.datetime) -> dict[str, Any]:
        return {"1d": self.gs.TimeRange.of(now - dt.timedelta(days=1), now),
                "30d": self.gs.TimeRange.of(now - dt.timedelta(days=30), now)}

    def expand(self, client: Any, query: Any, rng: Any) -> str:
        gs = self.gs
        key = (query.dashboard.get("uid"), rng)
        if key not in self._variables:
            self._variables[key] = gs.default_variables(query.dashboard, rng, lambda s: client.query(s).result_rows)
        return gs.expand(query.sql, rng, self._variables[key], query.interval_ms(rng))

    def measure(self, client: Any, now: dt.datetime, repeats: int, only: set[str] | None = None,
                tag: str = "panels", progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Every panel (or those in ``only``) over both ranges; ``progress`` gets each panel's entry
        when it is done (its query-log figures in it), so a run cut short still shows what it measured."""
        results = []
        run_tag = f"scale:{tag}:{time.time_ns()}:"
        for query in self.queries:
            if only is not None and query.id not in only:
                continue
            entry: dict[str, Any] = {"id": query.id, "dashboard": query.dashboard.get("title"),
                                     "panel": query.panel.get("title"), "visit_panel": False}
            for label, rng in self.ranges(now).items():
                try:
                    sql = self.expand(client, query, rng)
                    entry["visit_panel"] = bool(re.search(r"\bpbx\.queue_calls\b(?!_)", sql))
                    entry[label] = _timed(client, sql, repeats, f"{run_tag}{query.id}:{label}")
                except Exception as exc:  # noqa: BLE001 - a failing panel is reported, not hidden
                    entry[label] = {"error": str(exc).splitlines()[0][:200]}
            logged = query_log_figures(client, f"{run_tag}{query.id}:")
            for label in ("1d", "30d"):
                figures = logged.get(f"{run_tag}{query.id}:{label}")
                if figures and "p50_ms" in entry.get(label, {}):
                    entry[label].update(figures)
            results.append(entry)
            if progress is not None:
                progress(entry)
        return results


# ---------------------------------------------------------------------------- phases


def phase_open(code: Code, client: Any, repo: Path) -> dict[str, Any]:
    started = time.monotonic()
    applied = code.apply_migrations(client, code.load_migrations(repo / "sql"))
    migrated = time.monotonic()
    caught_up = refresh_until_caught_up(client)
    refreshed = time.monotonic()
    return {"migrations_applied": [f"{m.version:04d}_{m.name}" for m in applied], **caught_up,
            "migrate_s": round(migrated - started, 1), "first_refresh_s": round(refreshed - migrated, 1),
            "events": client.query("SELECT count() FROM pbx.events").result_rows[0][0]}


def _cpu_window(seconds: float) -> float:
    c0, t0 = cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds() - c0) / (time.monotonic() - t0) * 60


def _last_refreshes(client: Any) -> dict[str, Any]:
    """Per view, the latest refresh's duration and rows read (one look, no polling)."""
    return {view: {"last_ms": ms, "read_rows": read} for view, ms, read in client.query(
        "SELECT view, last_success_duration_ms, read_rows FROM system.view_refreshes "
        "WHERE database = 'pbx'").result_rows}


def phase_refresh(client: Any, watch: RefreshWatch, serve: Serve, seconds: float, rate: float,
                  wrk: ModuleType) -> dict[str, Any]:
    """CPU-s per minute: idle and at ``rate`` webhooks/s, views running vs stopped, alternating halves."""
    out: dict[str, Any] = {"seconds": seconds, "rate": rate}
    half = seconds / 2
    for label, load_rate in (("idle", None), ("load", rate)):
        loader = None
        if load_rate:
            box: dict[str, Any] = {}
            total = min(10.0, seconds) + 2 * seconds + 10  # warm-up, both conditions twice, the pauses
            loader = threading.Thread(target=lambda: box.setdefault("wrk", wrk.run_wrk(
                serve.url, total, connections=4, rate=load_rate)), name="scale-wrk", daemon=True)
            loader.start()
            time.sleep(min(10.0, seconds))  # warm-up: batches, first refreshes of the new events
        running, stopped = [], []
        watch.polling.clear()
        for _ in range(2):
            client.command("SYSTEM START VIEWS")
            running.append(_cpu_window(half))
            last = _last_refreshes(client)
            client.command("SYSTEM STOP VIEWS")
            time.sleep(1.0)
            stopped.append(_cpu_window(half))
        client.command("SYSTEM START VIEWS")
        watch.polling.set()
        entry = {
            "cpu_s_per_min_views_running": round(statistics.mean(running), 2),
            "cpu_s_per_min_views_stopped": round(statistics.mean(stopped), 2),
            "rounds_running": [round(x, 2) for x in running], "rounds_stopped": [round(x, 2) for x in stopped],
            "last_refreshes": last,
        }
        entry["cpu_s_per_min_refresh"] = round(entry["cpu_s_per_min_views_running"]
                                               - entry["cpu_s_per_min_views_stopped"], 2)
        if loader is not None:
            loader.join(total + 60)
            result = box.get("wrk")
            entry["achieved_rps"] = round(result.rps, 1) if result else None
            entry["errors"] = result.error_count if result else None
        out[label] = entry
    refresh_all(client)
    return out


def _idle(watch: RefreshWatch, views: list[str], seconds: float = 12.0) -> Idle:
    """Per view, the most rows an idle refresh read and wrote in ``seconds``."""
    after = time.monotonic()
    time.sleep(seconds)
    read: dict[str, int] = dict.fromkeys(views, 0)
    written: dict[str, int] = dict.fromkeys(views, 0)
    for r in watch.since(after):
        read[r["view"]] = max(read.get(r["view"], 0), r["read_rows"])
        written[r["view"]] = max(written.get(r["view"], 0), r.get("written_rows", 0))
    return Idle(read, written)


def _duplicates(client: Any) -> dict[str, Any]:
    out = {}
    for table in DATA_TABLES:
        exists = client.command(f"EXISTS TABLE pbx.{table}")
        if not exists:
            continue
        rows = client.query(f"SELECT count() FROM pbx.{table}").result_rows[0][0]
        final = client.query(f"SELECT count() FROM pbx.{table} FINAL").result_rows[0][0]
        parts = client.query(f"SELECT count() FROM system.parts WHERE database = 'pbx' AND table = '{table}' "
                             "AND active").result_rows[0][0]
        out[table] = {"rows": rows, "rows_final": final, "awaiting_merge": rows - final, "parts": parts}
    return out


def _change(client: Any, code: Code, watch: RefreshWatch, views: list[str], idle: Idle,
            act: Any, shows: Any, timeout: float) -> dict[str, Any]:
    """Do ``act()``; time until ``shows()`` is true and until every view caught up; rows read; peak RSS."""
    hwm_reset = reset_peak_rss()
    with RssSampler() as rss:
        t0 = time.monotonic()
        acted = act()
        t1, t1_wall = time.monotonic(), time.time()
        shown = settled = None
        deadline = t1 + timeout
        failed: list[dict[str, str]] = []
        layered = bool(client.command("EXISTS TABLE pbx.dirty_calls_live"))
        while time.monotonic() < deadline and (shown is None or settled is None) and not failed:
            if shown is None and shows():
                shown = time.monotonic()
            if settled is None:
                settled = (layers_settled(client, watch, t0) if layered
                           else views_settled(watch, views, t0, t1, t1_wall, idle))
            failed = [{"view": v, "exception": e} for (v, e), seen in list(watch.errors.items())
                      if seen >= t0 and "cancelled" not in e.lower()]
            time.sleep(0.2)
    per_view: dict[str, dict[str, Any]] = {}
    for r in (settled or {}).get("refreshes", []):
        v = per_view.setdefault(r["view"], {"refreshes": 0, "heavy": 0, "read_rows": 0, "written_rows": 0, "ms": 0})
        v["refreshes"] += 1
        v["heavy"] += int(idle.did_work(r))
        v["read_rows"] += r["read_rows"]
        v["written_rows"] += r.get("written_rows", 0)
        v["ms"] += r.get("duration_ms") or 0
    return {
        "act_s": round(t1 - t0, 1), "act": acted,
        "until_queue_stats_s": None if shown is None else round(shown - t1, 1),
        "until_all_views_s": None if settled is None else round(settled["finished"] - t1, 1),
        "timed_out": (settled is None or shown is None) and not failed,
        "failed": failed,
        "read_rows": sum(v["read_rows"] for v in per_view.values()),
        "per_view": per_view,
        "idle": dataclasses.asdict(idle),
        "peak_rss_mib": round((_status_kib("VmHWM") if hwm_reset else rss.peak_kib) / 1024, 1),
        "peak_rss_sampled_mib": round(rss.peak_kib / 1024, 1),
        "refresh_errors": [{"view": v, "exception": e} for (v, e), seen in watch.errors.items() if seen >= t0],
    }


def phase_backfill(code: Code, client: Any, watch: RefreshWatch, panels: Panels, before: list[dict[str, Any]],
                   log_path: Path, day: dt.date, offered: int, repeats: int, timeout: float,
                   observe_s: float) -> dict[str, Any]:
    views = refreshed_views(client)
    idle = _idle(watch, views, observe_s)
    lo, hi = f"toDateTime('{day} 00:00:00', 'UTC')", f"toDateTime('{day + dt.timedelta(days=1)} 00:00:00', 'UTC')"

    def act() -> dict[str, Any]:
        stats = code.import_files(client, [log_path])
        return {"lines": stats.lines, "imported": stats.imported}

    def shows() -> bool:
        # The day's visits as the simulation counted them (its truth); 1 % slack for definitions'
        # edge cases, so a partial recompute (a refresh that ran mid-import) does not count.
        return client.query(f"SELECT sum(offered) FROM pbx.queue_stats_15m WHERE interval_start >= {lo} "
                            f"AND interval_start < {hi}").result_rows[0][0] >= 0.99 * offered

    out = _change(client, code, watch, views, idle, act, shows, timeout)
    out["day"] = day.isoformat()
    out["offered_simulated"] = offered
    out["offered_shown"] = client.query(f"SELECT sum(offered) FROM pbx.queue_stats_15m WHERE interval_start >= {lo} "
                                        f"AND interval_start < {hi}").result_rows[0][0]
    # After this full recompute: rows awaiting merge and what they cost the visit panels.
    visit_ids = {p["id"] for p in before if p.get("visit_panel")}
    out["duplicates"] = _duplicates(client)
    now = dt.datetime.now(dt.timezone.utc)
    out["visit_panels_after_recompute"] = panels.measure(client, now, repeats, visit_ids, "after-recompute")
    t0 = time.monotonic()
    for table in DATA_TABLES:
        if client.command(f"EXISTS TABLE pbx.{table}"):
            client.command(f"OPTIMIZE TABLE pbx.{table} FINAL")
    out["optimize_final_s"] = round(time.monotonic() - t0, 1)
    out["duplicates_after_optimize"] = _duplicates(client)
    out["visit_panels_after_merge"] = panels.measure(client, now, repeats, visit_ids, "after-merge")
    return out


def phase_settings(code: Code, client: Any, watch: RefreshWatch, timeout: float, observe_s: float) -> dict[str, Any]:
    views = refreshed_views(client)
    idle = _idle(watch, views, observe_s)
    queue = client.query("SELECT queue_name FROM pbx.queue_stats_15m GROUP BY queue_name "
                         "ORDER BY count() DESC LIMIT 1").result_rows[0][0]
    measure = f"SELECT sum(answered_in_sla) FROM pbx.queue_stats_15m WHERE queue_name = '{queue}'"
    before = client.query(measure).result_rows[0][0]

    def act() -> dict[str, Any]:
        client.insert("pbx.queue_settings", [[queue, 30, 5]],
                      column_names=["queue_name", "sla_threshold_s", "short_abandon_s"])
        return {"queue": queue, "sla_threshold_s": 30}

    def shows() -> bool:
        return client.query(measure).result_rows[0][0] != before

    out = _change(client, code, watch, views, idle, act, shows, timeout)
    out["answered_in_sla_before"] = before
    out["answered_in_sla_after"] = client.query(measure).result_rows[0][0]
    return out


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chdata", type=Path, required=True, help="the run's engine copy")
    parser.add_argument("--repo", type=Path, required=True, help="the checkout under test")
    parser.add_argument("--out", type=Path, required=True, help="JSON results")
    parser.add_argument("--phases", default="open,panels,refresh,backfill,settings")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--refresh-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--backfill-log", type=Path)
    parser.add_argument("--backfill-day", type=dt.date.fromisoformat)
    parser.add_argument("--backfill-offered", type=int, default=1, help="offered visits the simulation counted")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per backfill/settings phase")
    args = parser.parse_args(argv)
    phases = args.phases.split(",")
    # How long idle refreshes are watched for their rows read (at least one 5-s period).
    observe_s = max(6.0, min(12.0, args.refresh_seconds))
    wrk = _load("_scale_wrk", HARNESS / "bench" / "_wrk.py")
    code = Code()
    dsn = f"chdb://{args.chdata}"
    result: dict[str, Any] = {"pid": os.getpid(), "phases": {}}

    def save() -> None:
        args.out.write_text(json.dumps(result, indent=1, default=str))

    volunteer_for_oom_killer()
    raw = open_engine(args.chdata, args.out.parent / "engine.xml")
    client = code.connect(dsn)
    try:
        result["phases"]["open"] = phase_open(code, client, args.repo)
        save()
        with Serve(code, dsn, args.out.parent / "serve") as serve, RefreshWatch(code, dsn) as watch:
            panels = Panels(args.repo)
            before: list[dict[str, Any]] = []
            for phase in phases:
                started = time.monotonic()
                result["running"] = phase  # what was running, if this process is killed
                save()
                try:
                    if phase == "panels":
                        with margin_settled(client):
                            before = panels.measure(client, dt.datetime.now(dt.timezone.utc), args.repeats,
                                                    progress=lambda e: print(f"panel {json.dumps(e)}", flush=True))
                        result["phases"]["panels"] = before
                    elif phase == "refresh":
                        result["phases"]["refresh"] = phase_refresh(client, watch, serve, args.refresh_seconds,
                                                                    args.rate, wrk)
                    elif phase == "backfill" and args.backfill_log:
                        result["phases"]["backfill"] = phase_backfill(code, client, watch, panels, before,
                                                                      args.backfill_log, args.backfill_day,
                                                                      args.backfill_offered, args.repeats,
                                                                      args.timeout, observe_s)
                    elif phase == "settings":
                        result["phases"]["settings"] = phase_settings(code, client, watch, args.timeout,
                                                                      observe_s)
                except Exception as exc:  # noqa: BLE001 - the other phases still run
                    result["phases"][phase] = {"error": f"{type(exc).__name__}: {exc}"[:500],
                                               "traceback": traceback.format_exc()[-2000:]}
                result.setdefault("phase_seconds", {})[phase] = round(time.monotonic() - started, 1)
                result.pop("running", None)
                save()
    finally:
        client.close()
        if raw is not None:
            raw.close()
    result["peak_rss_mib_process"] = round(_status_kib("VmHWM") / 1024, 1)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
