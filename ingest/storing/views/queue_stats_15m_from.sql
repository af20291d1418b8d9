-- layers: calls
-- pbx.queue_stats_15m_from(whole): the 15-minute queue figures of
-- pbx.queue_calls_from(whole), aggregated when read. Counts and sums come from
-- the visits; the ratios are computed here, once, for both modes.

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
)
