//! The partitioned table `sync_activity_log` as found in the catalog.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::GenericClient;

use super::error::PartitionError;
use super::month::Month;
use super::options::PartitionOptions;

/// The partitioned parent: where it lives and its columns.
#[derive(Debug, Clone)]
pub(crate) struct Parent {
    /// Its schema (the first schema of the search path that has it).
    pub(crate) schema: String,
    /// Its oid.
    pub(crate) oid: u32,
    /// Its columns, quoted and comma-separated, in order.
    pub(crate) columns: String,
}

impl Parent {
    /// `"schema"."sync_activity_log"`.
    pub(crate) fn qualified(&self) -> String {
        self.qualify("sync_activity_log")
    }

    /// `"schema"."name"`.
    pub(crate) fn qualify(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(name))
    }
}

/// `"ident"` with inner quotes doubled.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Finds `sync_activity_log` through the search path; [`PartitionError::NotMigrated`]
/// when it is missing or not partitioned.
pub(crate) async fn find_parent<C: GenericClient + Sync>(
    client: &C,
    lock_timeout: Duration,
) -> Result<Parent, PartitionError> {
    let row = client
        .query_opt(
            "SELECT n.nspname::text, c.oid, \
                    (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) \
                       FROM pg_attribute a \
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.oid = to_regclass('sync_activity_log') AND c.relkind = 'p'",
            &[],
        )
        .await
        .map_err(|e| PartitionError::from_pg("looking up sync_activity_log", lock_timeout, e))?
        .ok_or(PartitionError::NotMigrated)?;
    Ok(Parent {
        schema: row.get(0),
        oid: row.get(1),
        columns: row.get(2),
    })
}

/// The current UTC month: the month of `options.now` when given, else of the
/// server's clock (`now()`: the transaction's start).
pub(crate) async fn current_month<C: GenericClient + Sync>(
    client: &C,
    options: &PartitionOptions,
) -> Result<Month, PartitionError> {
    let now: OffsetDateTime = match options.now {
        Some(now) => now,
        None => client
            .query_one("SELECT now()", &[])
            .await
            .map_err(|e| {
                PartitionError::from_pg("reading the server clock", options.lock_timeout, e)
            })?
            .get(0),
    };
    Month::containing(now)
}
