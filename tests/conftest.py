"""Fixtures: a fresh embedded ClickHouse engine per test, and the real service.

chDB hosts one engine path per process; a test's engine is closed before the
next test opens its own path, so tests never see each other's data. The
harness the tests share with ``bench/`` (serve subprocess, stored rows, view
refresh, ports) is ``ingest.testing``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from ingest.config import Settings
from ingest.storing import clickhouse, migrations
from ingest.testing import ServeProcess


@pytest.fixture
def dsn(tmp_path: Path) -> str:
    """An embedded-engine DSN in the test's own directory."""
    return f"chdb://{tmp_path / 'chdata'}"


@pytest.fixture
def ch(dsn: str) -> Iterator[Client]:
    """A migrated embedded engine: database ``pbx`` with every ``sql/`` migration applied."""
    client = clickhouse.connect(dsn)
    migrations.apply_migrations(client)
    yield client
    client.close()


@pytest.fixture
def settings(dsn: str) -> Settings:
    """Service settings for in-process app tests: small, fast batches."""
    return Settings(clickhouse_url=dsn, batch_size=100, flush_interval=0.05)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    """A running ``serve`` on the embedded engine under the test's directory."""
    proc = ServeProcess(tmp_path / "chdata")
    yield proc
    proc.stop()
