//! The spec's MONITORING metrics as one typed call.

use postgres_types::Type;
use time::OffsetDateTime;

use crate::error::Result;
use crate::sql::ScopedSql;
use crate::store::{col, Scope, ServiceScope, Store, TenantScope};
use crate::trace::{op_span, traced};

/// Monitoring metrics of one org (spec section MONITORING).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SyncMetrics {
    /// Previews with `expires_at > now()`.
    pub cache_live: i64,
    /// Previews with `expires_at <= now()` (awaiting cleanup).
    pub cache_expired: i64,
    /// Syncs with `completed_at IS NULL`.
    pub active_syncs: i64,
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
    /// `activity_completed / activity_total` (the spec's formula, over all
    /// entries); `None` when there are no entries.
    pub success_rate: Option<f64>,
    /// `activity_errors / activity_total`; `None` when there are no entries.
    pub error_rate: Option<f64>,
}

static METRICS: ScopedSql = ScopedSql::new(
    "SELECT \
       (SELECT count(*) FROM sync_preview_cache WHERE org_id = {org} AND expires_at > now()), \
       (SELECT count(*) FROM sync_preview_cache WHERE org_id = {org} AND expires_at <= now()), \
       (SELECT count(*) FROM sync_progress WHERE org_id = {org} AND completed_at IS NULL), \
       (SELECT avg(speed_items_per_min)::float8 FROM sync_progress WHERE org_id = {org}), \
       (SELECT avg(extract(epoch FROM completed_at - started_at))::float8 \
          FROM sync_progress WHERE org_id = {org} AND completed_at IS NOT NULL), \
       a.total, a.completed, a.errors \
     FROM (SELECT count(*) AS total, \
                  count(*) FILTER (WHERE status = 'completed') AS completed, \
                  count(*) FILTER (WHERE status IN ('failed', 'completed_with_errors')) AS errors \
           FROM sync_activity_log \
           WHERE org_id = {org} AND ($2::timestamptz IS NULL OR created_at >= $2)) a \
     WHERE {has_org}",
);

async fn metrics(
    store: &Store,
    scope: Scope,
    since: Option<OffsetDateTime>,
) -> Result<SyncMetrics> {
    const OP: &str = "metrics";
    traced(op_span(OP, scope, None), async {
        let row = store
            .one_row(scope, OP, &METRICS, &[(&since, Type::TIMESTAMPTZ)])
            .await?;
        let total: i64 = col(OP, &row, 5)?;
        let completed: i64 = col(OP, &row, 6)?;
        let errors: i64 = col(OP, &row, 7)?;
        let rate = |n: i64| (total > 0).then(|| n as f64 / total as f64);
        Ok(SyncMetrics {
            cache_live: col(OP, &row, 0)?,
            cache_expired: col(OP, &row, 1)?,
            active_syncs: col(OP, &row, 2)?,
            avg_speed_items_per_min: col(OP, &row, 3)?,
            avg_duration_seconds: col(OP, &row, 4)?,
            activity_total: total,
            activity_completed: completed,
            activity_errors: errors,
            success_rate: rate(completed),
            error_rate: rate(errors),
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
        metrics(&self.store, Scope::Service(Some(org)), since).await
    }
}

impl TenantScope {
    /// [`ServiceScope::metrics`] for the user's org.
    pub async fn metrics(&self, since: Option<OffsetDateTime>) -> Result<SyncMetrics> {
        metrics(&self.store, Scope::Tenant(self.user_id), since).await
    }
}
