"""Structured logging: one JSON object per line on stderr.

Fields passed as ``extra={...}`` become keys of the object. The service logs
problems (rejected requests, insert failures, shutdown) and never one line
per accepted webhook unless the access log is switched on. A dependency that
fails and retries (ClickHouse, the spool's disk) is reported by
:class:`StateLog`: one line when it starts failing, one when it is back, not
one per retry. The client libraries' own per-retry warnings (urllib3,
clickhouse-connect) are shown only at ``DEBUG``: the error they warn about
reaches our code, which says it once and in its own words.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from typing import Any

import msgspec

__all__ = ["StateLog", "configure"]

# Attributes every LogRecord has; anything else came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName", "color_message"}
_encode = msgspec.json.Encoder(enc_hook=str).encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return _encode(out).decode()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on ``sys.stderr`` as it is when each record is written, not when configured
    (a command run in-process, as the tests run them, may find another stderr later)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure(level: str = "INFO") -> None:
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers: keep errors, route through our formatter.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # One warning per failed request or connection attempt; the failure itself is raised to us.
    for name in _RETRY_CHATTER:
        logging.getLogger(name).setLevel(logging.NOTSET if level.upper() == "DEBUG" else logging.ERROR)


#: Loggers of the client libraries that warn on every failed attempt (a server that is down
#: made 54 lines in 26 s): only at DEBUG.
_RETRY_CHATTER = ("urllib3.connectionpool", "clickhouse_connect.driver._backend.http_sync")


class StateLog:
    """One log line when something starts failing, one when it works again; never one per retry.

    Call :meth:`failed` on every failed attempt and :meth:`ok` on every success.
    The first failure logs ``down`` (error level, with the error); the first
    success after it logs ``up`` (with how long and how many attempts failed).
    Flapping is rate-limited: a new ``down`` line comes at most once per
    ``interval`` seconds -- a failure sooner is logged at the first failed
    attempt after the interval, if it still fails then, with how many
    down/up cycles went unlogged (``flaps``). An ``up`` line is logged exactly
    when its ``down`` line was, so the last line always tells the state.
    Thread-safe.
    """

    def __init__(self, logger: logging.Logger, down: str, up: str, *, interval: float = 60.0) -> None:
        self._log, self._down_msg, self._up_msg, self._interval = logger, down, up, interval
        self._lock = threading.Lock()
        #: The current error (None: working).
        self.error: str | None = None
        self._since = 0.0  # monotonic time the current failure started
        self._attempts = 0  # failed attempts in the current failure
        self._logged_down = False  # the current failure has its down line
        self._last_down_line = -float("inf")
        self._flaps = 0  # down/up cycles since the last down line that were not logged

    def failed(self, error: str, **fields: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if self.error is None:
                self._since, self._attempts, self._logged_down = now, 0, False
            self.error = error
            self._attempts += 1
            if self._logged_down or now - self._last_down_line < self._interval:
                return
            self._logged_down, self._last_down_line = True, now
            flaps, self._flaps = self._flaps, 0
        self._log.error(self._down_msg, extra={"error": error, **fields, **({"flaps": flaps} if flaps else {})})

    def ok(self, **fields: Any) -> None:
        if self.error is None:  # the common case: no lock, no work
            return
        with self._lock:
            if self.error is None:
                return
            error, attempts, logged = self.error, self._attempts, self._logged_down
            seconds = round(time.monotonic() - self._since, 1)
            self.error = None
            if not logged:
                self._flaps += 1
                return
        self._log.warning(self._up_msg, extra={"down_s": seconds, "failed_attempts": attempts,
                                               "last_error": error, **fields})
