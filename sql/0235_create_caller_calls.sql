-- Repeat callers of a time range, read in caller order (issue 15):
-- pbx.repeat_calls_between (0230) on a narrow stored copy of the inbound calls
-- sorted by caller. Definitions: docs/metrics.md#pbxrepeat_calls_between.
--
-- Why: 0230 finds each call's next call with a window over pbx.calls in
-- [from, to + window_s), partitioned by caller_num: every read sorts the
-- range's calls by caller. At 200 agents x 30 days (1.3 M inbound calls) the
-- sort and the window took ~650 of the FCR panel's ~900 ms engine CPU
-- (docs/benchmarks.md, "FCR over 30 days on caller_calls"). Here the same
-- window reads pbx.caller_calls: six narrow columns instead of pbx.calls',
-- each day's rows already in the window's order (caller_num, started_at,
-- call_id): ~0.6x the engine CPU at 30 days, one day no dearer.
--
-- pbx.caller_calls: one row per stored call record (pbx.calls_data) that is
-- inbound with a caller number, keyed by its caller; the same versions
-- (computed_at) and deletions as pbx.calls_data, so FINAL gives the stored
-- calls that pbx.calls reads for the calls not dirty. A record keeps its key
-- (started_at, call_id) in pbx.calls_data when its caller or direction
-- changes (a late start_call), but here the key holds the caller: each new
-- version also deletes the rows of the callers the call had before
-- (pbx.call_callers, every caller each stored call has had). This assumes, as
-- pbx.calls_data's FINAL does, that a call's versions are stored in the order
-- of their computed_at (the call layer's refreshes run one at a time).
--
-- The read (pbx.repeat_calls_between below) is pbx.calls' own: the stored
-- records of the calls not dirty, from pbx.caller_calls (whose rows of a call
-- not dirty are its pbx.calls_data record, under its caller), and the dirty
-- calls' live records. Same rows and columns as 0230's view
-- (tests/e2e/analytics/test_repeat_calls_between.py checks it against 0230's
-- window over pbx.calls: nothing stored, part stored, all stored, dirty calls,
-- one of them a stored call that changed caller, and those stored).
-- pbx.repeat_calls stays 0230's text (this view over every time).

-- Every caller each stored inbound call record has had (not versioned: the set only grows).
CREATE TABLE IF NOT EXISTS pbx.call_callers ${ON_CLUSTER}
(
    started_at DateTime64(3, 'UTC'),
    call_id String,
    caller_num String
)
ENGINE = ${REPLICATED}ReplacingMergeTree
PARTITION BY toYYYYMM(started_at)
ORDER BY (started_at, call_id, caller_num);

CREATE TABLE IF NOT EXISTS pbx.caller_calls ${ON_CLUSTER}
(
    day Date,                             -- toDate(started_at), UTC
    caller_num String,
    started_at DateTime64(3, 'UTC'),
    call_id String,
    ended UInt8,                          -- has a call_end (ended_at not NULL)
    first_queue String,                   -- queues[1], '' when it never queued
    answered UInt8,                       -- answered_at not NULL
    computed_at DateTime64(3, 'UTC'),     -- the pbx.calls_data version
    is_deleted UInt8
)
ENGINE = ${REPLICATED}ReplacingMergeTree(computed_at, is_deleted)
-- By month, as pbx.calls_data: an insert of calls over more than 100 days (a
-- refresh chunk of a small centre's history) would fail with day partitions.
-- The day leads the key so that a range reads its days only; within a day the
-- rows are in the window's order.
PARTITION BY toYYYYMM(started_at)
ORDER BY (day, caller_num, started_at, call_id);

-- Each stored record: a row under its caller (deleted unless it is a live inbound
-- call with a caller), and a deletion under every other caller the call had.
-- (In a materialized view every pbx.calls_data is the inserted block, so the
-- callers it had come from pbx.call_callers.)
CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.caller_calls_mv ${ON_CLUSTER} TO pbx.caller_calls AS
SELECT
    toDate(b.started_at) AS day,
    caller AS caller_num,
    b.started_at AS started_at,
    b.call_id AS call_id,
    b.ended AS ended,
    b.first_queue AS first_queue,
    b.answered AS answered,
    b.computed_at AS computed_at,
    toUInt8(NOT (caller = b.caller_num AND b.kept)) AS is_deleted
FROM
(
    SELECT started_at, call_id, caller_num, toUInt8(ended_at IS NOT NULL) AS ended,
           if(empty(queues), '', queues[1]) AS first_queue, toUInt8(answered_at IS NOT NULL) AS answered,
           computed_at, is_deleted = 0 AND direction = 'inbound' AND caller_num != '' AS kept
    FROM pbx.calls_data
) AS b
LEFT JOIN
(
    SELECT started_at, call_id, groupArray(caller_num) AS callers
    FROM pbx.call_callers
    WHERE (started_at, call_id) IN (SELECT started_at, call_id FROM pbx.calls_data)
    GROUP BY started_at, call_id
) AS o ON o.started_at = b.started_at AND o.call_id = b.call_id
ARRAY JOIN arrayFilter(c -> c != '', arrayDistinct(arrayConcat([b.caller_num], o.callers))) AS caller;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.call_callers_mv ${ON_CLUSTER} TO pbx.call_callers AS
SELECT started_at, call_id, caller_num
FROM pbx.calls_data
WHERE is_deleted = 0 AND direction = 'inbound' AND caller_num != '';

-- The records stored before this migration (a record inserted meanwhile counted
-- twice is the same row twice: one is kept).
INSERT INTO pbx.call_callers
SELECT started_at, call_id, caller_num
FROM pbx.calls_data FINAL
WHERE is_deleted = 0 AND direction = 'inbound' AND caller_num != '';

INSERT INTO pbx.caller_calls
SELECT toDate(started_at), caller_num, started_at, call_id, toUInt8(ended_at IS NOT NULL), if(empty(queues), '', queues[1]),
       toUInt8(answered_at IS NOT NULL), computed_at, 0
FROM pbx.calls_data FINAL
WHERE is_deleted = 0 AND direction = 'inbound' AND caller_num != '';

CREATE OR REPLACE VIEW pbx.repeat_calls_between ${ON_CLUSTER} AS
WITH
    {from:DateTime64(3, 'UTC')} AS range_from,
    {to:DateTime64(3, 'UTC')} + toIntervalSecond({window_s:UInt32}) AS read_to
-- 0230's columns, in its order
SELECT * EXCEPT ended,
       toUInt8(ifNull(dateDiff('millisecond', started_at, next_call_at) <= {window_s:UInt32} * 1000, 0)) AS repeat
FROM
(
    SELECT
        call_id, caller_num, started_at, ended, first_queue, answered,
        leadInFrame(toNullable(started_at)) OVER (
            PARTITION BY caller_num ORDER BY started_at, call_id
            ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next_call_at
    FROM
    (
        -- pbx.calls' inbound calls with a caller, as pbx.calls_from_live has them: the
        -- stored records of the calls not dirty (here their copy by caller, each day's
        -- rows in the window's order) and the dirty calls' live records.
        SELECT call_id, caller_num, started_at, ended, first_queue, answered
        FROM pbx.caller_calls FINAL
        WHERE is_deleted = 0
          AND day >= toDate32(range_from) AND day <= toDate32(read_to)  -- (Date32: `to` may be past 2149)
          AND started_at >= range_from AND started_at < read_to
          AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list_live)).1)
        UNION ALL
        SELECT call_id, r.5, r.1, toUInt8(r.3 IS NOT NULL), if(empty(r.7), '', r.7[1]), toUInt8(r.8 IS NOT NULL)
        FROM pbx.call_records_live
        ARRAY JOIN record AS r
        WHERE r.4 = 'inbound' AND r.5 != '' AND r.1 >= range_from AND r.1 < read_to
    )
)
WHERE ended = 1 AND started_at < {to:DateTime64(3, 'UTC')};
