"""A spool belongs to its database: identities, default places, the claim at start, and the
move of an earlier version's spool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.config import Settings
from ingest.storing import destination
from ingest.storing.destination import LABEL, Destination, SpoolBelongsElsewhere
from ingest.storing.spool import Spool
from ingest.testing import append


def _spool(path: Path, database: str | None = None, *, hand_over: bool = False) -> Spool:
    claim = destination.claimer(Destination.of(database), hand_over) if database else None
    return Spool(path, max_bytes=1 << 30, meta=b"meta", fsync=False, claim=claim)


def _with_records(path: Path, database: str | None, n: int) -> None:
    spool = _spool(path, database)
    append(spool, [b"r%d" % i for i in range(n)])
    spool.close()


@pytest.mark.parametrize(("a", "b"), [
    pytest.param("http://u:p@CH.example:8123/pbx", "http://other@ch.example/default", id="user-db-port-case"),
    pytest.param("https://ch.example/pbx", "https://x:y@ch.example:8443", id="https-default-port"),
    pytest.param("chdb:///x/./db1", "chdb:///x/db1", id="embedded-resolved"),
])
def test_one_database_has_one_identity_whatever_the_user_password_or_spelling(a: str, b: str) -> None:
    assert Destination.of(a).identity == Destination.of(b).identity


def test_the_identity_never_holds_the_password() -> None:
    d = Destination.of("http://default:s3cret@127.0.0.1:9000/pbx")
    assert d.identity == "http://127.0.0.1:9000" and d.dsn == "http://default:***@127.0.0.1:9000/pbx"
    assert Destination.of("http://ch:8123").identity != Destination.of("http://ch:8124").identity


def test_default_spools_live_in_their_database_s_own_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings(clickhouse_url=f"chdb://{tmp_path}/db1").spool_path == tmp_path / "db1" / "spool"
    assert Settings(clickhouse_url="http://u:p@ch.example:8123/pbx").spool_path == tmp_path / "spool-ch.example-8123"
    assert destination.default_spool_dir("http://[::1]:8123") == tmp_path / "spool-__1-8123"
    assert Settings(clickhouse_url=f"chdb://{tmp_path}/db1", spool_dir="s").spool_path == tmp_path / "s"


def test_hand_over_is_a_flag_never_read_from_the_environment() -> None:
    assert Settings.from_env({"PBX_SPOOL_HAND_OVER": "true"}).spool_hand_over is False
    assert Settings.from_env({}, spool_hand_over=True).spool_hand_over is True


def test_a_new_spool_records_its_database(tmp_path: Path) -> None:
    _spool(tmp_path / "s", "http://u:p@ch:8123/pbx").close()
    assert json.loads((tmp_path / "s" / LABEL).read_text()) == {
        "format": 1, "database": "http://ch:8123", "dsn": "http://u:***@ch:8123/pbx"}


def test_a_spool_with_records_for_another_database_is_refused_naming_both_and_left_intact(tmp_path: Path) -> None:
    _with_records(tmp_path / "s", "chdb:///x/db1", 3)
    with pytest.raises(SpoolBelongsElsewhere) as refused:
        _spool(tmp_path / "s", "chdb:///x/db2")
    assert "3 webhook(s)" in str(refused.value) and "chdb:///x/db1" in str(refused.value)
    assert "chdb:///x/db2" in str(refused.value) and "--hand-over-spool" in str(refused.value)
    spool = _spool(tmp_path / "s", "chdb:///x/db1")  # the lock was released; the records are there
    assert spool.backlog == 3
    spool.close()


def test_hand_over_gives_the_records_to_the_new_database(tmp_path: Path) -> None:
    _with_records(tmp_path / "s", "chdb:///x/db1", 3)
    spool = _spool(tmp_path / "s", "chdb:///x/db2", hand_over=True)
    assert spool.backlog == 3
    spool.close()
    assert destination.read_label(tmp_path / "s") == Destination.of("chdb:///x/db2")


def test_an_empty_spool_changes_hands_without_a_flag(tmp_path: Path) -> None:
    _spool(tmp_path / "s", "chdb:///x/db1").close()
    _spool(tmp_path / "s", "chdb:///x/db2").close()
    assert destination.read_label(tmp_path / "s") == Destination.of("chdb:///x/db2")


def test_an_unlabelled_spool_with_records_is_taken_by_the_first_database_that_opens_it(tmp_path: Path) -> None:
    _with_records(tmp_path / "s", None, 2)
    spool = _spool(tmp_path / "s", "chdb:///x/db1")
    assert spool.backlog == 2
    spool.close()
    assert destination.read_label(tmp_path / "s") == Destination.of("chdb:///x/db1")


def test_an_earlier_version_s_spool_beside_the_data_directory_moves_into_it(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path}/data"
    _with_records(tmp_path / "spool", None, 4)
    assert destination.adopt_legacy_spool(dsn) == tmp_path / "data" / "spool"
    assert not (tmp_path / "spool").exists()
    spool = _spool(tmp_path / "data" / "spool", dsn)
    assert spool.backlog == 4
    spool.close()


@pytest.mark.parametrize("case", ["labelled", "in use", "new place exists", "nothing there"])
def test_a_spool_beside_the_data_directory_stays_where_it_is(tmp_path: Path, case: str) -> None:
    dsn = f"chdb://{tmp_path}/data"
    holder = None
    if case == "labelled":
        _with_records(tmp_path / "spool", "chdb:///elsewhere", 1)
    elif case == "in use":
        _with_records(tmp_path / "spool", None, 1)
        holder = _spool(tmp_path / "spool")
    elif case == "new place exists":
        _with_records(tmp_path / "spool", None, 1)
        (tmp_path / "data" / "spool").mkdir(parents=True)
    else:
        (tmp_path / "spool").mkdir()
    assert destination.adopt_legacy_spool(dsn) == tmp_path / "data" / "spool"
    assert (tmp_path / "spool").is_dir()
    if holder is not None:
        holder.close()
