-- Repeat callers of a time range (issue 15): pbx.repeat_calls (0202) for the
-- calls that started in [from, to), reading pbx.calls only in
-- [from, to + window_s). Definitions: docs/metrics.md#pbxrepeat_calls_between.
--
--   SELECT * FROM pbx.repeat_calls_between(from = '2026-11-02', to = '2026-11-03', window_s = 86400)
--
-- Why: pbx.repeat_calls finds each call's next call with a window function
-- over the caller's whole history, so a filter on its rows cannot bound what
-- it reads: a one-day panel read every call ever stored (docs/benchmarks.md,
-- "repeat_calls_between"). A call's next call looks forward only, so the
-- calls of [from, to) need only the calls up to `to + window_s`: a next call
-- after that is further than the window from every call of the range.
--
-- Same rows, columns and `repeat` as pbx.repeat_calls(window_s) filtered to
-- from <= started_at < to. One difference: `next_call_at` is NULL when the
-- next call started at or after `to + window_s` (not read; such a call is
-- never a repeat), where pbx.repeat_calls gives its time. pbx.repeat_calls is
-- now this view over all time (below), so the rule has one home.
--
-- `from` and `to` are UTC. Pass strings ('2026-11-02 08:00:00') or values of
-- a UTC DateTime type: ClickHouse hands a view a computed argument as text in
-- the session's time zone, so `toDateTime(x)` on a server not in UTC would
-- shift the range; `toTimeZone(toDateTime(x), 'UTC')` does not.

CREATE OR REPLACE VIEW pbx.repeat_calls_between ${ON_CLUSTER} AS
SELECT
    call_id,
    caller_num,
    started_at,
    first_queue,
    answered,
    next_call_at,
    toUInt8(ifNull(dateDiff('millisecond', started_at, next_call_at) <= {window_s:UInt32} * 1000, 0)) AS repeat
FROM
(
    SELECT
        call_id,
        caller_num,
        started_at,
        ended_at,
        -- The queue the caller reached first ('' when the call never queued).
        if(empty(queues), '', queues[1]) AS first_queue,
        toUInt8(answered_at IS NOT NULL) AS answered,
        leadInFrame(toNullable(started_at)) OVER (
            PARTITION BY caller_num ORDER BY started_at, call_id
            ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next_call_at
    FROM pbx.calls
    WHERE direction = 'inbound' AND caller_num != ''
      AND started_at >= {from:DateTime64(3, 'UTC')}
      AND started_at < {to:DateTime64(3, 'UTC')} + toIntervalSecond({window_s:UInt32})
)
WHERE ended_at IS NOT NULL AND started_at < {to:DateTime64(3, 'UTC')};

-- The contract view of 0202, unchanged in rows and columns: every call, its next
-- call found wherever it is (the range is wider than any stored time, and stays
-- within DateTime64's years with the largest window_s, 136 years).
CREATE OR REPLACE VIEW pbx.repeat_calls ${ON_CLUSTER} AS
SELECT *
FROM pbx.repeat_calls_between(from = '1970-01-01 00:00:00', to = '2150-01-01 00:00:00', window_s = {window_s:UInt32});
