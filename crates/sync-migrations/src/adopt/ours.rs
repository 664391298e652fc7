//! The objects of migration 0024 that adoption puts in place, one statement per
//! constant, copied from `migrations/V0024__sync_preview_progress_logs.sql`
//! (frozen; its statements are not idempotent and are not written for live
//! tables, so they cannot be re-run as they are). `tests/tests/adopt.rs` proves
//! the copy: after `adopt --apply` the live catalog equals the catalog that
//! V0024 itself builds (see `reference`), by meaning.

/// `(name, CREATE OR REPLACE FUNCTION …)` of the trigger functions.
pub(crate) const FUNCTIONS: &[(&str, &str)] = &[
    (
        "sync_preview_cache_defaults",
        r#"CREATE OR REPLACE FUNCTION sync_preview_cache_defaults() RETURNS trigger
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
$fn$"#,
    ),
    (
        "sync_progress_detect_completion",
        r#"CREATE OR REPLACE FUNCTION sync_progress_detect_completion() RETURNS trigger
    LANGUAGE plpgsql
AS $fn$
BEGIN
    NEW.completed_at := greatest(now(), NEW.started_at);
    RETURN NEW;
END
$fn$"#,
    ),
    (
        "sync_progress_compute_metrics",
        r#"CREATE OR REPLACE FUNCTION sync_progress_compute_metrics() RETURNS trigger
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
$fn$"#,
    ),
    (
        "sync_progress_log_activity",
        r#"CREATE OR REPLACE FUNCTION sync_progress_log_activity() RETURNS trigger
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
$fn$"#,
    ),
    (
        "sync_refuse_truncate",
        r#"CREATE OR REPLACE FUNCTION sync_refuse_truncate() RETURNS trigger
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
$fn$"#,
    ),
];

/// `auto_cleanup_preview_cache()` (dropped first when its result type differs).
pub(crate) const CLEANUP_FUNCTION: &str = r#"CREATE FUNCTION auto_cleanup_preview_cache() RETURNS TABLE (deleted_count bigint)
    LANGUAGE sql VOLATILE
AS $fn$
    WITH deleted AS (
        DELETE FROM sync_preview_cache WHERE expires_at < now() RETURNING 1
    )
    SELECT count(*) FROM deleted
$fn$"#;

/// `(table, trigger name, CREATE TRIGGER …)` of 0024 on the two plain tables.
pub(crate) const TRIGGERS: &[(&str, &str, &str)] = &[
    (
        "sync_preview_cache",
        "trg_sync_preview_cache_10_defaults",
        r#"CREATE TRIGGER trg_sync_preview_cache_10_defaults
    BEFORE INSERT OR UPDATE ON sync_preview_cache
    FOR EACH ROW EXECUTE FUNCTION sync_preview_cache_defaults()"#,
    ),
    (
        "sync_progress",
        "trg_sync_progress_10_completion",
        r#"CREATE TRIGGER trg_sync_progress_10_completion
    BEFORE INSERT OR UPDATE ON sync_progress
    FOR EACH ROW
    WHEN (NEW.completed_at IS NULL
          AND NEW.total_items IS NOT NULL
          AND NEW.processed_count::bigint + NEW.failed_count::bigint >= NEW.total_items)
    EXECUTE FUNCTION sync_progress_detect_completion()"#,
    ),
    (
        "sync_progress",
        "trg_sync_progress_20_metrics",
        r#"CREATE TRIGGER trg_sync_progress_20_metrics
    BEFORE INSERT OR UPDATE ON sync_progress
    FOR EACH ROW EXECUTE FUNCTION sync_progress_compute_metrics()"#,
    ),
    (
        "sync_progress",
        "trg_sync_progress_30_log_start",
        r#"CREATE TRIGGER trg_sync_progress_30_log_start
    AFTER INSERT ON sync_progress
    FOR EACH ROW EXECUTE FUNCTION sync_progress_log_activity()"#,
    ),
    (
        "sync_progress",
        "trg_sync_progress_40_log_finish",
        r#"CREATE TRIGGER trg_sync_progress_40_log_finish
    AFTER UPDATE ON sync_progress
    FOR EACH ROW
    WHEN (OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL)
    EXECUTE FUNCTION sync_progress_log_activity()"#,
    ),
    (
        "sync_preview_cache",
        "trg_sync_preview_cache_05_no_truncate",
        r#"CREATE TRIGGER trg_sync_preview_cache_05_no_truncate BEFORE TRUNCATE ON sync_preview_cache
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate()"#,
    ),
    (
        "sync_progress",
        "trg_sync_progress_05_no_truncate",
        r#"CREATE TRIGGER trg_sync_progress_05_no_truncate BEFORE TRUNCATE ON sync_progress
    FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate()"#,
    ),
];

/// `(index name, table, "(columns) [WHERE …]")` of 0024's plain indexes. On the
/// log, each is built concurrently per partition, then attached to an index
/// created `ON ONLY` the parent.
pub(crate) const INDEXES: &[(&str, &str, &str)] = &[
    (
        "sync_preview_cache_org_sync_idx",
        "sync_preview_cache",
        "(org_id, sync_id, computed_at DESC)",
    ),
    (
        "sync_preview_cache_expires_at_idx",
        "sync_preview_cache",
        "(expires_at)",
    ),
    (
        "sync_preview_cache_computed_by_idx",
        "sync_preview_cache",
        "(computed_by) WHERE computed_by IS NOT NULL",
    ),
    (
        "sync_progress_org_job_idx",
        "sync_progress",
        "(org_id, job_id)",
    ),
    (
        "sync_progress_active_idx",
        "sync_progress",
        "(org_id) WHERE completed_at IS NULL",
    ),
    (
        "sync_progress_org_started_idx",
        "sync_progress",
        "(org_id, started_at DESC)",
    ),
    (
        "sync_progress_initiated_by_idx",
        "sync_progress",
        "(initiated_by) WHERE initiated_by IS NOT NULL",
    ),
    (
        "sync_activity_log_org_created_idx",
        "sync_activity_log",
        "(org_id, created_at DESC, id DESC)",
    ),
    (
        "sync_activity_log_org_sync_idx",
        "sync_activity_log",
        "(org_id, sync_id, created_at DESC)",
    ),
    (
        "sync_activity_log_org_entity_idx",
        "sync_activity_log",
        "(org_id, entity_type, created_at DESC)",
    ),
    (
        "sync_activity_log_errors_idx",
        "sync_activity_log",
        "(org_id, created_at DESC) WHERE status IN ('failed', 'completed_with_errors')",
    ),
    (
        "sync_activity_log_user_idx",
        "sync_activity_log",
        "(user_id) WHERE user_id IS NOT NULL",
    ),
];

/// `(constraint name, table, CHECK expression)` of 0024.
pub(crate) const CHECKS: &[(&str, &str, &str)] = &[
    (
        "sync_preview_cache_expires_after_computed",
        "sync_preview_cache",
        "expires_at > computed_at",
    ),
    (
        "sync_progress_counts_non_negative",
        "sync_progress",
        "current_item >= 0 AND processed_count >= 0 AND failed_count >= 0 \
         AND (total_items IS NULL OR total_items >= 0) \
         AND (batch_number IS NULL OR batch_number >= 0) \
         AND elapsed_seconds >= 0 \
         AND (eta_seconds IS NULL OR eta_seconds >= 0) \
         AND (speed_items_per_min IS NULL OR speed_items_per_min >= 0)",
    ),
    (
        "sync_progress_handled_within_total",
        "sync_progress",
        "total_items IS NULL OR processed_count::bigint + failed_count::bigint <= total_items",
    ),
    (
        "sync_progress_completed_after_start",
        "sync_progress",
        "completed_at IS NULL OR completed_at >= started_at",
    ),
    (
        "sync_progress_metadata_is_object",
        "sync_progress",
        "jsonb_typeof(metadata) = 'object'",
    ),
    (
        "sync_activity_log_counts_non_negative",
        "sync_activity_log",
        "record_count >= 0 AND (duration_seconds IS NULL OR duration_seconds >= 0)",
    ),
];

/// Column types adoption converts to without rewriting a row: `(found, ours)`.
/// `timestamp` → `timestamptz` runs with `TimeZone = 'UTC'` (PostgreSQL then
/// skips the rewrite and reads the stored values as UTC); dropping a `numeric`
/// precision only relabels.
pub(crate) fn safe_type_change(found: &str, ours: &str) -> Option<&'static str> {
    match ours {
        "timestamp with time zone" if found == "timestamp without time zone" => Some("timestamptz"),
        "numeric" if found.starts_with("numeric(") => Some("numeric"),
        _ => None,
    }
}

/// Our column defaults, as SQL from a fixed list (the catalog's text only
/// selects one).
pub(crate) fn default_sql(ours: &str) -> Option<&'static str> {
    ["now()", "gen_random_uuid()", "0", "'{}'::jsonb"]
        .into_iter()
        .find(|d| *d == ours)
}

/// Defaults of the deployed schema that adoption drops although ours has none,
/// because with our triggers they change what a row means: `total_items DEFAULT
/// 0` would make the completion trigger complete every sync an old writer
/// inserts without a total (ours: NULL = not known yet). Other extra defaults
/// (e.g. `batch_number DEFAULT 1`, `delta_json DEFAULT '{}'`) stay: old writers
/// may leave those columns out.
pub(crate) const DROP_THEIR_DEFAULT: &[(&str, &str)] = &[("sync_progress", "total_items")];

/// The tenant grants of 0024 (idempotent).
pub(crate) const GRANTS: &[&str] = &[
    "GRANT SELECT, INSERT, UPDATE, DELETE ON sync_preview_cache TO sync_tenant",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON sync_progress TO sync_tenant",
    "GRANT SELECT, INSERT ON sync_activity_log TO sync_tenant",
    "GRANT EXECUTE ON FUNCTION auto_cleanup_preview_cache() TO sync_tenant",
];

/// The activity log's TRUNCATE guard (on the parent and on every partition).
pub(crate) const LOG_TRUNCATE_TRIGGER: &str = "trg_sync_activity_log_10_no_truncate";

/// The org-isolation expression of 0024's policies for `table` (quoted).
pub(crate) fn org_check(table: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM auth.users_extended u \
         WHERE u.id = (SELECT auth.uid()) AND u.org_id = {}.org_id)",
        crate::partitions::quote_ident(table)
    )
}

/// The four `CREATE POLICY` statements of 0024 for `table`.
pub(crate) fn policies(table: &str) -> Vec<String> {
    use crate::partitions::quote_ident as q;
    let c = org_check(table);
    let t = q(table);
    let name = |cmd: &str| q(&format!("{table}_{cmd}"));
    let mut v = vec![
        format!(
            "CREATE POLICY {} ON {t} FOR SELECT USING ({c})",
            name("select")
        ),
        format!(
            "CREATE POLICY {} ON {t} FOR INSERT WITH CHECK ({c})",
            name("insert")
        ),
    ];
    if table == "sync_activity_log" {
        v.push(format!(
            "CREATE POLICY {} ON {t} FOR UPDATE USING (false) WITH CHECK (false)",
            name("update")
        ));
        v.push(format!(
            "CREATE POLICY {} ON {t} FOR DELETE USING (false)",
            name("delete")
        ));
    } else {
        v.push(format!(
            "CREATE POLICY {} ON {t} FOR UPDATE USING ({c}) WITH CHECK ({c})",
            name("update")
        ));
        v.push(format!(
            "CREATE POLICY {} ON {t} FOR DELETE USING ({c})",
            name("delete")
        ));
    }
    v
}

/// 0024's revocation of TRIGGER, TRUNCATE and REFERENCES from every role but the
/// owner on the three tables and the log's partitions (a DO block; identifiers
/// through `regclass` output and `quote_ident`).
pub(crate) const REVOKE_DO: &str = r#"DO $revoke$
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
$revoke$"#;
