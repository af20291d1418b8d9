-- The start of the newest refresh run of a layer (its computed_at), kept with
-- the cursor it set, in the same row: readers look back the commit margin before
-- it instead of before the cursor's arrival time (arrivals_from.sql). Marks
-- written before this column read 1970 there: the cursor's time counts then.
ALTER TABLE pbx.refresh_marks ${ON_CLUSTER}
    ADD COLUMN IF NOT EXISTS started SimpleAggregateFunction(max, DateTime64(3, 'UTC'));

ALTER TABLE pbx.call_work_mark_mv ${ON_CLUSTER} MODIFY QUERY
SELECT 'calls' AS layer, max(cursor) AS cursor, max(computed_at) AS started
FROM pbx.call_work;

ALTER TABLE pbx.agent_work_mark_mv ${ON_CLUSTER} MODIFY QUERY
SELECT 'agents' AS layer, max(cursor) AS cursor, max(computed_at) AS started
FROM pbx.agent_work;
