"""Structured logging: one JSON object per line on stderr.

Fields passed as ``extra={...}`` become keys of the object. The service logs
problems (rejected requests, insert failures, shutdown) and never one line
per accepted webhook unless the access log is switched on.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys

import msgspec

__all__ = ["configure"]

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
