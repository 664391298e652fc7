//! An example HTTP service (axum) over [`crate::api`], in the tenant scope.
//!
//! Routes:
//! - `GET  /api/v1/sync/preview/{sync_id}` — the newest unexpired cached delta;
//! - `GET  /api/v1/sync/progress/{sync_id}` — progress with speed and ETA;
//! - `POST /api/v1/sync/progress` — JSON [`ProgressUpdate`](crate::api::ProgressUpdate);
//! - `GET  /api/v1/sync/activity?org=&entity=&cursor=&limit=` — a page of activity.
//!
//! Success is `200` with the operation's JSON; failure is the
//! [`ApiError`](crate::api::ApiError)'s status with `{"code", "message"}`.
//!
//! **Authentication is a stand-in**: the caller's user id is read from
//! `Authorization: Bearer <user-uuid>`. A real service verifies a JWT (e.g.
//! Supabase's) and passes its `sub` to [`Store::tenant`]; nothing else changes,
//! because PostgreSQL's row-level security, not this code, decides what the user
//! may see.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use uuid::Uuid;

use crate::api::{self, ActivityQuery, ApiError, ProgressUpdate};
use crate::Store;

/// The router of the four endpoints over `store`.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/api/v1/sync/preview/{sync_id}", get(preview))
        .route("/api/v1/sync/progress/{sync_id}", get(progress))
        .route("/api/v1/sync/progress", post(update_progress))
        .route("/api/v1/sync/activity", get(activity))
        .with_state(store)
}

struct Failure(ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

type Reply<T> = Result<Json<T>, Failure>;

/// The tenant of the request: `Authorization: Bearer <user-uuid>` (see module docs).
fn tenant(store: &Store, headers: &HeaderMap) -> Result<crate::TenantScope, Failure> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer <user id>"))?;
    let user = value
        .strip_prefix("Bearer ")
        .and_then(|t| t.trim().parse::<Uuid>().ok())
        .ok_or_else(|| ApiError::unauthenticated("Authorization must be Bearer <user id>"))?;
    Ok(store.tenant(user))
}

async fn preview(
    State(store): State<Store>,
    headers: HeaderMap,
    Path(sync_id): Path<String>,
) -> Reply<crate::PreviewEntry> {
    let t = tenant(&store, &headers)?;
    Ok(Json(api::get_preview(&t, &sync_id).await?))
}

async fn progress(
    State(store): State<Store>,
    headers: HeaderMap,
    Path(sync_id): Path<String>,
) -> Reply<api::ProgressResponse> {
    let t = tenant(&store, &headers)?;
    Ok(Json(api::get_progress(&t, &sync_id).await?))
}

async fn update_progress(
    State(store): State<Store>,
    headers: HeaderMap,
    body: Result<Json<ProgressUpdate>, JsonRejection>,
) -> Reply<api::ProgressResponse> {
    let t = tenant(&store, &headers)?;
    let Json(update) =
        body.map_err(|e| ApiError::invalid(format!("bad JSON body: {}", e.body_text())))?;
    Ok(Json(api::post_progress(&t, &update).await?))
}

async fn activity(
    State(store): State<Store>,
    headers: HeaderMap,
    query: Result<Query<ActivityQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply<api::ActivityResponse> {
    let t = tenant(&store, &headers)?;
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("bad query: {}", e.body_text())))?;
    Ok(Json(api::list_activity(&t, &query).await?))
}
