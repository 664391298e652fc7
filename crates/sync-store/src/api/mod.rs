//! The spec's four API endpoints as typed operations over a [`TenantScope`].
//!
//! | endpoint | operation | success |
//! |---|---|---|
//! | `GET /api/v1/sync/preview/{syncId}` | [`get_preview`] | [`PreviewEntry`] |
//! | `GET /api/v1/sync/progress/{syncId}` | [`get_progress`] | [`ProgressResponse`] |
//! | `POST /api/v1/sync/progress` | [`post_progress`] with [`ProgressUpdate`] | [`ProgressResponse`] |
//! | `POST /api/v1/sync/progress/{syncId}/cancel` | [`cancel_progress`] | [`ProgressResponse`] |
//! | `GET /api/v1/sync/activity?org=&entity=&sync_id=&action=&cursor=&limit=` | [`list_activity`] with [`ActivityQuery`] | [`ActivityResponse`] |
//! | `GET /api/v1/sync/active` | [`list_active`] | [`SyncList`] |
//! | `GET /api/v1/sync/recent?limit=` | [`list_recent`] with [`RecentQuery`] | [`SyncList`] |
//! | `GET /api/v1/sync/metrics?window_seconds=&bucket_seconds=` | [`get_metrics`] with [`MetricsQuery`] | [`MetricsResponse`] |
//!
//! Every operation runs in the tenant scope, so PostgreSQL's row-level security
//! decides what the user sees: another org's sync id is simply not found (404),
//! never someone else's data. Failures are an [`ApiError`]: an HTTP status, a
//! stable `code` and a message that never carries SQL or server text. These types
//! do not depend on any web framework; the `sync-api` crate serves them over
//! HTTP (JWT auth, timeouts, OpenAPI).
//!
//! [`TenantScope`]: crate::TenantScope
//! [`PreviewEntry`]: crate::PreviewEntry

mod dashboard;
mod endpoints;
mod error;

pub use dashboard::{
    get_metrics, list_active, list_recent, MetricsQuery, MetricsResponse, RecentQuery, SyncList,
    DEFAULT_METRICS_BUCKET_SECONDS, DEFAULT_METRICS_WINDOW_SECONDS, DEFAULT_RECENT_LIMIT,
    MAX_METRICS_WINDOW_SECONDS,
};
pub use endpoints::{
    cancel_progress, get_preview, get_progress, list_activity, post_progress, ActivityQuery,
    ActivityResponse, ProgressResponse, ProgressUpdate, DEFAULT_ACTIVITY_LIMIT,
};
pub use error::ApiError;
