//! Live progress: `GET /api/v1/sync/progress/{syncId}/events`, Server-Sent
//! Events.
//!
//! | what | how |
//! |---|---|
//! | events | `event: progress`, `id: <n>`, `data: <the JSON of GET /api/v1/sync/progress/{syncId}>`; one when the stream opens, then one whenever the sync changes (bursts coalesce into the newest state) |
//! | end | after a final `progress` event once the sync is finished; when the token's `exp` passes (no event); when the sync can no longer be read (no event); on server shutdown (the current state as a final event) |
//! | ids | `updated_at` of the row in µs since the epoch, raised when needed so they only grow per sync |
//! | `Last-Event-ID` | resume: the current state is sent at once unless its id is the one given; a finished sync whose final id is given answers 204 (EventSource then stops reconnecting) |
//! | auth | checked once, in the caller's tenant scope, when it subscribes (and resumes); an unknown sync and another org's answer the same 404 |
//! | heartbeats | the comment `: hb` on a stream idle for [`FeedConfig::heartbeat`] (15 s) |
//! | slow clients | more than [`FeedConfig::max_pending_events`] events queued: the stream is closed (the client reconnects with `Last-Event-ID`) |
//!
//! Database work does not grow with the number of subscribers: see [`Feed`].

mod feed;
mod listen;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use sync_store::api;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use feed::{Feed, FeedConfig, FeedStats, ListenTarget};

use crate::error::Failure;
use crate::AppState;
use feed::{End, Snapshot, Subscription};

/// When the token whose claims are `claims` expires, as an [`Instant`]
/// (`exp` is required by the verifier; a token without one ends at once).
fn expiry(claims: &serde_json::Value) -> Instant {
    let exp = claims
        .get("exp")
        .and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f as i64)))
        .unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let left = u64::try_from(exp.saturating_sub(now)).unwrap_or(0);
    // Bounded so that Instant arithmetic cannot overflow on absurd claims.
    Instant::now() + Duration::from_secs(left.min(366 * 24 * 3600))
}

fn event(snapshot: &Snapshot) -> Event {
    Event::default()
        .event("progress")
        .id(snapshot.id.to_string())
        .data(&*snapshot.json)
}

/// `GET /api/v1/sync/progress/{syncId}/events`.
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(sync_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let feed = state.feed().clone();
    if feed.is_closing() {
        return Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down; reconnect in a moment",
        ));
    }
    let (scope, verified) = crate::authenticate(&headers, &state).await?;
    // The authorisation: the caller reads the sync in its own tenant scope
    // (another org's sync is the same 404 as a missing one).
    let progress = api::get_progress(&scope, &sync_id).await?;
    let last_id: Option<i64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let expires = expiry(&verified.claims);
    let mut sub = feed.subscribe(scope, &progress, expires).map_err(|_| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many live-progress subscribers; retry later",
        )
    })?;
    let first = sub.rx.borrow_and_update().clone();
    if first.end.is_some() && last_id == Some(first.id) {
        // Resuming a stream that already got its final event.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let config = feed.config();
    let (tx, rx) = mpsc::channel::<Event>(config.max_pending_events.max(1));
    let dropped = Arc::new(AtomicBool::new(false));
    tokio::spawn(forward(sub, first, tx, last_id, expires, dropped.clone()));
    let stream = futures_util::stream::unfold((rx, dropped), |(mut rx, dropped)| async move {
        let next = rx.recv().await;
        if dropped.load(Ordering::SeqCst) {
            // Too slow: abort the response rather than flush a backlog.
            return Some((
                Err(std::io::Error::other("subscriber too slow; dropped")),
                (rx, dropped),
            ));
        }
        next.map(|e| (Ok::<Event, std::io::Error>(e), (rx, dropped)))
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(config.heartbeat).text("hb"))
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    Ok(resp)
}

/// Moves one subscriber's snapshots into its bounded queue until the stream
/// ends (finished, gone, token expired, client gone, too slow, shutdown).
async fn forward(
    mut sub: Subscription,
    first: Arc<Snapshot>,
    tx: mpsc::Sender<Event>,
    last_id: Option<i64>,
    expires: Instant,
    dropped: Arc<AtomicBool>,
) {
    if first.end == Some(End::Gone) {
        return;
    }
    if last_id != Some(first.id) && tx.try_send(event(&first)).is_err() {
        return;
    }
    if first.end.is_some() {
        return;
    }
    let mut closing = sub.closing.clone();
    loop {
        tokio::select! {
            biased;
            () = tx.closed() => return,
            _ = closing.wait_for(|c| *c) => {
                let last = sub.rx.borrow().clone();
                if last.end != Some(End::Gone) {
                    let _ = tx.try_send(event(&last));
                }
                return;
            }
            () = tokio::time::sleep_until(expires) => {
                tracing::debug!("live progress: token expired; closing the stream");
                return;
            }
            changed = sub.rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = sub.rx.borrow_and_update().clone();
                if snapshot.end == Some(End::Gone) {
                    return;
                }
                match tx.try_send(event(&snapshot)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::info!("live progress: subscriber too slow; dropping it");
                        sub.count_slow_drop();
                        dropped.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
                if snapshot.end.is_some() {
                    return;
                }
            }
        }
    }
}
