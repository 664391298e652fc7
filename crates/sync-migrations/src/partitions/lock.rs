//! The advisory lock that serialises partition maintenance, and the ACCESS
//! EXCLUSIVE lock on the table.

use tokio_postgres::Transaction;

use super::error::PartitionError;
use super::options::PartitionOptions;
use super::parent::Parent;

/// Transaction-level advisory lock key of partition maintenance (ensure and
/// archive on every replica): ASCII "syncpart" as a big-endian i64.
pub const PARTITION_LOCK_KEY: i64 = 0x7379_6e63_7061_7274;

/// Sets `lock_timeout` for the rest of `tx` and takes the partition advisory lock.
///
/// SQL: `SET LOCAL lock_timeout = <ms>`, `SELECT pg_advisory_xact_lock(PARTITION_LOCK_KEY)`.
/// Both end with the transaction, so a pooled connection goes back clean.
pub(crate) async fn begin_serialised(
    tx: &Transaction<'_>,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let err = |step: &'static str| move |e| PartitionError::from_pg(step, options.lock_timeout, e);
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {}",
        options.lock_timeout_millis()
    ))
    .await
    .map_err(err("setting lock_timeout"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK_KEY])
        .await
        .map_err(err("taking the partition advisory lock"))?;
    Ok(())
}

/// `LOCK TABLE <parent> IN ACCESS EXCLUSIVE MODE` (recursing to every partition),
/// bounded by the transaction's `lock_timeout`.
pub(crate) async fn lock_table_exclusive(
    tx: &Transaction<'_>,
    parent: &Parent,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        parent.qualified()
    ))
    .await
    .map_err(|e| {
        PartitionError::from_pg(
            "locking sync_activity_log in ACCESS EXCLUSIVE mode",
            options.lock_timeout,
            e,
        )
    })
}
