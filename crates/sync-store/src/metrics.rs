//! The spec's MONITORING metrics as one typed call, plus the outcome breakdown
//! of finished syncs.
//!
//! Two different questions, two different denominators:
//!
//! * The **spec's rates** ([`SyncMetrics::success_rate`], [`SyncMetrics::error_rate`])
//!   are the spec's formulas exactly: `count(status = 'completed') / count(*)` and
//!   `count(status IN ('failed', 'completed_with_errors')) / count(*)` over **every**
//!   activity entry, `sync_start`/`sync_progress`/record rows included. They do not
//!   add up to 100 % and are not "how many syncs succeeded".
//! * The **outcome breakdown** ([`SyncOutcomes`]) counts only the rows that **end a
//!   sync**: entries whose `action` is `sync_complete`, `sync_fail` or `sync_cancel`
//!   (the database writes exactly one such row when a sync's `completed_at` becomes
//!   set). Each is classified by its `status`: `completed`, `completed_with_errors`,
//!   `failed`, `cancelled`, or `other` (any other status, e.g. a row written by plain
//!   SQL). The five shares sum to 100 %; `completed`'s share is what people mean by
//!   "success rate".

use postgres_types::Type;
use time::OffsetDateTime;

use crate::error::Result;
use crate::sql::ScopedSql;
use crate::store::{col, Scope, ServiceScope, Store, TenantScope};
use crate::trace::{op_span, traced};

/// Monitoring metrics of one org, or of every org (spec section MONITORING).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SyncMetrics {
    /// Previews with `expires_at > now()`.
    pub cache_live: i64,
    /// Previews with `expires_at <= now()` (awaiting cleanup).
    pub cache_expired: i64,
    /// Syncs with `completed_at IS NULL`.
    pub active_syncs: i64,
    /// Of the active syncs, those whose reporter's heartbeat is older than
    /// their `stall_after` (function `sync_progress_stalled`, migration 0027).
    pub stalled_syncs: i64,
    /// `avg(speed_items_per_min)` over the org's syncs; `None` when there is none.
    pub avg_speed_items_per_min: Option<f64>,
    /// Average `completed_at - started_at` in seconds over finished syncs; `None` when none finished.
    pub avg_duration_seconds: Option<f64>,
    /// Activity entries counted (since the window start, if any).
    pub activity_total: i64,
    /// Of which `status = 'completed'`.
    pub activity_completed: i64,
    /// Of which `status IN ('failed', 'completed_with_errors')`.
    pub activity_errors: i64,
    /// `activity_completed / activity_total` (the spec's success-rate formula,
    /// over **all** entries, `sync_start` rows included: not the share of syncs
    /// that succeeded, see [`SyncMetrics::outcomes`]); `None` when there are no
    /// entries.
    pub success_rate: Option<f64>,
    /// `activity_errors / activity_total` (the spec's error-rate formula, over
    /// all entries); `None` when there are no entries.
    pub error_rate: Option<f64>,
    /// How the syncs that ended (since the window start, if any) ended: see
    /// [`SyncOutcomes`]. This, not [`SyncMetrics::success_rate`], is the share of
    /// syncs that succeeded.
    pub outcomes: SyncOutcomes,
}

/// The activity entries that **end a sync** — `action IN ('sync_complete',
/// 'sync_fail', 'sync_cancel')` — counted by `status`. `completed +
/// completed_with_errors + failed + cancelled + other == ended`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SyncOutcomes {
    /// Entries that end a sync (the denominator of every share).
    pub ended: i64,
    /// Of which `status = 'completed'` (the "success rate" numerator).
    pub completed: i64,
    /// Of which `status = 'completed_with_errors'`.
    pub completed_with_errors: i64,
    /// Of which `status = 'failed'`.
    pub failed: i64,
    /// Of which `status = 'cancelled'`.
    pub cancelled: i64,
    /// Of which any other status (`pending`, `in_progress`: not written by this
    /// migration's triggers, only by other clients).
    pub other: i64,
}

impl SyncOutcomes {
    /// `n / ended`, e.g. `share(self.completed)` is the success rate; `None`
    /// when no sync ended.
    pub fn share(&self, n: i64) -> Option<f64> {
        (self.ended > 0).then(|| n as f64 / self.ended as f64)
    }
}

/// The MONITORING statement with `$org` as the org filter of every table.
macro_rules! metrics_sql {
    ($org:literal) => {
        concat!(
            "SELECT \
               (SELECT count(*) FROM sync_preview_cache WHERE ", $org, " AND expires_at > now()), \
               (SELECT count(*) FROM sync_preview_cache WHERE ", $org, " AND expires_at <= now()), \
               (SELECT count(*) FROM sync_progress WHERE ", $org, " AND completed_at IS NULL), \
               (SELECT avg(speed_items_per_min)::float8 FROM sync_progress WHERE ", $org, "), \
               (SELECT avg(extract(epoch FROM completed_at - started_at))::float8 \
                  FROM sync_progress WHERE ", $org, " AND completed_at IS NOT NULL), \
               a.total, a.completed, a.errors, \
               a.ended, a.ended_completed, a.ended_with_errors, a.ended_failed, \
               a.ended_cancelled, \
               (SELECT count(*) FROM sync_progress WHERE ", $org, " AND completed_at IS NULL \
                  AND sync_progress_stalled(sync_progress)) \
             FROM (SELECT count(*) AS total, \
                          count(*) FILTER (WHERE status = 'completed') AS completed, \
                          count(*) FILTER (WHERE status IN ('failed', 'completed_with_errors')) AS errors, \
                          count(*) FILTER (WHERE e) AS ended, \
                          count(*) FILTER (WHERE e AND status = 'completed') AS ended_completed, \
                          count(*) FILTER (WHERE e AND status = 'completed_with_errors') AS ended_with_errors, \
                          count(*) FILTER (WHERE e AND status = 'failed') AS ended_failed, \
                          count(*) FILTER (WHERE e AND status = 'cancelled') AS ended_cancelled \
                   FROM (SELECT status, \
                                action IN ('sync_complete', 'sync_fail', 'sync_cancel') AS e \
                         FROM sync_activity_log \
                         WHERE ", $org, " AND ($2::timestamptz IS NULL OR created_at >= $2)) l) a \
             WHERE {has_org}"
        )
    };
}

static METRICS: ScopedSql = ScopedSql::new(metrics_sql!("org_id = {org}"));

// Service scope only (`$1` is a NULL uuid, unused): the whole database.
static METRICS_ALL_ORGS: ScopedSql = ScopedSql::new(metrics_sql!("$1::uuid IS NULL"));

async fn metrics(
    store: &Store,
    scope: Scope,
    op: &'static str,
    sql: &ScopedSql,
    since: Option<OffsetDateTime>,
) -> Result<SyncMetrics> {
    traced(op_span(op, scope, None), async {
        let row = store
            .routed_one_row(scope, op, sql, &[(&since, Type::TIMESTAMPTZ)])
            .await?;
        let total: i64 = col(op, &row, 5)?;
        let completed: i64 = col(op, &row, 6)?;
        let errors: i64 = col(op, &row, 7)?;
        let rate = |n: i64| (total > 0).then(|| n as f64 / total as f64);
        let ended: i64 = col(op, &row, 8)?;
        let (o_completed, o_with_errors, o_failed, o_cancelled): (i64, i64, i64, i64) = (
            col(op, &row, 9)?,
            col(op, &row, 10)?,
            col(op, &row, 11)?,
            col(op, &row, 12)?,
        );
        let outcomes = SyncOutcomes {
            ended,
            completed: o_completed,
            completed_with_errors: o_with_errors,
            failed: o_failed,
            cancelled: o_cancelled,
            other: ended - o_completed - o_with_errors - o_failed - o_cancelled,
        };
        Ok(SyncMetrics {
            cache_live: col(op, &row, 0)?,
            cache_expired: col(op, &row, 1)?,
            active_syncs: col(op, &row, 2)?,
            stalled_syncs: col(op, &row, 13)?,
            avg_speed_items_per_min: col(op, &row, 3)?,
            avg_duration_seconds: col(op, &row, 4)?,
            activity_total: total,
            activity_completed: completed,
            activity_errors: errors,
            success_rate: rate(completed),
            error_rate: rate(errors),
            outcomes,
        })
    })
    .await
}

impl ServiceScope {
    /// Cache, progress and activity metrics of `org` in one statement (one round
    /// trip). `since` limits the activity counts to `created_at >= since` (the
    /// activity log grows without bound); `None` counts everything, as the spec does.
    ///
    /// SQL: scalar sub-selects of `count(*)` / `avg(…)` over the three tables,
    /// each `WHERE org_id = $1` — the spec's MONITORING queries, scoped.
    pub async fn metrics(
        &self,
        org: uuid::Uuid,
        since: Option<OffsetDateTime>,
    ) -> Result<SyncMetrics> {
        metrics(
            &self.store,
            Scope::Service(Some(org)),
            "metrics",
            &METRICS,
            since,
        )
        .await
    }

    /// [`ServiceScope::metrics`] over **every org** of the database (operator
    /// view, e.g. `sync-migrate stats`): the spec's MONITORING queries unscoped,
    /// exactly as the spec writes them (plus the division guard and `since`).
    ///
    /// SQL: the same statement as [`ServiceScope::metrics`] without the
    /// `org_id` filters.
    pub async fn metrics_all_orgs(&self, since: Option<OffsetDateTime>) -> Result<SyncMetrics> {
        metrics(
            &self.store,
            Scope::Service(None),
            "metrics_all_orgs",
            &METRICS_ALL_ORGS,
            since,
        )
        .await
    }
}

impl TenantScope {
    /// [`ServiceScope::metrics`] for the user's org.
    pub async fn metrics(&self, since: Option<OffsetDateTime>) -> Result<SyncMetrics> {
        metrics(
            &self.store,
            Scope::Tenant(self.user_id),
            "metrics",
            &METRICS,
            since,
        )
        .await
    }
}
