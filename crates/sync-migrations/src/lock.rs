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

/// How often a migrating session's backend checks that its client is still
/// there while a statement runs (`client_connection_check_interval`, ms): a
/// killed migrator's backend ends within about this long, releasing the
/// migration lock, instead of waiting on as an orphan.
pub(crate) const CLIENT_CHECK_INTERVAL_MS: &str = "1000";

/// Sets the session setting `name` (one of our constants) to `value` with
/// `set_config` (a parameter, never SQL text), returning the value it had.
/// `Ok(None)` when the server does not know the setting (PostgreSQL < 14 for
/// `client_connection_check_interval`).
async fn swap_setting(client: &Client, name: &'static str, value: &str) -> Result<Option<String>> {
    let during = "setting up the migrating session";
    let old: Option<String> = client
        .query_one("SELECT current_setting($1, true)", &[&name])
        .await
        .map_err(Error::db(during))?
        .get(0);
    let Some(old) = old else {
        return Ok(None);
    };
    client
        .execute("SELECT set_config($1, $2, false)", &[&name, &value])
        .await
        .map_err(Error::db(during))?;
    Ok(Some(old))
}

async fn restore_setting(client: &Client, name: &'static str, old: Option<String>) -> Result<()> {
    match old {
        Some(old) => swap_setting(client, name, &old).await.map(|_| ()),
        None => Ok(()),
    }
}

/// Runs `work` while holding `key`, releasing it afterwards whatever `work` returned.
///
/// The session is set up so that nothing it does can hold the lock unboundedly:
/// `client_connection_check_interval` (an orphaned backend notices its client
/// is gone) for the whole call, and `lock_timeout = ddl_lock_timeout` while
/// `work` runs (each DDL lock wait is bounded; `work` retries). Both settings
/// get their previous values back at the end.
pub(crate) async fn with_lock<T, F>(
    client: &mut Client,
    key: i64,
    wait: Duration,
    ddl_lock_timeout: Duration,
    work: F,
) -> Result<T>
where
    F: for<'c> FnOnce(
        &'c mut Client,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T>> + Send + 'c>,
    >,
{
    let check = swap_setting(
        client,
        "client_connection_check_interval",
        CLIENT_CHECK_INTERVAL_MS,
    )
    .await?;
    if let Err(e) = acquire(client, key, wait).await {
        let _ = restore_setting(client, "client_connection_check_interval", check).await;
        return Err(e);
    }
    let ddl_ms = ddl_lock_timeout
        .as_millis()
        .clamp(1, i32::MAX as u128)
        .to_string();
    let outcome = match swap_setting(client, "lock_timeout", &ddl_ms).await {
        Ok(lock_timeout) => {
            let outcome = work(client).await;
            match restore_setting(client, "lock_timeout", lock_timeout).await {
                Ok(()) => outcome,
                Err(e) => outcome.and(Err(e)),
            }
        }
        Err(e) => Err(e),
    };
    let released = release(client, key).await;
    let restored = restore_setting(client, "client_connection_check_interval", check).await;
    match (outcome, released.and(restored)) {
        (Ok(value), Ok(())) => Ok(value),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}

/// Whether `e` is a lock wait cancelled by `lock_timeout` (SQLSTATE 55P03).
pub(crate) fn is_lock_timeout(e: &Error) -> bool {
    e.code() == Some(tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE.code())
}

/// Pause between two attempts of a DDL step that ran out of `lock_timeout`, so
/// the sessions queued behind its lock request get their turn.
pub(crate) const DDL_RETRY_PAUSE: Duration = Duration::from_millis(200);
