//! [`ProgressReporter`]: a worker's handle on one running sync. Counting costs
//! no I/O; a background task flushes (heartbeat, counts, checkpoint) and brings
//! back cancel requests.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::enums::SyncStatus;
use crate::error::{Error, Result};
use crate::progress_types::{ProgressCounts, SyncProgress};
use crate::reporter_sql::{FlushDelta, Target};
use crate::store::{Scope, ServiceScope, TenantScope};
use crate::validate;

/// How a [`ProgressReporter`] flushes. [`ReporterConfig::default`]: every
/// 250 ms, at most 5 writes per second, stalled after 5 s without a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReporterConfig {
    /// Time between two flushes (each is also the heartbeat). It bounds what a
    /// crash of the worker loses: the increments of at most one interval (plus
    /// the flush in flight). Default 250 ms.
    pub interval: Duration,
    /// Least time between the starts of two flushes: a
    /// [`ProgressReporter::batch_done`] flushes sooner than the interval, but not
    /// sooner than this (so a sync never writes more than `1 / min_gap` times a
    /// second). At most `interval`. Default 200 ms (≤ 5 writes/s).
    pub min_gap: Duration,
    /// Stored as the sync's `stall_after`: it is stalled when running with no
    /// flush for longer. Default 5 s (20 intervals: a crowded machine or a
    /// retried flush must not flag a live worker; lower it for fast alarms).
    /// 1 ms to [`validate::MAX_STALL_AFTER`] (7 days), as the database's CHECK.
    pub stall_after: Duration,
    /// First wait before retrying a failed flush; doubled per retry up to
    /// `max_backoff`. Default 50 ms.
    pub min_backoff: Duration,
    /// Longest wait between two retries. Default 2 s.
    pub max_backoff: Duration,
    /// How long `finish` / `fail` / `cancel` (and a drop) keep retrying the
    /// last flush before giving up. Default 10 s.
    pub final_flush_timeout: Duration,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        ReporterConfig {
            interval: Duration::from_millis(250),
            min_gap: Duration::from_millis(200),
            stall_after: Duration::from_secs(5),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            final_flush_timeout: Duration::from_secs(10),
        }
    }
}

impl ReporterConfig {
    /// This config with another `interval` (and `min_gap` lowered to it if above).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self.min_gap = self.min_gap.min(interval);
        self
    }

    /// This config with another `stall_after`.
    pub fn with_stall_after(mut self, stall_after: Duration) -> Self {
        self.stall_after = stall_after;
        self
    }

    /// This config with another `min_gap`.
    pub fn with_min_gap(mut self, min_gap: Duration) -> Self {
        self.min_gap = min_gap;
        self
    }

    /// This config with another `final_flush_timeout`.
    pub fn with_final_flush_timeout(mut self, timeout: Duration) -> Self {
        self.final_flush_timeout = timeout;
        self
    }

    fn check(&self, op: &'static str) -> Result<i64> {
        let positive = |field: &str, d: Duration| {
            if d.is_zero() {
                Err(Error::invalid(op, field, "must be above zero"))
            } else {
                Ok(())
            }
        };
        positive("interval", self.interval)?;
        positive("stall_after", self.stall_after)?;
        positive("min_backoff", self.min_backoff)?;
        if self.min_gap > self.interval {
            return Err(Error::invalid(op, "min_gap", "must be at most interval"));
        }
        if self.max_backoff < self.min_backoff {
            return Err(Error::invalid(
                op,
                "max_backoff",
                "must be at least min_backoff",
            ));
        }
        if self.stall_after > validate::MAX_STALL_AFTER {
            return Err(Error::invalid(op, "stall_after", "must be 1 ms to 7 days"));
        }
        let ms = i64::try_from(self.stall_after.as_millis())
            .ok()
            .filter(|ms| *ms >= 1)
            .ok_or_else(|| Error::invalid(op, "stall_after", "must be 1 ms to 7 days"))?;
        Ok(ms)
    }
}

/// What a reporter found when it attached: the row (counts so far) and the
/// last checkpoint. After [`ServiceScope::resume_reporter`] the counts are the
/// checkpoint's.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Attached {
    /// The sync as it is now.
    pub progress: SyncProgress,
    /// The last checkpoint flushed, if any.
    pub checkpoint: Option<serde_json::Value>,
}

/// Why a reporter's [`ProgressReporter::stopped`] resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Someone asked to cancel the sync (`request_cancel`, `POST …/cancel`):
    /// stop and call [`ProgressReporter::cancel`].
    CancelRequested,
    /// The sync ended without this reporter (`cancel_sync`, `fail_sync`,
    /// `complete_sync` by someone else, or its total was reached): stop.
    SyncEnded,
    /// A flush failed for good (e.g. the counts would pass the total): stop;
    /// [`ProgressReporter::finish`] returns the error.
    Failed,
}

/// State shared by the handle and its flusher task.
#[derive(Debug)]
pub(crate) struct Shared {
    processed: AtomicU64,
    failed: AtomicU64,
    /// `-1`: unchanged since the last flush.
    current_item: AtomicI64,
    /// `-1`: unchanged since the last flush.
    batch_number: AtomicI64,
    checkpoint: Mutex<Option<(serde_json::Value, u64, u64)>>,
    pub(crate) soon: tokio::sync::Notify,
    /// Resolves when the worker should stop.
    pub(crate) stop_signal: CancellationToken,
    pub(crate) status: Mutex<Status>,
    cancel_requested: AtomicBool,
}

/// What the flusher reports back.
#[derive(Debug, Default)]
pub(crate) struct Status {
    pub(crate) flushed: Option<ProgressCounts>,
    pub(crate) flushes: u64,
    pub(crate) retries: u64,
    pub(crate) last_error: Option<String>,
    pub(crate) reason: Option<StopReason>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn new() -> Shared {
        Shared {
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            current_item: AtomicI64::new(-1),
            batch_number: AtomicI64::new(-1),
            checkpoint: Mutex::new(None),
            soon: tokio::sync::Notify::new(),
            stop_signal: CancellationToken::new(),
            status: Mutex::new(Status::default()),
            cancel_requested: AtomicBool::new(false),
        }
    }

    pub(crate) fn status(&self) -> MutexGuard<'_, Status> {
        lock(&self.status)
    }

    /// Takes everything counted since the last take, as one flush with a fresh
    /// random key (unique across processes: a resumed worker's keys never
    /// collide with its predecessor's). Counts above `i32::MAX` stay for the next.
    pub(crate) fn take(&self) -> FlushDelta {
        let mut cp = lock(&self.checkpoint);
        let checkpoint = cp.take();
        let p = self.processed.swap(0, Ordering::AcqRel);
        let f = self.failed.swap(0, Ordering::AcqRel);
        drop(cp);
        let clamp = |n: u64, counter: &AtomicU64| -> i32 {
            let max = i32::MAX as u64;
            if n > max {
                counter.fetch_add(n - max, Ordering::AcqRel);
            }
            n.min(max) as i32
        };
        let processed = clamp(p, &self.processed);
        let failed = clamp(f, &self.failed);
        let opt = |v: i64| i32::try_from(v).ok().filter(|v| *v >= 0);
        FlushDelta {
            key: (Uuid::new_v4().as_u64_pair().0 >> 1) as i64,
            processed,
            failed,
            current_item: opt(self.current_item.swap(-1, Ordering::AcqRel)),
            batch_number: opt(self.batch_number.swap(-1, Ordering::AcqRel)),
            checkpoint: checkpoint.map(|(v, cp, cf)| {
                (
                    v,
                    (cp.min(processed as u64)) as i32,
                    (cf.min(failed as u64)) as i32,
                )
            }),
        }
    }

    /// Gives back the counts of a flush that will not be sent (so that
    /// `finish` can report them as not flushed).
    pub(crate) fn give_back(&self, d: &FlushDelta) {
        self.processed
            .fetch_add(d.processed as u64, Ordering::AcqRel);
        self.failed.fetch_add(d.failed as u64, Ordering::AcqRel);
    }

    /// Counted but not (known to be) flushed.
    pub(crate) fn unflushed(&self) -> (u64, u64) {
        (
            self.processed.load(Ordering::Acquire),
            self.failed.load(Ordering::Acquire),
        )
    }

    pub(crate) fn note_cancel_requested(&self) {
        self.cancel_requested.store(true, Ordering::Release);
        self.stop(StopReason::CancelRequested);
    }

    pub(crate) fn stop(&self, reason: StopReason) {
        {
            let mut st = self.status();
            st.reason.get_or_insert(reason);
        }
        self.stop_signal.cancel();
    }
}

/// A worker's reporter for one running sync: [`inc`](Self::inc) and
/// [`set_current`](Self::set_current) only add to counters in memory (no I/O,
/// no lock); a background task flushes them to `sync_progress` every
/// [`ReporterConfig::interval`] (sooner after [`batch_done`](Self::batch_done),
/// never more often than [`ReporterConfig::min_gap`]), each flush being one
/// keyed, retry-safe statement (migration 0025's tick key, so a retried flush
/// never counts twice) that also writes the heartbeat and the checkpoint.
///
/// * **Failures**: a flush that fails retryably (server down, connection
///   lost, unknown outcome) is retried with the same key and increments, with
///   backoff, for as long as the process lives; increments made meanwhile wait
///   for the next flush. Nothing counted is lost while the process lives.
/// * **Crash**: the database has every increment flushed; a `kill -9` loses at
///   most what was counted since the last flush started, i.e. within one
///   interval plus the flush in flight. It never has more than was counted.
/// * **Cancel**: a cancel request ([`ServiceScope::request_cancel`], `POST
///   /api/v1/sync/progress/{id}/cancel`) is seen at the next flush:
///   [`is_cancelled`](Self::is_cancelled) turns true and
///   [`stopped`](Self::stopped) resolves; the worker then calls
///   [`cancel`](Self::cancel), which ends the sync `cancelled`.
/// * **Resume**: [`checkpoint`](Self::checkpoint) attaches a resume point to
///   the next flush together with the counts made before it;
///   [`ServiceScope::resume_reporter`] hands it to a restarted worker and
///   rewinds the counts to it, so the items after it are not counted twice.
/// * **End**: [`finish`](Self::finish), [`fail`](Self::fail) and
///   [`cancel`](Self::cancel) flush what is left, then end the sync. Dropping
///   the reporter without them flushes what is left in the background (best
///   effort: only while the tokio runtime runs) and leaves the sync running
///   (it turns stalled after `stall_after`).
///
/// Needs a tokio runtime (the flusher is a spawned task).
#[derive(Debug)]
pub struct ProgressReporter {
    shared: Arc<Shared>,
    /// Tells the flusher to do its last flush and end.
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    target: Target,
    attached: Attached,
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        // The flusher sees this and flushes what is left on its own.
        self.shutdown.cancel();
    }
}

impl ProgressReporter {
    async fn open(target: Target, config: ReporterConfig, rewind: bool) -> Result<Self> {
        let op = if rewind {
            "resume_reporter"
        } else {
            "attach_reporter"
        };
        let stall_ms = config.check(op)?;
        let (progress, checkpoint) = target.attach(stall_ms, rewind).await?;
        let shared = Arc::new(Shared::new());
        let shutdown = CancellationToken::new();
        if progress.cancel_requested_at.is_some() {
            shared.note_cancel_requested();
        }
        let task = tokio::spawn(crate::reporter_task::run(
            shared.clone(),
            target.clone(),
            config,
            shutdown.clone(),
        ));
        Ok(ProgressReporter {
            shared,
            shutdown,
            task: Some(task),
            target,
            attached: Attached {
                progress,
                checkpoint,
            },
        })
    }

    /// Counts `processed` items done and `failed` items failed. No I/O, no
    /// lock: two atomic additions.
    pub fn inc(&self, processed: u32, failed: u32) {
        if processed > 0 {
            self.shared
                .processed
                .fetch_add(u64::from(processed), Ordering::Relaxed);
        }
        if failed > 0 {
            self.shared
                .failed
                .fetch_add(u64::from(failed), Ordering::Relaxed);
        }
    }

    /// Sets the item being worked on (`current_item`), written at the next
    /// flush. Negative values are ignored. No I/O.
    pub fn set_current(&self, item: i32) {
        if item >= 0 {
            self.shared
                .current_item
                .store(i64::from(item), Ordering::Relaxed);
        }
    }

    /// Marks a batch boundary: sets `batch_number` (when given, `>= 0`) and asks
    /// for a flush now rather than at the end of the interval (still not sooner
    /// than [`ReporterConfig::min_gap`] after the previous one). No I/O here.
    pub fn batch_done(&self, batch_number: Option<i32>) {
        if let Some(b) = batch_number.filter(|b| *b >= 0) {
            self.shared
                .batch_number
                .store(i64::from(b), Ordering::Relaxed);
        }
        self.shared.soon.notify_one();
    }

    /// Attaches `value` as the resume point, flushed with the next flush
    /// together with the counts made **before** this call (the counts at the
    /// checkpoint). A later checkpoint before that flush replaces it. Call it
    /// after counting the items it covers.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (nothing kept) when `value` is more than
    /// [`validate::MAX_CHECKPOINT_BYTES`] of compact JSON, nested deeper than
    /// [`validate::MAX_JSON_DEPTH`], holds a NUL character, or is JSON `null`
    /// (the database refuses a null checkpoint: `None` is "no checkpoint").
    pub fn checkpoint(&self, value: serde_json::Value) -> Result<()> {
        if value.is_null() {
            return Err(Error::invalid(
                "checkpoint",
                "checkpoint",
                "must not be JSON null (pass an object, array or scalar)",
            ));
        }
        validate::json(
            "checkpoint",
            "checkpoint",
            &value,
            validate::MAX_CHECKPOINT_BYTES,
        )?;
        let mut cp = lock(&self.shared.checkpoint);
        let p = self.shared.processed.load(Ordering::Acquire);
        let f = self.shared.failed.load(Ordering::Acquire);
        *cp = Some((value, p, f));
        Ok(())
    }

    /// What the sync was when this reporter attached (counts so far, last
    /// checkpoint).
    pub fn attached(&self) -> &Attached {
        &self.attached
    }

    /// The sync id.
    pub fn sync_id(&self) -> &str {
        &self.target.sync_id
    }

    /// Whether a cancel was requested (learnt at a flush, or at attach).
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancel_requested.load(Ordering::Acquire)
    }

    /// Resolves when the worker should stop: a cancel was requested, the sync
    /// ended without this reporter, or flushing failed for good (see
    /// [`Self::stop_reason`]). Cancel-safe; use it in `tokio::select!`.
    pub async fn stopped(&self) {
        self.shared.stop_signal.cancelled().await
    }

    /// A token cancelled when [`Self::stopped`] resolves, for tasks that do
    /// not hold the reporter.
    pub fn stop_token(&self) -> CancellationToken {
        self.shared.stop_signal.clone()
    }

    /// Why [`Self::stopped`] resolved; `None` while running.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.shared.status().reason
    }

    /// The counts the database answered at the last successful flush.
    pub fn flushed(&self) -> Option<ProgressCounts> {
        self.shared.status().flushed
    }

    /// Counted but not yet known to be in the database: `(processed, failed)`.
    pub fn unflushed(&self) -> (u64, u64) {
        self.shared.unflushed()
    }

    /// Flushes that succeeded, and retries of failed ones, so far.
    pub fn flush_stats(&self) -> (u64, u64) {
        let st = self.shared.status();
        (st.flushes, st.retries)
    }

    /// The last flush error (retried or not), as text.
    pub fn last_error(&self) -> Option<String> {
        self.shared.status().last_error.clone()
    }

    /// Stops the flusher after its last flush; the error that ended it, if any.
    async fn drain(&mut self) -> Result<()> {
        self.shutdown.cancel();
        let op = "finish_reporter";
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        task.await.map_err(|e| Error::Driver {
            operation: op,
            reason: format!("the reporter's flusher task ended abnormally: {e}"),
            source: None,
        })?
    }

    async fn end(
        mut self,
        op: &'static str,
        outcome: Option<&str>,
        message: Option<&str>,
    ) -> Result<SyncProgress> {
        if let Some(m) = message {
            validate::error_message(op, m)?;
        }
        self.drain().await?;
        match self.target.finish(op, outcome, message).await {
            // Completed by its own counts (total reached) before `finish`.
            Err(e @ Error::SyncFinished { .. }) if outcome.is_none() => {
                match self.target.get().await? {
                    Some(p)
                        if matches!(
                            p.status(),
                            SyncStatus::Completed | SyncStatus::CompletedWithErrors
                        ) =>
                    {
                        Ok(p)
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    /// Flushes what is left, then completes the sync (`complete_sync`; the
    /// database logs `sync_complete`). A sync its total already completed is
    /// answered as it is.
    ///
    /// # Errors
    /// The error that ended flushing (operation `flush_progress`; the sync is
    /// left as it is, its unflushed increments — see [`Self::unflushed`] before
    /// calling — are not written), or `complete_sync`'s errors.
    pub async fn finish(self) -> Result<SyncProgress> {
        self.end("complete_sync", None, None).await
    }

    /// Flushes what is left, then marks the sync failed with `error_message`
    /// (`fail_sync`; the database logs `sync_fail`).
    ///
    /// # Errors
    /// As [`Self::finish`]; [`Error::SyncFinished`] when the sync already ended.
    pub async fn fail(self, error_message: &str) -> Result<SyncProgress> {
        self.end("fail_sync", Some("failed"), Some(error_message))
            .await
    }

    /// Flushes what is left, then ends the sync cancelled (`cancel_sync`; the
    /// database logs `sync_cancel` with `reason`). What a worker calls once
    /// [`Self::is_cancelled`].
    ///
    /// # Errors
    /// As [`Self::fail`].
    pub async fn cancel(self, reason: Option<&str>) -> Result<SyncProgress> {
        self.end("cancel_sync", Some("cancelled"), reason).await
    }

    /// Flushes what is left and detaches, leaving the sync running (for a
    /// hand-over to another worker).
    ///
    /// # Errors
    /// The error that ended flushing, if any.
    pub async fn close(mut self) -> Result<()> {
        self.drain().await
    }
}

macro_rules! reporter_api {
    ($scope_ty:ty, $doc_scope:literal, |$s:ident| $scope:expr, $( $org:ident : $org_ty:ty )?) => {
        impl $scope_ty {
            /// Attaches a [`ProgressReporter`] to a running sync (e.g. right
            /// after `start_sync`), keeping its counts: heartbeat now, the
            /// config's `stall_after` stored, the last checkpoint in
            /// [`ProgressReporter::attached`]. Spawns the flusher (needs a
            /// tokio runtime).
            ///
            /// SQL: `UPDATE sync_progress SET heartbeat_at = now(), stall_after = … WHERE … AND completed_at IS NULL RETURNING …`.
            ///
            /// # Errors
            /// [`Error::InvalidInput`] for a bad config or `sync_id`;
            /// [`Error::NotFound`]; [`Error::SyncFinished`];
            /// [`Error::Unavailable`] / [`Error::OutcomeUnknown`] (retry-safe).
            #[doc = $doc_scope]
            pub async fn reporter(&$s, $($org: $org_ty,)? sync_id: &str, config: ReporterConfig) -> Result<ProgressReporter> {
                let target = Target { store: $s.store.clone(), scope: $scope, sync_id: sync_id.to_owned() };
                ProgressReporter::open(target, config, false).await
            }

            /// Attaches a [`ProgressReporter`] for a **restarted** worker: as
            /// `reporter`, and rewinds the counts to those of the last
            /// checkpoint (0 / 0 without one), in the same statement. Continue
            /// from [`Attached::checkpoint`]: the items after it are processed
            /// and counted again, once. The previous worker must be dead (a
            /// live one would keep flushing on top).
            ///
            /// SQL: as `reporter`, plus `processed_count = coalesce(checkpoint_processed, 0), failed_count = coalesce(checkpoint_failed, 0)`.
            ///
            /// # Errors
            /// As `reporter`.
            #[doc = $doc_scope]
            pub async fn resume_reporter(&$s, $($org: $org_ty,)? sync_id: &str, config: ReporterConfig) -> Result<ProgressReporter> {
                let target = Target { store: $s.store.clone(), scope: $scope, sync_id: sync_id.to_owned() };
                ProgressReporter::open(target, config, true).await
            }
        }
    };
}

reporter_api!(ServiceScope, "\n\nService scope: for the org named by `org`.", |self| Scope::Service(Some(org)), org: Uuid);
reporter_api!(
    TenantScope,
    "\n\nTenant scope: the user's org, through row-level security.",
    |self| Scope::Tenant(self.user_id),
);
