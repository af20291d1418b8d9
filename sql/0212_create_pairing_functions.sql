-- SQL functions shared by the views: the one home of each rule used in more
-- than one place (docs/metrics.md#event-time-and-ties).
--
-- ClickHouse SQL functions are server-wide, not in a database, hence the pbx_
-- prefix. They are expanded inline where used (no call cost), and in a view
-- when the view is created: changing one means re-creating the views.

-- How far apart two events may be stamped in the wrong order. The PBX fires the
-- events of one moment as concurrent HTTP requests, so they reach us up to tens
-- of milliseconds apart in either order (the simulator's live mode uses up to
-- 150 ms). Rules that pair events tolerate this much; it is under a second, so
-- access-log lines one second apart are never reordered.
CREATE OR REPLACE FUNCTION pbx_reorder_tolerance_ms ${ON_CLUSTER} AS () -> 1000;

-- A refresh setting's value (pbx.refresh_settings, 0214): the newest row of `name`.
CREATE OR REPLACE FUNCTION pbx_refresh_setting ${ON_CLUSTER} AS (setting) ->
    (SELECT argMax(value, updated_at) FROM pbx.refresh_settings WHERE name = setting);

-- Start/end pairing for sessions that follow each other (spying, recording):
-- each start ends at the first end at or after it, except that an end up to the
-- reorder tolerance after a start, which already ends the session before, is
-- that session's end: the PBX ended one session and began the next in the same
-- moment (a supervisor switching from listening to whispering, a recording
-- restarted) and the new start overtook the old end.
-- starts, ends: sorted times. Returns each start's end (NULL: none yet), in order.
CREATE OR REPLACE FUNCTION pbx_session_ends ${ON_CLUSTER} AS (starts, ends) ->
    arrayMap(i -> if(i = 0, NULL, toNullable(ends[i])),
        pbx_session_end_indexes(starts, ends, arrayMap(s -> arrayFirstIndex(e -> e >= s, ends), starts)));

-- pbx_session_ends as indexes into `ends` (0: none), given `first`, each start's
-- index of the first end at or after it.
CREATE OR REPLACE FUNCTION pbx_session_end_indexes ${ON_CLUSTER} AS (starts, ends, first) ->
    arrayMap(
        k -> if(k > 1 AND first[k] != 0 AND first[k] = first[k - 1]
                    AND dateDiff('millisecond', starts[k], ends[first[k]]) < pbx_reorder_tolerance_ms(),
                -- it overtook the previous session's end: the end after that one, if any
                if(first[k] < length(ends), first[k] + 1, 0),
                first[k]),
        arrayEnumerate(starts));

-- greatest(t, x), NULL when x is NULL (greatest itself skips NULL arguments:
-- an end not yet known must stay unknown, not become t).
CREATE OR REPLACE FUNCTION pbx_not_before ${ON_CLUSTER} AS (t, x) -> if(x IS NULL, NULL, greatest(t, x));

-- The end of an agent's talk on a call: `answer` (time, seq, agent) ends at that
-- agent's first hangup_internal of the call (`hangups`: sorted (time, agent)),
-- else the call's first call_end (`ends`: sorted times), else NULL (still
-- going). An end up to the reorder tolerance before the answer still ends it
-- (at the answer): both were fired at once.
CREATE OR REPLACE FUNCTION pbx_talk_end ${ON_CLUSTER} AS (answer, hangups, ends) ->
    pbx_not_before(answer.1, coalesce(
        arrayFirstOrNull(h -> h >= answer.1 - toIntervalMillisecond(pbx_reorder_tolerance_ms()),
                         arrayMap(h -> h.1, arrayFilter(h -> h.2 = answer.3, hangups))),
        arrayFirstOrNull(e -> e >= answer.1 - toIntervalMillisecond(pbx_reorder_tolerance_ms()), ends)));

-- [started_at, ended_at) cut at 15-minute interval boundaries:
-- [(interval_start, piece_start, piece_end)], empty when ended_at <= started_at.
CREATE OR REPLACE FUNCTION pbx_interval_pieces ${ON_CLUSTER} AS (started_at, ended_at) ->
    arrayFilter(p -> p.3 > p.2, arrayMap(
        i -> (toDateTime(i, 'UTC'),
              greatest(started_at, toDateTime64(i, 3, 'UTC')),
              least(ended_at, toDateTime64(i + 900, 3, 'UTC'))),
        range(
            toUInt32(toUnixTimestamp(toStartOfInterval(toDateTime(started_at, 'UTC'), INTERVAL 15 MINUTE))),
            toUInt32(greatest(0, ceil(toUnixTimestamp64Milli(ended_at) / 1000))),
            900)));
