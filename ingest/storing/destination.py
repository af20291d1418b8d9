"""Which database a spool belongs to, and where a spool lives by default (issue 12).

A spool holds webhooks that were acknowledged but are not yet in ClickHouse. They belong to
the database the service was writing to when it took them, and to no other: replaying them
into another database stores them where nobody expects them and leaves a gap in the one
that should have them. So:

* a spool records its database, as the DSN's identity without its password (``Destination``;
  the file ``destination.json`` in the spool directory, written before the first record);
* the default spool lives in that database's own state, so two databases never share one:
  inside the embedded engine's data directory (``<data>/spool``), or, for a ClickHouse server,
  ``./spool-<host>-<port>`` in the working directory (``default_spool_dir``);
* a service started for another database on a spool that still holds unwritten records
  refuses to start (``SpoolBelongsElsewhere``, naming both) unless it is told to hand them
  over (``serve --hand-over-spool``). An empty spool simply changes hands.

Identity: the embedded engine is its data directory (resolved); a server is its scheme, host
and port. The user and the default database are not part of it: every row goes to
``pbx.events`` of that server whoever writes it. Two names for one server (``localhost`` and
``127.0.0.1``) are two identities: the check errs on the side of refusing.

Spools written before this existed record nothing, and lived in ``spool`` beside the data
directory (or ``./spool`` for a server), a place several databases could share. Such a spool,
found at the old default place of the database a service starts for, is taken as written for
that database: it is moved into the new default place (one rename) and labelled, then
replayed as usual (``adopt_legacy_spool``). If two databases did share it, its records go to
the first one started after the upgrade -- what every start did before. A spool given with
``--spool-dir`` that records nothing is labelled by the first service that opens it.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ingest.storing._spool_files import SpoolError, fsync_dir

__all__ = [
    "LABEL",
    "Destination",
    "SpoolBelongsElsewhere",
    "adopt_legacy_spool",
    "claimer",
    "default_spool_dir",
    "embedded_path",
    "legacy_spool_dir",
    "redact",
]

log = logging.getLogger("ingest.storing.spool")

#: The file in a spool directory naming the database its records were taken for.
LABEL = "destination.json"
#: Default ports of clickhouse-connect's DSNs, so ``host`` and ``host:8123`` are one identity.
_DEFAULT_PORTS = {"http": 8123, "https": 8443}


class SpoolBelongsElsewhere(SpoolError):
    """The spool holds unwritten records taken for another database."""


def redact(dsn: str) -> str:
    """The DSN without its password."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", dsn)


def embedded_path(dsn: str) -> Path:
    """The embedded engine's data directory of a ``chdb:`` DSN, resolved (as chDB compares paths)."""
    return Path(dsn.removeprefix("chdb:").removeprefix("//").split("?", 1)[0] or "data").resolve()


@dataclasses.dataclass(frozen=True)
class Destination:
    """A database a spool's records are written to."""

    #: What is compared: ``chdb:///abs/path``, or ``http(s)://host:port`` for a server.
    identity: str
    #: What messages name: the DSN as given, its password replaced by ``***``.
    dsn: str

    @classmethod
    def of(cls, dsn: str) -> Destination:
        if dsn.startswith("chdb:"):
            return cls(f"chdb://{embedded_path(dsn)}", f"chdb://{embedded_path(dsn)}")
        parts = urlsplit(dsn)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
        return cls(f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}", redact(dsn))

    @property
    def slug(self) -> str:
        """A file name for a server: ``<host>-<port>``."""
        host_port = self.identity.split("://", 1)[1]
        host, _, port = host_port.rpartition(":")
        return f"{re.sub(r'[^A-Za-z0-9.-]', '_', host)}-{port}"


def default_spool_dir(dsn: str) -> Path:
    """Where a service for ``dsn`` keeps its spool unless ``PBX_SPOOL_DIR`` says otherwise."""
    if dsn.startswith("chdb:"):
        return embedded_path(dsn) / "spool"
    return Path(f"spool-{Destination.of(dsn).slug}").resolve()


def legacy_spool_dir(dsn: str) -> Path:
    """Where versions before the label kept the default spool: beside the data directory."""
    if dsn.startswith("chdb:"):
        return embedded_path(dsn).parent / "spool"
    return Path("spool").resolve()


# ---- the label ------------------------------------------------------------------------------


def read_label(directory: Path) -> Destination | None:
    """The database ``directory``'s spool was written for; None if it records none."""
    try:
        data = json.loads((directory / LABEL).read_text())
        return Destination(str(data["database"]), str(data["dsn"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpoolError(f"{directory / LABEL}: unreadable ({exc}); it names the database this spool's "
                         "records belong to: inspect it, or remove it if the spool is empty") from exc


def write_label(directory: Path, destination: Destination) -> None:
    """Record ``destination`` durably (before any record taken for it)."""
    tmp = directory / f".{LABEL}.tmp"
    with open(tmp, "w") as f:
        json.dump({"format": 1, "database": destination.identity, "dsn": destination.dsn}, f)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / LABEL)
    fsync_dir(directory)


def claimer(destination: Destination, hand_over: bool = False) -> Callable[[Path, int], None]:
    """The check a service makes when it opens a spool (``Spool(claim=...)``): called under the
    spool's lock, after recovery and before anything is replayed, with the unwritten records."""

    def claim(directory: Path, backlog: int) -> None:
        label = read_label(directory)
        if label is not None and label.identity == destination.identity:
            return
        if label is None:
            if backlog:
                log.warning("spool records no database (written by an earlier version); its records are taken "
                            "as written for this one", extra={"spool": str(directory), "records": backlog,
                                                              "database": destination.dsn})
        elif backlog and not hand_over:
            raise SpoolBelongsElsewhere(
                f"the spool {directory} holds {backlog} webhook(s) not yet written to {label.dsn}, the database "
                f"they were taken for, and this service writes to {destination.dsn}. Start a service for "
                f"{label.dsn} on this spool to write them there; or start this one with --hand-over-spool to "
                f"write them into {destination.dsn}; or give this one its own --spool-dir")
        elif backlog:
            log.warning("spool handed over: its unwritten records go to this database",
                        extra={"spool": str(directory), "records": backlog, "from": label.dsn,
                               "to": destination.dsn})
        else:
            log.info("empty spool now used for another database",
                     extra={"spool": str(directory), "from": label.dsn, "to": destination.dsn})
        write_label(directory, destination)

    return claim


# ---- spools of earlier versions ----------------------------------------------------------------


def adopt_legacy_spool(dsn: str) -> Path:
    """The default spool directory for ``dsn``, after moving an earlier version's spool there.

    Only when the new place does not exist yet and the old one holds an unlabelled spool that
    no process is using. If the move is impossible (another file system), the old directory
    is returned: it is used where it is, and labelled when opened.
    """
    new, old = default_spool_dir(dsn), legacy_spool_dir(dsn)
    if new.exists() or not old.is_dir() or (old / LABEL).exists():
        return new
    if not any(old.glob("*.seg")) and not (old / "checkpoint").exists():
        return new
    fd = os.open(old / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("a spool of an earlier version is in use by another process; leaving it there",
                        extra={"spool": str(old)})
            return new
        new.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(old, new)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise SpoolError(f"cannot move the spool of an earlier version from {old} to {new}: {exc}") from exc
            log.warning("spool of an earlier version used where it is (another file system than the new place)",
                        extra={"spool": str(old), "new_place": str(new)})
            return old
        fsync_dir(new.parent)
        fsync_dir(old.parent)
    finally:
        os.close(fd)
    log.warning("spool of an earlier version moved into its database's own place; it is replayed there",
                extra={"from": str(old), "to": str(new), "database": Destination.of(dsn).dsn})
    return new
