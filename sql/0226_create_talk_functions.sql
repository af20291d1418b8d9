-- The talks of a call, gathered by one rule for every view that needs them
-- (the agent layer's templates: agent_time, which builds timelines, and
-- dirty_agents, which finds the windows a changed talk reaches). Each reads
-- pbx.events rows of one call with pbx_talk_event(event) and aggregates them,
-- GROUP BY call_id, with pbx_call_talks; only which calls they read differs.

-- The events a talk is made of: answers, an agent's hangup, the call's end.
CREATE OR REPLACE FUNCTION pbx_talk_event ${ON_CLUSTER} AS (event) ->
    event IN ('answered_internal', 'answered_external', 'hangup_internal', 'call_end');

-- Each answer of a call as a talk: (agent, answered_at, talk end or NULL if
-- still going, the answer's seq); `answers` (time, seq, agent) distinct,
-- `hangups` sorted (time, agent), `ends` sorted times (pbx_talk_end, 0212).
CREATE OR REPLACE FUNCTION pbx_talks_of ${ON_CLUSTER} AS (answers, hangups, ends) ->
    arrayMap(a -> (a.3, a.1, pbx_talk_end(a, hangups, ends), a.2), answers);

-- The aggregate: a call's talks from its pbx_talk_event rows (an answer counts
-- when it names the answering agent).
CREATE OR REPLACE FUNCTION pbx_call_talks ${ON_CLUSTER} AS (received_at, seq, line_userid, event) ->
    pbx_talks_of(
        arrayDistinct(groupArrayIf((received_at, seq, line_userid),
            event IN ('answered_internal', 'answered_external') AND line_userid != '')),
        arraySort(groupArrayIf((received_at, line_userid), event = 'hangup_internal')),
        arraySort(groupArrayIf(received_at, event = 'call_end')));
