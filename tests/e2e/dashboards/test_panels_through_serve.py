"""Every dashboard panel's SQL through ``serve``'s ClickHouse HTTP interface answers what it
answers on the engine directly (issue 11's last "Done when").

One simulated day, imported; every panel of every dashboard expanded as Grafana would (All
selected), run first on the engine itself, then, with ``serve`` holding the same data
directory, through its interface as the read-only user Grafana uses. The day ends two hours
before the test's "now" with every call finished, so the live panels (calls waiting, longest
wait) do not move between the two runs.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from ingest.backfill import importer
from ingest.simulation import SimConfig, simulate, write_access_log
from ingest.storing import clickhouse
from ingest.testing import ServeProcess, refresh_views
from tests.e2e.dashboards import grafana_sim as gs
from tests.e2e.dashboards.test_dashboards import ALL_QUERIES, _variables

Answers = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory, migrated_copy) -> tuple[Path, dt.datetime]:
    tmp = tmp_path_factory.mktemp("panels")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    end = now.replace(minute=0, second=0) - dt.timedelta(hours=2)
    config = SimConfig(seed=5, start=end - dt.timedelta(hours=22), hours=22, queues=3, agents=8,
                       calls_per_hour=40, hourly_profile=(1.0,) * 24)
    log = tmp / "access.log"
    write_access_log(log, simulate(config).events)
    client = clickhouse.connect(f"chdb://{migrated_copy(tmp / 'chdata')}")
    try:
        assert importer.import_files(client, [log]).imported > 5000
        refresh_views(client)
    finally:
        client.close()
    return tmp / "chdata", now


def answers(client: Client, now: dt.datetime) -> Answers:
    """Every panel's (columns, rows), the variables' options first (from the same client)."""
    out: Answers = {}
    variables: dict[str, list[gs.Variable]] = {}
    for query in ALL_QUERIES:
        rng = gs.default_time_range(query.dashboard, now)
        uid = query.dashboard["uid"]
        if uid not in variables:
            variables[uid] = _variables(client, query.dashboard, "all", rng)
            out[f"{uid}/variables"] = ([], [tuple(v.options) for v in variables[uid]])
        result = client.query(gs.expand(query.sql, rng, variables[uid], query.interval_ms(rng)))
        out[query.id] = (list(result.column_names), [tuple(r) for r in result.result_rows])
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, floats within rounding (the interface's reader runs on one thread: sums of floats
    may add up in another order)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_every_panel_answers_through_serve_what_it_answers_on_the_engine(day: tuple[Path, dt.datetime]) -> None:
    data, now = day
    client = clickhouse.connect(f"chdb://{data}")
    try:
        direct = answers(client, now)
    finally:
        client.close()

    serve = ServeProcess(data)
    try:
        reader = clickhouse_connect.get_client(host="127.0.0.1", port=serve.query_port, username="default",
                                               password="", autogenerate_session_id=False)
        through = answers(reader, now)
        reader.close()
    finally:
        serve.stop()

    assert through.keys() == direct.keys()
    differ = [key for key in direct if not same(through[key], direct[key])]
    assert not differ, f"{len(differ)} panels differ, e.g. {differ[0]}: {through[differ[0]]} != {direct[differ[0]]}"
    assert sum(1 for columns, rows in direct.values() if rows) > len(direct) * 0.8, "most panels have rows"
