-- What the per-entity refreshes replaced (0213): the tables the old refreshes
-- wrote, the hourly arrival log their watermark read, and the parameterized
-- views only they used. pbx.queue_calls_since stays (0218 redefines it).

DROP TABLE IF EXISTS pbx.queue_stats_15m_data ${ON_CLUSTER};
DROP TABLE IF EXISTS pbx.agent_stats_15m_data ${ON_CLUSTER};
DROP TABLE IF EXISTS pbx.queue_calls_data ${ON_CLUSTER};
DROP VIEW IF EXISTS pbx.event_arrivals_mv ${ON_CLUSTER};
DROP TABLE IF EXISTS pbx.event_arrivals ${ON_CLUSTER};
DROP VIEW IF EXISTS pbx.queue_stats_15m_since ${ON_CLUSTER};
DROP VIEW IF EXISTS pbx.agent_stats_15m_since ${ON_CLUSTER};
DROP VIEW IF EXISTS pbx.agent_segments_since ${ON_CLUSTER};
