-- layers: calls
-- pbx.agent_calls_15m_from(whole): per interval and agent, the calls answered
-- and the rings not answered (pbx.agent_calls_from(whole)); one row per
-- (interval, agent) with either.

SELECT interval_start, agent, sum(answered) AS calls_answered, sum(unanswered) AS ring_no_answer
FROM pbx.agent_calls_from(whole = {whole:UInt8})
GROUP BY interval_start, agent
