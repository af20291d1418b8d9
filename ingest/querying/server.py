"""The query interface's own HTTP server, beside the webhook server in the same process.

It runs uvicorn on an event loop in a thread of its own, with the queries on a pool of
threads of their own: a query never runs on, nor waits for, the loop that answers webhooks,
and the webhook server may be any ASGI server (uvicorn today, granian later) without this
one changing. The process's engine is shared: chDB serves every connection of the process
from the one engine that owns the data directory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn

from ingest.config import Settings
from ingest.priority import below_service, set_thread_nice
from ingest.querying import access
from ingest.querying.access import endpoint_url
from ingest.querying.engine import Engine
from ingest.querying.http import QueryApp
from ingest.storing.destination import embedded_path

__all__ = ["QueryServer"]

log = logging.getLogger(__name__)


def data_dir(settings: Settings) -> Path:
    """The embedded engine's data directory, spelled as chDB compares paths (resolved)."""
    return embedded_path(settings.clickhouse_url)


def _niced(value: int | None, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` on a query thread at nice ``value``, and the thread left at it. Set on every
    call: where the engine may change priorities (``CAP_SYS_NICE``, e.g. root), ClickHouse
    applies the ``os_thread_priority`` a query sets (a reader may) to its thread and then resets
    that thread to nice 0, which for a service running niced is *above* its webhook threads."""
    set_thread_nice(value)
    try:
        return fn(*args)
    finally:
        set_thread_nice(value)


class QueryServer:
    """ClickHouse's HTTP interface on ``settings.query_host:query_port`` (docs/querying.md)."""

    def __init__(self, settings: Settings, holder: Any = None,
                 import_yield: Callable[[], float] | None = None) -> None:
        self.settings = settings
        #: How much an insert's client should yield to the webhooks now (None: not said).
        self.import_yield = import_yield
        #: A client that keeps the engine open for the service's lifetime (closed at ``stop``).
        self._holder = holder
        self.data_dir = data_dir(settings)
        #: Nice value of every query thread (this interface's; the engine's are kept there by
        #: ``ingest.priority.EngineThreads``): ``query_nice`` below the service's own; None: left alone.
        self.nice = below_service(settings.query_nice)
        # The floor of a reader's own os_thread_priority (None: 0, the engine's default).
        limits = access.Limits(settings.query_max_execution_time, settings.query_max_memory_usage,
                               settings.query_max_threads, self.nice or 0)
        self.engine = Engine(str(self.data_dir), limits, settings.query_max_result_bytes)
        self._pool = ThreadPoolExecutor(settings.query_max_concurrent + 1, thread_name_prefix="pbx-query",
                                        initializer=set_thread_nice, initargs=(self.nice,))
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.owner_file: access.OwnerFile | None = None
        self.port = settings.query_port

    def start(self) -> None:
        """Bind (errors here stop ``serve``), write the owner's file, serve in a thread."""
        s = self.settings
        self.engine.open()
        family = socket.AF_INET6 if ":" in s.query_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((s.query_host, s.query_port))
        except OSError as exc:
            sock.close()
            raise OSError(f"the query interface cannot listen on {s.query_host}:{s.query_port}: {exc.strerror} "
                          f"(set --query-port, or 0 to turn it off)") from None
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        self.owner_file = access.OwnerFile(self.data_dir, endpoint_url(s.query_host, self.port))
        users = access.Users(s.query_user, s.query_password, self.owner_file.key)
        self.owner_file.write()
        app = QueryApp(self.engine, users, s.query_max_concurrent, s.query_max_execution_time, self._run,
                       self.import_yield)
        config = uvicorn.Config(app, log_config=None, access_log=s.access_log, lifespan="off", server_header=False,
                                # a bounded number of connections; each holds one request at a time
                                limit_concurrency=256, timeout_keep_alive=10)
        self._server = uvicorn.Server(config)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="pbx-query-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        log.info("query interface listening", extra={"url": self.owner_file.url, "user": s.query_user})

    def _serve(self, ready: threading.Event) -> None:
        set_thread_nice(self.nice)
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        ready.set()
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))  # type: ignore[union-attr]
        finally:
            loop.close()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(_niced, self.nice, fn, *args))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let running answers finish for up to ``timeout`` s, close."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()
        if self.owner_file is not None:
            self.owner_file.remove()
        if self._holder is not None:
            self._holder.close()
            self._holder = None
