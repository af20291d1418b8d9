-- layers: calls
-- The five kinds of facts of each call, one row per call: what the calls
-- refresh stores (readers read the kind they need).

SELECT
    call_id,
    arrayFlatten(groupArray(visits)) AS visits,
    arrayFlatten(groupArray(recording)) AS recording,
    arrayFlatten(groupArray(spies)) AS spies,
    arrayFlatten(groupArray(rings)) AS rings,
    arrayFlatten(groupArray(record)) AS record
FROM
(
    SELECT call_id, visits, [] AS recording, [] AS spies, [] AS rings, [] AS record
    FROM pbx.call_visits(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
    UNION ALL
    SELECT call_id, [], recording, [], [], []
    FROM pbx.call_recordings(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
    UNION ALL
    SELECT call_id, [], [], spies, [], []
    FROM pbx.call_spies(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
    UNION ALL
    SELECT call_id, [], [], [], rings, []
    FROM pbx.call_rings(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
    UNION ALL
    SELECT call_id, [], [], [], [], record
    FROM pbx.call_records(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
)
GROUP BY call_id
