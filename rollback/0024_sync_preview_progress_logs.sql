-- Rollback of migration 0024 (migrations/V0024__sync_preview_progress_logs.sql).
--
-- Runs on its own:   psql -v ON_ERROR_STOP=1 -d DBNAME -f rollback/0024_sync_preview_progress_logs.sql
-- or through:        sync-migrate down
--
-- One transaction: either everything 0024 created is gone (and refinery's
-- history row for version 24, when that table exists), or nothing changed.
-- Nothing is dropped with CASCADE: if something outside 0024 depends on its
-- objects (a view, a detached archive partition using its enum types), the
-- rollback stops and names it, rather than silently dropping user objects.
-- What 0001 created (organization, auth.*, role sync_tenant) stays.

BEGIN;

DROP TABLE IF EXISTS sync_activity_log;      -- its partitions go with it
DROP TABLE IF EXISTS sync_progress;
DROP TABLE IF EXISTS sync_preview_cache;

DROP FUNCTION IF EXISTS auto_cleanup_preview_cache();
DROP FUNCTION IF EXISTS sync_refuse_truncate();
DROP FUNCTION IF EXISTS sync_progress_log_activity();
DROP FUNCTION IF EXISTS sync_progress_compute_metrics();
DROP FUNCTION IF EXISTS sync_progress_detect_completion();
DROP FUNCTION IF EXISTS sync_preview_cache_defaults();

DROP TYPE IF EXISTS sync_status_type;
DROP TYPE IF EXISTS sync_entity_type;
DROP TYPE IF EXISTS sync_action;
DROP TYPE IF EXISTS sync_type;

DO $history$
BEGIN
    IF to_regclass('refinery_schema_history') IS NOT NULL THEN
        DELETE FROM refinery_schema_history WHERE version = 24;
    END IF;
END
$history$;

COMMIT;
