//! [`ensure_partitions`]: monthly partitions through the current month + N, rows
//! split out of the catch-all.

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio_postgres::{Client, Transaction};

use super::error::PartitionError;
use super::list::read_partitions;
use super::lock::{begin_serialised, is_other_run_busy, lock_table_exclusive};
use super::month::Month;
use super::online;
use super::options::{PartitionOptions, MAX_MONTHS_AHEAD};
use super::parent::{current_month, find_parent, Parent};
use super::plan::{plan as make_plan, Plan, CATCH_ALL_NAME};
use super::security::copy_security;

/// Temporary partitioned table `LIKE sync_activity_log INCLUDING INDEXES`: attaching
/// the new tables to it makes PostgreSQL build the parent's indexes on them (same
/// transaction).
const INDEX_STAGING: &str = "sync_activity_log_ensure_index_staging";
/// Temporary CHECK constraint that lets ATTACH skip its validation scan.
const BOUNDS_CHECK: &str = "sync_activity_log_ensure_bounds";

/// Progress of moving rows out of the old catch-all (reported after each
/// committed copy batch, and once with 0 when a split starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MoveProgress {
    /// Rows copied so far (by this and earlier, interrupted runs).
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
    /// Rows moved out of the old catch-all (into the new months or the new
    /// catch-all), including rows written to it during the split; reported by
    /// the run that finished the split (0 for runs that only helped).
    pub rows_moved: u64,
    /// How long the ACCESS EXCLUSIVE lock on `sync_activity_log` was held: the
    /// final step of a split (zero when nothing had to change or another run
    /// finished). Serialised as milliseconds.
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
/// Contract (see the [module docs](super) for the steps and locks): the
/// current month from [`PartitionOptions::now`] or the server's `now()`;
/// `pg_advisory_xact_lock(PARTITION_LOCK_KEY)` waiting at most
/// [`PartitionOptions::wait_for_other_run`]; the layout from `pg_inherits`. An
/// unfinished split (an earlier run interrupted) is resumed first. Nothing to
/// do → commit, report [`changed()`](EnsureReport::changed) `false`, no table
/// lock taken. A catch-all to split → the online split: rows copied in batches
/// (one transaction each, `progress` called after each) while writers go on,
/// ACCESS EXCLUSIVE only for the short final step. No catch-all → the new
/// tables are created, indexed and attached in one transaction under ACCESS
/// EXCLUSIVE (no rows to move). Every statement is sent alone; identifiers are
/// quoted, values are parameters.
///
/// When [`PartitionOptions::skip_if_busy`] is set and another run holds the
/// advisory lock for longer than `wait_for_other_run`, or is working on a split
/// (live backend, heartbeat younger than 60 s), returns `Ok` with
/// [`EnsureReport::other_run_busy`] `true`, leaving the work to that run.
///
/// # Errors
///
/// A failure rolls back the step it happened in; steps of a split already
/// committed stay and the next call resumes from them. A lock not had in time →
/// [`PartitionError::LockTimeout`] (the advisory lock: after
/// `wait_for_other_run`, unless `skip_if_busy`; a table or DDL lock: after
/// `lock_timeout`); a partition that is neither a month nor the catch-all →
/// [`PartitionError::UnexpectedLayout`]; a table in the way of a new name →
/// [`PartitionError::NameTaken`]; `months_ahead` > [`MAX_MONTHS_AHEAD`] →
/// [`PartitionError::TooManyMonthsAhead`]; a horizon reaching 9999-12 (no room
/// for the catch-all after it) → [`PartitionError::InvalidMonth`]; an
/// unfinished split whose catch-all was detached or dropped by hand →
/// [`PartitionError::StaleSplitState`]; no `sync_activity_log` →
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
    let mut report: Option<EnsureReport> = None;
    let mut prepare_waited = Duration::ZERO;
    // Round 1 may finish a split an earlier run left unfinished (with its own
    // horizon); later rounds do what is still missing.
    for _round in 0..4 {
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
                return Ok(busy(report, current, through));
            }
            return Err(e);
        }
        let parent = find_parent(&tx, options.lock_timeout).await?;
        let before = read_partitions(&tx, &parent, options.lock_timeout).await?;
        let catch_all_now = before
            .iter()
            .find(|p| p.kind == super::list::PartitionKind::CatchAll)
            .and_then(|p| p.from);
        let r = report.get_or_insert_with(|| EnsureReport {
            current_month: current,
            through,
            created: Vec::new(),
            catch_all_from_before: catch_all_now,
            catch_all_from: catch_all_now,
            rows_moved: 0,
            exclusive_lock_held: Duration::ZERO,
            referenced_tables_locked: Duration::ZERO,
            other_run_busy: false,
        });
        // `catch_all_from` changes only with what this call does (a split
        // finished by another run is not this call's change).
        let _ = r;
        if online::has_state(&tx, &parent, options).await? {
            if options.skip_if_busy && online::other_run_active(&tx, &parent, options).await? {
                drop(tx);
                return Ok(busy(report, current, through));
            }
            commit(tx, options).await?;
            if !drive(client, &parent, options, &mut progress, &mut report).await? {
                return Ok(busy(report, current, through));
            }
            continue;
        }
        let Some(plan) = make_plan(&before, current, months_ahead)? else {
            commit(tx, options).await?;
            let r = report.expect("report set above");
            let span = tracing::Span::current();
            span.record("created", r.created.len());
            span.record("rows_moved", r.rows_moved);
            return Ok(r);
        };
        let targets = targets_of(&plan, online::NEW_CATCH_ALL);
        if plan.old_catch_all.is_none() {
            // Nothing to move: create and attach in this transaction.
            let locked_at = Instant::now();
            lock_table_exclusive(&tx, &parent, options).await?;
            let partitions = read_partitions(&tx, &parent, options.lock_timeout).await?;
            let Some(plan) = make_plan(&partitions, current, months_ahead)? else {
                commit(tx, options).await?;
                continue;
            };
            let fk_locked_at = split(&tx, &parent, &plan, options).await?;
            commit(tx, options).await?;
            let r = report.as_mut().expect("report set above");
            r.exclusive_lock_held += locked_at.elapsed();
            r.referenced_tables_locked += fk_locked_at.elapsed();
            r.created
                .extend(plan.months.iter().map(|m| m.partition_name()));
            r.catch_all_from = Some(plan.catch_all_from.start());
            continue;
        }
        check_names_free(&tx, &parent, &targets, options).await?;
        match online::prepare(&tx, &parent, &plan, &targets, options).await {
            Ok(()) => commit(tx, options).await?,
            Err(e) if e.is_lock_timeout() => {
                // The capture trigger waited for a writer too long: writers
                // queued behind it are released; try again shortly.
                drop(tx);
                prepare_waited += online::ATTEMPT_LOCK_TIMEOUT.min(options.lock_timeout);
                if prepare_waited >= options.lock_timeout {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        }
        progress(MoveProgress {
            rows_moved: 0,
            rows_estimated: None,
        });
        if !drive(client, &parent, options, &mut progress, &mut report).await? {
            let r = report.expect("report set above");
            return Ok(busy(Some(r), current, through));
        }
    }
    // Each round completes a split or returns; four rounds cannot all be needed.
    Ok(report.expect("at least one round ran"))
}

/// Runs [`online::run`] and adds what it did to `report`; `false` when another
/// run is busy with it and `skip_if_busy` is set.
async fn drive<F>(
    client: &mut Client,
    parent: &Parent,
    options: &PartitionOptions,
    progress: &mut F,
    report: &mut Option<EnsureReport>,
) -> Result<bool, PartitionError>
where
    F: FnMut(MoveProgress) + Send,
{
    match online::run(client, parent, options, progress).await? {
        online::Outcome::Finished(f) => {
            let r = report.as_mut().expect("report set before");
            r.created.extend(f.created);
            r.catch_all_from = Some(f.catch_all_from);
            r.rows_moved += f.rows_moved;
            r.exclusive_lock_held += f.exclusive_lock_held;
            r.referenced_tables_locked += f.referenced_tables_locked;
            Ok(true)
        }
        online::Outcome::FinishedElsewhere => Ok(true),
        online::Outcome::Busy => Ok(false),
    }
}

/// The report of a call that left the work to another run.
fn busy(report: Option<EnsureReport>, current: Month, through: Month) -> EnsureReport {
    tracing::Span::current().record("created", 0);
    let mut r = report.unwrap_or(EnsureReport {
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
    if r.created.is_empty() {
        r.catch_all_from_before = None;
        r.catch_all_from = None;
    }
    r.other_run_busy = true;
    r
}

async fn commit(tx: Transaction<'_>, options: &PartitionOptions) -> Result<(), PartitionError> {
    tx.commit()
        .await
        .map_err(|e| PartitionError::from_pg("committing", options.lock_timeout, e))
}

/// One table to create: name, lower bound literal, upper bound literal (`None`: MAXVALUE).
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) from: String,
    pub(crate) to: Option<String>,
}

impl Target {
    pub(super) fn bound_spec(&self) -> String {
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

pub(super) async fn exec(
    tx: &Transaction<'_>,
    options: &PartitionOptions,
    step: impl Into<String>,
    sql: &str,
) -> Result<u64, PartitionError> {
    tx.execute(sql, &[])
        .await
        .map_err(|e| PartitionError::from_pg(step, options.lock_timeout, e))
}

/// Carries out `plan` (which has no old catch-all: no rows to move) under the
/// table lock; returns when the foreign-key bookkeeping (locking the
/// referenced tables) started.
async fn split(
    tx: &Transaction<'_>,
    parent: &Parent,
    plan: &Plan,
    options: &PartitionOptions,
) -> Result<Instant, PartitionError> {
    let targets = targets_of(plan, CATCH_ALL_NAME);
    check_names_free(tx, parent, &targets, options).await?;
    create_targets(tx, parent, &targets, options).await?;
    build_indexes(tx, parent, INDEX_STAGING, &targets, options).await?;
    swap_in(tx, parent, &targets, plan.reference.as_deref(), options).await
}

/// The new tables: one per missing month, then the new catch-all.
fn targets_of(plan: &Plan, catch_all: &str) -> Vec<Target> {
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
        name: catch_all.to_owned(),
        from: plan.catch_all_from.start_literal(),
        to: None,
    });
    targets
}

/// Every name about to be created (the targets, the working tables of a
/// split, the capture function) must be free: else [`PartitionError::NameTaken`].
async fn check_names_free(
    tx: &Transaction<'_>,
    parent: &Parent,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let mut wanted: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    wanted.extend([INDEX_STAGING, online::STAGING, online::STATE, online::DELTA]);
    for name in wanted {
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
    let f = format!("{}()", parent.qualify(online::CAPTURE));
    let taken: bool = tx
        .query_one("SELECT to_regprocedure($1) IS NOT NULL", &[&f])
        .await
        .map_err(|e| {
            PartitionError::from_pg(
                "checking that the capture function name is free",
                options.lock_timeout,
                e,
            )
        })?
        .get(0);
    if taken {
        return Err(PartitionError::NameTaken { name: f });
    }
    Ok(())
}

/// Creates each target as a plain table `LIKE` the parent, with a CHECK on its
/// bounds (so the final ATTACH skips its validation scan).
pub(super) async fn create_targets(
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

/// Attaches the targets (dropping their bounds CHECKs, giving them RLS, the
/// TRUNCATE guard, owner and grants of `reference`). Returns when the
/// foreign-key bookkeeping began: ATTACH takes SHARE ROW EXCLUSIVE on
/// organization and auth.users_extended until commit.
async fn swap_in(
    tx: &Transaction<'_>,
    parent: &Parent,
    targets: &[Target],
    reference: Option<&str>,
    options: &PartitionOptions,
) -> Result<Instant, PartitionError> {
    let fk_locked_at = Instant::now();
    for t in targets {
        attach_to_parent(tx, parent, t, options).await?;
        copy_security(tx, parent, reference, &t.name, options).await?;
    }
    Ok(fk_locked_at)
}

/// Attaches the standalone `target` to `sync_activity_log` (its bounds CHECK
/// lets ATTACH skip the validation scan), then drops that CHECK.
pub(crate) async fn attach_to_parent(
    tx: &Transaction<'_>,
    parent: &Parent,
    target: &Target,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let p = parent.qualified();
    let q = parent.qualify(&target.name);
    exec(
        tx,
        options,
        format!("attaching {} to sync_activity_log", target.name),
        &format!(
            "ALTER TABLE {p} ATTACH PARTITION {q} {}",
            target.bound_spec()
        ),
    )
    .await?;
    exec(
        tx,
        options,
        format!("dropping the bounds check of {}", target.name),
        &format!("ALTER TABLE {q} DROP CONSTRAINT {BOUNDS_CHECK}"),
    )
    .await
    .map(drop)
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
/// `staging_name` (unqualified, in the parent's schema) names that table; it
/// must be free.
pub(crate) async fn build_indexes(
    tx: &Transaction<'_>,
    parent: &Parent,
    staging_name: &str,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let p = parent.qualified();
    let staging = parent.qualify(staging_name);
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
pub(super) async fn assemble_staging(
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
pub(super) async fn dismantle_staging(
    tx: &Transaction<'_>,
    parent: &Parent,
    staging: &str,
    label: &str,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    for t in targets {
        detach_from_staging(tx, parent, staging, label, t, options).await?;
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

/// Detaches `target` from the staging partitioned table `staging` (what
/// `label` names in messages).
pub(crate) async fn detach_from_staging(
    tx: &Transaction<'_>,
    parent: &Parent,
    staging: &str,
    label: &str,
    target: &Target,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    exec(
        tx,
        options,
        format!("detaching {} from the {label}", target.name),
        &format!(
            "ALTER TABLE {staging} DETACH PARTITION {}",
            parent.qualify(&target.name)
        ),
    )
    .await
    .map(drop)
}
