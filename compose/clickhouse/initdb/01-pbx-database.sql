-- Run once by the ClickHouse image on its first start (empty data directory).
-- The ingest service's DSN names database pbx; it exists before `migrate` fills it.
-- Atomic: refreshable materialized views need it. On the cluster stack each server
-- creates it here and `migrate --cluster` then finds it on every node.
CREATE DATABASE IF NOT EXISTS pbx ENGINE = Atomic;
