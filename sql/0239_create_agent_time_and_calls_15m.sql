-- pbx.agent_stats_15m in its two halves, for readers that need one: its time
-- columns (pbx.agent_time_15m) and its answers and unanswered rings
-- (pbx.agent_calls_15m). agent_stats_15m computes both on every read, and
-- each half costs a read of the other about as much again (docs/benchmarks.md);
-- since sql/0238 it is their sum, so the three agree by construction.
-- Definitions: docs/metrics.md#pbxagent_time_15m, #pbxagent_calls_15m.

CREATE OR REPLACE VIEW pbx.agent_time_15m ${ON_CLUSTER} AS
SELECT * FROM pbx.agent_time_15m_from_live;

CREATE OR REPLACE VIEW pbx.agent_calls_15m ${ON_CLUSTER} AS
SELECT * FROM pbx.agent_calls_15m_from_live;
