//! The session advisory lock that serialises migrators.
//!
//! refinery has no lock of its own: N replicas starting at once would each try
//! to apply the same migration. We take `pg_advisory_lock(MIGRATION_LOCK_KEY)` on
//! the migrating connection, bounded by `lock_timeout`, and release it on every
//! path. A connection on which the unlock could not be confirmed is never handed
//! back to a pool: the pool entry points detach the connection first and close it
//! at the end, which releases any session lock with it.

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Advisory lock key for migrate / rollback: ASCII "syncmigr" as a big-endian i64.
pub const MIGRATION_LOCK_KEY: i64 = 0x7379_6e63_6d69_6772;

/// Takes the session advisory lock `key`, waiting at most `wait`.
///
/// Runs `SET lock_timeout`, `SELECT pg_advisory_lock($1)`, `RESET lock_timeout`.
/// On timeout returns [`Error::LockTimeout`] naming the holder's backend pid.
pub async fn acquire(client: &Client, key: i64, wait: Duration) -> Result<()> {
    let millis = wait.as_millis().clamp(1, i32::MAX as u128);
    client
        .batch_execute(&format!("SET lock_timeout = {millis}"))
        .await
        .map_err(Error::db("setting lock_timeout for the migration lock"))?;
    let locked = client.execute("SELECT pg_advisory_lock($1)", &[&key]).await;
    let reset = client.batch_execute("RESET lock_timeout").await;
    match locked {
        Ok(_) => {
            reset.map_err(Error::db("resetting lock_timeout"))?;
            Ok(())
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            let holder = holder_pid(client, key)
                .await
                .map(|pid| format!(" (backend pid {pid})"))
                .unwrap_or_default();
            Err(Error::LockTimeout {
                waited_secs: wait.as_secs(),
                holder,
            })
        }
        Err(e) => Err(Error::db("taking the migration advisory lock")(e)),
    }
}

/// Releases the session advisory lock `key` (`SELECT pg_advisory_unlock($1)`).
pub async fn release(client: &Client, key: i64) -> Result<()> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .map(|_| ())
        .map_err(Error::db("releasing the migration advisory lock"))
}

/// Backend pid holding advisory lock `key`, if visible.
pub(crate) async fn holder_pid(client: &Client, key: i64) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1",
            &[&key],
        )
        .await
        .ok()
        .flatten()
        .map(|row| row.get(0))
}

/// Runs `work` while holding `key`, releasing it afterwards whatever `work` returned.
pub(crate) async fn with_lock<T, F>(
    client: &mut Client,
    key: i64,
    wait: Duration,
    work: F,
) -> Result<T>
where
    F: for<'c> FnOnce(
        &'c mut Client,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T>> + Send + 'c>,
    >,
{
    acquire(client, key, wait).await?;
    let outcome = work(client).await;
    let released = release(client, key).await;
    match (outcome, released) {
        (Ok(value), Ok(())) => Ok(value),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}
