-- Spy and recording audits: plain views over raw events, computed per call on
-- every read, so right whatever the arrival order. Definitions and tie rules:
-- docs/metrics.md#pbxspy_sessions and #pbxrecording_audit.

-- One row per call_spy_start, paired with the next call_spy_end (at or after
-- it) of the same call, spying agent and spied-on agent. A start with no such
-- end has ended_at and duration_s NULL; an end with no start makes no row.
CREATE VIEW IF NOT EXISTS pbx.spy_sessions ${ON_CLUSTER} AS
SELECT
    call_id,
    spying_userid,
    spying_target_userid,
    start.2 AS spying_exten,
    start.3 AS spying_target_exten,
    start.4 AS spy_type,
    start.1 AS started_at,
    arrayMap(e -> toNullable(e), arrayFilter(e -> e >= started_at, ends))[1] AS ended_at,
    dateDiff('millisecond', started_at, ended_at) / 1000 AS duration_s
FROM
(
    SELECT
        call_id,
        spying_userid,
        spying_target_userid,
        groupArrayIf((received_at, spying_exten, spying_target_exten, spy_type), event = 'call_spy_start') AS starts,
        arraySort(groupArrayIf(received_at, event = 'call_spy_end')) AS ends
    FROM pbx.events
    WHERE event IN ('call_spy_start', 'call_spy_end')
    GROUP BY call_id, spying_userid, spying_target_userid
    HAVING notEmpty(starts)
)
ARRAY JOIN starts AS start;

-- One row per call that was answered (answered_internal or answered_external)
-- or recorded (has a call_recording_start). A segment runs from a
-- call_recording_start to the next call_recording_stop at or after it, else to
-- call_end; recording_s is the time covered by segments (overlaps once) within
-- [first answer, call_end]: 0 when not recorded, NULL for a recorded call not
-- answered or not ended yet (the clip has no bound).
CREATE VIEW IF NOT EXISTS pbx.recording_audit ${ON_CLUSTER} AS
SELECT
    call_id,
    answered_at,
    ended_at,
    dateDiff('millisecond', answered_at, ended_at) / 1000 AS talk_s,
    toUInt8(notEmpty(starts)) AS recorded,
    toUInt32(length(starts)) AS segments,
    -- Segments sharing an end are nested, segments with different ends are
    -- disjoint: the covered time is, per distinct end, end - earliest start,
    -- each clipped to [answered_at, ended_at].
    multiIf(
        empty(starts), 0,
        answered_at IS NULL OR ended_at IS NULL, NULL,
        arraySum(
            e -> ifNull(greatest(0, dateDiff('millisecond',
                    greatest(arrayMin(arrayFilter((s, se) -> se = e, starts, seg_ends)), answered_at),
                    least(e, ended_at))), 0),
            arrayDistinct(seg_ends)) / 1000) AS recording_s,
    toUInt8(arrayExists(s -> NOT arrayExists(x -> x >= s, stops), starts)) AS unstopped,
    if(talk_s > 0, 100 * recording_s / talk_s, NULL) AS coverage_pct
FROM
(
    SELECT
        call_id,
        minIf(toNullable(received_at), event IN ('answered_internal', 'answered_external')) AS answered_at,
        minIf(toNullable(received_at), event = 'call_end') AS ended_at,
        groupArrayIf(received_at, event = 'call_recording_start') AS starts,
        arraySort(groupArrayIf(received_at, event = 'call_recording_stop')) AS stops,
        -- Each start's segment end: the first stop at or after it, else call_end.
        arrayMap(s -> coalesce(arrayMap(x -> toNullable(x), arrayFilter(x -> x >= s, stops))[1], ended_at), starts) AS seg_ends
    FROM pbx.events
    WHERE event IN ('answered_internal', 'answered_external', 'call_end', 'call_recording_start', 'call_recording_stop')
    GROUP BY call_id
    HAVING answered_at IS NOT NULL OR notEmpty(starts)
);
