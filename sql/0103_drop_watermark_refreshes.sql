-- The refreshable views of 0007 and 0008 recomputed everything after one time
-- watermark (the earliest hour with new events, or all time after a settings
-- change). They are replaced by per-entity refreshes (0106, 0107) and their
-- tables are dropped once the contract views stop reading them (0111).
-- Dropped first, so they stop writing while the views change under them.

DROP VIEW IF EXISTS pbx.queue_stats_15m_refresh ${ON_CLUSTER};
DROP VIEW IF EXISTS pbx.agent_stats_15m_refresh ${ON_CLUSTER};
DROP VIEW IF EXISTS pbx.queue_calls_refresh ${ON_CLUSTER};
