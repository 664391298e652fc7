-- Migration 0029: activity metrics with `since` read less and no rollup heap.
--
-- Depends on 0026. The exact inverse is rollback/0029_activity_metrics_reads.sql.
--
-- Why: `sync_activity_metrics(NULL, since)` (metrics_all_orgs with --since) grew
-- with the log's density (bench P7c, 2M vs 20M rows: 4.6 vs 14.6 ms). Measured
-- with EXPLAIN (ANALYZE, BUFFERS) at 2M rows: the rollup's hour rows of the
-- hours before the first whole day (up to 23 per org and label) cost one heap
-- page each (5,480 rows, 5,173 buffers: hour rows of one bucket are scattered
-- over the table), and the log rows of the partial hour cost one heap page each.
--
-- 1. The (grain, bucket) index of the rollup becomes covering (INCLUDE org_id,
--    status, ends_sync, n): the all-orgs reads are index-only scans (measured:
--    the same 5,480 rows from 56 buffers instead of 5,173). org_id is included
--    because the tenant's row-level security policy reads it.
-- 2. sync_activity_metrics() reads the shorter side of each partial piece:
--    * the partial hour [since, first whole hour): when it is longer than 30
--      minutes, the whole hour is read from the rollup and the log rows of
--      [start of that hour, since) are subtracted, so at most 30 minutes of log
--      rows are read (before: up to 60);
--    * the whole hours before the first whole day: when they are more than 12,
--      that day's bucket is read and the hours of it before them are
--      subtracted, so at most 12 hour buckets per org and label (before: 23).
--    Same answers (exact): a day bucket is the sum of its hour buckets, as
--    every compaction and recount writes both in one statement.
--
-- Writers are not stopped: they only append to sync_activity_rollup_delta. The
-- index is built while this transaction holds the row lock that serialises
-- compaction (sync_activity_rollup_state, FOR UPDATE), so a writer whose
-- statement would compact skips compaction (SKIP LOCKED) instead of waiting for
-- the build; metrics reads wait only for the DROP INDEX at the end (until
-- commit). The build takes about 4 s per million rollup rows on this machine.

SELECT 1 FROM sync_activity_rollup_state FOR UPDATE;

CREATE INDEX sync_activity_rollup_grain_bucket_cover_idx ON sync_activity_rollup (grain, bucket)
    INCLUDE (org_id, status, ends_sync, n);

COMMENT ON INDEX sync_activity_rollup_grain_bucket_cover_idx IS
    'Every org''s buckets of one grain, index-only (metrics of all orgs; org_id for row-level security).';

DROP INDEX sync_activity_rollup_grain_bucket_idx;

-- The activity counts of one org (p_org) or of every org the caller may see
-- (p_org NULL), over created_at >= p_since (NULL: all time). SECURITY INVOKER:
-- row-level security of the caller applies to every table read.
--   source:   'rollup', or 'scan' while the backfill is owed (then the log is scanned)
--   total, completed (status completed), errors (failed, completed_with_errors),
--   ended (ends_sync) and ended_* by status; ended - the four = "other".
-- With p_since (all times UTC), with v_h the first whole hour at or after it
-- and v_d the first whole day at or after v_h:
--   * the partial hour [p_since, v_h): its log rows when it is 30 minutes or
--     shorter; else the hour bucket starting at v_lo = v_h - 1 hour (rollup and
--     pending deltas) minus the log rows of [v_lo, p_since);
--   * the whole hours [v_lo, v_d): their hour buckets when they are 12 or
--     fewer; else the day bucket [v_d - 24 h, v_d) minus its hours before v_lo;
--   * the whole days from v_d: their day buckets;
--   * the pending deltas of every hour from v_lo.
-- Log rows are read through the (org_id, created_at) index, one range per org.
CREATE OR REPLACE FUNCTION sync_activity_metrics(p_org uuid, p_since timestamptz)
    RETURNS TABLE (source text, total bigint, completed bigint, errors bigint, ended bigint,
                   ended_completed bigint, ended_with_errors bigint, ended_failed bigint,
                   ended_cancelled bigint)
    LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
    v_done boolean;
    v_h timestamptz;   -- first whole hour at or after p_since
    v_lo timestamptz;  -- v_h, or v_h - 1 hour when the partial hour is read by subtraction
    v_d timestamptz;   -- first whole day at or after v_h
    v_d0 timestamptz;  -- v_d - 24 hours
    v_sub boolean;     -- the partial hour is read as its whole hour minus [v_lo, p_since)
    v_back boolean;    -- the hours [v_lo, v_d) are read as day v_d0 minus [v_d0, v_lo)
    v_scan_lo timestamptz; -- log rows read: [v_scan_lo, v_scan_hi), counted with v_sign
    v_scan_hi timestamptz;
    v_sign bigint;
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
            v_d := v_d + interval '24 hours';
        END IF;
        v_d0 := v_d - interval '24 hours';
        -- An infinite p_since ('-infinity': every row) is read as 0026 read it:
        -- infinite timestamps cannot be subtracted.
        v_sub := false;
        v_back := false;
        IF isfinite(p_since) THEN
            v_sub := v_h - p_since > interval '30 minutes';
        END IF;
        IF v_sub THEN
            v_lo := v_h - interval '1 hour';
            v_scan_lo := v_lo; v_scan_hi := p_since; v_sign := -1;
        ELSE
            v_lo := v_h;
            v_scan_lo := p_since; v_scan_hi := v_h; v_sign := 1;
        END IF;
        IF isfinite(p_since) THEN
            v_back := v_d - v_lo > interval '12 hours';
        END IF;
    END IF;
    -- One statement, planned per call with the actual values (force_custom_plan,
    -- below): each branch is gated by a condition on the arguments and the
    -- variables only, so the branches that are off fold away, and the rest use
    -- their indexes. Every branch yields signed counts per (status, ends_sync),
    -- classified once below.
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
            -- Since, whole hours [v_lo, v_d) read directly.
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND NOT v_back AND p_org IS NOT NULL
               AND r.org_id = p_org AND r.grain = 'hour' AND r.bucket >= v_lo AND r.bucket < v_d
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND NOT v_back AND p_org IS NULL
               AND r.grain = 'hour' AND r.bucket >= v_lo AND r.bucket < v_d
            -- Since, whole hours [v_lo, v_d) read as day v_d0 minus [v_d0, v_lo).
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND v_back AND p_org IS NOT NULL
               AND r.org_id = p_org AND r.grain = 'day' AND r.bucket = v_d0
            UNION ALL
            SELECT r.status, r.ends_sync, -r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND v_back AND p_org IS NOT NULL
               AND r.org_id = p_org AND r.grain = 'hour' AND r.bucket >= v_d0 AND r.bucket < v_lo
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND v_back AND p_org IS NULL
               AND r.grain = 'day' AND r.bucket = v_d0
            UNION ALL
            SELECT r.status, r.ends_sync, -r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND v_back AND p_org IS NULL
               AND r.grain = 'hour' AND r.bucket >= v_d0 AND r.bucket < v_lo
            -- Since, whole days from v_d.
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND p_org IS NOT NULL
               AND r.org_id = p_org AND r.grain = 'day' AND r.bucket >= v_d
            UNION ALL
            SELECT r.status, r.ends_sync, r.n FROM sync_activity_rollup r
             WHERE v_done AND p_since IS NOT NULL AND p_org IS NULL
               AND r.grain = 'day' AND r.bucket >= v_d
            -- Since, the pending deltas from v_lo.
            UNION ALL
            SELECT x.status, x.ends_sync, x.n FROM sync_activity_rollup_delta x
             WHERE v_done AND p_since IS NOT NULL AND (p_org IS NULL OR x.org_id = p_org)
               AND x.bucket >= v_lo
            -- Since, the log rows of [v_scan_lo, v_scan_hi), signed.
            UNION ALL
            SELECT coalesce(a.status::text, ''), coalesce(a.action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel'), v_sign
              FROM sync_activity_log a
             WHERE v_done AND p_since IS NOT NULL AND v_scan_lo < v_scan_hi AND p_org IS NOT NULL
               AND a.org_id = p_org AND a.created_at >= v_scan_lo AND a.created_at < v_scan_hi
            UNION ALL
            -- Every org with rows has a running total or a pending delta.
            SELECT coalesce(a.status::text, ''), coalesce(a.action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel'), v_sign
              FROM (SELECT r.org_id FROM sync_activity_rollup r WHERE r.grain = 'all'
                    UNION
                    SELECT x.org_id FROM sync_activity_rollup_delta x) o
              CROSS JOIN LATERAL (
                    SELECT l.status, l.action FROM sync_activity_log l
                     WHERE l.org_id = o.org_id AND l.created_at >= v_scan_lo
                       AND l.created_at < v_scan_hi
                    OFFSET 0) a -- not flattened: one index range scan per org
             WHERE v_done AND p_since IS NOT NULL AND v_scan_lo < v_scan_hi AND p_org IS NULL
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
$fn$;

COMMENT ON FUNCTION sync_activity_metrics(uuid, timestamptz) IS
    'Activity-log counts of one org (or every visible org when NULL) since p_since (NULL: all time), from the rollup; source = ''scan'' while the backfill is owed.';

-- CREATE OR REPLACE keeps the owner and the grants (0026: EXECUTE to
-- sync_tenant only) but resets the settings: pin them again as 0026 did.
DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION sync_activity_metrics(uuid, timestamptz) '
                   'SET search_path = %I, pg_catalog, pg_temp', current_schema());
END
$pin$;
ALTER FUNCTION sync_activity_metrics(uuid, timestamptz) SET plan_cache_mode = force_custom_plan;
