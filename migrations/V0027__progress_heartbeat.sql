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
    -- Bounded both ways: a sync stalls after 1 ms to 7 days without a
    -- heartbeat (the store refuses anything else before sending). Without the
    -- upper bound a tenant's '178000000 years' made `now() - stall_after`
    -- overflow ("timestamp out of range") in every all-orgs stalled query
    -- (doctor, stats, metrics of all orgs). Intervals compare as 1 month = 30
    -- days, 1 day = 24 h, so '1 month' is refused and '168 hours' accepted.
    ADD CONSTRAINT sync_progress_stall_after_range
        CHECK (stall_after > interval '0' AND stall_after <= interval '7 days'),
    -- No 'infinity' / '-infinity': a timestamp nobody can compare sensibly
    -- with now() (a heartbeat of 'infinity' would hide a stall forever).
    ADD CONSTRAINT sync_progress_heartbeat_finite
        CHECK (heartbeat_at IS NULL OR isfinite(heartbeat_at)),
    ADD CONSTRAINT sync_progress_cancel_requested_finite
        CHECK (cancel_requested_at IS NULL OR isfinite(cancel_requested_at)),
    -- A resume point, not a data store: the store refuses more than 8 KiB of
    -- compact JSON text before sending; this bound stops other writers. It
    -- measures the TEXT (octet_length of checkpoint::text, uncompressed), not
    -- pg_column_size: that is the stored, possibly compressed size, and a
    -- 16 MB checkpoint of repeated characters compresses (pglz or lz4) far
    -- below 64 KiB.
    ADD CONSTRAINT sync_progress_checkpoint_size
        CHECK (octet_length(checkpoint::text) <= 65536),
    -- A checkpoint always comes with its counts, and is never JSON null.
    -- Written so that NULL cannot satisfy it: `x IS NULL` and the equality of
    -- two such booleans are never NULL, `jsonb_typeof(...) IS DISTINCT FROM
    -- 'null'` neither, and the count comparisons are only reached (through
    -- coalesce) with a non-null count. (The former form `checkpoint IS NOT
    -- NULL AND checkpoint_processed >= 0 ...` passed with a NULL count, and a
    -- resumed worker rewound to 0.)
    ADD CONSTRAINT sync_progress_checkpoint_counts CHECK (
        (checkpoint IS NULL) = (checkpoint_processed IS NULL)
        AND (checkpoint IS NULL) = (checkpoint_failed IS NULL)
        AND jsonb_typeof(checkpoint) IS DISTINCT FROM 'null'
        AND coalesce(checkpoint_processed >= 0, true)
        AND coalesce(checkpoint_failed >= 0, true));

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

-- Who may call it. Default privileges (as on Supabase: `ALTER DEFAULT
-- PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO authenticated`) add
-- grants at CREATE FUNCTION that `REVOKE ... FROM PUBLIC` does not remove. So
-- every grant of every function this migration creates is taken back from every
-- grantee but the owner (role names quoted with %I; the function is named in
-- the statement text, not read from the catalog), then only the intended grant
-- is given back.
--
-- Intended: EXECUTE to PUBLIC. sync_progress_stalled is SECURITY INVOKER, LANGUAGE
-- sql, writes nothing and reads only the row it is given (which the caller
-- must already be allowed to read, under row-level security) and now(): it is
-- harmless to call, and every reader of sync_progress needs it (tenant scope,
-- service scope, metrics, stats, doctor, whatever role they run as).
DO $grants$
DECLARE
    r record;
BEGIN
    REVOKE ALL ON FUNCTION sync_progress_stalled(sync_progress) FROM PUBLIC;
    FOR r IN
        SELECT DISTINCT g.rolname
          FROM pg_proc p
         CROSS JOIN LATERAL aclexplode(p.proacl) a
          JOIN pg_roles g ON g.oid = a.grantee
         WHERE p.oid = 'sync_progress_stalled(sync_progress)'::regprocedure
           AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION sync_progress_stalled(sync_progress) FROM %I',
                       r.rolname);
    END LOOP;
    GRANT EXECUTE ON FUNCTION sync_progress_stalled(sync_progress) TO PUBLIC;
END
$grants$;
