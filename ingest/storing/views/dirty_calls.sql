-- layers: calls
-- The calls a layer must compute (all, or one refresh run's share), with the
-- span of their event times: those with an arrival row to look at that came
-- later than their last computation less the commit margin.

WITH
    arrived AS
    (
        SELECT id AS call_id, max(arrived_at) AS last_arrival
        FROM pbx.arrivals_from(layer = {layer:String}, refresh = {refresh:UInt8})
        WHERE kind = 'call'
        GROUP BY id
    )
SELECT a.call_id AS call_id, s.first_at AS first_at, s.last_at AS last_at
FROM arrived AS a
LEFT JOIN
(
    SELECT id, max(computed_at) AS computed_at
    FROM pbx.refresh_done
    WHERE layer = {layer:String} AND id IN (SELECT call_id FROM arrived)
    GROUP BY id
) AS d ON d.id = a.call_id
INNER JOIN
(
    SELECT call_id, min(first_at) AS first_at, max(last_at) AS last_at
    FROM pbx.call_spans
    WHERE call_id IN (SELECT call_id FROM arrived)
    GROUP BY call_id
) AS s ON s.call_id = a.call_id
-- (never computed: computed_at reads 1970)
WHERE a.last_arrival > d.computed_at - toIntervalMillisecond(pbx_refresh_setting('commit_margin_ms'))
