-- Agent time: each agent's timeline of states (talk, paused, idle, logged
-- out), stored per 15-minute interval and kept by one refreshable view for
-- layer 'agents'. Definitions and tie rules: docs/metrics.md#agent-time.
--
-- An agent's state at an instant depends on earlier events (the last login,
-- the last state set, calls still going), so an agent is recomputed over
-- windows of its time: from the earliest instant a new event can change to
-- the point after which nothing it changes can reach.
--   * an agent event (login, logout, set_state) at t changes [t, the agent's
--     next login): a login resets the state, whatever came before;
--   * a call with new events changes its answering agents' time from the
--     answer to the end of its talk, or, if an earlier version of the talk was
--     stored longer, to the first stored stretch after the answer in which the
--     agent was off calls (an older talk cannot reach past it).
-- Windows start and end on interval boundaries; a window that reaches the
-- agent's stored current (open) stretch runs to the end of the data.

-- Logged-in time, cut at interval boundaries: one row per stretch of one
-- state within one interval. Logged-out time is not stored (it counts in no
-- interval); the current stretch of each agent is in pbx.agent_open.
CREATE TABLE IF NOT EXISTS pbx.agent_time_data ${ON_CLUSTER}
(
    interval_start DateTime('UTC'),
    agent String,
    started_at DateTime64(3, 'UTC'),
    ended_at DateTime64(3, 'UTC'),
    state LowCardinality(String),         -- talk, paused, idle
    state_name LowCardinality(String),    -- the state name set last since the login ('' = none)
    on_call UInt8,
    computed_at DateTime64(3, 'UTC'),
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(computed_at, is_deleted)
PARTITION BY toYYYYMM(interval_start)
ORDER BY (interval_start, agent, started_at);

-- Each agent's current stretch, open-ended: it runs to the newest event stored
-- (the data's "now"), so readers extend it; `run_from` is where the current
-- run of its state began (a pause renamed from break to lunch is one run).
CREATE TABLE IF NOT EXISTS pbx.agent_open ${ON_CLUSTER}
(
    agent String,
    started_at DateTime64(3, 'UTC'),
    run_from DateTime64(3, 'UTC'),
    state LowCardinality(String),         -- talk, paused, idle, logged_out
    state_name LowCardinality(String),
    on_call UInt8,
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY agent;

-- pbx.dirty_agents(layer, refresh): per agent with windows to compute (all
-- of them, or those of one run's share of arrivals: pbx.arrivals_from), the
-- windows as [lo, hi) pairs (hi = 2299-12-31: to the end of the data).
-- (Intermediate sets are scalar subqueries: computed once however often used.)
CREATE VIEW IF NOT EXISTS pbx.dirty_agents ${ON_CLUSTER} AS
WITH
    toIntervalMillisecond(pbx_commit_margin_ms()) AS margin,
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
GROUP BY agent;

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
CREATE VIEW IF NOT EXISTS pbx.agent_time ${ON_CLUSTER} AS
WITH
    toIntervalMillisecond(pbx_reorder_tolerance_ms()) AS tolerance,
    toDateTime64('2299-12-31 00:00:00', 3, 'UTC') AS open_end,
    assumeNotNull((SELECT max(received_at) FROM pbx.events)) AS data_end,
    -- The windows: [(agent, lo, hi)] (a scalar subquery: computed once).
    (
        SELECT groupArray((agent, w.1, w.2))
        FROM
        (
            SELECT agent, windows
            FROM pbx.dirty_agents(layer = {layer:String}, refresh = {refresh:UInt8})
            WHERE {whole:UInt8} = 0
        )
        ARRAY JOIN windows AS w
    ) AS plan,
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
                            -- One talk per answer (pbx_talk_end): two changes, start and end.
                            SELECT a.3, arrayJoin([a.1, coalesce(pbx_talk_end(a, hangups, ends), open_end)]) AS tt,
                                   a.2, toUInt8(if(tt = a.1, 3, 4)), '', a.1, toUInt8(1)
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
                                  AND ({whole:UInt8} = 1 OR (
                                      toStartOfHour(received_at) IN (SELECT arrayJoin(talk_hours))
                                      AND call_id IN
                                          (SELECT call_id FROM pbx.events
                                           WHERE event IN ('answered_internal', 'answered_external')
                                             AND toStartOfHour(received_at) IN (SELECT arrayJoin(talk_hours))
                                             AND line_userid IN (SELECT arrayJoin(plan).1))))
                                GROUP BY call_id
                                HAVING notEmpty(answers)
                            )
                            ARRAY JOIN answers AS a
                            WHERE tt < open_end
                        ) AS c ON c.agent = w.1
                        WHERE c.anchor >= w.2 - toIntervalDay(c.back_days) AND c.anchor < w.3 AND c.t < w.3
                        GROUP BY agent, lo, hi
                    )
                )
            )
        )
    )
);

-- One row per computed window (see 0106 for the pattern: a Null table whose
-- incremental views store the arrays).
CREATE TABLE IF NOT EXISTS pbx.agent_work ${ON_CLUSTER}
(
    agent String,
    lo DateTime64(3, 'UTC'),
    hi DateTime64(3, 'UTC'),
    computed_at DateTime64(3, 'UTC'),
    -- The last arrival row this run read (the layer's new cursor).
    cursor Tuple(DateTime64(3, 'UTC'), String, String),
    pieces Array(Tuple(
        interval_start DateTime('UTC'), started_at DateTime64(3, 'UTC'), ended_at DateTime64(3, 'UTC'),
        state String, state_name String, on_call UInt8, is_deleted UInt8)),
    open Array(Tuple(
        started_at DateTime64(3, 'UTC'), run_from DateTime64(3, 'UTC'), state String, state_name String,
        on_call UInt8))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_time_mv ${ON_CLUSTER} TO pbx.agent_time_data AS
SELECT p.interval_start AS interval_start, agent, p.started_at AS started_at, p.ended_at AS ended_at,
       p.state AS state, p.state_name AS state_name, p.on_call AS on_call, computed_at, p.is_deleted AS is_deleted
FROM pbx.agent_work
ARRAY JOIN pieces AS p;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_open_mv ${ON_CLUSTER} TO pbx.agent_open AS
SELECT agent, o.started_at AS started_at, o.run_from AS run_from, o.state AS state, o.state_name AS state_name,
       o.on_call AS on_call, computed_at
FROM pbx.agent_work
ARRAY JOIN open AS o;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_work_done_mv ${ON_CLUSTER} TO pbx.refresh_done AS
SELECT 'agents' AS layer, agent AS id, computed_at
FROM pbx.agent_work
WHERE agent != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agent_work_mark_mv ${ON_CLUSTER} TO pbx.refresh_marks AS
SELECT 'agents' AS layer, max(cursor) AS cursor
FROM pbx.agent_work;

-- History stored before this migration: computed here in one pass (as 0106).
INSERT INTO pbx.refresh_marks SELECT 'agents', (now64(3, 'UTC'), '', '');

INSERT INTO pbx.agent_work
SELECT agent, lo, hi, now64(3, 'UTC'), (toDateTime64(0, 3, 'UTC'), '', ''),
       arrayMap(p -> (p.1, p.2, p.3, p.4, p.5, p.6, toUInt8(0)), pieces), open
FROM pbx.agent_time(layer = 'agents', refresh = 0, whole = 1)
SETTINGS max_bytes_before_external_group_by = 400000000;

-- Every 5 seconds: the windows of one run's share of arrivals, with the stored
-- stretches those windows no longer produce marked deleted, and a row that
-- moves the cursor.
CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.agents_refresh ${ON_CLUSTER}
REFRESH EVERY 5 SECOND APPEND TO pbx.agent_work AS
WITH
    now64(3, 'UTC') AS started,
    (
        SELECT assumeNotNull(max((arrived_at, toString(kind), id)))
        FROM pbx.arrivals_from(layer = 'agents', refresh = 1)
        WHERE taken = 1
    ) AS new_cursor,
    windows AS
    (
        SELECT agent, w.1 AS lo, w.2 AS hi
        FROM pbx.dirty_agents(layer = 'agents', refresh = 1)
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
FROM pbx.agent_time(layer = 'agents', refresh = 1, whole = 0) AS t
LEFT JOIN
(
    SELECT w.agent AS agent, w.lo AS lo, groupArray((d.interval_start, d.started_at)) AS keys
    FROM windows AS w
    INNER JOIN
    (
        SELECT agent, interval_start, started_at
        FROM pbx.agent_time_data FINAL
        WHERE is_deleted = 0 AND agent IN (SELECT agent FROM windows)
          AND interval_start >= (SELECT min(lo) FROM windows)
    ) AS d ON d.agent = w.agent
    WHERE d.interval_start >= w.lo AND d.interval_start < w.hi
    GROUP BY w.agent, w.lo
) AS old ON old.agent = t.agent AND old.lo = t.lo
UNION ALL
SELECT '', started, started, started, new_cursor, [], [];
