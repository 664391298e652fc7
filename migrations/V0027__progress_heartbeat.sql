-- Migration 0027: what a worker's progress reporter writes besides the counts —
-- heartbeat, stall threshold, resume checkpoint — and the cancel request that
-- reaches the worker through it.
--
-- Depends on 0024 (and 0025's keyed ticks, which the reporter's flush uses).
-- The exact inverse is rollback/0027_progress_heartbeat.sql.
--
-- Columns on sync_progress rather than a side table: a flush is ONE keyed
-- UPDATE of the row it already updates (counts + heartbeat + checkpoint in the
-- same statement, so a checkpoint is never applied without its counts), and the
-- table's row-level security, grants, TRUNCATE guard and doctor checks already
-- cover them. All four are nullable without default: adding them rewrites no
-- row. None is indexed, so heartbeat updates stay HOT (fillfactor 70, 0024).
-- No trigger and no count of 0024 changes: a heartbeat is an UPDATE like a
-- tick (trg_sync_progress_20_metrics sets updated_at and recomputes speed).
--
--   * heartbeat_at        last flush of a live reporter (even with nothing new).
--   * stall_after         the sync is stalled when it runs and its heartbeat is
--                         older than this (set by the reporter; NULL: never
--                         stalled, e.g. a worker without a reporter).
--   * checkpoint          the worker's resume point (small JSON, bounded below);
--     checkpoint_processed / checkpoint_failed
--                         the counts AT that checkpoint (a resumed worker
--                         rewinds to them, so items after the checkpoint are
--                         not counted twice).
--   * cancel_requested_at set once by a cancel request; the worker's reporter
--                         learns it at its next flush, stops, and ends the sync
--                         `cancelled` (0024's trigger writes the activity row).
--
-- "Stalled" is COMPUTED, not stored (sync_progress_stalled below): it changes
-- by time passing with no write, so storing it would need a sweeper job (which
-- can itself stall) and writes to rows nobody touches; computed, it is exact
-- at every read and costs one comparison.

ALTER TABLE sync_progress
    ADD COLUMN heartbeat_at         timestamptz,
    ADD COLUMN stall_after          interval,
    ADD COLUMN checkpoint           jsonb,
    ADD COLUMN checkpoint_processed integer,
    ADD COLUMN checkpoint_failed    integer,
    ADD COLUMN cancel_requested_at  timestamptz,
    ADD CONSTRAINT sync_progress_stall_after_positive
        CHECK (stall_after IS NULL OR stall_after > interval '0'),
    -- A resume point, not a data store: the store refuses more than 8 KiB of
    -- compact JSON text before sending; this bound (binary jsonb size, which
    -- does not depend on how numbers are printed) stops other writers.
    ADD CONSTRAINT sync_progress_checkpoint_size
        CHECK (checkpoint IS NULL OR pg_column_size(checkpoint) <= 65536),
    ADD CONSTRAINT sync_progress_checkpoint_counts CHECK (
        (checkpoint IS NULL AND checkpoint_processed IS NULL AND checkpoint_failed IS NULL)
        OR (checkpoint IS NOT NULL AND checkpoint_processed >= 0 AND checkpoint_failed >= 0));

COMMENT ON COLUMN sync_progress.heartbeat_at IS
    'Last flush of the worker''s progress reporter (migration 0027).';
COMMENT ON COLUMN sync_progress.stall_after IS
    'Stalled when running and heartbeat_at < now() - stall_after; NULL: never stalled.';
COMMENT ON COLUMN sync_progress.checkpoint IS
    'The worker''s resume point (JSON, bounded); checkpoint_processed/_failed are the counts at it.';
COMMENT ON COLUMN sync_progress.cancel_requested_at IS
    'When a cancel was requested; the worker stops at its next flush and ends the sync cancelled.';

-- Whether a sync is stalled: running, with a stall threshold, and no heartbeat
-- for longer than it. Call it on the row: `SELECT sync_progress_stalled(p) FROM
-- sync_progress p`. The one definition that the store's reads, metrics,
-- `sync-migrate stats` and `doctor` use.
CREATE FUNCTION sync_progress_stalled(p sync_progress) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
AS $fn$
    SELECT coalesce(p.completed_at IS NULL AND p.heartbeat_at < now() - p.stall_after, false)
$fn$;

DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION sync_progress_stalled(sync_progress) '
                   'SET search_path = %I, pg_catalog, pg_temp', current_schema());
END
$pin$;

COMMENT ON FUNCTION sync_progress_stalled(sync_progress) IS
    'True when the sync runs, has a stall_after, and its heartbeat_at is older than now() - stall_after.';
