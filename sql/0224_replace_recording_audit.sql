-- pbx.recording_audit gains `at` (0222): coalesce(answered_at, ended_at, first
-- recording start), the order its stored rows are kept in. A view keeps the
-- columns it had when created, so it is created again to show the new one.
-- Definition: docs/metrics.md#pbxrecording_audit.
CREATE OR REPLACE VIEW pbx.recording_audit ${ON_CLUSTER} AS
SELECT * FROM pbx.recording_audit_from_live;
