//! Options shared by apply and rollback.

use std::time::Duration;

/// How a migrator behaves when it has to wait for, or cannot use, the database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MigrateOptions {
    /// Longest wait for the migration advisory lock while another replica migrates.
    /// Default 5 minutes.
    #[serde(with = "secs")]
    pub lock_wait: Duration,
    /// Longest one DDL statement of a migration or rollback waits for a table
    /// lock (`lock_timeout` on the migrating session, default 5 s). When it runs
    /// out, the migration's transaction is rolled back (so the sessions queued
    /// behind its lock request go on) and retried until `lock_wait` has passed in
    /// all; then [`Error::DdlLockTimeout`](crate::Error::DdlLockTimeout).
    #[serde(with = "secs")]
    pub ddl_lock_timeout: Duration,
    /// Refuse to run through a transaction-mode pooler (default `true`): the
    /// probe in [`refuse_transaction_pooler`](sync_connect::pooler::refuse_transaction_pooler)
    /// runs first. Turning it off is dangerous: behind a transaction-mode pooler
    /// the migration lock protects nothing and replicas may apply concurrently.
    pub refuse_pooler: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            lock_wait: Duration::from_secs(300),
            ddl_lock_timeout: Duration::from_secs(5),
            refuse_pooler: true,
        }
    }
}

mod secs {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let secs: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_secs(secs))
    }
}
