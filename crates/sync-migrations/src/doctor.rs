//! `doctor`: the spec's TROUBLESHOOTING section as checks.
//!
//! Each check is read-only and yields one [`Finding`]: pass, warn (worth a look,
//! not broken) or fail (broken), with what to do next.

use time::OffsetDateTime;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// As it should be.
    Pass,
    /// Not broken, but worth a look.
    Warn,
    /// Broken: the spec's symptom will show.
    Fail,
    /// Not checked (e.g. no user id given).
    Skip,
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Short name, e.g. `triggers`.
    pub check: &'static str,
    /// Pass / warn / fail / skip.
    pub verdict: Verdict,
    /// What was found.
    pub found: String,
    /// What to do about it (empty on pass).
    pub fix: String,
}

/// The names of 0024's triggers.
pub(crate) const TRIGGERS: [&str; 5] = [
    "trg_sync_preview_cache_10_defaults",
    "trg_sync_progress_10_completion",
    "trg_sync_progress_20_metrics",
    "trg_sync_progress_30_log_start",
    "trg_sync_progress_40_log_finish",
];

/// The triggers of the migrations (0024, 0025, 0026), as (trigger, function): any
/// other trigger on the sync tables is someone else's code. The TRUNCATE guard
/// counts only as a TRUNCATE trigger.
const OUR_TRIGGERS: [(&str, &str); 19] = [
    (
        "trg_sync_preview_cache_10_defaults",
        "sync_preview_cache_defaults",
    ),
    (
        "trg_sync_progress_10_completion",
        "sync_progress_detect_completion",
    ),
    (
        "trg_sync_progress_20_metrics",
        "sync_progress_compute_metrics",
    ),
    (
        "trg_sync_progress_30_log_start",
        "sync_progress_log_activity",
    ),
    (
        "trg_sync_progress_40_log_finish",
        "sync_progress_log_activity",
    ),
    (
        "trg_sync_progress_50_prune_tick_keys",
        "sync_progress_prune_tick_keys",
    ),
    (
        "trg_sync_preview_cache_05_no_truncate",
        "sync_refuse_truncate",
    ),
    ("trg_sync_progress_05_no_truncate", "sync_refuse_truncate"),
    (
        "trg_sync_activity_log_10_no_truncate",
        "sync_refuse_truncate",
    ),
    (
        "trg_sync_progress_tick_key_10_no_truncate",
        "sync_refuse_truncate",
    ),
    (
        "trg_sync_activity_batch_10_no_truncate",
        "sync_refuse_truncate",
    ),
    (
        "trg_sync_progress_60_notify_done",
        "sync_progress_notify_done",
    ),
    (
        "trg_sync_activity_log_80_rollup_insert",
        "sync_activity_rollup_on_insert",
    ),
    (
        "trg_sync_activity_log_81_rollup_update",
        "sync_activity_rollup_on_update",
    ),
    (
        "trg_sync_activity_log_82_rollup_delete",
        "sync_activity_rollup_on_delete",
    ),
    (
        "trg_sync_activity_log_83_rollup_truncate",
        "sync_activity_rollup_on_truncate",
    ),
    (
        "trg_sync_activity_rollup_10_no_truncate",
        "sync_refuse_truncate",
    ),
    (
        "trg_sync_activity_rollup_delta_10_no_truncate",
        "sync_refuse_truncate",
    ),
    (
        "trg_sync_activity_rollup_state_10_no_truncate",
        "sync_refuse_truncate",
    ),
];

/// The sync tables and every partition of the log (a `WHERE` on `c.oid`).
macro_rules! sync_relations {
    () => {
        "(c.oid IN (SELECT to_regclass(t) FROM unnest(ARRAY['sync_preview_cache', \
         'sync_progress', 'sync_activity_log', 'sync_progress_tick_key', 'sync_activity_batch', \
         'sync_activity_rollup', 'sync_activity_rollup_delta', 'sync_activity_rollup_state']) t) \
         OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass('sync_activity_log')))"
    };
}

/// What [`doctor_with`] measures against.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DoctorOptions {
    /// How many months after the current one should have monthly partitions
    /// (as `partitions ensure --months-ahead`): rows in the catch-all dated
    /// before the end of that horizon fail the `future_partition_empty` check,
    /// later rows only warn. Default 3.
    pub months_ahead: u32,
    /// The instant that counts as "now"; `None` (default): the server's `now()`.
    pub now: Option<OffsetDateTime>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        DoctorOptions {
            months_ahead: 3,
            now: None,
        }
    }
}

impl DoctorOptions {
    /// These options with another `months_ahead`.
    pub fn with_months_ahead(mut self, months_ahead: u32) -> Self {
        self.months_ahead = months_ahead;
        self
    }

    /// These options going by `now` instead of the server's clock.
    pub fn with_now(mut self, now: OffsetDateTime) -> Self {
        self.now = Some(now);
        self
    }
}

/// [`doctor_with`] with the default [`DoctorOptions`] (3 months ahead, the
/// server's clock).
///
/// # Errors
///
/// As [`doctor_with`].
pub async fn doctor(client: &Client, user_id: Option<Uuid>) -> Result<Vec<Finding>> {
    doctor_with(client, user_id, &DoctorOptions::default()).await
}

/// Runs every check. `user_id`: the user whose queries RLS blocks (spec: "RLS
/// Policy Blocking Queries"); `None` skips that check.
///
/// Checks: the user exists in `auth.users_extended` with an org; the 5 triggers
/// are installed and enabled; RLS is enabled on the 3 tables and every
/// partition; a partition other than `future` covers `options.now` (default the
/// server's `now()`); `sync_activity_log_future` holds no row dated before the
/// end of the current month + `options.months_ahead` (fail: a monthly partition
/// should hold it) and no later row (warn only: future-dated rows wait there
/// until their month is created); `constraint_exclusion` is `partition`
/// or `on` and `enable_partition_pruning` is on; no expired cache rows wait for
/// cleanup; no running sync is stalled (warn; migration 0027); the
/// `(org_id, job_id)` progress query uses its index; indexes of the
/// 0024 tables that were never scanned (warn only); the activity-rollup
/// backfill of 0026 is done (warn while owed, skip without 0026).
///
/// # Errors
///
/// [`Error`] naming the check when a query fails (e.g. on a database without
/// 0024's tables).
pub async fn doctor_with(
    client: &Client,
    user_id: Option<Uuid>,
    options: &DoctorOptions,
) -> Result<Vec<Finding>> {
    let now: OffsetDateTime = match options.now {
        Some(now) => now,
        None => client
            .query_one("SELECT now()", &[])
            .await
            .map_err(Error::db("reading the server clock"))?
            .get(0),
    };
    Ok(vec![
        rls_user(client, user_id).await?,
        triggers(client).await?,
        rls_enabled(client).await?,
        current_month_partition(client, now).await?,
        future_partition(client, now, options.months_ahead).await?,
        partition_pruning(client).await?,
        expired_cache_rows(client).await?,
        stalled_syncs(client).await?,
        progress_query_plan(client).await?,
        unused_indexes(client).await?,
        table_privileges(client).await?,
        foreign_triggers(client).await?,
        activity_rollups(client).await?,
    ])
}

/// `now` in UTC as RFC 3339.
fn rfc3339(now: OffsetDateTime) -> String {
    now.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.to_string())
}

/// The user named by `--user-id` is in `auth.users_extended` with an org.
async fn rls_user(client: &Client, user_id: Option<Uuid>) -> Result<Finding> {
    Ok(match user_id {
        None => finding("rls_user", Verdict::Skip, "no user id given", ""),
        Some(id) => {
            let row = client
                .query_opt(
                    "SELECT org_id FROM auth.users_extended WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(Error::db("looking up the user in auth.users_extended"))?;
            match row {
                Some(r) => finding(
                    "rls_user",
                    Verdict::Pass,
                    format!("user {id} belongs to org {}", r.get::<_, Uuid>(0)),
                    "",
                ),
                None => finding(
                    "rls_user",
                    Verdict::Fail,
                    format!("user {id} is not in auth.users_extended: every policy denies it"),
                    "insert the user into auth.users_extended with its org_id",
                ),
            }
        }
    })
}

/// The 5 triggers of 0024 are installed and enabled.
async fn triggers(client: &Client) -> Result<Finding> {
    let names: Vec<String> = TRIGGERS.iter().map(|t| t.to_string()).collect();
    let rows = client
        .query(
            "SELECT tgname::text, tgenabled <> 'D' FROM pg_trigger WHERE NOT tgisinternal AND tgname = ANY($1)",
            &[&names],
        )
        .await
        .map_err(Error::db("reading triggers"))?;
    let missing: Vec<&str> = TRIGGERS
        .iter()
        .copied()
        .filter(|t| !rows.iter().any(|r| r.get::<_, String>(0) == *t))
        .collect();
    let disabled: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    Ok(if missing.is_empty() && disabled.is_empty() {
        finding(
            "triggers",
            Verdict::Pass,
            "5 triggers installed and enabled",
            "",
        )
    } else {
        finding(
            "triggers",
            Verdict::Fail,
            format!("missing: {missing:?}; disabled: {disabled:?}"),
            "re-enable with ALTER TABLE … ENABLE TRIGGER …, or run `sync-migrate up`/`verify`",
        )
    })
}

/// RLS is on for the 3 tables and every partition of the log.
async fn rls_enabled(client: &Client) -> Result<Finding> {
    let one = |sql: &'static str| async move {
        client
            .query_one(sql, &[])
            .await
            .map_err(Error::db("running a doctor check"))
    };
    let r = one(
        "SELECT count(*) FILTER (WHERE NOT c.relrowsecurity)::int, \
                string_agg(c.relname, ', ') FILTER (WHERE NOT c.relrowsecurity) \
         FROM pg_class c WHERE c.oid IN ( \
             SELECT to_regclass(t) FROM unnest(ARRAY['sync_preview_cache','sync_progress','sync_activity_log']) t \
             UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass('sync_activity_log'))",
    )
    .await?;
    let off: i32 = r.get(0);
    Ok(if off == 0 {
        finding(
            "rls_enabled",
            Verdict::Pass,
            "RLS enabled on the 3 tables and every partition",
            "",
        )
    } else {
        finding(
            "rls_enabled",
            Verdict::Fail,
            format!(
                "RLS disabled on: {}",
                r.get::<_, Option<String>>(1).unwrap_or_default()
            ),
            "ALTER TABLE … ENABLE ROW LEVEL SECURITY on each",
        )
    })
}

/// A monthly partition covers `now`.
async fn current_month_partition(client: &Client, now: OffsetDateTime) -> Result<Finding> {
    let now_text = rfc3339(now);
    let r = client
        .query_one(
            "SELECT count(*)::int FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = to_regclass('sync_activity_log') AND c.relname <> 'sync_activity_log_future' \
             AND $1 >= (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz \
             AND $1 <  (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz",
            &[&now],
        )
        .await
        .map_err(Error::db("running a doctor check"))?;
    Ok(if r.get::<_, i32>(0) == 1 {
        finding(
            "current_month_partition",
            Verdict::Pass,
            format!("a monthly partition covers {now_text}"),
            "",
        )
    } else {
        finding(
            "current_month_partition",
            Verdict::Fail,
            format!(
                "no monthly partition covers {now_text}: new rows land in sync_activity_log_future"
            ),
            "run `sync-migrate partitions ensure`",
        )
    })
}

/// No row waits in the catch-all that a monthly partition (through the current month + `months_ahead`) should hold (fail); later rows warn only.
async fn future_partition(
    client: &Client,
    now: OffsetDateTime,
    months_ahead: u32,
) -> Result<Finding> {
    let one = |sql: &'static str| async move {
        client
            .query_one(sql, &[])
            .await
            .map_err(Error::db("running a doctor check"))
    };
    let r = one(
        "SELECT CASE WHEN to_regclass('sync_activity_log_future') IS NULL THEN NULL \
                ELSE (SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('sync_activity_log_future')) END",
    )
    .await?;
    // Rows a monthly partition should hold: dated before the first month
    // after the horizon (current month + months_ahead).
    let horizon = crate::partitions::Month::containing(now)
        .map(|m| m.plus(months_ahead).next().start())
        .ok();
    let (due, later): (i64, i64) = match (r.get::<_, Option<i64>>(0), horizon) {
        (None, _) => (0, 0),
        (Some(_), horizon) => {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM (SELECT 1 FROM sync_activity_log_future \
                              WHERE $1::timestamptz IS NULL OR created_at < $1 LIMIT 1000000) f), \
                            (SELECT count(*) FROM (SELECT 1 FROM sync_activity_log_future \
                              WHERE created_at >= $1 LIMIT 1000000) f)",
                    &[&horizon],
                )
                .await
                .map_err(Error::db("counting rows in sync_activity_log_future"))?;
            (row.get(0), row.get(1))
        }
    };
    let horizon_text = horizon.map_or_else(|| "the horizon".to_owned(), |h| h.date().to_string());
    Ok(if due > 0 {
        finding(
            "future_partition_empty",
            Verdict::Fail,
            format!(
                "{due} row(s) in sync_activity_log_future dated before {horizon_text} (current month + {} months): \
                 they belong in monthly partitions (no pruning, no monthly archiving); {later} later row(s)",
                months_ahead
            ),
            format!(
                "run `sync-migrate partitions ensure --months-ahead {}` to move them into monthly partitions",
                months_ahead
            ),
        )
    } else if later > 0 {
        finding(
            "future_partition_empty",
            Verdict::Warn,
            format!(
                "{later} row(s) in sync_activity_log_future dated {horizon_text} or later (beyond current month + {} months): \
                 they stay there until their months get partitions",
                months_ahead
            ),
            "nothing urgent; a later `sync-migrate partitions ensure` moves them when their months come into range",
        )
    } else {
        finding(
            "future_partition_empty",
            Verdict::Pass,
            "sync_activity_log_future is empty",
            "",
        )
    })
}

/// `constraint_exclusion` and partition pruning are on.
async fn partition_pruning(client: &Client) -> Result<Finding> {
    let one = |sql: &'static str| async move {
        client
            .query_one(sql, &[])
            .await
            .map_err(Error::db("running a doctor check"))
    };
    let r = one("SELECT current_setting('constraint_exclusion'), current_setting('enable_partition_pruning')").await?;
    let (ce, pruning): (String, String) = (r.get(0), r.get(1));
    Ok(if (ce == "partition" || ce == "on") && pruning == "on" {
        finding(
            "partition_pruning",
            Verdict::Pass,
            format!("constraint_exclusion = {ce}, enable_partition_pruning = {pruning}"),
            "",
        )
    } else {
        finding(
            "partition_pruning",
            Verdict::Fail,
            format!("constraint_exclusion = {ce}, enable_partition_pruning = {pruning}"),
            "ALTER DATABASE … SET constraint_exclusion = partition; … SET enable_partition_pruning = on",
        )
    })
}

/// No expired previews wait for cleanup (warn only).
async fn expired_cache_rows(client: &Client) -> Result<Finding> {
    let one = |sql: &'static str| async move {
        client
            .query_one(sql, &[])
            .await
            .map_err(Error::db("running a doctor check"))
    };
    let expired: i64 = one("SELECT count(*) FROM sync_preview_cache WHERE expires_at < now()")
        .await?
        .get(0);
    Ok(if expired == 0 {
        finding(
            "expired_cache_rows",
            Verdict::Pass,
            "no expired previews waiting",
            "",
        )
    } else {
        finding(
            "expired_cache_rows",
            Verdict::Warn,
            format!(
                "{expired} expired preview(s) waiting for cleanup (never returned by the library)"
            ),
            "run `sync-migrate cleanup`, or schedule it",
        )
    })
}

/// Running syncs whose reporter stopped sending heartbeats (migration 0027's
/// `sync_progress_stalled`): warn, naming a few. Skipped before 0027.
async fn stalled_syncs(client: &Client) -> Result<Finding> {
    const CHECK: &str = "stalled_syncs";
    let has: bool = client
        .query_one(
            "SELECT to_regprocedure('sync_progress_stalled(sync_progress)') IS NOT NULL",
            &[],
        )
        .await
        .map_err(Error::db("running a doctor check"))?
        .get(0);
    if !has {
        return Ok(finding(
            CHECK,
            Verdict::Skip,
            "migration 0027 (progress heartbeat) is not applied",
            "",
        ));
    }
    let row = client
        .query_one(
            "SELECT count(*), \
                    coalesce(string_agg(org_id || '/' || sync_id, ', ' ORDER BY heartbeat_at) \
                             FILTER (WHERE rn <= 5), '') \
               FROM (SELECT org_id, sync_id, heartbeat_at, \
                            row_number() OVER (ORDER BY heartbeat_at) AS rn \
                       FROM sync_progress p \
                      WHERE completed_at IS NULL AND sync_progress_stalled(p)) s",
            &[],
        )
        .await
        .map_err(Error::db("running a doctor check"))?;
    let (n, some): (i64, String) = (row.get(0), row.get(1));
    Ok(if n == 0 {
        finding(CHECK, Verdict::Pass, "no running sync is stalled", "")
    } else {
        finding(
            CHECK,
            Verdict::Warn,
            format!("{n} running sync(s) without a heartbeat for longer than their stall_after (oldest first, org/sync: {some})"),
            "check their workers (dead or stuck); a dead worker's sync is ended with cancel_sync or resumed by a new worker (resume_reporter)",
        )
    })
}

/// The `(org_id, job_id)` progress query uses an index.
async fn progress_query_plan(client: &Client) -> Result<Finding> {
    let one = |sql: &'static str| async move {
        client
            .query_one(sql, &[])
            .await
            .map_err(Error::db("running a doctor check"))
    };
    let plan: String = client
        .query(
            "EXPLAIN (COSTS OFF) SELECT * FROM sync_progress \
             WHERE org_id = '00000000-0000-0000-0000-000000000000' AND job_id = 'x'",
            &[],
        )
        .await
        .map_err(Error::db("explaining the progress query"))?
        .iter()
        .map(|r| r.get::<_, String>(0) + "\n")
        .collect();
    let small: bool =
        one("SELECT relpages < 10 FROM pg_class WHERE oid = 'sync_progress'::regclass")
            .await?
            .get(0);
    Ok(
        if plan.contains("sync_progress_org_job_idx")
            || plan.contains("sync_progress_org_id_sync_id_key")
        {
            finding(
                "progress_query_plan",
                Verdict::Pass,
                "WHERE org_id AND job_id uses an index",
                "",
            )
        } else if small {
            finding(
                "progress_query_plan",
                Verdict::Pass,
                "sync_progress is small: a sequential scan is the right plan",
                "",
            )
        } else {
            finding(
                "progress_query_plan",
                Verdict::Fail,
                format!(
                    "WHERE org_id AND job_id does not use sync_progress_org_job_idx: {}",
                    plan.trim()
                ),
                "ANALYZE sync_progress; check the index exists and is valid",
            )
        },
    )
}

/// Indexes of the cache and progress tables never scanned (warn only).
async fn unused_indexes(client: &Client) -> Result<Finding> {
    let rows = client
        .query(
            "SELECT s.indexrelname::text FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid \
             WHERE s.relname IN ('sync_preview_cache', 'sync_progress') AND s.idx_scan = 0 \
             AND NOT i.indisunique ORDER BY 1",
            &[],
        )
        .await
        .map_err(Error::db("reading index usage"))?;
    let unused: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(if unused.is_empty() {
        finding(
            "unused_indexes",
            Verdict::Pass,
            "every index has been scanned",
            "",
        )
    } else {
        finding(
            "unused_indexes",
            Verdict::Warn,
            format!("never scanned since statistics reset: {}", unused.join(", ")),
            "normal on a new database; on a busy one, review before dropping (pg_stat_user_indexes)",
        )
    })
}

/// No role but the owner holds TRIGGER or TRUNCATE on the sync tables: RLS
/// filters neither (a trigger runs its owner's code inside the writer's
/// statement, as the writer; TRUNCATE removes every org's rows).
async fn table_privileges(client: &Client) -> Result<Finding> {
    const SQL: &str = concat!(
        "SELECT string_agg(DISTINCT c.relname || ': ' || CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                ELSE pg_get_userbyid(a.grantee)::text END || ' ' || a.privilege_type, '; ') \
           FROM pg_class c, aclexplode(c.relacl) a WHERE ",
        sync_relations!(),
        " AND a.grantee <> c.relowner AND a.privilege_type IN ('TRIGGER', 'TRUNCATE')"
    );
    let held: Option<String> = client
        .query_one(SQL, &[])
        .await
        .map_err(Error::db("reading the privileges on the sync tables"))?
        .get(0);
    Ok(match held {
        None => finding(
            "table_privileges",
            Verdict::Pass,
            "no role but the owner holds TRIGGER or TRUNCATE on the sync tables",
            "",
        ),
        Some(held) => finding(
            "table_privileges",
            Verdict::Fail,
            format!("held by roles other than the owner (RLS filters neither): {held}"),
            "REVOKE TRIGGER, TRUNCATE ON <table> FROM <role> for each; never grant them to API roles",
        ),
    })
}

/// Every trigger on the sync tables runs one of the migrations' functions.
async fn foreign_triggers(client: &Client) -> Result<Finding> {
    let pairs: Vec<String> = OUR_TRIGGERS
        .iter()
        .map(|(t, f)| format!("{t} {f}"))
        .collect();
    const SQL: &str = concat!(
        "SELECT string_agg(t.tgname || ' on ' || c.relname || ' runs ' || p.proname, '; ') \
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid \
          WHERE NOT t.tgisinternal AND ",
        sync_relations!(),
        // tgtype bits: 4 INSERT, 8 DELETE, 16 UPDATE, 32 TRUNCATE.
        " AND NOT (t.tgname || ' ' || p.proname = ANY($1) AND p.pronamespace = c.relnamespace \
               AND (p.proname <> 'sync_refuse_truncate' OR t.tgtype & 60 = 32))"
    );
    let foreign: Option<String> = client
        .query_one(SQL, &[&pairs])
        .await
        .map_err(Error::db("reading the triggers on the sync tables"))?
        .get(0);
    Ok(match foreign {
        None => finding(
            "foreign_triggers",
            Verdict::Pass,
            "every trigger on the sync tables is the migrations' own",
            "",
        ),
        Some(foreign) => finding(
            "foreign_triggers",
            Verdict::Fail,
            format!("triggers that are not the migrations': {foreign}"),
            "find who created them (a role holding TRIGGER), DROP TRIGGER, then revoke TRIGGER",
        ),
    })
}

/// The activity-rollup backfill (0026) is done, so the metrics answer from the
/// rollups (warn while it is owed: the metrics scan the log meanwhile).
async fn activity_rollups(client: &Client) -> Result<Finding> {
    let installed: bool = client
        .query_one(
            "SELECT to_regclass('sync_activity_rollup_state') IS NOT NULL",
            &[],
        )
        .await
        .map_err(Error::db("looking for the activity rollups"))?
        .get(0);
    if !installed {
        return Ok(finding(
            "activity_rollups",
            Verdict::Skip,
            "migration 0026 (activity rollups) is not applied",
            "",
        ));
    }
    let row = client
        .query_one(
            "SELECT backfill_done_at IS NOT NULL, backfill_next::text FROM sync_activity_rollup_state",
            &[],
        )
        .await
        .map_err(Error::db("reading the activity-rollup backfill state"))?;
    let (done, next): (bool, Option<String>) = (row.get(0), row.get(1));
    Ok(if done {
        finding(
            "activity_rollups",
            Verdict::Pass,
            "the activity metrics answer from the rollups (backfill done)",
            "",
        )
    } else {
        finding(
            "activity_rollups",
            Verdict::Warn,
            format!(
                "the rollup backfill is owed (next month: {}); the activity metrics scan the log meanwhile",
                next.as_deref().unwrap_or("not started")
            ),
            "run `sync-migrate up` (or restart a service: start-up resumes it)",
        )
    })
}

fn finding(
    check: &'static str,
    verdict: Verdict,
    found: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        verdict,
        found: found.into(),
        fix: fix.into(),
    }
}
