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
-- pbx.arrivals in arrival order from its cursor, a few thousand rows a run, and
-- computes the entities those rows name. An entity is dirty for the layer when
-- it has an arrival row past the cursor, or one less than pbx_commit_margin_ms()
-- before it that its last computation may not have seen (the insert was still
-- committing): computed less than the margin after that arrival.

-- One row per insert and entity: which calls and agents an insert brought
-- events for, when (the wall clock of the insert), and the span of those
-- events' times. Read from a layer's cursor on: rows older than 35 days are
-- behind every cursor (refreshes run every 5 seconds) and are dropped.
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

-- Per layer: how far in pbx.arrivals it has read, (arrived_at, kind, id) of the last row.
CREATE TABLE IF NOT EXISTS pbx.refresh_marks ${ON_CLUSTER}
(
    layer LowCardinality(String),
    cursor SimpleAggregateFunction(max, Tuple(DateTime64(3, 'UTC'), String, String))
)
ENGINE = AggregatingMergeTree
ORDER BY layer;

-- Spans of the calls stored before this migration (their figures are computed
-- by the migrations that create the layers: 0106, 0107).
INSERT INTO pbx.call_spans
SELECT call_id, min(received_at), max(received_at)
FROM pbx.events
WHERE call_id != ''
GROUP BY call_id
SETTINGS max_bytes_before_external_group_by = 400000000;

-- pbx.arrivals_from(layer, refresh): the arrival rows `layer` has to look at:
-- refresh = 0 (readers) all those past its cursor less the commit margin;
-- refresh = 1, one run's share: the pbx_refresh_chunk_rows() rows past the
-- cursor, in arrival order, plus those less than the margin before it.
-- taken = 1 marks the rows past the cursor (the new cursor is the last of them).
CREATE VIEW IF NOT EXISTS pbx.arrivals_from ${ON_CLUSTER} AS
WITH (SELECT max(cursor) FROM pbx.refresh_marks WHERE layer = {layer:String}) AS cursor
SELECT arrived_at, kind, id, first_at, last_at, toUInt8(0) AS taken
FROM pbx.arrivals
WHERE arrived_at > cursor.1 - toIntervalMillisecond(pbx_commit_margin_ms())
  AND (arrived_at, kind, id) <= cursor
UNION ALL
SELECT arrived_at, kind, id, first_at, last_at, 1
FROM
(
    SELECT arrived_at, kind, id, first_at, last_at
    FROM pbx.arrivals
    WHERE arrived_at >= cursor.1 AND (arrived_at, kind, id) > cursor
    ORDER BY arrived_at, kind, id
    LIMIT if({refresh:UInt8} = 0, 1000000000000, pbx_refresh_chunk_rows())
);

-- pbx.dirty_calls(layer = 'calls', refresh = 0): the calls `layer` must compute
-- (all, or one run's share) with the span of their event times.
CREATE VIEW IF NOT EXISTS pbx.dirty_calls ${ON_CLUSTER} AS
WITH
    arrived AS
    (
        SELECT id AS call_id, max(arrived_at) AS last_arrival
        FROM pbx.arrivals_from(layer = {layer:String}, refresh = {refresh:UInt8})
        WHERE kind = 'call'
        GROUP BY id
    )
SELECT a.call_id AS call_id, s.first_at AS first_at, s.last_at AS last_at
FROM arrived AS a
LEFT JOIN
(
    SELECT id, max(computed_at) AS computed_at
    FROM pbx.refresh_done
    WHERE layer = {layer:String} AND id IN (SELECT call_id FROM arrived)
    GROUP BY id
) AS d ON d.id = a.call_id
INNER JOIN
(
    SELECT call_id, min(first_at) AS first_at, max(last_at) AS last_at
    FROM pbx.call_spans
    WHERE call_id IN (SELECT call_id FROM arrived)
    GROUP BY call_id
) AS s ON s.call_id = a.call_id
-- (never computed: computed_at reads 1970)
WHERE a.last_arrival > d.computed_at - toIntervalMillisecond(pbx_commit_margin_ms());

-- pbx.call_events(layer = 'calls', refresh = 0, whole = 0): the stored events
-- of the calls pbx.dirty_calls(layer, refresh) names; whole = 1: every event of
-- every call (the _raw views). Filter on `event` where you read it: the events'
-- sort key is (event, received_at), and the calls' hours select the rest by it.
CREATE VIEW IF NOT EXISTS pbx.call_events ${ON_CLUSTER} AS
WITH
    -- (a scalar subquery: computed once, however often used)
    (
        SELECT groupArray((call_id, first_at, last_at))
        FROM pbx.dirty_calls(layer = {layer:String}, refresh = {refresh:UInt8})
        WHERE {whole:UInt8} = 0
    ) AS calls
SELECT *
FROM pbx.events
WHERE {whole:UInt8} = 1
   OR (toStartOfHour(received_at) IN
           (SELECT DISTINCT arrayJoin(arrayMap(h -> toStartOfHour(c.2) + toIntervalHour(h),
                range(toUInt64(dateDiff('hour', toStartOfHour(c.2), toStartOfHour(c.3)) + 1))))
            FROM (SELECT arrayJoin(calls) AS c))
       AND call_id IN (SELECT arrayJoin(calls).1));
