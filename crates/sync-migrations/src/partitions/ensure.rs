//! [`ensure_partitions`]: monthly partitions through the current month + N, rows
//! split out of the catch-all.

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio_postgres::{Client, Transaction};

use super::error::PartitionError;
use super::list::read_partitions;
use super::lock::{begin_serialised, is_other_run_busy, lock_table_exclusive};
use super::month::Month;
use super::options::{PartitionOptions, MAX_MONTHS_AHEAD};
use super::parent::{current_month, find_parent, quote_ident, Parent};
use super::plan::{plan, Plan, CATCH_ALL_NAME};
use super::security::copy_security;

/// Temporary name of the old catch-all while its rows are moved (same transaction).
const OLD_CATCH_ALL: &str = "sync_activity_log_ensure_old_future";
/// Temporary partitioned table the rows are routed through (same transaction).
const STAGING: &str = "sync_activity_log_ensure_staging";
/// Temporary partitioned table `LIKE sync_activity_log INCLUDING INDEXES`: attaching
/// the new tables to it makes PostgreSQL build the parent's indexes on them (same
/// transaction).
const INDEX_STAGING: &str = "sync_activity_log_ensure_index_staging";
/// Temporary CHECK constraint that lets ATTACH skip its validation scan.
const BOUNDS_CHECK: &str = "sync_activity_log_ensure_bounds";
/// Rows are copied in slices of this many heap blocks (16 MiB) to report progress.
const CHUNK_BLOCKS: i64 = 2048;

/// Progress of moving rows out of the old catch-all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MoveProgress {
    /// Rows copied so far.
    pub rows_moved: u64,
    /// The planner's estimate of all rows to move (`reltuples`), when known.
    pub rows_estimated: Option<u64>,
}

/// What one [`ensure_partitions`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnsureReport {
    /// The current UTC month ([`PartitionOptions::now`], else the server clock).
    pub current_month: Month,
    /// Monthly partitions are wanted through this month (current + months ahead).
    pub through: Month,
    /// Partitions this call created, in order (empty: nothing to do).
    pub created: Vec<String>,
    /// Where the catch-all started before the call (`None`: there was none).
    #[serde(with = "time::serde::rfc3339::option")]
    pub catch_all_from_before: Option<OffsetDateTime>,
    /// Where the catch-all starts now.
    #[serde(with = "time::serde::rfc3339::option")]
    pub catch_all_from: Option<OffsetDateTime>,
    /// Rows moved out of the old catch-all (into the new months or the new catch-all).
    pub rows_moved: u64,
    /// How long the ACCESS EXCLUSIVE lock on `sync_activity_log` was held (zero
    /// when nothing had to change). Serialised as milliseconds.
    #[serde(serialize_with = "as_millis")]
    pub exclusive_lock_held: Duration,
    /// How long SHARE ROW EXCLUSIVE was held on `organization` and
    /// `auth.users_extended` (from the DETACH of the old catch-all, or the first
    /// ATTACH, to commit): the time their writes waited. Serialised as milliseconds.
    #[serde(serialize_with = "as_millis")]
    pub referenced_tables_locked: Duration,
    /// `true` when another run (another replica) still held the partition
    /// advisory lock after [`PartitionOptions::wait_for_other_run`] and
    /// [`PartitionOptions::skip_if_busy`] was set: this call changed nothing and
    /// left the maintenance to that run (`catch_all_from*` are then `None`).
    pub other_run_busy: bool,
}

impl EnsureReport {
    /// True when this call changed the partition layout.
    pub fn changed(&self) -> bool {
        self.catch_all_from != self.catch_all_from_before || !self.created.is_empty()
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Makes sure monthly partitions `sync_activity_log_YYYY_MM` exist for every month
/// from the first one after the existing monthly partitions through the current
/// UTC month + `months_ahead`, followed by the catch-all `sync_activity_log_future`
/// (… TO MAXVALUE) starting right after them; rows of the old catch-all move into
/// their months (rows beyond the new range stay in the new catch-all).
///
/// Contract (one transaction; see the [module docs](super) for the locks): the
/// current month from [`PartitionOptions::now`] or the server's `now()`;
/// `pg_advisory_xact_lock(PARTITION_LOCK_KEY)` waiting at most
/// [`PartitionOptions::wait_for_other_run`]; then a local `lock_timeout` of
/// [`PartitionOptions::lock_timeout`]; read the layout from `pg_inherits`.
/// Nothing to do → commit, report [`changed()`](EnsureReport::changed) `false`,
/// no table lock taken. Otherwise `LOCK TABLE sync_activity_log IN ACCESS
/// EXCLUSIVE MODE`; rename the catch-all (and its indexes) out of the way while
/// still attached; create each new table `LIKE sync_activity_log` with a CHECK
/// on its bounds; route the old rows into them through a staging partitioned
/// table with `INSERT … SELECT` in 16 MiB slices (calling `progress` before the
/// first and after each slice); have PostgreSQL build the parent's primary key
/// and indexes on each new table in bulk (attaching them to a temporary
/// partitioned table `LIKE sync_activity_log INCLUDING INDEXES`, then detaching
/// them — no SQL is built from catalog text); `DETACH` the old catch-all;
/// `ATTACH` the new tables (attaching the indexes just built, cloning and
/// validating the foreign keys; the CHECK spares the partition-constraint
/// scan); drop the CHECKs; enable RLS and copy owner and grants of the old
/// catch-all; drop it; commit. Every statement is sent alone.
///
/// When another run holds the advisory lock for longer than
/// `wait_for_other_run` and [`PartitionOptions::skip_if_busy`] is set, returns
/// `Ok` with [`EnsureReport::other_run_busy`] `true` and nothing changed.
///
/// # Errors
///
/// Any failure rolls everything back. A lock not had in time →
/// [`PartitionError::LockTimeout`] (the advisory lock: after
/// `wait_for_other_run`, unless `skip_if_busy`; a table or DDL lock: after
/// `lock_timeout`); a partition that is neither a month nor the catch-all →
/// [`PartitionError::UnexpectedLayout`]; a table in the way of a new name →
/// [`PartitionError::NameTaken`]; `months_ahead` > [`MAX_MONTHS_AHEAD`] →
/// [`PartitionError::TooManyMonthsAhead`]; a horizon reaching 9999-12 (no room
/// for the catch-all after it) → [`PartitionError::InvalidMonth`]; no `sync_activity_log` →
/// [`PartitionError::NotMigrated`]; a failing statement →
/// [`PartitionError::Database`]; a broken connection →
/// [`PartitionError::ConnectionLost`].
///
/// ```no_run
/// # async fn f(client: &mut tokio_postgres::Client) -> Result<(), sync_migrations::partitions::PartitionError> {
/// use sync_migrations::partitions::{ensure_partitions, PartitionOptions};
/// let report = ensure_partitions(client, 3, &PartitionOptions::default(), |p| {
///     eprintln!("moved {} rows", p.rows_moved)
/// })
/// .await?;
/// println!("created {:?}", report.created);
/// # Ok(()) }
/// ```
#[tracing::instrument(name = "sync_migrations.partitions.ensure", target = "sync_migrations", skip_all, err(Display), fields(months_ahead = months_ahead, created = tracing::field::Empty, rows_moved = tracing::field::Empty))]
pub async fn ensure_partitions<F>(
    client: &mut Client,
    months_ahead: u32,
    options: &PartitionOptions,
    mut progress: F,
) -> Result<EnsureReport, PartitionError>
where
    F: FnMut(MoveProgress) + Send,
{
    if months_ahead > MAX_MONTHS_AHEAD {
        return Err(PartitionError::TooManyMonthsAhead {
            given: months_ahead,
            max: MAX_MONTHS_AHEAD,
        });
    }
    let tx = client.transaction().await.map_err(|e| {
        PartitionError::from_pg("beginning the transaction", options.lock_timeout, e)
    })?;
    // The clock first (`now()` is the transaction's start either way), so a
    // skipped run can still say which months it was asked for.
    let current = current_month(&tx, options).await?;
    let through = current.plus(months_ahead);
    if let Err(e) = begin_serialised(&tx, options).await {
        if options.skip_if_busy && is_other_run_busy(&e) {
            // The aborted transaction rolls back when `tx` is dropped.
            drop(tx);
            tracing::Span::current().record("created", 0);
            return Ok(EnsureReport {
                current_month: current,
                through,
                created: Vec::new(),
                catch_all_from_before: None,
                catch_all_from: None,
                rows_moved: 0,
                exclusive_lock_held: Duration::ZERO,
                referenced_tables_locked: Duration::ZERO,
                other_run_busy: true,
            });
        }
        return Err(e);
    }
    let parent = find_parent(&tx, options.lock_timeout).await?;
    let before = read_partitions(&tx, &parent, options.lock_timeout).await?;
    let catch_all_before = before
        .iter()
        .find(|p| p.kind == super::list::PartitionKind::CatchAll)
        .and_then(|p| p.from);
    let mut report = EnsureReport {
        current_month: current,
        through,
        created: Vec::new(),
        catch_all_from_before: catch_all_before,
        catch_all_from: catch_all_before,
        rows_moved: 0,
        exclusive_lock_held: Duration::ZERO,
        referenced_tables_locked: Duration::ZERO,
        other_run_busy: false,
    };
    if plan(&before, current, months_ahead)?.is_none() {
        commit(tx, options).await?;
        tracing::Span::current().record("created", 0);
        return Ok(report);
    }
    let locked_at = Instant::now();
    lock_table_exclusive(&tx, &parent, options).await?;
    // Re-read under the table lock: only DDL by hand could have changed it.
    let partitions = read_partitions(&tx, &parent, options.lock_timeout).await?;
    let Some(plan) = plan(&partitions, current, months_ahead)? else {
        commit(tx, options).await?;
        tracing::Span::current().record("created", 0);
        return Ok(report);
    };
    let (moved, fk_locked_at) = split(&tx, &parent, &plan, options, &mut progress).await?;
    commit(tx, options).await?;
    report.exclusive_lock_held = locked_at.elapsed();
    report.referenced_tables_locked = fk_locked_at.elapsed();
    report.rows_moved = moved;
    report.created = plan.months.iter().map(|m| m.partition_name()).collect();
    report.catch_all_from = Some(plan.catch_all_from.start());
    let span = tracing::Span::current();
    span.record("created", report.created.len());
    span.record("rows_moved", report.rows_moved);
    Ok(report)
}

async fn commit(tx: Transaction<'_>, options: &PartitionOptions) -> Result<(), PartitionError> {
    tx.commit()
        .await
        .map_err(|e| PartitionError::from_pg("committing", options.lock_timeout, e))
}

/// One table to create: name, lower bound literal, upper bound literal (`None`: MAXVALUE).
struct Target {
    name: String,
    from: String,
    to: Option<String>,
}

impl Target {
    fn bound_spec(&self) -> String {
        format!(
            "FOR VALUES FROM ({}) TO ({})",
            self.from,
            self.to.as_deref().unwrap_or("MAXVALUE")
        )
    }

    fn check(&self) -> String {
        match &self.to {
            Some(to) => format!("created_at >= {} AND created_at < {to}", self.from),
            None => format!("created_at >= {}", self.from),
        }
    }
}

async fn exec(
    tx: &Transaction<'_>,
    options: &PartitionOptions,
    step: impl Into<String>,
    sql: &str,
) -> Result<u64, PartitionError> {
    tx.execute(sql, &[])
        .await
        .map_err(|e| PartitionError::from_pg(step, options.lock_timeout, e))
}

/// Carries out `plan` under the table lock; returns the rows moved and when the
/// foreign-key bookkeeping (locking the referenced tables) started.
async fn split(
    tx: &Transaction<'_>,
    parent: &Parent,
    plan: &Plan,
    options: &PartitionOptions,
    progress: &mut (dyn FnMut(MoveProgress) + Send),
) -> Result<(u64, Instant), PartitionError> {
    let targets = targets_of(plan);
    check_names_free(tx, parent, plan, &targets, options).await?;
    let mut reference = plan.reference.clone();
    if let Some(name) = &plan.old_catch_all {
        rename_old_catch_all(tx, parent, name, options).await?;
        reference = Some(OLD_CATCH_ALL.to_owned());
    }
    create_targets(tx, parent, &targets, options).await?;
    let mut moved = 0;
    if plan.old_catch_all.is_some() {
        moved = move_rows(tx, parent, &targets, options, progress).await?;
    }
    build_indexes(tx, parent, &targets, options).await?;
    let fk_locked_at = swap_in(tx, parent, plan, &targets, reference.as_deref(), options).await?;
    Ok((moved, fk_locked_at))
}

/// The new tables: one per missing month, then the new catch-all.
fn targets_of(plan: &Plan) -> Vec<Target> {
    let mut targets: Vec<Target> = plan
        .months
        .iter()
        .map(|m| Target {
            name: m.partition_name(),
            from: m.start_literal(),
            to: Some(m.next().start_literal()),
        })
        .collect();
    targets.push(Target {
        name: CATCH_ALL_NAME.to_owned(),
        from: plan.catch_all_from.start_literal(),
        to: None,
    });
    targets
}

/// Every name about to be created must be free (the old catch-all's own name
/// is freed by renaming it first): else [`PartitionError::NameTaken`].
async fn check_names_free(
    tx: &Transaction<'_>,
    parent: &Parent,
    plan: &Plan,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let mut wanted: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    wanted.extend([STAGING, INDEX_STAGING, OLD_CATCH_ALL]);
    for name in wanted {
        if plan.old_catch_all.as_deref() == Some(name) {
            continue;
        }
        let q = parent.qualify(name);
        let taken: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&q])
            .await
            .map_err(|e| {
                PartitionError::from_pg(
                    format!("checking that {name} is free"),
                    options.lock_timeout,
                    e,
                )
            })?
            .get(0);
        if taken {
            return Err(PartitionError::NameTaken { name: q });
        }
    }

    Ok(())
}

/// Renames the old catch-all `name` (still attached) and its indexes, whose
/// names the new catch-all's indexes will take, out of the way. Needs no lock
/// beyond the one already held.
async fn rename_old_catch_all(
    tx: &Transaction<'_>,
    parent: &Parent,
    name: &str,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let q = parent.qualify(name);
    let indexes: Vec<String> = tx
        .query(
            "SELECT c.relname::text FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
              WHERE x.indrelid = $1::text::regclass ORDER BY c.relname",
            &[&q],
        )
        .await
        .map_err(|e| {
            PartitionError::from_pg(
                format!("reading the indexes of {name}"),
                options.lock_timeout,
                e,
            )
        })?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (i, index) in indexes.iter().enumerate() {
        exec(
            tx,
            options,
            format!("renaming index {index} of {name}"),
            &format!(
                "ALTER INDEX {} RENAME TO {}",
                parent.qualify(index),
                quote_ident(&format!("{OLD_CATCH_ALL}_idx{i}"))
            ),
        )
        .await?;
    }
    exec(
        tx,
        options,
        format!("renaming {name} to {OLD_CATCH_ALL}"),
        &format!("ALTER TABLE {q} RENAME TO {OLD_CATCH_ALL}"),
    )
    .await?;
    Ok(())
}

/// Creates each target as a plain table `LIKE` the parent, with a CHECK on its
/// bounds (so the final ATTACH skips its validation scan).
async fn create_targets(
    tx: &Transaction<'_>,
    parent: &Parent,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let p = parent.qualified();
    for t in targets {
        let q = parent.qualify(&t.name);
        exec(
            tx,
            options,
            format!("creating {}", t.name),
            &format!(
                "CREATE TABLE {q} (LIKE {p} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
                 INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION, \
                 CONSTRAINT {BOUNDS_CHECK} CHECK ({}))",
                t.check()
            ),
        )
        .await?;
    }

    Ok(())
}

/// Detaches the old catch-all, attaches the targets (dropping their bounds
/// CHECKs, giving them RLS, the TRUNCATE guard, owner and grants) and drops the
/// old catch-all. Returns when the foreign-key bookkeeping began: DETACH and
/// ATTACH take SHARE ROW EXCLUSIVE on organization and auth.users_extended until
/// commit.
async fn swap_in(
    tx: &Transaction<'_>,
    parent: &Parent,
    plan: &Plan,
    targets: &[Target],
    reference: Option<&str>,
    options: &PartitionOptions,
) -> Result<Instant, PartitionError> {
    let p = parent.qualified();
    let old = parent.qualify(OLD_CATCH_ALL);
    let fk_locked_at = Instant::now();
    if plan.old_catch_all.is_some() {
        exec(
            tx,
            options,
            format!("detaching {OLD_CATCH_ALL}"),
            &format!("ALTER TABLE {p} DETACH PARTITION {old}"),
        )
        .await?;
    }
    for t in targets {
        let q = parent.qualify(&t.name);
        exec(
            tx,
            options,
            format!("attaching {} to sync_activity_log", t.name),
            &format!("ALTER TABLE {p} ATTACH PARTITION {q} {}", t.bound_spec()),
        )
        .await?;
        exec(
            tx,
            options,
            format!("dropping the bounds check of {}", t.name),
            &format!("ALTER TABLE {q} DROP CONSTRAINT {BOUNDS_CHECK}"),
        )
        .await?;
        copy_security(tx, parent, reference, &t.name, options).await?;
    }

    if plan.old_catch_all.is_some() {
        exec(
            tx,
            options,
            format!("dropping the old catch-all {OLD_CATCH_ALL}"),
            &format!("DROP TABLE {old}"),
        )
        .await?;
    }
    Ok(fk_locked_at)
}

/// Builds the parent's indexes (primary key included) on the standalone
/// `targets`, after their rows are in, so the final ATTACH finds and attaches
/// them instead of building them while the referenced tables are locked.
///
/// No SQL is assembled from catalog text: PostgreSQL itself copies the index
/// definitions into a partitioned table `LIKE sync_activity_log INCLUDING
/// INDEXES`, and attaching each target to it builds them (in bulk, named as
/// `CREATE TABLE … PARTITION OF` would name them); the targets are then detached
/// and that table dropped. Every statement names only tables we name ourselves.
async fn build_indexes(
    tx: &Transaction<'_>,
    parent: &Parent,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let p = parent.qualified();
    let staging = parent.qualify(INDEX_STAGING);
    // Attaching each target builds the parent's indexes on it.
    assemble_staging(
        tx,
        parent,
        &staging,
        &format!(
            "CREATE TABLE {staging} (LIKE {p} INCLUDING INDEXES) PARTITION BY RANGE (created_at)"
        ),
        "index staging table",
        targets,
        options,
    )
    .await?;
    dismantle_staging(
        tx,
        parent,
        &staging,
        "index staging table",
        targets,
        options,
    )
    .await
}

/// Creates the staging partitioned table `staging` with `create` (what `label`
/// names in messages) and attaches every target to it.
async fn assemble_staging(
    tx: &Transaction<'_>,
    parent: &Parent,
    staging: &str,
    create: &str,
    label: &str,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    exec(tx, options, format!("creating the {label}"), create).await?;
    for t in targets {
        exec(
            tx,
            options,
            format!("attaching {} to the {label}", t.name),
            &format!(
                "ALTER TABLE {staging} ATTACH PARTITION {} {}",
                parent.qualify(&t.name),
                t.bound_spec()
            ),
        )
        .await?;
    }
    Ok(())
}

/// Detaches every target from the staging partitioned table `staging` (what
/// `label` names in messages), then drops it.
async fn dismantle_staging(
    tx: &Transaction<'_>,
    parent: &Parent,
    staging: &str,
    label: &str,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    for t in targets {
        exec(
            tx,
            options,
            format!("detaching {} from the {label}", t.name),
            &format!(
                "ALTER TABLE {staging} DETACH PARTITION {}",
                parent.qualify(&t.name)
            ),
        )
        .await?;
    }
    exec(
        tx,
        options,
        format!("dropping the {label}"),
        &format!("DROP TABLE {staging}"),
    )
    .await
    .map(drop)
}

/// Routes every row of the old catch-all into the (not yet attached) targets
/// through a staging partitioned table without indexes or foreign keys, in slices
/// of [`CHUNK_BLOCKS`] heap blocks (TID range scans), so the whole move is one
/// sequential pass and the indexes are built afterwards, in bulk, by ATTACH.
async fn move_rows(
    tx: &Transaction<'_>,
    parent: &Parent,
    targets: &[Target],
    options: &PartitionOptions,
    progress: &mut (dyn FnMut(MoveProgress) + Send),
) -> Result<u64, PartitionError> {
    let p = parent.qualified();
    let old = parent.qualify(OLD_CATCH_ALL);
    let staging = parent.qualify(STAGING);
    let err = |step: String| move |e| PartitionError::from_pg(step, options.lock_timeout, e);
    let row = tx
        .query_one(
            "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::int8, \
                    reltuples::int8 FROM pg_class WHERE oid = $1::text::regclass",
            &[&old],
        )
        .await
        .map_err(err(format!("measuring {OLD_CATCH_ALL}")))?;
    let (blocks, reltuples): (i64, i64) = (row.get(0), row.get(1));
    let rows_estimated = u64::try_from(reltuples).ok();
    let mut moved: u64 = 0;
    progress(MoveProgress {
        rows_moved: 0,
        rows_estimated,
    });
    if blocks == 0 {
        return Ok(0);
    }
    assemble_staging(
        tx,
        parent,
        &staging,
        &format!("CREATE TABLE {staging} (LIKE {p}) PARTITION BY RANGE (created_at)"),
        "staging table",
        targets,
        options,
    )
    .await?;
    let cols = &parent.columns;
    let mut start = 0i64;
    while start < blocks {
        let end = start + CHUNK_BLOCKS;
        // The last slice has no upper bound, so no row can be left behind.
        let range = if end >= blocks {
            format!("ctid >= '({start},0)'::tid")
        } else {
            format!("ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid")
        };
        moved += exec(
            tx,
            options,
            format!("moving rows of {OLD_CATCH_ALL} (blocks from {start})"),
            &format!("INSERT INTO {staging} ({cols}) SELECT {cols} FROM {old} WHERE {range}"),
        )
        .await?;
        progress(MoveProgress {
            rows_moved: moved,
            rows_estimated,
        });
        start = end;
    }
    dismantle_staging(tx, parent, &staging, "staging table", targets, options).await?;
    Ok(moved)
}
