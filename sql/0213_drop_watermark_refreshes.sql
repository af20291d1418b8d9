-- The refreshable views of 0007 and 0008 recomputed everything after one time
-- watermark (the earliest hour with new events, or all time after a settings
-- change). They are replaced by per-entity refreshes (0216, 0217) and their
-- tables are dropped once the contract views stop reading them (0220).
-- Dropped first, so they stop writing while the views change under them.

DROP VIEW IF EXISTS pbx.queue_stats_15m_refresh ${ON_CLUSTER};
DROP VIEW IF EXISTS pbx.agent_stats_15m_refresh ${ON_CLUSTER};
DROP VIEW IF EXISTS pbx.queue_calls_refresh ${ON_CLUSTER};

-- 0200's call records had a refresh of their own on the same watermark, and a
-- table of another shape than the per-call layer's pbx.calls_data (0215):
-- both go now; 0221 puts pbx.calls on the layer (0218 computes every stored
-- call, so no record is lost).
DROP VIEW IF EXISTS pbx.calls_data_refresh ${ON_CLUSTER};
DROP TABLE IF EXISTS pbx.calls_data ${ON_CLUSTER};
