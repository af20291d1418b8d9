-- The agent layer's refresh run (sql/0218): the windows of one run's share of
-- arrivals (pbx.agent_time_refresh), with the stored stretches those windows no
-- longer produce marked deleted, and a row that moves the cursor. The stored
-- stretches are read for the hours the windows cover (up to the newest event;
-- the range too: it prunes partitions and parts the hours alone do not),
-- through the same dirty set, one scalar, that pbx.agent_time_refresh reads:
-- 0218 read every stored stretch of the chunk's agents since its earliest
-- window, a year of them for a day backfilled a year back.
ALTER TABLE pbx.agents_refresh ${ON_CLUSTER} MODIFY QUERY
WITH
    now64(3, 'UTC') AS started,
    -- (1970 when this run read no new row: the cursor stays)
    assumeNotNull((
        SELECT max((arrived_at, toString(kind), id))
        FROM pbx.arrivals_from_agents_refresh
        WHERE taken = 1
    )) AS new_cursor,
    -- The windows: [(agent, lo, hi)] (hi = 2299-12-31: to the end of the data).
    arrayFlatten(arrayMap(a -> arrayMap(w -> (a.1, w.1, w.2), a.2),
        (SELECT agents FROM pbx.dirty_agent_list_refresh))) AS plan,
    assumeNotNull((SELECT max(received_at) FROM pbx.events)) AS data_end,
    (
        SELECT groupUniqArray(arrayJoin(arrayMap(h -> toStartOfHour(w.2) + toIntervalHour(h),
            range(toUInt64(greatest(0, dateDiff('hour', toStartOfHour(w.2), toStartOfHour(least(w.3, data_end)))) + 1)))))
        FROM (SELECT arrayJoin(plan) AS w)
    ) AS hours
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
    SELECT w.1 AS agent, w.2 AS lo, groupArray((d.interval_start, d.started_at)) AS keys
    FROM (SELECT arrayJoin(plan) AS w) AS p
    INNER JOIN
    (
        SELECT agent, interval_start, started_at
        FROM pbx.agent_time_data FINAL
        WHERE is_deleted = 0
          AND toStartOfHour(interval_start) IN (SELECT arrayJoin(hours))
          AND interval_start >= arrayMin(hours) AND interval_start < arrayMax(hours) + toIntervalHour(1)
          AND agent IN (SELECT arrayJoin(plan).1)
    ) AS d ON d.agent = w.1
    WHERE d.interval_start >= w.2 AND d.interval_start < w.3
    GROUP BY agent, lo
) AS old ON old.agent = t.agent AND old.lo = t.lo
UNION ALL
SELECT '', started, started, started, new_cursor, [], [];
