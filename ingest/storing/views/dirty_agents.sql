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
    (
        SELECT groupArray((id, computed_at))
        FROM (SELECT id, max(computed_at) AS computed_at FROM pbx.refresh_done WHERE layer = {layer:String} GROUP BY id)
    ) AS done
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
        WHERE e.5 = 1 OR e.4 > coalesce(arrayFirst(d -> d.1 = e.1, done).2, toDateTime64(0, 3, 'UTC')) - margin
        UNION ALL
        -- A talk changes [its answer, its end], or, if stretches on calls are stored
        -- after the answer (an earlier version of the talk may have lasted longer),
        -- up to the first stored stretch off calls after it (or to the end if none).
        SELECT t.1, t.2,
               greatest(coalesce(t.3, open_end),
                        if(NOT arrayExists(x -> x >= t.2, stored.on_call_at), t.2,
                           coalesce(arrayFirstOrNull(x -> x >= t.2, stored.off_call_at), open_end)))
        FROM (SELECT arrayJoin(talk_news) AS t) AS n
        LEFT JOIN
        (
            -- Stored stretches in the week after the new talks' answers.
            SELECT agent, arraySort(groupArrayIf(started_at, on_call = 0)) AS off_call_at,
                   arraySort(groupArrayIf(started_at, on_call = 1)) AS on_call_at
            FROM pbx.agent_time_data FINAL
            WHERE toStartOfHour(interval_start) IN
                (SELECT DISTINCT h + toIntervalHour(k)
                 FROM (SELECT DISTINCT toStartOfHour(t.2) AS h FROM (SELECT arrayJoin(talk_news) AS t))
                 ARRAY JOIN range(169) AS k)
              AND agent IN (SELECT arrayJoin(talk_news).1) AND is_deleted = 0
            GROUP BY agent
        ) AS stored ON stored.agent = t.1
        WHERE t.5 = 1 OR t.4 > coalesce(arrayFirst(d -> d.1 = t.1, done).2, toDateTime64(0, 3, 'UTC')) - margin
    ) AS s
    LEFT JOIN (SELECT agent, started_at FROM pbx.agent_open FINAL) AS o ON o.agent = s.agent
)
GROUP BY agent
