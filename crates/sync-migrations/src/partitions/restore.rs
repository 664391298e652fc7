//! [`restore_partition`]: bringing an exported month back into `sync_activity_log`.

use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_postgres::{Client, Transaction};

use super::archive_export::{table_columns, ArchivePhase, ArchiveProgress};
use super::ensure::{build_indexes, ensure_partitions, Target};
use super::error::PartitionError;
use super::export_file::{read_data, read_manifest, ArchiveManifest};
use super::list::{read_partitions, PartitionKind};
use super::lock::{begin_serialised, lock_table_exclusive};
use super::month::Month;
use super::options::PartitionOptions;
use super::parent::{find_parent, quote_ident, Parent};
use super::rollups::recount_rollups;
use super::security::copy_security;

/// Session-local table the file's rows are loaded into first (dropped at commit).
const LOADED: &str = "sync_activity_log_restore_rows";
/// Partitioned table `LIKE sync_activity_log INCLUDING INDEXES` whose ATTACH builds
/// the parent's indexes on the new month (same transaction).
const INDEX_STAGING: &str = "sync_activity_log_restore_index_staging";
/// CHECK on the new month's bounds, so its ATTACH skips the validation scan.
const BOUNDS_CHECK: &str = "sync_activity_log_restore_bounds";

/// What to do with archived rows whose organization or user no longer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OrphanPolicy {
    /// Refuse the restore ([`PartitionError::OrphanRows`], nothing written).
    #[default]
    Refuse,
    /// Leave every such row out (`DELETE` from the loaded rows where the
    /// organization or the user is missing).
    Skip,
    /// Do what the foreign keys' `ON DELETE` would have done: leave out rows of
    /// missing organizations (`ON DELETE CASCADE`), clear `user_id` of missing
    /// users (`ON DELETE SET NULL`).
    AsDeleted,
}

/// Options of [`restore_partition`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Rows of missing organizations or users. Default [`OrphanPolicy::Refuse`].
    pub orphans: OrphanPolicy,
    /// When the month lies in the catch-all, `ensure` runs first with this many
    /// months ahead (default 3).
    pub months_ahead: u32,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            orphans: OrphanPolicy::Refuse,
            months_ahead: 3,
        }
    }
}

impl RestoreOptions {
    /// With `orphans` as the orphan policy.
    pub fn with_orphans(mut self, orphans: OrphanPolicy) -> Self {
        self.orphans = orphans;
        self
    }
}

/// What [`restore_partition`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    /// The month restored.
    pub month: Month,
    /// The partition that now holds its rows.
    pub partition: String,
    /// Rows in the file.
    pub rows_in_file: u64,
    /// Rows written to the partition.
    pub rows_restored: u64,
    /// Rows naming a missing organization.
    pub orphan_org_rows: u64,
    /// Rows naming a missing user (user_id set).
    pub orphan_user_rows: u64,
    /// Up to 5 missing organization ids.
    pub sample_org_ids: Vec<uuid::Uuid>,
    /// Up to 5 missing user ids.
    pub sample_user_ids: Vec<uuid::Uuid>,
    /// `true` when the month was already attached (its partition held rows
    /// written since, or made by `ensure`) and the file's rows were added to it.
    pub merged: bool,
    /// `true` when the month lay in the catch-all and `ensure` split it first.
    pub ensured_first: bool,
    /// How long the ACCESS EXCLUSIVE lock on `sync_activity_log` was held
    /// (zero when merging into an attached month). Serialised as milliseconds.
    #[serde(serialize_with = "as_millis")]
    pub exclusive_lock_held: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Where the archive's month is in the current layout.
enum Place {
    /// Attached as its own partition (name).
    Attached(String),
    /// Inside the catch-all starting at (bounds text).
    CatchAll(String),
    /// Not covered by any partition.
    Absent,
}

/// Brings the month of an archive file back into `sync_activity_log`.
/// `path` names the manifest (`*.manifest.json`) or its data file
/// (`*.copy.zst`).
///
/// Contract: read the manifest; re-read the whole data file (SHA-256, size, a
/// complete binary COPY stream, the manifest's row count) — a mismatch is
/// [`PartitionError::ArchiveFileInvalid`] before anything is sent to the server.
/// Then one transaction: the partition advisory lock; the manifest's columns
/// must equal the table's (names and types, in order) →
/// [`PartitionError::SchemaMismatch`]. When the month lies in the catch-all,
/// that transaction is rolled back and [`ensure_partitions`](super::ensure_partitions)
/// runs first (splitting the catch-all so the month gets its own partition,
/// with any rows of it the catch-all held) — then everything starts over.
/// `COPY` the file into a session-local table (the file is hashed again while
/// streaming; a mismatch aborts the transaction); count rows naming missing
/// organizations / users (with up to 5 sample ids each) and treat them per
/// [`RestoreOptions::orphans`].
///
/// * Month not attached: create `sync_activity_log_YYYY_MM` `LIKE` the parent
///   with a CHECK on the bounds, insert the rows, build the parent's indexes on
///   it (attached to a temporary partitioned table `LIKE sync_activity_log
///   INCLUDING INDEXES`, then detached), `LOCK TABLE sync_activity_log IN
///   ACCESS EXCLUSIVE MODE`, `ATTACH PARTITION`, drop the CHECK, then RLS, the
///   TRUNCATE guard, owner and grants exactly as `ensure` gives a new
///   partition (copied from the catch-all, else the newest month).
/// * Month attached (it holds rows written since, or `ensure` just made it):
///   `LOCK TABLE <month> IN SHARE ROW EXCLUSIVE MODE` (writes to that month
///   wait) and insert the rows into it; a row already there (same id and
///   created_at) → [`PartitionError::RowsAlreadyPresent`].
///
/// Either way `sync_activity_rollup_recount(month)` when it exists, commit.
///
/// # Errors
///
/// Nothing is written on any error (an `ensure` that ran first stays).
/// [`PartitionError::ArchiveFileInvalid`], [`PartitionError::ExportIo`],
/// [`PartitionError::SchemaMismatch`], [`PartitionError::OrphanRows`],
/// [`PartitionError::RowsAlreadyPresent`], [`PartitionError::MonthInCatchAll`]
/// (the month is beyond `ensure`'s horizon), [`PartitionError::NameTaken`] (a
/// standalone table of the month's name exists, e.g. kept by `--keep-table`:
/// attach or drop it by hand), and the errors of every partition call.
pub async fn restore_partition<F>(
    client: &mut Client,
    path: &Path,
    restore: &RestoreOptions,
    options: &PartitionOptions,
    mut progress: F,
) -> Result<RestoreReport, PartitionError>
where
    F: FnMut(&ArchiveProgress) + Send,
{
    let (manifest, manifest_path, data) = read_manifest(path)?;
    let month = manifest.checked_month(&manifest_path)?;
    let rows = manifest.rows;
    let mut at = |phase, done| {
        progress(&ArchiveProgress {
            month,
            index: 1,
            of: 1,
            phase,
            rows: done,
            rows_expected: Some(rows),
        })
    };
    at(ArchivePhase::Verifying, 0);
    let blocking_data = data.clone();
    let blocking_manifest = manifest.clone();
    tokio::task::spawn_blocking(move || {
        read_data(&blocking_data, &blocking_manifest, |_, _| Ok(()))
    })
    .await
    .map_err(|e| PartitionError::ExportIo {
        path: data.display().to_string(),
        reason: format!("the reading thread failed: {e}"),
    })??;
    at(ArchivePhase::Verifying, rows);
    let mut ensured_first = false;
    loop {
        let tx = client.transaction().await.map_err(|e| {
            PartitionError::from_pg("beginning the transaction", options.lock_timeout, e)
        })?;
        begin_serialised(&tx, options).await?;
        let parent = find_parent(&tx, options.lock_timeout).await?;
        check_columns(&tx, &parent, &manifest, &manifest_path, options).await?;
        let place = place_of(&tx, &parent, month, options).await?;
        if let Place::CatchAll(from) = &place {
            if ensured_first {
                return Err(PartitionError::MonthInCatchAll {
                    month,
                    catch_all_from: from.clone(),
                });
            }
            drop(tx);
            ensure_partitions(client, restore.months_ahead, options, |_| {}).await?;
            ensured_first = true;
            continue;
        }
        at(ArchivePhase::Exporting, 0);
        let mut report = load(&tx, &parent, &manifest, &data, restore, options).await?;
        report.ensured_first = ensured_first;
        at(ArchivePhase::Detaching, report.rows_restored);
        match place {
            Place::Attached(name) => {
                merge_into(&tx, &parent, &name, &manifest_path, options).await?;
                report.partition = name;
                report.merged = true;
            }
            _ => {
                report.exclusive_lock_held = attach_new(&tx, &parent, month, options).await?;
                report.partition = month.partition_name();
            }
        }
        recount_rollups(&tx, &parent, month, options).await?;
        tx.commit()
            .await
            .map_err(|e| PartitionError::from_pg("committing", options.lock_timeout, e))?;
        return Ok(report);
    }
}

/// The manifest's columns must be the table's, names and types in order.
async fn check_columns(
    tx: &Transaction<'_>,
    parent: &Parent,
    manifest: &ArchiveManifest,
    path: &Path,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let table = table_columns(tx, parent, options).await?;
    if table != manifest.columns {
        let show = |c: &[super::export_file::ArchiveColumn]| {
            c.iter()
                .map(|c| format!("{} {}", c.name, c.type_name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(PartitionError::SchemaMismatch {
            path: path.display().to_string(),
            archive: show(&manifest.columns),
            table: show(&table),
        });
    }
    Ok(())
}

async fn place_of(
    tx: &Transaction<'_>,
    parent: &Parent,
    month: Month,
    options: &PartitionOptions,
) -> Result<Place, PartitionError> {
    for p in read_partitions(tx, parent, options.lock_timeout).await? {
        match p.kind {
            PartitionKind::Month if p.month == Some(month) => return Ok(Place::Attached(p.name)),
            PartitionKind::CatchAll if p.from.is_some_and(|f| f <= month.start()) => {
                return Ok(Place::CatchAll(p.bounds))
            }
            PartitionKind::Other => {
                return Err(PartitionError::UnexpectedLayout {
                    partition: p.name,
                    bounds: p.bounds,
                })
            }
            _ => {}
        }
    }
    Ok(Place::Absent)
}

/// Streams the data file into the session-local table [`LOADED`] (hashing it
/// again), then counts and treats the orphans.
async fn load(
    tx: &Transaction<'_>,
    parent: &Parent,
    manifest: &ArchiveManifest,
    data: &Path,
    restore: &RestoreOptions,
    options: &PartitionOptions,
) -> Result<RestoreReport, PartitionError> {
    let err = |step: &str| {
        let step = step.to_owned();
        move |e| PartitionError::from_pg(step, options.lock_timeout, e)
    };
    let p = parent.qualified();
    let loaded = quote_ident(LOADED);
    tx.execute(
        &format!("CREATE TEMPORARY TABLE {loaded} (LIKE {p}) ON COMMIT DROP"),
        &[],
    )
    .await
    .map_err(err("creating the table the file is loaded into"))?;
    let columns: Vec<String> = manifest
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    let sink = tx
        .copy_in::<_, Cursor<Vec<u8>>>(&format!(
            "COPY {loaded} ({}) FROM STDIN (FORMAT binary)",
            columns.join(", ")
        ))
        .await
        .map_err(err("loading the file's rows"))?;
    futures_util::pin_mut!(sink);
    let (send, mut receive) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let (file, m) = (data.to_owned(), manifest.clone());
    let reader = tokio::task::spawn_blocking(move || {
        read_data(&file, &m, |chunk, _| {
            send.blocking_send(chunk.to_vec())
                .map_err(|_| PartitionError::ExportIo {
                    path: file.display().to_string(),
                    reason: "the load stopped".into(),
                })
        })
    });
    let mut sent = Ok(());
    while let Some(chunk) = receive.recv().await {
        if let Err(e) = sink.send(Cursor::new(chunk)).await {
            sent = Err(e);
            break;
        }
    }
    drop(receive);
    // The file must hash to the manifest's SHA-256 again before the COPY ends
    // (else it is abandoned and the transaction rolls back).
    reader.await.map_err(|e| PartitionError::ExportIo {
        path: data.display().to_string(),
        reason: format!("the reading thread failed: {e}"),
    })??;
    sent.map_err(err("loading the file's rows"))?;
    let copied = sink
        .as_mut()
        .finish()
        .await
        .map_err(err("loading the file's rows"))?;
    let org = parent.qualify("organization");
    let missing_org = format!("NOT EXISTS (SELECT 1 FROM {org} o WHERE o.id = t.org_id)");
    let missing_user = "t.user_id IS NOT NULL AND NOT EXISTS \
         (SELECT 1 FROM auth.users_extended u WHERE u.id = t.user_id)";
    let loaded_ref = &loaded;
    let count = |cond: String| async move {
        let loaded = loaded_ref;
        let n: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {loaded} t WHERE {cond}"),
                &[],
            )
            .await
            .map_err(err("counting rows of missing organizations or users"))?
            .get(0);
        let ids: Vec<uuid::Uuid> = tx
            .query(
                &format!(
                    "SELECT DISTINCT t.{} FROM {loaded} t WHERE {cond} ORDER BY 1 LIMIT 5",
                    if cond.starts_with("NOT") {
                        "org_id"
                    } else {
                        "user_id"
                    }
                ),
                &[],
            )
            .await
            .map_err(err("sampling ids of missing organizations or users"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok::<_, PartitionError>((n as u64, ids))
    };
    let (org_rows, sample_org_ids) = count(missing_org.clone()).await?;
    let (user_rows, sample_user_ids) = count(missing_user.to_owned()).await?;
    let mut removed = 0;
    if org_rows + user_rows > 0 {
        match restore.orphans {
            OrphanPolicy::Refuse => {
                return Err(PartitionError::OrphanRows {
                    org_rows,
                    user_rows,
                    sample_org_ids,
                    sample_user_ids,
                })
            }
            OrphanPolicy::Skip => {
                removed = tx
                    .execute(
                        &format!("DELETE FROM {loaded} t WHERE {missing_org} OR ({missing_user})"),
                        &[],
                    )
                    .await
                    .map_err(err("leaving out rows of missing organizations or users"))?;
            }
            OrphanPolicy::AsDeleted => {
                removed = tx
                    .execute(&format!("DELETE FROM {loaded} t WHERE {missing_org}"), &[])
                    .await
                    .map_err(err("leaving out rows of missing organizations"))?;
                tx.execute(
                    &format!("UPDATE {loaded} t SET user_id = NULL WHERE {missing_user}"),
                    &[],
                )
                .await
                .map_err(err("clearing user_id of missing users"))?;
            }
        }
    }
    Ok(RestoreReport {
        month: manifest.checked_month(data)?,
        partition: String::new(),
        rows_in_file: copied,
        rows_restored: copied - removed,
        orphan_org_rows: org_rows,
        orphan_user_rows: user_rows,
        sample_org_ids,
        sample_user_ids,
        merged: false,
        ensured_first: false,
        exclusive_lock_held: Duration::ZERO,
    })
}

/// Adds the loaded rows to the attached partition `name`.
async fn merge_into(
    tx: &Transaction<'_>,
    parent: &Parent,
    name: &str,
    path: &Path,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let q = parent.qualify(name);
    tx.execute(&format!("LOCK TABLE {q} IN SHARE ROW EXCLUSIVE MODE"), &[])
        .await
        .map_err(|e| {
            PartitionError::from_pg(
                format!("locking {name} against writes"),
                options.lock_timeout,
                e,
            )
        })?;
    let cols = &parent.columns;
    tx.execute(
        &format!(
            "INSERT INTO {q} ({cols}) SELECT {cols} FROM {}",
            quote_ident(LOADED)
        ),
        &[],
    )
    .await
    .map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            if let Some(db) = e.as_db_error() {
                return PartitionError::RowsAlreadyPresent {
                    path: path.display().to_string(),
                    partition: name.to_owned(),
                    server: Box::new(sync_connect::ServerError::from_db(db)),
                };
            }
        }
        PartitionError::from_pg(
            format!("adding the rows to {name}"),
            options.lock_timeout,
            e,
        )
    })?;
    Ok(())
}

/// Creates the month's table from the loaded rows, builds its indexes and
/// attaches it like `ensure` attaches a new month. Returns how long the
/// ACCESS EXCLUSIVE lock was held (until commit, measured to the end of this).
async fn attach_new(
    tx: &Transaction<'_>,
    parent: &Parent,
    month: Month,
    options: &PartitionOptions,
) -> Result<Duration, PartitionError> {
    let exec = |step: String, sql: String| async move {
        tx.execute(&sql, &[])
            .await
            .map_err(|e| PartitionError::from_pg(step, options.lock_timeout, e))
    };
    let name = month.partition_name();
    let q = parent.qualify(&name);
    let p = parent.qualified();
    let staging = parent.qualify(INDEX_STAGING);
    for free in [&q, &staging] {
        let taken: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[free])
            .await
            .map_err(|e| {
                PartitionError::from_pg("checking that the names are free", options.lock_timeout, e)
            })?
            .get(0);
        if taken {
            return Err(PartitionError::NameTaken {
                name: free.to_string(),
            });
        }
    }
    let bounds = format!(
        "FOR VALUES FROM ({}) TO ({})",
        month.start_literal(),
        month.next().start_literal()
    );
    exec(
        format!("creating {name}"),
        format!(
            "CREATE TABLE {q} (LIKE {p} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
             INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION, \
             CONSTRAINT {BOUNDS_CHECK} CHECK (created_at >= {} AND created_at < {}))",
            month.start_literal(),
            month.next().start_literal()
        ),
    )
    .await?;
    let cols = &parent.columns;
    exec(
        format!("writing the rows into {name}"),
        format!(
            "INSERT INTO {q} ({cols}) SELECT {cols} FROM {}",
            quote_ident(LOADED)
        ),
    )
    .await?;
    // PostgreSQL builds the parent's indexes (primary key included) on a table
    // attached to a partitioned table created LIKE it INCLUDING INDEXES — no
    // index SQL is written here or read from the catalog.
    let target = Target {
        name: name.clone(),
        from: month.start_literal(),
        to: Some(month.next().start_literal()),
    };
    build_indexes(tx, parent, INDEX_STAGING, &[target], options).await?;
    let reference = read_partitions(tx, parent, options.lock_timeout)
        .await?
        .into_iter()
        .filter(|p| p.kind != PartitionKind::Other)
        .max_by_key(|p| (p.kind == PartitionKind::CatchAll, p.month))
        .map(|p| p.name);
    let locked_at = Instant::now();
    lock_table_exclusive(tx, parent, options).await?;
    exec(
        format!("attaching {name} to sync_activity_log"),
        format!("ALTER TABLE {p} ATTACH PARTITION {q} {bounds}"),
    )
    .await?;
    exec(
        format!("dropping the bounds check of {name}"),
        format!("ALTER TABLE {q} DROP CONSTRAINT {BOUNDS_CHECK}"),
    )
    .await?;
    copy_security(tx, parent, reference.as_deref(), &name, options).await?;
    Ok(locked_at.elapsed())
}
