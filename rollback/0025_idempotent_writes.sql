-- Rollback of migration 0025 (migrations/V0025__idempotent_writes.sql).
--
-- Carries no BEGIN/COMMIT, so that `sync-migrate down` can run it and the
-- rollback of 0024 in ONE transaction (newest first). On its own, run it as one
-- transaction:
--            psql -1 -v ON_ERROR_STOP=1 -d DBNAME -f rollback/0025_idempotent_writes.sql
-- Nothing is dropped with CASCADE. The keys go with their tables: a retry of a
-- write whose outcome was unknown is no longer recognised after this rollback.

DROP TRIGGER IF EXISTS trg_sync_progress_50_prune_tick_keys ON sync_progress;
DROP FUNCTION IF EXISTS sync_progress_prune_tick_keys();
DROP TABLE IF EXISTS sync_activity_batch;
DROP TABLE IF EXISTS sync_progress_tick_key;

DO $history$
BEGIN
    IF to_regclass('refinery_schema_history') IS NOT NULL THEN
        DELETE FROM refinery_schema_history WHERE version = 25;
    END IF;
END
$history$;
