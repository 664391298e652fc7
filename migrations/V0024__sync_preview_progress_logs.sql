-- Migration 0024: sync preview cache, sync progress and the sync activity log.
--
-- Built from ../shared/spec/migration-0024-quick-reference.md. Depends on 0001
-- (organization, auth.users_extended, auth.uid(), role sync_tenant).
-- The exact inverse is rollback/0024_sync_preview_progress_logs.sql.
--
-- Conventions chosen where the spec is silent (see README "Schema decisions"):
--   * Partition bounds are UTC months.
--   * Counts are non-negative; processed_count + failed_count never exceeds
--     total_items; total_items NULL means "not known yet" (no ETA, no completion).
--   * cache_key is globally UNIQUE, as the spec says, and otherwise free: any
--     writer may store any key. sync-store namespaces the keys it writes as
--     '<org_id>:<key>'; other writers share the one global key space.
--   * The explicit outcome of a failed or cancelled sync is kept in
--     sync_progress.metadata under the reserved key "_sync_outcome"
--     ({"status": "failed"|"cancelled", "error_message": "..."}); the table has
--     no status column in the spec.
--   * Columns that change on every progress tick (counts, current_item,
--     batch_number, speed, ETA, elapsed, updated_at, metadata) are not indexed,
--     and sync_progress keeps 30% free space per page, so ticks are HOT updates.

-- ---------------------------------------------------------------------------
-- Enums
-- ---------------------------------------------------------------------------

-- The source system a sync reads from.
CREATE TYPE sync_type AS ENUM ('woocommerce', 'odoo', 'shopify', 'custom');

-- What happened. The spec's labels first, then the lifecycle and per-record
-- events a commerce sync needs.
CREATE TYPE sync_action AS ENUM (
    'preview_delta',      -- a delta preview was computed and cached
    'preview_invalidate', -- a cached preview was dropped before expiry
    'sync_start',         -- written by the database when a sync_progress row is inserted
    'sync_progress',      -- a worker's checkpoint (e.g. a finished batch)
    'sync_complete',      -- written by the database when a sync completes
    'sync_fail',          -- written by the database when a sync is marked failed
    'sync_cancel',        -- written by the database when a sync is cancelled
    'sync_retry',         -- a failed sync or batch is retried
    'record_create',      -- a record was created in the target
    'record_update',      -- a record was updated in the target
    'record_delete',      -- a record was deleted in the target
    'record_skip',        -- a record was left unchanged on purpose
    'conflict_detected',  -- source and target changed the same record
    'cache_cleanup'       -- expired previews were removed
);

-- What kind of record is synced.
CREATE TYPE sync_entity_type AS ENUM (
    'customer', 'product', 'order', 'invoice',
    'product_variant', 'category', 'inventory', 'price_list',
    'payment', 'refund', 'credit_note', 'shipment',
    'supplier', 'purchase_order', 'tax_rate', 'coupon'
);

-- Lifecycle state of a sync or of one logged step.
CREATE TYPE sync_status_type AS ENUM (
    'pending', 'in_progress', 'completed', 'failed',
    'completed_with_errors', -- finished, but failed_count > 0
    'cancelled'
);

-- ---------------------------------------------------------------------------
-- sync_preview_cache
-- ---------------------------------------------------------------------------

CREATE TABLE sync_preview_cache (
    id          uuid         NOT NULL DEFAULT gen_random_uuid(),
    org_id      uuid         NOT NULL,
    sync_type   sync_type    NOT NULL,
    sync_id     varchar(255) NOT NULL,
    delta_json  jsonb        NOT NULL,
    computed_at timestamptz  NOT NULL DEFAULT now(),
    expires_at  timestamptz  NOT NULL, -- computed_at + 1 hour unless given (trigger)
    computed_by uuid,
    cache_key   varchar(255) NOT NULL,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    updated_at  timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT sync_preview_cache_pkey PRIMARY KEY (id),
    CONSTRAINT sync_preview_cache_cache_key_key UNIQUE (cache_key),
    CONSTRAINT sync_preview_cache_org_id_fkey FOREIGN KEY (org_id)
        REFERENCES organization (id) ON DELETE CASCADE,
    CONSTRAINT sync_preview_cache_computed_by_fkey FOREIGN KEY (computed_by)
        REFERENCES auth.users_extended (id) ON DELETE SET NULL,
    CONSTRAINT sync_preview_cache_expires_after_computed
        CHECK (expires_at > computed_at)
);

COMMENT ON TABLE sync_preview_cache IS
    'Computed delta snapshots of a sync, cached with a TTL (default 1 hour).';
COMMENT ON COLUMN sync_preview_cache.cache_key IS
    'Globally unique. sync-store writes ''<org_id>:<key>''; other writers may use plain keys.';

-- "Get cached delta snapshot" by sync id, newest first.
CREATE INDEX sync_preview_cache_org_sync_idx
    ON sync_preview_cache (org_id, sync_id, computed_at DESC);
-- Cleanup and the cache live/expired counts.
CREATE INDEX sync_preview_cache_expires_at_idx ON sync_preview_cache (expires_at);
-- Serves ON DELETE SET NULL from auth.users_extended.
CREATE INDEX sync_preview_cache_computed_by_idx
    ON sync_preview_cache (computed_by) WHERE computed_by IS NOT NULL;

-- ---------------------------------------------------------------------------
-- sync_progress
-- ---------------------------------------------------------------------------

CREATE TABLE sync_progress (
    id                  uuid             NOT NULL DEFAULT gen_random_uuid(),
    org_id              uuid             NOT NULL,
    sync_id             varchar(255)     NOT NULL,
    job_id              varchar(255),
    entity_type         sync_entity_type NOT NULL,
    current_item        integer          NOT NULL DEFAULT 0,
    total_items         integer,                      -- NULL: not known yet
    processed_count     integer          NOT NULL DEFAULT 0,
    failed_count        integer          NOT NULL DEFAULT 0,
    speed_items_per_min numeric,                      -- trigger: (processed+failed)/minute
    eta_seconds         integer,                      -- trigger
    elapsed_seconds     integer          NOT NULL DEFAULT 0, -- trigger
    started_at          timestamptz      NOT NULL DEFAULT now(),
    updated_at          timestamptz      NOT NULL DEFAULT now(), -- trigger
    completed_at        timestamptz,                  -- trigger, or set explicitly
    source_system       varchar(50),
    batch_number        integer,
    metadata            jsonb            NOT NULL DEFAULT '{}'::jsonb,
    initiated_by        uuid,
    CONSTRAINT sync_progress_pkey PRIMARY KEY (id),
    CONSTRAINT sync_progress_org_id_sync_id_key UNIQUE (org_id, sync_id),
    CONSTRAINT sync_progress_org_id_fkey FOREIGN KEY (org_id)
        REFERENCES organization (id) ON DELETE CASCADE,
    CONSTRAINT sync_progress_initiated_by_fkey FOREIGN KEY (initiated_by)
        REFERENCES auth.users_extended (id) ON DELETE SET NULL,
    CONSTRAINT sync_progress_counts_non_negative CHECK (
        current_item >= 0 AND processed_count >= 0 AND failed_count >= 0
        AND (total_items IS NULL OR total_items >= 0)
        AND (batch_number IS NULL OR batch_number >= 0)
        AND elapsed_seconds >= 0
        AND (eta_seconds IS NULL OR eta_seconds >= 0)
        AND (speed_items_per_min IS NULL OR speed_items_per_min >= 0)),
    CONSTRAINT sync_progress_handled_within_total CHECK (
        total_items IS NULL
        OR processed_count::bigint + failed_count::bigint <= total_items),
    CONSTRAINT sync_progress_completed_after_start CHECK (
        completed_at IS NULL OR completed_at >= started_at),
    CONSTRAINT sync_progress_metadata_is_object CHECK (jsonb_typeof(metadata) = 'object')
) WITH (fillfactor = 70);

COMMENT ON TABLE sync_progress IS
    'Live progress of one sync per (org_id, sync_id); elapsed, speed, ETA and completion are computed by triggers.';
COMMENT ON COLUMN sync_progress.metadata IS
    'Caller data (a JSON object). Key "_sync_outcome" is reserved: {"status","error_message"} of an explicit fail/cancel.';

-- Troubleshooting query: WHERE org_id = $1 AND job_id = $2.
CREATE INDEX sync_progress_org_job_idx ON sync_progress (org_id, job_id);
-- Active syncs (completed_at IS NULL): partial index on columns that do not change per tick.
CREATE INDEX sync_progress_active_idx ON sync_progress (org_id) WHERE completed_at IS NULL;
-- Recent syncs of an org.
CREATE INDEX sync_progress_org_started_idx ON sync_progress (org_id, started_at DESC);
-- Serves ON DELETE SET NULL from auth.users_extended.
CREATE INDEX sync_progress_initiated_by_idx
    ON sync_progress (initiated_by) WHERE initiated_by IS NOT NULL;

-- ---------------------------------------------------------------------------
-- sync_activity_log (partitioned by UTC month on created_at)
-- ---------------------------------------------------------------------------

CREATE TABLE sync_activity_log (
    id               uuid             NOT NULL DEFAULT gen_random_uuid(),
    org_id           uuid             NOT NULL,
    sync_id          varchar(255),
    entity_type      sync_entity_type,
    action           sync_action      NOT NULL,
    status           sync_status_type NOT NULL,
    record_count     integer          NOT NULL DEFAULT 0,
    duration_seconds numeric,
    error_message    text,
    user_id          uuid,
    created_at       timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT sync_activity_log_pkey PRIMARY KEY (id, created_at),
    CONSTRAINT sync_activity_log_org_id_fkey FOREIGN KEY (org_id)
        REFERENCES organization (id) ON DELETE CASCADE,
    CONSTRAINT sync_activity_log_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES auth.users_extended (id) ON DELETE SET NULL,
    CONSTRAINT sync_activity_log_counts_non_negative CHECK (
        record_count >= 0 AND (duration_seconds IS NULL OR duration_seconds >= 0))
) PARTITION BY RANGE (created_at);

COMMENT ON TABLE sync_activity_log IS
    'Audit trail of sync activity, one partition per UTC month plus sync_activity_log_future.';

CREATE TABLE sync_activity_log_2025_11 PARTITION OF sync_activity_log
    FOR VALUES FROM ('2025-11-01 00:00:00+00') TO ('2025-12-01 00:00:00+00');
CREATE TABLE sync_activity_log_2025_12 PARTITION OF sync_activity_log
    FOR VALUES FROM ('2025-12-01 00:00:00+00') TO ('2026-01-01 00:00:00+00');
CREATE TABLE sync_activity_log_2026_01 PARTITION OF sync_activity_log
    FOR VALUES FROM ('2026-01-01 00:00:00+00') TO ('2026-02-01 00:00:00+00');
CREATE TABLE sync_activity_log_2026_02 PARTITION OF sync_activity_log
    FOR VALUES FROM ('2026-02-01 00:00:00+00') TO ('2026-03-01 00:00:00+00');
CREATE TABLE sync_activity_log_future PARTITION OF sync_activity_log
    FOR VALUES FROM ('2026-03-01 00:00:00+00') TO (MAXVALUE);

-- Activity of an org, newest first, keyset-paginated on (created_at, id).
CREATE INDEX sync_activity_log_org_created_idx
    ON sync_activity_log (org_id, created_at DESC, id DESC);
-- Activity of one sync.
CREATE INDEX sync_activity_log_org_sync_idx
    ON sync_activity_log (org_id, sync_id, created_at DESC);
-- GET /api/v1/sync/activity?org=..&entity=..
CREATE INDEX sync_activity_log_org_entity_idx
    ON sync_activity_log (org_id, entity_type, created_at DESC);
-- Daily check of error_message: failures only.
CREATE INDEX sync_activity_log_errors_idx
    ON sync_activity_log (org_id, created_at DESC)
    WHERE status IN ('failed', 'completed_with_errors');
-- Serves ON DELETE SET NULL from auth.users_extended.
CREATE INDEX sync_activity_log_user_idx
    ON sync_activity_log (user_id) WHERE user_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Functions and triggers
-- ---------------------------------------------------------------------------

-- sync_preview_cache: expires_at defaults to computed_at + 1 hour (also when an
-- update moves computed_at without naming a new expires_at); updated_at is kept.
CREATE FUNCTION sync_preview_cache_defaults() RETURNS trigger
    LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.expires_at IS NULL THEN
            NEW.expires_at := NEW.computed_at + interval '1 hour';
        END IF;
    ELSE
        IF NEW.computed_at IS DISTINCT FROM OLD.computed_at
           AND NEW.expires_at IS NOT DISTINCT FROM OLD.expires_at THEN
            NEW.expires_at := NEW.computed_at + interval '1 hour';
        END IF;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER trg_sync_preview_cache_10_defaults
    BEFORE INSERT OR UPDATE ON sync_preview_cache
    FOR EACH ROW EXECUTE FUNCTION sync_preview_cache_defaults();

-- sync_progress, completion detection: completed_at is set (once) when
-- processed_count + failed_count reaches a known total_items. Fires before the
-- metrics trigger (triggers fire in name order) so elapsed freezes at completion.
CREATE FUNCTION sync_progress_detect_completion() RETURNS trigger
    LANGUAGE plpgsql
AS $fn$
BEGIN
    NEW.completed_at := greatest(now(), NEW.started_at);
    RETURN NEW;
END
$fn$;

CREATE TRIGGER trg_sync_progress_10_completion
    BEFORE INSERT OR UPDATE ON sync_progress
    FOR EACH ROW
    WHEN (NEW.completed_at IS NULL
          AND NEW.total_items IS NOT NULL
          AND NEW.processed_count::bigint + NEW.failed_count::bigint >= NEW.total_items)
    EXECUTE FUNCTION sync_progress_detect_completion();

-- sync_progress, metrics: with handled = processed_count + failed_count and
-- seconds = (completed_at, else now()) - started_at:
--   elapsed_seconds     = floor(seconds)
--   speed_items_per_min = round(handled * 60 / seconds, 2); NULL while seconds = 0
--   eta_seconds         = 0 once completed or handled >= total_items;
--                         NULL while total_items is unknown or nothing is handled yet;
--                         else ceil((total_items - handled) * seconds / handled)
-- updated_at is set to now() on every update.
CREATE FUNCTION sync_progress_compute_metrics() RETURNS trigger
    LANGUAGE plpgsql
AS $fn$
DECLARE
    v_handled bigint  := NEW.processed_count::bigint + NEW.failed_count::bigint;
    v_seconds numeric := greatest(
        extract(epoch FROM coalesce(NEW.completed_at, now()) - NEW.started_at), 0);
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    NEW.elapsed_seconds := least(floor(v_seconds), 2147483647)::integer;
    IF v_seconds > 0 THEN
        NEW.speed_items_per_min := round(v_handled * 60 / v_seconds, 2);
    ELSE
        NEW.speed_items_per_min := NULL;
    END IF;
    IF NEW.completed_at IS NOT NULL
       OR (NEW.total_items IS NOT NULL AND v_handled >= NEW.total_items) THEN
        NEW.eta_seconds := 0;
    ELSIF NEW.total_items IS NULL OR v_handled = 0 THEN
        NEW.eta_seconds := NULL;
    ELSE
        NEW.eta_seconds := least(
            ceil((NEW.total_items - v_handled) * v_seconds / v_handled), 2147483647)::integer;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER trg_sync_progress_20_metrics
    BEFORE INSERT OR UPDATE ON sync_progress
    FOR EACH ROW EXECUTE FUNCTION sync_progress_compute_metrics();

-- sync_progress -> sync_activity_log, written by the database itself:
--   on insert:                      action sync_start, status in_progress,
--                                   record_count = total_items (0 if unknown)
--   when completed_at becomes set:  record_count = processed_count,
--                                   duration_seconds = completed_at - started_at
--     metadata._sync_outcome.status = 'failed'    -> sync_fail,     failed
--     metadata._sync_outcome.status = 'cancelled' -> sync_cancel,   cancelled
--     otherwise, failed_count = 0                 -> sync_complete, completed
--     otherwise                                   -> sync_complete, completed_with_errors
-- A row inserted already complete (e.g. total_items = 0) gets both entries.
CREATE FUNCTION sync_progress_log_activity() RETURNS trigger
    LANGUAGE plpgsql
AS $fn$
DECLARE
    v_outcome text := NEW.metadata -> '_sync_outcome' ->> 'status';
    v_status  sync_status_type;
    v_action  sync_action;
    v_error   text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO sync_activity_log
            (org_id, sync_id, entity_type, action, status, record_count,
             duration_seconds, user_id)
        VALUES
            (NEW.org_id, NEW.sync_id, NEW.entity_type, 'sync_start', 'in_progress',
             coalesce(NEW.total_items, 0), 0, NEW.initiated_by);
    END IF;
    IF NEW.completed_at IS NOT NULL
       AND (TG_OP = 'INSERT' OR OLD.completed_at IS NULL) THEN
        IF v_outcome = 'failed' THEN
            v_status := 'failed';
            v_action := 'sync_fail';
            v_error  := NEW.metadata -> '_sync_outcome' ->> 'error_message';
        ELSIF v_outcome = 'cancelled' THEN
            v_status := 'cancelled';
            v_action := 'sync_cancel';
            v_error  := NEW.metadata -> '_sync_outcome' ->> 'error_message';
        ELSIF NEW.failed_count > 0 THEN
            v_status := 'completed_with_errors';
            v_action := 'sync_complete';
            v_error  := format('%s of %s items failed', NEW.failed_count,
                               coalesce(NEW.total_items::text, '?'));
        ELSE
            v_status := 'completed';
            v_action := 'sync_complete';
        END IF;
        INSERT INTO sync_activity_log
            (org_id, sync_id, entity_type, action, status, record_count,
             duration_seconds, error_message, user_id)
        VALUES
            (NEW.org_id, NEW.sync_id, NEW.entity_type, v_action, v_status,
             NEW.processed_count,
             greatest(extract(epoch FROM NEW.completed_at - NEW.started_at), 0),
             v_error, NEW.initiated_by);
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER trg_sync_progress_30_log_start
    AFTER INSERT ON sync_progress
    FOR EACH ROW EXECUTE FUNCTION sync_progress_log_activity();

CREATE TRIGGER trg_sync_progress_40_log_finish
    AFTER UPDATE ON sync_progress
    FOR EACH ROW
    WHEN (OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL)
    EXECUTE FUNCTION sync_progress_log_activity();

-- Deletes expired previews and returns how many went. SECURITY INVOKER: under
-- row-level security a tenant removes only its own org's expired rows.
CREATE FUNCTION auto_cleanup_preview_cache() RETURNS TABLE (deleted_count bigint)
    LANGUAGE sql VOLATILE
AS $fn$
    WITH deleted AS (
        DELETE FROM sync_preview_cache WHERE expires_at < now() RETURNING 1
    )
    SELECT count(*) FROM deleted
$fn$;

COMMENT ON FUNCTION auto_cleanup_preview_cache() IS
    'Deletes sync_preview_cache rows whose expires_at has passed; returns the number deleted.';

-- ---------------------------------------------------------------------------
-- Row-level security: 4 policies per table, isolating by org through
-- auth.users_extended. auth.uid() sits in a scalar sub-select so PostgreSQL
-- evaluates it once per statement (an InitPlan), not once per row. Policies
-- apply TO PUBLIC: every role that is not the owner (or a superuser, or
-- BYPASSRLS) is filtered; privileges decide which roles may touch a table.
--
-- The audit trail (sync_activity_log) is append-only for every role but the
-- owner, whatever privileges it holds (on Supabase every table in public gets
-- default grants to anon/authenticated): its UPDATE and DELETE policies are
-- USING (false), so they match no row for any non-owner. Only the owner (the
-- migrator/service role, which RLS does not filter) and foreign-key actions
-- (ON DELETE CASCADE / SET NULL, which bypass RLS) change or remove entries.
-- ---------------------------------------------------------------------------

DO $rls$
DECLARE
    t text;
    org_check text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sync_preview_cache', 'sync_progress', 'sync_activity_log'] LOOP
        org_check := format(
            'EXISTS (SELECT 1 FROM auth.users_extended u '
            'WHERE u.id = (SELECT auth.uid()) AND u.org_id = %I.org_id)', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT USING (%s)',
                       t || '_select', t, org_check);
        EXECUTE format('CREATE POLICY %I ON %I FOR INSERT WITH CHECK (%s)',
                       t || '_insert', t, org_check);
        IF t = 'sync_activity_log' THEN
            -- Append-only: no non-owner may rewrite or erase the audit trail.
            EXECUTE format('CREATE POLICY %I ON %I FOR UPDATE USING (false) WITH CHECK (false)',
                           t || '_update', t);
            EXECUTE format('CREATE POLICY %I ON %I FOR DELETE USING (false)',
                           t || '_delete', t);
        ELSE
            EXECUTE format('CREATE POLICY %I ON %I FOR UPDATE USING (%s) WITH CHECK (%s)',
                           t || '_update', t, org_check, org_check);
            EXECUTE format('CREATE POLICY %I ON %I FOR DELETE USING (%s)',
                           t || '_delete', t, org_check);
        END IF;
    END LOOP;
END
$rls$;

-- Partitions queried directly (not through the parent) have no policy, so with
-- RLS enabled they show nothing to a non-owner and accept no write from one,
-- whatever it was granted. Partitions created later by partition maintenance
-- get RLS enabled the same way (sync-store partitions::security).
ALTER TABLE sync_activity_log_2025_11 ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_activity_log_2025_12 ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_activity_log_2026_01 ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_activity_log_2026_02 ENABLE ROW LEVEL SECURITY;
ALTER TABLE sync_activity_log_future  ENABLE ROW LEVEL SECURITY;

-- Row-level security does not apply to TRUNCATE, and ALL privileges include it
-- (Supabase grants ALL on every table in public to anon and authenticated): a
-- statement trigger refuses TRUNCATE of each table, and of every partition of the
-- log, to every role that is not (a member of) the table's owner. Statement
-- triggers are not cloned to partitions, so each partition gets its own;
-- partitions created later by partition maintenance get it too
-- (sync-migrations partitions::security). Catalog names are schema-qualified and
-- the search_path is pinned (below): a temporary table named pg_class cannot
-- answer in place of the catalog.
CREATE FUNCTION sync_refuse_truncate() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT pg_catalog.pg_has_role(current_user,
               (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID),
               'MEMBER') THEN
        RAISE EXCEPTION 'TRUNCATE of % refused: row-level security cannot filter it, so only the table''s owner may truncate it',
                        TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER trg_sync_preview_cache_05_no_truncate BEFORE TRUNCATE ON sync_preview_cache
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate();
CREATE TRIGGER trg_sync_progress_05_no_truncate BEFORE TRUNCATE ON sync_progress
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate();

CREATE TRIGGER trg_sync_activity_log_10_no_truncate BEFORE TRUNCATE ON sync_activity_log
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate();
CREATE TRIGGER trg_sync_activity_log_10_no_truncate BEFORE TRUNCATE ON sync_activity_log_2025_11
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate();
CREATE TRIGGER trg_sync_activity_log_10_no_truncate BEFORE TRUNCATE ON sync_activity_log_2025_12
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate();
CREATE TRIGGER trg_sync_activity_log_10_no_truncate BEFORE TRUNCATE ON sync_activity_log_2026_01
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate();
CREATE TRIGGER trg_sync_activity_log_10_no_truncate BEFORE TRUNCATE ON sync_activity_log_2026_02
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate();
CREATE TRIGGER trg_sync_activity_log_10_no_truncate BEFORE TRUNCATE ON sync_activity_log_future
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate();

-- Tenant sessions (SET LOCAL ROLE sync_tenant): full access to the cache and to
-- progress rows of their org; the audit trail is append-only for them.
GRANT SELECT, INSERT, UPDATE, DELETE ON sync_preview_cache TO sync_tenant;
GRANT SELECT, INSERT, UPDATE, DELETE ON sync_progress TO sync_tenant;
GRANT SELECT, INSERT ON sync_activity_log TO sync_tenant;
GRANT EXECUTE ON FUNCTION auto_cleanup_preview_cache() TO sync_tenant;

-- Every function of 0024 runs with a pinned search_path: this schema, then
-- pg_catalog, then pg_temp LAST. Unpinned, pg_temp is searched first, so a
-- session's temporary table named like one of ours would take its place inside
-- a trigger (e.g. the audit rows of a sync written to a temporary table).
DO $pin$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['sync_preview_cache_defaults', 'sync_progress_detect_completion',
                             'sync_progress_compute_metrics', 'sync_progress_log_activity',
                             'auto_cleanup_preview_cache', 'sync_refuse_truncate'] LOOP
        EXECUTE format('ALTER FUNCTION %I() SET search_path = %I, pg_catalog, pg_temp',
                       f, current_schema());
    END LOOP;
END
$pin$;

-- RLS does not filter TRUNCATE, and a role holding TRIGGER on a table can make
-- the owner's own writes run its code. Default privileges (Supabase grants ALL
-- on new tables in public to anon, authenticated, service_role) hand both out
-- at CREATE TABLE: take TRIGGER, TRUNCATE and REFERENCES back from every role
-- but the owner on the three tables and their partitions. (A later explicit
-- GRANT gives them back: `sync-migrate doctor` fails on it.)
DO $revoke$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT DISTINCT c.oid::regclass AS rel,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE (c.oid IN ('sync_preview_cache'::regclass, 'sync_progress'::regclass,
                          'sync_activity_log'::regclass)
                OR c.oid IN (SELECT inhrelid FROM pg_inherits
                              WHERE inhparent = 'sync_activity_log'::regclass))
           AND a.grantee <> c.relowner
           AND a.privilege_type IN ('TRIGGER', 'TRUNCATE', 'REFERENCES')
    LOOP
        EXECUTE format('REVOKE TRIGGER, TRUNCATE, REFERENCES ON TABLE %s FROM %s', r.rel, r.grantee);
    END LOOP;
END
$revoke$;
