//! The advisory lock that serialises partition maintenance, and the ACCESS
//! EXCLUSIVE lock on the table.

use tokio_postgres::Transaction;

use super::error::PartitionError;
use super::options::PartitionOptions;
use super::parent::Parent;

/// Transaction-level advisory lock key of partition maintenance (ensure and
/// archive on every replica): ASCII "syncpart" as a big-endian i64.
pub const PARTITION_LOCK_KEY: i64 = 0x7379_6e63_7061_7274;

/// The step name of the wait for the partition advisory lock (in errors).
pub(crate) const ADVISORY_STEP: &str =
    "waiting for another partition maintenance run (the partition advisory lock)";

/// Sets `lock_timeout` to `millis` for the rest of `tx` (one statement, the
/// value as a parameter).
pub(crate) async fn set_lock_timeout(
    tx: &Transaction<'_>,
    millis: i64,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    tx.execute(
        "SELECT set_config('lock_timeout', $1, true)",
        &[&format!("{millis}ms")],
    )
    .await
    .map_err(|e| PartitionError::from_pg("setting lock_timeout", options.lock_timeout, e))?;
    Ok(())
}

/// Takes the partition advisory lock, waiting at most
/// `options.wait_for_other_run`, then sets `lock_timeout` for the rest of `tx`.
///
/// SQL: `set_config('lock_timeout', <wait>, true)`,
/// `SELECT pg_advisory_xact_lock(PARTITION_LOCK_KEY)`,
/// `set_config('lock_timeout', <lock_timeout>, true)`. All end with the
/// transaction, so a pooled connection goes back clean. A wait that runs out is
/// [`PartitionError::LockTimeout`] with step [`ADVISORY_STEP`] (the transaction
/// is then aborted).
pub(crate) async fn begin_serialised(
    tx: &Transaction<'_>,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    set_lock_timeout(tx, options.wait_for_other_run_millis(), options).await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK_KEY])
        .await
        .map_err(|e| PartitionError::from_pg(ADVISORY_STEP, options.wait_for_other_run, e))?;
    set_lock_timeout(tx, options.lock_timeout_millis(), options).await
}

/// True when `err` is the wait for the advisory lock running out.
pub(crate) fn is_other_run_busy(err: &PartitionError) -> bool {
    matches!(err, PartitionError::LockTimeout { step, .. } if step == ADVISORY_STEP)
}

/// `LOCK TABLE <parent> IN ACCESS EXCLUSIVE MODE` (recursing to every partition),
/// bounded by the transaction's `lock_timeout`.
pub(crate) async fn lock_table_exclusive(
    tx: &Transaction<'_>,
    parent: &Parent,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    tx.execute(
        &format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", parent.qualified()),
        &[],
    )
    .await
    .map_err(|e| {
        PartitionError::from_pg(
            "locking sync_activity_log in ACCESS EXCLUSIVE mode",
            options.lock_timeout,
            e,
        )
    })?;
    Ok(())
}
