//! The live dashboard: one HTML page, one script and one style sheet, embedded
//! in the binary (no Node toolchain, no CDN), served with a strict
//! `Content-Security-Policy`.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (`assets/index.html`) |
//! | `GET /dashboard/app.js` | its script (`assets/app.js`) |
//! | `GET /dashboard/app.css` | its style sheet (`assets/app.css`) |
//!
//! The page reads only the JSON API, with the user's bearer token, so the
//! tenant scope (row-level security) decides what it shows: the org's active
//! syncs (`/api/v1/sync/active`, live through `/api/v1/sync/progress/{id}/events`
//! when the service has it, else `GET` progress every 2 s), recent syncs
//! (`/api/v1/sync/recent`), the MONITORING metrics and series
//! (`/api/v1/sync/metrics`), and one sync's progress, cached preview and
//! activity (`/api/v1/sync/activity?sync_id=&entity=&action=&cursor=`).
//!
//! **Token.** The page asks for the access token once (pasted, or taken by a
//! sign-in front-end), keeps it in the tab's `sessionStorage` and sends it only
//! as `Authorization: Bearer`; the live stream is read with `fetch()` and a
//! stream reader because `EventSource` cannot send that header. Nothing puts
//! the token in a URL, a cookie or a log. Behind a reverse proxy that adds the
//! `Authorization` header itself, the page works without one (it tries the API
//! without a token first). Why not an HttpOnly cookie: it would need CSRF
//! defences on the API, which today accepts only bearer tokens.
//!
//! **Security headers** on the three routes: `Content-Security-Policy:
//! default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';
//! img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`
//! (no inline script, style or handler anywhere), `X-Content-Type-Options:
//! nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`. The
//! script writes server values only with `textContent` and attributes.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::AppState;

/// The page's `Content-Security-Policy`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body)
}

async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// The page and its two assets, without the API (merged into [`crate::router`]).
pub(crate) fn pages<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(style))
}

/// The dashboard with the JSON API it reads: the whole service router
/// ([`crate::router`]: page, API, limits, timeouts, JSON errors, tracing).
/// Another service merges it with its own routes (which must not use `/`,
/// `/dashboard/…`, `/api/v1/sync/…`, `/healthz`, `/readyz`, `/openapi.json`,
/// and must not set a fallback of their own):
///
/// ```no_run
/// # async fn own() -> &'static str { "" }
/// # fn demo(state: sync_api::AppState) -> axum::Router {
/// axum::Router::new()
///     .route("/internal/ping", axum::routing::get(own))
///     .merge(sync_api::dashboard::router(state))
/// # }
/// ```
/// The page reaches its assets and the API with paths relative to itself, so
/// a reverse proxy may also publish it under a prefix it strips (`/sync/` →
/// `/`), opened with the trailing slash.
pub fn router(state: AppState) -> Router {
    crate::router(state)
}
