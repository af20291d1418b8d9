"""The answers the webhook front door gives, each one built once as bytes.

An :class:`Answer` is an HTTP response in both forms the front door needs:
status and header list for an ASGI server, and :meth:`Answer.wire`, the whole
HTTP/1.1 response the protocol's fast path writes to the socket
(``ingest.receiving.protocol``). The ``200`` every accepted webhook gets is
one shared instance; refusals are built when they happen (they are rare, and
their JSON names what was wrong).
"""

from __future__ import annotations

import http
from typing import Any

import msgspec

__all__ = ["OK", "Answer", "refusal"]

_json = msgspec.json.Encoder().encode


class Answer:
    """One HTTP answer. ``reason`` is the refusal's machine-readable reason ('' for a 200)."""

    __slots__ = ("_fields", "_fields_close", "_line", "body", "closes", "headers", "reason", "status")

    def __init__(self, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8",
                 headers: tuple[tuple[bytes, bytes], ...] = (), reason: str = "", close: bool = False) -> None:
        self.status = status
        self.body = body
        self.reason = reason
        #: The connection is closed after this answer (the request was not read to its end).
        self.closes = close
        base = ((b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers)
        self.headers = base + ((b"connection", b"close"),) if close else base
        self._line = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()
        fields = b"".join(name + b": " + value + b"\r\n" for name, value in self.headers)
        self._fields = fields + b"\r\n"
        self._fields_close = self._fields if close else fields + b"connection: close\r\n\r\n"

    def wire(self, server_fields: bytes = b"", close: bool = False) -> bytes:
        """The whole HTTP/1.1 response as bytes: status line, ``server_fields`` (the server's own
        header lines, such as ``date``), this answer's fields (with ``connection: close`` when
        ``close``), body."""
        return self._line + server_fields + (self._fields_close if close else self._fields) + self.body


#: The answer to every accepted webhook.
OK = Answer(200, b"OK\n")


def refusal(status: int, reason: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = (),
            close: bool = False, **fields: Any) -> Answer:
    """The JSON error answer every refusal gets: ``error`` (for people), ``reason`` (for machines),
    and any ``fields`` that say more (``parameter``, ``known_events``...)."""
    body = _json({"error": message, "reason": reason, **fields})
    return Answer(status, body, b"application/json", headers, reason, close)
