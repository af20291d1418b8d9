-- layers: agents
-- pbx.agent_stats_15m_from(whole): per interval and agent, the time of
-- pbx.agent_time_from(whole) (so logged_in_s is the sum of agent_states_15m's
-- seconds by construction), answers and unanswered rings.

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
        sum(logged) AS logged_in_ms,
        sum(paused) AS paused_ms,
        sum(talk) AS talk_ms,
        sum(idle) AS idle_ms,
        sum(answers) AS calls_answered,
        sum(rings) AS ring_no_answer
    FROM
    (
        SELECT interval_start, agent,
               arraySum(s -> s.3, states) AS logged,
               arraySum(s -> if(s.1 = 'paused', s.3, 0), states) AS paused,
               arraySum(s -> if(s.1 = 'talk', s.3, 0), states) AS talk,
               arraySum(s -> if(s.1 = 'idle', s.3, 0), states) AS idle,
               0 AS answers, 0 AS rings
        FROM pbx.agent_time_from(whole = {whole:UInt8})
        UNION ALL
        SELECT toStartOfInterval(toDateTime(received_at), INTERVAL 15 MINUTE), line_userid, 0, 0, 0, 0, 1, 0
        FROM pbx.events
        WHERE event = 'answered_internal' AND line_userid != ''
        UNION ALL
        SELECT toStartOfInterval(toDateTime(rung_at), INTERVAL 15 MINUTE), agent, 0, 0, 0, 0, 0, 1
        FROM pbx.agent_rings_from(whole = {whole:UInt8})
        WHERE answered = 0
    )
    GROUP BY interval_start, agent
)
WHERE logged_in_ms > 0 OR calls_answered > 0 OR ring_no_answer > 0
