-- Rollback of migration 0026 (migrations/V0026__activity_rollups.sql).
--
-- Carries no BEGIN/COMMIT, so that `sync-migrate down` can run it with the
-- rollbacks of 0025 and 0024 in ONE transaction (newest first). On its own, run
-- it as one transaction:
--            psql -1 -v ON_ERROR_STOP=1 -d DBNAME -f rollback/0026_activity_rollups.sql
-- Nothing is dropped with CASCADE. The rollups are derived data: the log keeps
-- every row, and the metrics scan it again.
-- 0026 also took EXECUTE on 0025's sync_progress_prune_tick_keys() back from
-- every role but the owner (grants from default privileges): this rollback
-- leaves it so (owner only, as 0025 meant; a trigger function is not called
-- directly anyway).

DROP TRIGGER IF EXISTS trg_sync_activity_log_80_rollup_insert ON sync_activity_log;
DROP TRIGGER IF EXISTS trg_sync_activity_log_81_rollup_update ON sync_activity_log;
DROP TRIGGER IF EXISTS trg_sync_activity_log_82_rollup_delete ON sync_activity_log;
DROP TRIGGER IF EXISTS trg_sync_activity_log_83_rollup_truncate ON sync_activity_log;
DROP FUNCTION IF EXISTS sync_activity_metrics(uuid, timestamptz);
DROP FUNCTION IF EXISTS sync_activity_rollup_backfill_step();
DROP FUNCTION IF EXISTS sync_activity_rollup_recount(timestamptz, timestamptz);
DROP FUNCTION IF EXISTS sync_activity_rollup_on_truncate();
DROP FUNCTION IF EXISTS sync_activity_rollup_on_update();
DROP FUNCTION IF EXISTS sync_activity_rollup_on_delete();
DROP FUNCTION IF EXISTS sync_activity_rollup_on_insert();
DROP FUNCTION IF EXISTS sync_activity_rollup_compact();
DROP TABLE IF EXISTS sync_activity_rollup_state;
DROP TABLE IF EXISTS sync_activity_rollup;
DROP TABLE IF EXISTS sync_activity_rollup_delta;

DO $history$
BEGIN
    IF to_regclass('refinery_schema_history') IS NOT NULL THEN
        DELETE FROM refinery_schema_history WHERE version = 26;
    END IF;
END
$history$;
