-- The per-call figures, stored: queue visits, recording audits, spy sessions,
-- rings and call records, kept by one refreshable view for layer 'calls' (0218).
--
-- Every minute pbx.calls_refresh computes pbx.call_facts_refresh for one run's
-- share of the dirty calls (pbx.arrivals_from: bounded work and memory for a
-- backlog of any length, which takes several runs) and appends one row per
-- call to pbx.call_work, a Null table: nothing is kept there, its incremental
-- views spread each row's arrays over the stored tables, record the calls as
-- computed (pbx.refresh_done) and move the layer's cursor (pbx.refresh_marks).
--
-- Stored tables are ReplacingMergeTree(computed_at, is_deleted): the newest
-- computation of a row wins; a row whose key a call no longer produces (a
-- re-sent queue_in folded into the visit before it, a recording whose time key
-- moved) gets is_deleted = 1. Readers use FINAL. They are written on each node
-- by that node's refresh (no ${REPLICATED}): on a cluster every node keeps its
-- own copy, as for every refreshed table.

CREATE TABLE IF NOT EXISTS pbx.queue_visits_data ${ON_CLUSTER}
(
    entered_at DateTime64(3, 'UTC'),
    call_id String,
    queue_name LowCardinality(String),
    left_at Nullable(DateTime64(3, 'UTC')),
    -- The call's first answered_internal from entered_at on and before its next
    -- visit: the visit's answer if within the queue's answer grace of left_at.
    answer_at Nullable(DateTime64(3, 'UTC')),
    answer_agent Nullable(String),
    -- The call has a later visit (an overflow unless answered).
    overflow UInt8,
    computed_at DateTime64(3, 'UTC'),
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(computed_at, is_deleted)
PARTITION BY toYYYYMM(entered_at)
ORDER BY (entered_at, call_id, queue_name);

CREATE TABLE IF NOT EXISTS pbx.recordings_data ${ON_CLUSTER}
(
    -- coalesce(answered_at, ended_at, first recording start): the sort key.
    at DateTime64(3, 'UTC'),
    call_id String,
    answered_at Nullable(DateTime64(3, 'UTC')),
    ended_at Nullable(DateTime64(3, 'UTC')),
    segments UInt32,
    recording_ms Nullable(Int64),
    unstopped UInt8,
    computed_at DateTime64(3, 'UTC'),
    is_deleted UInt8,
    -- The Audit dashboard filters on coalesce(answered_at, ended_at).
    INDEX idx_answered_or_ended coalesce(answered_at, ended_at) TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(computed_at, is_deleted)
PARTITION BY toYYYYMM(at)
ORDER BY (at, call_id);

CREATE TABLE IF NOT EXISTS pbx.spy_sessions_data ${ON_CLUSTER}
(
    started_at DateTime64(3, 'UTC'),
    call_id String,
    spying_userid String,
    spying_target_userid String,
    seq UInt64,                           -- of the start: two starts in one millisecond stay two rows
    spying_exten String,
    spying_target_exten String,
    spy_type LowCardinality(String),
    ended_at Nullable(DateTime64(3, 'UTC')),
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(started_at)
ORDER BY (started_at, call_id, spying_userid, spying_target_userid, seq);

-- Every ring of an agent (start_int_dial), and whether that agent answered the call.
CREATE TABLE IF NOT EXISTS pbx.agent_rings_data ${ON_CLUSTER}
(
    rung_at DateTime64(3, 'UTC'),
    agent String,
    call_id String,
    seq UInt64,
    answered UInt8,
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(rung_at)
ORDER BY (rung_at, agent, call_id, seq);

-- One record per call (pbx.calls, issue 14): the columns that do not follow
-- from others (wait_s, talk_s, duration_s and outcome are computed when read).
-- A call whose earliest event arrives late starts earlier: its row under the
-- old started_at gets is_deleted = 1.
CREATE TABLE IF NOT EXISTS pbx.calls_data ${ON_CLUSTER}
(
    started_at DateTime64(3, 'UTC'),
    call_id String,
    custom_call_id String,
    ended_at Nullable(DateTime64(3, 'UTC')),
    direction LowCardinality(String),
    caller_num String,
    dialed_num String,
    queues Array(String),
    answered_at Nullable(DateTime64(3, 'UTC')),
    agent Nullable(String),
    agents Array(String),
    recorded UInt8,
    spied UInt8,
    computed_at DateTime64(3, 'UTC'),
    is_deleted UInt8,
    -- "Show me that call": by number or id over months of history.
    INDEX idx_caller_num caller_num TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_call_id call_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(computed_at, is_deleted)
PARTITION BY toYYYYMM(started_at)
ORDER BY (started_at, call_id);

-- One row per computed call; the arrays are pbx.call_facts_*' (plus is_deleted rows).
CREATE TABLE IF NOT EXISTS pbx.call_work ${ON_CLUSTER}
(
    call_id String,                       -- '' for the row that only moves the cursor
    computed_at DateTime64(3, 'UTC'),
    -- The last arrival row this run read (the layer's new cursor).
    cursor Tuple(DateTime64(3, 'UTC'), String, String),
    visits Array(Tuple(
        entered_at DateTime64(3, 'UTC'), queue_name String, left_at Nullable(DateTime64(3, 'UTC')),
        answer_at Nullable(DateTime64(3, 'UTC')), answer_agent Nullable(String), overflow UInt8, is_deleted UInt8)),
    recording Array(Tuple(
        at DateTime64(3, 'UTC'), answered_at Nullable(DateTime64(3, 'UTC')), ended_at Nullable(DateTime64(3, 'UTC')),
        segments UInt32, recording_ms Nullable(Int64), unstopped UInt8, is_deleted UInt8)),
    spies Array(Tuple(
        started_at DateTime64(3, 'UTC'), seq UInt64, spying_userid String, spying_target_userid String,
        spying_exten String, spying_target_exten String, spy_type String, ended_at Nullable(DateTime64(3, 'UTC')))),
    rings Array(Tuple(rung_at DateTime64(3, 'UTC'), seq UInt64, agent String, answered UInt8)),
    record Array(Tuple(
        started_at DateTime64(3, 'UTC'), custom_call_id String, ended_at Nullable(DateTime64(3, 'UTC')),
        direction String, caller_num String, dialed_num String, queues Array(String),
        answered_at Nullable(DateTime64(3, 'UTC')), agent Nullable(String), agents Array(String),
        recorded UInt8, spied UInt8, is_deleted UInt8))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.queue_visits_mv ${ON_CLUSTER} TO pbx.queue_visits_data AS
SELECT v.entered_at AS entered_at, call_id, v.queue_name AS queue_name, v.left_at AS left_at,
       v.answer_at AS answer_at, v.answer_agent AS answer_agent, v.overflow AS overflow, computed_at,
       v.is_deleted AS is_deleted
FROM pbx.call_work
ARRAY JOIN visits AS v;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.recordings_mv ${ON_CLUSTER} TO pbx.recordings_data AS
SELECT r.at AS at, call_id, r.answered_at AS answered_at, r.ended_at AS ended_at, r.segments AS segments,
       r.recording_ms AS recording_ms, r.unstopped AS unstopped, computed_at, r.is_deleted AS is_deleted
FROM pbx.call_work
ARRAY JOIN recording AS r;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.spy_sessions_mv ${ON_CLUSTER} TO pbx.spy_sessions_data AS
SELECT s.started_at AS started_at, call_id, s.spying_userid AS spying_userid,
       s.spying_target_userid AS spying_target_userid, s.seq AS seq, s.spying_exten AS spying_exten,
       s.spying_target_exten AS spying_target_exten, s.spy_type AS spy_type, s.ended_at AS ended_at, computed_at
FROM pbx.call_work
ARRAY JOIN spies AS s;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_rings_mv ${ON_CLUSTER} TO pbx.agent_rings_data AS
SELECT r.rung_at AS rung_at, r.agent AS agent, call_id, r.seq AS seq, r.answered AS answered, computed_at
FROM pbx.call_work
ARRAY JOIN rings AS r;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.calls_mv ${ON_CLUSTER} TO pbx.calls_data AS
SELECT r.started_at AS started_at, call_id, r.custom_call_id AS custom_call_id, r.ended_at AS ended_at,
       r.direction AS direction, r.caller_num AS caller_num, r.dialed_num AS dialed_num, r.queues AS queues,
       r.answered_at AS answered_at, r.agent AS agent, r.agents AS agents, r.recorded AS recorded,
       r.spied AS spied, computed_at, r.is_deleted AS is_deleted
FROM pbx.call_work
ARRAY JOIN record AS r;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.call_work_done_mv ${ON_CLUSTER} TO pbx.refresh_done AS
SELECT 'calls' AS layer, call_id AS id, computed_at
FROM pbx.call_work
WHERE call_id != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.call_work_mark_mv ${ON_CLUSTER} TO pbx.refresh_marks AS
SELECT 'calls' AS layer, max(cursor) AS cursor
FROM pbx.call_work;
