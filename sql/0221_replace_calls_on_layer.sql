-- pbx.calls on the per-call layer (replaces 0200's watermark refresh and its
-- six-hour raw part). Call records: one row per call, inbound, outbound or internal, with every
-- queue and agent it touched (issue 14). Definitions and tie rules:
-- docs/metrics.md#pbxcalls.
--
-- A call is every event with one call_id (the call-scoped webhooks; agent
-- events carry no call_id). Each call's record is computed by the per-call
-- layer 'calls' (0215-0218: the template ingest/storing/views/call_records.sql)
-- and stored in pbx.calls_data; pbx.calls reads the stored records of the calls
-- that are up to date plus the others' computed live with the same SQL, so it
-- is complete the moment an insert lands (docs/metrics.md#how-the-views-are-computed-and-why).

-- The contract view: every call.
CREATE OR REPLACE VIEW pbx.calls ${ON_CLUSTER} AS
SELECT call_id, custom_call_id, started_at, ended_at, direction, caller_num, dialed_num, queues, answered_at,
       agent, agents, wait_s, talk_s, duration_s, outcome, recorded, spied
FROM pbx.calls_from_live;

-- The calls whose earliest event is at or after `since`, computed from raw
-- events (for checking and as a benchmark baseline; reads every call's events).
CREATE OR REPLACE VIEW pbx.calls_since ${ON_CLUSTER} AS
SELECT *
FROM pbx.calls_from_all
WHERE started_at >= {since:DateTime64(3, 'UTC')};
