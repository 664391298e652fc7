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
    /// The partition maintenance done (usually nothing).
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
/// lock), then runs [`ensure_partitions`] with `months_ahead` and the default
/// [`PartitionOptions`] (5 s lock timeout) on a pooled connection.
///
/// Safe to call from every replica at start-up: both steps are serialised by
/// advisory locks and idempotent; when there is nothing to do, no table lock is
/// taken. The partition step runs in one transaction whose settings and advisory
/// lock end with it, so the connection goes back to the pool clean.
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
    let migrations = apply_pool(pool, migrate).await?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| StartupError::Pool(e.to_string()))?;
    let partitions = ensure_partitions(
        &mut client,
        months_ahead,
        &PartitionOptions::default(),
        |_| {},
    )
    .await?;
    Ok(StartupReport {
        migrations,
        partitions,
    })
}
