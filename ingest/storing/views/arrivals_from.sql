-- layers: calls, agents
-- The arrival rows (pbx.arrivals) a layer has to look at: readers all those past
-- its cursor, and those less than the commit margin (pbx.refresh_settings) before
-- the start of the refresh run that set it (or before the cursor's own arrival
-- time, if later; marks written before sql/0232 have no start: the cursor's); a
-- refresh run one share: the first chunk_rows rows (pbx.refresh_settings) past
-- the cursor, in arrival order, plus the same rows before it. taken = 1 marks the
-- rows past the cursor (the new cursor is the last of them).
-- Why that is exact (docs/metrics.md#how-the-views-are-computed-and-why): a row
-- commits within the margin of its arrival time, so one that run could not see
-- arrived less than the margin before the run read, and every older row was
-- read by that run or one before it. After an import with nothing arriving since
-- the next run starts more than the margin after the last arrival: nothing to
-- look back at.

WITH
    (SELECT (max(cursor), max(started)) FROM pbx.refresh_marks WHERE layer = {layer:String}) AS mark,
    mark.1 AS cursor,
    greatest(mark.2, cursor.1) - toIntervalMillisecond(pbx_refresh_setting('commit_margin_ms')) AS lookback_from
SELECT arrived_at, kind, id, first_at, last_at, toUInt8(0) AS taken
FROM pbx.arrivals
WHERE arrived_at > lookback_from
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
