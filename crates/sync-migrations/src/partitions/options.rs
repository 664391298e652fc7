//! [`PartitionOptions`]: how long partition maintenance waits for locks.

use std::time::Duration;

/// Default [`PartitionOptions::lock_timeout`]: 5 seconds.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest `months_ahead` [`ensure_partitions`](super::ensure_partitions) accepts (10 years).
pub const MAX_MONTHS_AHEAD: u32 = 120;

/// Options shared by [`ensure_partitions`](super::ensure_partitions) and the archive calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionOptions {
    /// `SET LOCAL lock_timeout` for the whole transaction: the longest wait for
    /// each lock (the partition advisory lock, then the ACCESS EXCLUSIVE lock on
    /// `sync_activity_log` and the locks DDL takes). On expiry the call fails with
    /// [`PartitionError::LockTimeout`](super::PartitionError::LockTimeout) and
    /// changes nothing. Default [`DEFAULT_LOCK_TIMEOUT`]; at least 1 ms.
    pub lock_timeout: Duration,
}

impl Default for PartitionOptions {
    fn default() -> Self {
        PartitionOptions {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

impl PartitionOptions {
    /// The defaults with another lock timeout.
    pub fn with_lock_timeout(lock_timeout: Duration) -> Self {
        PartitionOptions { lock_timeout }
    }

    pub(crate) fn lock_timeout_millis(&self) -> u128 {
        self.lock_timeout.as_millis().clamp(1, i32::MAX as u128)
    }
}
