//! Running the planned steps: every step re-checks the catalog and is
//! idempotent, so an interrupted `--apply` converges when re-run.
//!
//! Locks: each unit runs under `lock_timeout` and is retried on SQLSTATE 55P03
//! until the overall wait runs out, so old writers are never stalled for longer
//! than `lock_timeout`. Enum labels are added in their own (autocommit)
//! statements; indexes are built concurrently, one partition at a time, outside
//! a transaction block; checks are added `NOT VALID` and validated separately
//! (`VALIDATE CONSTRAINT` takes SHARE UPDATE EXCLUSIVE, which writers do not
//! wait for).

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::catalog::Catalog;
use super::classify::Step;
use super::ours;
use crate::error::{Error, Result, ServerError};
use crate::lock::DDL_RETRY_PAUSE;
use crate::partitions::quote_ident as q;

/// A unit of work: statements in one transaction, or one autocommit statement.
enum Unit {
    Tx { utc: bool, sql: Vec<String> },
    Single(String),
}

/// Timing of the runs.
pub(crate) struct Limits {
    pub lock_timeout: Duration,
    pub wait: Duration,
}

async fn run(client: &mut Client, unit: &Unit, what: &str, limits: &Limits) -> Result<()> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        let result = match unit {
            Unit::Single(sql) => {
                let r = client
                    .batch_execute(&format!(
                        "SET lock_timeout = {}",
                        limits.lock_timeout.as_millis().clamp(1, i32::MAX as u128)
                    ))
                    .await;
                match r {
                    Ok(()) => client.batch_execute(sql).await,
                    Err(e) => Err(e),
                }
            }
            Unit::Tx { utc, sql } => {
                let tx = client
                    .transaction()
                    .await
                    .map_err(Error::db("adopt: BEGIN"))?;
                let mut r = tx
                    .query(
                        "SELECT set_config('lock_timeout', $1, true)",
                        &[&format!("{}ms", limits.lock_timeout.as_millis())],
                    )
                    .await
                    .map(|_| ());
                if r.is_ok() && *utc {
                    r = tx
                        .query("SELECT set_config('TimeZone', 'UTC', true)", &[])
                        .await
                        .map(|_| ());
                }
                for s in sql {
                    if r.is_err() {
                        break;
                    }
                    r = tx.batch_execute(s).await;
                }
                match r {
                    Ok(()) => tx.commit().await,
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                attempts += 1;
                if started.elapsed() + DDL_RETRY_PAUSE >= limits.wait {
                    return Err(Error::DdlLockTimeout {
                        during: format!("adopt --apply: {what}"),
                        waited_secs: started.elapsed().as_secs(),
                        attempts,
                        server: Box::new(ServerError::from_pg(&e)),
                    });
                }
                tracing::warn!(target: "sync_migrations", what, attempts,
                    "adopt: a step waited longer than lock_timeout; retrying");
                tokio::time::sleep(DDL_RETRY_PAUSE).await;
            }
            Err(e) => {
                return Err(Error::AdoptStepFailed {
                    step: what.to_owned(),
                    server: Box::new(ServerError::from_pg(&e)),
                })
            }
        }
    }
}

/// Runs `steps` in the order of the issue: prerequisites, enum labels, columns,
/// functions and triggers, RLS, policies, grants, indexes, constraints.
pub(crate) async fn apply_steps(
    client: &mut Client,
    steps: &[Step],
    live: &Catalog,
    limits: &Limits,
) -> Result<()> {
    // 0001 is idempotent by design: it only adds what is missing (role
    // sync_tenant, its grants).
    let v1 = crate::embedded::runner()
        .get_migrations()
        .iter()
        .find(|m| m.version() == 1)
        .and_then(|m| m.sql().map(str::to_owned))
        .unwrap_or_default();
    run(
        client,
        &Unit::Tx {
            utc: false,
            sql: vec![v1],
        },
        "migration 0001 (idempotent)",
        limits,
    )
    .await?;

    for s in steps {
        if let Step::AddEnumLabel { ty, label } = s {
            let sql = format!(
                "ALTER TYPE {} ADD VALUE IF NOT EXISTS {}",
                q(ty),
                quote_literal(label)
            );
            run(
                client,
                &Unit::Single(sql),
                &format!("adding label {label} to {ty}"),
                limits,
            )
            .await?;
        }
    }

    let tables: Vec<String> = crate::verify::TABLES
        .iter()
        .map(|t| t.to_string())
        .collect();
    for table in &tables {
        let mut sql = Vec::new();
        for s in steps {
            match s {
                Step::AlterType {
                    table: t,
                    column,
                    ty,
                } if t == table => sql.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} TYPE {ty}",
                    q(t),
                    q(column)
                )),
                Step::SetDefault {
                    table: t,
                    column,
                    sql: d,
                } if t == table => sql.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {d}",
                    q(t),
                    q(column)
                )),
                Step::DropDefault { table: t, column } if t == table => sql.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT",
                    q(t),
                    q(column)
                )),
                Step::DropNotNull { table: t, column } if t == table => sql.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL",
                    q(t),
                    q(column)
                )),
                _ => {}
            }
        }
        if !sql.is_empty() {
            run(
                client,
                &Unit::Tx { utc: true, sql },
                &format!("converging the columns of {table}"),
                limits,
            )
            .await?;
        }
    }

    if steps.contains(&Step::ReplaceTriggers) {
        replace_triggers(client, live, limits).await?;
    }

    for s in steps {
        if let Step::EnableRls { table } = s {
            let sql = vec![format!(
                "ALTER TABLE {} ENABLE ROW LEVEL SECURITY",
                q(table)
            )];
            run(
                client,
                &Unit::Tx { utc: false, sql },
                &format!("enabling RLS on {table}"),
                limits,
            )
            .await?;
        }
    }

    for s in steps {
        if let Step::ReplacePolicies { table } = s {
            let mut sql: Vec<String> = live
                .policies
                .iter()
                .filter(|p| &p.table == table)
                .map(|p| format!("DROP POLICY IF EXISTS {} ON {}", q(&p.name), q(table)))
                .collect();
            // Ours may exist already (an interrupted run): drop by our names too.
            for cmd in ["select", "insert", "update", "delete"] {
                sql.push(format!(
                    "DROP POLICY IF EXISTS {} ON {}",
                    q(&format!("{table}_{cmd}")),
                    q(table)
                ));
            }
            sql.extend(ours::policies(table));
            run(
                client,
                &Unit::Tx { utc: false, sql },
                &format!("replacing the policies of {table}"),
                limits,
            )
            .await?;
        }
    }

    let mut grants: Vec<String> = ours::GRANTS.iter().map(|s| s.to_string()).collect();
    grants.push(ours::REVOKE_DO.to_owned());
    run(
        client,
        &Unit::Tx {
            utc: false,
            sql: grants,
        },
        "granting sync_tenant, revoking TRIGGER/TRUNCATE/REFERENCES",
        limits,
    )
    .await?;

    for s in steps {
        let sql = match s {
            Step::RenameIndex { from, to } => {
                format!("ALTER INDEX {} RENAME TO {}", q(from), q(to))
            }
            Step::RenameConstraint { table, from, to } => format!(
                "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                q(table),
                q(from),
                q(to)
            ),
            _ => continue,
        };
        run(
            client,
            &Unit::Tx {
                utc: false,
                sql: vec![sql],
            },
            "renaming an object that means the same as ours to our name",
            limits,
        )
        .await?;
    }

    for s in steps {
        if let Step::CreateIndex { name, table, def } = s {
            create_index(client, name, table, def, live, limits).await?;
        }
    }

    for s in steps {
        match s {
            Step::AddCheck { table, name, expr } => {
                add_check(client, table, name, expr, limits).await?;
            }
            Step::SetNotNull { table, column } => {
                let name = format!("sync_adopt_{column}_not_null");
                let expr = format!("{} IS NOT NULL", q(column));
                add_check(client, table, &name, &expr, limits).await?;
                let sql = vec![
                    format!(
                        "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
                        q(table),
                        q(column)
                    ),
                    format!(
                        "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                        q(table),
                        q(&name)
                    ),
                ];
                run(
                    client,
                    &Unit::Tx { utc: false, sql },
                    &format!("SET NOT NULL on {table}.{column}"),
                    limits,
                )
                .await?;
            }
            _ => {}
        }
    }
    // Fresh statistics for the planner (the indexes are new); ANALYZE takes
    // SHARE UPDATE EXCLUSIVE, which writers do not wait for.
    for table in &tables {
        run(
            client,
            &Unit::Single(format!("ANALYZE {}", q(table))),
            &format!("analyzing {table}"),
            limits,
        )
        .await?;
    }
    Ok(())
}

/// `'text'` with inner quotes doubled (standard_conforming_strings is on since
/// PostgreSQL 9.1; a backslash is an ordinary character).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn exists(client: &Client, sql: &'static str, arg: &str) -> Result<bool> {
    Ok(client
        .query_one(sql, &[&arg])
        .await
        .map_err(Error::db("adopt: reading the catalog"))?
        .get(0))
}

async fn add_check(
    client: &mut Client,
    table: &str,
    name: &str,
    expr: &str,
    limits: &Limits,
) -> Result<()> {
    let present = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
            &[&q(table), &name],
        )
        .await
        .map_err(Error::db("adopt: reading constraints"))?
        .get::<_, bool>(0);
    if !present {
        let sql = vec![format!(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({expr}) NOT VALID",
            q(table),
            q(name)
        )];
        run(
            client,
            &Unit::Tx { utc: false, sql },
            &format!("adding {name} NOT VALID"),
            limits,
        )
        .await?;
    }
    let sql = format!("ALTER TABLE {} VALIDATE CONSTRAINT {}", q(table), q(name));
    run(
        client,
        &Unit::Single(sql),
        &format!("validating {name}"),
        limits,
    )
    .await
}

async fn create_index(
    client: &mut Client,
    name: &str,
    table: &str,
    def: &str,
    live: &Catalog,
    limits: &Limits,
) -> Result<()> {
    if table != "sync_activity_log" {
        build_concurrently(client, name, table, def, limits).await?;
        return Ok(());
    }
    let short = name.trim_start_matches("sync_activity_log_");
    let mut children = Vec::new();
    for p in &live.partitions {
        let child = format!("{}_{short}", p.name);
        build_concurrently(client, &child, &p.name, def, limits).await?;
        children.push(child);
    }
    let sql = vec![format!(
        "CREATE INDEX IF NOT EXISTS {} ON ONLY {} {def}",
        q(name),
        q(table)
    )];
    run(
        client,
        &Unit::Tx { utc: false, sql },
        &format!("creating {name} on the log"),
        limits,
    )
    .await?;
    for child in children {
        let attached = exists(
            client,
            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))",
            &q(&child),
        )
        .await?;
        if !attached {
            let sql = vec![format!(
                "ALTER INDEX {} ATTACH PARTITION {}",
                q(name),
                q(&child)
            )];
            run(
                client,
                &Unit::Tx { utc: false, sql },
                &format!("attaching {child} to {name}"),
                limits,
            )
            .await?;
        }
    }
    Ok(())
}

async fn build_concurrently(
    client: &mut Client,
    name: &str,
    table: &str,
    def: &str,
    limits: &Limits,
) -> Result<()> {
    let invalid = exists(
        client,
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass($1) AND NOT indisvalid)",
        &q(name),
    )
    .await?;
    if invalid {
        let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {}", q(name));
        run(
            client,
            &Unit::Single(sql),
            &format!("dropping the invalid index {name} an interrupted run left"),
            limits,
        )
        .await?;
    }
    let sql = format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} {def}",
        q(name),
        q(table)
    );
    run(
        client,
        &Unit::Single(sql),
        &format!("building {name} concurrently"),
        limits,
    )
    .await
}

/// Puts our functions and triggers in place of theirs on the three tables and
/// the log's partitions, in one transaction: their triggers dropped, ours
/// created, their trigger functions dropped once unused. The rows their
/// triggers computed are not touched.
async fn replace_triggers(client: &mut Client, live: &Catalog, limits: &Limits) -> Result<()> {
    let mut sql: Vec<String> = Vec::new();
    let cleanup_differs = live.functions.iter().any(|f| {
        f.name == "auto_cleanup_preview_cache" && f.result != "TABLE(deleted_count bigint)"
    });
    if cleanup_differs {
        sql.push("DROP FUNCTION IF EXISTS auto_cleanup_preview_cache()".to_owned());
    }
    for (_, f) in ours::FUNCTIONS {
        sql.push(f.to_string());
    }
    sql.push(ours::CLEANUP_FUNCTION.replacen("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1));
    let ours_names: Vec<&str> = ours::TRIGGERS.iter().map(|(_, n, _)| *n).collect();
    // Functions of the dropped triggers, in the adopted schema only (a trigger
    // may run a function of another schema: that one is left alone).
    let mut dropped_functions: Vec<String> = Vec::new();
    for t in &live.triggers {
        if ours_names.contains(&t.name.as_str()) || t.name == ours::LOG_TRUNCATE_TRIGGER {
            // Ours by name: recreated below so its definition is ours.
        } else if t.function_schema == live.schema && !dropped_functions.contains(&t.function) {
            dropped_functions.push(t.function.clone());
        }
        sql.push(format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            q(&t.name),
            q(&t.table)
        ));
    }
    for (_, _, create) in ours::TRIGGERS {
        sql.push(create.to_string());
    }
    for table in
        std::iter::once("sync_activity_log").chain(live.partitions.iter().map(|p| p.name.as_str()))
    {
        sql.push(format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            q(ours::LOG_TRUNCATE_TRIGGER),
            q(table)
        ));
        sql.push(format!(
            "CREATE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION sync_refuse_truncate()",
            q(ours::LOG_TRUNCATE_TRIGGER),
            q(table)
        ));
    }
    let ours_fns: Vec<&str> = ours::FUNCTIONS
        .iter()
        .map(|(n, _)| *n)
        .chain(std::iter::once("auto_cleanup_preview_cache"))
        .collect();
    for f in dropped_functions
        .iter()
        .filter(|f| !ours_fns.contains(&f.as_str()))
    {
        sql.push(format!(
            "DROP FUNCTION IF EXISTS {}.{}()",
            q(&live.schema),
            q(f)
        ));
    }
    sql.push(
        "DO $pin$ DECLARE f text; BEGIN \
         FOREACH f IN ARRAY ARRAY['sync_preview_cache_defaults', 'sync_progress_detect_completion', \
         'sync_progress_compute_metrics', 'sync_progress_log_activity', 'auto_cleanup_preview_cache', \
         'sync_refuse_truncate'] LOOP \
         EXECUTE format('ALTER FUNCTION %I() SET search_path = %I, pg_catalog, pg_temp', f, current_schema()); \
         END LOOP; END $pin$"
            .to_owned(),
    );
    sql.push(
        "COMMENT ON FUNCTION auto_cleanup_preview_cache() IS \
         'Deletes sync_preview_cache rows whose expires_at has passed; returns the number deleted.'"
            .to_owned(),
    );
    run(
        client,
        &Unit::Tx { utc: false, sql },
        "replacing functions and triggers",
        limits,
    )
    .await
}
