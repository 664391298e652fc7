-- Migration 0026: activity-log rollups, so the MONITORING metrics of the log
-- (counts, the spec's success/error rates, the outcome breakdown) answer in time
-- that does not grow with the log.
--
-- Depends on 0024 and 0025. The exact inverse is rollback/0026_activity_rollups.sql.
--
-- What is counted: every row of sync_activity_log, keyed by
--   (org_id, UTC hour of created_at, status as TEXT, ends_sync)
-- where ends_sync = action IN ('sync_complete', 'sync_fail', 'sync_cancel').
-- Labels are compared as text everywhere, so a database whose enums lack or add
-- labels never fails a write or a read here.
-- The status is kept as text, so labels our code does not know (an adopted
-- database may keep its own, e.g. 'sync_error', 'partial', 'skipped') are counted
-- under their own name; the metrics report them in an explicit "other" bucket.
-- A NULL status or action (possible only on an adopted database whose NOT NULL
-- was left out by `adopt --allow-not-valid`) is counted as the label '' (so
-- under "other", and not as ending a sync), here and in the scan alike.
--
-- Write path (never waits, never deadlocks): three STATEMENT-level AFTER
-- triggers with transition tables on the partitioned PARENT only (INSERT, UPDATE,
-- DELETE; COPY, MERGE and foreign-key cascades through the parent included)
-- append one signed delta row per group of the statement to
-- sync_activity_rollup_delta. Writers only ever INSERT deltas: no writer updates
-- a shared row, so parallel writers of one org never wait on each other and the
-- rollup adds no lock order (no deadlock) to their transactions. DML aimed
-- directly at a partition or at a staging table (partition maintenance moving
-- rows) fires no trigger of the parent: it is not counted, by design. A TRUNCATE
-- of the parent empties the rollups.
--
-- Compaction: sync_activity_rollup_compact() folds the deltas into
-- sync_activity_rollup, one row per (org, grain, bucket, status, ends_sync) for
-- three grains: 'all' (running totals, bucket '-infinity'), 'day' and 'hour'
-- (UTC). It is serialised by the row lock of the one sync_activity_rollup_state
-- row, taken with SKIP LOCKED (a busy compactor is skipped, never waited for).
-- Not an advisory lock: any login may take any advisory key and would stall
-- compaction, recount and TRUNCATE for ever; a row lock (SELECT ... FOR
-- UPDATE) needs UPDATE on the table, which no role but the owner holds (see
-- the privileges at the end). The insert trigger runs it in about
-- one statement in 64 (READ COMMITTED only), so the deltas stay few; startup and
-- `sync-migrate rollups` also run it.
--
-- Exact recount: sync_activity_rollup_recount(lo, hi) (owner only) recomputes
-- the hour buckets touching [lo, hi) from the attached partitions, in one
-- statement snapshot that also discards the deltas of those hours it can see:
-- exact while writers keep writing. Archive (DETACH) and restore (ATTACH) call it
-- in their transaction.
--
-- Backfill: rows that existed before this migration have no deltas. They are
-- counted by sync_activity_rollup_backfill_step(), one UTC month per call, each
-- call a short transaction of its own (run by `startup` / `sync-migrate up`
-- after the migrations, NOT inside this migration's transaction), resumable
-- (sync_activity_rollup_state.backfill_next), never blocking writers. Until it
-- is done, sync_activity_metrics() scans the log (exact, as before) and says so
-- (source = 'scan').

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

CREATE TABLE sync_activity_rollup_delta (
    org_id    uuid        NOT NULL,
    bucket    timestamptz NOT NULL, -- UTC hour of created_at
    status    text        NOT NULL,
    ends_sync boolean     NOT NULL,
    n         bigint      NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000);

COMMENT ON TABLE sync_activity_rollup_delta IS
    'Signed per-statement counts of sync_activity_log rows not yet folded into sync_activity_rollup (insert-only for writers).';

CREATE TABLE sync_activity_rollup (
    org_id    uuid        NOT NULL,
    grain     text        NOT NULL,
    bucket    timestamptz NOT NULL, -- '-infinity' for grain 'all', else the UTC day or hour
    status    text        NOT NULL,
    ends_sync boolean     NOT NULL,
    n         bigint      NOT NULL,
    CONSTRAINT sync_activity_rollup_pkey PRIMARY KEY (org_id, grain, bucket, status, ends_sync),
    CONSTRAINT sync_activity_rollup_grain CHECK (grain IN ('all', 'day', 'hour'))
);

-- Every org's totals and day buckets at once (the all-orgs metrics).
CREATE INDEX sync_activity_rollup_grain_bucket_idx ON sync_activity_rollup (grain, bucket);

COMMENT ON TABLE sync_activity_rollup IS
    'Counts of sync_activity_log rows per org, status and ends_sync: running totals (grain all), per UTC day and per UTC hour.';

-- Emptied buckets are removed by the compactor through this index.
CREATE INDEX sync_activity_rollup_zero_idx ON sync_activity_rollup (org_id) WHERE n = 0;

CREATE TABLE sync_activity_rollup_state (
    id               boolean     NOT NULL DEFAULT true,
    backfill_lo      timestamptz,          -- first month to recount (set by the first step)
    backfill_hi      timestamptz,          -- end of the last month to recount
    backfill_next    timestamptz,          -- the next month to recount
    backfill_rows    bigint      NOT NULL DEFAULT 0,
    backfill_done_at timestamptz,          -- NULL while the backfill is owed
    CONSTRAINT sync_activity_rollup_state_pkey PRIMARY KEY (id),
    CONSTRAINT sync_activity_rollup_state_one_row CHECK (id)
);

COMMENT ON TABLE sync_activity_rollup_state IS
    'One row: progress of the backfill that counts the log rows older than migration 0026.';

-- ---------------------------------------------------------------------------
-- Write path: statement triggers on the parent
-- ---------------------------------------------------------------------------

CREATE FUNCTION sync_activity_rollup_compact() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
DECLARE
    v_folded bigint;
BEGIN
    -- One compactor at a time; a busy one is skipped, never waited for. The
    -- state row's lock (owner only: FOR UPDATE needs UPDATE privilege).
    PERFORM 1 FROM sync_activity_rollup_state FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- A new statement, a new snapshot (READ COMMITTED): it sees what the
    -- previous holder of the lock committed.
    WITH d AS (
        DELETE FROM sync_activity_rollup_delta
        RETURNING org_id, bucket, status, ends_sync, n
    ), h AS (
        SELECT org_id, bucket, status, ends_sync, sum(n)::bigint AS n, count(*) AS rows
          FROM d GROUP BY org_id, bucket, status, ends_sync
    ), g AS (
        SELECT org_id, 'hour'::text AS grain, bucket, status, ends_sync, n FROM h
        UNION ALL
        SELECT org_id, 'day', date_trunc('day', bucket, 'UTC'), status, ends_sync, sum(n)::bigint
          FROM h GROUP BY 1, 2, 3, 4, 5
        UNION ALL
        SELECT org_id, 'all', '-infinity'::timestamptz, status, ends_sync, sum(n)::bigint
          FROM h GROUP BY 1, 2, 3, 4, 5
    ), up AS (
        INSERT INTO sync_activity_rollup AS r (org_id, grain, bucket, status, ends_sync, n)
        SELECT org_id, grain, bucket, status, ends_sync, n FROM g WHERE n <> 0
        ON CONFLICT (org_id, grain, bucket, status, ends_sync)
        DO UPDATE SET n = r.n + EXCLUDED.n
    )
    SELECT coalesce(sum(rows), 0) INTO v_folded FROM h;
    DELETE FROM sync_activity_rollup WHERE n = 0;
    RETURN v_folded;
END
$fn$;

COMMENT ON FUNCTION sync_activity_rollup_compact() IS
    'Folds sync_activity_rollup_delta into sync_activity_rollup; returns the delta rows folded (0 when another compactor holds the lock).';

CREATE FUNCTION sync_activity_rollup_on_insert() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
BEGIN
    INSERT INTO sync_activity_rollup_delta (org_id, bucket, status, ends_sync, n)
    SELECT org_id, date_trunc('hour', created_at, 'UTC'), coalesce(status::text, ''),
           coalesce(action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel'), count(*)
      FROM new_rows
     GROUP BY 1, 2, 3, 4;
    IF random() < 1.0 / 64
       AND current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM sync_activity_rollup_compact();
    END IF;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION sync_activity_rollup_on_delete() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
BEGIN
    INSERT INTO sync_activity_rollup_delta (org_id, bucket, status, ends_sync, n)
    SELECT org_id, date_trunc('hour', created_at, 'UTC'), coalesce(status::text, ''),
           coalesce(action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel'), -count(*)
      FROM old_rows
     GROUP BY 1, 2, 3, 4;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION sync_activity_rollup_on_update() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
BEGIN
    INSERT INTO sync_activity_rollup_delta (org_id, bucket, status, ends_sync, n)
    SELECT org_id, bucket, status, ends_sync, sum(n)
      FROM (SELECT org_id, date_trunc('hour', created_at, 'UTC') AS bucket,
                   coalesce(status::text, '') AS status,
                   coalesce(action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel') AS ends_sync,
                   -1 AS n
              FROM old_rows
            UNION ALL
            SELECT org_id, date_trunc('hour', created_at, 'UTC'), coalesce(status::text, ''),
                   coalesce(action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel'), 1
              FROM new_rows) c
     GROUP BY 1, 2, 3, 4
    HAVING sum(n) <> 0;
    RETURN NULL;
END
$fn$;

-- TRUNCATE of the parent (owner only: the guard of 0024) empties the log.
CREATE FUNCTION sync_activity_rollup_on_truncate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
BEGIN
    -- Waits for a running compactor or recount; bounded by lock_timeout.
    PERFORM 1 FROM sync_activity_rollup_state FOR UPDATE;
    DELETE FROM sync_activity_rollup_delta;
    DELETE FROM sync_activity_rollup;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER trg_sync_activity_log_80_rollup_insert
    AFTER INSERT ON sync_activity_log
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sync_activity_rollup_on_insert();
CREATE TRIGGER trg_sync_activity_log_81_rollup_update
    AFTER UPDATE ON sync_activity_log
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sync_activity_rollup_on_update();
CREATE TRIGGER trg_sync_activity_log_82_rollup_delete
    AFTER DELETE ON sync_activity_log
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sync_activity_rollup_on_delete();
CREATE TRIGGER trg_sync_activity_log_83_rollup_truncate
    AFTER TRUNCATE ON sync_activity_log
    FOR EACH STATEMENT EXECUTE FUNCTION sync_activity_rollup_on_truncate();

-- A database without log rows owes no backfill. Checked after CREATE TRIGGER,
-- whose lock waited for every writer that inserted without the triggers: what
-- this sees is every row the triggers did not count.
INSERT INTO sync_activity_rollup_state (backfill_done_at)
SELECT CASE WHEN EXISTS (SELECT 1 FROM sync_activity_log) THEN NULL ELSE now() END;


-- ---------------------------------------------------------------------------
-- Exact recount of a time range, and the backfill built on it
-- ---------------------------------------------------------------------------

CREATE FUNCTION sync_activity_rollup_recount(lo timestamptz, hi timestamptz) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
DECLARE
    v_lo timestamptz := date_trunc('hour', lo, 'UTC');
    v_hi timestamptz := date_trunc('hour', hi, 'UTC');
    v_rows bigint;
BEGIN
    IF lo IS NULL OR hi IS NULL THEN
        RAISE EXCEPTION 'sync_activity_rollup_recount: lo and hi must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'sync_activity_rollup_recount must run in a READ COMMITTED transaction (it is %)',
                        current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF v_hi < hi THEN
        v_hi := v_hi + interval '1 hour';
    END IF;
    IF v_hi <= v_lo THEN
        RETURN 0;
    END IF;
    -- Waits for a running compactor (short) or recount; bounded by lock_timeout.
    -- The state row's lock, as in the compactor (a backfill step holds it already).
    PERFORM 1 FROM sync_activity_rollup_state FOR UPDATE;
    -- One statement, one snapshot: the deltas of [v_lo, v_hi) it sees are
    -- discarded and their rows are exactly those the scan sees; deltas of
    -- transactions that commit later stay and are folded later.
    WITH d AS (
        DELETE FROM sync_activity_rollup_delta
         WHERE bucket >= v_lo AND (bucket < v_hi OR v_hi = 'infinity')
        RETURNING 1
    ), fresh AS (
        SELECT org_id, date_trunc('hour', created_at, 'UTC') AS bucket, coalesce(status::text, '') AS status,
               coalesce(action::text, '') IN ('sync_complete', 'sync_fail', 'sync_cancel') AS ends_sync,
               count(*)::bigint AS n
          FROM sync_activity_log
         WHERE created_at >= v_lo AND (created_at < v_hi OR v_hi = 'infinity')
         GROUP BY 1, 2, 3, 4
    ), old AS (
        SELECT org_id, bucket, status, ends_sync, n
          FROM sync_activity_rollup
         WHERE grain = 'hour' AND bucket >= v_lo AND (bucket < v_hi OR v_hi = 'infinity')
    ), diff AS (
        SELECT coalesce(f.org_id, o.org_id) AS org_id, coalesce(f.bucket, o.bucket) AS bucket,
               coalesce(f.status, o.status) AS status,
               coalesce(f.ends_sync, o.ends_sync) AS ends_sync,
               coalesce(f.n, 0) - coalesce(o.n, 0) AS n
          FROM fresh f FULL JOIN old o
            ON o.org_id = f.org_id AND o.bucket = f.bucket AND o.status = f.status
           AND o.ends_sync = f.ends_sync
    ), g AS (
        SELECT org_id, 'hour'::text AS grain, bucket, status, ends_sync, n FROM diff
        UNION ALL
        SELECT org_id, 'day', date_trunc('day', bucket, 'UTC'), status, ends_sync, sum(n)::bigint
          FROM diff GROUP BY 1, 2, 3, 4, 5
        UNION ALL
        SELECT org_id, 'all', '-infinity'::timestamptz, status, ends_sync, sum(n)::bigint
          FROM diff GROUP BY 1, 2, 3, 4, 5
    ), up AS (
        INSERT INTO sync_activity_rollup AS r (org_id, grain, bucket, status, ends_sync, n)
        SELECT org_id, grain, bucket, status, ends_sync, n FROM g WHERE n <> 0
        ON CONFLICT (org_id, grain, bucket, status, ends_sync)
        DO UPDATE SET n = r.n + EXCLUDED.n
    ), counted AS (
        SELECT coalesce(sum(n), 0)::bigint AS n FROM fresh
    )
    SELECT counted.n INTO v_rows FROM counted, (SELECT count(*) FROM d) dd;
    DELETE FROM sync_activity_rollup WHERE n = 0;
    RETURN v_rows;
END
$fn$;

COMMENT ON FUNCTION sync_activity_rollup_recount(timestamptz, timestamptz) IS
    'Recomputes the rollup of the UTC hours touching [lo, hi) from the attached partitions (call after DETACH/ATTACH, in the same READ COMMITTED transaction); returns the rows counted.';

-- One step of the backfill: recounts the next UTC month of the range the log
-- held when the backfill began. Returns the state after the step. It waits
-- for the state row's lock (another step, a recount, or a compactor in a
-- writer's open transaction), bounded by the caller's lock_timeout; when that
-- runs out it does nothing and returns busy = true.
CREATE FUNCTION sync_activity_rollup_backfill_step(
    OUT done boolean, OUT busy boolean, OUT next_month timestamptz,
    OUT last_month timestamptz, OUT rows_counted bigint)
    LANGUAGE plpgsql SECURITY DEFINER
AS $fn$
DECLARE
    s sync_activity_rollup_state;
    v_min timestamptz;
    v_max timestamptz;
    v_end timestamptz;
BEGIN
    busy := false;
    BEGIN
        SELECT * INTO s FROM sync_activity_rollup_state FOR UPDATE;
    EXCEPTION WHEN lock_not_available THEN
        busy := true;
    END;
    IF busy THEN
        SELECT * INTO s FROM sync_activity_rollup_state;
        done := s.backfill_done_at IS NOT NULL;
        next_month := s.backfill_next;
        last_month := s.backfill_hi;
        rows_counted := s.backfill_rows;
        RETURN;
    END IF;
    IF s.backfill_done_at IS NULL AND s.backfill_next IS NULL THEN
        -- First step: the span of the log now. Rows written since the migration
        -- are counted by the triggers; a recount of their months is exact anyway.
        SELECT min(created_at), max(created_at) INTO v_min, v_max FROM sync_activity_log;
        IF v_min IS NULL OR v_min = '-infinity' OR v_max = 'infinity' THEN
            -- Empty log, or unbounded dates: recount everything in one step.
            IF v_min IS NOT NULL THEN
                PERFORM sync_activity_rollup_recount('-infinity', 'infinity');
            END IF;
            UPDATE sync_activity_rollup_state
               SET backfill_done_at = now(), backfill_rows = (SELECT count(*) FROM sync_activity_log);
            done := true; next_month := NULL; last_month := NULL;
            SELECT backfill_rows INTO rows_counted FROM sync_activity_rollup_state;
            RETURN;
        END IF;
        s.backfill_lo := date_trunc('month', v_min, 'UTC');
        s.backfill_hi := date_trunc('month', v_max, 'UTC') + interval '1 month';
        s.backfill_next := s.backfill_lo;
        UPDATE sync_activity_rollup_state
           SET backfill_lo = s.backfill_lo, backfill_hi = s.backfill_hi,
               backfill_next = s.backfill_next;
    END IF;
    IF s.backfill_done_at IS NULL THEN
        v_end := (s.backfill_next AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC';
        s.backfill_rows := s.backfill_rows + sync_activity_rollup_recount(s.backfill_next, v_end);
        s.backfill_next := v_end;
        UPDATE sync_activity_rollup_state
           SET backfill_next = s.backfill_next, backfill_rows = s.backfill_rows,
               backfill_done_at = CASE WHEN v_end >= s.backfill_hi THEN now() END;
        IF v_end >= s.backfill_hi THEN
            s.backfill_done_at := now();
        END IF;
    END IF;
    done := s.backfill_done_at IS NOT NULL;
    next_month := s.backfill_next;
    last_month := s.backfill_hi;
    rows_counted := s.backfill_rows;
END
$fn$;

COMMENT ON FUNCTION sync_activity_rollup_backfill_step() IS
    'Counts the next UTC month of the rows older than migration 0026 into the rollup; call in its own READ COMMITTED transaction until done.';

-- ---------------------------------------------------------------------------
-- Read path
-- ---------------------------------------------------------------------------

-- The activity counts of one org (p_org) or of every org the caller may see
-- (p_org NULL), over created_at >= p_since (NULL: all time). SECURITY INVOKER:
-- row-level security of the caller applies to every table read.
--   source:   'rollup', or 'scan' while the backfill is owed (then the log is scanned)
--   total, completed (status completed), errors (failed, completed_with_errors),
--   ended (ends_sync) and ended_* by status; ended - the four = "other".
-- With p_since, the whole UTC days and hours after it come from the rollup and
-- only the rows before the first whole hour are read from the log.
CREATE FUNCTION sync_activity_metrics(p_org uuid, p_since timestamptz)
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
$fn$;

COMMENT ON FUNCTION sync_activity_metrics(uuid, timestamptz) IS
    'Activity-log counts of one org (or every visible org when NULL) since p_since (NULL: all time), from the rollup; source = ''scan'' while the backfill is owed.';

-- ---------------------------------------------------------------------------
-- Security: pinned search_path, privileges, row-level security
-- ---------------------------------------------------------------------------

DO $pin$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['sync_activity_rollup_compact()', 'sync_activity_rollup_on_insert()',
                             'sync_activity_rollup_on_delete()', 'sync_activity_rollup_on_update()',
                             'sync_activity_rollup_on_truncate()',
                             'sync_activity_rollup_recount(timestamptz,timestamptz)',
                             'sync_activity_rollup_backfill_step()',
                             'sync_activity_metrics(uuid,timestamptz)'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_catalog, pg_temp',
                       f::regprocedure, current_schema());
    END LOOP;
END
$pin$;

-- Both planned with the actual values on every call: in the metrics read the
-- branches that are off fold away at plan time (a generic plan keeps them all,
-- with every partition of the log: measured 2.7 s per call at 2M rows against
-- 0.3 ms custom); in the recount `v_hi = 'infinity'` folds away and the log's
-- partitions are pruned at plan time.
ALTER FUNCTION sync_activity_metrics(uuid, timestamptz) SET plan_cache_mode = force_custom_plan;
ALTER FUNCTION sync_activity_rollup_recount(timestamptz, timestamptz)
    SET plan_cache_mode = force_custom_plan;

-- Maintenance functions: the owner only. The metrics read: tenants too (it is
-- SECURITY INVOKER, so their row-level security applies). REVOKE ... FROM
-- PUBLIC is not enough: default privileges (Supabase: GRANT ALL ON FUNCTIONS
-- TO anon, authenticated) grant EXECUTE at CREATE FUNCTION. So EXECUTE goes
-- back from EVERY grantee but the owner, then only the intended grant is made.
-- The same for 0025's SECURITY DEFINER pruning trigger function (0025 is
-- frozen; its rollback does not give these grants back).
DO $fnacl$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT p.oid::regprocedure AS fn,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE format('%I', pg_get_userbyid(a.grantee)) END AS grantee
          FROM pg_proc p,
               aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
         WHERE p.oid IN ('sync_activity_rollup_compact()'::regprocedure,
                         'sync_activity_rollup_recount(timestamptz, timestamptz)'::regprocedure,
                         'sync_activity_rollup_backfill_step()'::regprocedure,
                         'sync_activity_rollup_on_insert()'::regprocedure,
                         'sync_activity_rollup_on_delete()'::regprocedure,
                         'sync_activity_rollup_on_update()'::regprocedure,
                         'sync_activity_rollup_on_truncate()'::regprocedure,
                         'sync_activity_metrics(uuid, timestamptz)'::regprocedure,
                         'sync_progress_prune_tick_keys()'::regprocedure)
           AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', r.fn, r.grantee);
    END LOOP;
END
$fnacl$;
GRANT EXECUTE ON FUNCTION sync_activity_metrics(uuid, timestamptz) TO sync_tenant;

-- Row-level security: a tenant reads its org's rows only; no non-owner writes
-- (the triggers write as the owner, SECURITY DEFINER). The state row holds no
-- tenant data: readable by all who may read it.
DO $rls$
DECLARE
    t text;
    org_check text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sync_activity_rollup', 'sync_activity_rollup_delta'] LOOP
        org_check := format(
            'EXISTS (SELECT 1 FROM auth.users_extended u '
            'WHERE u.id = (SELECT auth.uid()) AND u.org_id = %I.org_id)', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT USING (%s)',
                       t || '_select', t, org_check);
        EXECUTE format('CREATE POLICY %I ON %I FOR INSERT WITH CHECK (false)', t || '_insert', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR UPDATE USING (false) WITH CHECK (false)',
                       t || '_update', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR DELETE USING (false)', t || '_delete', t);
    END LOOP;
    ALTER TABLE sync_activity_rollup_state ENABLE ROW LEVEL SECURITY;
    CREATE POLICY sync_activity_rollup_state_select ON sync_activity_rollup_state
        FOR SELECT USING (true);
    FOREACH t IN ARRAY ARRAY['sync_activity_rollup', 'sync_activity_rollup_delta',
                             'sync_activity_rollup_state'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate()',
                       'trg_' || t || '_10_no_truncate', t);
    END LOOP;
END
$rls$;

-- Every privilege back from every role but the owner (default privileges hand
-- them out at CREATE TABLE, e.g. Supabase's GRANT ALL ON TABLES TO
-- authenticated), then SELECT to sync_tenant only. No one else may UPDATE (so
-- lock) the state row that serialises compaction and recount.
DO $revoke$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT c.oid::regclass AS rel,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE format('%I', pg_get_userbyid(a.grantee)) END AS grantee
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.oid IN ('sync_activity_rollup'::regclass, 'sync_activity_rollup_delta'::regclass,
                         'sync_activity_rollup_state'::regclass)
           AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON TABLE %s FROM %s', r.rel, r.grantee);
    END LOOP;
END
$revoke$;

GRANT SELECT ON sync_activity_rollup, sync_activity_rollup_delta, sync_activity_rollup_state
    TO sync_tenant;
