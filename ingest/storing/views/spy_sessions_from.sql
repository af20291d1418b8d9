-- layers: calls
-- pbx.spy_sessions_from(whole): whole = 0 the contract view's rows, whole = 1
-- the same from raw events only.

SELECT
    call_id, spying_userid, spying_target_userid, spying_exten, spying_target_exten,
    CAST(spy_type, 'LowCardinality(String)') AS spy_type, started_at, ended_at,
    dateDiff('millisecond', started_at, ended_at) / 1000 AS duration_s
FROM
(
    SELECT call_id, spying_userid, spying_target_userid, spying_exten, spying_target_exten,
           toString(spy_type) AS spy_type, started_at, ended_at
    FROM pbx.spy_sessions_data FINAL
    WHERE {whole:UInt8} = 0 AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list(layer = 'calls', refresh = 0))).1)
    UNION ALL
    SELECT call_id, s.3, s.4, s.5, s.6, s.7, s.1, s.8
    FROM pbx.call_spies(layer = 'calls', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN spies AS s
)
