//! Sync progress: start, atomic increments, total, explicit finish, reads.

use postgres_types::Type;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::enums::parse_label;
use crate::error::{Error, Result};
use crate::progress_types::{ProgressCounts, ProgressDelta, StartSync, SyncProgress, TickOutcome};
use crate::sql::ScopedSql;
use crate::store::{col, decode_listing, name_row, Scope, ServiceScope, Store, TenantScope};
use crate::trace::{op_span, traced};
use crate::validate;

/// The columns of [`SyncProgress`], in its decoding order (19 and on: migration 0027).
macro_rules! progress_cols {
    () => {
        "id, org_id, sync_id, job_id, entity_type::text, current_item, total_items, \
         processed_count, failed_count, speed_items_per_min::float8, eta_seconds, \
         elapsed_seconds, started_at, updated_at, completed_at, source_system, \
         batch_number, metadata, initiated_by, \
         heartbeat_at, cancel_requested_at, sync_progress_stalled(sync_progress)"
    };
}
pub(crate) use progress_cols;

static START: ScopedSql = ScopedSql::write(concat!(
    "INSERT INTO sync_progress \
       (org_id, sync_id, entity_type, total_items, source_system, job_id, metadata, initiated_by) \
     VALUES ({org}, $2, $3::text::sync_entity_type, $4, $5, $6, $7, $8) RETURNING ",
    progress_cols!()
));

macro_rules! tick_update {
    () => {
        "UPDATE sync_progress SET processed_count = processed_count + $3, \
           failed_count = failed_count + $4, current_item = coalesce($5, current_item), \
           batch_number = coalesce($6, batch_number) \
         WHERE org_id = {org} AND sync_id = $2 AND completed_at IS NULL RETURNING "
    };
}

/// A progress tick returning the counts only (the hot path).
static TICK: ScopedSql = ScopedSql::write(concat!(
    tick_update!(),
    "processed_count, failed_count, total_items, completed_at"
));

/// A progress tick returning the whole row (for the API's POST, which answers
/// with the row: one round trip instead of a tick and a read).
static TICK_ROW: ScopedSql = ScopedSql::write(concat!(tick_update!(), progress_cols!()));

/// The start of a keyed tick (0025; the reporter's flush extends it): CTE `k`
/// records key `$7` for the running sync, CTE `u` starts adding `$3`..`$6`
/// (the caller ends its SET list, then `FROM k …`).
macro_rules! keyed_tick_head {
    () => {
        "WITH k AS ( \
           INSERT INTO sync_progress_tick_key (org_id, sync_id, tick_key) \
           SELECT s.org_id, s.sync_id, $7 FROM sync_progress s \
            WHERE s.org_id = {org} AND s.sync_id = $2 AND s.completed_at IS NULL \
           ON CONFLICT DO NOTHING RETURNING org_id, sync_id), \
         u AS ( \
           UPDATE sync_progress s SET processed_count = s.processed_count + $3, \
             failed_count = s.failed_count + $4, current_item = coalesce($5, s.current_item), \
             batch_number = coalesce($6, s.batch_number)"
    };
}
pub(crate) use keyed_tick_head;

/// The end of a keyed tick: the current row when the key was already there.
macro_rules! keyed_tick_tail {
    () => {
        " \
           FROM sync_progress s \
          WHERE s.org_id = {org} AND s.sync_id = $2 AND s.completed_at IS NULL \
            AND NOT EXISTS (SELECT 1 FROM k)"
    };
}
pub(crate) use keyed_tick_tail;

/// A keyed progress tick: the key is recorded and the counts added in one
/// statement, only when the key is new for this running sync (a repeated key
/// changes nothing and answers the current counts with `false`). Distinct keys
/// all apply, in any order. `$7` is the key.
static TICK_KEYED: ScopedSql = ScopedSql::idempotent(concat!(
    keyed_tick_head!(),
    " \
       FROM k WHERE s.org_id = k.org_id AND s.sync_id = k.sync_id AND s.completed_at IS NULL \
       RETURNING s.processed_count, s.failed_count, s.total_items, s.completed_at) \
     SELECT processed_count, failed_count, total_items, completed_at, true FROM u \
     UNION ALL \
     SELECT s.processed_count, s.failed_count, s.total_items, s.completed_at, false",
    keyed_tick_tail!()
));

static SET_TOTAL: ScopedSql = ScopedSql::write(concat!(
    "UPDATE sync_progress SET total_items = $3 \
     WHERE org_id = {org} AND sync_id = $2 AND completed_at IS NULL RETURNING ",
    progress_cols!()
));

// $3 = outcome status ('failed' / 'cancelled') or NULL for a plain completion.
static FINISH: ScopedSql = ScopedSql::write(concat!(
    "UPDATE sync_progress SET completed_at = greatest(now(), started_at), \
       metadata = CASE WHEN $3::text IS NULL THEN metadata ELSE metadata || \
         jsonb_build_object('_sync_outcome', \
           jsonb_build_object('status', $3::text, 'error_message', $4::text)) END \
     WHERE org_id = {org} AND sync_id = $2 AND completed_at IS NULL RETURNING ",
    progress_cols!()
));

static STATE: ScopedSql =
    ScopedSql::new("SELECT completed_at FROM sync_progress WHERE org_id = {org} AND sync_id = $2");

static GET: ScopedSql = ScopedSql::new(concat!(
    "SELECT ",
    progress_cols!(),
    " FROM sync_progress WHERE org_id = {org} AND sync_id = $2"
));

static ACTIVE: ScopedSql = ScopedSql::new(concat!(
    "SELECT ",
    progress_cols!(),
    " FROM sync_progress WHERE org_id = {org} AND completed_at IS NULL \
      ORDER BY updated_at DESC, id DESC"
));

static RECENT: ScopedSql = ScopedSql::new(concat!(
    "SELECT ",
    progress_cols!(),
    " FROM sync_progress WHERE org_id = {org} ORDER BY started_at DESC, id DESC LIMIT $2"
));

static BY_JOB: ScopedSql = ScopedSql::new(concat!(
    "SELECT ",
    progress_cols!(),
    " FROM sync_progress WHERE org_id = {org} AND job_id = $2 ORDER BY started_at DESC, id DESC"
));

/// Decodes one row; a value that does not decode (a row written outside the
/// store) is an error naming that row's id and sync_id.
pub(crate) fn progress(op: &'static str, row: &Row) -> Result<SyncProgress> {
    decode_progress(op, row).map_err(|e| name_row(e, row, 0, 2))
}

fn decode_progress(op: &'static str, row: &Row) -> Result<SyncProgress> {
    Ok(SyncProgress {
        id: col(op, row, 0)?,
        org_id: col(op, row, 1)?,
        sync_id: col(op, row, 2)?,
        job_id: col(op, row, 3)?,
        entity_type: parse_label(op, col::<&str>(op, row, 4)?)?,
        current_item: col(op, row, 5)?,
        total_items: col(op, row, 6)?,
        processed_count: col(op, row, 7)?,
        failed_count: col(op, row, 8)?,
        speed_items_per_min: col(op, row, 9)?,
        eta_seconds: col(op, row, 10)?,
        elapsed_seconds: col(op, row, 11)?,
        started_at: col(op, row, 12)?,
        updated_at: col(op, row, 13)?,
        completed_at: col(op, row, 14)?,
        source_system: col(op, row, 15)?,
        batch_number: col(op, row, 16)?,
        metadata: col(op, row, 17)?,
        initiated_by: col(op, row, 18)?,
        heartbeat_at: col(op, row, 19)?,
        cancel_requested_at: col(op, row, 20)?,
        stalled: col(op, row, 21)?,
    })
}

/// After an UPDATE … AND completed_at IS NULL matched nothing: why.
pub(crate) async fn not_updated(
    store: &Store,
    scope: Scope,
    op: &'static str,
    sync_id: &str,
) -> Error {
    match store
        .opt_row(scope, op, &STATE, &[(&sync_id, Type::VARCHAR)])
        .await
    {
        Err(e) => e,
        Ok(None) => Error::NotFound {
            operation: op,
            what: format!("sync {sync_id:?}"),
        },
        Ok(Some(_)) => Error::SyncFinished {
            operation: op,
            sync_id: sync_id.to_owned(),
        },
    }
}

async fn start(
    store: &Store,
    scope: Scope,
    input: &StartSync,
    tenant_user: Option<Uuid>,
) -> Result<SyncProgress> {
    const OP: &str = "start_sync";
    traced(op_span(OP, scope, Some(&input.sync_id)), async {
        let by = match tenant_user {
            Some(user) => Some(validate::acting_user(
                OP,
                "initiated_by",
                input.initiated_by,
                user,
            )?),
            None => input.initiated_by,
        };
        validate::id(OP, "sync_id", &input.sync_id)?;
        if let Some(t) = input.total_items {
            validate::non_negative(OP, "total_items", t)?;
        }
        if let Some(s) = &input.source_system {
            validate::text(OP, "source_system", s, validate::MAX_SOURCE_SYSTEM_CHARS)?;
        }
        if let Some(j) = &input.job_id {
            validate::text(OP, "job_id", j, validate::MAX_ID_CHARS)?;
        }
        let empty = serde_json::Value::Object(Default::default());
        let metadata = input.metadata.as_ref().unwrap_or(&empty);
        validate::metadata(OP, metadata)?;
        let entity = input.entity_type.as_str();
        let row = store
            .one_row(
                scope,
                OP,
                &START,
                &[
                    (&input.sync_id, Type::VARCHAR),
                    (&entity, Type::TEXT),
                    (&input.total_items, Type::INT4),
                    (&input.source_system, Type::VARCHAR),
                    (&input.job_id, Type::VARCHAR),
                    (metadata, Type::JSONB),
                    (&by, Type::UUID),
                ],
            )
            .await?;
        progress(OP, &row)
    })
    .await
}

pub(crate) fn counts(op: &'static str, row: &Row) -> Result<ProgressCounts> {
    Ok(ProgressCounts {
        processed_count: col(op, row, 0)?,
        failed_count: col(op, row, 1)?,
        total_items: col(op, row, 2)?,
        completed_at: col(op, row, 3)?,
    })
}

fn keyed_counts(op: &'static str, row: &Row) -> Result<TickOutcome> {
    Ok(TickOutcome {
        counts: counts(op, row)?,
        applied: col(op, row, 4)?,
    })
}

/// A tick with idempotency key `key` ([`TICK_KEYED`]).
async fn tick_keyed(
    store: &Store,
    scope: Scope,
    sync_id: &str,
    key: i64,
    d: &ProgressDelta,
) -> Result<TickOutcome> {
    const OP: &str = "report_progress_keyed";
    traced(op_span(OP, scope, Some(sync_id)), async {
        check_tick(OP, sync_id, d)?;
        let row = store
            .opt_row(
                scope,
                OP,
                &TICK_KEYED,
                &[
                    (&sync_id, Type::VARCHAR),
                    (&d.processed, Type::INT4),
                    (&d.failed, Type::INT4),
                    (&d.current_item, Type::INT4),
                    (&d.batch_number, Type::INT4),
                    (&key, Type::INT8),
                ],
            )
            .await?;
        match row {
            Some(row) => keyed_counts(OP, &row),
            None => Err(not_updated(store, scope, OP, sync_id).await),
        }
    })
    .await
}

fn check_tick(op: &'static str, sync_id: &str, d: &ProgressDelta) -> Result<()> {
    validate::id(op, "sync_id", sync_id)?;
    validate::non_negative(op, "processed", d.processed)?;
    validate::non_negative(op, "failed", d.failed)?;
    if let Some(c) = d.current_item {
        validate::non_negative(op, "current_item", c)?;
    }
    if let Some(b) = d.batch_number {
        validate::non_negative(op, "batch_number", b)?;
    }
    Ok(())
}

/// Runs `sql` ([`TICK`] or [`TICK_ROW`]) and decodes its row with `decode`.
async fn tick<T: crate::trace::RowCount>(
    store: &Store,
    scope: Scope,
    sync_id: &str,
    d: &ProgressDelta,
    sql: &ScopedSql,
    decode: fn(&'static str, &Row) -> Result<T>,
) -> Result<T> {
    const OP: &str = "report_progress";
    traced(op_span(OP, scope, Some(sync_id)), async {
        check_tick(OP, sync_id, d)?;
        let row = store
            .opt_row(
                scope,
                OP,
                sql,
                &[
                    (&sync_id, Type::VARCHAR),
                    (&d.processed, Type::INT4),
                    (&d.failed, Type::INT4),
                    (&d.current_item, Type::INT4),
                    (&d.batch_number, Type::INT4),
                ],
            )
            .await?;
        match row {
            Some(row) => decode(OP, &row),
            None => Err(not_updated(store, scope, OP, sync_id).await),
        }
    })
    .await
}

async fn set_total(
    store: &Store,
    scope: Scope,
    sync_id: &str,
    total: Option<i32>,
) -> Result<SyncProgress> {
    const OP: &str = "set_total";
    traced(op_span(OP, scope, Some(sync_id)), async {
        validate::id(OP, "sync_id", sync_id)?;
        if let Some(t) = total {
            validate::non_negative(OP, "total_items", t)?;
        }
        let row = store
            .opt_row(
                scope,
                OP,
                &SET_TOTAL,
                &[(&sync_id, Type::VARCHAR), (&total, Type::INT4)],
            )
            .await?;
        match row {
            Some(row) => progress(OP, &row),
            None => Err(not_updated(store, scope, OP, sync_id).await),
        }
    })
    .await
}

pub(crate) async fn finish(
    store: &Store,
    scope: Scope,
    op: &'static str,
    sync_id: &str,
    outcome: Option<&str>,
    message: Option<&str>,
) -> Result<SyncProgress> {
    traced(op_span(op, scope, Some(sync_id)), async {
        validate::id(op, "sync_id", sync_id)?;
        if let Some(m) = message {
            validate::error_message(op, m)?;
        }
        let row = store
            .opt_row(
                scope,
                op,
                &FINISH,
                &[
                    (&sync_id, Type::VARCHAR),
                    (&outcome, Type::TEXT),
                    (&message, Type::TEXT),
                ],
            )
            .await?;
        match row {
            Some(row) => progress(op, &row),
            None => Err(not_updated(store, scope, op, sync_id).await),
        }
    })
    .await
}

pub(crate) async fn get(
    store: &Store,
    scope: Scope,
    sync_id: &str,
) -> Result<Option<SyncProgress>> {
    const OP: &str = "get_sync";
    traced(op_span(OP, scope, Some(sync_id)), async {
        validate::id(OP, "sync_id", sync_id)?;
        let row = store
            .opt_row(scope, OP, &GET, &[(&sync_id, Type::VARCHAR)])
            .await?;
        row.map(|r| progress(OP, &r)).transpose()
    })
    .await
}

async fn active(store: &Store, scope: Scope) -> Result<Vec<SyncProgress>> {
    const OP: &str = "list_active_syncs";
    traced(op_span(OP, scope, None), async {
        let rows = store.rows(scope, OP, &ACTIVE, &[]).await?;
        Ok(decode_listing(OP, &rows, 0, 2, progress))
    })
    .await
}

async fn recent(store: &Store, scope: Scope, limit: u32) -> Result<Vec<SyncProgress>> {
    const OP: &str = "list_recent_syncs";
    traced(op_span(OP, scope, None), async {
        validate::page_size(OP, limit)?;
        let limit = i64::from(limit);
        let rows = store
            .routed_rows(scope, OP, &RECENT, &[(&limit, Type::INT8)])
            .await?;
        Ok(decode_listing(OP, &rows, 0, 2, progress))
    })
    .await
}

async fn by_job(store: &Store, scope: Scope, job_id: &str) -> Result<Vec<SyncProgress>> {
    const OP: &str = "find_syncs_by_job";
    traced(op_span(OP, scope, None), async {
        validate::id(OP, "job_id", job_id)?;
        let rows = store
            .rows(scope, OP, &BY_JOB, &[(&job_id, Type::VARCHAR)])
            .await?;
        Ok(decode_listing(OP, &rows, 0, 2, progress))
    })
    .await
}

macro_rules! progress_api {
    ($scope_ty:ty, $doc_scope:literal, |$s:ident| $scope:expr, $by:expr, $( $org:ident : $org_ty:ty )?) => {
        impl $scope_ty {
            /// Starts a sync. The database logs `sync_start` (trigger
            /// `trg_sync_progress_30_log_start`) and, when `total_items = 0`, completes it at once.
            ///
            /// SQL: `INSERT INTO sync_progress (…) VALUES (…) RETURNING …`.
            /// Errors: [`Error::Conflict`] when the org already has this `sync_id`;
            /// [`Error::InvalidInput`] for bad input (nothing written).
            #[doc = $doc_scope]
            pub async fn start_sync(&$s, $($org: $org_ty,)? input: &StartSync) -> Result<SyncProgress> {
                start(&$s.store, $scope, input, $by).await
            }

            /// Adds `delta.processed` / `delta.failed` atomically (concurrent
            /// workers lose no update) and sets `current_item` / `batch_number`
            /// when given. Completes the sync when handled reaches the total
            /// (trigger). One statement, one round trip.
            ///
            /// **Not retry-safe** (no idempotency key): after
            /// [`Error::OutcomeUnknown`] (`retry_safe == false`) the tick may have
            /// been applied, and repeating it may count it twice. Workers that
            /// retry use [`Self::report_progress_keyed`].
            ///
            /// SQL: `UPDATE sync_progress SET processed_count = processed_count + $n, …
            /// WHERE org_id = … AND sync_id = $2 AND completed_at IS NULL`.
            ///
            /// # Errors
            /// [`Error::InvalidInput`] for negative input or when the counts
            /// would pass `total_items` (CHECK `sync_progress_handled_within_total`)
            /// or overflow; [`Error::NotFound`]; [`Error::SyncFinished`];
            /// [`Error::Unavailable`] (not applied); [`Error::OutcomeUnknown`].
            #[doc = $doc_scope]
            pub async fn report_progress(&$s, $($org: $org_ty,)? sync_id: &str, delta: &ProgressDelta) -> Result<ProgressCounts> {
                tick(&$s.store, $scope, sync_id, delta, &TICK, counts).await
            }

            /// [`Self::report_progress`] with an idempotency key, **retry-safe**:
            /// the tick applies at most once per `(sync, key)`. `key` is chosen by
            /// the caller, unique per tick of this sync (e.g. the batch number,
            /// or worker id × 2³² + batch). Applying a key again changes nothing
            /// and answers the current counts with [`TickOutcome::applied`]
            /// `false`; distinct keys from concurrent workers all apply, in any
            /// order. After [`Error::OutcomeUnknown`] or [`Error::Unavailable`]
            /// (both [`Error::is_retryable`]) repeat the same call with the
            /// same key and delta.
            ///
            /// Keys are kept while the sync runs and deleted when it finishes
            /// (trigger `trg_sync_progress_50_prune_tick_keys`): a repeat after
            /// the sync finished — possibly completed by this very tick —
            /// answers [`Error::SyncFinished`] and applies nothing.
            ///
            /// SQL: one statement, `WITH k AS (INSERT INTO sync_progress_tick_key
            /// … ON CONFLICT DO NOTHING RETURNING …), u AS (UPDATE sync_progress …
            /// FROM k …) SELECT … FROM u UNION ALL SELECT <current counts>
            /// WHERE NOT EXISTS (SELECT 1 FROM k)` (migration 0025).
            ///
            /// # Errors
            /// As [`Self::report_progress`]; [`Error::OutcomeUnknown`] carries
            /// `retry_safe == true`.
            #[doc = $doc_scope]
            pub async fn report_progress_keyed(&$s, $($org: $org_ty,)? sync_id: &str, key: i64, delta: &ProgressDelta) -> Result<TickOutcome> {
                tick_keyed(&$s.store, $scope, sync_id, key, delta).await
            }

            /// Sets (or clears, with `None`) the total of a running sync. Setting it
            /// to exactly the handled count completes the sync (trigger).
            ///
            /// SQL: `UPDATE sync_progress SET total_items = $3 WHERE … AND completed_at IS NULL`.
            /// Errors: [`Error::InvalidInput`] when below the handled count;
            /// [`Error::NotFound`]; [`Error::SyncFinished`].
            #[doc = $doc_scope]
            pub async fn set_total(&$s, $($org: $org_ty,)? sync_id: &str, total_items: Option<i32>) -> Result<SyncProgress> {
                set_total(&$s.store, $scope, sync_id, total_items).await
            }

            /// Marks a running sync completed now; the database logs
            /// `sync_complete` (`completed`, or `completed_with_errors` when
            /// `failed_count > 0`).
            ///
            /// SQL: `UPDATE sync_progress SET completed_at = greatest(now(), started_at) WHERE … AND completed_at IS NULL`.
            /// Errors: [`Error::NotFound`]; [`Error::SyncFinished`].
            #[doc = $doc_scope]
            pub async fn complete_sync(&$s, $($org: $org_ty,)? sync_id: &str) -> Result<SyncProgress> {
                finish(&$s.store, $scope, "complete_sync", sync_id, None, None).await
            }

            /// Marks a running sync failed; the database logs `sync_fail` / `failed`
            /// with `error_message`.
            ///
            /// SQL: one `UPDATE` setting `completed_at` and merging
            /// `{"_sync_outcome": {"status": "failed", "error_message": …}}` into metadata.
            /// Errors: [`Error::InvalidInput`] (oversized message); [`Error::NotFound`]; [`Error::SyncFinished`].
            #[doc = $doc_scope]
            pub async fn fail_sync(&$s, $($org: $org_ty,)? sync_id: &str, error_message: &str) -> Result<SyncProgress> {
                finish(&$s.store, $scope, "fail_sync", sync_id, Some("failed"), Some(error_message)).await
            }

            /// Marks a running sync cancelled; the database logs `sync_cancel` /
            /// `cancelled` with the reason as `error_message`.
            ///
            /// SQL: as [`Self::fail_sync`] with status `cancelled`.
            #[doc = $doc_scope]
            pub async fn cancel_sync(&$s, $($org: $org_ty,)? sync_id: &str, reason: Option<&str>) -> Result<SyncProgress> {
                finish(&$s.store, $scope, "cancel_sync", sync_id, Some("cancelled"), reason).await
            }

            /// One sync with its database-computed elapsed, speed and ETA (the
            /// spec's "Get Sync Progress"), or `None`.
            ///
            /// SQL: `SELECT … FROM sync_progress WHERE org_id = … AND sync_id = $2`.
            ///
            /// # Errors
            /// [`Error::InvalidInput`] for a bad `sync_id`; [`Error::Decode`] naming
            /// the row when it does not decode (written outside the store).
            #[doc = $doc_scope]
            pub async fn get_sync(&$s, $($org: $org_ty,)? sync_id: &str) -> Result<Option<SyncProgress>> {
                get(&$s.store, $scope, sync_id).await
            }

            /// Running syncs, most recently updated first (the spec's "Get Active Syncs").
            ///
            /// SQL: `… WHERE org_id = … AND completed_at IS NULL ORDER BY updated_at DESC`
            /// (partial index `sync_progress_active_idx`).
            /// A row that does not decode (written outside the store) is skipped
            /// and reported as a WARN event (see the crate docs).
            ///
            /// # Errors
            /// Only the call's own failures ([`Error::Unavailable`], …), never one row's.
            #[doc = $doc_scope]
            pub async fn list_active_syncs(&$s $(, $org: $org_ty)?) -> Result<Vec<SyncProgress>> {
                active(&$s.store, $scope).await
            }

            /// The `limit` (1..=1000) most recently started syncs, finished or not.
            ///
            /// SQL: `… WHERE org_id = … ORDER BY started_at DESC, id DESC LIMIT $2`
            /// (index `sync_progress_org_started_idx`). Undecodable rows are
            /// skipped and reported, as in `list_active_syncs`.
            ///
            /// # Errors
            /// [`Error::InvalidInput`] for a limit outside 1..=1000.
            #[doc = $doc_scope]
            pub async fn list_recent_syncs(&$s, $($org: $org_ty,)? limit: u32) -> Result<Vec<SyncProgress>> {
                recent(&$s.store, $scope, limit).await
            }

            /// The syncs of one worker job, newest first (the spec's troubleshooting
            /// query by `job_id`).
            ///
            /// SQL: `… WHERE org_id = … AND job_id = $2 ORDER BY started_at DESC`
            /// (index `sync_progress_org_job_idx`). Undecodable rows are
            /// skipped and reported, as in `list_active_syncs`.
            ///
            /// # Errors
            /// [`Error::InvalidInput`] for a bad `job_id`.
            #[doc = $doc_scope]
            pub async fn find_syncs_by_job(&$s, $($org: $org_ty,)? job_id: &str) -> Result<Vec<SyncProgress>> {
                by_job(&$s.store, $scope, job_id).await
            }
        }
    };
}

progress_api!(ServiceScope, "\n\nService scope: for the org named by `org`.", |self| Scope::Service(Some(org)), None, org: Uuid);
progress_api!(
    TenantScope,
    "\n\nTenant scope: for the user's org, through RLS; `initiated_by` must be `None` (then the user) or the user.",
    |self| Scope::Tenant(self.user_id),
    Some(self.user_id),
);

impl TenantScope {
    /// [`TenantScope::report_progress`] returning the whole row after the tick
    /// (with the triggers' elapsed, speed, ETA and completion), in the same one
    /// statement: `UPDATE … RETURNING <all columns>`.
    pub(crate) async fn report_progress_row(
        &self,
        sync_id: &str,
        delta: &ProgressDelta,
    ) -> Result<SyncProgress> {
        let scope = Scope::Tenant(self.user_id);
        tick(&self.store, scope, sync_id, delta, &TICK_ROW, progress).await
    }
}
