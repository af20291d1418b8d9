-- Agent time as segments of constant state: one row per stretch of an
-- agent's time that is all talk, all paused, all idle or all logged out
-- (from the agent's first event on).
-- Definitions and tie rules: docs/metrics.md#agent-time.
--
-- A plain parameterized view: pbx.agent_stats_15m's refresh and pbx.agents_now
-- read it. Each agent's state changes (login, logout, set_state, talk start,
-- talk end) are put on one timeline and swept with window functions; the
-- state after a change holds until the agent's next change, and the last one
-- until the newest event stored (the data's "now", so results are reproducible).
--
-- `since` bounds the work: segments ending at or after `since` are returned.
-- Agent events (login/logout/set_state) are read from 7 days before `since`,
-- talk events from 1 day before: an agent is taken as logged out before the
-- first agent event read, and a talk that began more than a day before `since`
-- is not seen. (since = 1970 reads everything.)

CREATE VIEW IF NOT EXISTS pbx.agent_segments_since ${ON_CLUSTER} AS
WITH
    assumeNotNull((SELECT max(received_at) FROM pbx.events)) AS data_end,
    talk AS
    (
        -- One talk per answer: until the agent's next hangup_internal of that
        -- call, else the call's first call_end at or after, else still going.
        -- Each talk is two changes: +1 at its start and -1 at its end (if any).
        SELECT answer.2 AS agent, change.1 AS t, change.2 AS talk_delta
        FROM
        (
            SELECT
                call_id,
                arrayDistinct(groupArrayIf((received_at, line_userid),
                    event IN ('answered_internal', 'answered_external') AND line_userid != '')) AS answers,
                arraySort(groupArrayIf((received_at, line_userid), event = 'hangup_internal')) AS hangups,
                arraySort(groupArrayIf(received_at, event = 'call_end')) AS ends
            FROM pbx.events
            WHERE event IN ('answered_internal', 'answered_external', 'hangup_internal', 'call_end')
              AND received_at >= {since:DateTime64(3, 'UTC')} - INTERVAL 1 DAY
            GROUP BY call_id
            HAVING notEmpty(answers)
        )
        ARRAY JOIN answers AS answer
        ARRAY JOIN arrayFilter(c -> c.1 IS NOT NULL, [
            (toNullable(answer.1), 1),
            (coalesce(
                arrayMap(h -> toNullable(h.1), arrayFilter(h -> h.2 = answer.2 AND h.1 >= answer.1, hangups))[1],
                arrayMap(e -> toNullable(e), arrayFilter(e -> e >= answer.1, ends))[1]), -1)]) AS change
    ),
    changes AS
    (
        -- rank orders changes at the same instant: logout, login, set_state,
        -- then talk (a re-login in the same second is logged in; a login and a
        -- pause in the same second is paused).
        SELECT
            userid AS agent,
            received_at AS t,
            multiIf(event = 'pbx_agent_logout', 0, event = 'pbx_agent_login', 1, 2) AS rank,
            multiIf(event = 'pbx_agent_logout', toNullable(0), event = 'pbx_agent_login', toNullable(1), NULL) AS set_logged_in,
            multiIf(
                event = 'pbx_agent_login', toNullable(''),
                event = 'pbx_agent_set_state', toNullable(toString(state_name)),
                NULL) AS set_state,
            0 AS talk_delta
        FROM pbx.events
        WHERE event IN ('pbx_agent_login', 'pbx_agent_logout', 'pbx_agent_set_state') AND userid != ''
          AND received_at >= {since:DateTime64(3, 'UTC')} - INTERVAL 7 DAY
        UNION ALL
        SELECT agent, assumeNotNull(t), 3, NULL, NULL, talk_delta FROM talk
    ),
    timeline AS
    (
        SELECT
            agent,
            t AS started_at,
            leadInFrame(toNullable(t)) OVER (PARTITION BY agent ORDER BY t, rank, talk_delta
                ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next_t,
            coalesce(anyLast(set_logged_in) OVER w, 0) AS logged_in,
            -- The state the agent set last ('' = ready after login; never set = ready).
            coalesce(anyLast(set_state) OVER w, '') AS state_name,
            sum(talk_delta) OVER w AS talks
        FROM changes
        WINDOW w AS (PARTITION BY agent ORDER BY t, rank, talk_delta ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    )
SELECT
    agent,
    CAST(multiIf(
        logged_in = 0, 'logged_out',
        talks > 0, 'talk',
        state_name != '' AND lower(state_name) NOT IN ('available', 'online', 'ready'), 'paused',
        'idle'), 'LowCardinality(String)') AS state,
    -- The state name the agent set last since logging in ('' = none set).
    state_name,
    -- On at least one call, logged in or not.
    toUInt8(talks > 0) AS on_call,
    started_at,
    coalesce(next_t, data_end) AS ended_at,
    -- 1 for an agent's last segment: it runs to the newest event stored and
    -- is kept even when that is zero seconds long (pbx.agents_now reads it).
    toUInt8(next_t IS NULL) AS open
FROM timeline
WHERE (coalesce(next_t, data_end) > started_at OR next_t IS NULL)
  AND coalesce(next_t, data_end) >= {since:DateTime64(3, 'UTC')};
