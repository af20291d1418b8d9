-- The audit views, complete for every reader at once: stored rows of the
-- calls that are up to date plus the dirty calls' rows computed from raw
-- events with the same SQL (pbx.call_facts). One day of audit reads one day of
-- stored rows, however long the history.
-- Definitions: docs/metrics.md#pbxspy_sessions, #pbxrecording_audit.

-- pbx.spy_sessions_from(whole): whole = 0 the contract view's rows, whole = 1
-- the same from raw events only.
CREATE OR REPLACE VIEW pbx.spy_sessions_from ${ON_CLUSTER} AS
SELECT
    call_id, spying_userid, spying_target_userid, spying_exten, spying_target_exten,
    CAST(spy_type, 'LowCardinality(String)') AS spy_type, started_at, ended_at,
    dateDiff('millisecond', started_at, ended_at) / 1000 AS duration_s
FROM
(
    SELECT call_id, spying_userid, spying_target_userid, spying_exten, spying_target_exten,
           toString(spy_type) AS spy_type, started_at, ended_at
    FROM pbx.spy_sessions_data FINAL
    WHERE {whole:UInt8} = 0 AND call_id NOT IN (SELECT call_id FROM pbx.dirty_calls(layer = 'calls', refresh = 0))
    UNION ALL
    SELECT call_id, s.3, s.4, s.5, s.6, s.7, s.1, s.8
    FROM pbx.call_facts(layer = 'calls', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN spies AS s
);

CREATE OR REPLACE VIEW pbx.spy_sessions ${ON_CLUSTER} AS
SELECT * FROM pbx.spy_sessions_from(whole = 0);

-- pbx.recording_audit_from(whole): as pbx.spy_sessions_from.
CREATE OR REPLACE VIEW pbx.recording_audit_from ${ON_CLUSTER} AS
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
      AND call_id NOT IN (SELECT call_id FROM pbx.dirty_calls(layer = 'calls', refresh = 0))
    UNION ALL
    SELECT call_id, r.2, r.3, r.4, r.5, r.6
    FROM pbx.call_facts(layer = 'calls', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN recording AS r
);

CREATE OR REPLACE VIEW pbx.recording_audit ${ON_CLUSTER} AS
SELECT * FROM pbx.recording_audit_from(whole = 0);
