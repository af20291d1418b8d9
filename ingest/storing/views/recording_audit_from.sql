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
    if(talk_s > 0, 100 * recording_s / talk_s, NULL) AS coverage_pct,
    -- coalesce(answered_at, ended_at, first recording start): the stored rows' sort
    -- key. A time filter on it reads only that range of history; filter on it as
    -- well as on coalesce(answered_at, ended_at) (the Audit dashboard does).
    at
FROM
(
    SELECT call_id, answered_at, ended_at, segments, recording_ms, unstopped, at
    FROM pbx.recordings_data FINAL
    WHERE {whole:UInt8} = 0 AND is_deleted = 0
      AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list(layer = 'calls', refresh = 0))).1)
    UNION ALL
    SELECT call_id, r.2, r.3, r.4, r.5, r.6, r.1
    FROM pbx.call_recordings(layer = 'calls', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN recording AS r
)
