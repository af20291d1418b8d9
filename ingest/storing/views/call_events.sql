-- layers: calls
-- The stored events of the calls dirty_calls names; in mode `all`, every event
-- of every call (the _raw views). Filter on `event` where you read it: the
-- events' sort key is (event, received_at), and the calls' hours select the rest.

WITH
    -- (a scalar subquery: computed once, however often used)
    (SELECT calls FROM pbx.dirty_call_list(layer = {layer:String}, refresh = {refresh:UInt8})) AS calls
SELECT *
FROM pbx.events
WHERE {whole:UInt8} = 1
   OR (toStartOfHour(received_at) IN
           (SELECT DISTINCT arrayJoin(arrayMap(h -> toStartOfHour(c.2) + toIntervalHour(h),
                range(toUInt64(dateDiff('hour', toStartOfHour(c.2), toStartOfHour(c.3)) + 1))))
            FROM (SELECT arrayJoin(calls) AS c))
       AND call_id IN (SELECT arrayJoin(calls).1))
