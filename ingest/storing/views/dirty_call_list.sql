-- layers: calls
-- pbx.dirty_calls as one array of (call_id, first_at, last_at). Every view
-- reads it as the same scalar subquery, `(SELECT calls FROM
-- pbx.dirty_call_list(...))`, which ClickHouse computes once per query
-- however many views of the query use it: a panel pays for the dirty set once
-- (docs/metrics.md#how-the-views-are-computed).

SELECT groupArray((call_id, first_at, last_at)) AS calls
FROM pbx.dirty_calls(layer = {layer:String}, refresh = {refresh:UInt8})
