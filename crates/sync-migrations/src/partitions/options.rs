//! [`PartitionOptions`]: how long partition maintenance waits for locks and for
//! another run, and which clock it goes by.

use std::time::Duration;

use time::OffsetDateTime;

/// Default [`PartitionOptions::lock_timeout`]: 5 seconds.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Default [`PartitionOptions::wait_for_other_run`]: 5 seconds (the same as the
/// lock timeout; the CLI waits much longer, services start serving sooner).
pub const DEFAULT_WAIT_FOR_OTHER_RUN: Duration = Duration::from_secs(5);

/// The largest `months_ahead` [`ensure_partitions`](super::ensure_partitions) accepts (10 years).
pub const MAX_MONTHS_AHEAD: u32 = 120;

/// Options shared by [`ensure_partitions`](super::ensure_partitions) and the archive calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionOptions {
    /// `SET LOCAL lock_timeout` for the table and DDL locks: the longest wait for
    /// each of them (the ACCESS EXCLUSIVE lock on `sync_activity_log` and the locks
    /// DDL takes). On expiry the call fails with
    /// [`PartitionError::LockTimeout`](super::PartitionError::LockTimeout) and
    /// changes nothing. Default [`DEFAULT_LOCK_TIMEOUT`]; at least 1 ms.
    pub lock_timeout: Duration,
    /// The longest wait for the partition advisory lock, i.e. for another
    /// `ensure`/`archive` (another replica, another CLI run) to finish. On expiry
    /// the call fails with [`PartitionError::LockTimeout`](super::PartitionError::LockTimeout)
    /// (step "waiting for another partition maintenance run …"), unless
    /// [`skip_if_busy`](Self::skip_if_busy) is set. Default
    /// [`DEFAULT_WAIT_FOR_OTHER_RUN`]; at least 1 ms, at most `i32::MAX` ms.
    pub wait_for_other_run: Duration,
    /// For `ensure` only: when another run still holds the advisory lock after
    /// [`wait_for_other_run`](Self::wait_for_other_run), return `Ok` with
    /// [`EnsureReport::other_run_busy`](super::EnsureReport::other_run_busy) set
    /// and nothing changed, instead of an error (what a starting service wants:
    /// the other run does the maintenance). Default `false`.
    pub skip_if_busy: bool,
    /// The instant whose UTC month is "the current month". `None` (the default):
    /// the server's clock, `now()` (the transaction's start). Tests and
    /// operators replaying a date set it explicitly.
    pub now: Option<OffsetDateTime>,
    /// `ensure`: heap blocks (8 KiB each) of the old catch-all copied per
    /// transaction while writers keep writing. Larger batches mean fewer
    /// commits, smaller ones less work lost to an interruption and shorter
    /// waits for another replica. Default [`DEFAULT_COPY_BATCH_BLOCKS`] (16 MiB);
    /// at least 1.
    pub copy_batch_blocks: u32,
}

/// Default [`PartitionOptions::copy_batch_blocks`]: 2048 blocks (16 MiB).
pub const DEFAULT_COPY_BATCH_BLOCKS: u32 = 2048;

impl Default for PartitionOptions {
    fn default() -> Self {
        PartitionOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            wait_for_other_run: DEFAULT_WAIT_FOR_OTHER_RUN,
            skip_if_busy: false,
            now: None,
            copy_batch_blocks: DEFAULT_COPY_BATCH_BLOCKS,
        }
    }
}

impl PartitionOptions {
    /// The defaults with another lock timeout (used for the table locks and,
    /// like before, for the wait for another run).
    pub fn with_lock_timeout(lock_timeout: Duration) -> Self {
        PartitionOptions {
            lock_timeout,
            wait_for_other_run: lock_timeout,
            ..PartitionOptions::default()
        }
    }

    /// These options with another [`wait_for_other_run`](Self::wait_for_other_run).
    pub fn with_wait_for_other_run(mut self, wait: Duration) -> Self {
        self.wait_for_other_run = wait;
        self
    }

    /// These options with [`skip_if_busy`](Self::skip_if_busy) set to `skip`.
    pub fn with_skip_if_busy(mut self, skip: bool) -> Self {
        self.skip_if_busy = skip;
        self
    }

    /// These options going by `now` instead of the server's clock.
    pub fn with_now(mut self, now: OffsetDateTime) -> Self {
        self.now = Some(now);
        self
    }

    /// These options copying `blocks` heap blocks per transaction (see
    /// [`copy_batch_blocks`](Self::copy_batch_blocks)).
    pub fn with_copy_batch_blocks(mut self, blocks: u32) -> Self {
        self.copy_batch_blocks = blocks;
        self
    }

    pub(crate) fn copy_batch_blocks(&self) -> i64 {
        i64::from(self.copy_batch_blocks.max(1))
    }

    pub(crate) fn lock_timeout_millis(&self) -> i64 {
        millis(self.lock_timeout)
    }

    pub(crate) fn wait_for_other_run_millis(&self) -> i64 {
        millis(self.wait_for_other_run)
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().clamp(1, i32::MAX as u128) as i64
}
