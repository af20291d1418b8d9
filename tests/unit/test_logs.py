"""``ingest.logs``: one line per state change of a dependency, not one per retry."""

from __future__ import annotations

import logging
import time

import pytest

from ingest.logs import StateLog

log = logging.getLogger("tests.statelog")


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == log.name]


def test_one_line_when_it_fails_and_one_when_it_works_again_whatever_the_retries(caplog):
    state = StateLog(log, "down", "up")
    with caplog.at_level(logging.INFO, logger=log.name):
        state.ok()
        for _ in range(54):
            state.failed("connection refused", rows=3)
        assert state.error == "connection refused"
        state.ok()
        state.ok()
    assert _lines(caplog) == [("ERROR", "down"), ("WARNING", "up")]
    down, up = (r for r in caplog.records if r.name == log.name)
    assert down.error == "connection refused" and down.rows == 3  # type: ignore[attr-defined]
    assert up.failed_attempts == 54 and up.last_error == "connection refused"  # type: ignore[attr-defined]
    assert state.error is None


def test_flapping_is_rate_limited_and_the_last_line_tells_the_state(caplog):
    state = StateLog(log, "down", "up", interval=0.3)
    with caplog.at_level(logging.INFO, logger=log.name):
        state.failed("e1")
        state.ok()  # logged: its down was
        for _ in range(5):  # flapping within the interval: not logged
            state.failed("e2")
            state.ok()
        state.failed("e3")  # still within the interval: not yet
        assert _lines(caplog) == [("ERROR", "down"), ("WARNING", "up")]
        time.sleep(0.35)
        state.failed("e3")  # failing still, after the interval: logged, with the cycles missed
    assert _lines(caplog) == [("ERROR", "down"), ("WARNING", "up"), ("ERROR", "down")]
    assert caplog.records[-1].flaps == 5  # type: ignore[attr-defined]
