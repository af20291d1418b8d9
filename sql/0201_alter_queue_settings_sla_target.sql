-- The service-level target of a queue, for staffing (pbx.staffing_15m): the
-- share of calls, in percent, to be answered within sla_threshold_s, e.g. the
-- 80 of "80/20". A queue without a row, and rows written before this column
-- existed, use 80. Like every setting it belongs to a row: the newest row of
-- a queue wins as a whole, so a row written without it sets it back to 80.
-- (An insert without a column list now needs a value for every column:
-- name the columns, docs/metrics.md#pbxqueue_settings.)
ALTER TABLE pbx.queue_settings ${ON_CLUSTER} ADD COLUMN IF NOT EXISTS sla_target_pct Float64 DEFAULT 80;
