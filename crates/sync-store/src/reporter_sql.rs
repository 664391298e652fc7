//! The statements of the progress reporter (migration 0027) and of
//! `request_cancel`: attach / resume, the keyed flush, the heartbeat.

use postgres_types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::Result;
use crate::progress::{
    counts, keyed_tick_head, keyed_tick_tail, not_updated, progress, progress_cols,
};
use crate::progress_types::{ProgressCounts, SyncProgress};
use crate::sql::ScopedSql;
use crate::store::{col, Scope, ServiceScope, Store, TenantScope};
use crate::trace::{op_span, traced, RowCount};
use crate::validate;

/// Attaches a reporter: heartbeat now, this stall threshold (`$3`, ms); the
/// row with the last checkpoint. Repeating it changes nothing more.
static ATTACH: ScopedSql = ScopedSql::idempotent(concat!(
    "UPDATE sync_progress SET heartbeat_at = now(), \
       stall_after = $3::int8 * interval '1 millisecond' \
     WHERE org_id = {org} AND sync_id = $2 AND completed_at IS NULL RETURNING ",
    progress_cols!(),
    ", checkpoint"
));

/// As [`ATTACH`], and rewinds the counts to the last checkpoint's (0 / 0
/// without one): the items after it will be processed, and counted, again.
static RESUME: ScopedSql = ScopedSql::idempotent(concat!(
    "UPDATE sync_progress SET heartbeat_at = now(), \
       stall_after = $3::int8 * interval '1 millisecond', \
       processed_count = coalesce(checkpoint_processed, 0), \
       failed_count = coalesce(checkpoint_failed, 0) \
     WHERE org_id = {org} AND sync_id = $2 AND completed_at IS NULL RETURNING ",
    progress_cols!(),
    ", checkpoint"
));

/// One flush: 0025's keyed tick plus the heartbeat and, when `$8` is not
/// NULL, the checkpoint with the counts at it (old counts + `$9` / `$10`, the
/// part of this flush's increments made before the checkpoint), all in the
/// one statement. A repeated key changes nothing (the checkpoint included)
/// and answers the current state with `false`.
static FLUSH_KEYED: ScopedSql = ScopedSql::idempotent(concat!(
    keyed_tick_head!(),
    ", heartbeat_at = now(), \
         checkpoint = coalesce($8, s.checkpoint), \
         checkpoint_processed = CASE WHEN $8::jsonb IS NULL THEN s.checkpoint_processed \
                                     ELSE s.processed_count + $9 END, \
         checkpoint_failed = CASE WHEN $8::jsonb IS NULL THEN s.checkpoint_failed \
                                  ELSE s.failed_count + $10 END \
       FROM k WHERE s.org_id = k.org_id AND s.sync_id = k.sync_id AND s.completed_at IS NULL \
       RETURNING s.processed_count, s.failed_count, s.total_items, s.completed_at, \
                 s.cancel_requested_at) \
     SELECT processed_count, failed_count, total_items, completed_at, cancel_requested_at, true \
       FROM u \
     UNION ALL \
     SELECT s.processed_count, s.failed_count, s.total_items, s.completed_at, \
            s.cancel_requested_at, false",
    keyed_tick_tail!()
));

/// A flush with nothing new: the heartbeat only (idempotent without a key).
static HEARTBEAT: ScopedSql = ScopedSql::idempotent(
    "UPDATE sync_progress SET heartbeat_at = now() \
     WHERE org_id = {org} AND sync_id = $2 AND completed_at IS NULL \
     RETURNING processed_count, failed_count, total_items, completed_at, cancel_requested_at, true",
);

/// Marks a cancel request once (a repeat keeps the first time).
static REQUEST_CANCEL: ScopedSql = ScopedSql::idempotent(concat!(
    "UPDATE sync_progress SET cancel_requested_at = coalesce(cancel_requested_at, now()) \
     WHERE org_id = {org} AND sync_id = $2 AND completed_at IS NULL RETURNING ",
    progress_cols!()
));

/// What a flush learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlushAnswer {
    /// The counts after it.
    pub(crate) counts: ProgressCounts,
    /// Whether a cancel was requested.
    pub(crate) cancel_requested: bool,
}

/// The increments, position and checkpoint of one flush.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FlushDelta {
    pub(crate) key: i64,
    pub(crate) processed: i32,
    pub(crate) failed: i32,
    pub(crate) current_item: Option<i32>,
    pub(crate) batch_number: Option<i32>,
    /// The checkpoint with the increments of this flush made before it.
    pub(crate) checkpoint: Option<(serde_json::Value, i32, i32)>,
}

impl FlushDelta {
    /// Nothing to write but the heartbeat.
    pub(crate) fn is_empty(&self) -> bool {
        self.processed == 0
            && self.failed == 0
            && self.current_item.is_none()
            && self.batch_number.is_none()
            && self.checkpoint.is_none()
    }
}

/// Where a reporter writes: the store, the scope and the sync.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) store: Store,
    pub(crate) scope: Scope,
    pub(crate) sync_id: String,
}

impl RowCount for FlushAnswer {
    fn row_count(&self) -> u64 {
        1
    }
}

impl RowCount for (SyncProgress, Option<serde_json::Value>) {
    fn row_count(&self) -> u64 {
        1
    }
}

fn answer(op: &'static str, row: &Row) -> Result<FlushAnswer> {
    let at: Option<time::OffsetDateTime> = col(op, row, 4)?;
    Ok(FlushAnswer {
        counts: counts(op, row)?,
        cancel_requested: at.is_some(),
    })
}

impl Target {
    /// Attaches (or, with `rewind`, resumes): the row and its checkpoint.
    pub(crate) async fn attach(
        &self,
        stall_after_ms: i64,
        rewind: bool,
    ) -> Result<(SyncProgress, Option<serde_json::Value>)> {
        let op = if rewind {
            "resume_reporter"
        } else {
            "attach_reporter"
        };
        let sync_id = self.sync_id.as_str();
        traced(op_span(op, self.scope, Some(sync_id)), async {
            validate::id(op, "sync_id", sync_id)?;
            let sql = if rewind { &RESUME } else { &ATTACH };
            let row = self
                .store
                .opt_row(
                    self.scope,
                    op,
                    sql,
                    &[(&sync_id, Type::VARCHAR), (&stall_after_ms, Type::INT8)],
                )
                .await?;
            match row {
                Some(row) => Ok((progress(op, &row)?, col(op, &row, 22)?)),
                None => Err(not_updated(&self.store, self.scope, op, sync_id).await),
            }
        })
        .await
    }

    /// Sends one flush (keyed when it carries anything, else the heartbeat).
    pub(crate) async fn flush(&self, d: &FlushDelta) -> Result<FlushAnswer> {
        const OP: &str = "flush_progress";
        let sync_id = self.sync_id.as_str();
        traced(op_span(OP, self.scope, Some(sync_id)), async {
            let row = if d.is_empty() {
                self.store
                    .opt_row(self.scope, OP, &HEARTBEAT, &[(&sync_id, Type::VARCHAR)])
                    .await?
            } else {
                let (cp, cp_p, cp_f) = match &d.checkpoint {
                    Some((v, p, f)) => (Some(v), *p, *f),
                    None => (None, 0, 0),
                };
                self.store
                    .opt_row(
                        self.scope,
                        OP,
                        &FLUSH_KEYED,
                        &[
                            (&sync_id, Type::VARCHAR),
                            (&d.processed, Type::INT4),
                            (&d.failed, Type::INT4),
                            (&d.current_item, Type::INT4),
                            (&d.batch_number, Type::INT4),
                            (&d.key, Type::INT8),
                            (&cp, Type::JSONB),
                            (&cp_p, Type::INT4),
                            (&cp_f, Type::INT4),
                        ],
                    )
                    .await?
            };
            match row {
                Some(row) => answer(OP, &row),
                None => Err(not_updated(&self.store, self.scope, OP, sync_id).await),
            }
        })
        .await
    }

    /// Ends the sync (`outcome` `None` = completed) with `message`.
    pub(crate) async fn finish(
        &self,
        op: &'static str,
        outcome: Option<&str>,
        message: Option<&str>,
    ) -> Result<SyncProgress> {
        crate::progress::finish(&self.store, self.scope, op, &self.sync_id, outcome, message).await
    }

    /// The row now.
    pub(crate) async fn get(&self) -> Result<Option<SyncProgress>> {
        crate::progress::get(&self.store, self.scope, &self.sync_id).await
    }
}

async fn request_cancel(store: &Store, scope: Scope, sync_id: &str) -> Result<SyncProgress> {
    const OP: &str = "request_cancel";
    traced(op_span(OP, scope, Some(sync_id)), async {
        validate::id(OP, "sync_id", sync_id)?;
        let row = store
            .opt_row(scope, OP, &REQUEST_CANCEL, &[(&sync_id, Type::VARCHAR)])
            .await?;
        match row {
            Some(row) => progress(OP, &row),
            None => Err(not_updated(store, scope, OP, sync_id).await),
        }
    })
    .await
}

/// The doc shared by both scopes' `request_cancel`.
macro_rules! request_cancel_doc {
    () => {
        "Asks the worker of a running sync to stop: sets `cancel_requested_at` \
         (once; a repeat keeps the first time and is harmless, so the call is \
         retry-safe). The worker's [`ProgressReporter`](crate::ProgressReporter) \
         learns it at its next flush (within its interval), the worker stops and \
         ends the sync `cancelled`, and the database writes the `sync_cancel` \
         activity row. A sync without a live reporter is not ended by this: end \
         it with `cancel_sync`.\n\n\
         SQL: `UPDATE sync_progress SET cancel_requested_at = coalesce(cancel_requested_at, now()) \
         WHERE org_id = … AND sync_id = $2 AND completed_at IS NULL RETURNING …`.\n\n\
         # Errors\n[`Error::NotFound`](crate::Error::NotFound) (also for another org's sync in tenant scope); \
         [`Error::SyncFinished`](crate::Error::SyncFinished); [`Error::InvalidInput`](crate::Error::InvalidInput) for a bad `sync_id`; \
         [`Error::Unavailable`](crate::Error::Unavailable) / [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown) (retry)."
    };
}

impl ServiceScope {
    #[doc = request_cancel_doc!()]
    ///
    /// Service scope: for the org named by `org`.
    pub async fn request_cancel(&self, org: Uuid, sync_id: &str) -> Result<SyncProgress> {
        request_cancel(&self.store, Scope::Service(Some(org)), sync_id).await
    }
}

impl TenantScope {
    #[doc = request_cancel_doc!()]
    ///
    /// Tenant scope: the user's org, through row-level security.
    pub async fn request_cancel(&self, sync_id: &str) -> Result<SyncProgress> {
        request_cancel(&self.store, Scope::Tenant(self.user_id), sync_id).await
    }
}
