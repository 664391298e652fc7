//! Rolling back migration 0024.

use deadpool_postgres::Pool;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::apply::{detached, probe_with_pool};
use crate::embedded::{ROLLBACKS_AFTER_0024, ROLLBACK_0024_SQL, V0024};
use crate::error::{Error, Result, ServerError};
use crate::history::applied_migrations;
use crate::lock::{with_lock, DDL_RETRY_PAUSE, MIGRATION_LOCK_KEY};
use crate::options::MigrateOptions;
use sync_connect::pooler::refuse_transaction_pooler;

/// What a rollback found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackOutcome {
    /// 0024 was applied and is now gone, with its history row.
    RolledBack,
    /// 0024 was not recorded as applied; the rollback script still ran (it drops
    /// only what exists), so any leftover 0024 objects are gone too.
    WasNotApplied,
}

/// **Drops** the three 0024 tables with all their rows, their functions and enum
/// types, and 0024's history row — the exact inverse of 0024 — after rolling back
/// the later migrations this build knows (0025, see [`crate::ROLLBACKS_AFTER_0024`]),
/// newest first.
///
/// Contract: under the migration advisory lock, refuses with
/// [`Error::LaterMigrationApplied`] if a migration after 0024 that this build has
/// no rollback for is applied; otherwise runs, in ONE transaction (no `CASCADE`),
/// the rollback script of each later migration newest first
/// (`rollback/0025_idempotent_writes.sql`), then
/// `rollback/0024_sync_preview_progress_logs.sql`. Each script drops only what
/// exists, so a partly applied chain rolls back too. On failure
/// ([`Error::RollbackFailed`]) nothing changed, 0025 included — e.g. when
/// an object outside 0024 (a view, a detached archive table) depends on 0024's
/// types; the server's message names it. What 0001 created stays. A later
/// [`apply`](crate::apply) applies 0024 again.
#[tracing::instrument(name = "sync_migrations.rollback_0024", target = "sync_migrations", skip_all, err(Display), fields(pool = false, outcome = tracing::field::Empty))]
pub async fn rollback_0024_dropping_data(
    client: &mut Client,
    options: &MigrateOptions,
) -> Result<RollbackOutcome> {
    if options.refuse_pooler {
        refuse_transaction_pooler(client).await?;
    }
    rollback_unprobed(client, options).await
}

async fn rollback_unprobed(
    client: &mut Client,
    options: &MigrateOptions,
) -> Result<RollbackOutcome> {
    let wait = options.lock_wait;
    with_lock(
        client,
        MIGRATION_LOCK_KEY,
        wait,
        options.ddl_lock_timeout,
        move |client| Box::pin(rollback_retrying(client, wait)),
    )
    .await
}

/// [`rollback_0024_dropping_data`] on a connection detached from `pool` and closed
/// afterwards; with `options.refuse_pooler` the pooler probe uses a second
/// connection from `pool` (see [`sync_connect::pooler::refuse_transaction_pooler_two_connections`]).
#[tracing::instrument(name = "sync_migrations.rollback_0024", target = "sync_migrations", skip_all, err(Display), fields(pool = true, outcome = tracing::field::Empty))]
pub async fn rollback_0024_dropping_data_pool(
    pool: &Pool,
    options: &MigrateOptions,
) -> Result<RollbackOutcome> {
    let mut client = detached(pool).await?;
    if options.refuse_pooler {
        probe_with_pool(&client, pool).await?;
    }
    rollback_unprobed(&mut client, options).await
}

/// `BEGIN`, the later rollbacks newest first, then the 0024 script: its own
/// `BEGIN` only warns inside the open transaction (SQLSTATE 25001), and its
/// `COMMIT` commits the whole chain. An error anywhere aborts the transaction.
/// Each script is embedded text of this build (no text read from the database
/// or a caller), sent as-is.
async fn run_chain(client: &Client) -> std::result::Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    for (_, script) in ROLLBACKS_AFTER_0024 {
        client.batch_execute(script).await?;
    }
    client.batch_execute(ROLLBACK_0024_SQL).await
}

/// [`rollback_locked`], retried while its DDL runs out of `lock_timeout`, until
/// `wait` has passed in all (each failed attempt rolled back whole).
async fn rollback_retrying(client: &mut Client, wait: Duration) -> Result<RollbackOutcome> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        match rollback_locked(client).await {
            Err(Error::RollbackFailed { server })
                if server.code.as_deref() == Some(SqlState::LOCK_NOT_AVAILABLE.code()) =>
            {
                attempts += 1;
                if started.elapsed() + DDL_RETRY_PAUSE >= wait {
                    return Err(Error::DdlLockTimeout {
                        during: "the rollback of 0024".to_owned(),
                        waited_secs: started.elapsed().as_secs(),
                        attempts,
                        server,
                    });
                }
                tokio::time::sleep(DDL_RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

/// The relations outside 0024 that depend on its enum types (columns of tables
/// that are not attached partitions, e.g. archived months) or on its tables
/// (views), as `table x` / `view y`, comma-separated. Catalog text is only read
/// and shown, never put into SQL.
async fn dependents(client: &Client) -> Result<String> {
    const TYPES: [&str; 4] = [
        "sync_status_type",
        "sync_entity_type",
        "sync_action",
        "sync_type",
    ];
    const TABLES: [&str; 3] = ["sync_preview_cache", "sync_progress", "sync_activity_log"];
    let rows = client
        .query(
            "SELECT DISTINCT CASE c.relkind WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view ' \
                    ELSE 'table ' END || c.oid::regclass::text AS object \
             FROM pg_class c \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND c.relname <> ALL ($2::text[]) AND NOT c.relispartition \
               AND (EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                            WHERE a.attrelid = c.oid AND NOT a.attisdropped \
                              AND t.typname = ANY ($1::text[]) \
                              AND t.typnamespace = to_regnamespace(current_schema())) \
                    OR EXISTS (SELECT 1 FROM pg_rewrite r JOIN pg_depend d \
                                 ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
                               WHERE r.ev_class = c.oid AND d.refobjid <> c.oid \
                                 AND d.refobjid IN (SELECT to_regclass(x) FROM unnest($2::text[]) x))) \
             ORDER BY 1",
            &[&&TYPES[..], &&TABLES[..]],
        )
        .await
        .map_err(Error::db("listing the objects that depend on 0024"))?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join(", "))
}

async fn rollback_locked(client: &mut Client) -> Result<RollbackOutcome> {
    let applied = applied_migrations(client).await?;
    if let Some(later) = applied
        .iter()
        .find(|m| m.version > V0024 && !ROLLBACKS_AFTER_0024.iter().any(|(v, _)| *v == m.version))
    {
        return Err(Error::LaterMigrationApplied {
            version: later.version,
            name: later.name.clone(),
        });
    }
    let was_applied = applied.iter().any(|m| m.version == V0024);
    if let Err(e) = run_chain(client).await {
        if e.is_closed() {
            return Err(Error::Unavailable {
                reason: format!("connection lost during rollback: {e}"),
            });
        }
        // The script's transaction is aborted: end it so the connection is usable.
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(Error::db("ending the failed rollback transaction"))?;
        let mut server = ServerError::from_pg(&e);
        if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) {
            let objects = match dependents(client).await {
                Ok(list) if !list.is_empty() => list,
                _ => "the objects in the detail above".to_owned(),
            };
            server.hint = Some(format!(
                "{objects} outside 0024 depend(s) on its tables or types (e.g. months kept by \
                 `partitions archive`). Drop them (after exporting what you need), or restore \
                 them (attach an archived month again with ALTER TABLE sync_activity_log \
                 ATTACH PARTITION <table> FOR VALUES FROM (…) TO (…)), then roll back \
                 again; the rollback never drops them for you"
            ));
        }
        return Err(Error::RollbackFailed {
            server: Box::new(server),
        });
    }
    let outcome = if was_applied {
        RollbackOutcome::RolledBack
    } else {
        RollbackOutcome::WasNotApplied
    };
    tracing::Span::current().record(
        "outcome",
        match outcome {
            RollbackOutcome::RolledBack => "rolled_back",
            RollbackOutcome::WasNotApplied => "was_not_applied",
        },
    );
    Ok(outcome)
}
