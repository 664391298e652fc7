//! The OpenAPI 3.1 document served at `/openapi.json`, generated with utoipa.
//!
//! The schemas below describe the JSON that `sync_store`'s types serialise to
//! (`sync_store` itself stays free of utoipa); `tests/tests/api_contract.rs`
//! and `scripts/api-fuzz.sh` (schemathesis) check replies against them.
#![allow(dead_code)] // the path functions exist only for their annotations

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::error::ErrorBody;
use crate::Health;

/// A sync's progress (`GET`/`POST` progress).
#[derive(ToSchema)]
#[schema(as = ProgressResponse)]
struct ProgressResponseDoc {
    id: uuid::Uuid,
    org_id: uuid::Uuid,
    sync_id: String,
    job_id: Option<String>,
    /// A `sync_entity_type` label, e.g. `product`.
    entity_type: String,
    current_item: i32,
    total_items: Option<i32>,
    processed_count: i32,
    failed_count: i32,
    speed_items_per_min: Option<f64>,
    eta_seconds: Option<i32>,
    elapsed_seconds: i32,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(format = DateTime)]
    completed_at: Option<String>,
    source_system: Option<String>,
    batch_number: Option<i32>,
    metadata: serde_json::Value,
    initiated_by: Option<uuid::Uuid>,
    /// Last flush of the worker's progress reporter (null: none attached).
    #[schema(format = DateTime)]
    heartbeat_at: Option<String>,
    /// When a cancel was requested (null: not requested).
    #[schema(format = DateTime)]
    cancel_requested_at: Option<String>,
    /// Running, and no heartbeat for longer than the sync's stall threshold:
    /// its worker is probably dead or stuck (computed at read time).
    stalled: bool,
    /// `in_progress`, `completed`, `completed_with_errors`, `failed` or `cancelled`.
    status: String,
}

/// Increments reported by a worker. `processed` and `failed` are **added**
/// (default 0); `current_item` replaces the stored value. `batch_number` names
/// the batch: a retry of the same batch after an unknown outcome (timeout,
/// dropped connection) must send the same `batch_number`: a report is applied
/// once per `(sync, batch_number)`, a repeat changes nothing and answers the
/// current progress. Without `batch_number` every request is applied.
#[derive(ToSchema)]
#[schema(as = ProgressUpdate)]
#[allow(unused)]
struct ProgressUpdateDoc {
    sync_id: String,
    #[schema(minimum = 0)]
    processed: Option<i32>,
    #[schema(minimum = 0)]
    failed: Option<i32>,
    current_item: Option<i32>,
    batch_number: Option<i32>,
}

/// A cached preview delta.
#[derive(ToSchema)]
#[schema(as = PreviewEntry)]
struct PreviewEntryDoc {
    id: uuid::Uuid,
    org_id: uuid::Uuid,
    /// A `sync_type` label, e.g. `woocommerce`.
    sync_type: String,
    sync_id: String,
    delta_json: serde_json::Value,
    #[schema(format = DateTime)]
    computed_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    computed_by: Option<uuid::Uuid>,
    cache_key: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
}

/// One activity log row.
#[derive(ToSchema)]
#[schema(as = ActivityEntry)]
struct ActivityEntryDoc {
    id: uuid::Uuid,
    org_id: uuid::Uuid,
    sync_id: Option<String>,
    entity_type: Option<String>,
    action: String,
    status: String,
    record_count: i32,
    duration_seconds: Option<f64>,
    error_message: Option<String>,
    user_id: Option<uuid::Uuid>,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A page of activity, newest first.
#[derive(ToSchema)]
#[schema(as = ActivityResponse)]
struct ActivityResponseDoc {
    entries: Vec<ActivityEntryDoc>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Query of the activity listing.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct ActivityParams {
    /// Must be the user's org when given (another org is a 404).
    org: Option<String>,
    /// A `sync_entity_type` label, e.g. `product`.
    entity: Option<String>,
    /// Only this sync's entries.
    sync_id: Option<String>,
    /// A `sync_action` label, e.g. `sync_complete`.
    action: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<String>,
}

/// Syncs of the user's org (`active`, `recent`).
#[derive(ToSchema)]
#[schema(as = SyncList)]
struct SyncListDoc {
    /// Each as `GET /api/v1/sync/progress/{sync_id}` shows it.
    syncs: Vec<ProgressResponseDoc>,
}

/// How the syncs that ended in the window ended (shares sum to 100 %).
#[derive(ToSchema)]
#[schema(as = SyncOutcomes)]
struct SyncOutcomesDoc {
    ended: i64,
    completed: i64,
    completed_with_errors: i64,
    failed: i64,
    cancelled: i64,
    /// Ends with any other status.
    other: i64,
}

/// The spec's MONITORING figures of the user's org.
#[derive(ToSchema)]
#[schema(as = SyncMetrics)]
struct SyncMetricsDoc {
    cache_live: i64,
    cache_expired: i64,
    active_syncs: i64,
    avg_speed_items_per_min: Option<f64>,
    avg_duration_seconds: Option<f64>,
    activity_total: i64,
    activity_completed: i64,
    activity_errors: i64,
    /// `activity_completed / activity_total` (the spec's formula, all entries).
    success_rate: Option<f64>,
    /// `activity_errors / activity_total` (the spec's formula, all entries).
    error_rate: Option<f64>,
    outcomes: SyncOutcomesDoc,
}

/// One bucket of the series.
#[derive(ToSchema)]
#[schema(as = SeriesPoint)]
struct SeriesPointDoc {
    #[schema(format = DateTime)]
    start: String,
    /// Activity rows logged in the bucket.
    entries: i64,
    /// Of which `failed` or `completed_with_errors`.
    errors: i64,
    /// Items processed by the syncs that ended in the bucket.
    items: i64,
}

/// Buckets from the window's start to now, oldest first, empty ones included.
#[derive(ToSchema)]
#[schema(as = ActivitySeries)]
struct ActivitySeriesDoc {
    bucket_seconds: i64,
    points: Vec<SeriesPointDoc>,
}

/// MONITORING metrics over a window, with its series.
#[derive(ToSchema)]
#[schema(as = MetricsResponse)]
struct MetricsResponseDoc {
    /// Start of the window: activity counts, rates and the series cover
    /// `created_at >= since`; cache and progress figures are current.
    #[schema(format = DateTime)]
    since: String,
    window_seconds: i64,
    metrics: SyncMetricsDoc,
    series: ActivitySeriesDoc,
}

/// Query of the recent syncs.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct RecentParams {
    /// How many (default 20).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Query of the metrics.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct MetricsParams {
    /// Seconds back from now (default 86400).
    #[param(minimum = 60, maximum = 2678400)]
    window_seconds: Option<i64>,
    /// Bucket width in seconds, fewer than 498 buckets per window (else a
    /// 400); default 3600, or window / 24 when wider.
    #[param(minimum = 60, maximum = 2678400)]
    bucket_seconds: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/sync/active",
    security(("bearer" = [])),
    responses(
        (status = 200, body = SyncListDoc),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
fn active() {}

#[utoipa::path(get, path = "/api/v1/sync/recent",
    params(RecentParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = SyncListDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
fn recent() {}

#[utoipa::path(get, path = "/api/v1/sync/metrics",
    params(MetricsParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = MetricsResponseDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
fn metrics() {}

#[utoipa::path(get, path = "/api/v1/sync/preview/{sync_id}",
    params(("sync_id" = String, Path, description = "The sync")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = PreviewEntryDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
fn preview() {}

#[utoipa::path(get, path = "/api/v1/sync/progress/{sync_id}",
    params(("sync_id" = String, Path, description = "The sync")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ProgressResponseDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
fn progress() {}

#[utoipa::path(post, path = "/api/v1/sync/progress",
    request_body(content = ProgressUpdateDoc, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ProgressResponseDoc, headers(("x-sync-consistency" = String,
            description = "With --replica-url: a pg_lsn token of this write; send it back on a later read to see the write"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)))]
fn update_progress() {}

/// Asks the sync's worker to stop: sets `cancel_requested_at`; the worker
/// learns it at its next flush and ends the sync `cancelled`. Repeating it is
/// harmless. 404 for an unknown sync and for another org's alike; 409 when the
/// sync already finished.
#[utoipa::path(post, path = "/api/v1/sync/progress/{sync_id}/cancel",
    params(("sync_id" = String, Path, description = "The sync")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ProgressResponseDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
fn cancel_progress() {}

#[utoipa::path(get, path = "/api/v1/sync/activity",
    params(ActivityParams,
        ("x-sync-consistency" = Option<String>, Header,
            description = "A token from a write's response (pg_lsn text, e.g. 0/16B3748): the listing includes that write")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = ActivityResponseDoc),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
fn activity() {}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
fn readyz() {}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "sync-api", description = "Sync progress, previews and activity (migration 0024)."),
    paths(preview, progress, update_progress, cancel_progress, activity, active, recent, metrics, healthz, readyz),
    components(schemas(ErrorBody, Health)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The OpenAPI 3.1 document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// [`document`] as JSON text (built once).
///
/// # Panics
/// Never in practice: serialising the generated document cannot fail.
pub fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_json()
            .expect("the OpenAPI document serialises")
    })
    .clone()
}
