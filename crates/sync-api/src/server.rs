//! Serving: HTTP/1.1 with a header-read timeout, graceful shutdown, and the
//! separate metrics listener.

use std::future::Future;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and waits up to `drain` for requests in flight.
///
/// A connection must deliver a request's headers within `header_read_timeout`
/// (also the idle limit between keep-alive requests), so slow or silent
/// clients cannot hold connections open. Writes use [`DEFAULT_WRITE_TIMEOUT`]
/// (see [`serve_with`]).
///
/// # Errors
/// None in practice: accept errors (e.g. out of file descriptors) are logged
/// and retried after a short pause; the `Result` is kept for future use.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(
        listener,
        app,
        ServeOptions {
            header_read_timeout,
            drain,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        },
        shutdown,
    )
    .await
}

/// A connection whose writes make no progress for this long is closed (a
/// client that stopped reading, e.g. a stalled event stream).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bounds of [`serve_with`].
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Reading a request's headers, and idle keep-alive.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub drain: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
}

/// [`serve`] with every bound given, including the write timeout.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let ServeOptions {
        header_read_timeout,
        drain,
        write_timeout,
    } = options;
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = TowerToHyperService::new(app.clone());
                let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
                stream.set_write_timeout(Some(write_timeout));
                let conn = builder.serve_connection(TokioIo::new(Box::pin(stream)), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; draining requests in flight");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "some connections were still busy after the drain period"
        );
    }
    Ok(())
}

/// Sets the replica counters from the store's running totals.
fn record_replica_stats(stats: &sync_store::ReplicaStats) {
    metrics::counter!("db_replica_reads_total").absolute(stats.replica_reads);
    metrics::counter!("db_replica_fresh_reads_total").absolute(stats.fresh_reads);
    metrics::counter!("db_replica_waits_total").absolute(stats.waited);
    for (reason, n) in [
        ("lag", stats.fallback_lag),
        ("unavailable", stats.fallback_unavailable),
        ("recovery_conflict", stats.fallback_conflict),
        ("timeout", stats.fallback_timeout),
        ("error", stats.fallback_error),
        ("tenant_empty", stats.fallback_empty),
    ] {
        metrics::counter!("db_replica_fallbacks_total", "reason" => reason).absolute(n);
    }
}

/// Completes on SIGTERM or SIGINT.
///
/// # Panics
/// When the signal handlers cannot be installed (no Tokio runtime with signals).
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// The metrics router, for a listener of its own (`--metrics-bind`), never
/// the public one: `GET /metrics` in Prometheus text format, with the pool's
/// size and free connections sampled at each scrape, and the spec's
/// MONITORING gauges when `monitoring` is given (see [`crate::monitoring`]).
pub fn metrics_router(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    pool: deadpool_postgres::Pool,
    monitoring: Option<crate::monitoring::Monitoring>,
) -> Router {
    metrics_router_with_store(handle, sync_store::Store::new(pool), monitoring)
}

/// [`metrics_router`] for a store, adding its replica counters when it has a
/// replica ([`sync_store::ReplicaStats`]): `db_replica_reads_total`,
/// `db_replica_fresh_reads_total`, `db_replica_waits_total` and
/// `db_replica_fallbacks_total{reason=lag|unavailable|recovery_conflict|timeout|error|tenant_empty}`
/// (reads answered by the primary instead), and the replica pool's gauges
/// `db_replica_pool_size` / `db_replica_pool_available`.
pub fn metrics_router_with_store(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    store: sync_store::Store,
    monitoring: Option<crate::monitoring::Monitoring>,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let store = store.clone();
            let monitoring = monitoring.clone();
            async move {
                if let Some(stats) = store.replica_stats() {
                    record_replica_stats(&stats);
                }
                if let Some(replica) = store.replica_pool() {
                    let status = replica.status();
                    metrics::gauge!("db_replica_pool_size").set(status.size as f64);
                    metrics::gauge!("db_replica_pool_available").set(status.available as f64);
                }
                let status = store.pool().status();
                metrics::gauge!("db_pool_size").set(status.size as f64);
                metrics::gauge!("db_pool_available").set(status.available as f64);
                metrics::gauge!("db_pool_waiting").set(status.waiting as f64);
                if let Some(m) = monitoring {
                    // Bounded: a slow database never hangs the scrape.
                    let _ = tokio::time::timeout(Duration::from_secs(10), m.refresh()).await;
                }
                handle.render()
            }
        }),
    )
}
