//! [`list_partitions`]: the partitions of `sync_activity_log` with their bounds and sizes.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::{Client, GenericClient};

use super::error::PartitionError;
use super::month::Month;
use super::parent::{find_parent, Parent};

/// What kind of range a partition covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKind {
    /// Exactly one UTC month.
    Month,
    /// From some instant up to MAXVALUE (`sync_activity_log_future`).
    CatchAll,
    /// Anything else (a DEFAULT partition, bounds off month boundaries); ensure
    /// refuses to run while one exists.
    Other,
}

/// One attached partition of `sync_activity_log`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartitionInfo {
    /// Table name (same schema as the parent).
    pub name: String,
    /// Month, catch-all or other.
    pub kind: PartitionKind,
    /// The month, for [`PartitionKind::Month`].
    pub month: Option<Month>,
    /// Lower bound (inclusive); `None` for MINVALUE or DEFAULT.
    #[serde(with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    /// Upper bound (exclusive); `None` for MAXVALUE or DEFAULT.
    #[serde(with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    /// The bounds as PostgreSQL prints them (in the session's time zone).
    pub bounds: String,
    /// `pg_class.reltuples`; `None` when never vacuumed, analyzed or indexed.
    pub row_estimate: Option<i64>,
    /// `pg_total_relation_size` (heap, indexes, TOAST) in bytes.
    pub total_bytes: i64,
    /// Whether row-level security is enabled on the partition itself.
    pub rls_enabled: bool,
}

/// The attached partitions of `sync_activity_log`, ordered by lower bound.
///
/// Contract: reads `pg_inherits`/`pg_class` (`pg_get_expr(relpartbound)`,
/// `reltuples`, `relrowsecurity`) and `pg_total_relation_size`, which takes an
/// ACCESS SHARE lock on each partition — so it waits while an `ensure` or
/// `archive` holds its ACCESS EXCLUSIVE lock. Changes nothing.
/// [`PartitionError::NotMigrated`] when the table does not exist.
pub async fn list_partitions(client: &Client) -> Result<Vec<PartitionInfo>, PartitionError> {
    let parent = find_parent(client, Duration::ZERO).await?;
    read_partitions(client, &parent, Duration::ZERO).await
}

pub(crate) async fn read_partitions<C: GenericClient + Sync>(
    client: &C,
    parent: &Parent,
    lock_timeout: Duration,
) -> Result<Vec<PartitionInfo>, PartitionError> {
    let rows = client
        .query(
            r#"SELECT c.relname::text, b.expr,
                      substring(b.expr FROM 'FROM \(''([^'']*)''\)')::timestamptz,
                      substring(b.expr FROM 'TO \(''([^'']*)''\)')::timestamptz,
                      b.expr LIKE '% TO (MAXVALUE)',
                      c.reltuples::int8, pg_total_relation_size(c.oid), c.relrowsecurity
                 FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS expr) b
                WHERE i.inhparent = $1
                ORDER BY 3 NULLS LAST, 1"#,
            &[&parent.oid],
        )
        .await
        .map_err(|e| {
            PartitionError::from_pg(
                "reading the partitions of sync_activity_log",
                lock_timeout,
                e,
            )
        })?;
    Ok(rows
        .iter()
        .map(|r| {
            let from: Option<OffsetDateTime> = r.get(2);
            let to: Option<OffsetDateTime> = r.get(3);
            let to_max: bool = r.get(4);
            let month = match (from.and_then(Month::starting_at), to) {
                (Some(m), Some(to)) if Month::starting_at(to) == Some(m.next()) => Some(m),
                _ => None,
            };
            let kind = match (month, from, to_max) {
                (Some(_), _, _) => PartitionKind::Month,
                (None, Some(_), true) => PartitionKind::CatchAll,
                _ => PartitionKind::Other,
            };
            let reltuples: i64 = r.get(5);
            PartitionInfo {
                name: r.get(0),
                kind,
                month,
                from,
                to,
                bounds: r.get(1),
                row_estimate: (reltuples >= 0).then_some(reltuples),
                total_bytes: r.get(6),
                rls_enabled: r.get(7),
            }
        })
        .collect())
}
