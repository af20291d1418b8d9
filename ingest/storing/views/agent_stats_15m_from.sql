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
WHERE logged_in_ms > 0 OR calls_answered > 0 OR ring_no_answer > 0
