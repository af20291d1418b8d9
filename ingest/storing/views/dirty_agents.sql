-- layers: agents
-- pbx.dirty_agents(layer, refresh): per agent with windows to compute (all
-- of them, or those of one run's share of arrivals: pbx.arrivals_from), the
-- windows as [lo, hi) pairs (hi = 2299-12-31: to the end of the data).
-- An arrival row past the layer's cursor (taken) always counts: no run has
-- read it, however recently the agent was computed (for other windows: a run
-- reads chunk_rows rows). One less than the commit margin before the cursor
-- counts only for an agent last computed less than the margin after it (that
-- run may not have seen it).
-- Intermediate sets are scalar subqueries, computed once per query however
-- often used; each becomes a constant the query is analysed with, cheap for a
-- minute's arrivals, seconds for the tens of thousands of rows an import
-- leaves in the margin (docs/metrics.md#how-the-views-are-computed).

WITH
    toIntervalMillisecond(pbx_refresh_setting('commit_margin_ms')) AS margin,
    toIntervalMillisecond(pbx_reorder_tolerance_ms()) AS tolerance,
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS open_end,
    -- The arrival rows to look at: agents' own events (agent, first event, last
    -- event, arrival, taken), and calls (call_id, arrival, taken) with the hours of their events.
    (
        SELECT (groupArrayIf((id, first_at, last_at, arrived_at, taken), kind = 'agent'),
                groupArrayIf((id, arrived_at, taken), kind = 'call'))
        FROM pbx.arrivals_from(layer = {layer:String}, refresh = {refresh:UInt8})
    ) AS arrived,
    arrived.1 AS agent_news,
    arrived.2 AS call_news,
    (
        SELECT groupUniqArray(arrayJoin(arrayMap(h -> toStartOfHour(first_at) + toIntervalHour(h),
            range(toUInt64(dateDiff('hour', toStartOfHour(first_at), toStartOfHour(last_at)) + 1)))))
        FROM pbx.call_spans
        WHERE call_id IN (SELECT arrayJoin(call_news).1)
    ) AS call_hours,
    -- Those calls' talks as they are now (pbx_call_talks, sql/0226): (agent, answered_at,
    -- talk end or NULL, the call's last arrival, whether a row of it is taken).
    (
        SELECT groupArray((a.1, a.2, a.3, n.last_arrival, n.taken))
        FROM
        (
            SELECT call_id, pbx_call_talks(received_at, seq, line_userid, event) AS call_talks
            FROM pbx.events
            WHERE pbx_talk_event(event)
              AND toStartOfHour(received_at) IN (SELECT arrayJoin(call_hours))
              AND call_id IN (SELECT arrayJoin(call_news).1)
            GROUP BY call_id
            HAVING notEmpty(call_talks)
        ) AS c
        INNER JOIN
        (
            SELECT x.1 AS call_id, max(x.2) AS last_arrival, max(x.3) AS taken
            FROM (SELECT arrayJoin(call_news) AS x)
            GROUP BY call_id
        ) AS n ON n.call_id = c.call_id
        ARRAY JOIN call_talks AS a
    ) AS talk_news,
    -- When each agent was last computed: (agents, times), looked up with transform (a hash
    -- table built once per block; 1970 if never computed).
    (
        SELECT (groupArray(id), groupArray(computed_at))
        FROM (SELECT id, max(computed_at) AS computed_at FROM pbx.refresh_done WHERE layer = {layer:String} GROUP BY id)
    ) AS done,
    toDateTime64(0, 3, 'UTC') AS never,
    -- The hours of the week after the new talks' answers (read with the range too: it
    -- prunes partitions and parts the hours alone do not).
    (
        SELECT groupUniqArray(h + toIntervalHour(k))
        FROM (SELECT DISTINCT toStartOfHour(t.2) AS h FROM (SELECT arrayJoin(talk_news) AS t))
        ARRAY JOIN range(169) AS k
    ) AS stored_hours
SELECT
    agent,
    -- Seeds aligned to interval boundaries and merged where they overlap.
    arrayFold(
        (acc, w) -> if(notEmpty(acc) AND w.1 <= acc[-1].2,
                       arrayPushBack(arrayPopBack(acc), (acc[-1].1, greatest(acc[-1].2, w.2))),
                       arrayPushBack(acc, w)),
        arraySort(groupArray((
            toDateTime64(toStartOfInterval(toDateTime(lo, 'UTC'), INTERVAL 15 MINUTE), 3, 'UTC'),
            if(hi = open_end, open_end,
               toDateTime64(toStartOfInterval(toDateTime(hi, 'UTC'), INTERVAL 15 MINUTE), 3, 'UTC')
                   + INTERVAL 15 MINUTE)))),
        CAST([], 'Array(Tuple(DateTime64(3, \'UTC\'), DateTime64(3, \'UTC\')))')) AS windows
FROM
(
    -- A seed reaching the agent's stored current stretch covers it and runs to the end.
    SELECT
        s.agent AS agent,
        if(s.hi > o.started_at AND o.agent != '', least(s.lo, o.started_at), s.lo) AS lo,
        if(s.hi > o.started_at AND o.agent != '', open_end, s.hi) AS hi
    FROM
    (
        -- An agent event changes [its time, the agent's next login) (a logout less
        -- than the tolerance after that login is part of it: a re-login).
        SELECT e.1 AS agent, e.2 - tolerance AS lo,
               coalesce(arrayFirstOrNull(l -> l > e.3, logins.at) + tolerance, open_end) AS hi
        FROM (SELECT arrayJoin(agent_news) AS e) AS n
        LEFT JOIN
        (
            SELECT userid AS agent, arraySort(groupArray(received_at)) AS at
            FROM pbx.events
            WHERE event = 'pbx_agent_login'
              AND received_at > coalesce((SELECT minOrNull(e.2) FROM (SELECT arrayJoin(agent_news) AS e)), open_end)
              AND userid IN (SELECT arrayJoin(agent_news).1)
            GROUP BY userid
        ) AS logins ON logins.agent = e.1
        WHERE e.5 = 1 OR e.4 > transform(e.1, done.1, done.2, never) - margin
        UNION ALL
        -- A talk changes [its answer, its end], or, if stretches on calls are stored
        -- after the answer (an earlier version of the talk may have lasted longer),
        -- up to the first stored stretch off calls after it (or to the end if none).
        -- Both looked up in one read of the stored stretches: each talk twice (k = 1: the
        -- first stretch on calls from its answer, k = 0: the first off calls), one ASOF join.
        -- (Not arrays of an agent's stretches per talk: memory in proportion to talks x stretches.)
        SELECT n.agent, n.answered,
               greatest(coalesce(n.ended, open_end),
                        if(maxIf(st.found, n.k = 1) = 0, n.answered,
                           if(maxIf(st.found, n.k = 0) = 1, minIf(st.started_at, n.k = 0 AND st.found = 1), open_end)))
        FROM
        (
            SELECT t.1 AS agent, t.2 AS answered, t.3 AS ended, k
            FROM (SELECT arrayJoin(talk_news) AS t)
            ARRAY JOIN [toUInt8(0), toUInt8(1)] AS k
            WHERE t.5 = 1 OR t.4 > transform(t.1, done.1, done.2, never) - margin
        ) AS n
        ASOF LEFT JOIN
        (
            SELECT agent, on_call AS k, started_at, toUInt8(1) AS found
            FROM pbx.agent_time_data FINAL
            WHERE toStartOfHour(interval_start) IN (SELECT arrayJoin(stored_hours))
              AND interval_start >= arrayMin(stored_hours) AND interval_start < arrayMax(stored_hours) + toIntervalHour(1)
              AND agent IN (SELECT arrayJoin(talk_news).1) AND is_deleted = 0
        ) AS st ON st.agent = n.agent AND st.k = n.k AND n.answered <= st.started_at
        GROUP BY n.agent, n.answered, n.ended
    ) AS s
    LEFT JOIN (SELECT agent, started_at FROM pbx.agent_open FINAL) AS o ON o.agent = s.agent
)
GROUP BY agent
