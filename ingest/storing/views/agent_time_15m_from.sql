-- layers: agents
-- pbx.agent_time_15m_from(whole): logged-in time per interval and agent, in
-- seconds (talk, idle, paused and their sum, from pbx.agent_time_from(whole))
-- and occupancy; one row per (interval, agent) logged in. The time columns of
-- pbx.agent_stats_15m_from without its answers and rings.

SELECT
    interval_start,
    agent,
    logged_in_ms / 1000 AS logged_in_s,
    paused_ms / 1000 AS paused_s,
    talk_ms / 1000 AS talk_s,
    idle_ms / 1000 AS idle_s,
    if(talk_ms + idle_ms = 0, NULL, 100 * talk_ms / (talk_ms + idle_ms)) AS occupancy_pct
FROM
(
    SELECT interval_start, agent, sum(logged_ms) AS logged_in_ms, sum(paused_ms) AS paused_ms,
           sum(talk_ms) AS talk_ms, sum(idle_ms) AS idle_ms
    FROM pbx.agent_time_from(whole = {whole:UInt8})
    GROUP BY interval_start, agent
)
WHERE logged_in_ms > 0
