//! The online split of the catch-all: rows are copied into the new months
//! outside the exclusive lock, in resumable steps; only the rows changed
//! meanwhile are dealt with under it (see the [module docs](super) for why
//! nothing is lost or duplicated).
//!
//! Working objects (in the parent's schema, named deterministically, owned by
//! the role running `ensure`, no privileges for anyone else, all dropped by the
//! final step): the state table [`STATE`] (one row), the delta table
//! [`DELTA`] filled by the trigger [`CAPTURE`] on the old catch-all, the
//! routing table [`STAGING`] (partitioned, the new tables attached to it) and
//! the new tables themselves (the months under their final names, the new
//! catch-all as [`NEW_CATCH_ALL`]).

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio_postgres::{Client, IsolationLevel, Transaction};

use super::ensure::{
    assemble_staging, attach_to_parent, create_targets, detach_from_staging, dismantle_staging,
    exec, Target,
};
use super::error::PartitionError;
use super::list::{read_partitions, PartitionKind};
use super::lock::{begin_serialised, is_other_run_busy, set_lock_timeout};
use super::month::Month;
use super::options::PartitionOptions;
use super::parent::{quote_ident, Parent};
use super::plan::{Plan, CATCH_ALL_NAME};
use super::security::{copy_security, revoke_all};
use super::MoveProgress;

/// The state of an unfinished split (one row).
pub(crate) const STATE: &str = "sync_activity_log_split_state";
/// Keys `(id, created_at)` of the old catch-all's rows written since the split began.
pub(crate) const DELTA: &str = "sync_activity_log_split_delta";
/// The trigger (and its function) on the old catch-all that fills [`DELTA`].
pub(crate) const CAPTURE: &str = "sync_activity_log_split_capture";
/// The partitioned table the copies are routed through.
pub(crate) const STAGING: &str = "sync_activity_log_split_staging";
/// The new catch-all until it replaces the old one.
pub(crate) const NEW_CATCH_ALL: &str = "sync_activity_log_split_future";
/// A heartbeat younger than this, from a live backend, means another run is
/// working on the split.
const BUSY_HEARTBEAT: &str = "60 seconds";
/// The longest single wait for a lock the writers queue behind (the capture
/// trigger, the final step); retried until [`PartitionOptions::lock_timeout`]
/// is spent.
pub(crate) const ATTEMPT_LOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// What a finished split did.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) created: Vec<String>,
    pub(crate) catch_all_from: OffsetDateTime,
    pub(crate) rows_moved: u64,
    /// From the ACCESS EXCLUSIVE lock to commit.
    pub(crate) exclusive_lock_held: Duration,
    /// From the DROP of the old catch-all (foreign-key bookkeeping) to commit.
    pub(crate) referenced_tables_locked: Duration,
}

/// [`Finished`] before commit: instants instead of durations.
struct Done {
    created: Vec<String>,
    catch_all_from: OffsetDateTime,
    rows_moved: u64,
    locked_at: Instant,
    fk_locked_at: Instant,
}

/// How a call to [`run`] ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// This call did the final step.
    Finished(Finished),
    /// Another run finished it (the state is gone).
    FinishedElsewhere,
    /// Another run is working on it and `skip_if_busy` is set.
    Busy,
}

/// The unfinished split as recorded in [`STATE`].
#[derive(Debug, Clone)]
struct State {
    old_catch_all: u32,
    first_month: OffsetDateTime,
    catch_all_from: OffsetDateTime,
    phase: String,
    next_block: i64,
    end_block: Option<i64>,
    rows_moved: i64,
    rows_estimated: Option<i64>,
}

impl State {
    fn targets(&self) -> Result<Vec<Target>, PartitionError> {
        let invalid = || PartitionError::StaleSplitState {
            detail: "its month bounds are not month starts".into(),
        };
        let mut m = Month::starting_at(self.first_month).ok_or_else(invalid)?;
        let end = Month::starting_at(self.catch_all_from).ok_or_else(invalid)?;
        let mut targets = Vec::new();
        while m < end {
            targets.push(Target {
                name: m.partition_name(),
                from: m.start_literal(),
                to: Some(m.next().start_literal()),
            });
            m = m.next();
        }
        targets.push(Target {
            name: NEW_CATCH_ALL.to_owned(),
            from: end.start_literal(),
            to: None,
        });
        Ok(targets)
    }
}

fn pg(
    step: impl Into<String>,
    options: &PartitionOptions,
) -> impl FnOnce(tokio_postgres::Error) -> PartitionError {
    let step = step.into();
    let lt = options.lock_timeout;
    move |e| PartitionError::from_pg(step, lt, e)
}

/// True when a split is under way (its state table exists).
pub(crate) async fn has_state(
    tx: &Transaction<'_>,
    parent: &Parent,
    options: &PartitionOptions,
) -> Result<bool, PartitionError> {
    // A catalog query in this statement's snapshot (taken after the advisory
    // lock), not `to_regclass`, which takes no lock and may see a stale cache
    // entry of a state table another run just dropped.
    Ok(tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                             WHERE n.nspname = $1 AND c.relname = $2)",
            &[&parent.schema, &STATE],
        )
        .await
        .map_err(pg("looking for an unfinished split", options))?
        .get(0))
}

async fn read_state(
    tx: &Transaction<'_>,
    parent: &Parent,
    options: &PartitionOptions,
) -> Result<Option<State>, PartitionError> {
    if !has_state(tx, parent, options).await? {
        return Ok(None);
    }
    let row = tx
        .query_opt(
            &format!(
                "SELECT old_catch_all, first_month, catch_all_from, phase, next_block, \
                        end_block, rows_moved, rows_estimated FROM {} FOR UPDATE",
                parent.qualify(STATE)
            ),
            &[],
        )
        .await;
    let row = match row {
        // Dropped by a run that finished the split after our check.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(None)
        }
        r => r.map_err(pg("reading the split state", options))?,
    };
    let Some(r) = row else {
        return Err(PartitionError::StaleSplitState {
            detail: format!("{STATE} is empty"),
        });
    };
    Ok(Some(State {
        old_catch_all: r.get(0),
        first_month: r.get(1),
        catch_all_from: r.get(2),
        phase: r.get(3),
        next_block: r.get(4),
        end_block: r.get(5),
        rows_moved: r.get(6),
        rows_estimated: r.get(7),
    }))
}

/// True when another live session advanced the split within [`BUSY_HEARTBEAT`].
pub(crate) async fn other_run_active(
    tx: &Transaction<'_>,
    parent: &Parent,
    options: &PartitionOptions,
) -> Result<bool, PartitionError> {
    Ok(tx
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM {} s JOIN pg_stat_activity a \
                                  ON a.pid = s.worker_pid AND a.backend_start = s.worker_started \
                                 WHERE s.worker_pid <> pg_backend_pid() \
                                   AND s.heartbeat > clock_timestamp() - $1::text::interval)",
                parent.qualify(STATE)
            ),
            &[&BUSY_HEARTBEAT],
        )
        .await
        .map_err(pg("checking whether another run is splitting", options))?
        .get(0))
}

/// Starts a split of `plan` (which has an old catch-all) in `tx` (holding the
/// advisory lock): creates the working objects and the new tables, and the
/// capture trigger last (its lock, which writers queue behind, waits at most
/// [`ATTEMPT_LOCK_TIMEOUT`]). The caller commits.
pub(crate) async fn prepare(
    tx: &Transaction<'_>,
    parent: &Parent,
    plan: &Plan,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let old_name = plan.old_catch_all.as_deref().expect("a catch-all to split");
    let old = parent.qualify(old_name);
    let p = parent.qualified();
    let first = plan
        .months
        .first()
        .map_or(plan.catch_all_from, |m| *m)
        .start();
    let state = parent.qualify(STATE);
    let delta = parent.qualify(DELTA);
    exec(
        tx,
        options,
        format!("creating {STATE}"),
        &format!(
            "CREATE TABLE {state} (old_catch_all oid NOT NULL, first_month timestamptz NOT NULL, \
             catch_all_from timestamptz NOT NULL, phase text NOT NULL, \
             next_block bigint NOT NULL DEFAULT 0, end_block bigint, \
             rows_moved bigint NOT NULL DEFAULT 0, rows_estimated bigint, \
             worker_pid integer, worker_started timestamptz, heartbeat timestamptz)"
        ),
    )
    .await?;
    revoke_all(tx, parent, STATE, options).await?;
    tx.execute(
        &format!(
            "INSERT INTO {state} (old_catch_all, first_month, catch_all_from, phase, rows_estimated) \
             SELECT c.oid, $2, $3, 'copy', nullif(greatest(c.reltuples, -1), -1)::int8 \
               FROM pg_class c WHERE c.oid = $1::text::regclass"
        ),
        &[&old, &first, &plan.catch_all_from.start()],
    )
    .await
    .map_err(pg("recording the split state", options))?;
    exec(
        tx,
        options,
        format!("creating {DELTA}"),
        &format!("CREATE TABLE {delta} AS SELECT id, created_at FROM {p} WITH NO DATA"),
    )
    .await?;
    revoke_all(tx, parent, DELTA, options).await?;
    let function = parent.qualify(CAPTURE);
    exec(
        tx,
        options,
        "creating the capture function",
        &format!(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
             SET search_path = {}, pg_temp AS $fn$\n\
             BEGIN\n\
                 IF TG_OP <> 'INSERT' THEN\n\
                     INSERT INTO {DELTA} (id, created_at) VALUES (OLD.id, OLD.created_at);\n\
                 END IF;\n\
                 IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND \
                    (OLD.id, OLD.created_at) IS DISTINCT FROM (NEW.id, NEW.created_at)) THEN\n\
                     INSERT INTO {DELTA} (id, created_at) VALUES (NEW.id, NEW.created_at);\n\
                 END IF;\n\
                 RETURN NULL;\n\
             END\n$fn$",
            quote_ident(&parent.schema)
        ),
    )
    .await?;
    exec(
        tx,
        options,
        "revoking EXECUTE on the capture function",
        &format!("REVOKE ALL ON FUNCTION {function}() FROM PUBLIC"),
    )
    .await?;
    create_targets(tx, parent, targets, options).await?;
    for t in targets {
        revoke_all(tx, parent, &t.name, options).await?;
    }
    let staging = parent.qualify(STAGING);
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
    revoke_all(tx, parent, STAGING, options).await?;
    heartbeat(tx, parent, options).await?;
    // Last: SHARE ROW EXCLUSIVE on the old catch-all until commit. It waits for
    // the writers in flight; new writers queue behind it, so the wait is short.
    set_lock_timeout(
        tx,
        millis(ATTEMPT_LOCK_TIMEOUT.min(options.lock_timeout)),
        options,
    )
    .await?;
    exec(
        tx,
        options,
        format!("creating the capture trigger on {old_name}"),
        &format!(
            "CREATE TRIGGER {CAPTURE} AFTER INSERT OR UPDATE OR DELETE ON {old} \
             FOR EACH ROW EXECUTE FUNCTION {function}()"
        ),
    )
    .await?;
    Ok(())
}

fn millis(d: Duration) -> i64 {
    d.as_millis().clamp(1, i32::MAX as u128) as i64
}

async fn heartbeat(
    tx: &Transaction<'_>,
    parent: &Parent,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    exec(
        tx,
        options,
        "recording the split heartbeat",
        &format!(
            "UPDATE {} SET worker_pid = pg_backend_pid(), heartbeat = clock_timestamp(), \
                    worker_started = (SELECT backend_start FROM pg_stat_activity \
                                       WHERE pid = pg_backend_pid())",
            parent.qualify(STATE)
        ),
    )
    .await
    .map(drop)
}

/// Drives the split recorded in [`STATE`] to its end, one transaction per step
/// (each under the partition advisory lock), calling `progress` after each copy
/// batch. Another run may take turns: every step starts from the recorded state.
pub(crate) async fn run(
    client: &mut Client,
    parent: &Parent,
    options: &PartitionOptions,
    progress: &mut (dyn FnMut(MoveProgress) + Send),
) -> Result<Outcome, PartitionError> {
    let mut lock_waited = Duration::ZERO;
    loop {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(pg("beginning a split step", options))?;
        if let Err(e) = begin_serialised(&tx, options).await {
            if options.skip_if_busy && is_other_run_busy(&e) {
                return Ok(Outcome::Busy);
            }
            return Err(e);
        }
        let Some(state) = read_state(&tx, parent, options).await? else {
            return Ok(Outcome::FinishedElsewhere);
        };
        check_old_attached(&tx, parent, &state, options).await?;
        let targets = state.targets()?;
        match state.phase.as_str() {
            "copy" => {
                let moved = copy_batch(&tx, parent, &state, options).await?;
                heartbeat(&tx, parent, options).await?;
                commit(tx, options).await?;
                progress(MoveProgress {
                    rows_moved: moved,
                    rows_estimated: state.rows_estimated.and_then(|n| u64::try_from(n).ok()),
                });
            }
            "index" => {
                // Rows copied twice (before and after an update) are in the
                // delta: applying it first leaves every key once, so the
                // unique index can be built.
                catch_up(&tx, parent, &state, options, false).await?;
                dismantle_staging(
                    &tx,
                    parent,
                    &parent.qualify(STAGING),
                    "staging table",
                    &targets,
                    options,
                )
                .await?;
                let staging = parent.qualify(STAGING);
                let p = parent.qualified();
                assemble_staging(
                    &tx,
                    parent,
                    &staging,
                    &format!(
                        "CREATE TABLE {staging} (LIKE {p} INCLUDING INDEXES) \
                         PARTITION BY RANGE (created_at)"
                    ),
                    "staging table (building indexes)",
                    &targets,
                    options,
                )
                .await?;
                revoke_all(&tx, parent, STAGING, options).await?;
                set_phase(&tx, parent, "fk", options).await?;
                heartbeat(&tx, parent, options).await?;
                commit(tx, options).await?;
            }
            "fk" => {
                set_lock_timeout(
                    &tx,
                    millis(ATTEMPT_LOCK_TIMEOUT.min(options.lock_timeout)),
                    options,
                )
                .await?;
                match add_foreign_keys(&tx, parent, &targets, options).await {
                    Ok(()) => {
                        set_phase(&tx, parent, "validate", options).await?;
                        heartbeat(&tx, parent, options).await?;
                        commit(tx, options).await?;
                    }
                    Err(e) if e.is_lock_timeout() => {
                        drop(tx);
                        lock_waited = backoff(lock_waited, options, e).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            "validate" => {
                validate_foreign_keys(&tx, parent, &targets, options).await?;
                set_phase(&tx, parent, "catchup", options).await?;
                heartbeat(&tx, parent, options).await?;
                commit(tx, options).await?;
            }
            "catchup" => {
                // Outside the lock: what writers changed meanwhile.
                drop(tx);
                let tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::ReadCommitted)
                    .start()
                    .await
                    .map_err(pg("beginning a catch-up step", options))?;
                begin_serialised(&tx, options).await?;
                let Some(state) = read_state(&tx, parent, options).await? else {
                    return Ok(Outcome::FinishedElsewhere);
                };
                catch_up(&tx, parent, &state, options, true).await?;
                heartbeat(&tx, parent, options).await?;
                commit(tx, options).await?;
                let tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::ReadCommitted)
                    .start()
                    .await
                    .map_err(pg("beginning the final step", options))?;
                begin_serialised(&tx, options).await?;
                let Some(state) = read_state(&tx, parent, options).await? else {
                    return Ok(Outcome::FinishedElsewhere);
                };
                match finish(&tx, parent, &state, &targets, options).await {
                    Ok(done) => {
                        commit(tx, options).await?;
                        return Ok(Outcome::Finished(Finished {
                            created: done.created,
                            catch_all_from: done.catch_all_from,
                            rows_moved: done.rows_moved,
                            exclusive_lock_held: done.locked_at.elapsed(),
                            referenced_tables_locked: done.fk_locked_at.elapsed(),
                        }));
                    }
                    Err(e) if e.is_lock_timeout() => {
                        drop(tx);
                        lock_waited = backoff(lock_waited, options, e).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            other => {
                return Err(PartitionError::StaleSplitState {
                    detail: format!("unknown phase {other:?}"),
                })
            }
        }
    }
}

/// Counts a lock wait that ran out; gives up with `err` once
/// [`PartitionOptions::lock_timeout`] is spent, else sleeps a little.
async fn backoff(
    waited: Duration,
    options: &PartitionOptions,
    err: PartitionError,
) -> Result<Duration, PartitionError> {
    let waited = waited + ATTEMPT_LOCK_TIMEOUT.min(options.lock_timeout);
    if waited >= options.lock_timeout {
        return Err(err);
    }
    tokio::time::sleep(Duration::from_millis(
        50 + (waited.as_millis() as u64 % 7) * 20,
    ))
    .await;
    Ok(waited)
}

async fn commit(tx: Transaction<'_>, options: &PartitionOptions) -> Result<(), PartitionError> {
    tx.commit()
        .await
        .map_err(pg("committing a split step", options))
}

async fn set_phase(
    tx: &Transaction<'_>,
    parent: &Parent,
    phase: &str,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    tx.execute(
        &format!("UPDATE {} SET phase = $1", parent.qualify(STATE)),
        &[&phase],
    )
    .await
    .map_err(pg(format!("moving the split to phase {phase}"), options))
    .map(drop)
}

/// The old catch-all recorded in the state must still be the attached catch-all.
async fn check_old_attached(
    tx: &Transaction<'_>,
    parent: &Parent,
    state: &State,
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let parts = read_partitions(tx, parent, options.lock_timeout).await?;
    let attached: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = $1 AND inhrelid = $2)",
            &[&parent.oid, &state.old_catch_all],
        )
        .await
        .map_err(pg("checking the old catch-all", options))?
        .get(0);
    let catch_all_ok = parts.iter().any(|p| p.kind == PartitionKind::CatchAll);
    if !attached || !catch_all_ok {
        return Err(PartitionError::StaleSplitState {
            detail: "the catch-all it splits is no longer attached to sync_activity_log".into(),
        });
    }
    Ok(())
}

async fn old_name(
    tx: &Transaction<'_>,
    parent: &Parent,
    state: &State,
    options: &PartitionOptions,
) -> Result<String, PartitionError> {
    let name: String = tx
        .query_one(
            "SELECT relname::text FROM pg_class WHERE oid = $1",
            &[&state.old_catch_all],
        )
        .await
        .map_err(pg("reading the old catch-all's name", options))?
        .get(0);
    Ok(parent.qualify(&name))
}

/// Copies one slice of [`CHUNK_BLOCKS`] heap blocks of the old catch-all (a TID
/// range scan) into the staging table; the first call fixes the end: every row
/// committed before the capture trigger existed lies in a block before it, and
/// every row written since is in the delta. Returns the rows moved so far.
async fn copy_batch(
    tx: &Transaction<'_>,
    parent: &Parent,
    state: &State,
    options: &PartitionOptions,
) -> Result<u64, PartitionError> {
    let old = old_name(tx, parent, state, options).await?;
    let end = match state.end_block {
        Some(e) => e,
        None => tx
            .query_one(
                "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::int8",
                &[&old],
            )
            .await
            .map_err(pg("measuring the old catch-all", options))?
            .get(0),
    };
    let start = state.next_block;
    let stop = (start + options.copy_batch_blocks()).min(end);
    let mut copied = 0u64;
    if start < stop {
        let staging = parent.qualify(STAGING);
        let cols = &parent.columns;
        copied = tx
            .execute(
                &format!(
                    "INSERT INTO {staging} ({cols}) SELECT {cols} FROM {old} \
                      WHERE ctid >= $1::text::tid AND ctid < $2::text::tid"
                ),
                &[&format!("({start},0)"), &format!("({stop},0)")],
            )
            .await
            .map_err(pg(
                format!("copying blocks {start}..{stop} of the old catch-all"),
                options,
            ))?;
    }
    let moved = state.rows_moved + copied as i64;
    let phase = if stop >= end { "index" } else { "copy" };
    tx.execute(
        &format!(
            "UPDATE {} SET next_block = $1, end_block = $2, rows_moved = $3, phase = $4",
            parent.qualify(STATE)
        ),
        &[&stop, &end, &moved, &phase],
    )
    .await
    .map_err(pg("recording the copy position", options))?;
    Ok(moved as u64)
}

/// Delta rows applied per round of [`catch_up`].
const DELTA_CHUNK: i64 = 20_000;

/// Applies the delta: for the keys of the delta rows read (a chunk at a time),
/// the staging rows are replaced by the old catch-all's current rows of those
/// keys (none when deleted), then exactly those delta rows (by ctid) are
/// deleted. Correct under READ COMMITTED: a change committed after the rows
/// were re-read has a delta row of its own, not among those deleted, so a
/// later call applies it. `indexed`: the staging tables have their indexes
/// (look keys up rather than scanning). Returns the rows moved so far.
async fn catch_up(
    tx: &Transaction<'_>,
    parent: &Parent,
    state: &State,
    options: &PartitionOptions,
    indexed: bool,
) -> Result<i64, PartitionError> {
    let delta = parent.qualify(DELTA);
    let staging = parent.qualify(STAGING);
    let cols = &parent.columns;
    let mut old: Option<String> = None;
    let mut moved = state.rows_moved;
    loop {
        let rows = tx
            .query(
                &format!("SELECT ctid::text, id, created_at FROM {delta} LIMIT $1"),
                &[&DELTA_CHUNK],
            )
            .await
            .map_err(pg("reading the delta", options))?;
        if rows.is_empty() {
            return Ok(moved);
        }
        // A short chunk is the last: rows committed since then wait for the
        // next call, so writers faster than this loop cannot keep it going.
        let last = (rows.len() as i64) < DELTA_CHUNK;
        let old = match &old {
            Some(o) => o.clone(),
            None => {
                if indexed {
                    for setting in ["enable_seqscan", "enable_hashjoin", "enable_mergejoin"] {
                        tx.execute("SELECT set_config($1, 'off', true)", &[&setting])
                            .await
                            .map_err(pg("preferring index lookups for the delta", options))?;
                    }
                }
                let o = old_name(tx, parent, state, options).await?;
                old = Some(o.clone());
                o
            }
        };
        let tids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.get(1)).collect();
        let ats: Vec<OffsetDateTime> = rows.iter().map(|r| r.get(2)).collect();
        let removed = tx
            .execute(
                &format!(
                    "DELETE FROM {staging} s \
                      USING (SELECT DISTINCT * FROM unnest($1::uuid[], $2::timestamptz[]) k(id, created_at)) d \
                      WHERE s.id = d.id AND s.created_at = d.created_at"
                ),
                &[&ids, &ats],
            )
            .await
            .map_err(pg("removing changed rows from the staging tables", options))?;
        let added = tx
            .execute(
                &format!(
                    "INSERT INTO {staging} ({cols}) SELECT {cols} FROM {old} c \
                      WHERE (c.id, c.created_at) IN \
                            (SELECT * FROM unnest($1::uuid[], $2::timestamptz[]))"
                ),
                &[&ids, &ats],
            )
            .await
            .map_err(pg("copying changed rows into the staging tables", options))?;
        tx.execute(
            &format!("DELETE FROM {delta} WHERE ctid = ANY($1::text[]::tid[])"),
            &[&tids],
        )
        .await
        .map_err(pg("deleting the applied delta rows", options))?;
        moved = tx
            .query_one(
                &format!(
                    "UPDATE {} SET rows_moved = rows_moved + $1 - $2 RETURNING rows_moved",
                    parent.qualify(STATE)
                ),
                &[&(added as i64), &(removed as i64)],
            )
            .await
            .map_err(pg("recording the rows moved", options))?
            .get(0);
        if last {
            return Ok(moved);
        }
    }
}

/// One foreign key of the parent, as plain data for `ADD CONSTRAINT`.
struct ForeignKey {
    name: String,
    columns: Vec<String>,
    ref_schema: String,
    ref_table: String,
    ref_columns: Vec<String>,
    on_update: &'static str,
    on_delete: &'static str,
    match_full: bool,
    deferrable: Option<bool>,
}

fn action(code: &str) -> Option<&'static str> {
    Some(match code {
        "a" => "NO ACTION",
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        _ => return None,
    })
}

/// The parent's foreign keys that can be given to the new tables ahead of
/// ATTACH (so ATTACH adopts them instead of validating under the lock). Others
/// (column-list SET NULL, MATCH PARTIAL) are left to ATTACH.
async fn parent_foreign_keys(
    tx: &Transaction<'_>,
    parent: &Parent,
    options: &PartitionOptions,
) -> Result<Vec<ForeignKey>, PartitionError> {
    let rows = tx
        .query(
            "SELECT c.conname::text, \
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o) \
                            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o), \
                    rn.nspname::text, r.relname::text, \
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o) \
                            JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o), \
                    c.confupdtype::text, c.confdeltype::text, c.confmatchtype::text, \
                    c.condeferrable, c.condeferred, c.confdelsetcols IS NULL \
               FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid \
               JOIN pg_namespace rn ON rn.oid = r.relnamespace \
              WHERE c.conrelid = $1 AND c.contype = 'f' AND c.conparentid = 0 \
              ORDER BY c.conname",
            &[&parent.oid],
        )
        .await
        .map_err(pg("reading the foreign keys of sync_activity_log", options))?;
    let mut keys = Vec::new();
    for r in rows {
        let (upd, del, mt): (String, String, String) = (r.get(5), r.get(6), r.get(7));
        let no_setcols: bool = r.get(10);
        let (Some(on_update), Some(on_delete)) = (action(&upd), action(&del)) else {
            continue;
        };
        if !no_setcols || (mt != "s" && mt != "f") {
            continue;
        }
        let (deferrable, deferred): (bool, bool) = (r.get(8), r.get(9));
        keys.push(ForeignKey {
            name: r.get(0),
            columns: r.get(1),
            ref_schema: r.get(2),
            ref_table: r.get(3),
            ref_columns: r.get(4),
            on_update,
            on_delete,
            match_full: mt == "f",
            deferrable: deferrable.then_some(deferred),
        });
    }
    Ok(keys)
}

fn ident_list(v: &[String]) -> String {
    v.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `ALTER TABLE … ADD CONSTRAINT … FOREIGN KEY … NOT VALID` on every new table
/// (catalog only; SHARE ROW EXCLUSIVE on the referenced tables until commit).
async fn add_foreign_keys(
    tx: &Transaction<'_>,
    parent: &Parent,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    let keys = parent_foreign_keys(tx, parent, options).await?;
    for t in targets {
        let q = parent.qualify(&t.name);
        for k in &keys {
            let exists: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_constraint \
                                     WHERE conrelid = $1::text::regclass AND conname = $2)",
                    &[&q, &k.name],
                )
                .await
                .map_err(pg(
                    format!("checking foreign key {} on {}", k.name, t.name),
                    options,
                ))?
                .get(0);
            if exists {
                continue;
            }
            // Identifiers through quote_ident, keywords from fixed lists.
            let sql = format!(
                "ALTER TABLE {q} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {}.{} ({}){} \
                 ON UPDATE {} ON DELETE {}{} NOT VALID",
                quote_ident(&k.name),
                ident_list(&k.columns),
                quote_ident(&k.ref_schema),
                quote_ident(&k.ref_table),
                ident_list(&k.ref_columns),
                if k.match_full { " MATCH FULL" } else { "" },
                k.on_update,
                k.on_delete,
                match k.deferrable {
                    None => "",
                    Some(false) => " DEFERRABLE INITIALLY IMMEDIATE",
                    Some(true) => " DEFERRABLE INITIALLY DEFERRED",
                },
            );
            exec(
                tx,
                options,
                format!("adding foreign key {} to {}", k.name, t.name),
                &sql,
            )
            .await?;
        }
    }
    Ok(())
}

/// `ALTER TABLE … VALIDATE CONSTRAINT …` for the foreign keys added NOT VALID
/// (a scan of each new table; SHARE UPDATE EXCLUSIVE on it, ROW SHARE on the
/// referenced tables: their writes go on).
async fn validate_foreign_keys(
    tx: &Transaction<'_>,
    parent: &Parent,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<(), PartitionError> {
    for t in targets {
        let q = parent.qualify(&t.name);
        let names: Vec<String> = tx
            .query(
                "SELECT conname::text FROM pg_constraint \
                  WHERE conrelid = $1::text::regclass AND contype = 'f' AND NOT convalidated \
                  ORDER BY conname",
                &[&q],
            )
            .await
            .map_err(pg(
                format!("reading the foreign keys of {}", t.name),
                options,
            ))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for n in names {
            exec(
                tx,
                options,
                format!("validating foreign key {n} of {}", t.name),
                &format!("ALTER TABLE {q} VALIDATE CONSTRAINT {}", quote_ident(&n)),
            )
            .await?;
        }
    }
    Ok(())
}

/// The final step, in `tx` (READ COMMITTED, advisory lock held): ACCESS
/// EXCLUSIVE on the log (waiting at most [`ATTEMPT_LOCK_TIMEOUT`]), the last
/// delta, security of the old catch-all onto the new tables, DROP of the old
/// catch-all, ATTACH of the new tables, the new catch-all renamed into place,
/// the working objects dropped.
async fn finish(
    tx: &Transaction<'_>,
    parent: &Parent,
    state: &State,
    targets: &[Target],
    options: &PartitionOptions,
) -> Result<Done, PartitionError> {
    set_lock_timeout(
        tx,
        millis(ATTEMPT_LOCK_TIMEOUT.min(options.lock_timeout)),
        options,
    )
    .await?;
    let p = parent.qualified();
    exec(
        tx,
        options,
        "locking sync_activity_log in ACCESS EXCLUSIVE mode",
        &format!("LOCK TABLE {p} IN ACCESS EXCLUSIVE MODE"),
    )
    .await?;
    let locked_at = Instant::now();
    // Every writer of the old catch-all has ended: the delta is complete.
    let rows_moved = catch_up(tx, parent, state, options, true).await?;
    let old = old_name(tx, parent, state, options).await?;
    let old_plain: String = tx
        .query_one(
            "SELECT relname::text FROM pg_class WHERE oid = $1",
            &[&state.old_catch_all],
        )
        .await
        .map_err(pg("reading the old catch-all's name", options))?
        .get(0);
    for t in targets {
        copy_security(tx, parent, Some(&old_plain), &t.name, options).await?;
    }
    // Index names of the old catch-all by parent index, for the new one.
    let old_index_names: Vec<(u32, String)> = tx
        .query(
            "SELECT i.inhparent, c.relname::text FROM pg_index x \
               JOIN pg_class c ON c.oid = x.indexrelid \
               JOIN pg_inherits i ON i.inhrelid = x.indexrelid \
              WHERE x.indrelid = $1",
            &[&state.old_catch_all],
        )
        .await
        .map_err(pg("reading the old catch-all's index names", options))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let fk_locked_at = Instant::now();
    exec(
        tx,
        options,
        format!("dropping the old catch-all {old_plain}"),
        &format!("DROP TABLE {old}"),
    )
    .await?;
    let staging = parent.qualify(STAGING);
    for t in targets {
        detach_from_staging(tx, parent, &staging, "staging table", t, options).await?;
        attach_to_parent(tx, parent, t, options).await?;
    }
    exec(
        tx,
        options,
        format!("renaming {NEW_CATCH_ALL} to {CATCH_ALL_NAME}"),
        &format!(
            "ALTER TABLE {} RENAME TO {}",
            parent.qualify(NEW_CATCH_ALL),
            quote_ident(CATCH_ALL_NAME)
        ),
    )
    .await?;
    let new_catch_all = parent.qualify(CATCH_ALL_NAME);
    let new_indexes: Vec<(u32, String)> = tx
        .query(
            "SELECT i.inhparent, c.relname::text FROM pg_index x \
               JOIN pg_class c ON c.oid = x.indexrelid \
               JOIN pg_inherits i ON i.inhrelid = x.indexrelid \
              WHERE x.indrelid = $1::text::regclass",
            &[&new_catch_all],
        )
        .await
        .map_err(pg("reading the new catch-all's index names", options))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (parent_index, name) in new_indexes {
        if let Some((_, want)) = old_index_names.iter().find(|(p, _)| *p == parent_index) {
            if *want != name {
                exec(
                    tx,
                    options,
                    format!("renaming index {name} to {want}"),
                    &format!(
                        "ALTER INDEX {} RENAME TO {}",
                        parent.qualify(&name),
                        quote_ident(want)
                    ),
                )
                .await?;
            }
        }
    }
    for (what, sql) in [
        ("the staging table", format!("DROP TABLE {staging}")),
        (
            "the delta table",
            format!("DROP TABLE {}", parent.qualify(DELTA)),
        ),
        (
            "the split state",
            format!("DROP TABLE {}", parent.qualify(STATE)),
        ),
        (
            "the capture function",
            format!("DROP FUNCTION {}()", parent.qualify(CAPTURE)),
        ),
    ] {
        exec(tx, options, format!("dropping {what}"), &sql).await?;
    }
    Ok(Done {
        created: targets
            .iter()
            .filter(|t| t.name != NEW_CATCH_ALL)
            .map(|t| t.name.clone())
            .collect(),
        catch_all_from: state.catch_all_from,
        rows_moved: u64::try_from(rows_moved).unwrap_or(0),
        locked_at,
        fk_locked_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(first: &str, catch_all: &str) -> State {
        State {
            old_catch_all: 1,
            first_month: first.parse::<Month>().unwrap().start(),
            catch_all_from: catch_all.parse::<Month>().unwrap().start(),
            phase: "copy".into(),
            next_block: 0,
            end_block: None,
            rows_moved: 0,
            rows_estimated: None,
        }
    }

    #[test]
    fn targets_are_the_months_then_the_new_catch_all() {
        let t = state("2026-03", "2027-03").targets().unwrap();
        assert_eq!(t.len(), 13);
        assert_eq!(t[0].name, "sync_activity_log_2026_03");
        assert_eq!(
            t[0].bound_spec(),
            "FOR VALUES FROM ('2026-03-01 00:00:00+00') TO ('2026-04-01 00:00:00+00')"
        );
        assert_eq!(t[11].name, "sync_activity_log_2027_02");
        assert_eq!(t[12].name, NEW_CATCH_ALL);
        assert_eq!(
            t[12].bound_spec(),
            "FOR VALUES FROM ('2027-03-01 00:00:00+00') TO (MAXVALUE)"
        );
        // Only the catch-all when no month is missing.
        assert_eq!(state("2027-03", "2027-03").targets().unwrap().len(), 1);
        // Bounds off month starts are refused.
        let mut s = state("2026-03", "2027-03");
        s.first_month += time::Duration::HOUR;
        assert!(matches!(
            s.targets(),
            Err(PartitionError::StaleSplitState { .. })
        ));
    }

    #[test]
    fn foreign_key_actions_come_from_a_fixed_list() {
        assert_eq!(action("a"), Some("NO ACTION"));
        assert_eq!(action("r"), Some("RESTRICT"));
        assert_eq!(action("c"), Some("CASCADE"));
        assert_eq!(action("n"), Some("SET NULL"));
        assert_eq!(action("d"), Some("SET DEFAULT"));
        assert_eq!(action("x; DROP TABLE t"), None);
        assert_eq!(
            ident_list(&["a".into(), "b\"c".into()]),
            "\"a\", \"b\"\"c\""
        );
    }
}
