-- layers: calls
-- Queue visits of each call, before the queue's thresholds: the candidate
-- answer is kept with the time the visit left, so the answer grace, SLA and
-- short-abandon thresholds apply when read (docs/metrics.md#pbxqueue_calls).
-- Steps are nested subqueries, each adding columns to the one below: an alias
-- used several times in one SELECT is expanded at each use.

WITH toIntervalMillisecond(pbx_reorder_tolerance_ms()) AS tolerance
SELECT
    call_id,
    arrayMap(
        k -> (
            journey[k].1,
            journey[k].3,
            journey[k].4,
            -- The candidate answer: the call's first answered_internal from entering
            -- on and before the next visit's queue_in. Whether it is the visit's
            -- answer depends on the queue's answer grace (applied when read).
            if(candidate[k] = 0, NULL, toNullable(answers[candidate[k]].1)),
            if(candidate[k] = 0, NULL, toNullable(answers[candidate[k]].3)),
            -- A later visit exists: an overflow unless answered.
            toUInt8(k < length(journey))),
        arrayEnumerate(journey)) AS visits
FROM
(
    SELECT
        *,
        arrayMap(
            k -> arrayFirstIndex(
                a -> a.1 >= journey[k].1 AND (k = length(journey) OR a.1 < journey[k + 1].1), answers),
            arrayEnumerate(journey)) AS candidate
    FROM
    (
        SELECT
            *,
            -- The call's journey through its queues: visits in entry order, except
            -- that of two entered less than the reorder tolerance apart, the one
            -- left first comes first (the PBX passed the call on at once: its
            -- queue_in to the next queue may overtake the first one's).
            arraySort(
                v -> (least(v.1 + tolerance, coalesce(v.4, toDateTime64('2299-12-31 00:00:00', 3, 'UTC'))),
                      v.1, v.2),
                -- A second queue_in to the same queue with the same leaving is the
                -- PBX re-sending it: one visit, the first.
                arrayFilter(
                    (w, k) -> NOT arrayExists(
                        j -> ins[j].3 = w.3 AND isNotDistinctFrom(lefts[j], lefts[k]), range(1, k)),
                    arrayMap((w, l) -> (w.1, w.2, w.3, l), ins, lefts),
                    arrayEnumerate(ins))) AS journey
        FROM
        (
            SELECT
                *,
                -- Each queue_in leaves at the first queue_out of its queue at or after
                -- it (one up to the reorder tolerance before it counts: a visit left
                -- at once, its queue_out overtaking its queue_in: it left when it
                -- entered), else at the call's first call_end from then on, else it is open.
                arrayMap(
                    w -> pbx_not_before(w.1, coalesce(
                        arrayFirstOrNull(o -> o >= w.1 - tolerance,
                            arrayMap(o -> o.1, arrayFilter(o -> o.3 = w.3, outs))),
                        arrayFirstOrNull(e -> e >= w.1 - tolerance, ends))),
                    ins) AS lefts
            FROM
            (
                SELECT
                    call_id,
                    arraySort(groupArrayIf((received_at, seq, toString(queue_name)), event = 'queue_in')) AS ins,
                    arraySort(groupArrayIf((received_at, seq, toString(queue_name)), event = 'queue_out')) AS outs,
                    arraySort(groupArrayIf((received_at, seq, line_userid), event = 'answered_internal')) AS answers,
                    arraySort(groupArrayIf(received_at, event = 'call_end')) AS ends
                FROM pbx.call_events(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
                WHERE event IN ('queue_in', 'queue_out', 'answered_internal', 'call_end') AND call_id != ''
                GROUP BY call_id
                HAVING notEmpty(ins)
            )
        )
    )
)
