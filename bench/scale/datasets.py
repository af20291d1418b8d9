"""Year-sized datasets for ``bench run scale``: built once, cached, copied per run.

A dataset is an embedded-engine directory holding ``days`` simulated days of one
call centre (:class:`Centre`), ending at a UTC midnight, with every migration of
the checkout that built it applied and every refreshable view brought up to date.

How it is built, and why this way
---------------------------------
A 200-agent year is ~133 M events; the simulator keeps a run's events in memory,
so a year is simulated **day by day**: each day is its own simulation (seed
derived from the centre's seed and the date), 00:00-23:30 UTC with the simulator's
"drain" ending (arrivals stop at 23:30, calls in progress finish, agents log out:
a shift a day; at 23:30 the hourly profile is at 5 % of its peak). Days are
independent, so ``jobs`` worker processes simulate them in parallel.

A worker turns its day's webhooks into ``pbx.events`` rows with the service's own
decoding path (``parse_query`` -> ``decode`` -> ``to_row``), with the ids, source
and times the importer would give the same lines in an access log
(``received_at`` = the second, ``event_id`` = ``line_event_id`` of (time, target,
occurrence), ``source = 'import'``). The building process inserts them with the
importer's own batch insert (``_Sink``: same column types, settings, dedup
check). So the rows are exactly what ``simulate --access-log`` + ``import`` would
store (``tests/e2e/bench/test_scale.py`` checks that), without writing, gzipping,
re-reading and regex-matching ~10 GB of log text (docs/benchmarks.md: that round
trip would add ~16 us to the ~40 us an event costs).

The refreshable views are paused while a week is inserted, then brought up to
date (``SYSTEM REFRESH VIEW`` + ``WAIT``, again until no layer has arrival rows past
its cursor: :func:`catch_up_views`, each run taking up to a week of them,
:data:`BUILD_CHUNK_ROWS`) -- as a live service would have had them, in bounded
steps, never one recompute of the whole year.

Copied days (``--simulate-days N``)
-----------------------------------
Simulating costs ~2 k events per CPU-second: a 200-agent year is ~18 CPU-hours.
With ``simulate_days`` set, only the first N days are simulated; every later day
D is a copy of the latest simulated day S of the same weekday, made inside the
engine (``INSERT INTO pbx.events SELECT ... FROM pbx.events WHERE <day S>``,
:func:`copy_day`): every time shifted by D - S, and every identity renamed for the
copy (``event_id`` rehashed with D, ``call_id`` / ``cel_id`` / ``custom_call_id``
suffixed ``~YYYYMMDD``, ``seq`` shifted as the importer's would be for a log D - S
days later), so no call joins its source's events (a reused call id made the
per-call layer pair every copy with every other: ``bench/importing.py`` long_log).
Agents, queues and callers' numbers stay: the same centre, the same customers.
A copy is the source day's figures moved in time (``tests/e2e/bench/test_scale.py``
checks the 15-minute rows); ``READY.json`` says which days are copies of which
(``copies``), and the bench's table prints "simulated + copied" days.

A build interrupted under an older schema whose migrations are too heavy to apply
at that size (the 0218 initial fill of a 147-day 200-agent build reached 9.4 GB)
is not migrated: ``rows_from`` names it, its stored days' ``pbx.events`` rows are
written out by day (:func:`export_days`, in a process of their own: one engine a
process) and inserted into a fresh engine of this schema chunk by chunk, as if
simulated again (the same rows: ``seq`` 0 where that build predates it).

Layout under the directory the user names (``--dir``)::

    <dir>/<key>/chdata/        the engine (never modified after READY.json)
    <dir>/<key>/READY.json     what it holds, how long it took
    <dir>/<key>.building/      a build in progress (progress.json: resumable)
    <dir>/runs/<run>/<key>/    a run's copy: hard links (cp -al), so a copy costs
                               no space until the run writes; removed after the run

Runs never write to a built dataset: they work on a hard-linked copy (ClickHouse
never rewrites a data part's files in place; merges and mutations write new
parts), so several checkouts can measure the same data.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import datetime as dt
import fcntl
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "CENTRES",
    "Centre",
    "Dataset",
    "DatasetBusy",
    "build",
    "copy_day",
    "copy_for_run",
    "day_events",
    "derive",
    "export_days",
    "extend",
    "find",
    "find_longer",
    "prepare",
    "source_day",
]

#: Simulated hours of each day: 00:00-23:30 UTC, then the centre drains and closes.
DAY_HOURS = 23.5
#: Days inserted between two refreshes of the views while building.
REFRESH_EVERY_DAYS = 7


@dataclasses.dataclass(frozen=True)
class Centre:
    """One simulated call centre. Same centre + date -> the same day, event for event."""

    #: Agents, and queues (each agent has one or two of them as skills).
    agents: int
    queues: int
    #: Arrivals per queue per hour when the hourly profile is 1.0 (``simulate --calls-per-hour``).
    calls_per_hour: float = 120.0
    #: Base seed; each day's simulation seed is derived from it and the date.
    seed: int = 15

    @property
    def label(self) -> str:
        return f"{self.agents} agents"

    def key(self, days: int, end: dt.date) -> str:
        return f"a{self.agents}-q{self.queues}-c{self.calls_per_hour:g}-s{self.seed}-d{days}-{end:%Y%m%d}"

    def day_config(self, day: dt.date, hours: float = DAY_HOURS, end_mode: str = "drain") -> Any:
        from ingest.simulation import SimConfig

        return SimConfig(
            seed=self.seed * 1_000_003 + day.toordinal(),
            start=dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc),
            hours=hours, queues=self.queues, agents=self.agents, calls_per_hour=self.calls_per_hour,
            end_mode=end_mode,
        )


#: The two centres of issue 15: 40 agents in 5 queues (the earlier benchmarks' centre) and
#: 200 agents in 25 queues (the same load per queue and per agent, five times over: ~133 M
#: events a year); and one queue of it, 8 agents (a fifth of the 40), for the smoke run in the
#: tests (tests/e2e/bench/test_scale.py): every section, on a fifth of the data.
CENTRES: dict[int, Centre] = {8: Centre(agents=8, queues=1), 40: Centre(agents=40, queues=5),
                              200: Centre(agents=200, queues=25)}


class DatasetBusy(RuntimeError):
    """Another process is building this dataset."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A built dataset on disk."""

    home: Path
    info: dict[str, Any]

    @property
    def chdata(self) -> Path:
        return self.home / "chdata"

    @property
    def end(self) -> dt.date:
        return dt.date.fromisoformat(self.info["end"])

    @property
    def first_day(self) -> dt.date:
        return self.end - dt.timedelta(days=self.info["days"])

    @property
    def centre(self) -> Centre:
        return Centre(**self.info["centre"])


# ---------------------------------------------------------------------------- one day's rows


def day_events(centre: Centre, day: dt.date, hours: float = DAY_HOURS, end_mode: str = "drain") -> Any:
    """The simulation of one day (events in send order, and the truth)."""
    from ingest.simulation import simulate

    return simulate(centre.day_config(day, hours, end_mode))


def _rows_of(events: list[Any]) -> list[tuple[Any, ...]]:
    """The ``pbx.events`` rows ``import`` would store for these events as one access-log file."""
    from ingest.backfill.rows import line_event_id, line_seq
    from ingest.events.decode import decode, parse_query
    from ingest.events.table import to_row

    seen: dict[tuple[int, str], int] = {}
    rows = []
    for lineno, ev in enumerate(events, 1):
        target = ev.target
        n = seen.get((ev.t, target), 0)
        seen[(ev.t, target)] = n + 1
        # (seq: the line's number from the file's first second, as the importer stores it)
        rows.append(to_row(ev.event, decode(ev.event, parse_query(ev.query)), ev.t * 1000, "import",
                           line_event_id(ev.t, target, n), line_seq(events[0].t, lineno)))
    return rows


def _day_columns(centre: Centre, day: dt.date, hours: float, end_mode: str) -> tuple[list[Any], dict[str, int]]:
    """Worker: one simulated day as insert columns, and its counts (events, visits by outcome)."""
    sim = day_events(centre, day, hours, end_mode)
    rows = _rows_of(sim.events)
    counts: dict[str, int] = {"events": len(rows), "visits": len(sim.truth["queue_visits"])}
    for visit in sim.truth["queue_visits"]:
        counts[f"visits_{visit['outcome']}"] = counts.get(f"visits_{visit['outcome']}", 0) + 1
    return list(zip(*rows)), counts


# ---------------------------------------------------------------------------- engine helpers


def _connect(chdata: Path) -> Any:
    from ingest.storing.clickhouse import connect

    return connect(f"chdb://{chdata}")


def refresh_views(client: Any) -> None:
    """Every refreshable view up to date with everything stored (``bench/queries.py``)."""
    from ingest.testing import refresh_views as refresh

    refresh(client)


#: Arrival rows one refresh run of a layer reads while building (``chunk_rows``, sql/0214; the
#: schema's default, 20,000, is about half a day of the 200-agent centre's calls, ~45 k a day):
#: about a day of them, so a week's chunk is caught up in ~7 runs instead of ~16 (~10 s each).
#: Memory grows with it, through the agent layer's refresh (sql/0227 keeps a chunked backlog
#: whole): on the 200-agent year after 105 days, ``agents_refresh`` alone peaked at 2.0 GiB
#: process RSS with 20,000, 3.9 GiB with 50,000 and passed 7.5 GiB with 150,000 (the value
#: before 2026-12-04, which stopped that build at 7.65 GiB; 400,000 took it to 10 GiB before 0227).
BUILD_CHUNK_ROWS = 50_000


def catch_up_views(client: Any, log: Callable[[str], None] = print) -> int:
    """Refresh every view until no layer has arrival rows past its cursor; returns the rounds.

    One :func:`refresh_views` moves each layer ``chunk_rows`` arrival rows at most, so a
    week of inserts needs several (``bench/scale/probe.py`` ``refresh_until_caught_up``
    does the same when a run's copy opens). Stops when a round takes nothing off.
    """
    from bench.scale.probe import backlog

    rounds, left = 0, backlog(client)
    while True:
        refresh_views(client)
        rounds += 1
        previous, left = left, backlog(client)
        if not left or previous is None or left >= previous:
            if left:
                log(f"views: {left:,} arrival rows left past a layer's cursor after {rounds} rounds")
            return rounds


#: The refreshes' settings a service runs with (the schema's, sql/0214).
SERVICE_SETTINGS = {"chunk_rows": 20000, "commit_margin_ms": 15000}


def _put_settings(client: Any, values: dict[str, int]) -> None:
    """New rows of ``pbx.refresh_settings`` (the newest row of a name wins)."""
    client.command("INSERT INTO pbx.refresh_settings (name, value) VALUES "
                   + ", ".join(f"('{k}', {int(v)})" for k, v in values.items()))


@contextmanager
def _build_settings(client: Any) -> Iterator[None]:
    """The refreshes' settings while building, then the service's (:data:`SERVICE_SETTINGS`).

    ``chunk_rows`` = :data:`BUILD_CHUNK_ROWS`; ``commit_margin_ms`` = 0: the build's inserts
    have all returned (committed) before a refresh starts, so no entity needs computing again
    for an insert still committing (with the default 15 s, every run re-did the calls of the
    run before: all a chunk's arrivals are seconds apart). (Not back to what they were: a build
    resumed after an interruption found the interrupted week's build settings there, and the
    200-agent year kept chunk_rows 150,000 and margin 0 that way.)
    """
    _put_settings(client, {"chunk_rows": BUILD_CHUNK_ROWS, "commit_margin_ms": 0})
    try:
        yield
    finally:
        time.sleep(0.01)  # (updated_at is in ms: the restoring rows must be newer)
        _put_settings(client, SERVICE_SETTINGS)


def wait_for_merges(client: Any, timeout: float = 600.0) -> float:
    """Wait until no merge or mutation runs (up to ``timeout``); returns the seconds waited."""
    started = time.monotonic()
    quiet = 0
    while time.monotonic() - started < timeout:
        busy = client.query("SELECT (SELECT count() FROM system.merges) + "
                            "(SELECT count() FROM system.mutations WHERE NOT is_done)").result_rows[0][0]
        quiet = quiet + 1 if busy == 0 else 0
        if quiet >= 3:
            break
        time.sleep(1.0)
    return round(time.monotonic() - started, 1)


def _days_of(first: dt.date, end: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((end - first).days)]


def _insert_days(client: Any, centre: Centre, days: list[tuple[dt.date, float, str]], jobs: int,
                 after_day: Callable[[int, dict[str, int]], None], log: Callable[[str], None]) -> dict[str, int]:
    """Simulate ``days`` (date, hours, end mode) in ``jobs`` processes, insert them in date order."""
    from ingest.backfill import importer
    from ingest.events.table import EventsInsert

    totals: dict[str, int] = {}
    # The one insert of pbx.events (the writer's), under a token per day and batch: a rebuilt
    # day's batch is stored once.
    insert = EventsInsert()
    ctx = multiprocessing.get_context("spawn")  # this process holds the engine and its threads
    with cf.ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
        window = max(1, jobs) + 1  # results waiting for the insert stay few
        pending: list[cf.Future[Any]] = []
        todo = iter(days)
        for index in range(len(days)):
            while len(pending) < window:
                nxt = next(todo, None)
                if nxt is None:
                    break
                pending.append(pool.submit(_day_columns, centre, *nxt))
            columns, counts = pending.pop(0).result()
            day = days[index][0]
            for start in range(0, len(columns[0]), importer.DEFAULT_BATCH_SIZE):
                insert(client, [col[start:start + importer.DEFAULT_BATCH_SIZE] for col in columns],
                       f"dataset:{centre.agents}:{day}:{start}")
            del columns
            for name, value in counts.items():
                totals[name] = totals.get(name, 0) + value
            after_day(index, counts)
    return totals


# ---------------------------------------------------------------------------- copied days

#: ``pbx.events`` columns naming a call or one of its events: a copied day's get the copy's
#: suffix (``event_id``, the row's own identity, is rehashed; ``seq`` is shifted).
RENAMED_COLUMNS = ("call_id", "cel_id", "custom_call_id")


def source_day(day: dt.date, first: dt.date, simulate_days: int) -> dt.date:
    """The simulated day a copied ``day`` repeats: the latest of the first ``simulate_days`` on its weekday."""
    last = first + dt.timedelta(days=simulate_days - 1)
    return last - dt.timedelta(days=(last - day).days % 7)


def _day_range(day: dt.date) -> str:
    return (f"received_at >= toDateTime64('{day}', 3, 'UTC') "
            f"AND received_at < toDateTime64('{day + dt.timedelta(days=1)}', 3, 'UTC')")


def copy_day(client: Any, source: dt.date, day: dt.date) -> int:
    """Insert ``source``'s ``pbx.events`` rows again as ``day``'s (module doc); returns the rows copied."""
    from ingest.events.table import COLUMNS

    shift = (day - source).days
    tag = f"~{day:%Y%m%d}"
    exprs = {
        "event_id": f"reinterpretAsUUID(sipHash128(event_id, {day.toordinal()}))",
        "received_at": f"received_at + toIntervalDay({shift})",
        "seq": f"if(seq = 0, 0, seq + {shift * 86400 * 10**9})",  # 0: stored before seq existed
        **{c: f"if({c} = '', '', concat({c}, '{tag}'))" for c in RENAMED_COLUMNS},
    }
    client.command(f"INSERT INTO pbx.events ({', '.join(COLUMNS)}) "
                   f"SELECT {', '.join(exprs.get(c, c) for c in COLUMNS)} FROM pbx.events WHERE {_day_range(source)}")
    return client.query(f"SELECT count() FROM pbx.events WHERE {_day_range(day)}").result_rows[0][0]


def _export_path(directory: Path, day: dt.date) -> Path:
    return directory / f"{day}.native.zst"


def export_days(chdata: Path, out: Path, first: dt.date, days: int, log: Callable[[str], None] = print) -> None:
    """Write the ``pbx.events`` rows of ``days`` days from ``first`` of an engine, one file a day.

    The engine is opened as it is (no migration: that is what this avoids). A day's file is
    written under a temporary name and renamed, so an interrupted export resumes.
    """
    from ingest.events.table import COLUMNS

    out.mkdir(parents=True, exist_ok=True)
    client = _connect(chdata)
    try:
        for day in _days_of(first, first + dt.timedelta(days=days)):
            path = _export_path(out, day)
            if path.exists():
                continue
            part = path.with_name(f"part-{path.name}")
            part.unlink(missing_ok=True)
            client.command(f"INSERT INTO FUNCTION file('{part}', 'Native') "
                           f"SELECT {', '.join(COLUMNS)} FROM pbx.events WHERE {_day_range(day)}")
            part.rename(path)
            log(f"exported {day}")
    finally:
        client.close()


def _reinsert_day(client: Any, path: Path) -> int:
    from ingest.events.table import COLUMNS

    names = ", ".join(COLUMNS)
    client.command(f"INSERT INTO pbx.events ({names}) SELECT {names} FROM file('{path}', 'Native')")
    return client.query(f"SELECT count() FROM file('{path}', 'Native')").result_rows[0][0]


# ---------------------------------------------------------------------------- build


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetBusy(f"{path.parent}: being built by another process (lock {path})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _commit() -> str | None:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    return out.stdout.strip() or None


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout else 0


def build(root: Path, centre: Centre, days: int, *, end: dt.date | None = None, jobs: int = 2,
          simulate_days: int | None = None, rows_from: Path | None = None,
          log: Callable[[str], None] = print) -> Dataset:
    """Build (or finish building) ``days`` days of ``centre`` ending at ``end`` (default: today 00:00 UTC).

    ``simulate_days``: simulate only the first this many days, copy the others (module doc).
    ``rows_from``: an interrupted build of the same dataset under an older schema (its
    ``.building`` directory, moved aside): its days are taken from it, not simulated again.
    """
    end = end or dt.datetime.now(dt.timezone.utc).date()
    simulate_days = days if simulate_days is None else simulate_days
    if simulate_days != days and not 7 <= simulate_days < days:
        raise ValueError(f"simulate_days: {simulate_days}: at least 7 (one simulated day per weekday) "
                         f"and at most the {days} days")
    key = centre.key(days, end)
    home = root / key
    if (home / "READY.json").exists():
        return Dataset(home, json.loads((home / "READY.json").read_text()))
    work = root / f"{key}.building"
    all_days = _days_of(end - dt.timedelta(days=days), end)
    number = {day: i for i, day in enumerate(all_days, 1)}
    with _locked(root / f"{key}.lock"):
        if (home / "READY.json").exists():  # built meanwhile
            return Dataset(home, json.loads((home / "READY.json").read_text()))
        work.mkdir(parents=True, exist_ok=True)
        progress_path = work / "progress.json"
        progress = json.loads(progress_path.read_text()) if progress_path.exists() else {
            "days_done": 0, "totals": {}, "seconds": {"insert": 0.0, "refresh": 0.0}}
        reused = work / "reused"
        if rows_from is not None and "reused_from" not in progress:
            old = json.loads((rows_from / "progress.json").read_text())
            reused_days = min(old["days_done"], simulate_days)
            if reused_days < old["days_done"]:
                raise ValueError(f"rows_from: {rows_from} holds {old['days_done']} days, more than the "
                                 f"{simulate_days} simulated ones")
            # (its own process: one engine a process)
            subprocess.run([sys.executable, "-m", "bench.scale.datasets", "export", "--chdata",
                            str(rows_from / "chdata"), "--out", str(reused), "--first", all_days[0].isoformat(),
                            "--days", str(reused_days)], check=True, cwd=Path(__file__).parents[2])
            progress.update(reused_from={"dir": str(rows_from), "days": reused_days, "progress": old},
                            totals=dict(old["totals"]))
            progress_path.write_text(json.dumps(progress, indent=1))
        progress.setdefault("copies", {})
        from ingest.storing.migrations import apply_migrations

        client = _connect(work / "chdata")
        started = time.monotonic()
        try:
            apply_migrations(client)
            log(f"{key}: building {days} days from {all_days[0]} to {end} (exclusive), "
                f"{progress['days_done']} done before, {simulate_days} simulated ({jobs} simulating "
                f"processes), {days - simulate_days} copied")
            while progress["days_done"] < days:
                first = progress["days_done"]
                chunk = all_days[first:first + REFRESH_EVERY_DAYS]
                client.command("SYSTEM STOP VIEWS")
                # An interrupted chunk's rows go first (copies carry no insert token; the views'
                # tables are behind it: refreshes run between chunks only).
                stale = client.query(f"SELECT count() FROM pbx.events WHERE received_at >= "
                                     f"toDateTime64('{chunk[0]}', 3, 'UTC')").result_rows[0][0]
                if stale:
                    log(f"{key}: deleting {stale:,} rows of an interrupted chunk from {chunk[0]}")
                    client.command(f"ALTER TABLE pbx.events DELETE WHERE received_at >= "
                                   f"toDateTime64('{chunk[0]}', 3, 'UTC')", settings={"mutations_sync": 2})
                t0 = time.monotonic()

                def after_day(day: dt.date, text: str) -> None:
                    log(f"{key}: day {number[day]}/{days} {day}: {text}")

                simulated = [d for d in chunk if number[d] <= simulate_days]
                for day in simulated:
                    if _export_path(reused, day).exists():
                        after_day(day, f"{_reinsert_day(client, _export_path(reused, day)):,} events (the earlier build's)")
                fresh = [d for d in simulated if not _export_path(reused, d).exists()]
                totals = _insert_days(client, centre, [(d, DAY_HOURS, "drain") for d in fresh], jobs,
                                      lambda i, counts, fresh=fresh: after_day(fresh[i], f"{counts['events']:,} events"),
                                      log)
                for day in chunk[len(simulated):]:
                    source = source_day(day, all_days[0], simulate_days)
                    copied = copy_day(client, source, day)
                    progress["copies"][day.isoformat()] = source.isoformat()
                    totals["copied_events"] = totals.get("copied_events", 0) + copied
                    after_day(day, f"{copied:,} events copied from {source}")
                t1 = time.monotonic()
                client.command("SYSTEM START VIEWS")
                with _build_settings(client):
                    rounds = catch_up_views(client, log)
                t2 = time.monotonic()
                for name, value in totals.items():
                    progress["totals"][name] = progress["totals"].get(name, 0) + value
                progress["days_done"] = first + len(chunk)
                progress["seconds"]["insert"] += t1 - t0
                progress["seconds"]["refresh"] += t2 - t1
                progress_path.write_text(json.dumps(progress, indent=1))
                for day in chunk:
                    _export_path(reused, day).unlink(missing_ok=True)
                log(f"{key}: {progress['days_done']}/{days} days, {progress['totals'].get('events', 0):,} events "
                    f"simulated, {progress['totals'].get('copied_events', 0):,} copied; "
                    f"insert {t1 - t0:.0f} s, refresh {t2 - t1:.0f} s ({rounds} rounds)")
            # What background merges reach on a live server after months: each table merged.
            t0 = time.monotonic()
            for (table,) in client.query("SELECT name FROM system.tables WHERE database = 'pbx' "
                                         "AND engine LIKE '%MergeTree'").result_rows:
                client.command(f"OPTIMIZE TABLE pbx.{table} FINAL")
            optimize_s = round(time.monotonic() - t0, 1)
            merge_wait = wait_for_merges(client)
            facts = _facts(client)
        finally:
            client.close()
        info = {
            "key": key, "centre": dataclasses.asdict(centre), "days": days, "end": end.isoformat(),
            "first_day": all_days[0].isoformat(), "day_hours": DAY_HOURS, **facts,
            "simulated": {k: v for k, v in progress["totals"].items() if k != "copied_events"},
            # Days after the first ``simulated_days`` are copies of simulated ones: {copy: source}.
            "simulated_days": simulate_days, "copies": progress["copies"],
            **({"reused_from": {k: v for k, v in progress["reused_from"].items() if k != "progress"}}
               if "reused_from" in progress else {}),
            "build_s": {"insert": round(progress["seconds"]["insert"], 1),
                        "refresh": round(progress["seconds"]["refresh"], 1),
                        "optimize": optimize_s, "merge_wait": merge_wait, "this_session": round(time.monotonic() - started, 1)},
            "jobs": jobs, "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            # The simulator and decoding that wrote these rows (a dataset built over several
            # sessions may span commits: the last one is recorded).
            "commit": _commit(),
            "bytes_on_disk": _du(work / "chdata"),
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        }
        shutil.rmtree(reused, ignore_errors=True)
        (work / "READY.json").write_text(json.dumps(info, indent=1))
        work.rename(home)
        log(f"{key}: ready, {info['events']:,} events, {info['bytes_on_disk'] / 2**30:.2f} GiB")
        return Dataset(home, info)


def _facts(client: Any) -> dict[str, Any]:
    events, first, last = client.query("SELECT count(), min(received_at), max(received_at) FROM pbx.events").result_rows[0]
    visits = client.query("SELECT count() FROM pbx.queue_calls").result_rows[0][0]
    tables = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk), count() FROM system.parts "
        "WHERE database = 'pbx' AND active GROUP BY table ORDER BY table").result_rows
    return {"events": events, "first_event": str(first), "last_event": str(last), "visits_stored": visits,
            "tables": {t: {"rows": r, "bytes": b, "parts": p} for t, r, b, p in tables}}


#: Per table of the schema, the column that places a row in time (rows before a cutoff go when a
#: shorter dataset is derived from a longer one). A table missing here stops a derivation.
TIME_COLUMNS: dict[str, str | None] = {
    "events": "received_at",
    "event_arrivals": "hour",
    "queue_calls_data": "entered_at",
    "queue_stats_15m_data": "interval_start",
    "agent_stats_15m_data": "interval_start",
    "calls_data": "started_at",
    # the per-call and per-agent layers (sql/0214-0218)
    "call_spans": "last_at",
    "queue_visits_data": "entered_at",
    "recordings_data": "at",
    "spy_sessions_data": "started_at",
    "agent_rings_data": "rung_at",
    "agent_time_data": "interval_start",
    "agent_time_15m_data": "interval_start",  # the stretches' sums (sql/0234)
    "agent_time_15m_filled": "",  # kept: the sums of what is kept were filled
    # the stored inbound calls by caller, and every caller a call had (sql/0235)
    "caller_calls": "started_at",
    "call_callers": "started_at",
    "arrivals": None,  # behind every layer's cursor in a built dataset
    # each queue's earliest queue_in (sql/0231): rows before the cutoff go, then it is computed again
    # from the events kept (derive)
    "queue_first_visit": "first_at",
    "agent_open": "",  # each agent's current stretch
    "refresh_done": "",
    "refresh_marks": "",
    "refresh_settings": "",
    "events_quarantine": None,  # emptied
    "queue_settings": "",  # kept whole
    "schema_migrations": "",
}


def derive(root: Path, source: Dataset, days: int, log: Callable[[str], None] = print) -> Dataset:
    """The last ``days`` days of a longer dataset of the same centre and end, as a dataset of its own.

    Days are independent simulations that drain before midnight (no call, visit or
    agent session crosses a day boundary), so dropping the earlier days gives the
    rows a build of only the last ``days`` would have written; view tables lose the
    rows placed before the cutoff the same way (``tests/e2e/bench/test_scale.py`` checks
    that against a build). Much faster than simulating them again.
    """
    centre, end = source.centre, source.end
    if days >= source.info["days"]:
        raise ValueError(f"derive: {days} days from a {source.info['days']}-day dataset")
    key = centre.key(days, end)
    home = root / key
    if (home / "READY.json").exists():
        return Dataset(home, json.loads((home / "READY.json").read_text()))
    work = root / f"{key}.building"
    cutoff = end - dt.timedelta(days=days)
    started = time.monotonic()
    with _locked(root / f"{key}.lock"):
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        subprocess.run(["cp", "-al", str(source.chdata), str(work / "chdata")], check=True)
        client = _connect(work / "chdata")
        try:
            client.command("SYSTEM STOP VIEWS")
            tables = [r[0] for r in client.query("SELECT name FROM system.tables WHERE database = 'pbx' "
                                                 "AND engine LIKE '%MergeTree'").result_rows]
            unknown = [t for t in tables if t not in TIME_COLUMNS]
            if unknown:
                raise RuntimeError(f"derive: no time column known for pbx.{unknown[0]}: add it to TIME_COLUMNS")
            for table in tables:
                column = TIME_COLUMNS[table]
                if column is None:
                    client.command(f"TRUNCATE TABLE pbx.{table}")
                elif column:
                    log(f"{key}: pbx.{table}: dropping rows before {cutoff}")
                    # Whole partitions (months of pbx.events) first: free; then the rest by a mutation.
                    for (partition,) in client.query(
                            "SELECT partition_id FROM system.parts WHERE database = 'pbx' AND table = {t:String} "
                            "AND active AND partition_id != 'all' GROUP BY partition_id "
                            "HAVING max(max_time) < {c:DateTime}",
                            parameters={"t": table, "c": dt.datetime(cutoff.year, cutoff.month, cutoff.day)},
                    ).result_rows:
                        client.command(f"ALTER TABLE pbx.{table} DROP PARTITION ID '{partition}'")
                    client.command(f"ALTER TABLE pbx.{table} DELETE WHERE {column} < toDateTime('{cutoff}', 'UTC')",
                                   settings={"mutations_sync": 2})
            if "queue_first_visit" in tables:
                client.command("INSERT INTO pbx.queue_first_visit SELECT toString(queue_name), min(received_at) "
                               "FROM pbx.events WHERE event = 'queue_in' AND call_id != '' GROUP BY queue_name")
            for table in tables:
                client.command(f"OPTIMIZE TABLE pbx.{table} FINAL")
            merge_wait = wait_for_merges(client)
            facts = _facts(client)
        finally:
            client.close()
        info = {
            **{k: v for k, v in source.info.items() if k not in ("key", "days", "first_day", "simulated", "build_s")},
            "key": key, "days": days, "first_day": cutoff.isoformat(), **facts,
            "derived_from": source.info["key"],
            "copies": {d: s for d, s in source.info.get("copies", {}).items() if d >= cutoff.isoformat()},
            "build_s": {"derive": round(time.monotonic() - started, 1), "merge_wait": merge_wait},
            "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "bytes_on_disk": _du(work / "chdata"),
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        }
        (work / "READY.json").write_text(json.dumps(info, indent=1))
        work.rename(home)
        log(f"{key}: derived from {source.info['key']}, {info['events']:,} events")
        return Dataset(home, info)


def find(root: Path, centre: Centre, days: int) -> Dataset | None:
    """The newest built dataset of ``days`` days of ``centre`` under ``root``."""
    prefix = centre.key(days, dt.date(2000, 1, 1))[: -len("20000101")]
    found = sorted(p for p in root.glob(prefix + "*") if (p / "READY.json").exists())
    return Dataset(found[-1], json.loads((found[-1] / "READY.json").read_text())) if found else None


def find_longer(root: Path, centre: Centre, days: int) -> Dataset | None:
    """The shortest built dataset of ``centre`` longer than ``days`` (newest end first): one to derive from."""
    best: Dataset | None = None
    for ready in root.glob(f"a{centre.agents}-q{centre.queues}-c{centre.calls_per_hour:g}-s{centre.seed}-d*/READY.json"):
        candidate = Dataset(ready.parent, json.loads(ready.read_text()))
        if candidate.info["days"] <= days or candidate.info.get("derived_from"):
            continue
        if best is None or (candidate.end, -candidate.info["days"]) > (best.end, -best.info["days"]):
            best = candidate
    return best


# ---------------------------------------------------------------------------- a run's copy


def copy_for_run(dataset: Dataset, run_dir: Path) -> Path:
    """A hard-linked copy of the dataset's engine for one run (same filesystem); returns its chdata."""
    target = run_dir / dataset.home.name / "chdata"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["cp", "-al", str(dataset.chdata), str(target)], check=True)
    return target


def extend(chdata: Path, centre: Centre, start: dt.date, until: dt.datetime, *, jobs: int = 2,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Add the simulated days from ``start`` (00:00 UTC) up to ``until`` to a run's copy.

    Whole days as when building; the last, partial day is cut at ``until`` (calls in
    progress and logged-in agents stay so: the dashboards' "now" is inside the data).
    The views are not refreshed here: the measuring process's first refresh does it.
    """
    days: list[tuple[dt.date, float, str]] = []
    day = start
    while dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1) <= until:
        days.append((day, DAY_HOURS, "drain"))
        day += dt.timedelta(days=1)
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    hours = (until - midnight).total_seconds() / 3600
    if hours > 0:
        days.append((day, hours, "cut"))
    if not days:
        return {"days": 0, "events": 0}
    client = _connect(chdata)
    started = time.monotonic()
    try:
        client.command("SYSTEM STOP VIEWS")
        # This checkout's rows carry seq (sql/0210); a dataset built before it lacks the
        # column (an older checkout measured on it ignores it).
        client.command("ALTER TABLE pbx.events ADD COLUMN IF NOT EXISTS seq UInt64 CODEC(Delta, ZSTD(1))")
        totals = _insert_days(client, centre, days, jobs, lambda i, c: None, log)
    finally:
        client.close()
    return {"days": round(sum(h for _, h, _ in days) / 24, 2), "events": totals.get("events", 0),
            "seconds": round(time.monotonic() - started, 1)}


def prepare(dataset: Dataset, chdata: Path, until: dt.datetime, backfill_log: Path, *, jobs: int = 2,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Make a run's copy ready: caught up to ``until``, the service's refresh settings, and the
    late day's access log written.

    The late day is the day before the data's first day (a year back for a 365-day
    dataset): importing it recomputes everything after it.
    """
    caught_up = extend(chdata, dataset.centre, dataset.end, until, jobs=jobs, log=log)
    # The service's refresh settings: a dataset built before they were restored on its
    # build's end carries the build's (the 200-agent year: chunk_rows 150,000, margin 0).
    client = _connect(chdata)
    try:
        _put_settings(client, SERVICE_SETTINGS)
    finally:
        client.close()
    day = dataset.first_day - dt.timedelta(days=1)
    sim = day_events(dataset.centre, day)
    from ingest.simulation import write_access_log

    lines = write_access_log(backfill_log, sim.events)
    offered = sum(1 for v in sim.truth["queue_visits"] if v["outcome"] != "waiting")
    return {"caught_up": caught_up, "until": until.isoformat(timespec="seconds"),
            "backfill": {"day": day.isoformat(), "log": str(backfill_log), "lines": lines, "offered": offered}}


# ---------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale.datasets",
        description="Build a cached year dataset for `python -m bench run scale` (normally that command "
        "builds what it needs; this builds one alone, e.g. the largest in the background).")
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="build one dataset (resumes an interrupted build)")
    b.add_argument("--dir", type=Path, required=True, help="where datasets are cached, e.g. /work/scale-data")
    b.add_argument("--agents", type=int, choices=sorted(CENTRES), required=True, help="which centre")
    b.add_argument("--days", type=int, required=True, help="simulated days, ending today 00:00 UTC")
    b.add_argument("--end", type=dt.date.fromisoformat, default=None,
                   help="last day (exclusive), YYYY-MM-DD (default: today UTC; an interrupted build resumes "
                   "only with the same end)")
    b.add_argument("--jobs", type=int, default=2, help="simulating processes (default 2)")
    b.add_argument("--simulate-days", type=int, default=None, metavar="N",
                   help="simulate only the first N days (at least 7); each later day is a copy of the latest "
                   "simulated day of its weekday, made in the engine with its own ids (READY.json: copies)")
    b.add_argument("--rows-from", type=Path, default=None, metavar="DIR",
                   help="an interrupted build of this dataset under an older schema (its .building directory, "
                   "moved aside): its days' events are inserted into a fresh engine instead of simulated again")
    x = commands.add_parser("export", help="write an engine's pbx.events rows one file a day (used by --rows-from)")
    x.add_argument("--chdata", type=Path, required=True)
    x.add_argument("--out", type=Path, required=True)
    x.add_argument("--first", type=dt.date.fromisoformat, required=True, help="first day, YYYY-MM-DD")
    x.add_argument("--days", type=int, required=True)
    d = commands.add_parser("derive", help="cut a shorter dataset from a built longer one (same centre and end)")
    d.add_argument("--dir", type=Path, required=True)
    d.add_argument("--from", dest="source", type=Path, required=True, help="the built dataset's directory")
    d.add_argument("--days", type=int, required=True, help="the last this many days")
    p = commands.add_parser("prepare", help="catch a run's copy up to now and write the late day's log")
    p.add_argument("--dataset", type=Path, required=True, help="the built dataset's directory")
    p.add_argument("--chdata", type=Path, required=True, help="the run's copy of its engine")
    p.add_argument("--until", type=dt.datetime.fromisoformat, required=True, help="catch up to (ISO, UTC)")
    p.add_argument("--backfill-log", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="JSON of what was done")
    p.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "derive":
        source = Dataset(args.source, json.loads((args.source / "READY.json").read_text()))
        derive(args.dir, source, args.days, log=lambda m: print(f"{time.strftime('%H:%M:%S')} {m}", flush=True))
        return 0
    if args.command == "export":
        export_days(args.chdata, args.out, args.first, args.days,
                    log=lambda m: print(f"{time.strftime('%H:%M:%S')} {m}", flush=True))
        return 0
    if args.command == "prepare":
        dataset = Dataset(args.dataset, json.loads((args.dataset / "READY.json").read_text()))
        until = args.until if args.until.tzinfo else args.until.replace(tzinfo=dt.timezone.utc)
        args.out.write_text(json.dumps(prepare(dataset, args.chdata, until, args.backfill_log, jobs=args.jobs)))
        return 0
    try:
        build(args.dir, CENTRES[args.agents], args.days, end=args.end, jobs=args.jobs,
              simulate_days=args.simulate_days, rows_from=args.rows_from,
              log=lambda m: print(f"{time.strftime('%H:%M:%S')} {m}", flush=True))
    except (DatasetBusy, ValueError) as exc:
        print(f"python -m bench.scale.datasets: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
