//! Archiving with an export: each month is written to a compressed file with a
//! manifest, re-read and verified, and only then detached (and dropped).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::{Client, Transaction};

use super::archive::{ArchiveReport, ArchivedPartition};
use super::error::PartitionError;
use super::export_file::{
    read_data, stem, write_manifest, ArchiveColumn, ArchiveManifest, DataWriter, ARCHIVE_ENCODING,
    ARCHIVE_FORMAT, ARCHIVE_FORMAT_VERSION, DATA_SUFFIX, MANIFEST_SUFFIX,
};
use super::list::{read_partitions, PartitionKind};
use super::lock::{begin_serialised, lock_table_exclusive};
use super::month::Month;
use super::options::PartitionOptions;
use super::parent::{current_month, find_parent, quote_ident, Parent};
use super::rollups::recount_rollups;

/// Where and how [`archive_partitions_exporting`] writes its files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportOptions {
    /// The directory the files go to (must exist and be writable).
    pub dir: PathBuf,
    /// Keep each detached table after the export (`--keep-table`) instead of
    /// dropping it.
    pub keep_table: bool,
}

impl ExportOptions {
    /// Export to `dir`, dropping each table once its file is verified.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ExportOptions {
            dir: dir.into(),
            keep_table: false,
        }
    }

    /// Keep the detached tables as well (`true`) or drop them (`false`, the default).
    pub fn keep_table(mut self, keep: bool) -> Self {
        self.keep_table = keep;
        self
    }
}

/// The files one exported month was written to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportedMonth {
    /// The data file (`*.copy.zst`).
    pub data_file: PathBuf,
    /// Its manifest (`*.manifest.json`): what `partitions restore` takes.
    pub manifest_file: PathBuf,
    /// Rows written (and verified).
    pub rows: u64,
    /// Size of the data file in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the data file.
    pub sha256: String,
}

/// Which step an export is in, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ArchivePhase {
    /// Rows are being written to the file.
    Exporting,
    /// The file is being re-read and checked.
    Verifying,
    /// The month is verified and being detached (and dropped).
    Detaching,
}

/// Progress of [`archive_partitions_exporting`] (and of a restore).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveProgress {
    /// The month being worked on.
    pub month: Month,
    /// Its position among the months of this call (1-based) and their number.
    pub index: usize,
    /// How many months this call handles.
    pub of: usize,
    /// The step.
    pub phase: ArchivePhase,
    /// Rows done in this step.
    pub rows: u64,
    /// Rows expected (the partition's row estimate while exporting, exact after).
    pub rows_expected: Option<u64>,
}

/// Writes every attached month before `before` to a file in `export.dir`,
/// verifies it, and only then detaches it (and drops it unless
/// [`ExportOptions::keep_table`]).
///
/// Contract, per month, one transaction each (oldest first):
/// `pg_advisory_xact_lock(PARTITION_LOCK_KEY)` as for every partition call;
/// `LOCK TABLE <month> IN SHARE MODE` (writes into that month wait, nothing
/// else does); `COPY <month> (<columns>) TO STDOUT (FORMAT binary)` streamed
/// through zstd into `<partition>-<stamp>.copy.zst.partial`, fsync, rename;
/// re-read the file: SHA-256, a complete COPY stream, its row count equal to
/// `SELECT count(*)` of the month; write `<partition>-<stamp>.manifest.json`
/// (fsync, rename, fsync of the directory); then `LOCK TABLE sync_activity_log
/// IN ACCESS EXCLUSIVE MODE`, `DETACH PARTITION`,
/// `sync_activity_rollup_recount(month)` when it exists, `DROP TABLE` unless
/// kept; commit. Existing files are never overwritten (names carry the export
/// time).
///
/// Killed or failing at any point, a month is either still attached (with at
/// most a stray file without its manifest, or a manifest of a complete file)
/// or committed as exported: rows are never lost. Re-running picks up the
/// months still attached.
///
/// # Errors
///
/// As [`archive_partitions`](super::archive_partitions), plus
/// [`PartitionError::ExportIo`] (the directory or a file cannot be written)
/// and [`PartitionError::ArchiveFileInvalid`] (the re-read file does not match
/// what was written). Months finished before the error stay archived (they are
/// in the report of a successful call only; list the directory's manifests).
pub async fn archive_partitions_exporting<F>(
    client: &mut Client,
    before: Month,
    export: &ExportOptions,
    options: &PartitionOptions,
    mut progress: F,
) -> Result<ArchiveReport, PartitionError>
where
    F: FnMut(&ArchiveProgress) + Send,
{
    let meta = std::fs::metadata(&export.dir).map_err(|e| PartitionError::ExportIo {
        path: export.dir.display().to_string(),
        reason: format!("the export directory: {e}"),
    })?;
    if !meta.is_dir() {
        return Err(PartitionError::ExportIo {
            path: export.dir.display().to_string(),
            reason: "the export path is not a directory".into(),
        });
    }
    let err = |step: &str| {
        let step = step.to_owned();
        move |e| PartitionError::from_pg(step, options.lock_timeout, e)
    };
    // Which months: read once without table locks; each month's transaction
    // checks again that it is still attached.
    let (current, months, schema_version) = {
        let parent = find_parent(&*client, options.lock_timeout).await?;
        let current = current_month(&*client, options).await?;
        if before > current {
            return Err(PartitionError::CutoffNotInPast { before, current });
        }
        let months: Vec<(String, Month, Option<i64>)> =
            read_partitions(&*client, &parent, options.lock_timeout)
                .await?
                .into_iter()
                .filter(|p| p.kind == PartitionKind::Month)
                .filter_map(|p| {
                    p.month
                        .filter(|m| *m < before)
                        .map(|m| (p.name, m, p.row_estimate))
                })
                .collect();
        let history = quote_ident(crate::embedded::HISTORY_TABLE);
        let has_history: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&history])
            .await
            .map_err(err("looking for the migration history"))?
            .get(0);
        let version: Option<i32> = if has_history {
            client
                .query_one(&format!("SELECT max(version) FROM {history}"), &[])
                .await
                .map_err(err("reading the schema version"))?
                .get(0)
        } else {
            None
        };
        (current, months, version)
    };
    let mut report = ArchiveReport {
        before,
        current_month: current,
        archived: Vec::new(),
        exclusive_lock_held: Duration::ZERO,
    };
    let of = months.len();
    for (i, (name, month, estimate)) in months.into_iter().enumerate() {
        let tx = client
            .transaction()
            .await
            .map_err(err("beginning the transaction"))?;
        begin_serialised(&tx, options).await?;
        let parent = find_parent(&tx, options.lock_timeout).await?;
        let still = read_partitions(&tx, &parent, options.lock_timeout)
            .await?
            .into_iter()
            .any(|p| p.kind == PartitionKind::Month && p.name == name);
        if !still {
            // Another run archived it meanwhile.
            tx.commit().await.map_err(err("committing"))?;
            continue;
        }
        let mut at = |phase, rows, rows_expected| {
            progress(&ArchiveProgress {
                month,
                index: i + 1,
                of,
                phase,
                rows,
                rows_expected,
            })
        };
        let q = parent.qualify(&name);
        tx.execute(&format!("LOCK TABLE {q} IN SHARE MODE"), &[])
            .await
            .map_err(err(&format!("locking {name} against writes (SHARE)")))?;
        let exported = export_month(
            &tx,
            &parent,
            &name,
            month,
            &export.dir,
            schema_version,
            estimate.and_then(|n| u64::try_from(n).ok()),
            options,
            &mut at,
        )
        .await?;
        at(ArchivePhase::Detaching, exported.rows, Some(exported.rows));
        let locked_at = Instant::now();
        lock_table_exclusive(&tx, &parent, options).await?;
        tx.execute(
            &format!("ALTER TABLE {} DETACH PARTITION {q}", parent.qualified()),
            &[],
        )
        .await
        .map_err(err(&format!("detaching {name}")))?;
        recount_rollups(&tx, &parent, month, options).await?;
        if !export.keep_table {
            tx.execute(&format!("DROP TABLE {q}"), &[])
                .await
                .map_err(err(&format!("dropping {name}")))?;
        }
        tx.commit().await.map_err(err("committing"))?;
        report.exclusive_lock_held += locked_at.elapsed();
        report.archived.push(ArchivedPartition {
            name,
            month,
            dropped: !export.keep_table,
            export: Some(exported),
        });
    }
    Ok(report)
}

/// Streams `name` to a new file in `dir`, re-reads and checks it, writes the
/// manifest.
#[allow(clippy::too_many_arguments)]
async fn export_month(
    tx: &Transaction<'_>,
    parent: &Parent,
    name: &str,
    month: Month,
    dir: &Path,
    schema_version: Option<i32>,
    estimate: Option<u64>,
    options: &PartitionOptions,
    at: &mut (dyn FnMut(ArchivePhase, u64, Option<u64>) + Send),
) -> Result<ExportedMonth, PartitionError> {
    let err = |step: String| move |e| PartitionError::from_pg(step, options.lock_timeout, e);
    let columns = table_columns(tx, parent, options).await?;
    let exported_at = time::OffsetDateTime::now_utc();
    let stem = stem(name, exported_at);
    let data_file = dir.join(format!("{stem}{DATA_SUFFIX}"));
    let manifest_file = dir.join(format!("{stem}{MANIFEST_SUFFIX}"));
    let mut writer = DataWriter::create(&data_file)?;
    let q = parent.qualify(name);
    at(ArchivePhase::Exporting, 0, estimate);
    let stream = tx
        .copy_out(&format!(
            "COPY {q} ({}) TO STDOUT (FORMAT binary)",
            parent.columns
        ))
        .await
        .map_err(err(format!("exporting {name}")))?;
    pin_mut!(stream);
    let mut last = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(err(format!("exporting {name}")))?
    {
        writer.write(&chunk)?;
        if writer.rows() >= last + 10_000 {
            last = writer.rows();
            at(ArchivePhase::Exporting, last, estimate);
        }
    }
    let written = writer.finish()?;
    let count: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {q}"), &[])
        .await
        .map_err(err(format!("counting the rows of {name}")))?
        .get(0);
    let manifest = ArchiveManifest {
        format: ARCHIVE_FORMAT.into(),
        format_version: ARCHIVE_FORMAT_VERSION,
        partition: name.to_owned(),
        month: month.to_string(),
        from: month.start(),
        to: month.next().start(),
        rows: written.rows,
        data_file: data_file
            .file_name()
            .expect("joined file name")
            .to_string_lossy()
            .into_owned(),
        data_bytes: written.bytes,
        sha256: written.sha256.clone(),
        encoding: ARCHIVE_ENCODING.into(),
        columns,
        schema_version,
        exported_at,
    };
    if u64::try_from(count).ok() != Some(written.rows) {
        return Err(PartitionError::ArchiveFileInvalid {
            path: data_file.display().to_string(),
            reason: format!(
                "the file holds {} row(s), {name} holds {count}; nothing was detached",
                written.rows
            ),
        });
    }
    at(ArchivePhase::Verifying, 0, Some(written.rows));
    let mut last = 0u64;
    read_data(&data_file, &manifest, |_, rows| {
        if rows >= last + 10_000 {
            last = rows;
            at(ArchivePhase::Verifying, rows, Some(written.rows));
        }
        Ok(())
    })?;
    at(ArchivePhase::Verifying, written.rows, Some(written.rows));
    write_manifest(&manifest_file, &manifest)?;
    Ok(ExportedMonth {
        data_file,
        manifest_file,
        rows: written.rows,
        bytes: written.bytes,
        sha256: written.sha256,
    })
}

/// The parent's columns in order, with their types as `format_type` prints them.
pub(crate) async fn table_columns(
    tx: &Transaction<'_>,
    parent: &Parent,
    options: &PartitionOptions,
) -> Result<Vec<ArchiveColumn>, PartitionError> {
    Ok(tx
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
               FROM pg_attribute a \
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
              ORDER BY a.attnum",
            &[&parent.oid],
        )
        .await
        .map_err(|e| {
            PartitionError::from_pg(
                "reading the columns of sync_activity_log",
                options.lock_timeout,
                e,
            )
        })?
        .iter()
        .map(|r| ArchiveColumn {
            name: r.get(0),
            type_name: r.get(1),
        })
        .collect())
}
