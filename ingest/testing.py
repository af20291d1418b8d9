"""The harness the tests and the benchmarks share (as ``litestar.testing`` is Litestar's).

Everything here drives the real thing: ``serve`` as a subprocess on a free
port, the real embedded engine, the spool's real append path. Nothing here
is used by the service itself.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.client import Client

from ingest.events.table import DATABASE
from ingest.storing import clickhouse
from ingest.storing.spool import Spool

if TYPE_CHECKING:
    from ingest.simulation import SimConfig

__all__ = [
    "npm_installed",
    "REPO",
    "SPEC",
    "ServeProcess",
    "SmallDisk",
    "Subprocess",
    "append",
    "closes_within",
    "exchange",
    "dirty_entities",
    "free_port",
    "hold_views",
    "import_simulation",
    "metric_values",
    "query_dicts",
    "read_answer",
    "refresh_views",
    "refreshed_views",
    "serve_command",
    "settle_views",
    "spec_example_urls",
    "stored",
]

#: The repository (tests, bench and docs live beside the package).
REPO = Path(__file__).resolve().parent.parent
#: The vendor's published spec, vendored so the suite runs anywhere.
SPEC = REPO / "tests" / "fixtures" / "pbx-webhooks.txt"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spec_example_urls() -> list[str]:
    """The 17 example URLs of the vendor's spec, as published."""
    return [line.strip() for line in SPEC.read_text().splitlines() if line.startswith("http://server/")]


# ---- processes -------------------------------------------------------------------------


class Subprocess:
    """A web app in a subprocess on a free port of 127.0.0.1, ready once ``/healthz`` answers 200.

    Its output goes to ``log_path``; :meth:`log` reads it for failure messages.
    """

    def __init__(self, cmd: Sequence[str], log_path: Path, port: int, *, cwd: Path | None = None,
                 env: dict[str, str] | None = None, name: str = "serve",
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Send ``sig`` (SIGTERM: a graceful stop), wait, and return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class ServeProcess(Subprocess):
    """``pbx-analytics serve`` on the embedded engine at ``data_dir``, as a PBX would see it."""

    def __init__(self, data_dir: Path, *extra_args: str, env: dict[str, str] | None = None,
                 timeout: float = 60.0, cwd: Path | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        port = free_port()
        self.dsn = f"chdb://{data_dir}"
        #: ClickHouse's HTTP interface of this serve (a free port, never the default 8123).
        self.query_port = free_port()
        self.query_url = f"http://127.0.0.1:{self.query_port}"
        cmd = [*serve_command(port, self.query_port), "--clickhouse", self.dsn, *extra_args]
        super().__init__(cmd, data_dir.parent / f"serve-{port}.log", port, env=env, cwd=cwd,
                         preexec_fn=preexec_fn)
        self.wait_ready(timeout)


def serve_command(port: int, query_port: int) -> list[str]:
    """``pbx-analytics serve`` on ``port``, its query interface on ``query_port`` (never the
    default 8123, which every run on the machine would share)."""
    return [sys.executable, "-m", "ingest", "serve", "--port", str(port), "--query-port", str(query_port)]


# ---- a full disk --------------------------------------------------------------------------


class SmallDisk:
    """A real filesystem of ``size`` bytes at ``path`` (tmpfs), to fill and free in a test.

    Mounting needs root with CAP_SYS_ADMIN (this sandbox; CI run as root on a VM); where it is
    refused, :meth:`mount` returns None and the tests run on a file-size limit only
    (:func:`file_size_limit`, :func:`limit_file_size`), which makes the same writes fail
    (``EFBIG``, which the spool treats as ``ENOSPC``) without a filesystem of its own.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ballast = path / "ballast"

    @classmethod
    def mount(cls, path: Path, size: int) -> SmallDisk | None:
        path.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):  # no mount command
            return None
        return cls(path) if done.returncode == 0 else None

    @staticmethod
    @functools.cache
    def can_mount() -> bool:
        """Whether this process may mount a tmpfs (tried once, on a scratch directory)."""
        with tempfile.TemporaryDirectory() as scratch:
            disk = SmallDisk.mount(Path(scratch), 1 << 20)
            if disk is None:
                return False
            disk.unmount()
            return True

    def fill(self) -> int:
        """Write the ballast file until the disk is full; the bytes it took."""
        chunk = bytes(1 << 16)
        written = 0
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        return written
                    chunk = chunk[: len(chunk) // 2]  # the last pages, down to the byte
        finally:
            os.close(fd)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def make_room(self) -> None:
        self.ballast.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def file_size_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn`` that lets the process write no file beyond ``limit`` bytes (soft
    RLIMIT_FSIZE; Python ignores SIGXFSZ, so a write past it fails with ``EFBIG``). The hard limit
    stays, so :func:`lift_file_size_limit` can lift it from outside."""

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return preexec


def limit_file_size(pid: int, limit: int) -> None:
    """:func:`file_size_limit` on a running process ("the disk fills now")."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]))


def lift_file_size_limit(pid: int) -> None:
    """Undo :func:`file_size_limit` on a running process ("room again")."""
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


# ---- raw HTTP over real sockets (what a PBX, or an attacker, sends) -------------------------


def read_answer(fp: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer from a socket's binary file: (status, headers, body); (0, {}, b'') if
    the connection closed (or was reset) before an answer. Bodies with Content-Length only, as
    the service sends them."""
    try:
        line = fp.readline()
        if not line:
            return 0, {}, b""
        status = int(line.split(b" ", 2)[1])
        headers = {}
        while (field := fp.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = field.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, fp.read(int(headers.get("content-length", 0)))
    except ConnectionResetError:
        return 0, {}, b""


def exchange(port: int, request: bytes, source: str = "127.0.0.1", timeout: float = 10.0,
             host: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` (raw bytes) on a new connection from ``source``; its answer (``read_answer``)."""
    with socket.create_connection((host, port), timeout=timeout, source_address=(source, 0)) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read what it said
        with sock.makefile("rb") as fp:
            return read_answer(fp)


def closes_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes ``sock`` (EOF or reset; anything it sends is read and
    dropped), or None if it is still open after ``seconds``."""
    start = time.monotonic()
    sock.settimeout(0.05)
    while (elapsed := time.monotonic() - start) < seconds:
        try:
            if not sock.recv(65536):
                return elapsed
        except TimeoutError:
            continue
        except OSError:
            return elapsed
    return None


def metric_values(url: str) -> dict[str, float]:
    """``GET /metrics`` of a running service as {'name{labels}': value}."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, number = line.rpartition(" ")
            values[key] = float(number)
    return values


# ---- the engine -------------------------------------------------------------------------


def query_dicts(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Query results as dicts (column name -> value)."""
    result = client.query(sql, parameters=parameters)
    return [dict(zip(result.column_names, r)) for r in result.result_rows]


def stored(dsn: str, sql: str = f"SELECT * FROM {DATABASE}.events ORDER BY received_at, event",
           parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of a query on the engine at ``dsn``, as dicts; the engine is opened for it and closed
    (so only once the service that held it has stopped)."""
    client = clickhouse.connect(dsn)
    try:
        return query_dicts(client, sql, parameters)
    finally:
        client.close()


def refreshed_views(client: Client) -> list[str]:
    """The refreshable materialized views of the schema, as ``pbx.<name>``."""
    return [f"{DATABASE}.{r[0]}" for r in client.query(
        f"SELECT view FROM system.view_refreshes WHERE database = '{DATABASE}' ORDER BY view").result_rows]


def hold_views(client: Client) -> None:
    """Stop the refreshes' schedule on this engine (a running one is cancelled): only
    :func:`refresh_views` runs them from now on.

    A scheduled refresh running while a test inserts may read the insert half
    committed; production recomputes what it computed within the commit margin
    after an arrival, but :func:`settle_views` sets that margin to 0, so a test
    engine must not refresh behind the test's back.
    """
    client.command("SYSTEM STOP VIEWS")
    while client.query(f"SELECT count() FROM system.view_refreshes WHERE database = '{DATABASE}' "
                       "AND status NOT IN ('Disabled', 'Scheduled')").result_rows[0][0]:
        time.sleep(0.02)


def refresh_views(client: Client) -> None:
    """Run every refreshable view once now and wait for it (what the schedule does every minute).

    A scheduled refresh may be running, started before the caller's last
    insert: wait for it first, so the one requested here sees everything.
    Views held by :func:`hold_views` run once and stay held.
    A refresh that failed raises, with the engine's message.
    """
    held = {f"{DATABASE}.{r[0]}" for r in client.query(
        f"SELECT view FROM system.view_refreshes WHERE database = '{DATABASE}' AND status = 'Disabled'").result_rows}
    views = refreshed_views(client)
    for view in views:
        if view in held:
            client.command(f"SYSTEM REFRESH VIEW {view}")  # (queued: runs when started)
            client.command(f"SYSTEM START VIEW {view}")
        else:
            try:
                client.command(f"SYSTEM WAIT VIEW {view}")
            except Exception as exc:  # noqa: BLE001 - checked: only a failed scheduled run is let pass
                # A scheduled run that failed (chDB's first refresh at engine open can: "Database
                # system does not exist", and the next one succeeds): the one requested below counts.
                if "REFRESH_FAILED" not in str(exc):
                    raise
            client.command(f"SYSTEM REFRESH VIEW {view}")
    failed = []
    for view in views:
        name = view.split(".", 1)[1]
        while True:  # (a started view may run the schedule's overdue run and then the requested one)
            client.command(f"SYSTEM WAIT VIEW {view}")
            [state] = query_dicts(client, "SELECT status, exception FROM system.view_refreshes "
                                          f"WHERE database = '{DATABASE}' AND view = '{name}'")
            if state["status"] != "Running":
                break
        if state["exception"]:
            failed.append((view, state["exception"]))
        if view in held:
            client.command(f"SYSTEM STOP VIEW {view}")
    if failed:
        raise RuntimeError(f"refresh failed: {failed}")


def import_simulation(config: SimConfig, directory: Path) -> Client:
    """A fresh engine under ``directory``, every migration applied, the refreshes held
    (:func:`hold_views`), and the access log of the simulation ``config`` imported: nothing is stored by a refresh yet, every call and agent is read live."""
    from ingest.backfill.importer import import_files
    from ingest.simulation import simulate, write_access_log
    from ingest.storing import migrations

    log = directory / "access.log"
    write_access_log(log, simulate(config).events)
    client = clickhouse.connect(f"chdb://{directory / 'chdata'}")
    migrations.apply_migrations(client)
    hold_views(client)
    import_files(client, [log])
    return client


def dirty_entities(client: Client) -> int:
    """How many calls and agents have figures the views compute live, not stored yet."""
    return client.query(
        f"SELECT (SELECT count() FROM {DATABASE}.dirty_calls_live) "
        f"+ (SELECT count() FROM {DATABASE}.dirty_agents_live)").result_rows[0][0]


def settle_views(client: Client, rounds: int = 50) -> None:
    """Store every figure now: run the refreshes until no call or agent is dirty.

    For test engines: the refreshes' schedule is held (:func:`hold_views`), and
    after a first round under the engine's commit margin (it recomputes what a
    scheduled run racing an insert may have missed), the margin
    (docs/metrics.md#refresh) is set to 0 on this engine: the caller's inserts
    have all committed, so a refresh leaves what it computed clean instead of
    computing it again in the next runs.
    """
    hold_views(client)
    refresh_views(client)
    client.command(f"INSERT INTO {DATABASE}.refresh_settings (name, value) VALUES ('commit_margin_ms', 0)")
    for _ in range(rounds):
        if dirty_entities(client) == 0:
            return
        refresh_views(client)
    raise RuntimeError(f"still {dirty_entities(client)} dirty after {rounds} refreshes")


# ---- the spool ----------------------------------------------------------------------------


def append(spool: Spool, payloads: Sequence[bytes], rows: Sequence[Any] | None = None) -> None:
    """Append ``payloads`` through the service's own path and return once they are durable.

    :meth:`Spool.append` on an event loop, all at once, so they form group
    commits exactly as concurrent webhooks do; ``rows`` (what each payload
    encodes) go with them as the service hands them to the writer.
    """

    async def append_all() -> None:
        spool.start(asyncio.get_running_loop())
        given = rows if rows is not None else [None] * len(payloads)
        await asyncio.gather(*(spool.append(p, r) for p, r in zip(payloads, given)))

    asyncio.run(append_all())


def npm_installed(directory: Path, probe: str) -> Path:
    """``directory``'s npm packages, installed from its lock file on first use (``npm ci``; .ci/run
    does it ahead): ``directory / "node_modules" / probe``, which must exist afterwards."""
    target = directory / "node_modules" / probe
    if not target.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed: .ci/run installs Node.js and npm (apt-get install nodejs npm)"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=directory, check=True, capture_output=True,
                       timeout=600)
    assert target.exists(), f"npm ci in {directory} did not install {probe}"
    return target
