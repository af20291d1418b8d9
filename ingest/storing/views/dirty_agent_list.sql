-- layers: agents
-- pbx.dirty_agents as one array of (agent, windows). Every view reads it as
-- the same scalar subquery, `(SELECT agents FROM pbx.dirty_agent_list(...))`,
-- which ClickHouse computes once per query however many views of the query
-- use it (docs/metrics.md#how-the-views-are-computed).

SELECT groupArray((agent, windows)) AS agents
FROM pbx.dirty_agents(layer = {layer:String}, refresh = {refresh:UInt8})
