-- The two layers' refreshable views, and the history stored before this
-- schema computed once, here (the refreshes then keep it up to date). Both read
-- the plain views of 0217 in mode `refresh` (one run's share of the arrival
-- rows: bounded work and memory whatever the backlog). Design:
-- docs/metrics.md#how-the-views-are-computed.

-- History stored before this migration: computed here in one pass over the
-- events (grouping spills to disk past 400 MB), after the cursor is set to now:
-- what arrives from now on is the refresh's.
INSERT INTO pbx.refresh_marks SELECT 'calls', (now64(3, 'UTC'), '', '');

INSERT INTO pbx.call_work
SELECT
    call_id,
    now64(3, 'UTC'),
    (toDateTime64(0, 3, 'UTC'), '', ''),
    arrayMap(v -> (v.1, v.2, v.3, v.4, v.5, v.6, toUInt8(0)), visits),
    arrayMap(r -> (r.1, r.2, r.3, r.4, r.5, r.6, toUInt8(0)), recording),
    spies,
    rings,
    arrayMap(r -> (r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12, toUInt8(0)), record)
FROM pbx.call_facts_all
SETTINGS max_bytes_before_external_group_by = 400000000;

-- (Rows for the calls pbx.call_facts_refresh computed, and one more row
-- that moves the cursor even when the rows read named no call to compute.)
CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.calls_refresh ${ON_CLUSTER}
REFRESH EVERY 60 SECOND APPEND TO pbx.call_work AS
WITH
    now64(3, 'UTC') AS started,
    -- (1970 when this run read no new row: the cursor stays)
    assumeNotNull((
        SELECT max((arrived_at, toString(kind), id))
        FROM pbx.arrivals_from_calls_refresh
        WHERE taken = 1
    )) AS new_cursor,
    -- The calls of this run and the hours of their events (scalars: computed once).
    (
        SELECT (groupArray(call_id),
                groupUniqArray(arrayJoin(arrayMap(h -> toStartOfHour(first_at) + toIntervalHour(h),
                    range(toUInt64(dateDiff('hour', toStartOfHour(first_at), toStartOfHour(last_at)) + 1))))))
        FROM pbx.dirty_calls_refresh
    ) AS chunk
SELECT
    f.call_id AS call_id,
    started AS computed_at,
    new_cursor AS cursor,
    -- new rows, and the keys stored before that the call no longer produces, deleted
    arrayConcat(
        arrayMap(v -> (v.1, v.2, v.3, v.4, v.5, v.6, toUInt8(0)), f.visits),
        arrayMap(x -> (x.1, x.2, NULL, NULL, NULL, toUInt8(0), toUInt8(1)),
            arrayFilter(x -> NOT has(arrayMap(v -> (v.1, v.2), f.visits), x), old.visit_keys))) AS visits,
    arrayConcat(
        arrayMap(r -> (r.1, r.2, r.3, r.4, r.5, r.6, toUInt8(0)), f.recording),
        arrayMap(x -> (x, NULL, NULL, toUInt32(0), NULL, toUInt8(0), toUInt8(1)),
            arrayFilter(x -> NOT has(arrayMap(r -> r.1, f.recording), x), old.recording_keys))) AS recording,
    f.spies AS spies,
    f.rings AS rings,
    arrayConcat(
        arrayMap(r -> (r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12, toUInt8(0)), f.record),
        arrayMap(x -> (x, '', NULL, '', '', '', [], NULL, NULL, [], toUInt8(0), toUInt8(0), toUInt8(1)),
            arrayFilter(x -> NOT has(arrayMap(r -> r.1, f.record), x), old.record_keys))) AS record
FROM pbx.call_facts_refresh AS f
LEFT JOIN
(
    SELECT call_id, groupArrayIf((entered_at, toString(queue_name)), src = 'visit') AS visit_keys,
           groupArrayIf(entered_at, src = 'recording') AS recording_keys,
           groupArrayIf(entered_at, src = 'record') AS record_keys
    FROM
    (
        SELECT call_id, entered_at, queue_name, 'visit' AS src
        FROM pbx.queue_visits_data FINAL
        WHERE toStartOfHour(entered_at) IN (SELECT arrayJoin(chunk.2))
          AND call_id IN (SELECT arrayJoin(chunk.1)) AND is_deleted = 0
        UNION ALL
        SELECT call_id, at, '', 'recording'
        FROM pbx.recordings_data FINAL
        WHERE toStartOfHour(at) IN (SELECT arrayJoin(chunk.2))
          AND call_id IN (SELECT arrayJoin(chunk.1)) AND is_deleted = 0
        UNION ALL
        SELECT call_id, started_at, '', 'record'
        FROM pbx.calls_data FINAL
        WHERE toStartOfHour(started_at) IN (SELECT arrayJoin(chunk.2))
          AND call_id IN (SELECT arrayJoin(chunk.1)) AND is_deleted = 0
    )
    GROUP BY call_id
) AS old ON old.call_id = f.call_id
UNION ALL
SELECT '', started, new_cursor, [], [], [], [], []
SETTINGS max_bytes_before_external_group_by = 300000000;

-- Agents' history, likewise.
INSERT INTO pbx.refresh_marks SELECT 'agents', (now64(3, 'UTC'), '', '');

INSERT INTO pbx.agent_work
SELECT agent, lo, hi, now64(3, 'UTC'), (toDateTime64(0, 3, 'UTC'), '', ''),
       arrayMap(p -> (p.1, p.2, p.3, p.4, p.5, p.6, toUInt8(0)), pieces), open
FROM pbx.agent_time_all
SETTINGS max_bytes_before_external_group_by = 400000000;

-- Every minute: the windows of one run's share of arrivals, with the stored
-- stretches those windows no longer produce marked deleted, and a row that
-- moves the cursor.
CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agents_refresh ${ON_CLUSTER}
REFRESH EVERY 60 SECOND APPEND TO pbx.agent_work AS
WITH
    now64(3, 'UTC') AS started,
    -- (1970 when this run read no new row: the cursor stays)
    assumeNotNull((
        SELECT max((arrived_at, toString(kind), id))
        FROM pbx.arrivals_from_agents_refresh
        WHERE taken = 1
    )) AS new_cursor,
    chunk AS
    (
        SELECT agent, w.1 AS lo, w.2 AS hi
        FROM pbx.dirty_agents_refresh
        ARRAY JOIN windows AS w
    )
SELECT
    t.agent AS agent,
    t.lo AS lo,
    t.hi AS hi,
    started AS computed_at,
    new_cursor AS cursor,
    arrayConcat(
        arrayMap(p -> (p.1, p.2, p.3, p.4, p.5, p.6, toUInt8(0)), t.pieces),
        arrayMap(k -> (k.1, k.2, k.2, '', '', toUInt8(0), toUInt8(1)),
            arrayFilter(k -> NOT has(arrayMap(p -> (p.1, p.2), t.pieces), k), old.keys))) AS pieces,
    t.open AS open
FROM pbx.agent_time_refresh AS t
LEFT JOIN
(
    SELECT w.agent AS agent, w.lo AS lo, groupArray((d.interval_start, d.started_at)) AS keys
    FROM chunk AS w
    INNER JOIN
    (
        SELECT agent, interval_start, started_at
        FROM pbx.agent_time_data FINAL
        WHERE is_deleted = 0 AND agent IN (SELECT agent FROM chunk)
          AND interval_start >= (SELECT min(lo) FROM chunk)
    ) AS d ON d.agent = w.agent
    WHERE d.interval_start >= w.lo AND d.interval_start < w.hi
    GROUP BY w.agent, w.lo
) AS old ON old.agent = t.agent AND old.lo = t.lo
UNION ALL
SELECT '', started, started, started, new_cursor, [], [];
