-- The agent contract views, complete for every reader at once: stored
-- stretches of agent time outside the windows still to compute, plus those
-- windows computed from raw events with the same SQL (pbx.agent_time), plus
-- each agent's current stretch extended to the newest event stored.
-- Definitions: docs/metrics.md#pbxagent_stats_15m, #pbxagent_states_15m, #live-views.

-- pbx.agent_rings_from(whole): every ring of an agent (start_int_dial) and
-- whether that agent answered the call; stored plus dirty calls (whole = 0),
-- or all from raw events (whole = 1).
CREATE OR REPLACE VIEW pbx.agent_rings_from ${ON_CLUSTER} AS
SELECT rung_at, agent, call_id, answered
FROM pbx.agent_rings_data FINAL
WHERE {whole:UInt8} = 0 AND call_id NOT IN (SELECT call_id FROM pbx.dirty_calls(layer = 'calls', refresh = 0))
UNION ALL
SELECT r.1, r.3, call_id, r.4
FROM pbx.call_facts(layer = 'calls', refresh = 0, whole = {whole:UInt8})
ARRAY JOIN rings AS r;

-- pbx.agent_time_from(whole): logged-in time as stretches of one state within
-- one 15-minute interval. whole = 0: stored plus dirty windows (the contract
-- views); whole = 1: everything from raw events (the _raw twins).
CREATE OR REPLACE VIEW pbx.agent_time_from ${ON_CLUSTER} AS
WITH
    assumeNotNull((SELECT max(received_at) FROM pbx.events)) AS data_end,
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS open_end,
    -- agent -> its windows being computed live (a scalar subquery: computed once)
    (
        SELECT CAST((groupArray(agent), groupArray(windows)), 'Map(String, Array(Tuple(DateTime64(3, \'UTC\'), DateTime64(3, \'UTC\'))))')
        FROM pbx.dirty_agents(layer = 'agents', refresh = 0)
        WHERE {whole:UInt8} = 0
    ) AS dirty
SELECT interval_start, agent, started_at, ended_at, toString(state) AS state, toString(state_name) AS state_name, on_call
FROM
(
    SELECT interval_start, agent, started_at, ended_at, state, state_name, on_call
    FROM pbx.agent_time_data FINAL
    WHERE {whole:UInt8} = 0 AND is_deleted = 0
      AND NOT arrayExists(w -> interval_start >= w.1 AND interval_start < w.2, dirty[agent])
    UNION ALL
    -- Current stretches, logged in, up to the newest event stored.
    SELECT p.1, agent, p.2, p.3, state, state_name, on_call
    FROM pbx.agent_open FINAL
    ARRAY JOIN pbx_interval_pieces(started_at, data_end) AS p
    WHERE {whole:UInt8} = 0 AND state != 'logged_out'
      AND NOT arrayExists(w -> w.2 = open_end, dirty[agent])
    UNION ALL
    -- The windows computed live: their stretches, and current stretches extended.
    SELECT p.1, agent, p.2, p.3, p.4, p.5, p.6
    FROM pbx.agent_time(layer = 'agents', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN arrayConcat(pieces, arrayFlatten(arrayMap(
        o -> if(o.3 = 'logged_out', [],
                arrayMap(x -> (x.1, x.2, x.3, o.3, o.4, o.5), pbx_interval_pieces(o.1, data_end))),
        open))) AS p
);

-- pbx.agent_states_15m_from(whole): logged-in seconds per interval, agent and
-- state: 'talk', 'idle', or the lowercased name of the state that paused it.
CREATE OR REPLACE VIEW pbx.agent_states_15m_from ${ON_CLUSTER} AS
SELECT
    interval_start,
    agent,
    if(state = 'paused', lower(state_name), state) AS state,
    sum(dateDiff('millisecond', started_at, ended_at)) / 1000 AS seconds
FROM pbx.agent_time_from(whole = {whole:UInt8})
GROUP BY interval_start, agent, state;

CREATE OR REPLACE VIEW pbx.agent_states_15m ${ON_CLUSTER} AS
SELECT * FROM pbx.agent_states_15m_from(whole = 0);

-- pbx.agent_stats_15m_from(whole): per interval and agent, the time of
-- pbx.agent_time_from(whole) (so logged_in_s is the sum of agent_states_15m's
-- seconds by construction), answers and unanswered rings.
CREATE OR REPLACE VIEW pbx.agent_stats_15m_from ${ON_CLUSTER} AS
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
FROM
(
    SELECT
        interval_start,
        agent,
        sum(ms) AS logged_in_ms,
        sumIf(ms, state = 'paused') AS paused_ms,
        sumIf(ms, state = 'talk') AS talk_ms,
        sumIf(ms, state = 'idle') AS idle_ms,
        countIf(state = 'answer') AS calls_answered,
        countIf(state = 'ring_no_answer') AS ring_no_answer
    FROM
    (
        SELECT interval_start, agent, state, dateDiff('millisecond', started_at, ended_at) AS ms
        FROM pbx.agent_time_from(whole = {whole:UInt8})
        UNION ALL
        SELECT toStartOfInterval(toDateTime(received_at), INTERVAL 15 MINUTE), line_userid, 'answer', 0
        FROM pbx.events
        WHERE event = 'answered_internal' AND line_userid != ''
        UNION ALL
        SELECT toStartOfInterval(toDateTime(rung_at), INTERVAL 15 MINUTE), agent, 'ring_no_answer', 0
        FROM pbx.agent_rings_from(whole = {whole:UInt8})
        WHERE answered = 0
    )
    GROUP BY interval_start, agent
)
WHERE logged_in_ms > 0 OR calls_answered > 0 OR ring_no_answer > 0;

CREATE OR REPLACE VIEW pbx.agent_stats_15m ${ON_CLUSTER} AS
SELECT * FROM pbx.agent_stats_15m_from(whole = 0);

CREATE OR REPLACE VIEW pbx.agent_stats_15m_raw ${ON_CLUSTER} AS
SELECT * FROM pbx.agent_stats_15m_from(whole = 1);

-- Per agent: the current state (talk, paused, idle or logged_out), since when
-- it has been so without a break, the state name set last, and whether the
-- agent is on a call. Agents whose current state began in the last 8 days, or
-- who are logged in or on a call.
CREATE OR REPLACE VIEW pbx.agents_now ${ON_CLUSTER} AS
WITH
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS open_end,
    -- agents whose current stretch is being computed live
    (
        SELECT groupArray(agent) FROM pbx.dirty_agents(layer = 'agents', refresh = 0) WHERE arrayExists(w -> w.2 = open_end, windows)
    ) AS live
SELECT agent, CAST(state, 'LowCardinality(String)') AS state, state_name, since, on_call
FROM
(
    SELECT agent, toString(state) AS state, toString(state_name) AS state_name, run_from AS since, on_call
    FROM pbx.agent_open FINAL
    WHERE NOT has(live, agent)
    UNION ALL
    SELECT agent, x.3, x.4, x.2, x.5
    FROM pbx.agent_time(layer = 'agents', refresh = 0, whole = 0)
    ARRAY JOIN open AS x
)
WHERE state != 'logged_out' OR on_call = 1 OR since >= now64(3) - INTERVAL 8 DAY;
