//! The spec's MONITORING metrics as Prometheus gauges, on the metrics listener
//! only. They span every org, so they need a connection that sees every org:
//! `--monitoring-database-url`, a role that owns the tables or has
//! `BYPASSRLS` (the API's tenant role sees nothing outside a tenant
//! transaction). Aggregated over all orgs; one series per org only when the
//! operator opts in (`--metrics-per-org`, at most [`MAX_ORGS`] orgs), because
//! org ids are tenant identifiers and unbounded label sets hurt Prometheus.
//!
//! A scrape refreshes them at most every [`Monitoring::min_interval`] (the
//! activity counts scan the log's window): scrapes in between reuse the last
//! values. Activity counts cover the last [`Monitoring::window`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_store::{Store, SyncMetrics};
use time::OffsetDateTime;
use uuid::Uuid;

/// Most orgs given their own series with per-org labels.
pub const MAX_ORGS: i64 = 1000;

/// What the MONITORING gauges are read from, and how.
#[derive(Clone, Debug)]
pub struct Monitoring {
    store: Store,
    /// One series per org (label `org`) besides the aggregate.
    pub per_org: bool,
    /// The activity counts' window (default 24 h).
    pub window: Duration,
    /// Least time between two refreshes (default 30 s).
    pub min_interval: Duration,
    last: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

/// Lists the orgs for per-org series (bounded).
const ORGS_SQL: &str = "SELECT id FROM organization ORDER BY id LIMIT $1";

impl Monitoring {
    /// Gauges read through `store` (a role that sees every org).
    pub fn new(store: Store, per_org: bool) -> Monitoring {
        Monitoring {
            store,
            per_org,
            window: Duration::from_secs(24 * 3600),
            min_interval: Duration::from_secs(30),
            last: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Refreshes the gauges unless they were refreshed less than
    /// `min_interval` ago. Failures are logged and leave the last values.
    pub async fn refresh(&self) {
        let mut last = self.last.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_interval) {
            return;
        }
        *last = Some(Instant::now());
        let since = OffsetDateTime::now_utc() - self.window;
        match self.store.service().metrics_all_orgs(Some(since)).await {
            Ok(m) => set(&m, None),
            Err(e) => {
                tracing::warn!(error = %e, "MONITORING metrics: reading failed");
                return;
            }
        }
        if !self.per_org {
            return;
        }
        let orgs: Vec<Uuid> = match self.store.pool().get().await {
            Ok(c) => match c.query(ORGS_SQL, &[&MAX_ORGS]).await {
                Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "MONITORING metrics: listing orgs failed");
                    return;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "MONITORING metrics: no connection");
                return;
            }
        };
        for org in orgs {
            match self.store.service().metrics(org, Some(since)).await {
                Ok(m) => set(&m, Some(org)),
                Err(e) => tracing::warn!(error = %e, %org, "MONITORING metrics: reading failed"),
            }
        }
    }
}

fn set(m: &SyncMetrics, org: Option<Uuid>) {
    let org = org
        .map(|o| o.to_string())
        .unwrap_or_else(|| "all".to_owned());
    let g = |name: &'static str, v: f64| {
        metrics::gauge!(name, "org" => org.clone()).set(v);
    };
    g("sync_preview_cache_live", m.cache_live as f64);
    g("sync_preview_cache_expired", m.cache_expired as f64);
    g("sync_active_syncs", m.active_syncs as f64);
    g(
        "sync_avg_speed_items_per_min",
        m.avg_speed_items_per_min.unwrap_or(f64::NAN),
    );
    g(
        "sync_avg_duration_seconds",
        m.avg_duration_seconds.unwrap_or(f64::NAN),
    );
    g("sync_activity_entries", m.activity_total as f64);
    g("sync_activity_completed", m.activity_completed as f64);
    g("sync_activity_errors", m.activity_errors as f64);
    g(
        "sync_activity_success_rate",
        m.success_rate.unwrap_or(f64::NAN),
    );
    g("sync_activity_error_rate", m.error_rate.unwrap_or(f64::NAN));
    let o = &m.outcomes;
    for (outcome, n) in [
        ("completed", o.completed),
        ("completed_with_errors", o.completed_with_errors),
        ("failed", o.failed),
        ("cancelled", o.cancelled),
        ("other", o.other),
    ] {
        metrics::gauge!("sync_outcomes", "org" => org.clone(), "outcome" => outcome).set(n as f64);
    }
}
