//! `sync-api`: the spec's four sync endpoints as an HTTP service.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/sync/preview/{syncId}` | newest unexpired cached delta |
//! | `GET /api/v1/sync/progress/{syncId}` | progress with speed and ETA |
//! | `GET /api/v1/sync/progress/{syncId}/events` | live progress, Server-Sent Events ([`sse`]) |
//! | `POST /api/v1/sync/progress` | report increments (see [`ProgressUpdate`](sync_store::api::ProgressUpdate)) |
//! | `POST /api/v1/sync/progress/{syncId}/cancel` | ask the sync's worker to stop (it ends the sync `cancelled`) |
//! | `GET /api/v1/sync/activity?org=&entity=&sync_id=&action=&cursor=&limit=` | a page of activity |
//! | `GET /api/v1/sync/active` | the org's running syncs |
//! | `GET /api/v1/sync/recent?limit=` | the org's most recently started syncs |
//! | `GET /api/v1/sync/metrics?window_seconds=&bucket_seconds=` | MONITORING metrics and a series |
//! | `GET /` | the live [`dashboard`] (HTML, script and styles embedded) |
//! | `GET /healthz` | the process is up (no database) |
//! | `GET /readyz` | the database is reachable and its migrations are current |
//! | `GET /openapi.json` | the OpenAPI 3.1 document |
//!
//! Every `/api` request needs `Authorization: Bearer <JWT>` ([`auth`]); its
//! verified claims become `request.jwt.claims` of the tenant transaction, so
//! PostgreSQL's row-level security decides what the user sees. Every failure
//! is JSON `{"code", "message"}` ([`error::ErrorBody`]).
//!
//! [`router`] is an ordinary axum [`Router`]: another service can mount it
//! (`Router::nest`/`merge`) and add its own routes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRef, FromRequestParts, MatchedPath, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sync_store::api::{self, ActivityQuery, ProgressUpdate};
use sync_store::{Store, TenantScope};

pub mod auth;
pub mod dashboard;
pub mod dev_token;
pub mod error;
pub mod monitoring;
pub mod openapi;
pub mod server;
pub mod sse;

use auth::{AuthError, Verifier};
use error::Failure;

/// Largest request body accepted, in bytes (a 413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Limits of the service; [`Limits::default`] suits most deployments.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whole-request bound (body read and handler); a 503 `timeout` beyond.
    pub request_timeout: Duration,
    /// `statement_timeout` of every tenant transaction.
    pub statement_timeout: Duration,
    /// Bound on `/readyz`'s database checks.
    pub ready_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_timeout: Duration::from_secs(15),
            statement_timeout: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(3),
        }
    }
}

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    store: Store,
    verifier: Arc<Verifier>,
    limits: Limits,
    feed: sse::Feed,
}

impl AppState {
    /// The state of [`router`]: `store`'s tenant transactions get
    /// `limits.statement_timeout` (see [`Store::with_tenant_statement_timeout`]).
    /// Live progress uses a poll-only change feed with default settings;
    /// replace it with [`AppState::with_feed`].
    pub fn new(store: Store, verifier: Arc<Verifier>, limits: Limits) -> AppState {
        let store = store.with_tenant_statement_timeout(limits.statement_timeout);
        AppState {
            feed: sse::Feed::new(sse::FeedConfig::default()),
            store,
            verifier,
            limits,
        }
    }

    /// This state with `feed` as the change feed of live progress (e.g. one
    /// that LISTENs, see [`sse::FeedConfig::listen`]).
    pub fn with_feed(mut self, feed: sse::Feed) -> AppState {
        self.feed = feed;
        self
    }

    /// The change feed of live progress (for [`sse::Feed::shutdown`] and
    /// [`sse::Feed::stats`]).
    pub fn feed(&self) -> &sse::Feed {
        &self.feed
    }
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Arc<Verifier> {
        state.verifier.clone()
    }
}

/// The authenticated caller's tenant scope: extracted from exactly one
/// `Authorization: Bearer <JWT>` header, verified by the state's [`Verifier`].
/// Rejections: 401 (JSON + `WWW-Authenticate`), 400 for several headers, 503
/// when the keys cannot be fetched.
///
/// Each request gets its own store session ([`Store::session`]): its reads wait
/// for its own writes and for the position in an optional
/// [`CONSISTENCY_HEADER`] (400 `invalid_input` when that header is repeated or
/// not a token), never for other requests' writes.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantScope);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Tenant, Failure> {
        Ok(Tenant(authenticate(&parts.headers, state).await?.0))
    }
}

/// The caller's tenant scope and verified token, from exactly one
/// `Authorization: Bearer <JWT>` header (the rejections of [`Tenant`]).
pub(crate) async fn authenticate(
    headers: &axum::http::HeaderMap,
    state: &AppState,
) -> Result<(TenantScope, auth::Verified), Failure> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::Ambiguous.into());
    }
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed.into());
    }
    let verified = state.verifier.verify(token.trim()).await?;
    let session = state.store.session();
    if let Some(token) = consistency_token(headers)? {
        session.observe(token);
    }
    let scope = session
        .tenant_with_claims(verified.user, &verified.claims)
        .map_err(|_| AuthError::Refused("claims not usable".into()))?;
    Ok((scope, verified))
}

type Reply<T> = Result<Json<T>, Failure>;

/// Header carrying a read-your-writes token (a `pg_lsn` such as `0/16B3748`):
/// a write's response sets it when the service has a replica
/// (`--replica-url`); a later request that sends it back — to any instance —
/// reads at least that write, from the replica once it has replayed it, else
/// from the primary.
pub const CONSISTENCY_HEADER: &str = "x-sync-consistency";

/// The request's [`CONSISTENCY_HEADER`], if any.
fn consistency_token(
    headers: &axum::http::HeaderMap,
) -> Result<Option<sync_store::ConsistencyToken>, Failure> {
    let mut values = headers.get_all(CONSISTENCY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("{CONSISTENCY_HEADER}: {why}"),
        )
    };
    if values.next().is_some() {
        return Err(bad("send the header at most once"));
    }
    let text = value.to_str().map_err(|_| bad("not ASCII"))?;
    text.parse()
        .map(Some)
        .map_err(|e: sync_store::replica::BadToken| bad(&e.to_string()))
}

/// `body` as JSON, with the caller's [`CONSISTENCY_HEADER`] when the store has
/// a replica. A token that cannot be had (the primary did not answer) is left
/// out with a warning: the write itself succeeded.
async fn with_token<T: serde::Serialize>(state: &AppState, t: &TenantScope, body: T) -> Response {
    let mut resp = Json(body).into_response();
    if state.store.replica_pool().is_none() {
        return resp;
    }
    match t.consistency_token().await {
        Ok(Some(token)) => {
            if let Ok(v) = axum::http::HeaderValue::from_str(&token.to_string()) {
                resp.headers_mut().insert(CONSISTENCY_HEADER, v);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "no consistency token for this response"),
    }
    resp
}

fn body_failure(e: JsonRejection) -> Failure {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ),
        _ => Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("bad JSON body: {}", e.body_text()),
        ),
    }
}

async fn preview(
    Tenant(t): Tenant,
    Path(sync_id): Path<String>,
) -> Reply<sync_store::PreviewEntry> {
    Ok(Json(api::get_preview(&t, &sync_id).await?))
}

async fn progress(Tenant(t): Tenant, Path(sync_id): Path<String>) -> Reply<api::ProgressResponse> {
    Ok(Json(api::get_progress(&t, &sync_id).await?))
}

async fn cancel_progress(
    Tenant(t): Tenant,
    Path(sync_id): Path<String>,
) -> Reply<api::ProgressResponse> {
    Ok(Json(api::cancel_progress(&t, &sync_id).await?))
}

async fn update_progress(
    State(state): State<AppState>,
    Tenant(t): Tenant,
    body: Result<Json<ProgressUpdate>, JsonRejection>,
) -> Result<Response, Failure> {
    let Json(update) = body.map_err(body_failure)?;
    let progress = api::post_progress(&t, &update).await?;
    Ok(with_token(&state, &t, progress).await)
}

async fn activity(
    Tenant(t): Tenant,
    query: Result<Query<ActivityQuery>, QueryRejection>,
) -> Reply<api::ActivityResponse> {
    let Query(query) = query.map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("bad query: {}", e.body_text()),
        )
    })?;
    Ok(Json(api::list_activity(&t, &query).await?))
}

/// Parses a query string into `T`, a bad one being a 400 `invalid_input`.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    query.map(|Query(q)| q).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("bad query: {}", e.body_text()),
        )
    })
}

async fn active(Tenant(t): Tenant) -> Reply<api::SyncList> {
    Ok(Json(api::list_active(&t).await?))
}

async fn recent(
    Tenant(t): Tenant,
    q: Result<Query<api::RecentQuery>, QueryRejection>,
) -> Reply<api::SyncList> {
    Ok(Json(api::list_recent(&t, &query(q)?).await?))
}

async fn sync_metrics(
    Tenant(t): Tenant,
    q: Result<Query<api::MetricsQuery>, QueryRejection>,
) -> Reply<api::MetricsResponse> {
    Ok(Json(api::get_metrics(&t, &query(q)?).await?))
}

/// `{"status": "ok"}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or for `/readyz` failures the reason.
    pub status: String,
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, Failure> {
    let check = async {
        let mut obj = state
            .store
            .pool()
            .get()
            .await
            .map_err(|e| format!("database unreachable: {e}"))?;
        let client: &mut tokio_postgres::Client = &mut obj;
        let migrations = sync_migrations::status(client).await.map_err(|e| {
            let hint = if e.code()
                == Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE.code())
            {
                "; grant the API's login role SELECT on refinery_schema_history"
            } else {
                ""
            };
            format!("reading migration status: {e}{hint}")
        })?;
        let behind: Vec<i32> = migrations
            .iter()
            .filter(|m| !matches!(m.state, sync_migrations::MigrationState::Applied { .. }))
            .map(|m| m.version)
            .collect();
        if behind.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "migrations not current: {behind:?}; run `sync-migrate up`"
            ))
        }
    };
    let outcome = tokio::time::timeout(state.limits.ready_timeout, check)
        .await
        .unwrap_or_else(|_| Err("database checks timed out".into()));
    match outcome {
        Ok(()) => Ok(Json(Health {
            status: "ok".into(),
        })),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                reason,
            ))
        }
    }
}

async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document_json(),
    )
}

async fn not_found() -> Failure {
    Failure::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Gives bodiless error replies of the framework and the layers (405, 408,
/// 413, 415, 503 timeout…) the JSON error shape, and records the request's
/// metrics (count and latency by route and status).
async fn finish(req: Request<axum::body::Body>, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    let json_body = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    // The framework's own refusals (no body, or plain text such as a path that
    // is not UTF-8) get the JSON shape of every other error.
    let resp = if status.as_u16() >= 400 && !json_body {
        let (code, message) = match status {
            StatusCode::BAD_REQUEST => (
                "invalid_request",
                "the request's path, query or headers could not be read",
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "this route does not accept that method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ),
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
                ("timeout", "the request took too long; retry later")
            }
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            _ => ("error", "the request failed"),
        };
        let mut json = Failure::new(status, code, message).into_response();
        for (name, value) in resp.headers() {
            if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                json.headers_mut().insert(name.clone(), value.clone());
            }
        }
        json
    } else {
        resp
    };
    let labels = [
        ("route", route),
        ("method", method),
        ("status", resp.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// The service's router: the four endpoints, `/healthz`, `/readyz`,
/// `/openapi.json`, JSON 404/405/413/415 replies, the body limit
/// ([`MAX_BODY_BYTES`]), the request timeout and one log line per request.
/// No `/metrics`: see [`server::metrics_router`] for the separate listener.
pub fn router(state: AppState) -> Router {
    use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
    let timeout = state.limits.request_timeout;
    Router::new()
        .route("/api/v1/sync/preview/{sync_id}", get(preview))
        .route("/api/v1/sync/progress/{sync_id}", get(progress))
        .route("/api/v1/sync/progress/{sync_id}/events", get(sse::events))
        .route("/api/v1/sync/progress", post(update_progress))
        .route(
            "/api/v1/sync/progress/{sync_id}/cancel",
            post(cancel_progress),
        )
        .route("/api/v1/sync/activity", get(activity))
        .route("/api/v1/sync/active", get(active))
        .route("/api/v1/sync/recent", get(recent))
        .route("/api/v1/sync/metrics", get(sync_metrics))
        .merge(dashboard::pages())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .fallback(not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A Content-Length above the limit is refused before the body is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(middleware::from_fn(finish))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Millis),
                )
                .on_failure(DefaultOnFailure::new().level(tracing::Level::ERROR)),
        )
}
