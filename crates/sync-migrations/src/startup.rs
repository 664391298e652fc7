//! One start-up call for services: migrate, then keep the partitions ahead.

use deadpool_postgres::Pool;

use crate::apply::{apply_pool, ApplyReport};
use crate::error::Error;
use crate::options::MigrateOptions;
use crate::partitions::{ensure_partitions, EnsureReport, PartitionError, PartitionOptions};
use crate::rollups::{backfill_rollups, RollupBackfillReport};

/// How long [`startup`] runs the rollup backfill before handing the rest to a
/// background task.
const ROLLUP_BACKFILL_INLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`startup`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StartupReport {
    /// The migrations applied (usually none).
    pub migrations: ApplyReport,
    /// The partition maintenance done (usually nothing; see
    /// [`EnsureReport::other_run_busy`] for "another replica is doing it").
    pub partitions: EnsureReport,
    /// The activity-rollup backfill (migration 0026) as it stood when start-up
    /// returned: usually `done`; else it continues in a background task (see
    /// [`startup`]).
    pub rollups: RollupBackfillReport,
}

/// Why [`startup`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// Applying the migrations failed; partitions were not touched.
    #[error("start-up: applying migrations failed: {0}")]
    Migrate(#[from] Error),
    /// Migrations are applied, but ensuring the partitions failed (and changed nothing).
    #[error("start-up: migrations are applied, but ensuring the sync_activity_log partitions failed: {0}")]
    Partitions(#[from] PartitionError),
    /// No connection could be taken from the pool for the partition step.
    #[error("start-up: cannot get a connection from the pool for partition maintenance: {0}; check the pool size and the server")]
    Pool(String),
}

/// Applies every pending migration ([`apply_pool`], under the migration advisory
/// lock), then runs [`ensure_partitions`] with `months_ahead` on a pooled
/// connection, with [`startup_partition_options`]: wait at most 5 s for another
/// replica's partition maintenance, and if it is still running, start anyway.
/// Then runs the activity-rollup backfill ([`backfill_rollups`]) for up to 5 s;
/// if it is not done by then, a spawned tokio task (on another pooled
/// connection) continues it to the end: the metrics are exact meanwhile (they
/// scan the log until it is done).
///
/// Safe to call from every replica at start-up: both steps are serialised by
/// advisory locks and idempotent; when there is nothing to do, no table lock is
/// taken. When another replica is still moving rows (it holds the partition
/// lock past the wait, or is working on a split), this
/// returns `Ok` with [`EnsureReport::other_run_busy`] set in
/// [`StartupReport::partitions`] and logs a `tracing` warning saying so: a
/// service must not fail its readiness because a sibling does the maintenance.
/// The partition step runs in one transaction whose settings and advisory lock
/// end with it, so the connection goes back to the pool clean.
///
/// # Errors
///
/// [`StartupError::Migrate`] when applying the migrations fails (partitions
/// untouched); [`StartupError::Pool`] when no connection can be had;
/// [`StartupError::Partitions`] when ensuring the partitions fails for any
/// reason other than another replica doing it (nothing changed).
///
/// ```no_run
/// # async fn f(pool: &deadpool_postgres::Pool) -> Result<(), sync_migrations::StartupError> {
/// let report = sync_migrations::startup(pool, &sync_migrations::MigrateOptions::default(), 3).await?;
/// println!("{} migrations applied", report.migrations.applied.len());
/// # Ok(()) }
/// ```
pub async fn startup(
    pool: &Pool,
    migrate: &MigrateOptions,
    months_ahead: u32,
) -> Result<StartupReport, StartupError> {
    startup_with(pool, migrate, months_ahead, &startup_partition_options()).await
}

/// The [`PartitionOptions`] [`startup`] uses: the defaults (5 s lock timeout,
/// 5 s wait for another run, the server's clock) with
/// [`skip_if_busy`](PartitionOptions::skip_if_busy) set.
pub fn startup_partition_options() -> PartitionOptions {
    PartitionOptions::default().with_skip_if_busy(true)
}

/// [`startup`] with the given partition options (e.g. a longer wait, or a fixed
/// [`now`](PartitionOptions::now)). With `skip_if_busy` unset, another
/// replica's maintenance outlasting the wait is an error like any other.
///
/// # Errors
///
/// As [`startup`].
pub async fn startup_with(
    pool: &Pool,
    migrate: &MigrateOptions,
    months_ahead: u32,
    partition_options: &PartitionOptions,
) -> Result<StartupReport, StartupError> {
    let migrations = apply_pool(pool, migrate).await?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| StartupError::Pool(e.to_string()))?;
    let partitions =
        ensure_partitions(&mut client, months_ahead, partition_options, |_| {}).await?;
    if partitions.other_run_busy {
        tracing::warn!(
            target: "sync_migrations",
            waited_ms = partition_options.wait_for_other_run.as_millis() as u64,
            through = %partitions.through,
            "start-up: another replica is doing the sync_activity_log partition maintenance \
             (it held the partition lock longer than we wait); starting without waiting for it"
        );
    } else if partitions.changed() {
        tracing::info!(
            target: "sync_migrations",
            created = partitions.created.len(),
            rows_moved = partitions.rows_moved,
            "start-up: sync_activity_log partitions ensured"
        );
    }
    // The rollup backfill (0026): counts the log rows older than the rollups,
    // one month per transaction. A few seconds inline; the rest in the
    // background, so a large log does not hold up readiness (the metrics scan the
    // log, exactly, until it is done). Another replica running it: skipped.
    // A failed step does not fail start-up (the rollups are derived data and
    // the metrics stay exact without them): it is logged and retried later.
    let (rollups, failed) = match backfill_rollups(
        &mut client,
        Some(ROLLUP_BACKFILL_INLINE),
        |_| {},
    )
    .await
    {
        Ok(r) => (r, false),
        Err(e) => {
            tracing::warn!(
                target: "sync_migrations",
                error = %e,
                "start-up: an activity-rollup backfill step failed; the metrics scan the log until it is done (next start-up or `sync-migrate up`)"
            );
            (RollupBackfillReport::owed(), true)
        }
    };
    if !rollups.done && !rollups.busy && !failed {
        drop(client);
        let pool = pool.clone();
        tracing::info!(
            target: "sync_migrations",
            next_month = ?rollups.next_month,
            "start-up: the activity-rollup backfill continues in the background"
        );
        tokio::spawn(async move {
            let outcome = match pool.get().await {
                Ok(mut c) => backfill_rollups(&mut c, None, |_| {}).await,
                Err(e) => Err(Error::Unavailable {
                    reason: e.to_string(),
                }),
            };
            match outcome {
                Ok(r) => tracing::info!(
                    target: "sync_migrations",
                    done = r.done, busy = r.busy, rows = r.rows_counted,
                    "activity-rollup backfill finished"
                ),
                Err(e) => tracing::warn!(
                    target: "sync_migrations",
                    error = %e,
                    "activity-rollup backfill stopped; the next start-up or `sync-migrate up` resumes it"
                ),
            }
        });
    }
    Ok(StartupReport {
        migrations,
        partitions,
        rollups,
    })
}
