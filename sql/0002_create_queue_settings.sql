-- Per-queue service-level settings, set by the call-centre manager.
-- A queue without a row uses the defaults: 20 s SLA threshold, 5 s short abandon.
-- To change a queue's settings insert a new row; the newest row wins
-- (views read argMax(..., updated_at), so they need no FINAL or merge).
-- A change is picked up by pbx.queue_stats_15m at its next refresh: the
-- refresh recomputes every interval when queue_settings changed.

CREATE TABLE IF NOT EXISTS pbx.queue_settings ${ON_CLUSTER}
(
    queue_name LowCardinality(String),
    -- A visit answered after at most this many seconds of waiting is in SLA.
    sla_threshold_s UInt32,
    -- An unanswered visit that waited less than this many seconds is a short abandon.
    short_abandon_s UInt32,
    -- When the row was written; not part of `INSERT ... VALUES` or `SELECT *`.
    updated_at DateTime64(3, 'UTC') MATERIALIZED now64(3)
)
ENGINE = ${REPLICATED}ReplacingMergeTree(updated_at)
ORDER BY queue_name;
