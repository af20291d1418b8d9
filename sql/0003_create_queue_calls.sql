-- Queue visits: one row per queue_in, paired with its leaving, answer and outcome.
-- Definitions and tie rules: docs/metrics.md#pbxqueue_calls.
--
-- Computed from raw events on every read (a plain view), so it is right
-- whatever the arrival order or batching of a call's events. All of a call's
-- events are gathered into arrays (one GROUP BY call_id) and paired there.
--
-- queue_calls_since(since) is the same for visits entered at or after `since`:
-- every event a visit depends on is at or after its entered_at, so reading
-- events from `since` on is exact. pbx.queue_stats_15m's refresh uses it to
-- recompute only recent intervals.

CREATE VIEW IF NOT EXISTS pbx.queue_calls_since ${ON_CLUSTER} AS
WITH settings AS
(
    SELECT
        queue_name,
        toNullable(argMax(sla_threshold_s, updated_at)) AS sla_threshold_s,
        toNullable(argMax(short_abandon_s, updated_at)) AS short_abandon_s
    FROM pbx.queue_settings
    GROUP BY queue_name
)
SELECT
    v.call_id AS call_id,
    v.queue_name AS queue_name,
    v.entered_at AS entered_at,
    v.left_at AS left_at,
    v.answered_at AS answered_at,
    v.agent AS agent,
    v.wait_s AS wait_s,
    CAST(multiIf(
        v.answered_at IS NOT NULL, 'answered',
        v.later_visit, 'overflow',
        v.left_at IS NULL, 'waiting',
        v.wait_s < coalesce(s.short_abandon_s, 5), 'short_abandon',
        'abandoned'
    ), 'LowCardinality(String)') AS outcome,
    toUInt8(v.answered_at IS NOT NULL AND v.wait_s <= coalesce(s.sla_threshold_s, 20)) AS in_sla,
    -- The queue's settings applied to this visit (not in pbx.queue_calls).
    coalesce(s.sla_threshold_s, 20) AS sla_threshold_s,
    coalesce(s.short_abandon_s, 5) AS short_abandon_s
FROM
(
    SELECT
        call_id,
        visit.2 AS queue_name,
        visit.1 AS entered_at,
        visit_left AS left_at,
        -- The first answer in [entered_at, left_at]; an open visit takes any later answer.
        arrayFilter(a -> a.1 >= entered_at AND (left_at IS NULL OR a.1 <= left_at), answers) AS in_visit,
        if(empty(in_visit), NULL, in_visit[1].1) AS answered_at,
        if(empty(in_visit), NULL, in_visit[1].2) AS agent,
        dateDiff('millisecond', entered_at, coalesce(answered_at, left_at)) / 1000 AS wait_s,
        -- Overflow: the call entered a queue again later (a repeat of this same
        -- visit, see below, does not count).
        arrayExists(
            (w, wl) -> (w.1 > entered_at OR (w.1 = entered_at AND w.2 != queue_name AND left_at = entered_at))
                AND NOT (w.2 = queue_name AND isNotDistinctFrom(wl, left_at)),
            ins, lefts) AS later_visit,
        -- A PBX cannot put one call in the same queue twice without it leaving:
        -- a second queue_in with the same queue and the same end is a
        -- re-delivery, and the earliest one is the visit.
        arrayExists(
            (w, wl) -> w.2 = queue_name AND w.1 < entered_at AND isNotDistinctFrom(wl, left_at),
            ins, lefts) AS repeated
    FROM
    (
        SELECT
            call_id,
            arraySort(arrayDistinct(groupArrayIf((received_at, queue_name), event = 'queue_in'))) AS ins,
            arraySort(groupArrayIf((received_at, queue_name), event = 'queue_out')) AS outs,
            -- Sorted by (time, agent): of two answers in the same millisecond the smaller agent id wins.
            arraySort(groupArrayIf((received_at, line_userid), event = 'answered_internal')) AS answers,
            arraySort(groupArrayIf(received_at, event = 'call_end')) AS ends,
            -- A visit ends at the first queue_out of its queue at or after it
            -- entered, else at the call's first call_end at or after, else is open.
            arrayMap(
                w -> coalesce(
                    arrayMap(o -> toNullable(o.1), arrayFilter(o -> o.2 = w.2 AND o.1 >= w.1, outs))[1],
                    arrayMap(e -> toNullable(e), arrayFilter(e -> e >= w.1, ends))[1]),
                ins) AS lefts
        FROM pbx.events
        WHERE event IN ('queue_in', 'queue_out', 'answered_internal', 'call_end')
          AND received_at >= {since:DateTime64(3, 'UTC')}
        GROUP BY call_id
        HAVING notEmpty(ins)
    )
    ARRAY JOIN ins AS visit, lefts AS visit_left
    WHERE NOT repeated
) AS v
LEFT JOIN settings AS s ON s.queue_name = v.queue_name;

-- The contract view: every visit.
CREATE VIEW IF NOT EXISTS pbx.queue_calls ${ON_CLUSTER} AS
SELECT call_id, queue_name, entered_at, left_at, answered_at, agent, wait_s, outcome, in_sla
FROM pbx.queue_calls_since(since = toDateTime64(0, 3, 'UTC'));
