-- layers: calls
-- One element per start_int_dial of an agent, with whether that agent answered
-- the call (ring_no_answer of docs/metrics.md#pbxagent_stats_15m).

SELECT
    call_id,
    -- rings of agents, and whether that agent answered the call at all
    arrayMap(r -> (r.1, r.2, r.3, toUInt8(has(answerers, r.3))), dials) AS rings
FROM
(
    SELECT
        call_id,
        arraySort(groupArrayIf((received_at, seq, line_userid),
            event = 'start_int_dial' AND line_userid != '')) AS dials,
        groupUniqArrayIf(line_userid,
            event IN ('answered_internal', 'answered_external') AND line_userid != '') AS answerers
    FROM pbx.call_events(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
    WHERE event IN ('start_int_dial', 'answered_internal', 'answered_external') AND call_id != ''
    GROUP BY call_id
    HAVING notEmpty(dials)
)
