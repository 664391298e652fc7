//! One start-up call for services: migrate, then keep the partitions ahead.

use deadpool_postgres::Pool;

use crate::apply::{apply_pool, ApplyReport};
use crate::error::Error;
use crate::options::MigrateOptions;
use crate::partitions::{ensure_partitions, EnsureReport, PartitionError, PartitionOptions};

/// What [`startup`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StartupReport {
    /// The migrations applied (usually none).
    pub migrations: ApplyReport,
    /// The partition maintenance done (usually nothing; see
    /// [`EnsureReport::other_run_busy`] for "another replica is doing it").
    pub partitions: EnsureReport,
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
    Ok(StartupReport {
        migrations,
        partitions,
    })
}
