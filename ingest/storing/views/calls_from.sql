-- layers: calls
-- pbx.calls_from(whole): every call (the contract view pbx.calls). whole = 0:
-- stored records plus the dirty calls'; whole = 1: everything computed from raw
-- events. Durations and the outcome follow from the stored times here.

SELECT
    call_id, custom_call_id, started_at, ended_at,
    CAST(direction, 'LowCardinality(String)') AS direction,
    caller_num, dialed_num, queues, answered_at, agent, agents,
    dateDiff('millisecond', started_at, answered_at) / 1000 AS wait_s,
    -- An answer can reach us a few ms after the call_end (concurrent webhooks):
    -- the call was answered and talked ~0 s, not less.
    if(answered_at IS NULL OR ended_at IS NULL, NULL,
       greatest(dateDiff('millisecond', answered_at, ended_at), 0) / 1000) AS talk_s,
    dateDiff('millisecond', started_at, ended_at) / 1000 AS duration_s,
    CAST(multiIf(
        ended_at IS NULL, 'active',
        answered_at IS NOT NULL, 'answered',
        notEmpty(queues), 'abandoned',
        'unanswered'), 'LowCardinality(String)') AS outcome,
    recorded,
    spied
FROM
(
    SELECT call_id, custom_call_id, started_at, ended_at, toString(direction) AS direction, caller_num, dialed_num,
           queues, answered_at, agent, agents, recorded, spied
    FROM pbx.calls_data FINAL
    WHERE {whole:UInt8} = 0 AND is_deleted = 0
      AND call_id NOT IN (SELECT arrayJoin((SELECT calls FROM pbx.dirty_call_list(layer = 'calls', refresh = 0))).1)
    UNION ALL
    SELECT call_id, r.2, r.1, r.3, r.4, r.5, r.6, r.7, r.8, r.9, r.10, r.11, r.12
    FROM pbx.call_records(layer = 'calls', refresh = 0, whole = {whole:UInt8})
    ARRAY JOIN record AS r
)
