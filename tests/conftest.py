"""Fixtures: a fresh embedded ClickHouse engine per test, and the real service.

chDB hosts one engine path per process; a test's engine is closed before the
next test opens its own path, so tests never see each other's data. The
harness the tests share with ``bench/`` (serve subprocess, stored rows, view
refresh, ports) is ``ingest.testing``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from ingest.config import Settings
from ingest.storing import clickhouse, migrations
from ingest.testing import ServeProcess, hold_views


@pytest.fixture
def dsn(tmp_path: Path) -> str:
    """An embedded-engine DSN in the test's own directory."""
    return f"chdb://{tmp_path / 'chdata'}"


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine directory with every ``sql/`` migration applied, made once: tests start from copies.

    Applying the migrations analyses every view (seconds); copying the closed
    engine's files takes milliseconds.
    """
    path = tmp_path_factory.mktemp("migrated") / "chdata"
    client = clickhouse.connect(f"chdb://{path}")
    migrations.apply_migrations(client)
    client.close()
    return path


@pytest.fixture
def ch(dsn: str, migrated_template: Path, tmp_path: Path) -> Iterator[Client]:
    """A migrated embedded engine: database ``pbx`` with every ``sql/`` migration applied."""
    shutil.copytree(migrated_template, tmp_path / "chdata", symlinks=True)  # (the engine links relatively)
    client = clickhouse.connect(dsn)
    hold_views(client)  # (refreshes run when a test asks: ingest.testing.refresh_views)
    yield client
    client.close()


@pytest.fixture
def settings(dsn: str) -> Settings:
    """Service settings for in-process app tests: small, fast batches."""
    return Settings(clickhouse_url=dsn, batch_size=100, flush_interval=0.05)


@pytest.fixture
def serve(tmp_path: Path, migrated_template: Path) -> Iterator[ServeProcess]:
    """A running ``serve`` on the embedded engine under the test's directory (migrated already)."""
    shutil.copytree(migrated_template, tmp_path / "chdata", symlinks=True)  # (the engine links relatively)
    proc = ServeProcess(tmp_path / "chdata")
    yield proc
    proc.stop()
