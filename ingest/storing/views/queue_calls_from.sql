-- layers: calls
-- pbx.queue_calls_from(whole): every visit with its outcome. whole = 0: stored
-- visits plus the dirty calls' (the contract views); whole = 1: everything
-- computed from raw events (the _raw twins, for checking). The extra columns
-- sla_threshold_s and short_abandon_s are the thresholds applied.

WITH settings AS
(
    SELECT
        queue_name,
        toNullable(argMax(sla_threshold_s, updated_at)) AS sla_threshold_s,
        toNullable(argMax(short_abandon_s, updated_at)) AS short_abandon_s,
        toNullable(argMax(answer_grace_s, updated_at)) AS answer_grace_s
    FROM pbx.queue_settings
    GROUP BY queue_name
)
SELECT
    v.call_id AS call_id,
    v.queue_name AS queue_name,
    v.entered_at AS entered_at,
    v.left_at AS left_at,
    -- The candidate answer is the visit's if the visit is open or it came at most
    -- answer_grace_s after the visit left (docs/metrics.md#pbxqueue_calls).
    if(v.answer_at IS NOT NULL AND (v.left_at IS NULL
            OR v.answer_at <= v.left_at + toIntervalMillisecond(toInt64(1000 * coalesce(s.answer_grace_s, 2)))),
       v.answer_at, NULL) AS answered_at,
    if(answered_at IS NULL, NULL, v.answer_agent) AS agent,
    dateDiff('millisecond', v.entered_at, coalesce(answered_at, v.left_at)) / 1000 AS wait_s,
    CAST(multiIf(
        answered_at IS NOT NULL, 'answered',
        v.overflow = 1, 'overflow',
        v.left_at IS NULL, 'waiting',
        wait_s < coalesce(s.short_abandon_s, 5), 'short_abandon',
        'abandoned'
    ), 'LowCardinality(String)') AS outcome,
    toUInt8(answered_at IS NOT NULL AND wait_s <= coalesce(s.sla_threshold_s, 20)) AS in_sla,
    coalesce(s.sla_threshold_s, 20) AS sla_threshold_s,
    coalesce(s.short_abandon_s, 5) AS short_abandon_s
FROM
(
    SELECT call_id, toString(queue_name) AS queue_name, entered_at, left_at, answer_at, answer_agent, overflow
    FROM pbx.queue_visits_data FINAL
    WHERE {whole:UInt8} = 0 AND is_deleted = 0
      AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list(layer = 'calls', refresh = 0))).1)
    UNION ALL
    SELECT call_id, v.2, v.1, v.3, v.4, v.5, v.6
    FROM pbx.call_visits(layer = 'calls', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN visits AS v
) AS v
LEFT JOIN settings AS s ON s.queue_name = v.queue_name
