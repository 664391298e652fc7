-- Rollback of migration 0027 (migrations/V0027__progress_heartbeat.sql).
--
-- Carries no BEGIN/COMMIT, so that `sync-migrate down` can run it with the
-- other rollbacks in ONE transaction (newest first). On its own, run it as one
-- transaction:
--            psql -1 -v ON_ERROR_STOP=1 -d DBNAME -f rollback/0027_progress_heartbeat.sql
-- Nothing is dropped with CASCADE. Drops the heartbeats, stall thresholds,
-- checkpoints and pending cancel requests: a worker resumed after this
-- rollback starts from the beginning.

-- Guarded: on a database without sync_progress (0024 not applied) there is
-- nothing to drop, and naming the function's argument type would fail.
DO $drop$
BEGIN
    IF to_regclass('sync_progress') IS NOT NULL THEN
        DROP FUNCTION IF EXISTS sync_progress_stalled(sync_progress);
        ALTER TABLE sync_progress
            DROP CONSTRAINT IF EXISTS sync_progress_checkpoint_counts,
            DROP CONSTRAINT IF EXISTS sync_progress_checkpoint_size,
            DROP CONSTRAINT IF EXISTS sync_progress_cancel_requested_finite,
            DROP CONSTRAINT IF EXISTS sync_progress_heartbeat_finite,
            DROP CONSTRAINT IF EXISTS sync_progress_stall_after_range,
            DROP COLUMN IF EXISTS cancel_requested_at,
            DROP COLUMN IF EXISTS checkpoint_failed,
            DROP COLUMN IF EXISTS checkpoint_processed,
            DROP COLUMN IF EXISTS checkpoint,
            DROP COLUMN IF EXISTS stall_after,
            DROP COLUMN IF EXISTS heartbeat_at;
    END IF;
END
$drop$;

DO $history$
BEGIN
    IF to_regclass('refinery_schema_history') IS NOT NULL THEN
        DELETE FROM refinery_schema_history WHERE version = 27;
    END IF;
END
$history$;
