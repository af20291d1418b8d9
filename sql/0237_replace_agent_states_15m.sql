-- pbx.agent_states_15m gains `paused` (1 for a state that paused the agent): a pause named
-- "Idle" or "Talk" was indistinguishable from idle or talk time. A view's columns are fixed
-- when it is created, so the contract view is created again over the rendered view
-- (sql/0236's pbx.agent_states_15m_from_live). Definitions: docs/metrics.md#pbxagent_states_15m.

CREATE OR REPLACE VIEW pbx.agent_states_15m ${ON_CLUSTER} AS
SELECT * FROM pbx.agent_states_15m_from_live;
