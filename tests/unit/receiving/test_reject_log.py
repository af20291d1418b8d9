"""The "request rejected" log line is rate-limited per reason, with a count of what it skipped."""

from __future__ import annotations

import logging
import time

import pytest

from ingest.config import Settings
from ingest.receiving.service import REJECT_LOG_INTERVAL_S, Service


def test_a_flood_of_rejects_logs_one_line_per_reason_per_second(settings: Settings,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    service = Service(settings)
    caplog.set_level(logging.WARNING, logger="ingest.receiving.service")
    for _ in range(100):
        service.reject(503, "buffer_full", "full")
    service.reject(403, "bad_token", "wrong token")  # another reason has its own budget
    lines = [r for r in caplog.records if r.getMessage() == "request rejected"]
    assert [(r.reason, r.suppressed) for r in lines] == [("buffer_full", 0), ("bad_token", 0)]
    time.sleep(REJECT_LOG_INTERVAL_S + 0.05)
    service.reject(503, "buffer_full", "full")
    lines = [r for r in caplog.records if r.getMessage() == "request rejected"]
    assert (lines[-1].reason, lines[-1].suppressed) == ("buffer_full", 99)
    assert service.metrics.rejected("buffer_full")._value.get() == 101  # every reject counted
