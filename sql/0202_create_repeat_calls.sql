-- Repeat callers and first-contact resolution (issue 14). Definitions:
-- docs/metrics.md#pbxrepeat_calls.
--
-- One row per ended inbound call with a caller number: whether the same
-- number called in again within `window_s` seconds of this call's start.
-- First-contact resolution of a queue and day = 100 * answered calls with
-- repeat = 0 / answered calls.
--
-- A parameterized view: the window is the caller's choice, e.g.
--   SELECT * FROM pbx.repeat_calls(window_s = 86400)
-- 86400 (a day) is the default of the contract, the docs and the dashboards;
-- ClickHouse has no defaults for view parameters (ClickHouse#52400), so it is
-- always written out.
--
-- The next call is looked up among all inbound calls of the number, ended or
-- not (a caller on the line again now is a repeat); only ended calls get a
-- row. Calls are ordered by started_at, then call_id for equal times.

CREATE VIEW IF NOT EXISTS pbx.repeat_calls ${ON_CLUSTER} AS
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
)
WHERE ended_at IS NOT NULL;
