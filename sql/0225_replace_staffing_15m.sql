-- pbx.staffing_15m read cheaply (issue 15), with the same rows as 0203's
-- definition (docs/metrics.md#pbxstaffing_15m: the columns, Erlang C and the
-- interval grid are 0203's, unchanged).
--
-- 0203 read its sources whole on every read, whatever the time filter:
-- pbx.calls (the live part of every call record), pbx.queue_stats_15m twice (once
-- for offered, once for each queue's first interval: every visit aggregated)
-- and pbx.queue_calls. Here:
-- - offered and the handle time come from ONE read of pbx.queue_calls, which a
--   filter on interval_start reaches (it prunes the stored visits by their sort
--   key); offered is counted as pbx.queue_stats_15m counts it;
-- - the talk of each call is read from the stored call records
--   (pbx.calls_data FINAL, the calls not dirty) plus the dirty calls' records
--   computed live, as pbx.calls does, without the columns staffing does not
--   need; talk_s as in pbx.calls;
-- - each queue's first interval is the earliest visit of the stored visits
--   (pbx.queue_visits_data FINAL, the calls not dirty) and of the dirty calls'
--   visits computed live (pbx.call_visits_live): the visits pbx.queue_calls and
--   so pbx.queue_stats_15m consist of.
-- No refresh has to have run: the dirty calls are read live, as in every
-- contract view (docs/metrics.md#how-the-views-are-computed-and-why).

CREATE OR REPLACE VIEW pbx.staffing_15m ${ON_CLUSTER} AS
WITH
    settings AS
    (
        -- Newest row wins; queues without one use 20 s and 80 % (as pbx.queue_calls_since).
        SELECT
            toString(queue_name) AS queue_name,
            toNullable(argMax(sla_threshold_s, updated_at)) AS sla_threshold_s,
            toNullable(argMax(sla_target_pct, updated_at)) AS sla_target_pct
        FROM pbx.queue_settings
        GROUP BY queue_name
    ),
    talk AS
    (
        -- pbx.calls' call_id and talk_s (pbx.calls_from_live's two parts).
        SELECT
            call_id,
            if(answered_at IS NULL OR ended_at IS NULL, NULL,
               greatest(dateDiff('millisecond', answered_at, ended_at), 0) / 1000) AS talk_s
        FROM
        (
            SELECT call_id, answered_at, ended_at
            FROM pbx.calls_data FINAL
            WHERE is_deleted = 0
              AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list_live)).1)
            UNION ALL
            SELECT call_id, r.8, r.3
            FROM pbx.call_records_live
            ARRAY JOIN record AS r
        )
    ),
    toStartOfInterval(toDateTime(assumeNotNull((SELECT max(received_at) FROM pbx.events))),
        INTERVAL 15 MINUTE) AS last_interval
SELECT
    interval_start,
    queue_name,
    offered,
    aht_s,
    traffic_erlangs,
    multiIf(
        offered = 0, toNullable(toUInt32(0)),
        aht_s IS NULL OR target_pct >= 100, NULL,
        nullIf(arrayFold(
            (acc, n) -> (
                -- B(n) from B(n-1)
                a * acc.1 / (n + a * acc.1),
                -- the first N = n - 1 > A with SL(N) >= target, else the answer so far
                if(acc.2 = 0 AND n - 1 > a
                    AND 1 - ((n - 1) * acc.1 / ((n - 1) - a * (1 - acc.1)))
                        * if(aht > 0, exp(-((n - 1) - a) * threshold_s / aht), 0) >= target_pct / 100,
                    toUInt32(n - 1), acc.2)),
            range(toUInt32(1), toUInt32(ceil(a + 10 * sqrt(a) + 20)) + 2),
            (toFloat64(1), toUInt32(0))).2, 0)) AS agents_required
FROM
(
    SELECT
        k.interval_start AS interval_start,
        toLowCardinality(k.queue_name) AS queue_name,
        k.offered AS offered,
        k.aht_s AS aht_s,
        if(offered = 0, toNullable(toFloat64(0)), offered * aht_s / 900) AS traffic_erlangs,
        ifNull(traffic_erlangs, 0) AS a,
        ifNull(aht_s, 0) AS aht,
        toFloat64(coalesce(q.sla_threshold_s, 20)) AS threshold_s,
        coalesce(q.sla_target_pct, 80) AS target_pct
    FROM
    (
        -- One row per interval and queue: offered and the handle time of the
        -- visits entered in it, and every interval from the queue's first
        -- visit to the data's now (a filter on interval_start reaches both).
        SELECT interval_start, queue_name, sum(offered) AS offered, max(aht) AS aht_s
        FROM
        (
            SELECT
                v.interval_start AS interval_start,
                v.queue_name AS queue_name,
                -- pbx.queue_stats_15m's offered
                countIf(v.outcome IN ('answered', 'abandoned', 'short_abandon', 'overflow')) AS offered,
                -- the talk of the calls of the visits answered (a call absent from
                -- pbx.calls has no talk_s)
                avgIf(t.talk_s, v.outcome = 'answered') AS aht
            FROM talk AS t
            RIGHT JOIN
            (
                SELECT
                    call_id,
                    toStartOfInterval(toDateTime(entered_at), INTERVAL 15 MINUTE) AS interval_start,
                    toString(queue_name) AS queue_name,
                    toString(outcome) AS outcome
                FROM pbx.queue_calls
            ) AS v ON t.call_id = v.call_id
            GROUP BY interval_start, queue_name
            UNION ALL
            SELECT
                arrayJoin(arrayMap(i -> first_interval + toIntervalMinute(15 * i),
                    range(toUInt32(intDiv(toUnixTimestamp(greatest(last_interval, first_interval))
                        - toUnixTimestamp(first_interval), 900) + 1)))),
                queue_name, 0, NULL
            FROM
            (
                SELECT queue_name, toStartOfInterval(toDateTime(min(entered_at)), INTERVAL 15 MINUTE) AS first_interval
                FROM
                (
                    SELECT toString(queue_name) AS queue_name, entered_at
                    FROM pbx.queue_visits_data FINAL
                    WHERE is_deleted = 0
                      AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list_live)).1)
                    UNION ALL
                    SELECT v.2, v.1
                    FROM pbx.call_visits_live
                    ARRAY JOIN visits AS v
                )
                GROUP BY queue_name
            )
        )
        GROUP BY interval_start, queue_name
    ) AS k
    LEFT JOIN settings AS q ON q.queue_name = k.queue_name
);
