-- pbx.queue_calls served from a materialized copy of its history, so lists of
-- visits over weeks (the abandoned calls, outcome and overflow panels) read
-- stored rows instead of pairing raw events on every query.
--
-- pbx.queue_calls_data holds every visit as of the last refresh; a refreshable
-- materialized view recomputes, every 5 seconds, the visits that new events
-- can have changed (the same window rule as pbx.queue_stats_15m, see
-- 0007_create_stats_15m.sql) from pbx.queue_calls_since, and appends them.
-- ReplacingMergeTree(computed_at, is_deleted): the newest computation of a
-- visit wins; a visit that no longer exists (a re-delivered queue_in folded
-- into an earlier one) gets is_deleted = 1.
--
-- pbx.queue_calls then reads visits of the last 6 hours from raw events (exact
-- at once, as before) and older ones from pbx.queue_calls_data (exact as of the
-- last refresh: a late event for an older visit shows within seconds).

CREATE TABLE IF NOT EXISTS pbx.queue_calls_data ${ON_CLUSTER}
(
    call_id String,
    queue_name LowCardinality(String),
    entered_at DateTime64(3, 'UTC'),
    left_at Nullable(DateTime64(3, 'UTC')),
    answered_at Nullable(DateTime64(3, 'UTC')),
    agent Nullable(String),
    wait_s Nullable(Float64),
    outcome LowCardinality(String),
    in_sla UInt8,
    computed_at DateTime64(3, 'UTC'),
    is_deleted UInt8
)
ENGINE = ${REPLICATED}ReplacingMergeTree(computed_at, is_deleted)
ORDER BY (entered_at, call_id, queue_name);

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.queue_calls_refresh ${ON_CLUSTER}
REFRESH EVERY 5 SECOND APPEND TO pbx.queue_calls_data AS
WITH
    (SELECT max(computed_at) FROM pbx.queue_calls_data) AS watermark,
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
    call_id,
    queue_name,
    entered_at,
    anyIf(left_at, fresh = 1) AS left_at,
    anyIf(answered_at, fresh = 1) AS answered_at,
    anyIf(agent, fresh = 1) AS agent,
    anyIf(wait_s, fresh = 1) AS wait_s,
    anyIf(outcome, fresh = 1) AS outcome,
    toUInt8(ifNull(maxIf(in_sla, fresh = 1), 0)) AS in_sla,
    now64(3, 'UTC') AS computed_at,
    toUInt8(countIf(fresh = 1) = 0) AS is_deleted
FROM
(
    SELECT call_id, toString(queue_name) AS queue_name, entered_at, left_at, answered_at, agent, wait_s,
           toString(outcome) AS outcome, in_sla, 1 AS fresh
    FROM pbx.queue_calls_since(since = lo)
    UNION ALL
    -- Visits stored before: deleted if the recomputation no longer has them.
    SELECT DISTINCT call_id, toString(queue_name), entered_at, NULL, NULL, NULL, NULL, '', 0, 0
    FROM pbx.queue_calls_data
    WHERE entered_at >= lo
)
GROUP BY call_id, queue_name, entered_at;

CREATE OR REPLACE VIEW pbx.queue_calls ${ON_CLUSTER} AS
WITH now64(3, 'UTC') - INTERVAL 6 HOUR AS recent
SELECT call_id, queue_name, entered_at, left_at, answered_at, agent, wait_s, outcome, in_sla
FROM pbx.queue_calls_data FINAL
WHERE entered_at < recent AND is_deleted = 0
UNION ALL
SELECT call_id, queue_name, entered_at, left_at, answered_at, agent, wait_s, outcome, in_sla
FROM pbx.queue_calls_since(since = recent);
