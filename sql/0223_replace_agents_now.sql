-- pbx.agents_now as in 0219, reading the dirty agents through the one scalar
-- every view of a query shares (pbx.dirty_agent_list_live, 0222): a panel that
-- reads agents_now and the agent figures computes the dirty set once.
--
-- Per agent: the current state (talk, paused, idle or logged_out), since when
-- it has been so without a break, the state name set last, and whether the
-- agent is on a call. Agents whose current state began in the last 8 days, or
-- who are logged in or on a call.
CREATE OR REPLACE VIEW pbx.agents_now ${ON_CLUSTER} AS
WITH
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS open_end,
    -- agents whose current stretch is being computed live
    arrayMap(a -> a.1, arrayFilter(a -> arrayExists(w -> w.2 = open_end, a.2),
        (SELECT agents FROM pbx.dirty_agent_list_live))) AS live
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
