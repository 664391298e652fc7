//! The read endpoints the dashboard needs beyond the spec's four: the org's
//! active and recent syncs, and the MONITORING metrics with a small series.

use time::OffsetDateTime;

use super::endpoints::page_limit;
use super::{ApiError, ProgressResponse};
use crate::{ActivitySeries, SyncMetrics, TenantScope};

/// Page size of [`list_recent`] when the query names none.
pub const DEFAULT_RECENT_LIMIT: u32 = 20;
/// Window of [`get_metrics`] when the query names none: the last 24 hours.
pub const DEFAULT_METRICS_WINDOW_SECONDS: i64 = 24 * 3600;
/// Bucket of [`get_metrics`]' series when the query names none: one hour.
pub const DEFAULT_METRICS_BUCKET_SECONDS: i64 = 3600;
/// Longest window [`get_metrics`] accepts: 31 days.
pub const MAX_METRICS_WINDOW_SECONDS: i64 = 31 * 24 * 3600;

/// Answer of `GET /api/v1/sync/active` and `GET /api/v1/sync/recent`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SyncList {
    /// The syncs, each exactly as `GET /api/v1/sync/progress/{syncId}` shows it.
    pub syncs: Vec<ProgressResponse>,
}

/// Query of `GET /api/v1/sync/recent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct RecentQuery {
    /// `limit`: 1 to [`crate::validate::MAX_PAGE_SIZE`]; default [`DEFAULT_RECENT_LIMIT`].
    pub limit: Option<String>,
}

/// Query of `GET /api/v1/sync/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct MetricsQuery {
    /// `window_seconds`: how far back the activity counts and the series go,
    /// [`crate::MIN_BUCKET_SECONDS`] to [`MAX_METRICS_WINDOW_SECONDS`]; default
    /// [`DEFAULT_METRICS_WINDOW_SECONDS`].
    pub window_seconds: Option<String>,
    /// `bucket_seconds`: width of the series' buckets, at least
    /// [`crate::MIN_BUCKET_SECONDS`], at most [`crate::MAX_SERIES_BUCKETS`]` - 1`
    /// buckets per window; default [`DEFAULT_METRICS_BUCKET_SECONDS`] (or the
    /// window / 24 when that is wider).
    pub bucket_seconds: Option<String>,
}

/// Answer of `GET /api/v1/sync/metrics`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricsResponse {
    /// Start of the window (`now - window_seconds`): the activity counts and
    /// rates of `metrics` and the series cover `created_at >= since`; the cache
    /// and progress figures are current.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// The window, in seconds.
    pub window_seconds: i64,
    /// The spec's MONITORING figures for the user's org ([`TenantScope::metrics`]).
    pub metrics: SyncMetrics,
    /// Entries, errors and items per bucket ([`TenantScope::activity_series`]).
    pub series: ActivitySeries,
}

/// `GET /api/v1/sync/active`: the org's running syncs, most recently
/// updated first ([`TenantScope::list_active_syncs`]).
///
/// # Errors
/// 403 for a user without an org; 503 when the database is unavailable.
pub async fn list_active(tenant: &TenantScope) -> Result<SyncList, ApiError> {
    let syncs = tenant.list_active_syncs().await?;
    Ok(SyncList {
        syncs: syncs.into_iter().map(ProgressResponse::from).collect(),
    })
}

/// `GET /api/v1/sync/recent?limit=`: the org's most recently started syncs,
/// finished or not, newest first ([`TenantScope::list_recent_syncs`]); each
/// carries its `status` (the outcome) and `elapsed_seconds` (frozen at the
/// end: the duration).
///
/// # Errors
/// 400 for a limit outside 1..=1000; 403 for a user without an org.
pub async fn list_recent(tenant: &TenantScope, query: &RecentQuery) -> Result<SyncList, ApiError> {
    let limit = page_limit(query.limit.as_deref(), DEFAULT_RECENT_LIMIT)?;
    let syncs = tenant.list_recent_syncs(limit).await?;
    Ok(SyncList {
        syncs: syncs.into_iter().map(ProgressResponse::from).collect(),
    })
}

fn seconds(name: &str, text: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    text.parse::<i64>()
        .ok()
        .filter(|n| (crate::MIN_BUCKET_SECONDS..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{name} must be a whole number of seconds from {} to {max}",
                crate::MIN_BUCKET_SECONDS
            ))
        })
}

/// `GET /api/v1/sync/metrics?window_seconds=&bucket_seconds=`: the MONITORING
/// metrics of the user's org over the window, and the series of the window.
/// Two statements (two tenant transactions), so the series and the counts may
/// differ by what was logged between them.
///
/// # Errors
/// 400 for a window or bucket out of range or more than
/// [`crate::MAX_SERIES_BUCKETS`]` - 1` buckets; 403 for a user without an org.
pub async fn get_metrics(
    tenant: &TenantScope,
    query: &MetricsQuery,
) -> Result<MetricsResponse, ApiError> {
    let window = seconds(
        "window_seconds",
        query.window_seconds.as_deref(),
        DEFAULT_METRICS_WINDOW_SECONDS,
        MAX_METRICS_WINDOW_SECONDS,
    )?;
    let default_bucket = DEFAULT_METRICS_BUCKET_SECONDS
        .min(window)
        .max(window / 24)
        .max(crate::MIN_BUCKET_SECONDS);
    let bucket = seconds(
        "bucket_seconds",
        query.bucket_seconds.as_deref(),
        default_bucket,
        MAX_METRICS_WINDOW_SECONDS,
    )?;
    if window / bucket >= crate::MAX_SERIES_BUCKETS - 1 {
        return Err(ApiError::invalid(format!(
            "window_seconds / bucket_seconds must be below {}",
            crate::MAX_SERIES_BUCKETS - 1
        )));
    }
    let since = OffsetDateTime::now_utc() - time::Duration::seconds(window);
    let metrics = tenant.metrics(Some(since)).await?;
    let series = tenant.activity_series(since, bucket).await?;
    Ok(MetricsResponse {
        since,
        window_seconds: window,
        metrics,
        series,
    })
}
