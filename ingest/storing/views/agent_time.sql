-- layers: agents
-- pbx.agent_time(layer, refresh, whole): the agents' timelines over their
-- windows, one row per (agent, window): the window's closed stretches cut at
-- interval boundaries (logged-out ones left out), and for a window that runs
-- to the end, the agent's current stretch. refresh = 1: one refresh's share
-- (pbx.dirty_agents(layer, refresh = 1)), 0: all; whole = 1: every agent over all time (the _raw views).
-- Each window is computed from the agent's events from 7 days before it (to
-- know whether it was logged in and which state it set) and its calls
-- answered from a day before it: an agent is taken as logged out before the
-- first agent event read, and a talk that began more than a day before its
-- window is not seen.

WITH
    toIntervalMillisecond(pbx_reorder_tolerance_ms()) AS tolerance,
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS open_end,
    assumeNotNull((SELECT max(received_at) FROM pbx.events)) AS data_end,
    -- The windows: [(agent, lo, hi)], from the dirty set every view of a query shares
    -- (pbx.dirty_agent_list: one scalar subquery, computed once per query).
    if({whole:UInt8} = 1, [],
       arrayFlatten(arrayMap(a -> arrayMap(w -> (a.1, w.1, w.2), a.2),
           (SELECT agents FROM pbx.dirty_agent_list(layer = {layer:String}, refresh = {refresh:UInt8}))))) AS plan,
    -- The hours of events the windows read: agent events from 7 days before, calls from 1 day before.
    (
        SELECT groupUniqArray(arrayJoin(arrayMap(h -> toStartOfHour(w.2 - INTERVAL 7 DAY) + toIntervalHour(h),
            range(toUInt64(greatest(0, dateDiff('hour', toStartOfHour(w.2 - INTERVAL 7 DAY),
                                                        toStartOfHour(least(w.3, data_end)))) + 1)))))
        FROM (SELECT arrayJoin(plan) AS w)
    ) AS agent_hours,
    arrayFilter(h -> arrayExists(w -> h >= toStartOfHour(w.2 - INTERVAL 1 DAY), plan), agent_hours) AS talk_hours
SELECT agent, lo, hi, pieces, open
FROM
(
    SELECT
        *,
        arrayFlatten(arrayMap(
            k -> if(states[k] = 'logged_out' OR (k = length(times) AND hi = open_end), [],
                    arrayMap(p -> (p.1, p.2, p.3, states[k], names[k], on_call[k]),
                             pbx_interval_pieces(greatest(times[k], lo), least(ends[k], hi)))),
            arrayEnumerate(times))) AS pieces,
        if(hi = open_end AND notEmpty(times),
           [(times[-1],
             -- where the current run of this state began (within what was read)
             if(run_break = 0, times[1], ends[run_break]),
             states[-1], names[-1], on_call[-1])],
           []) AS open
    FROM
    (
        SELECT
            *,
            arrayMap(
                (l, n, tk) -> multiIf(
                    coalesce(l, 0) = 0, 'logged_out',
                    tk > 0, 'talk',
                    n != '' AND lower(n) NOT IN ('available', 'online', 'ready'), 'paused',
                    'idle'),
                logged, names, talking) AS states,
            arrayLastIndex(s -> s != states[-1], states) AS run_break,
            arrayMap(x -> toUInt8(x > 0), talking) AS on_call
        FROM
        (
            SELECT
                agent, lo, hi, times,
                arrayPushBack(arrayPopFront(times), hi) AS ends,
                arrayFill(x -> x IS NOT NULL,
                    arrayMap(c -> multiIf(c.2 = 0, toNullable(toUInt8(0)), c.2 = 1, toNullable(toUInt8(1)), NULL),
                             sorted)) AS logged,
                arrayMap(x -> coalesce(x, ''), arrayFill(x -> x IS NOT NULL,
                    arrayMap(c -> multiIf(c.2 = 1, toNullable(''), c.2 = 2, toNullable(c.5), NULL), sorted))) AS names,
                arrayCumSum(arrayMap(c -> multiIf(c.2 = 3, 1, c.2 = 4, -1, 0), sorted)) AS talking
            FROM
            (
                SELECT *, arrayMap(c -> c.1, sorted) AS times
                FROM
                (
                    SELECT
                        agent, lo, hi,
                        -- Agent events of one moment fired as concurrent requests may overtake
                        -- each other: a set_state up to the tolerance before a login is applied
                        -- after it (a state set on login), a logout up to the tolerance after a
                        -- login before it (a re-login). Then the order at one instant: logout,
                        -- login, set_state, talk ends, talk starts, then arrival.
                        arraySort(c -> (c.1, if(c.2 = 4, 3, if(c.2 = 3, 4, c.2)), c.3, c.4),
                            arrayMap(c -> (
                                multiIf(
                                    c.3 = 2, coalesce(arrayFirstOrNull(l -> l > c.1 AND l < c.1 + tolerance, logins), c.1),
                                    c.3 = 0, coalesce(arrayLastOrNull(l -> l <= c.1 AND c.1 < l + tolerance, logins), c.1),
                                    c.1),
                                c.3, c.1, c.2, c.4), raw)) AS sorted
                    FROM
                    (
                        -- Each window's changes: (time, seq, kind, state name); kind 0 logout,
                        -- 1 login, 2 set_state, 3 talk start, 4 talk end. Agent events count
                        -- from 7 days before the window, talks that began from a day before.
                        SELECT w.1 AS agent, w.2 AS lo, w.3 AS hi,
                               groupArray((c.t, c.seq, c.kind, c.name)) AS raw,
                               arraySort(groupArrayIf(c.t, c.kind = 1)) AS logins
                        FROM
                        (
                            SELECT arrayJoin(plan) AS w
                            UNION ALL
                            SELECT DISTINCT (if(event IN ('answered_internal', 'answered_external'), line_userid, userid),
                                             toDateTime64('1970-01-01 00:00:00', 3, 'UTC'), open_end)
                            FROM pbx.events
                            WHERE {whole:UInt8} = 1
                              AND event IN ('pbx_agent_login', 'pbx_agent_logout', 'pbx_agent_set_state',
                                            'answered_internal', 'answered_external')
                              AND if(event IN ('answered_internal', 'answered_external'), line_userid, userid) != ''
                        ) AS windows
                        INNER JOIN
                        (
                            SELECT userid AS agent, received_at AS t, seq,
                                   toUInt8(multiIf(event = 'pbx_agent_logout', 0, event = 'pbx_agent_login', 1, 2)) AS kind,
                                   toString(state_name) AS name, received_at AS anchor, toUInt8(7) AS back_days
                            FROM pbx.events
                            WHERE event IN ('pbx_agent_login', 'pbx_agent_logout', 'pbx_agent_set_state') AND userid != ''
                              AND ({whole:UInt8} = 1 OR (
                                  toStartOfHour(received_at) IN (SELECT arrayJoin(agent_hours))
                                  AND userid IN (SELECT arrayJoin(plan).1)))
                            UNION ALL
                            -- One talk per answer (pbx_call_talks, sql/0226): two changes, start and end.
                            -- (a talk ended as it was answered is a start and an end at one instant)
                            SELECT a.1, tk.1, a.4, tk.2, '', a.2, toUInt8(1)
                            FROM
                            (
                                SELECT call_id, pbx_call_talks(received_at, seq, line_userid, event) AS call_talks
                                FROM pbx.events
                                WHERE pbx_talk_event(event)
                                  AND ({whole:UInt8} = 1 OR (
                                      toStartOfHour(received_at) IN (SELECT arrayJoin(talk_hours))
                                      AND call_id IN
                                          (SELECT call_id FROM pbx.events
                                           WHERE event IN ('answered_internal', 'answered_external')
                                             AND toStartOfHour(received_at) IN (SELECT arrayJoin(talk_hours))
                                             AND line_userid IN (SELECT arrayJoin(plan).1))))
                                GROUP BY call_id
                                HAVING notEmpty(call_talks)
                            )
                            ARRAY JOIN call_talks AS a
                            ARRAY JOIN [(a.2, toUInt8(3)), (coalesce(a.3, open_end), toUInt8(4))] AS tk
                            WHERE tk.1 < open_end
                        ) AS c ON c.agent = w.1
                        WHERE c.anchor >= w.2 - toIntervalDay(c.back_days) AND c.anchor < w.3 AND c.t < w.3
                        GROUP BY agent, lo, hi
                    )
                )
            )
        )
    )
)
