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
//!
//! The activity counts come from the rollups of migration 0026
//! (`sync_activity_metrics()`): running totals per org, UTC day and hour
//! buckets, and the deltas not yet folded in, maintained by statement triggers
//! on the log. Their cost does not grow with the log: without `since`, a few
//! rows per org and status; with `since`, the whole days and hours after it plus
//! the log rows of the one partial hour (read through the `(org_id,
//! created_at)` index). While the backfill of the rows older than 0026 is owed,
//! they are counted by a scan of the log, as before, and
//! [`SyncMetrics::activity_source`] says [`ActivitySource::Scan`]. Metrics over
//! `sync_progress` and `sync_preview_cache` scan those tables (they grow with
//! syncs and previews, not events).

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
    /// Where the activity counts (`activity_*`, the rates, `outcomes`) came
    /// from: the rollups of migration 0026, or a scan of the log while their
    /// backfill is owed. Both are exact; only the cost differs.
    pub activity_source: ActivitySource,
}

/// Where [`SyncMetrics`]' activity counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActivitySource {
    /// The rollups (`sync_activity_rollup`, its pending deltas, and at most the
    /// one partial UTC hour after `since` read from the log): time independent
    /// of the log's size.
    Rollup,
    /// A scan of the log: the rollup backfill is still owed (run `sync-migrate
    /// up`, or let a service's start-up finish it). Exact, but grows with the log.
    Scan,
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
    /// Of which any other status: `pending`, `in_progress` (not written by the
    /// migrations' triggers, only by other clients), and labels our enums do not
    /// know (an adopted database's own, e.g. `sync_error`, `partial`, `skipped`):
    /// the rollups keep statuses as text, so such rows are counted here, never
    /// dropped and never an error.
    pub other: i64,
}

impl SyncOutcomes {
    /// `n / ended`, e.g. `share(self.completed)` is the success rate; `None`
    /// when no sync ended.
    pub fn share(&self, n: i64) -> Option<f64> {
        (self.ended > 0).then(|| n as f64 / self.ended as f64)
    }
}

/// The MONITORING statement with `$org` as the org filter of the cache and
/// progress tables and `$act` as the org argument of `sync_activity_metrics`
/// (migration 0026: the activity counts from the rollups, or from a scan of the
/// log while the rollup backfill is owed).
macro_rules! metrics_sql {
    ($org:literal, $act:literal) => {
        concat!(
            "SELECT \
               (SELECT count(*) FROM sync_preview_cache WHERE ",
            $org,
            " AND expires_at > now()), \
               (SELECT count(*) FROM sync_preview_cache WHERE ",
            $org,
            " AND expires_at <= now()), \
               (SELECT count(*) FROM sync_progress WHERE ",
            $org,
            " AND completed_at IS NULL), \
               (SELECT avg(speed_items_per_min)::float8 FROM sync_progress WHERE ",
            $org,
            "), \
               (SELECT avg(extract(epoch FROM completed_at - started_at))::float8 \
                  FROM sync_progress WHERE ",
            $org,
            " AND completed_at IS NOT NULL), \
               a.total, a.completed, a.errors, \
               a.ended, a.ended_completed, a.ended_with_errors, a.ended_failed, \
               a.ended_cancelled, a.source, \
               (SELECT count(*) FROM sync_progress WHERE ",
            $org,
            " AND completed_at IS NULL \
                  AND sync_progress_stalled(sync_progress)) \
             FROM sync_activity_metrics(",
            $act,
            ", $2::timestamptz) a \
             WHERE {has_org}"
        )
    };
}

static METRICS: ScopedSql = ScopedSql::new(metrics_sql!("org_id = {org}", "{org}"));

// Service scope only (`$1` is a NULL uuid, unused): the whole database.
static METRICS_ALL_ORGS: ScopedSql = ScopedSql::new(metrics_sql!("$1::uuid IS NULL", "NULL::uuid"));

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
        let source: String = col(op, &row, 13)?;
        Ok(SyncMetrics {
            activity_source: if source == "rollup" {
                ActivitySource::Rollup
            } else {
                ActivitySource::Scan
            },
            cache_live: col(op, &row, 0)?,
            cache_expired: col(op, &row, 1)?,
            active_syncs: col(op, &row, 2)?,
            stalled_syncs: col(op, &row, 14)?,
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
