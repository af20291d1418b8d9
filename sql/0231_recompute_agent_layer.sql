-- Every agent's stored time computed again, by the rule of 0227 (issue 15).
--
-- Until 0227 the agent layer took an agent's arrival row past its cursor as
-- seen when the agent had been computed after the row arrived, even when that
-- computation was an earlier chunk's, for other windows of its time. A backlog
-- larger than one refresh run (`chunk_rows` arrival rows: an import, a
-- catch-up) therefore left some windows of agent time unstored, and readers
-- counted them as stored: `pbx.agent_stats_15m` and the views on it were short
-- of logged-in, talk and pause time that `pbx.agent_stats_15m_raw` has.
--
-- This marks every agent's days as arrived (the full recompute of
-- docs/metrics.md#refresh, agent part): the refreshes compute them again a
-- chunk at a time, and until each chunk is stored readers compute its agents
-- live, so every figure is exact meanwhile (slower for the first refreshes on
-- a large history). On an empty database it marks nothing.
INSERT INTO pbx.arrivals (arrived_at, kind, id, first_at, last_at)
SELECT now64(3, 'UTC'), 'agent', userid, min(received_at), max(received_at)
FROM pbx.events
WHERE event IN ('pbx_agent_login', 'pbx_agent_logout', 'pbx_agent_set_state') AND userid != ''
GROUP BY userid, toDate(received_at);
