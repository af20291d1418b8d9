"""A day backfilled far back: what the agent layer's refresh reads is bounded by that day, not by the
history after it (docs/metrics.md#how-the-views-are-computed-and-why).

Before sql/0233 the run that took such a day read every stored stretch of its agents from the day
on (a year of them for a day backfilled a year back: 40 M rows and 2 GiB at 200 agents).
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from ingest.testing import query_dicts, refresh_views
from tests.e2e.views.test_views import _agent_day
from tests.e2e.views.views_helpers import ev, insert

#: A stretch logged in for this many days, after the backfilled day: stored as a row per
#: 15-minute interval (thousands of rows, months of partitions) from two events.
STRETCH_DAYS = 150


def agent_refresh_read_rows(ch: Client) -> int:
    """Rows the agent layer's latest refresh run read (the views are held: one run per refresh_views)."""
    return ch.query("SELECT read_rows FROM system.view_refreshes WHERE database = 'pbx' "
                    "AND view = 'agents_refresh'").result_rows[0][0]


def test_a_day_backfilled_before_months_of_history_reads_that_day_not_the_history(ch: Client) -> None:
    day = 86400
    # (Margin 0: the stretch's own arrival row is not looked at again behind the cursor.)
    ch.command("INSERT INTO pbx.refresh_settings (name, value) VALUES ('commit_margin_ms', 0)")
    insert(ch, [ev("pbx_agent_login", 0, userid="a1", exten="101"),
                ev("pbx_agent_logout", STRETCH_DAYS * day, userid="a1", reason="end_of_shift")])
    refresh_views(ch)
    stored = ch.query("SELECT count() FROM pbx.agent_time_data FINAL WHERE is_deleted = 0").result_rows[0][0]
    assert stored == STRETCH_DAYS * 96
    # A morning of a1's, ten days before (the month before), arrived last: its windows end at
    # the stretch's login, the first of the months it does not change.
    insert(ch, _agent_day(-10))
    refresh_views(ch)
    assert ch.query("SELECT count() FROM pbx.arrivals WHERE (arrived_at, kind, id) > "
                    "(SELECT max(cursor) FROM pbx.refresh_marks WHERE layer = 'agents')").result_rows[0][0] == 0
    assert agent_refresh_read_rows(ch) < stored / 2
    assert (query_dicts(ch, "SELECT * FROM pbx.agent_stats_15m ORDER BY ALL")
            == query_dicts(ch, "SELECT * FROM pbx.agent_stats_15m_raw ORDER BY ALL"))
