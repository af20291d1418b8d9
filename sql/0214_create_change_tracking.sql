-- Which calls and agents have events their stored figures have not seen yet.
--
-- Views that pair events (a visit with its answer, an agent's state with the
-- next change) are stored per call and per agent by refreshable views, and each
-- contract view reads the stored rows of the entities that are up to date plus
-- a live computation, with the same SQL, of the few that are not ("dirty").
-- So a read is complete the moment an insert lands, and a refresh only shrinks
-- the dirty set. Design and measurements: docs/metrics.md#how-the-views-are-computed.
--
-- A layer (a set of stored figures refreshed together, e.g. 'calls') reads
-- pbx.arrivals in arrival order from its cursor, a chunk of rows a run, and
-- computes the entities those rows name (the views that decide what is dirty:
-- ingest/storing/views/arrivals_from.sql, dirty_calls.sql, dirty_agents.sql). An entity is dirty for the layer when
-- it has an arrival row past the cursor, or one less than the commit margin
-- before it that its last computation may not have seen (the insert was still
-- committing): computed less than the margin after that arrival.

-- One row per insert and entity: which calls and agents an insert brought
-- events for, when (the wall clock of the insert), and the span of those
-- events' times. Read from a layer's cursor on: rows older than 35 days are
-- behind every cursor (refreshes run every minute) and are dropped.
CREATE TABLE IF NOT EXISTS pbx.arrivals ${ON_CLUSTER}
(
    arrived_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    kind LowCardinality(String),          -- 'call' (id = call_id) or 'agent' (id = userid of its own events)
    id String,
    first_at DateTime64(3, 'UTC'),
    last_at DateTime64(3, 'UTC')
)
ENGINE = ${REPLICATED}MergeTree
PARTITION BY toYYYYMMDD(arrived_at)
ORDER BY (arrived_at, kind, id)
TTL toDateTime(arrived_at) + INTERVAL 35 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.arrivals_mv ${ON_CLUSTER} TO pbx.arrivals AS
SELECT now64(3, 'UTC') AS arrived_at, entity.1 AS kind, entity.2 AS id,
       min(received_at) AS first_at, max(received_at) AS last_at
FROM pbx.events
ARRAY JOIN arrayFilter(x -> x.2 != '', [
    ('call', call_id),
    ('agent', if(event IN ('pbx_agent_login', 'pbx_agent_logout', 'pbx_agent_set_state'), userid, ''))]) AS entity
GROUP BY kind, id;

-- Every call's span of event times, to read a dirty call's events by hour (the
-- events' sort key) instead of scanning for its call_id.
CREATE TABLE IF NOT EXISTS pbx.call_spans ${ON_CLUSTER}
(
    call_id String,
    first_at SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = ${REPLICATED}AggregatingMergeTree
ORDER BY call_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS pbx.call_spans_mv ${ON_CLUSTER} TO pbx.call_spans AS
SELECT call_id, min(received_at) AS first_at, max(received_at) AS last_at
FROM pbx.events
WHERE call_id != ''
GROUP BY call_id;

-- When each entity was last computed, per layer. Written by the layers'
-- refreshes, so on a cluster each node keeps its own (like the stored figures).
CREATE TABLE IF NOT EXISTS pbx.refresh_done ${ON_CLUSTER}
(
    layer LowCardinality(String),
    id String,                            -- call_id or agent
    computed_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (layer, id);

-- Settings of the refreshes, one row per change (name, value); the newest row
-- of a name wins (ingest/storing/views reads them with pbx_refresh_setting):
--   commit_margin_ms  how long after its arrival time an insert may still be
--                     committing (visible to one reader, not yet to another): an
--                     entity computed less than this after an arrival of its
--                     events is computed again, the computation may not have
--                     seen them. Default 15000. (Tests set 0: their inserts have
--                     committed.)
--   chunk_rows        how many pbx.arrivals rows one run of a refresh reads:
--                     about a day of a 200-agent centre's calls when a large
--                     import or a schema upgrade queued a backlog. A longer
--                     backlog takes several runs; memory and time per run stay
--                     bounded. Default 20000.
CREATE TABLE IF NOT EXISTS pbx.refresh_settings ${ON_CLUSTER}
(
    name LowCardinality(String),
    value Int64,
    updated_at DateTime64(3, 'UTC') MATERIALIZED now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;

INSERT INTO pbx.refresh_settings (name, value) VALUES ('commit_margin_ms', 15000), ('chunk_rows', 20000);

-- Per layer: how far in pbx.arrivals it has read, (arrived_at, kind, id) of the last row.
CREATE TABLE IF NOT EXISTS pbx.refresh_marks ${ON_CLUSTER}
(
    layer LowCardinality(String),
    cursor SimpleAggregateFunction(max, Tuple(DateTime64(3, 'UTC'), String, String))
)
ENGINE = AggregatingMergeTree
ORDER BY layer;

-- Spans of the calls stored before this migration (their figures are computed
-- by the migrations that create the layers: 0216, 0217).
INSERT INTO pbx.call_spans
SELECT call_id, min(received_at), max(received_at)
FROM pbx.events
WHERE call_id != ''
GROUP BY call_id
SETTINGS max_bytes_before_external_group_by = 400000000;
