-- Agent time summed per interval and agent, stored beside the stretches it is
-- the sum of: what pbx.agent_stats_15m and pbx.agent_states_15m read for the
-- agent-intervals that are not dirty, a row per agent-interval instead of
-- every stretch (docs/metrics.md#how-the-views-are-computed). One row per
-- (interval, agent): `states` holds the milliseconds per (state, state_name)
-- of its stretches.
CREATE TABLE IF NOT EXISTS pbx.agent_time_15m_data ${ON_CLUSTER}
(
    interval_start DateTime('UTC'),
    agent String,
    states Array(Tuple(state String, state_name String, ms Int64)),
    computed_at DateTime64(3, 'UTC'),
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(computed_at, is_deleted)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (interval_start, agent);

-- Written from the same rows of pbx.agent_work as pbx.agent_time_data, so by
-- the same replacement rule: a computed window is whole intervals, and its
-- pieces are every stretch of each interval it covers (new ones, and the keys
-- stored before that it no longer produces, deleted): each interval it touches
-- gets the sums of its new stretches, or a deleted row if none is left.
CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_time_15m_mv ${ON_CLUSTER} TO pbx.agent_time_15m_data AS
SELECT interval_start, agent,
       arraySort(groupArrayIf((state, state_name, ms), deleted = 0)) AS states,
       computed_at, min(deleted) AS is_deleted
FROM
(
    SELECT p.interval_start AS interval_start, agent, p.state AS state, p.state_name AS state_name, computed_at,
           p.is_deleted AS deleted, sum(dateDiff('millisecond', p.started_at, p.ended_at)) AS ms
    FROM pbx.agent_work
    ARRAY JOIN pieces AS p
    GROUP BY interval_start, agent, state, state_name, computed_at, deleted
)
GROUP BY interval_start, agent, computed_at;

-- The sums of the stretches stored before this table, computed once: the
-- first migration that has this file fills it and records that here (later
-- ones repeat these statements and find the record). The view above exists
-- first, so a refresh that runs meanwhile is in one or the other; a filled row
-- is versioned a millisecond before its stretches, so a row the view wrote for
-- the same interval wins over it.
CREATE TABLE IF NOT EXISTS pbx.agent_time_15m_filled ${ON_CLUSTER}
(
    filled_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY tuple();

INSERT INTO pbx.agent_time_15m_data
SELECT interval_start, agent, arraySort(groupArray((state, state_name, ms))), max(version) - INTERVAL 1 MILLISECOND, 0
FROM
(
    SELECT interval_start, agent, toString(state) AS state, toString(state_name) AS state_name,
           sum(dateDiff('millisecond', started_at, ended_at)) AS ms, max(computed_at) AS version
    FROM pbx.agent_time_data FINAL
    WHERE is_deleted = 0 AND (SELECT count() FROM pbx.agent_time_15m_filled) = 0
    GROUP BY interval_start, agent, state, state_name
)
GROUP BY interval_start, agent
SETTINGS max_bytes_before_external_group_by = 400000000;

INSERT INTO pbx.agent_time_15m_filled
SELECT now64(3, 'UTC') WHERE (SELECT count() FROM pbx.agent_time_15m_filled) = 0;
