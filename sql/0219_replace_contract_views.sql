-- The queue contract views, complete for every reader at once: stored visits
-- of the calls that are up to date, plus the visits of the others computed
-- from raw events with the same SQL (pbx.call_visits). Thresholds (SLA, short
-- abandon, answer grace) are applied here, when read, from the newest
-- pbx.queue_settings row of each queue: changing them recomputes nothing.
-- Definitions: docs/metrics.md#pbxqueue_calls, #pbxqueue_stats_15m, #live-views.

-- The contract view: every visit.
CREATE OR REPLACE VIEW pbx.queue_calls ${ON_CLUSTER} AS
SELECT call_id, queue_name, entered_at, left_at, answered_at, agent, wait_s, outcome, in_sla
FROM pbx.queue_calls_from_live;

-- Kept for compatibility: the visits entered at or after `since`, computed from raw events.
CREATE OR REPLACE VIEW pbx.queue_calls_since ${ON_CLUSTER} AS
SELECT *
FROM pbx.queue_calls_from_all
WHERE entered_at >= {since:DateTime64(3, 'UTC')};

CREATE OR REPLACE VIEW pbx.queue_stats_15m ${ON_CLUSTER} AS
SELECT * FROM pbx.queue_stats_15m_from_live;

CREATE OR REPLACE VIEW pbx.queue_stats_15m_raw ${ON_CLUSTER} AS
SELECT * FROM pbx.queue_stats_15m_from_all;

-- Per queue: calls waiting now and the longest current wait. A visit counts
-- as waiting when it is neither answered nor ended and entered within the last
-- 4 hours (an older open visit is a call whose end was never reported, not a
-- caller still on hold). Queues listed: those with a visit in that window and
-- those in pbx.queue_settings, 0 waiting included.
CREATE OR REPLACE VIEW pbx.queue_now ${ON_CLUSTER} AS
SELECT
    queue_name,
    countIf(outcome = 'waiting') AS waiting,
    minIf(toNullable(entered_at), outcome = 'waiting') AS oldest_entered_at,
    dateDiff('millisecond', oldest_entered_at, now64(3)) / 1000 AS longest_wait_s
FROM
(
    SELECT queue_name, entered_at, toString(outcome) AS outcome
    FROM pbx.queue_calls
    WHERE entered_at >= now64(3) - INTERVAL 4 HOUR
    UNION ALL
    SELECT DISTINCT toString(queue_name), toDateTime64(0, 3, 'UTC'), 'settings'
    FROM pbx.queue_settings
)
GROUP BY queue_name;

-- The agent contract views, complete for every reader at once: stored
-- stretches of agent time outside the windows still to compute, plus those
-- windows computed from raw events with the same SQL (pbx.agent_time), plus
-- each agent's current stretch extended to the newest event stored.
-- Definitions: docs/metrics.md#pbxagent_stats_15m, #pbxagent_states_15m, #live-views.

CREATE OR REPLACE VIEW pbx.agent_states_15m ${ON_CLUSTER} AS
SELECT * FROM pbx.agent_states_15m_from_live;

CREATE OR REPLACE VIEW pbx.agent_stats_15m ${ON_CLUSTER} AS
SELECT * FROM pbx.agent_stats_15m_from_live;

CREATE OR REPLACE VIEW pbx.agent_stats_15m_raw ${ON_CLUSTER} AS
SELECT * FROM pbx.agent_stats_15m_from_all;

-- Per agent: the current state (talk, paused, idle or logged_out), since when
-- it has been so without a break, the state name set last, and whether the
-- agent is on a call. Agents whose current state began in the last 8 days, or
-- who are logged in or on a call.
CREATE OR REPLACE VIEW pbx.agents_now ${ON_CLUSTER} AS
WITH
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS open_end,
    -- agents whose current stretch is being computed live
    (
        SELECT groupArray(agent) FROM pbx.dirty_agents_live WHERE arrayExists(w -> w.2 = open_end, windows)
    ) AS live
SELECT agent, CAST(state, 'LowCardinality(String)') AS state, state_name, since, on_call
FROM
(
    SELECT agent, toString(state) AS state, toString(state_name) AS state_name, run_from AS since, on_call
    FROM pbx.agent_open FINAL
    WHERE NOT has(live, agent)
    UNION ALL
    SELECT agent, x.3, x.4, x.2, x.5
    FROM pbx.agent_time_live
    ARRAY JOIN open AS x
)
WHERE state != 'logged_out' OR on_call = 1 OR since >= now64(3) - INTERVAL 8 DAY;

-- The audit views, complete for every reader at once: stored rows of the
-- calls that are up to date plus the dirty calls' rows computed from raw
-- events with the same SQL (pbx.call_spies, pbx.call_recordings). One day of audit reads one day of
-- stored rows, however long the history.
-- Definitions: docs/metrics.md#pbxspy_sessions, #pbxrecording_audit.

CREATE OR REPLACE VIEW pbx.spy_sessions ${ON_CLUSTER} AS
SELECT * FROM pbx.spy_sessions_from_live;

CREATE OR REPLACE VIEW pbx.recording_audit ${ON_CLUSTER} AS
SELECT * FROM pbx.recording_audit_from_live;
