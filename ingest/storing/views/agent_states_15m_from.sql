-- layers: agents
-- pbx.agent_states_15m_from(whole): logged-in seconds per interval, agent and
-- state: 'talk', 'idle', or the lowercased name of the state that paused it;
-- paused = 1 for the latter (a pause named "Idle" is not idle time).

SELECT
    interval_start,
    agent,
    if(s.1 = 'paused', lower(s.2), s.1) AS state,
    sum(s.3) / 1000 AS seconds,
    toUInt8(s.1 = 'paused') AS paused
FROM pbx.agent_time_from(whole = {whole:UInt8})
ARRAY JOIN states AS s
GROUP BY interval_start, agent, state, paused
