-- The raw webhook log: one row per accepted webhook, never updated.
-- Every analytics view reads from here; the PBX sends no timestamp, so
-- received_at is our arrival time (or the access-log time for imports).

CREATE TABLE IF NOT EXISTS pbx.events ${ON_CLUSTER}
(
    -- Our own identity of the event. Random for live webhooks; for imported
    -- access-log lines a hash of the line, which makes re-imports idempotent.
    -- (The PBX's cel_id repeats across a call's events: not a key.)
    event_id UUID,
    received_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    event LowCardinality(String),          -- webhook endpoint name, e.g. 'queue_in'
    source LowCardinality(String),         -- 'http' or 'import'

    -- One column per webhook parameter, named as in the PBX spec.
    -- '' means the PBX did not send it.
    call_id String,
    cel_id String,
    custom_call_id String,
    caller_type LowCardinality(String),
    caller_num String,
    caller_userid String,
    dialed_num String,
    target_num String,                     -- deprecated by the PBX (= dialed_num), kept anyway
    queue_name LowCardinality(String),
    caller_exten String,
    caller_name String,
    dialed_exten String,
    line_num String,
    line_name String,
    line_userid String,                    -- the agent on the line
    direction LowCardinality(String),
    userid String,                         -- the agent of pbx_agent_* events
    exten String,
    reason LowCardinality(String),
    state_name LowCardinality(String),
    spying_exten String,
    spying_target_exten String,
    spying_userid String,
    spying_target_userid String,
    spy_type LowCardinality(String),

    -- Parameters the spec does not list, and differing repeats ('queue_name[2]').
    extra Map(String, String),

    INDEX idx_call_id call_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 4,
    INDEX idx_agent line_userid TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ${REPLICATED}MergeTree
PARTITION BY toYYYYMM(received_at)
-- Views read one event type over a time range and pair events of a call;
-- (event, received_at) keeps each type's rows contiguous and time-sorted.
ORDER BY (event, received_at)
-- Lets a retried insert with the same insert_deduplication_token be dropped
-- (non-replicated MergeTree keeps no dedup window by default).
SETTINGS non_replicated_deduplication_window = 10000;
