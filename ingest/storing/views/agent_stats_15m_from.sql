-- layers: agents
-- pbx.agent_stats_15m_from(whole): per interval and agent, the time of
-- pbx.agent_time_from(whole) (so logged_in_s is the sum of agent_states_15m's
-- seconds by construction), answers and unanswered rings (pbx.agent_calls_from):
-- pbx.agent_time_15m_from and pbx.agent_calls_15m_from side by side, in one
-- grouping (cheaper than joining or regrouping them).

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
        sum(logged_ms) AS logged_in_ms,
        sum(paused_ms) AS paused_ms,
        sum(talk_ms) AS talk_ms,
        sum(idle_ms) AS idle_ms,
        sum(answers) AS calls_answered,
        sum(rings) AS ring_no_answer
    FROM
    (
        SELECT interval_start, agent, logged_ms, paused_ms, talk_ms, idle_ms, 0 AS answers, 0 AS rings
        FROM pbx.agent_time_from(whole = {whole:UInt8})
        UNION ALL
        SELECT interval_start, agent, 0, 0, 0, 0, answered, unanswered
        FROM pbx.agent_calls_from(layer = 'calls', whole = {whole:UInt8})
    )
    GROUP BY interval_start, agent
)
WHERE logged_in_ms > 0 OR calls_answered > 0 OR ring_no_answer > 0
