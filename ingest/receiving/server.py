"""How ``serve`` runs the front door: uvicorn with the front door's protocol.

:func:`uvicorn_config` is the one place the server is set up, for the CLI and
for anything that runs the service in-process (tests, benchmarks): the ASGI
app (``app.FrontDoor``), its connection limits (``edge.Edge``) and the
protocol that enforces them and answers webhook GETs directly
(``protocol.FrontDoorProtocol``).

Why uvicorn and not granian, which parses HTTP in Rust and runs a bare
Litestar app about twice as fast: granian gives Python no hook per
connection, so none of the per-client limits, accept-time refusals or their
counts could exist; and with the fast path a webhook never reaches the
framework, so the framework's speed no longer bounds ours (the measured
choice is in docs/benchmarks.md, "The front door").
"""

from __future__ import annotations

import logging

import uvicorn

from ingest.config import Settings
from ingest.receiving.app import FrontDoor, create_app
from ingest.receiving.edge import Edge
from ingest.receiving.protocol import protocol_class

__all__ = ["uvicorn_config"]

log = logging.getLogger(__name__)


def uvicorn_config(settings: Settings, app: FrontDoor | None = None, **overrides: object) -> uvicorn.Config:
    """The uvicorn configuration of ``serve`` for ``settings`` (``app``: one already built)."""
    door = app or create_app(settings)
    edge = Edge(settings, door.service.metrics, door.service.log_budget)
    log.debug("edge limits", extra=edge.info())
    options: dict[str, object] = dict(
        host=settings.host,
        port=settings.port,
        http=protocol_class(door, edge),
        ws="none",
        # Each request is logged by the front door itself, its target redacted (app.access_line).
        access_log=False,
        log_config=None,
        lifespan="on",
        server_header=False,
        # X-Forwarded-For only from the configured proxies: it decides who passes --allow-cidrs.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
        # The edge closes idle connections (keepalive_timeout); uvicorn's own timer is not armed.
        timeout_keep_alive=max(1, round(settings.keepalive_timeout)),
        # The writer drains on shutdown; uvicorn only waits for open requests.
        timeout_graceful_shutdown=10,
    )
    options.update(overrides)
    return uvicorn.Config(door, **options)  # type: ignore[arg-type]
