-- layers: calls
-- pbx.agent_calls_from(whole): the agents' calls as rows (interval_start,
-- agent, answered, unanswered): one per call answered (answered_internal, in
-- the interval of the answer) and one per ring not answered
-- (pbx.agent_rings_from(whole), in the interval of the ring).

SELECT toStartOfInterval(toDateTime(received_at), INTERVAL 15 MINUTE) AS interval_start,
       line_userid AS agent, toUInt8(1) AS answered, toUInt8(0) AS unanswered
FROM pbx.events
WHERE event = 'answered_internal' AND line_userid != ''
UNION ALL
SELECT toStartOfInterval(toDateTime(rung_at), INTERVAL 15 MINUTE), agent, 0, 1
FROM pbx.agent_rings_from(whole = {whole:UInt8})
WHERE answered = 0
