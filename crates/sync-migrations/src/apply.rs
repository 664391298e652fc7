//! Applying the embedded migrations under the migration lock.

use deadpool_postgres::Pool;
use tokio_postgres::Client;

use crate::embedded::{embedded_migrations, runner, EmbeddedMigration};
use crate::error::{Error, Result, ServerError};
use crate::history::{applied_migrations, check_consistent};
use crate::lock::{is_lock_timeout, with_lock, DDL_RETRY_PAUSE, MIGRATION_LOCK_KEY};
use crate::options::MigrateOptions;
use sync_connect::pooler::{probe_transaction_pooler, refuse_on, refuse_transaction_pooler};

/// What one `apply` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// Migrations this call applied, in order (empty when everything was already applied).
    pub applied: Vec<EmbeddedMigration>,
    /// How many embedded migrations were already applied before this call.
    pub already_applied: usize,
}

/// Applies every pending embedded migration on `client`.
///
/// Contract: takes the session advisory lock [`MIGRATION_LOCK_KEY`] (waiting at most
/// `options.lock_wait`), then lets refinery create `refinery_schema_history` if
/// needed and apply each pending migration in its own transaction, then releases
/// the lock — on success and on error. Concurrent callers on the same database
/// all succeed; exactly one applies each migration, the others find it applied.
/// Refuses, before changing anything, an applied migration whose checksum differs
/// from the embedded file ([`Error::ChangedAfterApply`]) or that this build does
/// not know ([`Error::UnknownApplied`]). A failing migration is rolled back whole
/// and reported with its SQLSTATE ([`Error::MigrationFailed`]); the ones before it
/// stay applied.
///
/// With `options.refuse_pooler` (the default) it first refuses a transaction-mode
/// pooler ([`Error::PoolerDetected`]) with the single-connection probe of
/// [`refuse_transaction_pooler`], which cannot see an *idle* pooler; when you can
/// open a second connection, call
/// [`refuse_transaction_pooler_two_connections`](sync_connect::pooler::refuse_transaction_pooler_two_connections) first (as [`apply_pool`] and the
/// CLI do).
///
/// If this returns [`Error::Unavailable`] the connection is broken: drop it (which
/// also releases the lock server-side).
#[tracing::instrument(name = "sync_migrations.apply", target = "sync_migrations", skip_all, err(Display), fields(pool = false, applied = tracing::field::Empty, already_applied = tracing::field::Empty))]
pub async fn apply(client: &mut Client, options: &MigrateOptions) -> Result<ApplyReport> {
    if options.refuse_pooler {
        refuse_transaction_pooler(client).await?;
    }
    apply_unprobed(client, options).await
}

async fn apply_unprobed(client: &mut Client, options: &MigrateOptions) -> Result<ApplyReport> {
    let wait = options.lock_wait;
    with_lock(
        client,
        MIGRATION_LOCK_KEY,
        wait,
        options.ddl_lock_timeout,
        move |client| Box::pin(apply_locked(client, wait)),
    )
    .await
}

/// [`apply`] on a connection taken out of `pool` for good: the connection is
/// detached from the pool and closed afterwards, so a session lock or setting can
/// never ride back into the pool, whatever happened (sqlx#1871).
///
/// With `options.refuse_pooler` it first probes with a second connection from
/// `pool` ([`refuse_transaction_pooler_two_connections`](sync_connect::pooler::refuse_transaction_pooler_two_connections)); it waits for one like any
/// `pool.get()` (the detached connection no longer counts against `max_size`).
#[tracing::instrument(name = "sync_migrations.apply", target = "sync_migrations", skip_all, err(Display), fields(pool = true, applied = tracing::field::Empty, already_applied = tracing::field::Empty))]
pub async fn apply_pool(pool: &Pool, options: &MigrateOptions) -> Result<ApplyReport> {
    let mut client = detached(pool).await?;
    if options.refuse_pooler {
        probe_with_pool(&client, pool).await?;
    }
    apply_unprobed(&mut client, options).await
}

/// [`refuse_transaction_pooler_two_connections`](sync_connect::pooler::refuse_transaction_pooler_two_connections) with a second connection from `pool`.
pub(crate) async fn probe_with_pool(client: &Client, pool: &Pool) -> Result<()> {
    let second = pool.get().await.map_err(|e| Error::Unavailable {
        reason: format!("getting a second connection from the pool to probe for a pooler: {e}"),
    })?;
    let probe = probe_transaction_pooler(client, Some(&second)).await?;
    if !probe.used_second_connection {
        // Its probe query is still pending: close it instead of returning it.
        drop(deadpool_postgres::Object::take(second));
    }
    Ok(refuse_on(client, probe).await?)
}

pub(crate) async fn detached(pool: &Pool) -> Result<deadpool_postgres::ClientWrapper> {
    let object = pool.get().await.map_err(|e| Error::Unavailable {
        reason: format!("getting a connection from the pool: {e}"),
    })?;
    Ok(deadpool_postgres::Object::take(object))
}

/// Runs refinery until every pending migration is applied. Each migration's
/// transaction runs under the session's `lock_timeout` (see
/// [`MigrateOptions::ddl_lock_timeout`]); one that runs out of it is rolled back
/// by refinery and retried, until `wait` has passed in all.
async fn apply_locked(client: &mut Client, wait: std::time::Duration) -> Result<ApplyReport> {
    let started = std::time::Instant::now();
    let before = applied_migrations(client).await?;
    check_consistent(&before)?;
    let pending: Vec<EmbeddedMigration> = embedded_migrations()
        .into_iter()
        .filter(|e| !before.iter().any(|a| a.version == e.version))
        .collect();
    let mut attempts = 0u32;
    loop {
        let current = applied_migrations(client).await?;
        let left: Vec<EmbeddedMigration> = pending
            .iter()
            .filter(|p| !current.iter().any(|a| a.version == p.version))
            .cloned()
            .collect();
        match runner().run_async(client).await {
            Ok(_) => break,
            Err(e) => {
                let err = map_refinery_error(e, &left);
                if !is_lock_timeout(&err) {
                    return Err(err);
                }
                attempts += 1;
                if started.elapsed() + DDL_RETRY_PAUSE >= wait {
                    let during = match &err {
                        Error::MigrationFailed { version, name, .. } => {
                            format!("migration V{version}__{name}")
                        }
                        _ => "the migration history bookkeeping".to_owned(),
                    };
                    let server = Box::new(
                        err.server_error()
                            .cloned()
                            .unwrap_or_else(|| ServerError::client(err.to_string())),
                    );
                    return Err(Error::DdlLockTimeout {
                        during,
                        waited_secs: started.elapsed().as_secs(),
                        attempts,
                        server,
                    });
                }
                tracing::warn!(
                    target: "sync_migrations",
                    attempts,
                    "a migration waited longer than lock_timeout for a table lock; retrying"
                );
                tokio::time::sleep(DDL_RETRY_PAUSE).await;
            }
        }
    }
    let after = applied_migrations(client).await?;
    let applied: Vec<EmbeddedMigration> = pending
        .iter()
        .filter(|p| after.iter().any(|a| a.version == p.version))
        .cloned()
        .collect();
    let span = tracing::Span::current();
    span.record("applied", applied.len());
    span.record("already_applied", before.len());
    Ok(ApplyReport {
        applied,
        already_applied: before.len(),
    })
}

/// Maps refinery's error to ours. `pending` are the migrations that were to be
/// applied: the first one not in refinery's partial report is the one that failed.
pub(crate) fn map_refinery_error(err: refinery::Error, pending: &[EmbeddedMigration]) -> Error {
    use refinery::error::Kind;
    let done = err
        .report()
        .map(|r| r.applied_migrations().len())
        .unwrap_or(0);
    match err.kind() {
        Kind::DivergentVersion(applied, embedded) => Error::ChangedAfterApply {
            version: applied.version(),
            name: embedded.name().to_owned(),
            applied_checksum: applied.checksum(),
            embedded_checksum: embedded.checksum(),
        },
        Kind::MissingVersion(applied) => Error::UnknownApplied {
            version: applied.version(),
            name: applied.name().to_owned(),
        },
        Kind::Connection(msg, source) => {
            let server = match source.downcast_ref::<tokio_postgres::Error>() {
                Some(pg) if pg.is_closed() => {
                    return Error::Unavailable {
                        reason: format!("{msg}: {pg}"),
                    }
                }
                Some(pg) => ServerError::from_pg(pg),
                None => ServerError::client(format!("{msg}: {source}")),
            };
            match pending.get(done) {
                Some(m) if msg.starts_with("error applying migration") => Error::MigrationFailed {
                    version: m.version,
                    name: m.name.clone(),
                    server: Box::new(server),
                },
                _ => Error::Database {
                    during: "running the migration history bookkeeping",
                    server: Box::new(server),
                },
            }
        }
        other => Error::Runner(other.to_string()),
    }
}
