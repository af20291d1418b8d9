-- How long after leaving the queue an answer still counts as that visit's.
--
-- The PBX fires queue_out and answered_internal at the same instant, as
-- concurrent requests: the answer may reach us after the queue_out. A visit's
-- answer is therefore the call's first answered_internal between entering the
-- queue and `answer_grace_s` seconds after leaving it (and before the call's
-- next queue visit): docs/metrics.md#pbxqueue_calls. Applied when the views are
-- read, like the other thresholds, so changing it recomputes nothing.
-- Rows written before this column existed read the default.

ALTER TABLE pbx.queue_settings ${ON_CLUSTER} ADD COLUMN IF NOT EXISTS answer_grace_s Float64 DEFAULT 2;
