"""The commands' way to an embedded engine that a running ``serve`` holds (issue 12).

The embedded engine allows one process per data directory, and while ``serve`` runs that
process is the service. So ``pbx-analytics sql``, ``migrate`` and ``import`` look for the
service first and go through its ClickHouse HTTP interface, with a clickhouse-connect client
(the same client API as the engine's own, so every command runs unchanged on either):

* the service's ``<data directory>/service.json`` (written at start, mode 0600, removed at
  stop; ``access.OwnerFile``) names the endpoint and the owner's key. Whoever can read it is
  the local owner, and gets the owner's rights, as on the engine itself;
* a file left by a service that died (``kill -9``: its pid is gone), or an endpoint that does
  not answer, means no service: the command opens the engine directly, as it always did;
* a file the user cannot read belongs to another user's service: the command is that
  service's read-only user (``PBX_QUERY_USER``/``PBX_QUERY_PASSWORD`` at
  ``PBX_QUERY_HOST``:``PBX_QUERY_PORT``, as a SQL client would be), so it may read, not write.

Nothing to configure: the same DSN (``--clickhouse``, ``PBX_CLICKHOUSE_URL``) finds the
service or the engine. Server DSNs (``http(s)://``) are used as they are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from ingest.config import Settings
from ingest.querying.access import OwnerFile, endpoint_url
from ingest.storing import clickhouse
from ingest.storing.destination import embedded_path

__all__ = ["BACKGROUND_NICE", "Connection", "Reader", "RunningService", "connect", "find_service"]

#: Seconds a request through the service may take (an import's batch, an analyst's query).
TIMEOUT_S = 3600
#: Nice value a long command (``import``) takes while it works beside a running service, as the
#: service's query threads do by default (``PBX_QUERY_NICE``): the webhooks keep the CPU when
#: both want it (bench/import_load.py: unniced, the webhooks' p50 went from 6 to 620 ms on a
#: loaded 2-CPU machine; niced, it stayed at the baseline's).
BACKGROUND_NICE = 10


#: Settings of every request the owner's commands send.
_OWNER_SETTINGS = {"max_execution_time": 0}


@dataclass(frozen=True)
class RunningService:
    """A ``serve`` holding an embedded data directory, as its ``service.json`` names it."""

    url: str
    user: str
    key: str
    pid: int


@dataclass(frozen=True)
class Reader:
    """The read-only user of the query interface, as the settings name it (for a user who does
    not own the service)."""

    url: str
    user: str
    password: str

    @classmethod
    def of(cls, settings: Settings) -> Reader:
        return cls(endpoint_url(settings.query_host, settings.query_port), settings.query_user,
                   settings.query_password)


@dataclass
class Connection:
    """A client, and what it is connected to."""

    client: Client
    #: The service the client goes through; None: the engine (or server) directly.
    service: RunningService | None = None
    #: Connected as the read-only user of another user's service.
    reader: bool = False

    def close(self) -> None:
        self.client.close()


class NotOwner(PermissionError):
    """The service holding the data directory belongs to another user."""


def find_service(data_dir: os.PathLike[str] | str) -> RunningService | None:
    """The live service that holds ``data_dir``, or None (none, or it died and left its file).

    Raises :class:`NotOwner` when the file exists but this user may not read it.
    """
    path = os.path.join(data_dir, OwnerFile.NAME)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise NotOwner(f"the service holding {data_dir} is run by another user") from exc
    try:
        data = json.loads(text)
        service = RunningService(str(data["url"]), str(data["user"]), str(data["key"]), int(data["pid"]))
    except (ValueError, KeyError, TypeError):
        return None  # being written (it is replaced atomically, so: damaged) -- treat as absent
    return service if _alive(service.pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _http(url: str, user: str, password: str, settings: dict[str, Any] | None = None) -> Client:
    parts = urlsplit(url)
    return clickhouse_connect.get_client(
        host=parts.hostname, port=parts.port, username=user, password=password, settings=settings,
        # Loopback: compressing costs both processes CPU for nothing.
        compress=False, autogenerate_session_id=False, send_receive_timeout=TIMEOUT_S,
    )


def connect(dsn: str, reader: Reader | None = None) -> Connection:
    """A client for ``dsn``: through the service that holds its embedded engine if one runs,
    else the engine (or server) itself. ``reader``: how to reach another user's service (without
    it, :class:`NotOwner` is raised)."""
    if not dsn.startswith("chdb:"):
        return Connection(clickhouse.connect(dsn))
    data_dir = embedded_path(dsn)
    try:
        service = find_service(data_dir)
    except NotOwner:
        if reader is None:
            raise
        return Connection(_http(reader.url, reader.user, reader.password),
                          RunningService(reader.url, reader.user, "", 0), reader=True)
    if service is not None:
        try:
            # The owner's rights as on the engine itself: no time limit (a migration that fills a
            # table, a long analysis); the interface's other defaults stay (threads, nice).
            return Connection(_http(service.url, service.user, service.key, _OWNER_SETTINGS), service)
        except OperationalError:
            pass  # it stopped meanwhile (or its pid was reused): the engine is free, or says who holds it
    return Connection(clickhouse.connect(dsn))
