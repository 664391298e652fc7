//! Activity log: append one, append many (binary COPY), filtered keyset listing.

use std::pin::pin;

use postgres_types::{ToSql, Type};
use time::OffsetDateTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::activity_types::{ActivityEntry, ActivityFilter, ActivityPage, NewActivity};
use crate::copy_types::Label;
use crate::cursor::ActivityCursor;
use crate::enums::{parse_label, SyncAction, SyncEntityType, SyncStatus};
use crate::error::{Error, Result};
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

static APPEND: ScopedSql = ScopedSql::new(concat!(
    "INSERT INTO sync_activity_log (org_id, sync_id, entity_type, action, status, record_count, \
       duration_seconds, error_message, user_id, created_at) \
     VALUES ({org}, $2, $3::text::sync_entity_type, $4::text::sync_action, \
       $5::text::sync_status_type, $6, $7::numeric, $8, $9, coalesce($10, now())) RETURNING ",
    activity_cols!()
));

/// Page sizes a cached listing statement is written for (see [`list_query`]).
const PAGE_BUCKETS: [u32; 9] = [10, 20, 25, 50, 100, 200, 250, 500, 1000];

/// The listing statement for one filter shape, and its parameters after `$1`
/// (the org in service scope, an unused NULL in tenant scope): each filter
/// given becomes one condition and one parameter (so the plan needs no
/// `$n IS NULL OR …` terms), the keyset cursor becomes `(created_at, id) <
/// ($a, $b)` (an index condition on sync_activity_log_org_created_idx (org_id,
/// created_at DESC, id DESC)), and the row count is the literal `LIMIT fetch`.
///
/// Why this shape: a cached statement should settle on a generic plan after
/// its first five executions, and PostgreSQL keeps one only if it costs no more
/// than the custom plans. With `LIMIT $n` the generic plan is costed for 10% of
/// the rows, and a `created_at` bound on the cursor would let custom plans prune
/// partitions at plan time: either way every call would be planned again
/// (1–2 ms over 14 partitions). The cursor needs no pruning: partitions are
/// read newest first and one index descent finds a newer partition empty. The
/// `since` / `until` filters do prune, so those shapes are planned per call.
fn list_query<'a>(
    filters: [(&'static str, Option<&'a (dyn ToSql + Sync)>, Type); 6],
    cursor: Option<(&'a OffsetDateTime, &'a Uuid)>,
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
        sql.push_str(&format!(" AND (created_at, id) < (${n}, ${})", n + 1));
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {fetch}"));
    (ScopedSql::owned(sql), params)
}

const COPY: &str = "COPY sync_activity_log (org_id, sync_id, entity_type, action, status, \
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
        status: parse_label(op, col::<&str>(op, row, 5)?)?,
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
        let row = store
            .one_row(
                scope,
                OP,
                &APPEND,
                &[
                    (&e.sync_id, Type::VARCHAR),
                    (&entity, Type::TEXT),
                    (&action, Type::TEXT),
                    (&status, Type::TEXT),
                    (&e.record_count, Type::INT4),
                    (&duration, Type::NUMERIC),
                    (&e.error_message, Type::TEXT),
                    (&user, Type::UUID),
                    (&at, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
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
        // planned per call anyway and ask for exactly limit + 1.
        let rows_wanted = match store.statement_mode() {
            StatementMode::CachedPerConnection => PAGE_BUCKETS
                .into_iter()
                .find(|&b| b >= limit)
                .unwrap_or(limit),
            StatementMode::Unnamed => limit,
        } + 1;
        fn given<T: ToSql + Sync>(v: &Option<T>) -> Option<&(dyn ToSql + Sync)> {
            v.as_ref().map(|v| v as _)
        }
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
            rows_wanted,
        );
        let rows = store.rows(scope, OP, &sql, &params).await?;
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
/// server's `now()` and the COPY statement's Parse, then binary COPY, then
/// COMMIT. The prepared COPY statement is closed before COMMIT (nothing named
/// outlives the transaction, for transaction-mode poolers); the connection is
/// discarded unless COMMIT was acknowledged.
async fn append_many(store: &Store, org: Uuid, entries: &[NewActivity]) -> Result<u64> {
    const OP: &str = "append_activity_many";
    traced(op_span(OP, Scope::Service(Some(org)), None), async {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut durations = Vec::with_capacity(entries.len());
        let mut times = Vec::with_capacity(entries.len());
        for e in entries {
            check(OP, e, None)?;
            durations.push(decimal(OP, e.duration_seconds)?);
            times.push(created_at(OP, e)?);
        }
        let obj = store.pool().get().await.map_err(|e| Error::pool(OP, e))?;
        let mut guard = ConnGuard::new(obj);
        let pg = |e| Error::from_pg(OP, e);
        let n = {
            let client: &tokio_postgres::Client = guard.object();
            let types = store.copy_types(client, OP).await?;
            let (begin, now, stmt) = futures_util::future::join3(
                client.simple_query("BEGIN"),
                client.query_typed("SELECT now()", &[]),
                client.prepare(COPY),
            )
            .await;
            begin.map_err(pg)?;
            let now: OffsetDateTime = col(
                OP,
                now.map_err(pg)?
                    .first()
                    .ok_or_else(|| Error::decode(OP, "now()", "no row"))?,
                0,
            )?;
            let stmt = stmt.map_err(pg)?;
            let sink = client.copy_in(&stmt).await.map_err(pg)?;
            drop(stmt);
            let column_types = [
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
                let entity = e.entity_type.map(|t| Label(t.as_str()));
                let action = Label(e.action.as_str());
                let status = Label(e.status.as_str());
                let at = at.unwrap_or(now);
                writer
                    .as_mut()
                    .write(&[
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
            client.batch_execute("COMMIT").await.map_err(pg)?;
            n
        };
        guard.mark_clean();
        Ok(n)
    })
    .await
}

impl ServiceScope {
    /// Appends one entry for `org` and returns it.
    ///
    /// SQL: `INSERT INTO sync_activity_log (…) VALUES (…) RETURNING …`; the row
    /// lands in the partition of its `created_at` (floored to whole microseconds).
    ///
    /// # Errors
    /// [`Error::InvalidInput`], nothing written: bad input (see the crate docs,
    /// "Accepted means readable": `created_at` within
    /// [`validate::MIN_TIMESTAMP`]..[`validate::MAX_TIMESTAMP`] and in a partition,
    /// `duration_seconds` stored exactly), unknown org or user.
    pub async fn append_activity(&self, org: Uuid, entry: &NewActivity) -> Result<ActivityEntry> {
        append(&self.store, Scope::Service(Some(org)), entry, None).await
    }

    /// Appends many entries for `org` through binary `COPY … FROM STDIN` in one
    /// transaction (the high-volume path); returns how many were written. All or
    /// nothing: every entry is validated first, and any server error rolls the
    /// whole batch back. Entries without `created_at` get the transaction's `now()`.
    ///
    /// SQL: `COPY sync_activity_log (org_id, sync_id, entity_type, action, status,
    /// record_count, duration_seconds, error_message, user_id, created_at) FROM
    /// STDIN (FORMAT binary)`; enum OIDs are read once per [`crate::Store`] from
    /// `pg_type` / `pg_enum`.
    ///
    /// # Errors
    /// As [`Self::append_activity`], for the first bad entry; nothing written.
    pub async fn append_activity_many(&self, org: Uuid, entries: &[NewActivity]) -> Result<u64> {
        append_many(&self.store, org, entries).await
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
    /// `None` (then the user) or the user, and `created_at` must be `None` (a
    /// tenant does not backdate its audit trail). RLS policy `sync_activity_log_insert`
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
