//! The flusher task of a [`crate::ProgressReporter`]: one flush at a time, every
//! interval (sooner on request, never sooner than `min_gap`), retried with
//! backoff under the same key until it is known to be applied.

use std::sync::Arc;

use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::reporter::{ReporterConfig, Shared, StopReason};
use crate::reporter_sql::{FlushAnswer, FlushDelta, Target};

/// Runs until `shutdown` is cancelled (then flushes what is left, retrying up
/// to `final_flush_timeout`), the sync ends, or a flush fails for good.
pub(crate) async fn run(
    shared: Arc<Shared>,
    target: Target,
    cfg: ReporterConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    // The attach statement was the first heartbeat.
    let mut last_start = Instant::now();
    let mut deadline: Option<Instant> = None;
    let mut final_sent = false;
    loop {
        if !shutdown.is_cancelled() {
            tokio::select! {
                _ = sleep_until(last_start + cfg.interval) => {}
                _ = shared.soon.notified() => {
                    tokio::select! {
                        _ = sleep_until(last_start + cfg.min_gap) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        }
        let stopping = shutdown.is_cancelled();
        last_start = Instant::now();
        let d = shared.take();
        if stopping && final_sent && d.is_empty() {
            return Ok(());
        }
        match deliver(&shared, &target, &cfg, &shutdown, &mut deadline, &d).await {
            Ok(a) => {
                {
                    let mut st = shared.status();
                    st.flushed = Some(a.counts);
                    st.flushes += 1;
                }
                if a.cancel_requested {
                    shared.note_cancel_requested();
                }
                if a.counts.completed_at.is_some() {
                    // Its total was reached: the sync takes no more ticks.
                    shared.stop(StopReason::SyncEnded);
                    return Ok(());
                }
                final_sent |= stopping;
            }
            Err(e) => {
                shared.give_back(&d);
                shared.status().last_error = Some(e.to_string());
                if matches!(e, Error::SyncFinished { .. }) {
                    shared.stop(StopReason::SyncEnded);
                    return Ok(());
                }
                tracing::error!(sync_id = %target.sync_id, error = %e, "progress flush failed for good");
                shared.stop(StopReason::Failed);
                return Err(e);
            }
        }
    }
}

/// Sends `d` until it is applied (or known applied), retrying retryable
/// failures with the same key; once shutting down, only until `deadline`.
async fn deliver(
    shared: &Shared,
    target: &Target,
    cfg: &ReporterConfig,
    shutdown: &CancellationToken,
    deadline: &mut Option<Instant>,
    d: &FlushDelta,
) -> Result<FlushAnswer> {
    let mut backoff = cfg.min_backoff;
    loop {
        let e = match target.flush(d).await {
            Ok(a) => return Ok(a),
            Err(e) if e.is_retryable() => e,
            Err(e) => return Err(e),
        };
        {
            let mut st = shared.status();
            st.retries += 1;
            st.last_error = Some(e.to_string());
        }
        tracing::warn!(sync_id = %target.sync_id, error = %e, "progress flush failed; retrying");
        if shutdown.is_cancelled() {
            let end = *deadline.get_or_insert_with(|| Instant::now() + cfg.final_flush_timeout);
            if Instant::now() + backoff > end {
                return Err(e);
            }
            sleep(backoff).await;
        } else {
            tokio::select! {
                _ = sleep(backoff) => {}
                // Shutting down: the deadline starts now.
                _ = shutdown.cancelled() => {}
            }
        }
        backoff = (backoff * 2).min(cfg.max_backoff);
    }
}
