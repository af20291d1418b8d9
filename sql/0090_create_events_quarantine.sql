-- Rows the engine refused although their webhook was acknowledged (a
-- constraint, a view that cannot parse a value, a spool record from an
-- incompatible version). The writer isolates them by bisecting the failing
-- batch, so one bad row never blocks the rest; nothing is dropped.
-- `row` is the events row as one JSON object (JSONEachRow), so once the cause
-- is fixed it can be re-inserted as is (docs/reliability.md shows how).
CREATE TABLE IF NOT EXISTS pbx.events_quarantine ${ON_CLUSTER}
(
    quarantined_at DateTime64(3, 'UTC'),
    reason String,                         -- the engine's error message
    batch_token String,                    -- spool batch (id-segment-start-end) the row came from
    row String
)
ENGINE = ${REPLICATED}MergeTree
ORDER BY quarantined_at
-- The writer retries a quarantine insert with the same token after a crash.
SETTINGS non_replicated_deduplication_window = 1000;
