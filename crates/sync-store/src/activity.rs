//! Activity log: append one, append many (binary COPY), filtered keyset listing.

use std::pin::pin;

use postgres_types::{ToSql, Type};
use time::OffsetDateTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::activity_types::{
    ActivityEntry, ActivityFilter, ActivityPage, BatchOutcome, NewActivity,
};
use crate::copy_types::Label;
use crate::cursor::ActivityCursor;
use crate::enums::{parse_label, SyncAction, SyncEntityType, SyncStatus};
use crate::error::{Error, Result};
use crate::listing_window::{windows, Window};
use crate::sql::ScopedSql;
use crate::store::{
    col, decode_listing, name_row, ConnGuard, Param, Scope, ServiceScope, StatementMode, Store,
    TenantScope,
};
use crate::trace::{op_span, traced};
use crate::validate;

macro_rules! activity_cols {
    () => {
        "id, org_id, sync_id, entity_type::text, action::text, status::text, record_count, \
         duration_seconds::float8, error_message, user_id, created_at"
    };
}

static APPEND: ScopedSql = ScopedSql::write(concat!(
    "INSERT INTO sync_activity_log (org_id, sync_id, entity_type, action, status, record_count, \
       duration_seconds, error_message, user_id, created_at) \
     VALUES ({org}, $2, $3::text::sync_entity_type, $4::text::sync_action, \
       $5::text::sync_status_type, $6, $7::numeric, $8, $9, coalesce($10, now())) RETURNING ",
    activity_cols!()
));

/// [`APPEND`] with the caller's `id` (`$11`) and `created_at` (`$10`): a repeat
/// of the same `(id, created_at)` writes nothing (`ON CONFLICT DO NOTHING` on
/// the primary key) and answers the stored row of this org.
static APPEND_KEYED: ScopedSql = ScopedSql::idempotent(concat!(
    "WITH ins AS (INSERT INTO sync_activity_log (id, org_id, sync_id, entity_type, action, \
       status, record_count, duration_seconds, error_message, user_id, created_at) \
     VALUES ($11, {org}, $2, $3::text::sync_entity_type, $4::text::sync_action, \
       $5::text::sync_status_type, $6, $7::numeric, $8, $9, $10) \
     ON CONFLICT DO NOTHING RETURNING ",
    activity_cols!(),
    ") SELECT * FROM ins UNION ALL SELECT ",
    activity_cols!(),
    " FROM sync_activity_log WHERE id = $11 AND created_at = $10 AND org_id = {org} \
       AND NOT EXISTS (SELECT 1 FROM ins)"
));

/// The stored entry `(id, created_at)` of the org (after a keyed append met a
/// row committed after its snapshot).
static BY_KEY: ScopedSql = ScopedSql::new(concat!(
    "SELECT ",
    activity_cols!(),
    " FROM sync_activity_log WHERE id = $2 AND created_at = $3 AND org_id = {org}"
));

/// Records a bulk batch's key in the batch's transaction, with the
/// transaction's `now()`: `true` and the batch's size when the key is new,
/// `false` and the size recorded then when it was applied before (no row when
/// that happened after this statement's snapshot).
const BATCH_KEY: &str =
    "WITH k AS (INSERT INTO sync_activity_batch (org_id, batch_key, row_count) \
       VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING row_count) \
     SELECT now(), true, row_count FROM k \
     UNION ALL SELECT now(), false, b.row_count FROM sync_activity_batch b \
      WHERE b.org_id = $1 AND b.batch_key = $2 AND NOT EXISTS (SELECT 1 FROM k)";

/// Page sizes a cached listing statement is written for (see [`list_query`]).
const PAGE_BUCKETS: [u32; 9] = [10, 20, 25, 50, 100, 200, 250, 500, 1000];

/// The listing statement for one filter shape and window, and its parameters
/// after `$1` (the org in service scope, an unused NULL in tenant scope): each
/// filter given becomes one condition and one parameter (so the plan needs no
/// `$n IS NULL OR …` terms), the keyset cursor becomes `created_at <= $a AND
/// (created_at, id) < ($a, $b)` (the row comparison is an index condition on
/// sync_activity_log_org_created_idx (org_id, created_at DESC, id DESC), the
/// plain bound lets the planner prune newer partitions), the window's bounds
/// (see [`crate::listing_window`]) become `created_at >= $lo` / `created_at <
/// $hi`, and the row count is the literal `LIMIT fetch`.
///
/// Unnamed statements are planned per call with the parameters' values, so
/// the planner prunes to the window's partitions and never opens the others:
/// planning costs the same with 17 or 53 partitions. Cached statements are
/// planned per call too while a custom plan is cheaper than the generic one
/// (whose partitions are all locked at each execution); the windows keep the
/// custom plan small.
fn list_query<'a>(
    filters: [(&'static str, Option<&'a (dyn ToSql + Sync)>, Type); 6],
    cursor: Option<(&'a OffsetDateTime, &'a Uuid)>,
    window: &'a Window,
    fetch: u32,
) -> (ScopedSql, Vec<Param<'a>>) {
    let mut sql = String::from(concat!(
        "SELECT ",
        activity_cols!(),
        " FROM sync_activity_log WHERE org_id = {org}"
    ));
    let mut params: Vec<Param<'a>> = Vec::new();
    for (condition, value, ty) in filters {
        if let Some(value) = value {
            params.push((value, ty));
            let n = params.len() + 1;
            sql.push_str(&format!(" AND {}", condition.replace("{}", &n.to_string())));
        }
    }
    if let Some((at, id)) = cursor {
        params.push((at, Type::TIMESTAMPTZ));
        params.push((id, Type::UUID));
        let n = params.len();
        sql.push_str(&format!(
            " AND created_at <= ${n} AND (created_at, id) < (${n}, ${})",
            n + 1
        ));
    }
    if let Some(lo) = &window.lo {
        params.push((lo, Type::TIMESTAMPTZ));
        sql.push_str(&format!(" AND created_at >= ${}", params.len() + 1));
    }
    if let Some(hi) = &window.hi {
        params.push((hi, Type::TIMESTAMPTZ));
        sql.push_str(&format!(" AND created_at < ${}", params.len() + 1));
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {fetch}"));
    (ScopedSql::owned(sql), params)
}

const COPY: &str = "COPY sync_activity_log (id, org_id, sync_id, entity_type, action, status, \
     record_count, duration_seconds, error_message, user_id, created_at) FROM STDIN (FORMAT binary)";

/// Decodes one row; a value that does not decode is an error naming the row.
fn entry(op: &'static str, row: &Row) -> Result<ActivityEntry> {
    decode_entry(op, row).map_err(|e| name_row(e, row, 0, 2))
}

fn decode_entry(op: &'static str, row: &Row) -> Result<ActivityEntry> {
    Ok(ActivityEntry {
        id: col(op, row, 0)?,
        org_id: col(op, row, 1)?,
        sync_id: col(op, row, 2)?,
        entity_type: col::<Option<&str>>(op, row, 3)?
            .map(|l| parse_label(op, l))
            .transpose()?,
        action: parse_label(op, col::<&str>(op, row, 4)?)?,
        // NULL only on an adopted database whose column is still nullable.
        status: parse_label(op, col::<Option<&str>>(op, row, 5)?.unwrap_or(""))?,
        record_count: col(op, row, 6)?,
        duration_seconds: col(op, row, 7)?,
        error_message: col(op, row, 8)?,
        user_id: col(op, row, 9)?,
        created_at: col(op, row, 10)?,
    })
}

fn check(op: &'static str, e: &NewActivity, tenant_user: Option<Uuid>) -> Result<()> {
    if let Some(s) = &e.sync_id {
        validate::id(op, "sync_id", s)?;
    }
    validate::non_negative(op, "record_count", e.record_count)?;
    if let Some(d) = e.duration_seconds {
        validate::exact_decimal(op, "duration_seconds", d)?;
    }
    if let Some(m) = &e.error_message {
        validate::error_message(op, m)?;
    }
    if e.id.is_some() && e.created_at.is_none() {
        return Err(Error::invalid(
            op,
            "id",
            "an id is an idempotency key only with created_at (the log's key is (id, created_at)); \
             pass both, or neither",
        ));
    }
    if let Some(user) = tenant_user {
        validate::acting_user(op, "user_id", e.user_id, user)?;
        if e.created_at.is_some() {
            return Err(Error::invalid(
                op,
                "created_at",
                "a tenant cannot choose the time of an audit entry; pass None (the server's now())",
            ));
        }
    }
    Ok(())
}

/// The stored `created_at` of an entry (see [`validate::timestamp`]).
fn created_at(op: &'static str, e: &NewActivity) -> Result<Option<OffsetDateTime>> {
    e.created_at
        .map(|at| validate::timestamp(op, "created_at", at))
        .transpose()
}

fn decimal(op: &'static str, v: Option<f64>) -> Result<Option<rust_decimal::Decimal>> {
    v.map(|d| validate::exact_decimal(op, "duration_seconds", d))
        .transpose()
}

async fn append(
    store: &Store,
    scope: Scope,
    e: &NewActivity,
    tenant_user: Option<Uuid>,
) -> Result<ActivityEntry> {
    const OP: &str = "append_activity";
    traced(op_span(OP, scope, e.sync_id.as_deref()), async {
        check(OP, e, tenant_user)?;
        let duration = decimal(OP, e.duration_seconds)?;
        let at = created_at(OP, e)?;
        let user = e.user_id.or(tenant_user);
        let entity = e.entity_type.map(SyncEntityType::as_str);
        let action = e.action.as_str();
        let status = e.status.as_str();
        let params: [Param<'_>; 10] = [
            (&e.sync_id, Type::VARCHAR),
            (&entity, Type::TEXT),
            (&action, Type::TEXT),
            (&status, Type::TEXT),
            (&e.record_count, Type::INT4),
            (&duration, Type::NUMERIC),
            (&e.error_message, Type::TEXT),
            (&user, Type::UUID),
            (&at, Type::TIMESTAMPTZ),
            (&e.id, Type::UUID),
        ];
        let (Some(id), Some(at)) = (e.id, at) else {
            let row = store.one_row(scope, OP, &APPEND, &params[..9]).await?;
            return entry(OP, &row);
        };
        if let Some(row) = store.opt_row(scope, OP, &APPEND_KEYED, &params).await? {
            return entry(OP, &row);
        }
        // The key met a row committed after the statement's snapshot: read it.
        let row = store
            .opt_row(
                scope,
                OP,
                &BY_KEY,
                &[(&id, Type::UUID), (&at, Type::TIMESTAMPTZ)],
            )
            .await?
            .ok_or_else(|| {
                Error::invalid(
                    OP,
                    "id",
                    "this (id, created_at) is already taken by an entry this caller cannot see; \
                     use a fresh random id",
                )
            })?;
        entry(OP, &row)
    })
    .await
}

/// The cursor after a listed row, read from its key columns even when the
/// row itself does not decode. A `created_at` later than any `OffsetDateTime`
/// (a row written outside the store) gives the latest representable instant,
/// so the next page starts after every such row (none of which decodes);
/// one earlier than any gives `None` (no decodable row can follow).
fn raw_cursor(row: &Row) -> Option<ActivityCursor> {
    let id: Uuid = row.try_get(0).ok()?;
    if let Ok(created_at) = row.try_get::<_, OffsetDateTime>(10) {
        return Some(ActivityCursor { created_at, id });
    }
    let RawMicros(micros) = row.try_get(10).ok()?;
    (micros > 0).then(|| ActivityCursor {
        created_at: time::macros::datetime!(9999-12-31 23:59:59.999999 UTC),
        id: Uuid::from_u128(u128::MAX),
    })
}

/// A `timestamptz` as its raw microseconds since 2000-01-01 (any value,
/// including `±infinity`).
struct RawMicros(i64);

impl<'a> postgres_types::FromSql<'a> for RawMicros {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<RawMicros, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into()?;
        Ok(RawMicros(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

async fn list(
    store: &Store,
    scope: Scope,
    filter: &ActivityFilter,
    after: Option<ActivityCursor>,
    limit: u32,
) -> Result<ActivityPage> {
    const OP: &str = "list_activity";
    traced(op_span(OP, scope, filter.sync_id.as_deref()), async {
        validate::page_size(OP, limit)?;
        if let Some(s) = &filter.sync_id {
            validate::id(OP, "sync_id", s)?;
        }
        // Any offset is accepted here; only what the driver would panic on
        // (no UTC equivalent) is refused.
        for (field, t) in [
            ("since", filter.since),
            ("until", filter.until),
            ("after", after.map(|c| c.created_at)),
        ] {
            if let Some(t) = t {
                if t.checked_to_offset(time::UtcOffset::UTC).is_none() {
                    return Err(Error::invalid(
                        OP,
                        field,
                        format!("{t} has no UTC equivalent"),
                    ));
                }
            }
        }
        let entity = filter.entity_type.map(SyncEntityType::as_str);
        let action = filter.action.map(SyncAction::as_str);
        let status = filter.status.map(SyncStatus::as_str);
        // One extra row tells whether another page follows. Cached statements
        // are written for a page-size bucket (see `list_query`); unnamed ones are
        // planned per call anyway and ask for exactly what is still missing.
        let mode = store.statement_mode();
        let fetch_for = |need: u32| match mode {
            StatementMode::CachedPerConnection => PAGE_BUCKETS
                .into_iter()
                .find(|&b| b + 1 >= need)
                .map_or(need, |b| b + 1),
            StatementMode::Unnamed => need,
        };
        let rows_wanted = fetch_for(limit + 1);
        fn given<T: ToSql + Sync>(v: &Option<T>) -> Option<&(dyn ToSql + Sync)> {
            v.as_ref().map(|v| v as _)
        }
        // Newest windows first (see `listing_window`), until the page is full.
        let top = match (after.map(|c| c.created_at), filter.until) {
            (Some(a), Some(u)) => Some(a.min(u)),
            (a, u) => a.or(u),
        };
        let windows = windows(top, filter.since, OffsetDateTime::now_utc());
        let mut rows = Vec::new();
        for window in &windows {
            let need = rows_wanted - rows.len() as u32;
            let (sql, params) = list_query(
                [
                    (
                        "entity_type = ${}::text::sync_entity_type",
                        given(&entity),
                        Type::TEXT,
                    ),
                    (
                        "action = ${}::text::sync_action",
                        given(&action),
                        Type::TEXT,
                    ),
                    (
                        "status = ${}::text::sync_status_type",
                        given(&status),
                        Type::TEXT,
                    ),
                    ("sync_id = ${}", given(&filter.sync_id), Type::VARCHAR),
                    ("created_at >= ${}", given(&filter.since), Type::TIMESTAMPTZ),
                    ("created_at < ${}", given(&filter.until), Type::TIMESTAMPTZ),
                ],
                after.as_ref().map(|c| (&c.created_at, &c.id)),
                window,
                fetch_for(need),
            );
            let got = store.routed_rows(scope, OP, &sql, &params).await?;
            rows.extend(got.into_iter().take(need as usize));
            if rows.len() as u32 >= rows_wanted {
                break;
            }
        }
        let more = rows.len() > limit as usize;
        let page = &rows[..rows.len().min(limit as usize)];
        // A row that does not decode is skipped (see `decode_listing`); the
        // cursor still continues after the page's last row when its key decodes.
        let entries = decode_listing(OP, page, 0, 2, entry);
        let next = if more {
            page.last().and_then(raw_cursor)
        } else {
            None
        };
        Ok(ActivityPage { entries, next })
    })
    .await
}

/// Service-scope bulk append in one transaction: BEGIN pipelined with the
/// server's `now()` (with `key`: the batch key's insert, which answers `now()`)
/// and the COPY statement's Parse, then binary COPY, then COMMIT. The prepared
/// COPY statement is closed before COMMIT (nothing named outlives the
/// transaction, for transaction-mode poolers); the connection is discarded
/// unless COMMIT (or the ROLLBACK of a repeated key) was acknowledged.
async fn append_many(
    store: &Store,
    op: &'static str,
    org: Uuid,
    key: Option<Uuid>,
    entries: &[NewActivity],
) -> Result<BatchOutcome> {
    traced(op_span(op, Scope::Service(Some(org)), None), async {
        let _note = store.routing.note_write();
        if entries.is_empty() {
            return Ok(BatchOutcome {
                applied: true,
                rows: 0,
            });
        }
        let count = i32::try_from(entries.len()).map_err(|_| {
            Error::invalid(op, "entries", "more than 2^31 - 1 entries in one batch")
        })?;
        let mut durations = Vec::with_capacity(entries.len());
        let mut times = Vec::with_capacity(entries.len());
        for e in entries {
            check(op, e, None)?;
            durations.push(decimal(op, e.duration_seconds)?);
            times.push(created_at(op, e)?);
        }
        let obj = store.pool().get().await.map_err(|e| Error::pool(op, e))?;
        let mut guard = ConnGuard::new(obj);
        // Until COMMIT is sent nothing can be applied: errors up to there are
        // "not applied" (from_pg). COMMIT's own failure may leave it unknown.
        let pg = |e| Error::from_pg(op, e);
        let outcome = {
            let client: &tokio_postgres::Client = guard.object();
            let types = store.copy_types(client, op).await?;
            let now_query = async {
                match key {
                    None => {
                        client
                            .query_typed("SELECT now(), true, $1::int4", &[(&count, Type::INT4)])
                            .await
                    }
                    Some(key) => {
                        client
                            .query_typed(
                                BATCH_KEY,
                                &[(&org, Type::UUID), (&key, Type::UUID), (&count, Type::INT4)],
                            )
                            .await
                    }
                }
            };
            let (begin, now, stmt) = futures_util::future::join3(
                client.simple_query("BEGIN"),
                now_query,
                client.prepare(COPY),
            )
            .await;
            begin.map_err(pg)?;
            let now = now.map_err(pg)?;
            let stmt = stmt.map_err(pg)?;
            let Some(first) = now.first() else {
                // The key was applied by a transaction that committed while
                // this one waited on it: nothing to write. Nothing named
                // outlives the transaction (transaction-mode poolers).
                drop(stmt);
                client.batch_execute("ROLLBACK").await.map_err(pg)?;
                let rows = applied_rows(client, op, org, key).await?;
                guard.mark_clean();
                return Ok(BatchOutcome {
                    applied: false,
                    rows,
                });
            };
            let now: OffsetDateTime = col(op, first, 0)?;
            if !col::<bool>(op, first, 1)? {
                let rows: i32 = col(op, first, 2)?;
                drop(stmt);
                client.batch_execute("ROLLBACK").await.map_err(pg)?;
                guard.mark_clean();
                return Ok(BatchOutcome {
                    applied: false,
                    rows: u64::try_from(rows).unwrap_or(0),
                });
            }
            let sink = client.copy_in(&stmt).await.map_err(pg)?;
            drop(stmt);
            let column_types = [
                Type::UUID,
                Type::UUID,
                Type::VARCHAR,
                types.entity.clone(),
                types.action.clone(),
                types.status.clone(),
                Type::INT4,
                Type::NUMERIC,
                Type::TEXT,
                Type::UUID,
                Type::TIMESTAMPTZ,
            ];
            let mut writer = pin!(BinaryCopyInWriter::new(sink, &column_types));
            for ((e, duration), at) in entries.iter().zip(&durations).zip(&times) {
                let id = e.id.unwrap_or_else(Uuid::new_v4);
                let entity = e.entity_type.map(|t| Label(t.as_str()));
                let action = Label(e.action.as_str());
                let status = Label(e.status.as_str());
                let at = at.unwrap_or(now);
                writer
                    .as_mut()
                    .write(&[
                        &id,
                        &org,
                        &e.sync_id,
                        &entity,
                        &action,
                        &status,
                        &e.record_count,
                        duration,
                        &e.error_message,
                        &e.user_id,
                        &at,
                    ])
                    .await
                    .map_err(pg)?;
            }
            let n = writer.finish().await.map_err(pg)?;
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| Error::from_pg_commit(op, e, key.is_some()))?;
            BatchOutcome {
                applied: true,
                rows: n,
            }
        };
        guard.mark_clean();
        Ok(outcome)
    })
    .await
}

/// The row count recorded for batch `key` of `org` (0 when none).
async fn applied_rows(
    client: &tokio_postgres::Client,
    op: &'static str,
    org: Uuid,
    key: Option<Uuid>,
) -> Result<u64> {
    let rows = client
        .query_typed(
            "SELECT row_count FROM sync_activity_batch WHERE org_id = $1 AND batch_key = $2",
            &[(&org, Type::UUID), (&key, Type::UUID)],
        )
        .await
        .map_err(|e| Error::from_pg(op, e))?;
    match rows.first() {
        Some(row) => Ok(u64::try_from(col::<i32>(op, row, 0)?).unwrap_or(0)),
        None => Ok(0),
    }
}

impl ServiceScope {
    /// Appends one entry for `org` and returns it.
    ///
    /// **Retry-safe only with both `entry.id` and `entry.created_at`** (the
    /// log's primary key): then a repeat of the same `(id, created_at)` writes
    /// nothing and returns the entry stored by the first call (whatever the
    /// other fields of the repeat). Without them every call writes a new row,
    /// and after [`Error::OutcomeUnknown`] (`retry_safe == false`) the entry may
    /// already be there: look for it (`list_activity`) before writing again.
    ///
    /// SQL: `INSERT INTO sync_activity_log (…) VALUES (…) RETURNING …`; the row
    /// lands in the partition of its `created_at` (floored to whole microseconds).
    /// With an id: `WITH ins AS (INSERT … ON CONFLICT DO NOTHING RETURNING …)
    /// SELECT * FROM ins UNION ALL SELECT <the stored row> WHERE NOT EXISTS
    /// (SELECT 1 FROM ins)`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], nothing written: bad input (see the crate docs,
    /// "Accepted means readable": `created_at` within
    /// [`validate::MIN_TIMESTAMP`]..[`validate::MAX_TIMESTAMP`] and in a partition,
    /// `duration_seconds` stored exactly), unknown org or user, `id` without
    /// `created_at`, an `(id, created_at)` taken by another org's entry.
    /// [`Error::Unavailable`]: not applied. [`Error::OutcomeUnknown`]: may have
    /// been applied (`retry_safe` when keyed).
    pub async fn append_activity(&self, org: Uuid, entry: &NewActivity) -> Result<ActivityEntry> {
        append(&self.store, Scope::Service(Some(org)), entry, None).await
    }

    /// Appends many entries for `org` through binary `COPY … FROM STDIN` in one
    /// transaction (the high-volume path); returns how many were written. All or
    /// nothing: every entry is validated first, and any server error rolls the
    /// whole batch back. Entries without `created_at` get the transaction's `now()`,
    /// entries without `id` a random (v4) id.
    ///
    /// **Not retry-safe**: a lost connection during `COMMIT` is
    /// [`Error::OutcomeUnknown`] with `retry_safe == false` (the batch may be
    /// written). Workers that retry use [`Self::append_activity_batch`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (bad input; nothing written);
    /// [`Error::Unavailable`] (not applied); [`Error::OutcomeUnknown`].
    ///
    /// SQL: `COPY sync_activity_log (org_id, sync_id, entity_type, action, status,
    /// record_count, duration_seconds, error_message, user_id, created_at) FROM
    /// STDIN (FORMAT binary)`; enum OIDs are read once per [`crate::Store`] from
    /// `pg_type` / `pg_enum`.
    ///
    /// # Errors
    /// As [`Self::append_activity`], for the first bad entry; nothing written.
    pub async fn append_activity_many(&self, org: Uuid, entries: &[NewActivity]) -> Result<u64> {
        Ok(
            append_many(&self.store, "append_activity_many", org, None, entries)
                .await?
                .rows,
        )
    }

    /// [`Self::append_activity_many`] with an idempotency key per batch,
    /// **retry-safe**: `batch_key` (a fresh random uuid per batch, chosen by the
    /// caller and reused only to retry that batch) is recorded in table
    /// `sync_activity_batch` in the same transaction as the COPY, so the batch
    /// is written at most once per `(org, batch_key)`. A repeat writes nothing
    /// and answers [`BatchOutcome::applied`] `false` with the row count of the
    /// batch that applied the key. After [`Error::OutcomeUnknown`] or
    /// [`Error::Unavailable`] (both [`Error::is_retryable`]) repeat the same
    /// call with the same key. Keys stay until the org is deleted; prune old
    /// ones with `DELETE FROM sync_activity_batch WHERE applied_at < …` once no
    /// retry of them can come.
    ///
    /// SQL: as [`Self::append_activity_many`], plus `INSERT INTO
    /// sync_activity_batch … ON CONFLICT DO NOTHING` pipelined with `BEGIN`.
    ///
    /// # Errors
    /// As [`Self::append_activity_many`]; [`Error::OutcomeUnknown`] (lost
    /// connection during `COMMIT`) carries `retry_safe == true`.
    pub async fn append_activity_batch(
        &self,
        org: Uuid,
        batch_key: Uuid,
        entries: &[NewActivity],
    ) -> Result<BatchOutcome> {
        append_many(
            &self.store,
            "append_activity_batch",
            org,
            Some(batch_key),
            entries,
        )
        .await
    }

    /// One page of `org`'s activity, newest first by `(created_at, id)`,
    /// filtered, starting after `after` (keyset pagination), at most `limit`
    /// (1..=1000) entries. The spec's "Get Activity Log for Organization" is
    /// `list_activity(org, &ActivityFilter::default(), None, 100)`.
    ///
    /// SQL: `SELECT … FROM sync_activity_log WHERE org_id = $1 AND <one condition
    /// per filter given> [AND (created_at, id) < ($at, $id)]
    /// ORDER BY created_at DESC, id DESC LIMIT <n>`, with the literal `n` = `limit + 1`
    /// (with [`StatementMode::CachedPerConnection`]: the page-size bucket + 1, the
    /// rows beyond `limit + 1` dropped). Served by index
    /// `sync_activity_log_org_created_idx`.
    ///
    /// A row that does not decode (written outside the store) is skipped and
    /// reported as a WARN event (see the crate docs); the page then holds fewer
    /// entries, and `next` still continues after it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad limit or `sync_id`, or a time bound
    /// with no UTC equivalent.
    pub async fn list_activity(
        &self,
        org: Uuid,
        filter: &ActivityFilter,
        after: Option<ActivityCursor>,
        limit: u32,
    ) -> Result<ActivityPage> {
        list(&self.store, Scope::Service(Some(org)), filter, after, limit).await
    }
}

impl TenantScope {
    /// [`ServiceScope::append_activity`] for the user's org; `user_id` must be
    /// `None` (then the user) or the user, and `created_at` and `id` must be
    /// `None` (a tenant does not backdate its audit trail). Hence **not
    /// retry-safe**: after [`Error::OutcomeUnknown`] look for the entry first. RLS policy `sync_activity_log_insert`
    /// must admit the row.
    pub async fn append_activity(&self, entry: &NewActivity) -> Result<ActivityEntry> {
        append(
            &self.store,
            Scope::Tenant(self.user_id),
            entry,
            Some(self.user_id),
        )
        .await
    }

    /// [`ServiceScope::list_activity`] for the user's org (RLS policy
    /// `sync_activity_log_select` applies as well).
    pub async fn list_activity(
        &self,
        filter: &ActivityFilter,
        after: Option<ActivityCursor>,
        limit: u32,
    ) -> Result<ActivityPage> {
        list(
            &self.store,
            Scope::Tenant(self.user_id),
            filter,
            after,
            limit,
        )
        .await
    }
}
