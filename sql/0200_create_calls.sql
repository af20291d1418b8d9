-- Call records: one row per call, inbound, outbound or internal, with every
-- queue and agent it touched (issue 14). Definitions and tie rules:
-- docs/metrics.md#pbxcalls.
--
-- A call is every event with one call_id (the call-scoped webhooks; agent
-- events carry no call_id). Its events are gathered with one GROUP BY call_id
-- and read there, so the row is the same whatever the order or batching in
-- which they arrived. Every column is a presence (an event of a kind exists),
-- the earliest event of a kind, or a difference of two such times: no column
-- pairs an event with the *next* event of another kind, which is where a
-- reordering by a few milliseconds changes results (issue 10).
--
-- pbx.calls_since(since): the calls whose earliest event is at or after
-- `since`, always from raw events. Events are read from `since` on, and a
-- call with an event in the day before `since` is left out (it started
-- earlier; a call is assumed to last less than a day, as elsewhere).
--
-- pbx.calls: calls started in the last 6 hours from raw events (exact the
-- moment their events are stored), older ones from pbx.calls_data, kept by a
-- refreshable materialized view exactly as pbx.queue_calls_data is kept for
-- visits (0008_create_queue_calls_data.sql): every 5 seconds it recomputes
-- the calls that new events can have changed and appends them.

CREATE VIEW IF NOT EXISTS pbx.calls_since ${ON_CLUSTER} AS
SELECT
    call_id,
    first_custom_call_id AS custom_call_id,
    started_at,
    ended_at,
    CAST(multiIf(
        outbound_legs > 0, 'outbound',
        external_starts > 0 OR notEmpty(queues), 'inbound',
        'internal'), 'LowCardinality(String)') AS direction,
    if(start_caller_num != '', start_caller_num, any_caller_num) AS caller_num,
    if(start_dialed_num != '', start_dialed_num, any_dialed_num) AS dialed_num,
    queues,
    if(empty(answers), NULL, answers[1].1) AS answered_at,
    -- '' is "the PBX did not send it": no agent to name.
    if(empty(answers), NULL, nullIf(answers[1].2, '')) AS agent,
    -- arrayDistinct keeps each agent's first occurrence, in order.
    arrayDistinct(arrayFilter(a -> a != '', arrayMap(a -> a.2, answers))) AS agents,
    dateDiff('millisecond', started_at, answered_at) / 1000 AS wait_s,
    -- An answer can reach us a few ms after the call_end (concurrent
    -- webhooks): the call was answered and talked ~0 s, not less.
    if(answered_at IS NULL OR ended_at IS NULL, NULL,
        greatest(dateDiff('millisecond', answered_at, ended_at), 0) / 1000) AS talk_s,
    dateDiff('millisecond', started_at, ended_at) / 1000 AS duration_s,
    CAST(multiIf(
        ended_at IS NULL, 'active',
        answered_at IS NOT NULL, 'answered',
        notEmpty(queues), 'abandoned',
        'unanswered'), 'LowCardinality(String)') AS outcome,
    recorded,
    spied
FROM
(
    SELECT
        call_id,
        min(received_at) AS started_at,
        minIf(toNullable(received_at), event = 'call_end') AS ended_at,
        -- "The first value" of a column is that of the earliest event that
        -- has one. event_order sorts events by time and, within the same
        -- millisecond, by a hash of event_id: arbitrary but fixed for the
        -- stored rows. (When pbx.events gets its arrival-order column, ties go
        -- by arrival.) One UInt128 rather than a tuple: 4x faster in argMin.
        argMinIf(custom_call_id, event_order, custom_call_id != '') AS first_custom_call_id,
        argMinIf(caller_num, event_order, event = 'start_call' AND caller_num != '') AS start_caller_num,
        argMinIf(caller_num, event_order, caller_num != '') AS any_caller_num,
        argMinIf(dialed_num, event_order, event = 'start_call' AND dialed_num != '') AS start_dialed_num,
        argMinIf(dialed_num, event_order, dialed_num != '') AS any_dialed_num,
        countIf(event IN ('start_ext_dial', 'answered_external')) AS outbound_legs,
        countIf(event = 'start_call' AND caller_type = 'external') AS external_starts,
        -- Every queue_in, in time order: a call that comes back to a queue lists it again.
        arrayMap(q -> q.2, arraySort(groupArrayIf((event_order, toString(queue_name)), event = 'queue_in'))) AS queues,
        -- Answers by time; of two in the same millisecond the smaller agent id
        -- is first (as for a visit's agent in pbx.queue_calls).
        arraySort(groupArrayIf((received_at, line_userid), event IN ('answered_internal', 'answered_external'))) AS answers,
        toUInt8(countIf(event = 'call_recording_start') > 0) AS recorded,
        toUInt8(countIf(event = 'call_spy_start') > 0) AS spied
    FROM
    (
        SELECT
            *,
            bitOr(bitShiftLeft(toUInt128(toUnixTimestamp64Milli(received_at)), 64),
                  toUInt128(cityHash64(event_id))) AS event_order
        FROM pbx.events
        WHERE call_id != '' AND received_at >= {since:DateTime64(3, 'UTC')}
          -- GLOBAL: on a cluster the set is built once and sent to every shard.
          AND call_id GLOBAL NOT IN
            (SELECT call_id FROM pbx.events
             WHERE call_id != ''
               AND received_at >= {since:DateTime64(3, 'UTC')} - INTERVAL 1 DAY
               AND received_at < {since:DateTime64(3, 'UTC')})
    )
    GROUP BY call_id
);

-- Every call as of the last refresh; the newest computation of a call wins.
-- A call whose earliest event arrives late starts earlier: its row under the
-- old started_at gets is_deleted = 1.
CREATE TABLE IF NOT EXISTS pbx.calls_data ${ON_CLUSTER}
(
    call_id String,
    custom_call_id String,
    started_at DateTime64(3, 'UTC'),
    ended_at Nullable(DateTime64(3, 'UTC')),
    direction LowCardinality(String),
    caller_num String,
    dialed_num String,
    queues Array(String),
    answered_at Nullable(DateTime64(3, 'UTC')),
    agent Nullable(String),
    agents Array(String),
    wait_s Nullable(Float64),
    talk_s Nullable(Float64),
    duration_s Nullable(Float64),
    outcome LowCardinality(String),
    recorded UInt8,
    spied UInt8,
    computed_at DateTime64(3, 'UTC'),
    is_deleted UInt8,
    -- "Show me that call": by number or id over months of history.
    INDEX idx_caller_num caller_num TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_call_id call_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ${REPLICATED}ReplacingMergeTree(computed_at, is_deleted)
ORDER BY (started_at, call_id);

-- Which calls a refresh recomputes: those started at or after `lo`, the
-- earliest of (a) the first hour that received events since the previous
-- refresh (pbx.event_arrivals, with 15 s of overlap) and (b) the earliest
-- event of any call with events in those hours (a late call_end changes a
-- call that started earlier). Nothing new arrived: nothing is recomputed.
CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.calls_data_refresh ${ON_CLUSTER}
REFRESH EVERY 5 SECOND APPEND TO pbx.calls_data AS
WITH
    (SELECT max(computed_at) FROM pbx.calls_data) AS watermark,
    (SELECT minOrNull(hour) FROM pbx.event_arrivals WHERE arrived_at > watermark - INTERVAL 15 SECOND) AS dirty_from,
    (
        SELECT minOrNull(received_at) FROM pbx.events
        -- (a call lasts less than a day: its first event is at most a day older)
        WHERE call_id != '' AND received_at >= dirty_from - INTERVAL 1 DAY AND call_id IN
            (SELECT call_id FROM pbx.events WHERE received_at >= dirty_from AND call_id != '')
    ) AS first_dirty_event,
    assumeNotNull(if(dirty_from IS NULL, toDateTime64('2200-01-01 00:00:00', 3, 'UTC'),
        least(dirty_from, coalesce(first_dirty_event, dirty_from)))) AS lo
SELECT
    call_id,
    anyIf(custom_call_id, fresh = 1) AS custom_call_id,
    started_at,
    anyIf(ended_at, fresh = 1) AS ended_at,
    anyIf(direction, fresh = 1) AS direction,
    anyIf(caller_num, fresh = 1) AS caller_num,
    anyIf(dialed_num, fresh = 1) AS dialed_num,
    anyIf(queues, fresh = 1) AS queues,
    anyIf(answered_at, fresh = 1) AS answered_at,
    anyIf(agent, fresh = 1) AS agent,
    anyIf(agents, fresh = 1) AS agents,
    anyIf(wait_s, fresh = 1) AS wait_s,
    anyIf(talk_s, fresh = 1) AS talk_s,
    anyIf(duration_s, fresh = 1) AS duration_s,
    anyIf(outcome, fresh = 1) AS outcome,
    toUInt8(ifNull(maxIf(recorded, fresh = 1), 0)) AS recorded,
    toUInt8(ifNull(maxIf(spied, fresh = 1), 0)) AS spied,
    now64(3, 'UTC') AS computed_at,
    toUInt8(countIf(fresh = 1) = 0) AS is_deleted
FROM
(
    SELECT call_id, custom_call_id, started_at, ended_at, toString(direction) AS direction, caller_num, dialed_num,
           queues, answered_at, agent, agents, wait_s, talk_s, duration_s, toString(outcome) AS outcome,
           recorded, spied, 1 AS fresh
    FROM pbx.calls_since(since = lo)
    UNION ALL
    -- Calls stored before: deleted if the recomputation no longer has them.
    -- (FINAL: a row deleted before is not deleted again at every refresh.)
    SELECT call_id, '', started_at, NULL, '', '', '', [], NULL, NULL, [], NULL, NULL, NULL, '', 0, 0, 0
    FROM pbx.calls_data FINAL
    WHERE started_at >= lo
)
GROUP BY call_id, started_at;

-- The contract view: every call.
CREATE VIEW IF NOT EXISTS pbx.calls ${ON_CLUSTER} AS
WITH now64(3, 'UTC') - INTERVAL 6 HOUR AS recent
SELECT call_id, custom_call_id, started_at, ended_at, direction, caller_num, dialed_num, queues, answered_at,
       agent, agents, wait_s, talk_s, duration_s, outcome, recorded, spied
FROM pbx.calls_data FINAL
WHERE started_at < recent AND is_deleted = 0
UNION ALL
SELECT call_id, custom_call_id, started_at, ended_at, direction, caller_num, dialed_num, queues, answered_at,
       agent, agents, wait_s, talk_s, duration_s, outcome, recorded, spied
FROM pbx.calls_since(since = recent);
