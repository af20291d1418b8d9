-- layers: agents
-- pbx.agent_states_15m_from(whole): logged-in seconds per interval, agent and
-- state: 'talk', 'idle', or the lowercased name of the state that paused it.

SELECT
    interval_start,
    agent,
    if(state = 'paused', lower(state_name), state) AS state,
    sum(dateDiff('millisecond', started_at, ended_at)) / 1000 AS seconds
FROM pbx.agent_time_from(whole = {whole:UInt8})
GROUP BY interval_start, agent, state
