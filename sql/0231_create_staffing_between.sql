-- Staffing of a time range (issue 15): pbx.staffing_15m's rows with
-- interval_start in [from, to), reading only what that range needs.
-- Definitions: docs/metrics.md#pbxstaffing_between.
--
--   SELECT * FROM pbx.staffing_between(from = '2026-11-02', to = '2026-11-03')
--
-- Why: pbx.staffing_15m (0225) reads, whatever the filter on its rows, the
-- talk of every call ever stored (the join's other side has no time key) and
-- every stored visit (each queue's first interval): at 200 agents x 365 days a
-- one-day panel read 32-38 M rows (docs/benchmarks.md, "Staffing panels").
-- Here, with [a, b) = the 15-minute intervals that hold [from, to):
-- - offered and the handle time: the visits of [a, b), pbx.queue_calls filtered
--   on entered_at (prunes the stored visits by their sort key), as in 0225;
-- - the talk of the answered visits' calls: a call's start precedes its queue
--   entry (started_at is the call's first event, entered_at one of its
--   events), so the stored records needed start before b. They are read by
--   the stored calls' sort key in [a - 1 hour, b) (a call queued within an
--   hour of its start: nearly all), plus, exactly, the calls of the range's
--   stored answered visits not found there: their earliest event
--   (pbx.call_spans, keyed by call_id) bounds where their records start; none
--   missing reads nothing more. The dirty calls' records are computed live,
--   as in every contract view;
-- - each queue's first visit: pbx.queue_first_visit (below), one row per
--   queue, kept by a materialized view on pbx.events: the earliest queue_in
--   of a call to the queue, which is the earliest visit pbx.queue_calls has
--   (every queue_in of a call opens a visit, a re-sent one is the same visit
--   and the earliest counts: docs/metrics.md#duplicates), stored or not. Each
--   queue's rows run from its first visit's interval to the data's now, so
--   inside [a, b): from the later of a and that interval, to the earlier of
--   b - 15 min and now.
-- Same rows, columns and figures as pbx.staffing_15m filtered to
-- from <= interval_start < to (tests/e2e/analytics/test_staffing_between.py).
-- pbx.staffing_15m stays 0225's text, not redefined on this one: a reader's
-- filter on its interval_start would no longer reach the visits
-- (docs/metrics.md#pbxstaffing_between).
--
-- `from` and `to` are UTC. Pass strings ('2026-11-02 08:00:00') or values of
-- a UTC DateTime type: ClickHouse hands a view a computed argument as text in
-- the session's time zone (as pbx.repeat_calls_between, 0230).

-- Each queue's earliest queue_in (of a call: call_id not empty, as the visits).
CREATE TABLE IF NOT EXISTS pbx.queue_first_visit ${ON_CLUSTER}
(
    queue_name String,
    first_at SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
)
ENGINE = ${REPLICATED}AggregatingMergeTree
ORDER BY queue_name;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.queue_first_visit_mv ${ON_CLUSTER} TO pbx.queue_first_visit AS
SELECT toString(queue_name) AS queue_name, min(received_at) AS first_at
FROM pbx.events
WHERE event = 'queue_in' AND call_id != ''
GROUP BY queue_name;

-- The queues of the events stored before this migration (an event inserted
-- meanwhile counted twice changes no minimum).
INSERT INTO pbx.queue_first_visit
SELECT toString(queue_name), min(received_at)
FROM pbx.events
WHERE event = 'queue_in' AND call_id != ''
GROUP BY queue_name;

CREATE OR REPLACE VIEW pbx.staffing_between ${ON_CLUSTER} AS
WITH
    -- [read_from, read_to): the 15-minute intervals that hold [from, to)
    toStartOfInterval({from:DateTime64(3, 'UTC')}, INTERVAL 15 MINUTE) AS read_from,
    toStartOfInterval({to:DateTime64(3, 'UTC')}, INTERVAL 15 MINUTE) + INTERVAL 15 MINUTE AS read_to,
    -- where the stored calls of the range's visits are looked for first
    read_from - INTERVAL 1 HOUR AS talk_from,
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
    -- The calls of the range's stored answered visits whose stored record does
    -- not start in [talk_from, read_to) (usually none; a scalar: computed once).
    (
        SELECT groupArray(call_id)
        FROM
        (
            SELECT DISTINCT call_id
            FROM pbx.queue_visits_data
            WHERE entered_at >= read_from AND entered_at < read_to AND answer_at IS NOT NULL
              AND call_id NOT IN
              (
                  SELECT call_id
                  FROM pbx.calls_data FINAL
                  WHERE is_deleted = 0 AND started_at >= talk_from AND started_at < read_to
                    AND answered_at IS NOT NULL
              )
        )
    ) AS missing,
    talk AS
    (
        -- pbx.calls' call_id and talk_s (pbx.calls_from_live's two parts), for the
        -- calls of the range's answered visits (and some others, which the join
        -- drops). Only answered calls: an answered visit's call has an answer.
        SELECT
            call_id,
            if(answered_at IS NULL OR ended_at IS NULL, NULL,
               greatest(dateDiff('millisecond', answered_at, ended_at), 0) / 1000) AS talk_s
        FROM
        (
            SELECT call_id, answered_at, ended_at
            FROM pbx.calls_data FINAL
            WHERE is_deleted = 0 AND started_at >= talk_from AND started_at < read_to AND answered_at IS NOT NULL
              AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list_live)).1)
            UNION ALL
            SELECT call_id, answered_at, ended_at
            FROM pbx.calls_data FINAL
            WHERE is_deleted = 0
              AND started_at >= (SELECT coalesce(minOrNull(first_at), talk_from) FROM pbx.call_spans
                                 WHERE call_id IN (SELECT arrayJoin(missing)))
              AND started_at < talk_from
              AND call_id IN (SELECT arrayJoin(missing))
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
        -- One row per interval and queue of [read_from, read_to): offered and the
        -- handle time of the visits entered in it, and the queue's grid.
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
                WHERE entered_at >= read_from AND entered_at < read_to
            ) AS v ON t.call_id = v.call_id
            GROUP BY interval_start, queue_name
            UNION ALL
            -- Each queue's intervals from its first visit to the data's now, within
            -- [read_from, read_to) (computed as DateTime64: `to` may be past 2106).
            SELECT
                arrayJoin(arrayMap(i -> toDateTime(grid_from) + toIntervalMinute(15 * i),
                    range(toUInt32(intDiv(toUnixTimestamp(toDateTime(grid_to))
                        - toUnixTimestamp(toDateTime(grid_from)), 900) + 1)))),
                queue_name, 0, NULL
            FROM
            (
                SELECT
                    queue_name,
                    toDateTime64(toStartOfInterval(toDateTime(min(first_at)), INTERVAL 15 MINUTE), 3, 'UTC')
                        AS first_interval,
                    greatest(first_interval, read_from) AS grid_from,
                    least(greatest(toDateTime64(last_interval, 3, 'UTC'), first_interval),
                          read_to - INTERVAL 15 MINUTE) AS grid_to
                FROM pbx.queue_first_visit
                GROUP BY queue_name
            )
            WHERE grid_from <= grid_to
        )
        GROUP BY interval_start, queue_name
        HAVING interval_start >= {from:DateTime64(3, 'UTC')} AND interval_start < {to:DateTime64(3, 'UTC')}
    ) AS k
    LEFT JOIN settings AS q ON q.queue_name = k.queue_name
);
