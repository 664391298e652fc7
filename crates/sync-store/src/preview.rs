//! Preview cache: computed delta snapshots with a TTL, keyed per org.

use postgres_types::Type;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::enums::parse_label;
use crate::error::{Error, Result};
use crate::preview_types::{PreviewEntry, PutPreview};
use crate::sql::ScopedSql;
use crate::store::{col, Scope, ServiceScope, Store, TenantScope};
use crate::trace::{op_span, traced};
use crate::validate;

macro_rules! cache_cols {
    () => {
        "c.id, c.org_id, c.sync_type::text, c.sync_id, c.delta_json, c.computed_at, c.expires_at, \
         c.computed_by, \
         CASE WHEN starts_with(c.cache_key, c.org_id::text || ':') \
              THEN substr(c.cache_key, length(c.org_id::text) + 2) ELSE c.cache_key END, \
         c.created_at, c.updated_at"
    };
}

// The key is stored as '<org>:<key>'. `WHERE c.org_id = EXCLUDED.org_id`: a row
// with that exact key written outside the store for another org is never
// overwritten (no row comes back: `put` reports a conflict without saying whose).
// expires_at NULL lets the BEFORE INSERT trigger apply the 1-hour default;
// EXCLUDED carries the trigger's value into the update branch.
static PUT: ScopedSql = ScopedSql::write(concat!(
    "INSERT INTO sync_preview_cache AS c \
       (org_id, sync_type, sync_id, delta_json, computed_at, expires_at, computed_by, cache_key) \
     SELECT o.org_id, $2::text::sync_type, $3, $4, x.at, x.at + $5::float8 * interval '1 microsecond', $6, \
            o.org_id::text || ':' || $7 \
     FROM (SELECT {org} AS org_id) o, (SELECT coalesce($8, now()) AS at) x \
     ON CONFLICT (cache_key) DO UPDATE SET sync_type = EXCLUDED.sync_type, \
       sync_id = EXCLUDED.sync_id, delta_json = EXCLUDED.delta_json, \
       computed_at = EXCLUDED.computed_at, expires_at = EXCLUDED.expires_at, \
       computed_by = EXCLUDED.computed_by \
     WHERE c.org_id = EXCLUDED.org_id \
     RETURNING ",
    cache_cols!()
));

static GET_BY_KEY: ScopedSql = ScopedSql::new(concat!(
    "SELECT ",
    cache_cols!(),
    " FROM sync_preview_cache c \
      WHERE c.org_id = {org} AND c.cache_key IN (({org})::text || ':' || $2, $2) \
        AND c.expires_at > now() \
      ORDER BY c.cache_key = ({org})::text || ':' || $2 DESC LIMIT 1"
));

static GET_BY_SYNC: ScopedSql = ScopedSql::new(concat!(
    "SELECT ",
    cache_cols!(),
    " FROM sync_preview_cache c \
      WHERE c.org_id = {org} AND c.sync_id = $2 AND c.expires_at > now() \
      ORDER BY c.computed_at DESC, c.id DESC LIMIT 1"
));

static INVALIDATE_KEY: ScopedSql = ScopedSql::write(
    "WITH d AS (DELETE FROM sync_preview_cache \
                WHERE org_id = {org} \
                  AND cache_key IN (({org})::text || ':' || $2, $2) RETURNING 1) \
     SELECT count(*) FROM d HAVING {has_org}",
);

static INVALIDATE_SYNC: ScopedSql = ScopedSql::write(
    "WITH d AS (DELETE FROM sync_preview_cache \
                WHERE org_id = {org} AND sync_id = $2 RETURNING 1) \
     SELECT count(*) FROM d HAVING {has_org}",
);

static CLEANUP: ScopedSql =
    ScopedSql::write("SELECT deleted_count FROM auto_cleanup_preview_cache() WHERE {has_org}");

/// Decodes one row; a value that does not decode (a row written outside the
/// store: JSON nested too deep, a year past 9999, an unknown label) is an error
/// naming that row's id and sync_id.
fn entry(op: &'static str, row: &Row) -> Result<PreviewEntry> {
    decode_entry(op, row).map_err(|e| crate::store::name_row(e, row, 0, 3))
}

fn decode_entry(op: &'static str, row: &Row) -> Result<PreviewEntry> {
    Ok(PreviewEntry {
        id: col(op, row, 0)?,
        org_id: col(op, row, 1)?,
        sync_type: parse_label(op, col::<&str>(op, row, 2)?)?,
        sync_id: col(op, row, 3)?,
        delta_json: col(op, row, 4)?,
        computed_at: col(op, row, 5)?,
        expires_at: col(op, row, 6)?,
        computed_by: col(op, row, 7)?,
        cache_key: col(op, row, 8)?,
        created_at: col(op, row, 9)?,
        updated_at: col(op, row, 10)?,
    })
}

fn ttl_micros(op: &'static str, ttl: Option<time::Duration>) -> Result<Option<i64>> {
    let Some(ttl) = ttl else { return Ok(None) };
    if ttl <= time::Duration::ZERO || ttl > validate::MAX_PREVIEW_TTL {
        return Err(Error::invalid(
            op,
            "ttl",
            format!(
                "is {ttl}, must be positive and at most {}",
                validate::MAX_PREVIEW_TTL
            ),
        ));
    }
    Ok(Some((ttl.whole_microseconds()).max(1) as i64))
}

async fn put(
    store: &Store,
    scope: Scope,
    input: &PutPreview,
    computed_by: Option<Uuid>,
) -> Result<PreviewEntry> {
    const OP: &str = "put_preview";
    traced(op_span(OP, scope, Some(&input.sync_id)), async {
        validate::id(OP, "sync_id", &input.sync_id)?;
        validate::cache_key(OP, &input.cache_key)?;
        validate::json(
            OP,
            "delta_json",
            &input.delta_json,
            validate::MAX_DELTA_JSON_BYTES,
        )?;
        let computed_at = input
            .computed_at
            .map(|at| validate::timestamp(OP, "computed_at", at))
            .transpose()?;
        let ttl = ttl_micros(OP, input.ttl)?;
        let sync_type = input.sync_type.as_str();
        let row = store
            .opt_row(
                scope,
                OP,
                &PUT,
                &[
                    (&sync_type, Type::TEXT),
                    (&input.sync_id, Type::VARCHAR),
                    (&input.delta_json, Type::JSONB),
                    (&ttl, Type::INT8),
                    (&computed_by, Type::UUID),
                    (&input.cache_key, Type::TEXT),
                    (&computed_at, Type::TIMESTAMPTZ),
                ],
            )
            .await?;
        match row {
            Some(row) => entry(OP, &row),
            None => Err(Error::Conflict {
                operation: OP,
                server: Box::new(crate::error::ServerError {
                    code: Some(SqlState::UNIQUE_VIOLATION.code().to_owned()),
                    message: "the stored key of this cache_key is held by a row of another \
                              org (written outside sync-store)"
                        .to_owned(),
                    detail: None,
                    hint: None,
                    constraint: Some("sync_preview_cache_cache_key_key".to_owned()),
                    column: None,
                }),
            }),
        }
    })
    .await
}

async fn get_by_key(store: &Store, scope: Scope, key: &str) -> Result<Option<PreviewEntry>> {
    const OP: &str = "get_preview_by_key";
    traced(op_span(OP, scope, None), async {
        validate::stored_cache_key(OP, key)?;
        let row = store
            .opt_row(scope, OP, &GET_BY_KEY, &[(&key, Type::TEXT)])
            .await?;
        row.map(|r| entry(OP, &r)).transpose()
    })
    .await
}

async fn get_by_sync(store: &Store, scope: Scope, sync_id: &str) -> Result<Option<PreviewEntry>> {
    const OP: &str = "get_preview_by_sync_id";
    traced(op_span(OP, scope, Some(sync_id)), async {
        validate::id(OP, "sync_id", sync_id)?;
        let row = store
            .opt_row(scope, OP, &GET_BY_SYNC, &[(&sync_id, Type::VARCHAR)])
            .await?;
        row.map(|r| entry(OP, &r)).transpose()
    })
    .await
}

async fn count(
    store: &Store,
    scope: Scope,
    op: &'static str,
    sql: &ScopedSql,
    arg: &str,
    ty: Type,
    sync_id: Option<&str>,
) -> Result<u64> {
    traced(op_span(op, scope, sync_id), async {
        let row = store.one_row(scope, op, sql, &[(&arg, ty)]).await?;
        Ok(col::<i64>(op, &row, 0)? as u64)
    })
    .await
}

async fn cleanup(store: &Store, scope: Scope) -> Result<u64> {
    const OP: &str = "cleanup_expired_previews";
    traced(op_span(OP, scope, None), async {
        let row = store.one_row(scope, OP, &CLEANUP, &[]).await?;
        Ok(col::<i64>(OP, &row, 0)? as u64)
    })
    .await
}

impl ServiceScope {
    /// Caches a preview for `org` (upsert on the org-namespaced key): inserts,
    /// or replaces the entry with the same key. `expires_at = computed_at + ttl`,
    /// or the database default (`computed_at + 1 hour`, trigger
    /// `sync_preview_cache_defaults`) when `ttl` is `None`.
    ///
    /// SQL: `INSERT INTO sync_preview_cache … ON CONFLICT (cache_key) DO UPDATE`
    /// with `cache_key = '<org>:' || key`; the conflicting row is updated only
    /// when it belongs to `org`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], nothing written: empty or too long ids/keys;
    /// `delta_json` over [`validate::MAX_DELTA_JSON_BYTES`], nested deeper than
    /// [`validate::MAX_JSON_DEPTH`] or holding a NUL; `computed_at` outside
    /// [`validate::MIN_TIMESTAMP`]..[`validate::MAX_TIMESTAMP`]; a bad TTL; an
    /// unknown org or user. [`Error::Conflict`] when the stored key is held by a
    /// row of another org written outside the store (that row is left unchanged).
    /// [`Error::Unavailable`] and the other variants as for any call.
    pub async fn put_preview(&self, org: Uuid, input: &PutPreview) -> Result<PreviewEntry> {
        put(
            &self.store,
            Scope::Service(Some(org)),
            input,
            input.computed_by,
        )
        .await
    }

    /// The unexpired preview of `org` stored under the caller's `key`.
    ///
    /// SQL: `… WHERE org_id = $1 AND cache_key IN ('<org>:' || $key, $key) AND
    /// expires_at > now()`, the namespaced key first (an expired row is never
    /// returned, even before cleanup). A row written by plain SQL under the plain
    /// key is found too; `cache_key` shows the key as the caller wrote it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty key or one over 255 characters;
    /// [`Error::Decode`] naming the row when the stored row does not decode (written
    /// outside the store, see the crate docs).
    pub async fn get_preview_by_key(&self, org: Uuid, key: &str) -> Result<Option<PreviewEntry>> {
        get_by_key(&self.store, Scope::Service(Some(org)), key).await
    }

    /// The newest unexpired preview of `org` for `sync_id`.
    ///
    /// SQL: `… WHERE org_id = $1 AND sync_id = $2 AND expires_at > now() ORDER BY
    /// computed_at DESC LIMIT 1` (index `sync_preview_cache_org_sync_idx`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad `sync_id`; [`Error::Decode`] naming the
    /// row when the newest row does not decode (written outside the store).
    pub async fn get_preview_by_sync_id(
        &self,
        org: Uuid,
        sync_id: &str,
    ) -> Result<Option<PreviewEntry>> {
        get_by_sync(&self.store, Scope::Service(Some(org)), sync_id).await
    }

    /// Drops the preview of `org` under `key` (expired or not); `true` when one was deleted.
    ///
    /// SQL: `DELETE FROM sync_preview_cache WHERE org_id = $1 AND cache_key IN
    /// ('<org>:' || $key, $key)` (the store's key and a plain-SQL row's key).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty key or one over 255 characters.
    pub async fn invalidate_preview(&self, org: Uuid, key: &str) -> Result<bool> {
        validate::stored_cache_key("invalidate_preview", key)?;
        let n = count(
            &self.store,
            Scope::Service(Some(org)),
            "invalidate_preview",
            &INVALIDATE_KEY,
            key,
            Type::TEXT,
            None,
        )
        .await?;
        Ok(n > 0)
    }

    /// Drops every preview of `org` for `sync_id`; returns how many.
    ///
    /// SQL: `DELETE FROM sync_preview_cache WHERE org_id = $1 AND sync_id = $2`.
    pub async fn invalidate_previews_for_sync(&self, org: Uuid, sync_id: &str) -> Result<u64> {
        validate::id("invalidate_previews_for_sync", "sync_id", sync_id)?;
        count(
            &self.store,
            Scope::Service(Some(org)),
            "invalidate_previews_for_sync",
            &INVALIDATE_SYNC,
            sync_id,
            Type::VARCHAR,
            Some(sync_id),
        )
        .await
    }

    /// Deletes the expired previews **of every org** and returns how many
    /// (maintenance job; the one service call that names no org).
    ///
    /// SQL: `SELECT deleted_count FROM auto_cleanup_preview_cache()`, which deletes
    /// `WHERE expires_at < now()`.
    pub async fn cleanup_expired_previews_all_orgs(&self) -> Result<u64> {
        cleanup(&self.store, Scope::Service(None)).await
    }
}

impl TenantScope {
    /// [`ServiceScope::put_preview`] for the user's org; `computed_by` must be
    /// `None` (then the user) or the user. RLS policies
    /// `sync_preview_cache_insert` / `_update` must admit the row.
    pub async fn put_preview(&self, input: &PutPreview) -> Result<PreviewEntry> {
        let by = Some(validate::acting_user(
            "put_preview",
            "computed_by",
            input.computed_by,
            self.user_id,
        )?);
        put(&self.store, Scope::Tenant(self.user_id), input, by).await
    }

    /// [`ServiceScope::get_preview_by_key`] for the user's org.
    pub async fn get_preview_by_key(&self, key: &str) -> Result<Option<PreviewEntry>> {
        get_by_key(&self.store, Scope::Tenant(self.user_id), key).await
    }

    /// [`ServiceScope::get_preview_by_sync_id`] for the user's org.
    pub async fn get_preview_by_sync_id(&self, sync_id: &str) -> Result<Option<PreviewEntry>> {
        get_by_sync(&self.store, Scope::Tenant(self.user_id), sync_id).await
    }

    /// [`ServiceScope::invalidate_preview`] for the user's org.
    pub async fn invalidate_preview(&self, key: &str) -> Result<bool> {
        validate::stored_cache_key("invalidate_preview", key)?;
        let n = count(
            &self.store,
            Scope::Tenant(self.user_id),
            "invalidate_preview",
            &INVALIDATE_KEY,
            key,
            Type::TEXT,
            None,
        )
        .await?;
        Ok(n > 0)
    }

    /// [`ServiceScope::invalidate_previews_for_sync`] for the user's org.
    pub async fn invalidate_previews_for_sync(&self, sync_id: &str) -> Result<u64> {
        validate::id("invalidate_previews_for_sync", "sync_id", sync_id)?;
        count(
            &self.store,
            Scope::Tenant(self.user_id),
            "invalidate_previews_for_sync",
            &INVALIDATE_SYNC,
            sync_id,
            Type::VARCHAR,
            Some(sync_id),
        )
        .await
    }

    /// Deletes the expired previews of the user's org (RLS limits
    /// `auto_cleanup_preview_cache()`, a SECURITY INVOKER function, to them).
    pub async fn cleanup_expired_previews(&self) -> Result<u64> {
        cleanup(&self.store, Scope::Tenant(self.user_id)).await
    }
}
