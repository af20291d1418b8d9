"""Acknowledged means stored: crashes, restarts, outages and bad rows, with the real engine.

Load comes from threads sending spec-shaped webhooks, each with a unique key
(``call_id``, or ``userid`` for agent events), recording which got a 2xx.
After the dust settles the engine is opened and every acknowledged key must
be in ``pbx.events`` exactly once; no key may be there twice.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import uvicorn
from litestar.testing import TestClient

from ingest.config import Settings
from ingest.events.decode import decode, parse_query
from ingest.events.spec import AGENT_EVENTS
from ingest.events.table import COLUMNS, encode_record, now_ms, spool_meta, to_row
from ingest.metrics import Metrics
from ingest.receiving.app import create_app
from ingest.receiving.server import uvicorn_config
from ingest.storing import clickhouse
from ingest.storing.spool import Spool
from ingest.storing.writer import BatchWriter
from ingest.testing import ServeProcess, append, free_port, query_dicts, spec_example_urls, stored

KEY = "if(call_id != '', call_id, userid)"


def _templates() -> list[tuple[str, list[tuple[str, str]]]]:
    out = []
    for url in spec_example_urls():
        parts = urlsplit(url)
        event = parts.path.strip("/")
        key = "userid" if event in AGENT_EVENTS else "call_id"
        params = [(k, v) for k, v in parse_query(parts.query) if k != key]
        out.append((event, [(key, "{key}"), *params]))
    return out


TEMPLATES = _templates()


class Load:
    """Threads sending webhooks with unique keys; ``acked`` holds the keys answered 2xx."""

    def __init__(self, url: str, prefix: str, threads: int = 6, stop_on_error: bool = True) -> None:
        self.url, self.prefix, self.stop_on_error = url, prefix, stop_on_error
        self.acked: set[str] = set()
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            for i in itertools.count():
                if self._stop.is_set():
                    return
                key = f"{self.prefix}-{n}-{i}"
                event, params = TEMPLATES[i % len(TEMPLATES)]
                query = urlencode([(k, v.format(key=key)) for k, v in params])
                try:
                    response = http.get(f"/{event}?{query}")
                except httpx.HTTPError:
                    self.errors += 1
                    if self.stop_on_error:
                        return
                    time.sleep(0.01)
                    continue
                self.statuses[response.status_code] += 1
                if 200 <= response.status_code < 300:
                    self.acked.add(key)

    def stop(self) -> Load:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        return self


#: How many times each key is stored.
KEYS_SQL = f"SELECT {KEY} AS k, count() AS n FROM pbx.events GROUP BY k"


def stored_keys(rows: list[dict]) -> Counter[str]:
    """``KEYS_SQL``'s rows as a Counter."""
    return Counter({r["k"]: r["n"] for r in rows})


def assert_exactly_once(acked: set[str], stored: Counter[str]) -> None:
    twice = {k: n for k, n in stored.items() if n > 1}
    assert not twice, f"stored more than once: {list(twice.items())[:5]}"
    lost = acked - set(stored)
    assert not lost, f"{len(lost)} acknowledged webhooks lost, e.g. {sorted(lost)[:5]}"


def wait_health(url: str, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{url}/healthz", timeout=5).json()
        if predicate(health):
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"health never matched: {health}")
        time.sleep(0.05)


# ---- crash ---------------------------------------------------------------------


def test_kill_9_under_load_then_restart_stores_every_acknowledged_webhook_once(tmp_path: Path) -> None:
    data = tmp_path / "chdata"
    flags = ("--batch-size", "150", "--flush-interval", "0.02")
    acked: set[str] = set()
    for round_ in range(2):
        proc = ServeProcess(data, *flags)
        load = Load(proc.url, f"r{round_}")
        time.sleep(1.5)
        proc.stop(signal.SIGKILL)  # mid-load: mid-commit, mid-insert, mid-checkpoint
        load.stop()
        assert load.statuses[200] > 100, load.statuses
        acked |= load.acked
    proc = ServeProcess(data, *flags)
    wait_health(proc.url, lambda h: h["backlog"] == 0)
    assert proc.stop() == 0, proc.log()
    assert_exactly_once(acked, stored_keys(stored(proc.dsn, KEYS_SQL)))


def test_batch_inserted_just_before_a_crash_is_not_stored_twice(ch, dsn: str, tmp_path: Path) -> None:
    """The crash window between the insert and the checkpoint, hit on purpose."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, meta=spool_meta())
    ev = decode("call_end", [("call_id", "x")])
    append(spool, [encode_record(to_row("call_end", ev, now_ms())) for _ in range(30)])

    def writer(spool: Spool) -> BatchWriter:
        return BatchWriter(lambda: clickhouse.connect(dsn), spool, batch_size=20, flush_interval=0.01,
                           metrics=Metrics())

    first = writer(spool)
    batch = spool.next_batch(20)
    first._store(batch)  # inserted; the process "dies" before confirm
    first.close(0)
    spool.close()

    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, meta=spool_meta())
    assert spool.replay_pending and spool.backlog == 30
    second = writer(spool)
    second.start()
    assert second.close(10)
    spool.close()
    assert ch.query("SELECT count() FROM pbx.events").result_rows == [(30,)]


# ---- outage ----------------------------------------------------------------------


class InProcessServer:
    """The real app on a real port, in this process, so a second client can break its engine."""

    def __init__(self, settings: Settings) -> None:
        self.url = f"http://127.0.0.1:{settings.port}"
        config = uvicorn_config(settings, host="127.0.0.1")  # serve's own front door
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture
def in_process(dsn: str, tmp_path: Path) -> Iterator[InProcessServer]:
    settings = Settings(clickhouse_url=dsn, port=free_port(), batch_size=100, flush_interval=0.02,
                        spool_dir=str(tmp_path / "spool"))
    server = InProcessServer(settings)
    yield server
    server.stop()


def test_engine_outage_under_load_loses_nothing_and_recovers_by_itself(in_process: InProcessServer, dsn: str) -> None:
    url = in_process.url
    admin = clickhouse.connect(dsn)  # same engine, second client: the outage is real
    try:
        load = Load(url, "o", threads=4, stop_on_error=False)
        time.sleep(0.5)
        admin.command("DETACH TABLE pbx.events")
        health = wait_health(url, lambda h: h["clickhouse"] == "down" and h["backlog"] > 50)
        assert health["status"] == "degraded" and "pbx.events" in health["last_error"]
        time.sleep(1.0)  # keep accepting into the spool while the engine refuses
        metrics = metric_values(httpx.get(f"{url}/metrics").text)
        assert metrics["pbx_clickhouse_up"] == 0 and metrics["pbx_insert_failures_total"] >= 1
        assert metrics["pbx_buffer_depth"] > 50 and metrics["pbx_spool_bytes"] > 0
        admin.command("ATTACH TABLE pbx.events")
        time.sleep(0.5)
        load.stop()
        assert load.errors == 0 and set(load.statuses) == {200}, load.statuses
        wait_health(url, lambda h: h["status"] == "ok" and h["backlog"] == 0)
    finally:
        in_process.stop()
        admin.command("ATTACH TABLE IF NOT EXISTS pbx.events")
        stored = stored_keys(query_dicts(admin, KEYS_SQL))
        admin.close()
    assert_exactly_once(load.acked, stored)


def metric_values(text: str) -> dict[str, float]:
    return {k: float(v) for k, _, v in (line.rpartition(" ") for line in text.splitlines()
                                          if line and not line.startswith("#"))}


def test_full_spool_answers_503_and_a_restart_replays_it(tmp_path: Path) -> None:
    data, spool = tmp_path / "chdata", tmp_path / "spool"
    down = f"http://default:@127.0.0.1:{free_port()}/pbx"  # nothing listens there
    proc = ServeProcess(data, "--clickhouse", down, "--spool-dir", str(spool), "--spool-max-bytes", "12000",
                        env={"PBX_DRAIN_TIMEOUT": "1"})
    acked, refused = [], []
    with httpx.Client(base_url=proc.url) as http:
        for i in range(300):
            response = http.get(f"/call_end?call_id=s{i}")
            assert response.status_code in (200, 503), response.text
            if response.status_code == 200:
                acked.append(f"s{i}")
            else:
                assert response.headers["retry-after"] == "5"
                assert response.json()["reason"] == "buffer_full"
                refused.append(f"s{i}")
        health = http.get("/healthz").json()
    assert 50 < len(acked) < 200 and refused, (len(acked), len(refused))
    assert acked == [f"s{i}" for i in range(len(acked))], "503 only once full"
    assert health["status"] == "degraded" and health["clickhouse"] == "down" and health["backlog"] == len(acked)
    started = time.monotonic()
    assert proc.stop() == 0, proc.log()  # SIGTERM: bounded drain attempt, clean exit
    assert time.monotonic() - started < 15
    assert "still in the spool" in proc.log()

    # The embedded engine takes over the spool written for the server (it was down for good).
    proc = ServeProcess(data, "--spool-dir", str(spool), "--hand-over-spool")
    wait_health(proc.url, lambda h: h["backlog"] == 0 and h["status"] == "ok")
    assert proc.stop() == 0
    keys = stored_keys(stored(proc.dsn, KEYS_SQL))
    assert_exactly_once(set(acked), keys)
    assert not set(refused) & set(keys)


# ---- bad rows ---------------------------------------------------------------------


def test_a_row_the_engine_refuses_is_quarantined_and_the_rest_of_its_batch_stored(ch, settings: Settings) -> None:
    ch.command("ALTER TABLE pbx.events ADD CONSTRAINT no_poison CHECK caller_num != 'poison'")
    with TestClient(create_app(settings)) as client:
        for i in range(40):
            caller = "poison" if i == 17 else "591166223"
            assert client.get(f"/queue_in?call_id=q{i}&caller_num={caller}").status_code == 200
        deadline = time.monotonic() + 20
        while client.get("/healthz").json()["backlog"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "pbx_rows_quarantined_total 1.0" in client.get("/metrics").text
    stored = ch.query("SELECT call_id FROM pbx.events ORDER BY call_id").result_rows
    assert sorted(r[0] for r in stored) == sorted(f"q{i}" for i in range(40) if i != 17)
    [(reason, row)] = ch.query("SELECT reason, row FROM pbx.events_quarantine").result_rows
    assert "VIOLATED_CONSTRAINT" in reason or "no_poison" in reason
    assert '"caller_num": "poison"' in row and '"call_id": "q17"' in row


def test_records_spooled_by_an_older_version_replay_by_column_name(ch, dsn: str, tmp_path: Path) -> None:
    old_columns = [c for c in COLUMNS if c != "spy_type"] + ["retired_param"]
    ev = decode("queue_in", [("call_id", "old-1"), ("queue_name", "helpdesk")])
    row = dict(zip(COLUMNS, to_row("queue_in", ev, now_ms())))
    row["retired_param"] = "kept"
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, meta=spool_meta(old_columns))
    append(spool, [encode_record(tuple(row[c] for c in old_columns))])
    spool.close()

    settings = Settings(clickhouse_url=dsn, spool_dir=str(tmp_path / "spool"), flush_interval=0.01)
    with TestClient(create_app(settings)):
        pass
    [(call_id, queue, spy_type, extra)] = ch.query(
        "SELECT call_id, queue_name, spy_type, extra FROM pbx.events").result_rows
    assert (call_id, queue, spy_type, extra) == ("old-1", "helpdesk", "", {"retired_param": "kept"})
