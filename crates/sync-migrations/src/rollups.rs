//! The backfill of the activity-log rollups (migration 0026).
//!
//! Migration 0026 counts every log row written after it (statement triggers on
//! the log's parent). The rows that existed before are counted by
//! `sync_activity_rollup_backfill_step()`, one UTC month per call, each call a
//! transaction of its own: resumable (the next month is stored in
//! `sync_activity_rollup_state`), never blocking writers (it takes no table
//! lock; it waits only for a running compaction, under `lock_timeout`), and not
//! inside a migration's transaction. Until it is done the metrics scan the log
//! (exact, as before 0026) and say so.

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::error::{Error, Result};

/// How long one backfill step may wait for a running compaction or recount.
const STEP_LOCK_TIMEOUT: &str = "5s";

/// Where the backfill stands after [`backfill_rollups`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RollupBackfillReport {
    /// Whether migration 0026 (the rollups) is applied at all.
    pub installed: bool,
    /// The backfill is complete: the metrics answer from the rollups.
    pub done: bool,
    /// Another session (a step, a recount, or a compactor in a writer's open
    /// transaction) held the rollup state row past the step's lock_timeout:
    /// this call stopped without counting.
    pub busy: bool,
    /// Steps (months) this call ran.
    pub steps: u32,
    /// The next month to count, while not done.
    pub next_month: Option<OffsetDateTime>,
    /// The end of the last month to count.
    pub last_month: Option<OffsetDateTime>,
    /// Rows counted by the backfill so far (all calls).
    pub rows_counted: i64,
}

impl RollupBackfillReport {
    /// Installed, not done, nothing known beyond that (a step failed).
    pub(crate) fn owed() -> RollupBackfillReport {
        RollupBackfillReport {
            installed: true,
            done: false,
            busy: false,
            steps: 0,
            next_month: None,
            last_month: None,
            rows_counted: 0,
        }
    }
}

/// Runs backfill steps until the backfill is done, another session is running
/// one (`busy`), or `budget` has passed (checked between steps: a step — one
/// month of the log — is never cut short). `progress` is called after each step.
/// Does nothing when migration 0026 is not applied (`installed = false`) or the
/// backfill is already done.
///
/// SQL per step: `BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout =
/// '5s'; SELECT * FROM sync_activity_rollup_backfill_step(); COMMIT`.
///
/// # Errors
///
/// [`Error::Database`] when a step fails (e.g. `55P03` waiting longer than 5 s
/// for a compaction; nothing of that step is kept: run it again).
pub async fn backfill_rollups(
    client: &mut Client,
    budget: Option<Duration>,
    mut progress: impl FnMut(&RollupBackfillReport),
) -> Result<RollupBackfillReport> {
    let start = Instant::now();
    let installed: bool = client
        .query_one(
            "SELECT to_regprocedure('sync_activity_rollup_backfill_step()') IS NOT NULL",
            &[],
        )
        .await
        .map_err(Error::db("looking for the activity rollups"))?
        .get(0);
    let mut report = RollupBackfillReport {
        installed,
        done: !installed,
        busy: false,
        steps: 0,
        next_month: None,
        last_month: None,
        rows_counted: 0,
    };
    if !installed {
        return Ok(report);
    }
    report.done = client
        .query_one(
            "SELECT backfill_done_at IS NOT NULL FROM sync_activity_rollup_state",
            &[],
        )
        .await
        .map_err(Error::db("reading the rollup backfill state"))?
        .get(0);
    if report.done {
        return Ok(report);
    }
    loop {
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(Error::db("starting a rollup backfill step"))?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{STEP_LOCK_TIMEOUT}'"))
            .await
            .map_err(Error::db("setting the rollup backfill lock timeout"))?;
        let row = tx
            .query_one(
                "SELECT done, busy, next_month, last_month, rows_counted \
                 FROM sync_activity_rollup_backfill_step()",
                &[],
            )
            .await
            .map_err(Error::db("running a rollup backfill step"))?;
        tx.commit()
            .await
            .map_err(Error::db("committing a rollup backfill step"))?;
        report.done = row.get(0);
        report.busy = row.get(1);
        report.next_month = row.get(2);
        report.last_month = row.get(3);
        report.rows_counted = row.get(4);
        if report.busy {
            return Ok(report);
        }
        report.steps += 1;
        progress(&report);
        if report.done || budget.is_some_and(|b| start.elapsed() >= b) {
            return Ok(report);
        }
    }
}
