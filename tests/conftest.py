"""Fixtures: a fresh embedded ClickHouse engine per test, and the real service.

chDB hosts one engine path per process; a test's engine is closed before the
next test opens its own path, so tests never see each other's data. The
harness the tests share with ``bench/`` (serve subprocess, stored rows, view
refresh, ports) is ``ingest.testing``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
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


@pytest.fixture(scope="session")
def migrated_copy(migrated_template: Path) -> Callable[[Path], Path]:
    """``migrated_copy(path)``: a new engine directory at ``path`` with every migration applied
    (a copy of the template), for tests whose subject is not the migrations themselves: a
    ``serve`` or ``import`` on it starts without applying them (seconds each on a loaded machine)."""

    def copy(path: Path) -> Path:
        shutil.copytree(migrated_template, path, symlinks=True)  # (the engine links relatively)
        return path

    return copy


@pytest.fixture
def migrated_dsn(dsn: str, migrated_copy: Callable[[Path], Path], tmp_path: Path) -> str:
    """``dsn``, its engine migrated already (not opened: for a command under test to open)."""
    migrated_copy(tmp_path / "chdata")
    return dsn


@pytest.fixture
def ch(migrated_dsn: str) -> Iterator[Client]:
    """A migrated embedded engine: database ``pbx`` with every ``sql/`` migration applied."""
    client = clickhouse.connect(migrated_dsn)
    hold_views(client)  # (refreshes run when a test asks: ingest.testing.refresh_views)
    yield client
    client.close()


@pytest.fixture
def settings(migrated_dsn: str) -> Settings:
    """Service settings for in-process app tests: small, fast batches, on the test's engine migrated
    already (the app's start applies no migration then)."""
    return Settings(clickhouse_url=migrated_dsn, batch_size=100, flush_interval=0.05)


@pytest.fixture
def serve(tmp_path: Path, migrated_copy: Callable[[Path], Path]) -> Iterator[ServeProcess]:
    """A running ``serve`` on the embedded engine under the test's directory (migrated already)."""
    proc = ServeProcess(migrated_copy(tmp_path / "chdata"))
    yield proc
    proc.stop()
