-- layers: calls
-- Each answered or recorded call's recording audit, 0 or 1 element
-- (docs/metrics.md#pbxrecording_audit).

WITH toIntervalMillisecond(pbx_reorder_tolerance_ms()) AS tolerance
SELECT
    call_id,
    [(
        coalesce(answered_at, ended_at, rec_starts[1]),
        answered_at,
        ended_at,
        toUInt32(length(rec_starts)),
        multiIf(
            empty(rec_starts), toNullable(toInt64(0)),
            answered_at IS NULL OR ended_at IS NULL, NULL,
            -- covered time, overlaps once: each segment counts from the latest end before it
            toNullable(toInt64(arraySum(arrayMap(
                i -> greatest(0, dateDiff('millisecond',
                    arrayMax(arrayPushFront(arrayMap(c -> c.2, arraySlice(clipped, 1, i - 1)), clipped[i].1)),
                    clipped[i].2)),
                arrayEnumerate(clipped)))))),
        toUInt8(has(rec_ends, NULL)))] AS recording
FROM
(
    SELECT
        *,
        -- Segments clipped to [answered_at, ended_at]; a start less than the
        -- reorder tolerance after the answer counts from the answer, an end less
        -- than it before call_end counts to call_end (they were fired together).
        -- (used only when the call was answered and has ended)
        arraySort(arrayMap(
            (s, e) -> (
                if(s >= talk_from AND s < talk_from + tolerance, talk_from, greatest(s, talk_from)),
                if(e <= talk_to AND e > talk_to - tolerance, talk_to, least(e, talk_to))),
            rec_starts, arrayMap(e -> coalesce(e, talk_to), rec_ends))) AS clipped
    FROM
    (
        SELECT
            *,
            -- a start's segment ends at its stop (pbx_session_ends), else at call_end
            pbx_session_ends(rec_starts, rec_stops) AS rec_ends,
            assumeNotNull(answered_at) AS talk_from,
            assumeNotNull(ended_at) AS talk_to
        FROM
        (
            SELECT
                call_id,
                minIf(toNullable(received_at), event IN ('answered_internal', 'answered_external')) AS answered_at,
                minIf(toNullable(received_at), event = 'call_end') AS ended_at,
                arraySort(groupArrayIf(received_at, event = 'call_recording_start')) AS rec_starts,
                arraySort(groupArrayIf(received_at, event = 'call_recording_stop')) AS rec_stops
            FROM pbx.call_events(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
            WHERE event IN ('answered_internal', 'answered_external', 'call_end', 'call_recording_start',
                            'call_recording_stop')
              AND call_id != ''
            GROUP BY call_id
            -- a row per call answered or recorded
            HAVING answered_at IS NOT NULL OR notEmpty(rec_starts)
        )
    )
)
