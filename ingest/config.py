"""Typed settings, read from the environment exactly once, and the commands' options.

``Settings.from_env()`` is the only place that reads ``os.environ``; the CLI
overlays its flags and passes the object down. Every field is documented in
the README's configuration table. ``ImportOptions`` and ``SimulateOptions``
carry the ``import`` and ``simulate`` commands' flags (docs/import.md,
docs/simulator.md), validated on construction like ``Settings``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ingest.backfill.accesslog import FORMATS, offset_function
from ingest.storing.destination import default_spool_dir

__all__ = ["ConfigError", "ImportOptions", "Settings", "SimulateOptions", "default_dsn"]


class ConfigError(ValueError):
    """A setting has a value we cannot run with."""


def default_dsn(data_dir: str | os.PathLike[str] = "data") -> str:
    """The embedded engine under ``./data``: ``chdb:///<absolute path>``."""
    return f"chdb://{Path(data_dir).resolve()}"


@dataclasses.dataclass(frozen=True)
class Settings:
    #: Where events go: ``chdb:///abs/path`` (embedded engine) or
    #: ``http(s)://user:pass@host:port/db`` (a ClickHouse server).
    clickhouse_url: str = dataclasses.field(default_factory=default_dsn)
    #: A ClickHouse cluster (its ``remote_servers`` name): migrations then run ON CLUSTER
    #: with replicated tables behind Distributed ones (docs/scaling.md). Empty: one server.
    clickhouse_cluster: str = ""
    #: Interface and port ``serve`` listens on.
    host: str = "127.0.0.1"
    port: int = 8080
    #: A batch is inserted when it reaches this many rows...
    batch_size: int = 5000
    #: ...or when its oldest row has waited this long (seconds).
    flush_interval: float = 0.5
    #: The durable spool (write-ahead log) a webhook is in before it is acknowledged.
    #: Empty: in the database's own place, never shared by two databases: ``spool`` inside
    #: the embedded engine's data directory (``./data/spool``), ``./spool-<host>-<port>`` for
    #: a ClickHouse server (``ingest.storing.destination``). One process per spool.
    spool_dir: str = ""
    #: Write the unwritten records of a spool taken for another database into this one
    #: (``serve --hand-over-spool``). A decision for one start: a flag, never read from the
    #: environment.
    spool_hand_over: bool = False
    #: Spool size (bytes on disk) at which webhooks get 503 + Retry-After.
    spool_max_bytes: int = 1 << 30
    #: fsync each group commit before acknowledging. Off: survives a process crash,
    #: not a power loss.
    spool_fsync: bool = True
    #: Seconds a group commit waits to collect more webhooks before its fsync. 0: the
    #: group is what arrived during one event-loop iteration plus the previous fsync.
    spool_commit_window: float = 0.0
    #: On SIGTERM, seconds to keep writing the spool to ClickHouse before exiting
    #: (the rest stays in the spool and is written at the next start).
    drain_timeout: float = 10.0
    #: Shared secret the PBX puts in its webhook URLs (``?token=`` or ``/<token>/<event>``).
    #: Empty: no token needed. Set it through the environment, not a flag (flags show in ``ps``).
    token: str = dataclasses.field(default="", repr=False)
    #: Comma-separated CIDRs allowed to send webhooks; empty: any client.
    allow_cidrs: str = ""
    #: Comma-separated proxy addresses whose X-Forwarded-For is trusted for the client
    #: address (uvicorn ``forwarded_allow_ips``); empty: the TCP peer is the client.
    trusted_proxies: str = ""
    #: Request limits: body bytes (413), request-target bytes (path, ``?`` and query: 414),
    #: parameters per request (413), header bytes (names and values summed: 431).
    max_body_bytes: int = 65536
    max_url_bytes: int = 8192
    max_params: int = 100
    max_header_bytes: int = 16384
    #: Connections open at once, in total and per client (an IPv4 address, an IPv6 /64;
    #: ``trusted_proxies`` count only in the total). The excess is closed at accept, counted in
    #: ``pbx_connections_shed_total``.
    max_connections: int = 2048
    max_connections_per_client: int = 128
    #: Seconds a client has to send a request's headers, counted from its connection's accept
    #: or from the first byte after a keep-alive pause; then to send its body; and seconds a
    #: connection may stay idle between two requests. Counted in ``pbx_connections_closed_total``.
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    #: Apply ``sql/`` migrations when ``serve`` starts.
    migrate_on_start: bool = True
    log_level: str = "INFO"
    #: One log line per HTTP request (off: only problems are logged).
    access_log: bool = False
    #: ClickHouse's HTTP interface on the embedded engine (docs/querying.md): interface and
    #: port ``serve`` answers queries on. Port 0 turns it off; with a server url the server
    #: itself is the interface and nothing is started.
    query_host: str = "127.0.0.1"
    query_port: int = 8123
    #: The read-only user (Grafana, analysts) and its password. An empty password is allowed
    #: only while ``query_host`` is a loopback address. Set the password through the
    #: environment, not a flag (flags show in ``ps``).
    query_user: str = "default"
    query_password: str = dataclasses.field(default="", repr=False)
    #: Queries running at once; more wait their turn, the webhooks never do. Default: half the
    #: CPUs, at least 1 (bench/query_load.py: on 2 cores, 2 at once tripled the webhooks' p99).
    query_max_concurrent: int = dataclasses.field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    #: Seconds a read-only query may run (its ``max_execution_time``); a client may lower it.
    query_max_execution_time: float = 60.0
    #: Bytes of one answer (before HTTP compression); a larger result fails with
    #: TOO_MANY_ROWS_OR_BYTES.
    query_max_result_bytes: int = 256 << 20
    #: Memory one read-only query may use (its ``max_memory_usage``); a client may lower it.
    query_max_memory_usage: int = 4 << 30
    #: Threads one read-only query may use (its ``max_threads``); a client may lower it.
    query_max_threads: int = 1
    #: Nice steps below the service of everything the embedded engine does inside ``serve``: queries
    #: and inserts through the query interface, the views' refreshes, merges (``ingest.priority``):
    #: the webhook path keeps the CPU when both want it. 0 = same priority.
    query_nice: int = 10
    #: Resident MiB of the ``serve`` process past which it asks the embedded engine's allocator to
    #: return the memory its queries freed (``SYSTEM JEMALLOC PURGE``, checked every 0.5 s;
    #: ``ingest.priority``): it keeps it for seconds otherwise, and refresh runs pile it up. 0: never.
    engine_purge_mib: int = 1024
    #: While webhooks arrive, an insert with data through the query interface (what ``import``
    #: sends beside a running ``serve``) starts only this many times its predecessor's duration
    #: after that one ended: 1 gives the webhooks the engine at least half the time. 0: no pause.
    import_yield: float = 1.0

    def __post_init__(self) -> None:
        if not (self.clickhouse_url.startswith(("chdb:", "http://", "https://"))):
            raise ConfigError(
                f"clickhouse url {self.clickhouse_url!r}: expected chdb:///path or http(s)://user:pass@host:port/db"
            )
        if self.clickhouse_cluster and not re.fullmatch(r"[A-Za-z0-9_.-]+", self.clickhouse_cluster):
            raise ConfigError(f"clickhouse cluster {self.clickhouse_cluster!r}: letters, digits, '_', '-', '.' only")
        if self.clickhouse_cluster and self.clickhouse_url.startswith("chdb:"):
            raise ConfigError("a cluster needs ClickHouse servers: set an http(s):// clickhouse url")
        for name in ("batch_size", "spool_max_bytes", "max_body_bytes", "max_url_bytes", "max_params", "port",
                     "query_max_concurrent", "query_max_execution_time", "query_max_result_bytes",
                     "query_max_memory_usage", "query_max_threads", "max_header_bytes", "max_connections",
                     "max_connections_per_client", "header_timeout", "body_timeout", "keepalive_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.import_yield <= 100:
            raise ConfigError(f"PBX_IMPORT_YIELD must be 0 to 100, got {self.import_yield}")
        if self.engine_purge_mib < 0:
            raise ConfigError(f"PBX_ENGINE_PURGE_MIB must be 0 (never) or more, got {self.engine_purge_mib}")
        if not 0 <= self.query_nice <= 19:
            raise ConfigError(f"query_nice must be 0 to 19, got {self.query_nice}")
        if not 0 <= self.query_port <= 65535:
            raise ConfigError(f"query_port must be 0 (off) to 65535, got {self.query_port}")
        if not re.fullmatch(r"[A-Za-z0-9_.@-]+", self.query_user):
            raise ConfigError(f"query user {self.query_user!r}: letters, digits, '_', '-', '.', '@' only")
        if self.query_enabled and not self.query_password and not _is_loopback(self.query_host):
            raise ConfigError(
                f"the query interface on {self.query_host} is reachable from other machines: set "
                f"{ENV_NAMES['query_password']} (the read-only user's password) or bind it to 127.0.0.1"
            )
        if self.flush_interval <= 0:
            raise ConfigError(f"flush_interval must be positive, got {self.flush_interval}")
        if self.spool_commit_window < 0 or self.drain_timeout < 0:
            raise ConfigError("spool_commit_window and drain_timeout must not be negative")
        self.allowed_networks  # noqa: B018  (validates allow_cidrs)

    @property
    def allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``allow_cidrs`` parsed; empty = every client is allowed."""
        networks = []
        for cidr in filter(None, (c.strip() for c in self.allow_cidrs.split(","))):
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                raise ConfigError(f"{ENV_NAMES['allow_cidrs']}: {cidr!r} is not a CIDR such as 10.0.0.0/8") from None
        return tuple(networks)

    @property
    def query_enabled(self) -> bool:
        """``serve`` answers ClickHouse's HTTP interface: embedded engine and a port."""
        return self.query_port != 0 and self.clickhouse_url.startswith("chdb:")

    @property
    def spool_path(self) -> Path:
        """Where the spool lives: ``spool_dir``, or the database's own place
        (``ingest.storing.destination.default_spool_dir``)."""
        if self.spool_dir:
            return Path(self.spool_dir).resolve()
        return default_spool_dir(self.clickhouse_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``PBX_*`` variables, then ``overrides`` (CLI flags; None = not given)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in _FLAG_ONLY:
                continue
            raw = env.get(ENV_NAMES[field.name])
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


#: Environment variable of each setting.
ENV_NAMES = {f.name: f"PBX_{f.name.upper()}" for f in dataclasses.fields(Settings)}
#: Settings given as flags only: decisions for one start, not configuration.
_FLAG_ONLY = frozenset({"spool_hand_over"})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parse(name: str, type_: Any, raw: str) -> Any:
    kind = type_ if isinstance(type_, str) else type_.__name__
    try:
        if kind == "bool":
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_NAMES[name]}={raw!r} is not a valid {kind}") from None
    return raw


@dataclasses.dataclass(frozen=True)
class ImportOptions:
    """``pbx-analytics import``: which access logs, and how to import them."""

    #: nginx/Apache access logs (combined or common, plain or gzip), in any order.
    files: tuple[str, ...] = ()
    #: Rows per insert.
    batch_size: int = 100_000
    #: Decoding processes working on different files; 0: decode in the importing process;
    #: None: chosen from the CPUs and the input's size (``backfill._parallel.auto_jobs``).
    jobs: int | None = None
    #: The progress line; None: only when stderr is a terminal.
    progress: bool | None = None
    #: Apply the ``sql/`` migrations first.
    migrate: bool = True

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"--batch-size must be positive, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class SimulateOptions:
    """``pbx-analytics simulate``: where the simulated webhooks go (the scenario itself is a
    ``simulation.config.SimConfig``)."""

    #: Write an nginx access log here (gzip if the name ends in .gz).
    access_log: str | None = None
    #: ``combined`` or ``common``.
    log_format: str = "combined"
    #: Time zone of the access log: +HHMM, -HHMM, UTC or an IANA zone such as Europe/Prague.
    tz: str = "+0000"
    #: Send the events due from now on, live, to a running service at this URL; those already
    #: due are stored through the import path, with their own times, at ``backfill_to``.
    target: str | None = None
    #: With ``target``: store the events already due through the import path at ``backfill_to``
    #: (a ClickHouse DSN, as ``--clickhouse``). Off (a live-only period): send every event,
    #: those due already behind plan.
    backfill: bool = True
    backfill_to: str = ""
    #: With ``target``: each request goes out up to this many milliseconds after its
    #: simulated second (random, seeded), so events of one instant arrive in either order.
    jitter_ms: float = 150.0
    #: With ``target``: requests in flight at once.
    concurrency: int = 32
    #: The progress line; None: only when stderr is a terminal.
    progress: bool | None = None
    #: Write the expected metrics (the truth) here as JSON.
    truth: str | None = None
    #: Without ``target``: move the period earlier until its last event (a drained call, a
    #: logout) is at or before this epoch second ("the period ends now"). None: as given.
    end_by: float | None = None

    def __post_init__(self) -> None:
        try:
            offset_function(self.tz)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.log_format not in FORMATS:
            raise ConfigError(f"log format {self.log_format!r}: expected combined or common")
        if not 0 <= self.jitter_ms <= 10_000:
            raise ConfigError(f"--jitter-ms must be within 0..10000, got {self.jitter_ms:g}")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
