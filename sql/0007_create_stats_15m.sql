-- The 15-minute views, materialized: pbx.queue_stats_15m and pbx.agent_stats_15m.
-- Definitions: docs/metrics.md. How they stay right and fresh:
--
-- Pairing events (a queue_in with its queue_out, an answer with its hangup) is
-- not incremental: a visit's outcome depends on events that may arrive later,
-- in another insert, or in an import of last month's logs. So each 15-minute
-- table is written by a refreshable materialized view that recomputes, every
-- 5 seconds, only the intervals that new events can have changed, from the
-- same parameterized views the plain views use (pbx.queue_calls_since,
-- pbx.agent_segments_since), and appends the recomputed rows. The targets are
-- ReplacingMergeTree(computed_at): the newest computation of an interval wins.
-- They hold counts and sums (never averages); the views divide.
--
-- Which intervals: pbx.event_arrivals records, per hour of event time, when
-- events of that hour last arrived (an incremental materialized view on
-- pbx.events). A refresh recomputes from the earliest hour that received
-- events since the previous refresh (15 s of overlap, for inserts still
-- committing when it started), moved back to the
-- first visit / ring of any call with new events, and (agents) to the data end
-- of the previous refresh. Nothing new arrived: nothing is recomputed.
-- A queue_settings change recomputes every queue interval. A full recompute
-- on demand: docs/metrics.md#refresh.

CREATE TABLE IF NOT EXISTS pbx.event_arrivals ${ON_CLUSTER}
(
    -- An hour of event time (received_at).
    hour DateTime('UTC'),
    -- When events of that hour were last inserted (wall clock of the insert).
    arrived_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = ${REPLICATED}AggregatingMergeTree
ORDER BY hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.event_arrivals_mv ${ON_CLUSTER} TO pbx.event_arrivals AS
SELECT toStartOfHour(received_at) AS hour, max(now64(3, 'UTC')) AS arrived_at
FROM pbx.events
GROUP BY hour;

-- One row per (15-minute interval, queue) recomputation; the newest wins.
CREATE TABLE IF NOT EXISTS pbx.queue_stats_15m_data ${ON_CLUSTER}
(
    interval_start DateTime('UTC'),
    queue_name LowCardinality(String),
    visits UInt64,                       -- all visits entered, waiting ones included
    offered UInt64,
    answered UInt64,
    abandoned UInt64,
    short_abandoned UInt64,
    overflowed UInt64,
    answered_in_sla UInt64,
    abandoned_in_sla UInt64,             -- abandoned + short abandoned with wait_s <= threshold
    answered_wait_ms Int64,              -- sum of wait of answered visits
    abandoned_wait_ms Int64,             -- sum of wait of abandoned visits
    max_wait_ms Nullable(Int64),         -- over ended visits
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ${REPLICATED}ReplacingMergeTree(computed_at)
ORDER BY (interval_start, queue_name);

-- Per (interval, queue) of the visits entered at or after `since` (an
-- interval boundary): what pbx.queue_stats_15m_data stores.
CREATE VIEW IF NOT EXISTS pbx.queue_stats_15m_since ${ON_CLUSTER} AS
SELECT
    toStartOfInterval(toDateTime(entered_at), INTERVAL 15 MINUTE) AS interval_start,
    toString(queue_name) AS queue_name,
    count() AS visits,
    countIf(outcome IN ('answered', 'abandoned', 'short_abandon', 'overflow')) AS offered,
    countIf(outcome = 'answered') AS answered,
    countIf(outcome = 'abandoned') AS abandoned,
    countIf(outcome = 'short_abandon') AS short_abandoned,
    countIf(outcome = 'overflow') AS overflowed,
    countIf(outcome = 'answered' AND in_sla = 1) AS answered_in_sla,
    countIf(outcome IN ('abandoned', 'short_abandon') AND wait_s <= sla_threshold_s) AS abandoned_in_sla,
    toInt64(sumIf(round(ifNull(wait_s, 0) * 1000), outcome = 'answered')) AS answered_wait_ms,
    toInt64(sumIf(round(ifNull(wait_s, 0) * 1000), outcome = 'abandoned')) AS abandoned_wait_ms,
    -- Over ended visits (an overflow whose end is not known yet has no wait).
    toInt64(maxIf(toNullable(round(ifNull(wait_s, 0) * 1000)), outcome != 'waiting' AND wait_s IS NOT NULL)) AS max_wait_ms
FROM pbx.queue_calls_since(since = {since:DateTime64(3, 'UTC')})
GROUP BY interval_start, queue_name;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.queue_stats_15m_refresh ${ON_CLUSTER}
REFRESH EVERY 5 SECOND APPEND TO pbx.queue_stats_15m_data AS
WITH
    (SELECT max(computed_at) FROM pbx.queue_stats_15m_data) AS watermark,
    (SELECT minOrNull(hour) FROM pbx.event_arrivals WHERE arrived_at > watermark - INTERVAL 15 SECOND) AS dirty_from,
    (SELECT max(updated_at) FROM pbx.queue_settings) > watermark - INTERVAL 15 SECOND AS settings_changed,
    (
        SELECT minOrNull(received_at) FROM pbx.events
        -- (a call lasts less than a day: its queue_in is at most a day older)
        WHERE event = 'queue_in' AND received_at >= dirty_from - INTERVAL 1 DAY AND call_id IN
            (SELECT call_id FROM pbx.events WHERE received_at >= dirty_from AND call_id != '')
    ) AS first_dirty_visit,
    assumeNotNull(multiIf(
        settings_changed, toDateTime64(0, 3, 'UTC'),
        dirty_from IS NULL, toDateTime64('2200-01-01 00:00:00', 3, 'UTC'),
        toDateTime64(toStartOfInterval(toDateTime(least(dirty_from, coalesce(first_dirty_visit, dirty_from))),
            INTERVAL 15 MINUTE), 3, 'UTC'))) AS lo
SELECT
    interval_start,
    queue_name,
    sum(visits) AS visits,
    sum(offered) AS offered,
    sum(answered) AS answered,
    sum(abandoned) AS abandoned,
    sum(short_abandoned) AS short_abandoned,
    sum(overflowed) AS overflowed,
    sum(answered_in_sla) AS answered_in_sla,
    sum(abandoned_in_sla) AS abandoned_in_sla,
    sum(answered_wait_ms) AS answered_wait_ms,
    sum(abandoned_wait_ms) AS abandoned_wait_ms,
    max(max_wait_ms) AS max_wait_ms,
    now64(3, 'UTC') AS computed_at
FROM
(
    SELECT * FROM pbx.queue_stats_15m_since(since = lo)
    UNION ALL
    -- Intervals computed before get a row again even if no visit is left in
    -- them (a re-delivered queue_in folded into an earlier one).
    SELECT DISTINCT interval_start, toString(queue_name), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL
    FROM pbx.queue_stats_15m_data
    WHERE interval_start >= lo
)
GROUP BY interval_start, queue_name;

CREATE VIEW IF NOT EXISTS pbx.queue_stats_15m ${ON_CLUSTER} AS
SELECT
    interval_start,
    queue_name,
    offered,
    answered,
    abandoned,
    short_abandoned,
    overflowed,
    answered_in_sla,
    if(answered + abandoned = 0, NULL, 100 * answered_in_sla / (answered + abandoned)) AS sla_pct,
    if(answered = 0, NULL, 100 * answered_in_sla / answered) AS sla_answered_pct,
    if(offered - overflowed = 0, NULL,
        100 * (answered_in_sla + abandoned_in_sla) / (offered - overflowed)) AS sla_inclusive_pct,
    if(answered + abandoned = 0, NULL, 100 * abandoned / (answered + abandoned)) AS abandon_rate_pct,
    if(answered = 0, NULL, answered_wait_ms / answered / 1000) AS asa_s,
    if(abandoned = 0, NULL, abandoned_wait_ms / abandoned / 1000) AS avg_abandon_s,
    max_wait_ms / 1000 AS max_wait_s
FROM pbx.queue_stats_15m_data FINAL
WHERE visits > 0;

-- One row per (15-minute interval, agent) recomputation; the newest wins.
CREATE TABLE IF NOT EXISTS pbx.agent_stats_15m_data ${ON_CLUSTER}
(
    interval_start DateTime('UTC'),
    agent String,
    logged_in_ms Int64,
    paused_ms Int64,
    talk_ms Int64,
    idle_ms Int64,
    calls_answered UInt64,
    ring_no_answer UInt64,
    -- The newest event time when this row was computed: a logged-in agent's
    -- time runs up to it, so the next refresh recomputes from there.
    data_end DateTime64(3, 'UTC'),
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ${REPLICATED}ReplacingMergeTree(computed_at)
ORDER BY (interval_start, agent);

-- Per (interval, agent) from `since` (an interval boundary) on: what
-- pbx.agent_stats_15m_data stores. Answers for ring_no_answer are looked up
-- from one day before `since`.
CREATE VIEW IF NOT EXISTS pbx.agent_stats_15m_since ${ON_CLUSTER} AS
SELECT
    interval_start,
    agent,
    sumIf(ms, state IN ('talk', 'paused', 'idle')) AS logged_in_ms,
    sumIf(ms, state = 'paused') AS paused_ms,
    sumIf(ms, state = 'talk') AS talk_ms,
    sumIf(ms, state = 'idle') AS idle_ms,
    countIf(state = 'answer') AS calls_answered,
    countIf(state = 'ring_no_answer') AS ring_no_answer
FROM
(
    -- Segment time, split at interval boundaries to the millisecond.
    SELECT interval_start, agent, state, ms
    FROM
    (
        SELECT
            agent,
            toString(state) AS state,
            greatest(started_at, {since:DateTime64(3, 'UTC')}) AS seg_start,
            ended_at AS seg_end,
            arrayJoin(arrayMap(
                i -> toStartOfInterval(toDateTime(seg_start), INTERVAL 15 MINUTE) + toIntervalMinute(15 * i),
                range(toUInt64(intDiv(
                    toUnixTimestamp(toStartOfInterval(toDateTime(seg_end), INTERVAL 15 MINUTE))
                    - toUnixTimestamp(toStartOfInterval(toDateTime(seg_start), INTERVAL 15 MINUTE)),
                    900) + 1)))) AS interval_start,
            dateDiff('millisecond', greatest(seg_start, toDateTime64(interval_start, 3, 'UTC')),
                least(seg_end, toDateTime64(interval_start + toIntervalMinute(15), 3, 'UTC'))) AS ms
        FROM pbx.agent_segments_since(since = {since:DateTime64(3, 'UTC')})
        WHERE state != 'logged_out' AND ended_at > started_at
    )
    WHERE ms > 0
    UNION ALL
    SELECT toStartOfInterval(toDateTime(received_at), INTERVAL 15 MINUTE), line_userid, 'answer', 0
    FROM pbx.events
    WHERE event = 'answered_internal' AND line_userid != '' AND received_at >= {since:DateTime64(3, 'UTC')}
    UNION ALL
    -- A ring of an agent on a call that agent never answered.
    SELECT toStartOfInterval(toDateTime(received_at), INTERVAL 15 MINUTE), line_userid, 'ring_no_answer', 0
    FROM pbx.events
    WHERE event = 'start_int_dial' AND line_userid != '' AND received_at >= {since:DateTime64(3, 'UTC')}
      AND (call_id, line_userid) NOT IN
        (SELECT call_id, line_userid FROM pbx.events
         WHERE event IN ('answered_internal', 'answered_external')
           AND received_at >= {since:DateTime64(3, 'UTC')} - INTERVAL 1 DAY)
)
GROUP BY interval_start, agent;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_stats_15m_refresh ${ON_CLUSTER}
REFRESH EVERY 5 SECOND APPEND TO pbx.agent_stats_15m_data AS
WITH
    (SELECT max(computed_at) FROM pbx.agent_stats_15m_data) AS watermark,
    (SELECT minOrNull(hour) FROM pbx.event_arrivals WHERE arrived_at > watermark - INTERVAL 15 SECOND) AS dirty_from,
    (SELECT maxOrNull(data_end) FROM pbx.agent_stats_15m_data) AS last_data_end,
    -- A new answer turns an earlier ring of that call into an answered one.
    (
        SELECT minOrNull(received_at) FROM pbx.events
        WHERE event = 'start_int_dial' AND received_at >= dirty_from - INTERVAL 1 DAY AND call_id IN
            (SELECT call_id FROM pbx.events
             WHERE event IN ('answered_internal', 'answered_external') AND received_at >= dirty_from)
    ) AS first_dirty_ring,
    assumeNotNull((SELECT max(received_at) FROM pbx.events)) AS data_end,
    assumeNotNull(if(dirty_from IS NULL, toDateTime64('2200-01-01 00:00:00', 3, 'UTC'),
        toDateTime64(toStartOfInterval(toDateTime(least(dirty_from, coalesce(last_data_end, dirty_from),
            coalesce(first_dirty_ring, dirty_from))), INTERVAL 15 MINUTE), 3, 'UTC'))) AS lo
SELECT
    interval_start,
    agent,
    sum(logged_in_ms) AS logged_in_ms,
    sum(paused_ms) AS paused_ms,
    sum(talk_ms) AS talk_ms,
    sum(idle_ms) AS idle_ms,
    sum(calls_answered) AS calls_answered,
    sum(ring_no_answer) AS ring_no_answer,
    data_end,
    now64(3, 'UTC') AS computed_at
FROM
(
    SELECT * FROM pbx.agent_stats_15m_since(since = lo)
    UNION ALL
    -- Intervals computed before get a row again even if nothing is left in
    -- them (a late logout shortens an agent's time).
    SELECT DISTINCT interval_start, agent, 0, 0, 0, 0, 0, 0
    FROM pbx.agent_stats_15m_data
    WHERE interval_start >= lo
)
GROUP BY interval_start, agent;

CREATE VIEW IF NOT EXISTS pbx.agent_stats_15m ${ON_CLUSTER} AS
SELECT
    interval_start,
    agent,
    logged_in_ms / 1000 AS logged_in_s,
    paused_ms / 1000 AS paused_s,
    talk_ms / 1000 AS talk_s,
    idle_ms / 1000 AS idle_s,
    calls_answered,
    ring_no_answer,
    if(talk_ms + idle_ms = 0, NULL, 100 * talk_ms / (talk_ms + idle_ms)) AS occupancy_pct
FROM pbx.agent_stats_15m_data FINAL
WHERE logged_in_ms > 0 OR calls_answered > 0 OR ring_no_answer > 0;

-- The same two views computed from raw events on every read, with no
-- materialization: for checking (tests compare them) and for measuring what
-- the materialization saves (bench/). Slow on months of data; dashboards read
-- pbx.queue_stats_15m and pbx.agent_stats_15m.
CREATE VIEW IF NOT EXISTS pbx.queue_stats_15m_raw ${ON_CLUSTER} AS
SELECT
    interval_start,
    queue_name,
    offered,
    answered,
    abandoned,
    short_abandoned,
    overflowed,
    answered_in_sla,
    if(answered + abandoned = 0, NULL, 100 * answered_in_sla / (answered + abandoned)) AS sla_pct,
    if(answered = 0, NULL, 100 * answered_in_sla / answered) AS sla_answered_pct,
    if(offered - overflowed = 0, NULL,
        100 * (answered_in_sla + abandoned_in_sla) / (offered - overflowed)) AS sla_inclusive_pct,
    if(answered + abandoned = 0, NULL, 100 * abandoned / (answered + abandoned)) AS abandon_rate_pct,
    if(answered = 0, NULL, answered_wait_ms / answered / 1000) AS asa_s,
    if(abandoned = 0, NULL, abandoned_wait_ms / abandoned / 1000) AS avg_abandon_s,
    max_wait_ms / 1000 AS max_wait_s
FROM pbx.queue_stats_15m_since(since = toDateTime64(0, 3, 'UTC'));

CREATE VIEW IF NOT EXISTS pbx.agent_stats_15m_raw ${ON_CLUSTER} AS
SELECT
    interval_start,
    agent,
    logged_in_ms / 1000 AS logged_in_s,
    paused_ms / 1000 AS paused_s,
    talk_ms / 1000 AS talk_s,
    idle_ms / 1000 AS idle_s,
    calls_answered,
    ring_no_answer,
    if(talk_ms + idle_ms = 0, NULL, 100 * talk_ms / (talk_ms + idle_ms)) AS occupancy_pct
FROM pbx.agent_stats_15m_since(since = toDateTime64(0, 3, 'UTC'));
