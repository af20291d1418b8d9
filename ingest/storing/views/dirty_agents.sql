-- layers: agents
-- pbx.dirty_agents(layer, refresh): per agent with windows to compute (all
-- of them, or those of one run's share of arrivals: pbx.arrivals_from), the
-- windows as [lo, hi) pairs (hi = 2299-12-31: to the end of the data).
-- (Intermediate sets are scalar subqueries: computed once however often used.)

WITH
    toIntervalMillisecond(pbx_refresh_setting('commit_margin_ms')) AS margin,
    toIntervalMillisecond(pbx_reorder_tolerance_ms()) AS tolerance,
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS open_end,
    -- The arrival rows to look at: agents' own events (agent, first event, last
    -- event, arrival), and calls (call_id, arrival) with the hours of their events.
    (
        SELECT (groupArrayIf((id, first_at, last_at, arrived_at), kind = 'agent'),
                groupArrayIf((id, arrived_at), kind = 'call'))
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
    -- Those calls' talks as they are now: (agent, answered_at, talk end or NULL, the call's arrival).
    (
        SELECT groupArray((a.3, a.1, pbx_talk_end(a, hangups, ends), n.last_arrival))
        FROM
        (
            SELECT
                call_id,
                arrayDistinct(groupArrayIf((received_at, seq, line_userid),
                    event IN ('answered_internal', 'answered_external') AND line_userid != '')) AS answers,
                arraySort(groupArrayIf((received_at, line_userid), event = 'hangup_internal')) AS hangups,
                arraySort(groupArrayIf(received_at, event = 'call_end')) AS ends
            FROM pbx.events
            WHERE event IN ('answered_internal', 'answered_external', 'hangup_internal', 'call_end')
              AND toStartOfHour(received_at) IN (SELECT arrayJoin(call_hours))
              AND call_id IN (SELECT arrayJoin(call_news).1)
            GROUP BY call_id
            HAVING notEmpty(answers)
        ) AS c
        INNER JOIN (SELECT x.1 AS call_id, max(x.2) AS last_arrival FROM (SELECT arrayJoin(call_news) AS x) GROUP BY call_id) AS n
            ON n.call_id = c.call_id
        ARRAY JOIN answers AS a
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
        WHERE e.4 > coalesce(arrayFirst(d -> d.1 = e.1, done).2, toDateTime64(0, 3, 'UTC')) - margin
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
                (SELECT DISTINCT arrayJoin(arrayMap(h -> toStartOfHour(t.2) + toIntervalHour(h), range(169)))
                 FROM (SELECT arrayJoin(talk_news) AS t))
              AND agent IN (SELECT arrayJoin(talk_news).1) AND is_deleted = 0
            GROUP BY agent
        ) AS stored ON stored.agent = t.1
        WHERE t.4 > coalesce(arrayFirst(d -> d.1 = t.1, done).2, toDateTime64(0, 3, 'UTC')) - margin
    ) AS s
    LEFT JOIN (SELECT agent, started_at FROM pbx.agent_open FINAL) AS o ON o.agent = s.agent
)
GROUP BY agent
