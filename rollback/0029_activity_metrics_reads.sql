-- Rollback of migration 0029 (migrations/V0029__activity_metrics_reads.sql).
--
-- Carries no BEGIN/COMMIT, so that `sync-migrate down` can run it with the
-- rollbacks of 0028 ... 0024 in ONE transaction (newest first). On its own, run
-- it as one transaction:
--            psql -1 -v ON_ERROR_STOP=1 -d DBNAME -f rollback/0029_activity_metrics_reads.sql
-- `down` runs every rollback script of this build, applied or not, so this one
-- does nothing unless 0029 is applied (its covering index exists).
-- Nothing is dropped with CASCADE and no data is lost: the (grain, bucket)
-- index of 0026 comes back in place of the covering one, and
-- sync_activity_metrics() gets 0026's body back (the text below is 0026's: a
-- rollback must restore it, so this is the one place it is repeated).
-- Compaction skips while the index builds (the state row is locked first).

DO $rollback$
BEGIN
    IF to_regclass('sync_activity_rollup_grain_bucket_cover_idx') IS NULL THEN
        RETURN; -- 0029 is not applied
    END IF;
    PERFORM 1 FROM sync_activity_rollup_state FOR UPDATE;
    CREATE INDEX sync_activity_rollup_grain_bucket_idx ON sync_activity_rollup (grain, bucket);
    DROP INDEX sync_activity_rollup_grain_bucket_cover_idx;
    EXECUTE $def$
-- The activity counts of one org (p_org) or of every org the caller may see
-- (p_org NULL), over created_at >= p_since (NULL: all time). SECURITY INVOKER:
-- row-level security of the caller applies to every table read.
--   source:   'rollup', or 'scan' while the backfill is owed (then the log is scanned)
--   total, completed (status completed), errors (failed, completed_with_errors),
--   ended (ends_sync) and ended_* by status; ended - the four = "other".
-- With p_since, the whole UTC days and hours after it come from the rollup and
-- only the rows before the first whole hour are read from the log.
CREATE OR REPLACE FUNCTION sync_activity_metrics(p_org uuid, p_since timestamptz)
    RETURNS TABLE (source text, total bigint, completed bigint, errors bigint, ended bigint,
                   ended_completed bigint, ended_with_errors bigint, ended_failed bigint,
                   ended_cancelled bigint)
    LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
    v_done boolean;
    v_h timestamptz;
    v_d timestamptz;
    g record;
BEGIN
    SELECT s.backfill_done_at IS NOT NULL INTO v_done FROM sync_activity_rollup_state s;
    v_done := coalesce(v_done, false);
    source := CASE WHEN v_done THEN 'rollup' ELSE 'scan' END;
    total := 0; completed := 0; errors := 0; ended := 0;
    ended_completed := 0; ended_with_errors := 0; ended_failed := 0; ended_cancelled := 0;
    IF p_since IS NOT NULL THEN
        v_h := date_trunc('hour', p_since, 'UTC');
        IF v_h < p_since THEN
            v_h := v_h + interval '1 hour';
        END IF;
        v_d := date_trunc('day', v_h, 'UTC');
        IF v_d < v_h THEN
            v_d := (v_d AT TIME ZONE 'UTC' + interval '1 day') AT TIME ZONE 'UTC';
        END IF;
    END IF;
    -- One statement, planned per call with the actual values (force_custom_plan,
    -- below): each branch is gated by a condition on the arguments only, so the
    -- branches that are off fold away, and the rest use their indexes.
    -- Every branch yields counts per (status, ends_sync), classified once below.
    FOR g IN
        SELECT c.status, c.ends_sync, sum(c.n)::bigint AS n
          FROM (
            -- While the backfill is owed: the log, scanned as before 0026.
            SELECT coalesce(a.status::text, '') AS status,
                   coalesce(a.action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel') AS ends_sync,
                   1::bigint AS n
              FROM sync_activity_log a
             WHERE NOT v_done AND p_org IS NOT NULL
               AND a.org_id = p_org AND a.created_at >= coalesce(p_since, '-infinity')
            UNION ALL
            SELECT coalesce(a.status::text, ''), coalesce(a.action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel'), 1
              FROM sync_activity_log a
             WHERE NOT v_done AND p_org IS NULL
               AND a.created_at >= coalesce(p_since, '-infinity')
            -- All time: the running totals and the pending deltas.
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NULL AND p_org IS NOT NULL
               AND r.org_id = p_org AND r.grain = 'all'
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NULL AND p_org IS NULL AND r.grain = 'all'
            UNION ALL
            SELECT x.status, x.ends_sync, x.n FROM sync_activity_rollup_delta x
             WHERE v_done AND p_since IS NULL AND p_org IS NOT NULL AND x.org_id = p_org
            UNION ALL
            SELECT x.status, x.ends_sync, x.n FROM sync_activity_rollup_delta x
             WHERE v_done AND p_since IS NULL AND p_org IS NULL
            -- Since: the hours up to the first whole day, the whole days, the
            -- pending deltas from the first whole hour, and the log rows of the
            -- partial hour [p_since, v_h) through the (org_id, created_at) index.
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND p_org IS NOT NULL
               AND r.org_id = p_org AND r.grain = 'hour' AND r.bucket >= v_h AND r.bucket < v_d
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND p_org IS NOT NULL
               AND r.org_id = p_org AND r.grain = 'day' AND r.bucket >= v_d
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND p_org IS NULL
               AND r.grain = 'hour' AND r.bucket >= v_h AND r.bucket < v_d
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND p_org IS NULL
               AND r.grain = 'day' AND r.bucket >= v_d
            UNION ALL
            SELECT x.status, x.ends_sync, x.n FROM sync_activity_rollup_delta x
             WHERE v_done AND p_since IS NOT NULL AND (p_org IS NULL OR x.org_id = p_org)
               AND x.bucket >= v_h
            UNION ALL
            SELECT coalesce(a.status::text, ''), coalesce(a.action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel'), 1
              FROM sync_activity_log a
             WHERE v_done AND p_since IS NOT NULL AND p_since < v_h AND p_org IS NOT NULL
               AND a.org_id = p_org AND a.created_at >= p_since AND a.created_at < v_h
            UNION ALL
            -- Every org with rows has a running total or a pending delta.
            SELECT coalesce(a.status::text, ''), coalesce(a.action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel'), 1
              FROM (SELECT r.org_id FROM sync_activity_rollup r WHERE r.grain = 'all'
                    UNION
                    SELECT x.org_id FROM sync_activity_rollup_delta x) o
              CROSS JOIN LATERAL (
                    SELECT l.status, l.action FROM sync_activity_log l
                     WHERE l.org_id = o.org_id AND l.created_at >= p_since
                       AND l.created_at < v_h
                    OFFSET 0) a -- not flattened: one index range scan per org
             WHERE v_done AND p_since IS NOT NULL AND p_since < v_h AND p_org IS NULL
          ) c
         GROUP BY 1, 2
    LOOP
        total := total + g.n;
        completed := completed + CASE WHEN g.status = 'completed' THEN g.n ELSE 0 END;
        errors := errors + CASE WHEN g.status IN ('failed', 'completed_with_errors') THEN g.n ELSE 0 END;
        IF g.ends_sync THEN
            ended := ended + g.n;
            ended_completed := ended_completed + CASE WHEN g.status = 'completed' THEN g.n ELSE 0 END;
            ended_with_errors := ended_with_errors
                + CASE WHEN g.status = 'completed_with_errors' THEN g.n ELSE 0 END;
            ended_failed := ended_failed + CASE WHEN g.status = 'failed' THEN g.n ELSE 0 END;
            ended_cancelled := ended_cancelled + CASE WHEN g.status = 'cancelled' THEN g.n ELSE 0 END;
        END IF;
    END LOOP;
    RETURN NEXT;
END
$fn$
$def$;
    EXECUTE $def$
COMMENT ON FUNCTION sync_activity_metrics(uuid, timestamptz) IS
    'Activity-log counts of one org (or every visible org when NULL) since p_since (NULL: all time), from the rollup; source = ''scan'' while the backfill is owed.'
$def$;
    EXECUTE format('ALTER FUNCTION sync_activity_metrics(uuid, timestamptz) '
                   'SET search_path = %I, pg_catalog, pg_temp', current_schema());
    ALTER FUNCTION sync_activity_metrics(uuid, timestamptz) SET plan_cache_mode = force_custom_plan;
END
$rollback$;

DO $history$
BEGIN
    IF to_regclass('refinery_schema_history') IS NOT NULL THEN
        DELETE FROM refinery_schema_history WHERE version = 29;
    END IF;
END
$history$;
