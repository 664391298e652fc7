-- Rollback of migration 0028 (migrations/V0028__progress_notify.sql).
--
-- Carries no BEGIN/COMMIT, so that `sync-migrate down` can run it and the
-- rollback of 0024 in ONE transaction (newest first). On its own, run it as one
-- transaction:
--            psql -1 -v ON_ERROR_STOP=1 -d DBNAME -f rollback/0028_progress_notify.sql
-- Nothing is dropped with CASCADE and no data is lost. A running sync-api then
-- logs that its change feed cannot poll, and its live-progress streams get no
-- events until the migration is applied again.

DROP TRIGGER IF EXISTS trg_sync_progress_60_notify_done ON sync_progress;
DROP FUNCTION IF EXISTS sync_progress_notify_done();
DROP FUNCTION IF EXISTS sync_progress_versions(uuid[]);

DO $history$
BEGIN
    IF to_regclass('refinery_schema_history') IS NOT NULL THEN
        DELETE FROM refinery_schema_history WHERE version = 28;
    END IF;
END
$history$;
