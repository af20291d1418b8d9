-- Staffing: how many agents each queue needed, per 15-minute interval, to meet
-- its service-level target, by Erlang C (issue 14). Definitions:
-- docs/metrics.md#pbxstaffing_15m.
--
-- offered is pbx.queue_stats_15m's; aht_s is the average talk_s (pbx.calls) of
-- the calls of the visits answered in the interval (the visits counted in
-- queue_stats_15m.answered); traffic_erlangs = offered * aht_s / 900.
-- agents_required is the smallest N > A (A = traffic_erlangs) whose Erlang C
-- service level
--     SL(N) = 1 - C(N, A) * exp(-(N - A) * sla_threshold_s / aht_s)
-- reaches sla_target_pct / 100, with the queue's settings (defaults 20 s, 80 %).
--
-- Erlang C from the Erlang B recursion, which stays in (0, 1] for any number
-- of agents (no factorials or powers to overflow):
--     B(0) = 1,  B(n) = A * B(n-1) / (n + A * B(n-1)),
--     C(N) = N * B(N) / (N - A * (1 - B(N))).
-- One arrayFold walks n = 1, 2, ... carrying (B(n-1), answer): at step n it
-- has B(n-1), tests N = n - 1 and computes B(n). The walk stops at
-- A + 10 * sqrt(A) + 20 agents, far beyond what any target below 100 %
-- needs (square-root staffing: a 99.99 % chance of not waiting at all
-- needs about A + 4 * sqrt(A)); a target of 100 % or more cannot be met in
-- the model and gives NULL.
--
-- One row per queue and interval from the queue's first visit to the
-- interval of the newest event stored (the data's "now"), including
-- intervals without calls (offered 0, agents_required 0), so a dashboard can
-- set agents required against agents staffed in every interval.

CREATE VIEW IF NOT EXISTS pbx.staffing_15m ${ON_CLUSTER} AS
WITH
    handled AS
    (
        -- The talk of the call of every visit answered, by the visit's interval
        -- of entry. (Calls probe, visits build the hash table: a time filter on
        -- the view reaches the visits.)
        SELECT v.interval_start AS interval_start, v.queue_name AS queue_name, avg(c.talk_s) AS aht_s
        FROM pbx.calls AS c
        INNER JOIN
        (
            SELECT
                call_id,
                toStartOfInterval(toDateTime(entered_at), INTERVAL 15 MINUTE) AS interval_start,
                toString(queue_name) AS queue_name
            FROM pbx.queue_calls
            WHERE outcome = 'answered'
        ) AS v ON v.call_id = c.call_id
        GROUP BY interval_start, queue_name
    ),
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
        -- One row per interval and queue: offered from the 15-minute view, the
        -- handle time, and every interval from the queue's first visit to the
        -- data's now (a filter on interval_start reaches all three).
        SELECT interval_start, queue_name, sum(offered) AS offered, max(aht) AS aht_s
        FROM
        (
            SELECT interval_start, toString(queue_name) AS queue_name, offered, CAST(NULL, 'Nullable(Float64)') AS aht
            FROM pbx.queue_stats_15m
            UNION ALL
            SELECT interval_start, queue_name, 0, aht_s
            FROM handled
            UNION ALL
            SELECT
                arrayJoin(arrayMap(i -> first_interval + toIntervalMinute(15 * i),
                    range(toUInt32(intDiv(toUnixTimestamp(greatest(last_interval, first_interval))
                        - toUnixTimestamp(first_interval), 900) + 1)))),
                queue_name, 0, NULL
            FROM
            (
                SELECT toString(queue_name) AS queue_name, min(interval_start) AS first_interval
                FROM pbx.queue_stats_15m
                GROUP BY queue_name
            )
        )
        GROUP BY interval_start, queue_name
    ) AS k
    LEFT JOIN settings AS q ON q.queue_name = k.queue_name
);
