-- layers: calls
-- The calls a layer must compute (all, or one refresh run's share), with the
-- span of their event times: those with an arrival row to look at that came
-- later than their last computation less the commit margin. Read it through
-- pbx.dirty_call_list: one scalar per query, however many views use it.

WITH
    -- (call_id, its last arrival) of the arrival rows to look at (a scalar subquery: read once)
    (
        SELECT groupArray((id, last_arrival))
        FROM
        (
            SELECT id, max(arrived_at) AS last_arrival
            FROM pbx.arrivals_from(layer = {layer:String}, refresh = {refresh:UInt8})
            WHERE kind = 'call'
            GROUP BY id
        )
    ) AS arrived
SELECT a.1 AS call_id, s.first_at AS first_at, s.last_at AS last_at
FROM (SELECT arrayJoin(arrived) AS a) AS n
LEFT JOIN
(
    SELECT id, max(computed_at) AS computed_at
    FROM pbx.refresh_done
    WHERE layer = {layer:String} AND id IN (SELECT arrayJoin(arrived).1)
    GROUP BY id
) AS d ON d.id = n.a.1
INNER JOIN
(
    SELECT call_id, min(first_at) AS first_at, max(last_at) AS last_at
    FROM pbx.call_spans
    WHERE call_id IN (SELECT arrayJoin(arrived).1)
    GROUP BY call_id
) AS s ON s.call_id = n.a.1
-- (never computed: computed_at reads 1970)
WHERE a.2 > d.computed_at - toIntervalMillisecond(pbx_refresh_setting('commit_margin_ms'))
