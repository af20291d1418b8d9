"""The request target (``/path?query``): which webhook it names, and how it is logged.

Pure functions on bytes, shared by both ways a request reaches the service
(the protocol's fast path and the ASGI app), so both read a URL the same way:

* :func:`route` -- ``/<event>`` or, with a shared secret, ``/<token>/<event>``
  (the token may itself contain ``/``: everything before the last segment is
  the token, so a base64 secret works in the path as sent or percent-encoded);
* :func:`redact` -- the target as it may be logged: the value of every
  ``token`` parameter and the path's token replaced by ``***``, whatever their
  encoding (structure first, then any literal or percent-encoded occurrence);
* :func:`normalize_request_line` -- a request line whose target carries raw
  spaces or non-ASCII bytes (a PBX that builds URLs without encoding them:
  ``caller_name=Jan Novák``) made parseable by percent-encoding those bytes,
  as nginx accepts them.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote, quote_plus, unquote, unquote_plus

__all__ = ["NOT_WEBHOOK_PATHS", "normalize_request_line", "redact", "route", "target_length"]

#: Single-segment paths that are not webhooks (the Litestar app answers them).
NOT_WEBHOOK_PATHS = frozenset({b"/healthz", b"/metrics"})

_VERSIONS = (b" HTTP/1.1", b" HTTP/1.0")
_UNSAFE = re.compile(rb"[ \x80-\xff]")


def _escape(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match.group()[0]


def normalize_request_line(line: bytes) -> bytes:
    """``line`` (without its line end) with raw spaces and non-ASCII bytes of the target
    percent-encoded, if it is ``METHOD SP target SP HTTP/1.x``; else ``line`` unchanged
    (the parser then judges it). Control characters are left for the parser to refuse."""
    if not line.endswith(_VERSIONS):
        return line
    method, _, rest = line.partition(b" ")
    target = rest[:-9]
    return method + b" " + _UNSAFE.sub(_escape, target) + line[-9:]


def target_length(raw_path: bytes, query: bytes) -> int:
    """Bytes of the request target an ASGI scope came from (``?`` counted when there is a query)."""
    return len(raw_path) + (len(query) + 1 if query else 0)


def route(raw_path: bytes, token_in_path: bool) -> tuple[str, str | None] | None:
    """``(event, path token)`` of a webhook path, or None for a path that is not one.

    ``/<event>`` -> (event, None); with ``token_in_path`` (a secret is configured),
    ``/<token>/<event>`` -> (event, token), percent-decoded (``+`` is a plus sign in a
    path). The event need not be a known one: the service answers 404 for it.
    """
    if raw_path in NOT_WEBHOOK_PATHS:
        return None
    if len(raw_path) > 1 and raw_path.endswith(b"/"):
        raw_path = raw_path[:-1]
    head, _, last = raw_path.rpartition(b"/")
    event = last.decode("utf-8", "replace")
    if b"%" in last:
        event = unquote(event, errors="replace")
    if not head:
        return event, None
    if not token_in_path:
        return None
    return event, unquote(head[1:].decode("utf-8", "replace"), errors="replace")


def redact(target: str, secret: str = "", token_in_path: bool = False) -> str:
    """``target`` as it may appear in a log line or an error message."""
    path, sep, query = target.partition("?")
    if token_in_path:
        stripped = path.rstrip("/")
        head, slash, last = stripped.rpartition("/")
        if head:
            path = "/***" + slash + last + path[len(stripped):]
    if "token" in query.lower() or "%" in query:
        fields = query.split("&")
        for i, field in enumerate(fields):
            name, eq, _ = field.partition("=")
            if eq and unquote_plus(name, errors="replace") == "token":
                fields[i] = name + "=***"
        query = "&".join(fields)
    text = path + sep + query
    return _secret_forms(secret).sub("***", text) if secret else text


@functools.lru_cache(maxsize=4)
def _secret_forms(secret: str) -> re.Pattern[str]:
    """The secret as sent and in each percent-encoding a client may use (any hex case)."""
    forms = sorted({secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret)}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, forms)), re.IGNORECASE)
