-- layers: agents
-- pbx.agent_time_from(whole): logged-in time per interval and agent, as rows
-- (interval_start, agent, states) whose `states` are milliseconds per (state,
-- state_name): a stored agent-interval (pbx.agent_time_15m_data, the sums of
-- its stretches) or one stretch (the current ones and the dirty windows,
-- computed live); readers sum them per interval and agent. whole = 0: stored
-- plus dirty windows (the contract views); whole = 1: every stretch from raw
-- events (the _raw twins). logged_ms, paused_ms, talk_ms and idle_ms
-- are each row's sums of its states' milliseconds (talk, idle and paused are
-- the states; logged in is their sum).

WITH
    assumeNotNull((SELECT max(received_at) FROM pbx.events)) AS data_end,
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS open_end,
    -- agent -> its windows being computed live, from the dirty set every view of a query
    -- shares (pbx.dirty_agent_list: one scalar subquery, computed once per query)
    if({whole:UInt8} = 1, [], (SELECT agents FROM pbx.dirty_agent_list(layer = 'agents', refresh = 0))) AS dirty_list,
    CAST((arrayMap(a -> a.1, dirty_list), arrayMap(a -> a.2, dirty_list)),
         'Map(String, Array(Tuple(DateTime64(3, \'UTC\'), DateTime64(3, \'UTC\'))))') AS dirty
SELECT interval_start, agent, states,
       arraySum(s -> s.3, states) AS logged_ms,
       arraySum(s -> if(s.1 = 'paused', s.3, 0), states) AS paused_ms,
       arraySum(s -> if(s.1 = 'talk', s.3, 0), states) AS talk_ms,
       arraySum(s -> if(s.1 = 'idle', s.3, 0), states) AS idle_ms
FROM
(
    SELECT interval_start, agent, CAST(states, 'Array(Tuple(String, String, Int64))') AS states
    FROM pbx.agent_time_15m_data FINAL
    WHERE {whole:UInt8} = 0 AND is_deleted = 0
      AND NOT arrayExists(w -> interval_start >= w.1 AND interval_start < w.2, dirty[agent])
    UNION ALL
    -- Current stretches, logged in, up to the newest event stored.
    SELECT p.1, agent, [(toString(state), toString(state_name), dateDiff('millisecond', p.2, p.3))]
    FROM pbx.agent_open FINAL
    ARRAY JOIN pbx_interval_pieces(started_at, data_end) AS p
    WHERE {whole:UInt8} = 0 AND state != 'logged_out'
      AND NOT arrayExists(w -> w.2 = open_end, dirty[agent])
    UNION ALL
    -- The windows computed live: their stretches, and current stretches extended.
    SELECT p.1, agent, [(p.4, p.5, dateDiff('millisecond', p.2, p.3))]
    FROM pbx.agent_time(layer = 'agents', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN arrayConcat(pieces, arrayFlatten(arrayMap(
        o -> if(o.3 = 'logged_out', [],
                arrayMap(x -> (x.1, x.2, x.3, o.3, o.4, o.5), pbx_interval_pieces(o.1, data_end))),
        open))) AS p
)
