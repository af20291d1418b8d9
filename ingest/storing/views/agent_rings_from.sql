-- layers: calls
-- pbx.agent_rings_from(whole): every ring of an agent (start_int_dial) and
-- whether that agent answered the call; stored plus dirty calls (whole = 0),
-- or all from raw events (whole = 1).

SELECT rung_at, agent, call_id, answered
FROM pbx.agent_rings_data FINAL
WHERE {whole:UInt8} = 0 AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list(layer = 'calls', refresh = 0))).1)
UNION ALL
SELECT r.1, r.3, call_id, r.4
FROM pbx.call_rings(layer = 'calls', refresh = 0, whole = {whole:UInt8})
ARRAY JOIN rings AS r
