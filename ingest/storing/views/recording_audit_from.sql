-- layers: calls
-- pbx.recording_audit_from(whole): as pbx.spy_sessions_from.

SELECT
    call_id,
    answered_at,
    ended_at,
    dateDiff('millisecond', answered_at, ended_at) / 1000 AS talk_s,
    toUInt8(segments > 0) AS recorded,
    segments,
    recording_ms / 1000 AS recording_s,
    unstopped,
    if(talk_s > 0, 100 * recording_s / talk_s, NULL) AS coverage_pct
FROM
(
    SELECT call_id, answered_at, ended_at, segments, recording_ms, unstopped
    FROM pbx.recordings_data FINAL
    WHERE {whole:UInt8} = 0 AND is_deleted = 0
      AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list(layer = 'calls', refresh = 0))).1)
    UNION ALL
    SELECT call_id, r.2, r.3, r.4, r.5, r.6
    FROM pbx.call_recordings(layer = 'calls', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN recording AS r
)
