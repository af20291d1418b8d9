-- layers: calls, agents
-- The arrival rows (pbx.arrivals) a layer has to look at: readers all those past
-- its cursor less the commit margin (pbx.refresh_settings); a refresh run one
-- share: the first chunk_rows rows (pbx.refresh_settings) past the cursor, in arrival order,
-- plus those less than the margin before it. taken = 1 marks the rows past the
-- cursor (the new cursor is the last of them).

WITH (SELECT max(cursor) FROM pbx.refresh_marks WHERE layer = {layer:String}) AS cursor
SELECT arrived_at, kind, id, first_at, last_at, toUInt8(0) AS taken
FROM pbx.arrivals
WHERE arrived_at > cursor.1 - toIntervalMillisecond(pbx_refresh_setting('commit_margin_ms'))
  AND (arrived_at, kind, id) <= cursor
UNION ALL
SELECT arrived_at, kind, id, first_at, last_at, 1
FROM
(
    SELECT arrived_at, kind, id, first_at, last_at
    FROM pbx.arrivals
    WHERE arrived_at >= cursor.1 AND (arrived_at, kind, id) > cursor
    ORDER BY arrived_at, kind, id
    LIMIT if({refresh:UInt8} = 0, 1000000000000, pbx_refresh_setting('chunk_rows'))
)
-- (Not through the query condition cache: with it, chDB 4.4 (engine 26.9) returned no rows
-- past a cursor that had not moved, for reads of this view under several filters in one query;
-- the refresh then never took them. Seen with agentplan's CTE version of dirty_agents, 2026-12-03.)
SETTINGS use_query_condition_cache = 0
