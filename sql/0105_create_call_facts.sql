-- pbx.call_facts(layer, refresh, whole): everything the views pair within one
-- call, computed from its raw events. The one home of the per-call rules
-- (docs/metrics.md): the refresh stores its rows (0106), the contract views
-- read it live for the calls not stored yet (0108, 0110), and with whole = 1
-- it is the computation from all raw events (the _raw views).
--
-- One row per call of pbx.call_events(layer, refresh, whole), with arrays:
--   visits     queue visits, before the queue's thresholds are applied: the
--              candidate answer is kept with the time the visit left, so the
--              answer grace, SLA and short-abandon thresholds apply when read
--   recording  0 or 1 element: the call's recording audit
--   spies      one element per call_spy_start
--   rings      one element per start_int_dial of an agent, with whether that
--              agent answered the call
-- Events are ordered by (received_at, seq): seq is the arrival order.
--
-- Written as nested steps, each adding columns to the one below: an alias
-- used several times in one SELECT is expanded at each use, so deriving many
-- arrays from each other in one SELECT makes the query slow to analyse.

CREATE VIEW IF NOT EXISTS pbx.call_facts ${ON_CLUSTER} AS
WITH toIntervalMillisecond(pbx_reorder_tolerance_ms()) AS tolerance
SELECT call_id, visits, recording, spies, rings
FROM
(
    SELECT
        *,
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
            arrayEnumerate(journey)) AS visits,
        if(answered_at IS NULL AND empty(rec_starts), [], [(
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
                        arrayMax(arrayPushFront(arrayMap(c -> c.2, arraySlice(rec_clipped, 1, i - 1)),
                                                rec_clipped[i].1)),
                        rec_clipped[i].2)),
                    arrayEnumerate(rec_clipped)))))),
            toUInt8(has(rec_ends, NULL)))]) AS recording
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
                    arrayFilter(
                        (w, k) -> NOT arrayExists(
                            j -> ins[j].3 = w.3 AND isNotDistinctFrom(lefts[j], lefts[k]), range(1, k)),
                        arrayMap((w, l) -> (w.1, w.2, w.3, l), ins, lefts),
                        arrayEnumerate(ins))) AS journey,
                -- Segments in ms clipped to [answered_at, ended_at]; a start less than
                -- the reorder tolerance after the answer counts from the answer, an end
                -- less than it before call_end counts to call_end (fired together).
                arraySort(arrayMap(
                    (s, e) -> (
                        if(s >= talk_from AND s < talk_from + tolerance, talk_from, greatest(s, talk_from)),
                        if(e <= talk_to AND e > talk_to - tolerance, talk_to, least(e, talk_to))),
                    rec_starts, arrayMap(e -> coalesce(e, talk_to), rec_ends))) AS rec_clipped,
                arrayFlatten(arrayMap(
                    (starts, ends) -> arrayMap((s, e) -> (s.1, s.2, s.3, s.4, s.5, s.6, s.7, e),
                        starts, pbx_session_ends(arrayMap(s -> s.1, starts), ends)),
                    spy_pair_starts, spy_pair_ends)) AS spies,
                -- Rings of agents, and whether that agent answered the call at all.
                arrayMap(r -> (r.1, r.2, r.3, toUInt8(has(answerers, r.3))), int_dials) AS rings
            FROM
            (
                SELECT
                    *,
                    -- Each queue_in leaves at the first queue_out of its queue at or
                    -- after it (one up to the reorder tolerance before it counts: a visit
                    -- left at once, its queue_out overtaking its queue_in), else at the
                    -- call's first call_end from then on, else it is open. A second
                    -- queue_in to the same queue with the same leaving is the PBX
                    -- re-sending it: one visit (filtered above).
                    arrayMap(
                        w -> coalesce(
                            arrayFirstOrNull(o -> o >= w.1 - tolerance,
                                arrayMap(o -> o.1, arrayFilter(o -> o.3 = w.3, outs))),
                            arrayFirstOrNull(e -> e >= w.1 - tolerance, ends)),
                        ins) AS lefts,
                    pbx_session_ends(rec_starts, rec_stops) AS rec_ends,
                    -- (used only when the call was answered and has ended)
                    assumeNotNull(answered_at) AS talk_from,
                    assumeNotNull(ended_at) AS talk_to,
                    arrayDistinct(arrayMap(s -> (s.3, s.4), spy_starts)) AS spy_pairs,
                    arrayMap(pair -> arrayFilter(s -> (s.3, s.4) = pair, spy_starts), spy_pairs) AS spy_pair_starts,
                    arrayMap(pair -> arrayMap(e -> e.1, arrayFilter(e -> (e.2, e.3) = pair, spy_ends)), spy_pairs)
                        AS spy_pair_ends
                FROM
                (
                    SELECT
                        call_id,
                        arraySort(groupArrayIf((received_at, seq, toString(queue_name)), event = 'queue_in')) AS ins,
                        arraySort(groupArrayIf((received_at, seq, toString(queue_name)), event = 'queue_out')) AS outs,
                        arraySort(groupArrayIf((received_at, seq, line_userid), event = 'answered_internal')) AS answers,
                        arraySort(groupArrayIf(received_at, event = 'call_end')) AS ends,
                        minIf(toNullable(received_at), event IN ('answered_internal', 'answered_external')) AS answered_at,
                        minIf(toNullable(received_at), event = 'call_end') AS ended_at,
                        arraySort(groupArrayIf(received_at, event = 'call_recording_start')) AS rec_starts,
                        arraySort(groupArrayIf(received_at, event = 'call_recording_stop')) AS rec_stops,
                        arraySort(groupArrayIf(
                            (received_at, seq, spying_userid, spying_target_userid, spying_exten,
                             spying_target_exten, toString(spy_type)),
                            event = 'call_spy_start')) AS spy_starts,
                        arraySort(groupArrayIf((received_at, spying_userid, spying_target_userid),
                            event = 'call_spy_end')) AS spy_ends,
                        arraySort(groupArrayIf((received_at, seq, line_userid),
                            event = 'start_int_dial' AND line_userid != '')) AS int_dials,
                        groupUniqArrayIf(line_userid,
                            event IN ('answered_internal', 'answered_external') AND line_userid != '') AS answerers
                    FROM pbx.call_events(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
                    WHERE event IN ('queue_in', 'queue_out', 'answered_internal', 'answered_external', 'call_end',
                                    'call_recording_start', 'call_recording_stop', 'call_spy_start',
                                    'call_spy_end', 'start_int_dial')
                      AND call_id != ''
                    GROUP BY call_id
                )
            )
        )
    )
);
