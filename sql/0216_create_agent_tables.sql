-- Agent time: each agent's timeline of states (talk, paused, idle, logged
-- out), stored per 15-minute interval and kept by one refreshable view for
-- layer 'agents'. Definitions and tie rules: docs/metrics.md#agent-time.
--
-- An agent's state at an instant depends on earlier events (the last login,
-- the last state set, calls still going), so an agent is recomputed over
-- windows of its time: from the earliest instant a new event can change to
-- the point after which nothing it changes can reach.
--   * an agent event (login, logout, set_state) at t changes [t, the agent's
--     next login): a login resets the state, whatever came before;
--   * a call with new events changes its answering agents' time from the
--     answer to the end of its talk, or, if an earlier version of the talk was
--     stored longer, to the first stored stretch after the answer in which the
--     agent was off calls (an older talk cannot reach past it).
-- Windows start and end on interval boundaries; a window that reaches the
-- agent's stored current (open) stretch runs to the end of the data.

-- Logged-in time, cut at interval boundaries: one row per stretch of one
-- state within one interval. Logged-out time is not stored (it counts in no
-- interval); the current stretch of each agent is in pbx.agent_open.
CREATE TABLE IF NOT EXISTS pbx.agent_time_data ${ON_CLUSTER}
(
    interval_start DateTime('UTC'),
    agent String,
    started_at DateTime64(3, 'UTC'),
    ended_at DateTime64(3, 'UTC'),
    state LowCardinality(String),         -- talk, paused, idle
    state_name LowCardinality(String),    -- the state name set last since the login ('' = none)
    on_call UInt8,
    computed_at DateTime64(3, 'UTC'),
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(computed_at, is_deleted)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (interval_start, agent, started_at);

-- Each agent's current stretch, open-ended: it runs to the newest event stored
-- (the data's "now"), so readers extend it; `run_from` is where the current
-- run of its state began (a pause renamed from break to lunch is one run).
CREATE TABLE IF NOT EXISTS pbx.agent_open ${ON_CLUSTER}
(
    agent String,
    started_at DateTime64(3, 'UTC'),
    run_from DateTime64(3, 'UTC'),
    state LowCardinality(String),         -- talk, paused, idle, logged_out
    state_name LowCardinality(String),
    on_call UInt8,
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY agent;

-- One row per computed window (see 0215 for the pattern: a Null table whose
-- incremental views store the arrays).
CREATE TABLE IF NOT EXISTS pbx.agent_work ${ON_CLUSTER}
(
    agent String,
    lo DateTime64(3, 'UTC'),
    hi DateTime64(3, 'UTC'),
    computed_at DateTime64(3, 'UTC'),
    -- The last arrival row this run read (the layer's new cursor).
    cursor Tuple(DateTime64(3, 'UTC'), String, String),
    pieces Array(Tuple(
        interval_start DateTime('UTC'), started_at DateTime64(3, 'UTC'), ended_at DateTime64(3, 'UTC'),
        state String, state_name String, on_call UInt8, is_deleted UInt8)),
    open Array(Tuple(
        started_at DateTime64(3, 'UTC'), run_from DateTime64(3, 'UTC'), state String, state_name String,
        on_call UInt8))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_time_mv ${ON_CLUSTER} TO pbx.agent_time_data AS
SELECT p.interval_start AS interval_start, agent, p.started_at AS started_at, p.ended_at AS ended_at,
       p.state AS state, p.state_name AS state_name, p.on_call AS on_call, computed_at, p.is_deleted AS is_deleted
FROM pbx.agent_work
ARRAY JOIN pieces AS p;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_open_mv ${ON_CLUSTER} TO pbx.agent_open AS
SELECT agent, o.started_at AS started_at, o.run_from AS run_from, o.state AS state, o.state_name AS state_name,
       o.on_call AS on_call, computed_at
FROM pbx.agent_work
ARRAY JOIN open AS o;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_work_done_mv ${ON_CLUSTER} TO pbx.refresh_done AS
SELECT 'agents' AS layer, agent AS id, computed_at
FROM pbx.agent_work
WHERE agent != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_work_mark_mv ${ON_CLUSTER} TO pbx.refresh_marks AS
SELECT 'agents' AS layer, max(cursor) AS cursor
FROM pbx.agent_work;
