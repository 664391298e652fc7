//! Our 0024 as a catalog: migrations 0001 and 0024 run in a scratch schema inside
//! a transaction that is always rolled back, then read with [`snapshot`].
//!
//! The adopted database is compared with what *our* SQL builds, not with a
//! hand-kept list, so the comparison cannot drift from the migrations.

use tokio_postgres::Client;

use super::catalog::{snapshot, Catalog};
use crate::error::{Error, Result};
use crate::partitions::quote_ident;

/// The scratch schema (exists only inside the rolled-back transaction).
pub(crate) const REFERENCE_SCHEMA: &str = "sync_adopt_reference";

/// Builds the reference catalog. Takes, for the length of one transaction, the
/// locks that creating 0024's foreign keys takes on `organization` and
/// `auth.users_extended` (SHARE ROW EXCLUSIVE: writers to those two tables wait
/// up to `lock_timeout`); nothing is committed.
pub(crate) async fn reference(client: &mut Client, lock_timeout_ms: u64) -> Result<Catalog> {
    let (v1, v24) = sql_0001_0024();
    let tx = client
        .transaction()
        .await
        .map_err(Error::db("adopt: opening the reference transaction"))?;
    let target: String = tx
        .query_one("SELECT current_schema()::text", &[])
        .await
        .map_err(Error::db("adopt: reading the current schema"))?
        .get(0);
    tx.query(
        "SELECT set_config('lock_timeout', $1, true)",
        &[&format!("{lock_timeout_ms}ms")],
    )
    .await
    .map_err(Error::db("adopt: setting lock_timeout"))?;
    tx.batch_execute(&v1).await.map_err(Error::db(
        "adopt: running migration 0001 in the reference transaction",
    ))?;
    tx.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(REFERENCE_SCHEMA)))
        .await
        .map_err(Error::db("adopt: creating the reference schema"))?;
    tx.query(
        "SELECT set_config('search_path', $1, true)",
        &[&format!(
            "{}, {}",
            quote_ident(REFERENCE_SCHEMA),
            quote_ident(&target)
        )],
    )
    .await
    .map_err(Error::db("adopt: setting the reference search_path"))?;
    tx.batch_execute(&v24).await.map_err(Error::db(
        "adopt: running migration 0024 in the reference schema",
    ))?;
    let catalog = snapshot(&tx, REFERENCE_SCHEMA).await;
    tx.rollback()
        .await
        .map_err(Error::db("adopt: rolling back the reference transaction"))?;
    catalog
}

/// The SQL of the embedded migrations 1 and 24.
fn sql_0001_0024() -> (String, String) {
    let runner = crate::embedded::runner();
    let find = |v: i32| {
        runner
            .get_migrations()
            .iter()
            .find(|m| m.version() == v)
            .and_then(|m| m.sql().map(str::to_owned))
            .unwrap_or_default()
    };
    (find(1), find(crate::embedded::V0024))
}
