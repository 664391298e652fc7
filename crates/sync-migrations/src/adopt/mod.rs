//! Adopting a database where 0024 was applied without our history (by another
//! team's script): compare by meaning, converge in safe steps, record history.
//!
//! - `catalog`: one read of a schema's catalog (what is compared);
//! - `reference`: our 0001 + 0024 run in a scratch schema in a rolled-back
//!   transaction, read the same way (what it is compared with);
//! - `classify`: each difference classed *same*, *converged by --apply* or
//!   *blocking*, and the plan of steps;
//! - `ours`: the statements that put our objects in place;
//! - `steps`: running the plan, each step idempotent and lock-bounded;
//! - `history`: recording 1 and 24 the way refinery does.

mod catalog;
mod classify;
mod history;
mod ours;
mod reference;
mod steps;

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::history::applied_migrations;
use crate::lock::{with_lock, MIGRATION_LOCK_KEY};
use crate::options::MigrateOptions;

/// How a difference between the database and our 0024 is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffClass {
    /// Means the same as ours (or is an extra that is kept).
    Same,
    /// `adopt --apply` converges it.
    Converged,
    /// Adoption refuses while it is there; `action` says what to do.
    Blocking,
}

/// One compared object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// What kind of object, e.g. `column type`, `trigger`, `policies`.
    pub area: String,
    /// Which one, e.g. `sync_progress.total_items`.
    pub object: String,
    /// What the database has.
    pub found: String,
    /// What our 0024 has.
    pub ours: String,
    /// How it is handled.
    pub class: DiffClass,
    /// What `--apply` does about it, or what to do about a blocking one.
    pub action: String,
}

/// What `adopt` found (and, with `apply`, did).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdoptReport {
    /// History row 24 was already there: nothing to adopt, nothing done.
    pub already_adopted: bool,
    /// Every compared object (empty when already adopted).
    pub differences: Vec<Difference>,
    /// Whether `--apply` ran its steps and recorded history rows 1 and 24.
    pub applied: bool,
    /// Differences still not *same* after `--apply` (only `--allow-not-valid`
    /// leaves some: constraints the data breaks).
    pub remaining: Vec<Difference>,
}

impl AdoptReport {
    /// How many blocking differences.
    pub fn blocking(&self) -> usize {
        self.differences
            .iter()
            .filter(|d| d.class == DiffClass::Blocking)
            .count()
    }

    /// True when nothing blocks (or the database is already adopted).
    pub fn is_adoptable(&self) -> bool {
        self.blocking() == 0
    }

    /// The differences as a text table (like `verify`), followed by a summary.
    pub fn to_table(&self) -> String {
        if self.already_adopted {
            return "already adopted: the migration history records 0024; nothing to do (use `sync-migrate up`)\n".to_owned();
        }
        let mut out = String::from("| Class     | Area            | Object | Found | Ours | Action |\n|-----------|-----------------|--------|-------|------|--------|\n");
        for d in &self.differences {
            let class = match d.class {
                DiffClass::Same => "same",
                DiffClass::Converged => "converged",
                DiffClass::Blocking => "BLOCKING",
            };
            out.push_str(&format!(
                "| {class:<9} | {:<15} | {} | {} | {} | {} |\n",
                d.area, d.object, d.found, d.ours, d.action
            ));
        }
        let count = |c| self.differences.iter().filter(|d| d.class == c).count();
        out.push_str(&format!(
            "\n{} same, {} converged by --apply, {} blocking: {}\n",
            count(DiffClass::Same),
            count(DiffClass::Converged),
            count(DiffClass::Blocking),
            if self.applied {
                "applied; history rows 1 and 24 recorded, run `sync-migrate up` next"
            } else if self.is_adoptable() {
                "adoptable (run with --apply)"
            } else {
                "NOT adoptable"
            }
        ));
        for r in &self.remaining {
            out.push_str(&format!(
                "warning: {} {}: {} — {}\n",
                r.area, r.object, r.found, r.action
            ));
        }
        out
    }
}

/// What `adopt` does.
#[derive(Debug, Clone, Default)]
pub struct AdoptOptions {
    /// Converge and record history (`--apply`); otherwise only report.
    pub apply: bool,
    /// Adopt even when rows break one of our constraints: that constraint is
    /// left out (warning), not added `NOT VALID` (which would still refuse the
    /// old writers' next write to those rows).
    pub allow_not_valid: bool,
    /// Lock waits, `lock_timeout` of each step, pooler check.
    pub migrate: MigrateOptions,
}

/// Compares the connected database's 0024 (in the current schema) with ours
/// and, with `options.apply`, converges it and records history rows 1 and 24.
///
/// Without `apply` it changes nothing (the comparison builds our 0024 in a
/// scratch schema inside a transaction that is rolled back; creating its
/// foreign keys briefly takes SHARE ROW EXCLUSIVE on `organization` and
/// `auth.users_extended`, bounded by `lock_timeout`).
///
/// With `apply`, under the migration lock: refuses (nothing changed) when a
/// difference is blocking; otherwise runs the steps (each idempotent, each
/// lock-bounded and retried, indexes built concurrently per partition), reads
/// the catalog again, and records history rows 1 and 24 exactly as refinery
/// would. A database whose history already records 24 is a no-op.
///
/// # Errors
/// [`Error::Database`] / [`Error::Unavailable`] reading the catalog;
/// [`Error::AdoptStepFailed`] naming the step and SQLSTATE (re-run converges);
/// [`Error::DdlLockTimeout`] when a step's locks stayed busy for `lock_wait`;
/// [`Error::LockTimeout`] for the migration lock; [`Error::PoolerDetected`].
pub async fn adopt(client: &mut Client, options: &AdoptOptions) -> Result<AdoptReport> {
    if options.apply && options.migrate.refuse_pooler {
        sync_connect::pooler::refuse_transaction_pooler(client).await?;
    }
    if !options.apply {
        return report(client, options).await;
    }
    let o = options.clone();
    with_lock(
        client,
        MIGRATION_LOCK_KEY,
        options.migrate.lock_wait,
        options.migrate.ddl_lock_timeout,
        move |c| Box::pin(async move { apply_locked(c, &o).await }),
    )
    .await
}

fn already() -> AdoptReport {
    AdoptReport {
        already_adopted: true,
        differences: Vec::new(),
        applied: false,
        remaining: Vec::new(),
    }
}

async fn history_state(client: &mut Client) -> Result<Option<Vec<Difference>>> {
    let applied = applied_migrations(client).await?;
    if applied.iter().any(|a| a.version == crate::embedded::V0024) {
        return Ok(None);
    }
    Ok(Some(
        applied
            .iter()
            .filter(|a| a.version > crate::embedded::V0024)
            .map(|a| Difference {
                area: "history".into(),
                object: format!("V{}__{}", a.version, a.name),
                found: "recorded without 24".into(),
                ours: "after 24".into(),
                class: DiffClass::Blocking,
                action: "the history table is inconsistent: remove the rows after 24 or restore row 24 by hand".into(),
            })
            .collect(),
    ))
}

async fn plan(
    client: &mut Client,
    options: &AdoptOptions,
) -> Result<(classify::Plan, catalog::Catalog)> {
    let lock_ms = options.migrate.ddl_lock_timeout.as_millis() as u64;
    let reference = reference::reference(client, lock_ms.max(1)).await?;
    let schema: String = client
        .query_one("SELECT current_schema()::text", &[])
        .await
        .map_err(Error::db("adopt: reading the current schema"))?
        .get(0);
    let live = catalog::snapshot(&*client, &schema).await?;
    let plan = classify::classify(client, &live, &reference, options.allow_not_valid).await?;
    Ok((plan, live))
}

async fn report(client: &mut Client, options: &AdoptOptions) -> Result<AdoptReport> {
    let Some(mut history) = history_state(client).await? else {
        return Ok(already());
    };
    let (plan, _) = plan(client, options).await?;
    history.extend(plan.differences);
    Ok(AdoptReport {
        already_adopted: false,
        differences: history,
        applied: false,
        remaining: Vec::new(),
    })
}

async fn apply_locked(client: &mut Client, options: &AdoptOptions) -> Result<AdoptReport> {
    let Some(history) = history_state(client).await? else {
        return Ok(already());
    };
    let (first, live) = plan(client, options).await?;
    let mut differences = history;
    differences.extend(first.differences);
    let blocking = differences
        .iter()
        .filter(|d| d.class == DiffClass::Blocking)
        .count();
    if blocking > 0 {
        return Ok(AdoptReport {
            already_adopted: false,
            differences,
            applied: false,
            remaining: Vec::new(),
        });
    }
    let limits = steps::Limits {
        lock_timeout: options.migrate.ddl_lock_timeout,
        wait: options.migrate.lock_wait.max(Duration::from_secs(1)),
    };
    steps::apply_steps(client, &first.steps, &live, &limits).await?;
    let (after, _) = plan(client, options).await?;
    if let Some(step) = after.steps.first() {
        return Err(Error::AdoptStepFailed {
            step: format!("converging (still planned after the steps ran: {step:?})"),
            server: Box::new(crate::error::ServerError::client(
                "the database did not converge; nothing was recorded in the history".to_owned(),
            )),
        });
    }
    history::record_0001_0024(client).await?;
    Ok(AdoptReport {
        already_adopted: false,
        differences,
        applied: true,
        remaining: after
            .differences
            .into_iter()
            .filter(|d| d.class != DiffClass::Same)
            .collect(),
    })
}
