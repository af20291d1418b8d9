-- The queue contract views, complete for every reader at once: stored visits
-- of the calls that are up to date, plus the visits of the others computed
-- from raw events with the same SQL (pbx.call_facts). Thresholds (SLA, short
-- abandon, answer grace) are applied here, when read, from the newest
-- pbx.queue_settings row of each queue: changing them recomputes nothing.
-- Definitions: docs/metrics.md#pbxqueue_calls, #pbxqueue_stats_15m, #live-views.

-- pbx.queue_calls_from(whole): every visit with its outcome. whole = 0: stored
-- visits plus the dirty calls' (the contract views); whole = 1: everything
-- computed from raw events (the _raw twins, for checking). The extra columns
-- sla_threshold_s and short_abandon_s are the thresholds applied.
CREATE OR REPLACE VIEW pbx.queue_calls_from ${ON_CLUSTER} AS
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
      AND call_id NOT IN (SELECT call_id FROM pbx.dirty_calls(layer = 'calls', refresh = 0))
    UNION ALL
    SELECT call_id, v.2, v.1, v.3, v.4, v.5, v.6
    FROM pbx.call_facts(layer = 'calls', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN visits AS v
) AS v
LEFT JOIN settings AS s ON s.queue_name = v.queue_name;

-- The contract view: every visit.
CREATE OR REPLACE VIEW pbx.queue_calls ${ON_CLUSTER} AS
SELECT call_id, queue_name, entered_at, left_at, answered_at, agent, wait_s, outcome, in_sla
FROM pbx.queue_calls_from(whole = 0);

-- Kept for compatibility: the visits entered at or after `since`, computed from raw events.
CREATE OR REPLACE VIEW pbx.queue_calls_since ${ON_CLUSTER} AS
SELECT *
FROM pbx.queue_calls_from(whole = 1)
WHERE entered_at >= {since:DateTime64(3, 'UTC')};

-- pbx.queue_stats_15m_from(whole): the 15-minute queue figures of
-- pbx.queue_calls_from(whole), aggregated when read. Counts and sums come from
-- the visits; the ratios are computed here, once, for both modes.
CREATE OR REPLACE VIEW pbx.queue_stats_15m_from ${ON_CLUSTER} AS
SELECT
    interval_start,
    queue_name,
    offered,
    answered,
    abandoned,
    short_abandoned,
    overflowed,
    answered_in_sla,
    if(answered + abandoned = 0, NULL, 100 * answered_in_sla / (answered + abandoned)) AS sla_pct,
    if(answered = 0, NULL, 100 * answered_in_sla / answered) AS sla_answered_pct,
    if(offered - overflowed = 0, NULL,
        100 * (answered_in_sla + abandoned_in_sla) / (offered - overflowed)) AS sla_inclusive_pct,
    if(answered + abandoned = 0, NULL, 100 * abandoned / (answered + abandoned)) AS abandon_rate_pct,
    if(answered = 0, NULL, answered_wait_ms / answered / 1000) AS asa_s,
    if(abandoned = 0, NULL, abandoned_wait_ms / abandoned / 1000) AS avg_abandon_s,
    max_wait_ms / 1000 AS max_wait_s
FROM
(
    SELECT
        toStartOfInterval(toDateTime(entered_at), INTERVAL 15 MINUTE) AS interval_start,
        queue_name,
        countIf(outcome IN ('answered', 'abandoned', 'short_abandon', 'overflow')) AS offered,
        countIf(outcome = 'answered') AS answered,
        countIf(outcome = 'abandoned') AS abandoned,
        countIf(outcome = 'short_abandon') AS short_abandoned,
        countIf(outcome = 'overflow') AS overflowed,
        countIf(in_sla = 1) AS answered_in_sla,
        countIf(outcome IN ('abandoned', 'short_abandon') AND wait_s <= sla_threshold_s) AS abandoned_in_sla,
        sumIf(round(wait_s * 1000), outcome = 'answered') AS answered_wait_ms,
        sumIf(round(wait_s * 1000), outcome = 'abandoned') AS abandoned_wait_ms,
        -- over ended visits (an overflow whose end is not known yet has no wait)
        maxIf(toNullable(round(wait_s * 1000)), outcome != 'waiting' AND wait_s IS NOT NULL) AS max_wait_ms
    FROM pbx.queue_calls_from(whole = {whole:UInt8})
    GROUP BY interval_start, queue_name
);

CREATE OR REPLACE VIEW pbx.queue_stats_15m ${ON_CLUSTER} AS
SELECT * FROM pbx.queue_stats_15m_from(whole = 0);

CREATE OR REPLACE VIEW pbx.queue_stats_15m_raw ${ON_CLUSTER} AS
SELECT * FROM pbx.queue_stats_15m_from(whole = 1);

-- Per queue: calls waiting now and the longest current wait. A visit counts
-- as waiting when it is neither answered nor ended and entered within the last
-- 4 hours (an older open visit is a call whose end was never reported, not a
-- caller still on hold). Queues listed: those with a visit in that window and
-- those in pbx.queue_settings, 0 waiting included.
CREATE OR REPLACE VIEW pbx.queue_now ${ON_CLUSTER} AS
SELECT
    queue_name,
    countIf(outcome = 'waiting') AS waiting,
    minIf(toNullable(entered_at), outcome = 'waiting') AS oldest_entered_at,
    dateDiff('millisecond', oldest_entered_at, now64(3)) / 1000 AS longest_wait_s
FROM
(
    SELECT queue_name, entered_at, toString(outcome) AS outcome
    FROM pbx.queue_calls
    WHERE entered_at >= now64(3) - INTERVAL 4 HOUR
    UNION ALL
    SELECT DISTINCT toString(queue_name), toDateTime64(0, 3, 'UTC'), 'settings'
    FROM pbx.queue_settings
)
GROUP BY queue_name;
