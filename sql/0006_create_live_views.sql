-- Wallboard views: plain views over raw events, so a webhook shows here as
-- soon as its insert lands (the service flushes every 0.5 s by default).
-- Definitions: docs/metrics.md#live-views.

-- Per queue: calls waiting now and the longest current wait. A visit counts
-- as waiting when it is neither answered nor ended and entered within the last
-- 4 hours (an older open visit is a call whose end was never reported, not a
-- caller still on hold). Queues listed: those with a visit in that window and
-- those in pbx.queue_settings, 0 waiting included.
CREATE VIEW IF NOT EXISTS pbx.queue_now ${ON_CLUSTER} AS
SELECT
    queue_name,
    countIf(outcome = 'waiting') AS waiting,
    minIf(toNullable(entered_at), outcome = 'waiting') AS oldest_entered_at,
    dateDiff('millisecond', oldest_entered_at, now64(3)) / 1000 AS longest_wait_s
FROM
(
    SELECT queue_name, entered_at, outcome
    FROM pbx.queue_calls_since(since = now64(3) - INTERVAL 4 HOUR)
    UNION ALL
    SELECT DISTINCT queue_name, toDateTime64(0, 3, 'UTC'), 'settings'
    FROM pbx.queue_settings
)
GROUP BY queue_name;

-- Per agent: the current state (talk, paused, idle or logged_out), since when
-- it has been so without a break, the state name set last, and whether the
-- agent is on a call. Agents seen in agent events or answering calls.
CREATE VIEW IF NOT EXISTS pbx.agents_now ${ON_CLUSTER} AS
SELECT
    agent,
    any(current.1) AS state,
    any(current.2) AS state_name,
    -- Start of the run of segments in the current state.
    greatest(min(started_at), coalesce(maxIf(toNullable(ended_at), seg_state != current.1), min(started_at))) AS since,
    any(current.3) AS on_call
FROM
(
    SELECT
        agent, state AS seg_state, started_at, ended_at,
        argMax((state, state_name, on_call), (started_at, open)) OVER (PARTITION BY agent) AS current
    FROM pbx.agent_segments_since(since = now64(3) - INTERVAL 1 DAY)
)
GROUP BY agent;
