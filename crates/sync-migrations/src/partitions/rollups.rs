//! The call into the activity rollups (migration 0026, when present) after a
//! month leaves or joins `sync_activity_log`.

use tokio_postgres::Transaction;

use super::error::PartitionError;
use super::month::Month;
use super::options::PartitionOptions;
use super::parent::Parent;

/// Name of the rollup recount function (owner-only) of migration 0026.
const RECOUNT: &str = "sync_activity_rollup_recount";

/// After a DETACH or ATTACH of `month`'s rows, in the same transaction: when
/// `<schema>.sync_activity_rollup_recount(timestamptz, timestamptz)` exists,
/// calls it for `[month start, next month start)` so the rollups match the
/// attached partitions again. Returns whether it was called.
///
/// SQL: `SELECT to_regprocedure($1) IS NOT NULL` with the qualified signature
/// as a parameter, then `SELECT "schema".sync_activity_rollup_recount($1, $2)`.
pub(crate) async fn recount_rollups(
    tx: &Transaction<'_>,
    parent: &Parent,
    month: Month,
    options: &PartitionOptions,
) -> Result<bool, PartitionError> {
    let err = |e| {
        PartitionError::from_pg(
            format!("recounting the activity rollups of {month}"),
            options.lock_timeout,
            e,
        )
    };
    let function = parent.qualify(RECOUNT);
    let exists: bool = tx
        .query_one(
            "SELECT to_regprocedure($1) IS NOT NULL",
            &[&format!("{function}(timestamptz,timestamptz)")],
        )
        .await
        .map_err(err)?
        .get(0);
    if exists {
        tx.execute(
            &format!("SELECT {function}($1, $2)"),
            &[&month.start(), &month.next().start()],
        )
        .await
        .map_err(err)?;
    }
    Ok(exists)
}
