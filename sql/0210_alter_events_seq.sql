-- The order in which events arrived, as a tie-breaker for events stamped with
-- the same time.
--
-- The PBX sends no timestamps. Live webhooks are stamped on arrival to the
-- millisecond, imported access-log lines to the second, so several events of
-- one call or agent often share a received_at, and the stored order of rows
-- says nothing about which came first. `seq` is that order: for webhooks the
-- spool's append order, for imports the log's line order. Every view sorts
-- events by (received_at, seq); docs/metrics.md#event-time-and-ties.
-- Rows stored before this column existed read 0: their ties fall back to the
-- per-view rules of the event types (as before).

ALTER TABLE pbx.events ${ON_CLUSTER} ADD COLUMN IF NOT EXISTS seq UInt64 CODEC(Delta, ZSTD(1));
