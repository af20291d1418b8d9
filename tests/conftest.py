"""Shared fixtures: a fresh embedded ClickHouse engine per test, and the real service.

chDB hosts one engine path per process; a test's engine is closed before the
next test opens its own path, so tests never see each other's data.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clickhouse_connect.driver.client import Client

from ingest import db
from ingest.config import Settings

REPO = Path(__file__).resolve().parent.parent
#: The vendor's published spec, vendored so the suite runs anywhere; the copy is
#: checked against ../shared/spec when that exists (tests/test_decode.py).
SPEC = REPO / "tests" / "fixtures" / "pbx-webhooks.txt"
SHARED_SPEC = REPO.parent / "shared" / "spec" / "pbx-webhooks.txt"


@pytest.fixture
def dsn(tmp_path: Path) -> str:
    """An embedded-engine DSN in the test's own directory."""
    return f"chdb://{tmp_path / 'chdata'}"


@pytest.fixture
def ch(dsn: str) -> Iterator[Client]:
    """A migrated embedded engine: database ``pbx`` with every ``sql/`` migration applied."""
    client = db.connect(dsn)
    db.apply_migrations(client)
    yield client
    client.close()


@pytest.fixture
def settings(dsn: str) -> Settings:
    """Service settings for in-process app tests: small, fast batches."""
    return Settings(clickhouse_url=dsn, batch_size=100, flush_interval=0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``pbx-analytics serve`` in a subprocess, as a PBX would see it."""

    def __init__(self, data_dir: Path, *extra_args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        #: ClickHouse's HTTP interface of this serve (a free port, never the default 8123).
        self.query_port = free_port()
        self.query_url = f"http://127.0.0.1:{self.query_port}"
        self.dsn = f"chdb://{data_dir}"
        self.log_path = data_dir.parent / f"serve-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", "serve", "--port", str(self.port), "--query-port", str(self.query_port),
             "--clickhouse", self.dsn, *extra_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"serve not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    """A running ``serve`` on the embedded engine under the test's directory."""
    proc = ServeProcess(tmp_path / "chdata")
    yield proc
    proc.stop()


def spec_example_urls() -> list[str]:
    """The 17 example URLs of the vendor's spec, as published."""
    return [line.strip() for line in SPEC.read_text().splitlines() if line.startswith("http://server/")]
