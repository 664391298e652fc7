//! The four operations and their request / response bodies.

use uuid::Uuid;

use super::ApiError;
use crate::{
    ActivityCursor, ActivityEntry, ActivityFilter, PreviewEntry, ProgressDelta, SyncAction,
    SyncEntityType, SyncProgress, SyncStatus, TenantScope,
};

/// Page size of [`list_activity`] when the query names none (the spec's `LIMIT 100`).
pub const DEFAULT_ACTIVITY_LIMIT: u32 = 100;

/// `GET /api/v1/sync/progress/{syncId}` and the answer to a `POST`: the
/// progress row, with the database-computed elapsed time, speed and ETA, and
/// its derived status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProgressResponse {
    /// The row as stored (`elapsed_seconds`, `speed_items_per_min`, `eta_seconds`
    /// are computed by the database's triggers).
    #[serde(flatten)]
    pub progress: SyncProgress,
    /// `in_progress`, `completed`, `completed_with_errors`, `failed` or `cancelled`.
    pub status: SyncStatus,
}

impl From<SyncProgress> for ProgressResponse {
    fn from(progress: SyncProgress) -> Self {
        let status = progress.status();
        ProgressResponse { progress, status }
    }
}

/// Body of `POST /api/v1/sync/progress`: increments reported by a worker.
///
/// ```json
/// {"sync_id": "woo-42", "processed": 10, "failed": 1, "current_item": 20, "batch_number": 2}
/// ```
/// `processed` and `failed` are added atomically (default 0); `current_item` and
/// `batch_number`, when present, replace the stored values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressUpdate {
    /// The sync to update.
    pub sync_id: String,
    /// Items processed since the last report.
    #[serde(default)]
    pub processed: i32,
    /// Items failed since the last report.
    #[serde(default)]
    pub failed: i32,
    /// Index of the item being worked on.
    #[serde(default)]
    pub current_item: Option<i32>,
    /// Current batch number.
    #[serde(default)]
    pub batch_number: Option<i32>,
}

/// Query of `GET /api/v1/sync/activity`: every field optional, as strings from
/// the URL, parsed by [`list_activity`] into typed values (a bad one is a 400).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ActivityQuery {
    /// `org`: must be the user's org when given (another org's id is a 404).
    pub org: Option<String>,
    /// `entity`: a `sync_entity_type` label, e.g. `product`.
    pub entity: Option<String>,
    /// `sync_id`: only this sync's entries.
    pub sync_id: Option<String>,
    /// `action`: a `sync_action` label, e.g. `sync_complete`.
    pub action: Option<String>,
    /// `cursor`: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `limit`: 1 to [`crate::validate::MAX_PAGE_SIZE`]; default [`DEFAULT_ACTIVITY_LIMIT`].
    pub limit: Option<String>,
}

/// Answer of `GET /api/v1/sync/activity`: newest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActivityResponse {
    /// The entries, newest first.
    pub entries: Vec<ActivityEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/sync/preview/{syncId}`: the newest unexpired cached delta of
/// `sync_id` in the user's org ([`TenantScope::get_preview_by_sync_id`]).
/// 404 when there is none (or it expired, or it belongs to another org).
pub async fn get_preview(tenant: &TenantScope, sync_id: &str) -> Result<PreviewEntry, ApiError> {
    tenant
        .get_preview_by_sync_id(sync_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cached preview for sync {sync_id:?}")))
}

/// `GET /api/v1/sync/progress/{syncId}` ([`TenantScope::get_sync`]); 404 when
/// the user's org has no such sync.
pub async fn get_progress(
    tenant: &TenantScope,
    sync_id: &str,
) -> Result<ProgressResponse, ApiError> {
    tenant
        .get_sync(sync_id)
        .await?
        .map(ProgressResponse::from)
        .ok_or_else(|| ApiError::not_found(format!("no sync {sync_id:?}")))
}

/// `POST /api/v1/sync/progress/{syncId}/cancel`: asks the sync's worker to
/// stop ([`TenantScope::request_cancel`]); it learns it at its next flush and
/// ends the sync `cancelled`. Answers the row with `cancel_requested_at` set
/// (the sync still runs until the worker stops). Repeating it is harmless.
/// 404 when the user's org has no such sync (another org's id alike), 409 when
/// it already finished.
pub async fn cancel_progress(
    tenant: &TenantScope,
    sync_id: &str,
) -> Result<ProgressResponse, ApiError> {
    Ok(tenant.request_cancel(sync_id).await?.into())
}

/// `POST /api/v1/sync/progress`: an increment. With `batch_number` it is
/// idempotent per `(sync, batch_number)`: [`TenantScope::report_progress_keyed`]
/// with the batch number as the key, then [`TenantScope::get_sync`] for the
/// answer (two round trips), so a client's retry of the same batch never counts
/// twice (the repeat changes nothing and answers the current row). Without
/// it, [`TenantScope::report_progress`] (one atomic UPDATE answered with the row
/// it returns; one round trip), which a retry would apply again.
/// 404 for an unknown sync, 409 for a finished one, 400 for negative counts or
/// counts beyond the total.
pub async fn post_progress(
    tenant: &TenantScope,
    update: &ProgressUpdate,
) -> Result<ProgressResponse, ApiError> {
    let delta = ProgressDelta {
        processed: update.processed,
        failed: update.failed,
        current_item: update.current_item,
        batch_number: update.batch_number,
    };
    let Some(batch) = update.batch_number else {
        return Ok(tenant
            .report_progress_row(&update.sync_id, &delta)
            .await?
            .into());
    };
    tenant
        .report_progress_keyed(&update.sync_id, i64::from(batch), &delta)
        .await?;
    tenant
        .get_sync(&update.sync_id)
        .await?
        .map(ProgressResponse::from)
        .ok_or_else(|| ApiError::not_found(format!("no sync {:?}", update.sync_id)))
}

/// `GET /api/v1/sync/activity?org=&entity=&sync_id=&action=&cursor=&limit=`: one page of the
/// user's org's activity log ([`TenantScope::list_activity`]), newest first.
/// `org`, when given, must be the user's org: another org's id is a 404.
pub async fn list_activity(
    tenant: &TenantScope,
    query: &ActivityQuery,
) -> Result<ActivityResponse, ApiError> {
    let entity = query
        .entity
        .as_deref()
        .map(str::parse::<SyncEntityType>)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let action = query
        .action
        .as_deref()
        .map(str::parse::<SyncAction>)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let after = query
        .cursor
        .as_deref()
        .map(str::parse::<ActivityCursor>)
        .transpose()
        .map_err(|_| ApiError::invalid("cursor is not a cursor returned by this API"))?;
    let limit = page_limit(query.limit.as_deref(), DEFAULT_ACTIVITY_LIMIT)?;
    let org: Option<Uuid> = query
        .org
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|_| ApiError::invalid("org must be a UUID"))?;
    let filter = ActivityFilter {
        entity_type: entity,
        action,
        sync_id: query.sync_id.clone(),
        ..ActivityFilter::default()
    };
    let page = tenant.list_activity(&filter, after, limit).await?;
    // The page's entries carry the user's org; only an empty page needs the
    // org looked up (a second round trip) to tell "none yet" from "not yours".
    if let Some(org) = org {
        let own = match page.entries.first() {
            Some(entry) => entry.org_id,
            None => tenant.org_id().await?,
        };
        if org != own {
            return Err(ApiError::not_found("no such organization"));
        }
    }
    Ok(ActivityResponse {
        next_cursor: page.next.map(|c| c.to_string()),
        entries: page.entries,
    })
}

/// The `limit` query parameter: `default` when absent, else a whole number
/// from 1 to [`MAX_PAGE_SIZE`](crate::validate::MAX_PAGE_SIZE).
///
/// # Errors
/// 400 for anything else.
pub(crate) fn page_limit(text: Option<&str>, default: u32) -> Result<u32, ApiError> {
    match text {
        None => Ok(default),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=crate::validate::MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "limit must be a whole number from 1 to {}",
                    crate::validate::MAX_PAGE_SIZE
                ))
            }),
    }
}
