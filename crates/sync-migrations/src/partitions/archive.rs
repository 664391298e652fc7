//! Archiving old months: detaching them (kept as tables) or dropping them.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::error::PartitionError;
use super::list::{read_partitions, PartitionKind};
use super::lock::{begin_serialised, lock_table_exclusive};
use super::month::Month;
use super::options::PartitionOptions;
use super::parent::{current_month, find_parent};
use super::rollups::recount_rollups;

/// One month an archive call took out of `sync_activity_log`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchivedPartition {
    /// The table's name (unchanged by archiving).
    pub name: String,
    /// Its month.
    pub month: Month,
    /// `true` when the table and its rows were dropped; `false` when it was kept
    /// as a standalone table.
    pub dropped: bool,
    /// The files the month was exported to (`None`: archived without export).
    pub export: Option<super::archive_export::ExportedMonth>,
}

/// What an archive call found and did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveReport {
    /// The cut-off: months entirely before it were archived.
    pub before: Month,
    /// The current UTC month (server clock).
    pub current_month: Month,
    /// The months archived by this call, oldest first (empty: nothing to do).
    pub archived: Vec<ArchivedPartition>,
    /// How long the ACCESS EXCLUSIVE lock on `sync_activity_log` was held (zero
    /// when nothing had to change). Serialised as milliseconds.
    #[serde(serialize_with = "as_millis")]
    pub exclusive_lock_held: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Detaches every monthly partition of a month before `before`, keeping each as a
/// standalone table of the same name (rows, indexes, foreign keys and row-level
/// security — with no policies, so non-owners see nothing — stay).
///
/// Contract: one transaction: `SET LOCAL lock_timeout`,
/// `pg_advisory_xact_lock(PARTITION_LOCK_KEY)`; `before` later than the current
/// UTC month → [`PartitionError::CutoffNotInPast`] (so the current month, later
/// months and the catch-all are never touched). Nothing to archive → commit, no
/// table lock. Otherwise `LOCK TABLE sync_activity_log IN ACCESS EXCLUSIVE MODE`,
/// `ALTER TABLE sync_activity_log DETACH PARTITION …` per month (catalog only, no
/// scan) followed by `sync_activity_rollup_recount(month start, next month
/// start)` when that function (migration 0026) exists, commit. Idempotent: a second call finds nothing to archive.
///
/// A kept archive table still uses 0024's enum types, so rolling 0024 back fails
/// (naming the table) until it is dropped or its columns converted.
///
/// # Errors
///
/// Nothing is changed on any error. [`PartitionError::CutoffNotInPast`] when
/// `before` is later than the current month ([`PartitionOptions::now`], else the
/// server's clock); [`PartitionError::LockTimeout`] when another run holds the
/// partition lock past [`PartitionOptions::wait_for_other_run`] or a table lock
/// is not had within [`PartitionOptions::lock_timeout`];
/// [`PartitionError::NotMigrated`], [`PartitionError::Database`],
/// [`PartitionError::ConnectionLost`] as their names say.
#[tracing::instrument(name = "sync_migrations.partitions.archive", target = "sync_migrations", skip_all, err(Display), fields(before = %before, drop = false, archived = tracing::field::Empty))]
pub async fn archive_partitions(
    client: &mut Client,
    before: Month,
    options: &PartitionOptions,
) -> Result<ArchiveReport, PartitionError> {
    archive(client, before, options, false).await
}

/// Like [`archive_partitions`], then **drops** each detached month with all its
/// rows (`DROP TABLE`, same transaction).
///
/// # Errors
///
/// As [`archive_partitions`].
#[tracing::instrument(name = "sync_migrations.partitions.archive", target = "sync_migrations", skip_all, err(Display), fields(before = %before, drop = true, archived = tracing::field::Empty))]
pub async fn archive_partitions_dropping_data(
    client: &mut Client,
    before: Month,
    options: &PartitionOptions,
) -> Result<ArchiveReport, PartitionError> {
    archive(client, before, options, true).await
}

async fn archive(
    client: &mut Client,
    before: Month,
    options: &PartitionOptions,
    drop: bool,
) -> Result<ArchiveReport, PartitionError> {
    let err = |step: String| move |e| PartitionError::from_pg(step, options.lock_timeout, e);
    let tx = client
        .transaction()
        .await
        .map_err(err("beginning the transaction".into()))?;
    begin_serialised(&tx, options).await?;
    let parent = find_parent(&tx, options.lock_timeout).await?;
    let current = current_month(&tx, options).await?;
    if before > current {
        return Err(PartitionError::CutoffNotInPast { before, current });
    }
    let mut report = ArchiveReport {
        before,
        current_month: current,
        archived: Vec::new(),
        exclusive_lock_held: Duration::ZERO,
    };
    let old = |parts: Vec<super::list::PartitionInfo>| -> Vec<(String, Month)> {
        parts
            .into_iter()
            .filter(|p| p.kind == PartitionKind::Month)
            .filter_map(|p| p.month.filter(|m| *m < before).map(|m| (p.name, m)))
            .collect()
    };
    if old(read_partitions(&tx, &parent, options.lock_timeout).await?).is_empty() {
        tx.commit().await.map_err(err("committing".into()))?;
        tracing::Span::current().record("archived", 0);
        return Ok(report);
    }
    let locked_at = Instant::now();
    lock_table_exclusive(&tx, &parent, options).await?;
    let months = old(read_partitions(&tx, &parent, options.lock_timeout).await?);
    let p = parent.qualified();
    for (name, month) in months {
        let q = parent.qualify(&name);
        // One statement per call; `q` is quoted with quote_ident.
        tx.execute(&format!("ALTER TABLE {p} DETACH PARTITION {q}"), &[])
            .await
            .map_err(err(format!("detaching {name}")))?;
        recount_rollups(&tx, &parent, month, options).await?;
        if drop {
            tx.execute(&format!("DROP TABLE {q}"), &[])
                .await
                .map_err(err(format!("dropping {name}")))?;
        }
        report.archived.push(ArchivedPartition {
            name,
            month,
            dropped: drop,
            export: None,
        });
    }
    tx.commit().await.map_err(err("committing".into()))?;
    report.exclusive_lock_held = locked_at.elapsed();
    tracing::Span::current().record("archived", report.archived.len());
    Ok(report)
}
