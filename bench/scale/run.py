"""``python -m bench run scale --dir DIR``: issue 15's figures at 30 / 90 / 365 days, 40 / 200 agents.

For each dataset (:mod:`bench.scale.datasets`; built once under ``DIR`` if
missing, unless ``--no-build``):

1. a hard-linked copy of the built engine under ``DIR/runs/<run>/``;
2. ``prepare`` (this checkout's code, its own process): the copy caught up to
   now with more simulated days, so the dashboards' "now" and the wallboard's
   live views fall inside the data, and the late day's access log written;
3. the probe (:mod:`bench.scale.probe`, the checkout under test: ``--repo``,
   its own ``.venv`` when it has one) measures every phase in one process that
   holds the engine, as ``serve`` does, with a watchdog on its memory;
4. the copy is removed (``--keep`` keeps it); the logs and JSON stay in ``DIR/runs/<run>/``.

Then one table: a row per figure, a column per dataset (:mod:`bench.scale.table`).
Several ``--repo`` run one after another on copies of the same data (ratios
between them come from the same run).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.scale import datasets, table

__all__ = ["CENTRES", "HARNESS", "Options", "run"]

CENTRES = datasets.CENTRES

HARNESS = Path(__file__).resolve().parent.parent.parent
PROBE = Path(__file__).resolve().with_name("probe.py")


@dataclasses.dataclass
class Options:
    #: Where datasets are cached (and run copies made: same filesystem).
    data_dir: Path
    #: Checkouts under test (their ``sql/``, ``dashboards/`` and ``ingest``); default this one.
    repos: list[Path] = dataclasses.field(default_factory=lambda: [HARNESS])
    agents: list[int] = dataclasses.field(default_factory=lambda: [40, 200])
    days: list[int] = dataclasses.field(default_factory=lambda: [30, 90, 365])
    phases: list[str] = dataclasses.field(default_factory=lambda: ["panels", "refresh", "backfill", "settings"])
    #: Build missing datasets (else they are reported as missing).
    build: bool = True
    jobs: int = 2
    repeats: int = 5
    refresh_seconds: float = 60.0
    rate: float = 50.0
    #: Per backfill / settings change: give up waiting after this long.
    timeout: float = 1800.0
    #: Kill the probe if its RSS passes this (GiB): the machine is shared.
    memory_limit_gib: float = 12.0
    keep: bool = False


def _label(agents: int, days: int, repo: Path, repos: list[Path]) -> str:
    base = f"{agents} a, {days} d"
    return base if len(repos) == 1 else f"{base} [{repo.name}]"


def _python_of(repo: Path) -> str:
    venv = repo / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _watched(cmd: list[str], *, env: dict[str, str], cwd: Path, log_path: Path, limit_kib: int,
             timeout: float) -> dict[str, Any]:
    """Run ``cmd``, killing it if its RSS passes ``limit_kib`` or it runs past ``timeout``."""
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        peak = 0
        started = time.monotonic()
        verdict = None
        while proc.poll() is None:
            peak = max(peak, _rss_kib(proc.pid))
            if peak > limit_kib:
                verdict = f"killed: RSS passed {limit_kib / 2**20:.1f} GiB"
            elif time.monotonic() - started > timeout:
                verdict = f"killed: still running after {timeout:.0f} s"
            if verdict:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.5)
    return {"returncode": proc.returncode, "peak_rss_mib": round(peak / 1024, 1), "verdict": verdict,
            "seconds": round(time.monotonic() - started, 1)}


def _measure(opts: Options, dataset: datasets.Dataset, repo: Path, run_dir: Path, until: dt.datetime,
             log: Callable[[str], None]) -> dict[str, Any]:
    work = run_dir / f"{dataset.home.name}--{repo.name}"
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"data": dataset.info, "repo": str(repo)}
    try:
        started = time.monotonic()
        chdata = datasets.copy_for_run(dataset, work)
        log(f"  copy: {time.monotonic() - started:.1f} s (hard links)")
        prep_out = work / "prepare.json"
        env = {**os.environ, "PYTHONPATH": str(HARNESS)}
        done = _watched([sys.executable, "-m", "bench.scale.datasets", "prepare", "--dataset", str(dataset.home),
                         "--chdata", str(chdata), "--until", until.isoformat(), "--backfill-log",
                         str(work / "backfill.log.gz"), "--out", str(prep_out), "--jobs", str(opts.jobs)],
                        env=env, cwd=HARNESS, log_path=work / "prepare.log",
                        limit_kib=int(opts.memory_limit_gib * 2**20), timeout=opts.timeout)
        if done["returncode"] != 0:
            raise RuntimeError(f"prepare failed ({done['verdict'] or done['returncode']}): "
                               f"{(work / 'prepare.log').read_text()[-600:]}")
        result["prepare"] = prep = json.loads(prep_out.read_text())
        log(f"  caught up {prep['caught_up'].get('days')} days ({prep['caught_up'].get('events'):,} events) "
            f"in {done['seconds']:.0f} s")
        probe_out = work / "probe.json"
        env = {**os.environ, "PYTHONPATH": str(repo)}
        cmd = [_python_of(repo), str(PROBE), "--chdata", str(chdata), "--repo", str(repo), "--out", str(probe_out),
               "--phases", ",".join(["open", *opts.phases]), "--repeats", str(opts.repeats),
               "--refresh-seconds", str(opts.refresh_seconds), "--rate", str(opts.rate),
               "--backfill-log", str(work / "backfill.log.gz"), "--backfill-day", prep["backfill"]["day"],
               "--backfill-offered", str(prep["backfill"]["offered"]), "--timeout", str(opts.timeout)]
        done = _watched(cmd, env=env, cwd=repo, log_path=work / "probe.log",
                        limit_kib=int(opts.memory_limit_gib * 2**20), timeout=opts.timeout * 4)
        result["probe_process"] = done
        if probe_out.exists():
            result["probe"] = json.loads(probe_out.read_text())
            if done["verdict"] and "running" in result["probe"]:
                phase = result["probe"]["running"]
                result["probe"]["phases"][phase] = {"error": f"{done['verdict']} during {phase}"}
        if done["returncode"] != 0:
            tail = (work / "probe.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
            result["error"] = f"probe {done['verdict'] or 'exit ' + str(done['returncode'])}: {tail[0][:300]}"
            log(f"  probe: {result['error']}; log {work / 'probe.log'}")
        else:
            log(f"  probe: {done['seconds']:.0f} s, peak RSS {done['peak_rss_mib']:.0f} MiB")
    except Exception as exc:  # noqa: BLE001 - one dataset failing leaves the others
        result["error"] = f"{type(exc).__name__}: {exc}"[:800]
        log(f"  failed: {result['error']}")
    finally:
        if not opts.keep:  # the engine copy and the late day's log; logs and JSON stay
            shutil.rmtree(work / dataset.home.name, ignore_errors=True)
            (work / "backfill.log.gz").unlink(missing_ok=True)
    return result


def run(opts: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build what is missing, measure every dataset with every checkout, return results and the table."""
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    run_dir = opts.data_dir / "runs" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results: dict[str, Any] = {}
    columns: list[str] = []
    # A common "now" for every copy: the same data whichever checkout reads it.
    until = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    built: dict[tuple[int, int], datasets.Dataset | None] = {}
    for agents in opts.agents:
        centre = datasets.CENTRES[agents]
        for days in sorted(opts.days, reverse=True):  # the longest first: the others are cut from it
            dataset = datasets.find(opts.data_dir, centre, days)
            if dataset is None and opts.build:
                longer = datasets.find_longer(opts.data_dir, centre, days)
                try:
                    if longer is not None:
                        log(f"deriving {centre.label}, {days} days from {longer.home.name} ...")
                        dataset = datasets.derive(opts.data_dir, longer, days, log=lambda m: log(f"  {m}"))
                    else:
                        log(f"building {centre.label}, {days} days under {opts.data_dir} ...")
                        dataset = datasets.build(opts.data_dir, centre, days, jobs=opts.jobs,
                                                 log=lambda m: log(f"  {m}"))
                except datasets.DatasetBusy as exc:
                    log(f"  {exc}")
            built[(agents, days)] = dataset
    for agents in opts.agents:
        for days in sorted(opts.days):
            dataset = built[(agents, days)]
            for repo in opts.repos:
                label = _label(agents, days, repo, opts.repos)
                columns.append(label)
                if dataset is None:
                    results[label] = {"error": "dataset not built (building elsewhere, or --no-build)"}
                    continue
                log(f"{label}: {dataset.home.name} ({dataset.info['events']:,} events), checkout {repo}")
                results[label] = _measure(opts, dataset, repo, run_dir, until, log)
    rows = table.rows(results)
    ctx = table.Context(opts.data_dir, opts.repos[0], run_dir, smoke=False)
    rows = table.with_hooks(rows, ctx, log)
    options = {**dataclasses.asdict(opts), "data_dir": str(opts.data_dir), "repos": [str(r) for r in opts.repos]}
    return {"options": options,
            "until": until.isoformat(), "datasets": results, "columns": columns,
            "table": table.render(rows, columns)}
