//! The store, its two scopes, and how each scope runs a statement.

use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use futures_util::TryStreamExt;
use postgres_types::{ToSql, Type};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::copy_types::CopyTypes;
use crate::error::{Error, Result};
use crate::sql::{Effect, ScopedSql};

/// The role tenant transactions switch to with `SET LOCAL ROLE` (created by
/// migration 0001; row-level security applies to it).
pub const TENANT_ROLE: &str = "sync_tenant";

/// A typed repository over the sync tables, on a [`deadpool_postgres::Pool`].
///
/// Cheap to clone (one `Arc`). Hand out [`Store::service`] to trusted workers
/// and [`Store::tenant`] to request handlers acting for one user.
///
/// The pool's login role must be allowed to `SET ROLE sync_tenant` for the
/// tenant scope, and must own (or bypass RLS on) the tables for the service
/// scope: the service scope does **not** go through row-level security.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    tenant: TenantSettings,
    /// Replica, read consistency and write mark (see [`crate::replica`]).
    pub(crate) routing: crate::replica::Routing,
}

/// What a tenant transaction sets besides the role and `sub` (see
/// [`Store::tenant_with_claims`], [`Store::with_tenant_statement_timeout`]).
#[derive(Clone, Debug, Default)]
struct TenantSettings {
    /// The verified claims, as JSON text, for `request.jwt.claims`.
    claims: Option<Arc<str>>,
    /// `statement_timeout` in milliseconds, set locally in the transaction.
    statement_timeout_ms: Option<u64>,
}

/// Opens the tenant's view inside the transaction `BEGIN` started: the role
/// (what `SET LOCAL ROLE` does), the claims (the verified JWT claims, else
/// `{"sub": <user>}`), the legacy claim `request.jwt.claim.sub`, and the
/// statement timeout (a NULL keeps the one in force). Every value is a
/// parameter: nothing is formatted into the text.
pub(crate) const TENANT_SETUP_SQL: &str = "SELECT set_config('role', $1::text, true), \
     set_config('request.jwt.claims', $2::text, true), \
     set_config('request.jwt.claim.sub', $3::text, true), \
     set_config('statement_timeout', \
                coalesce($4::text, current_setting('statement_timeout')), true)";

struct Inner {
    pool: Pool,
    statements: StatementMode,
    copy_types: tokio::sync::OnceCell<CopyTypes>,
}

/// How the store sends its statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StatementMode {
    /// Unnamed statements (`query_typed`): parsed and planned by the server on
    /// every call, never outliving a transaction, so the store works through a
    /// transaction-mode pooler (PgBouncer, Neon's `-pooler` endpoints). The default.
    #[default]
    Unnamed,
    /// Named statements prepared once per pooled connection (deadpool's
    /// `prepare_typed_cached`), so the server reuses their plans: less work per
    /// call. **Only for direct connections or session-mode poolers** (or a
    /// PgBouncer ≥ 1.21 with `max_prepared_statements`): behind a transaction-mode
    /// pooler a named statement may be missing on the next server connection.
    /// Plans stay correct under row-level security: PostgreSQL re-plans a plan
    /// that depends on the role when the role changes, and `auth.uid()` is read
    /// at execution. At most 256 statements stay prepared per connection (the
    /// cache is emptied when a new one would exceed that).
    ///
    /// Statements are written so PostgreSQL can settle on a generic plan after
    /// its first five executions: activity listings are composed per filter shape
    /// (no `$n IS NULL OR …` terms) with the page size as a literal, rounded up
    /// to a bucket (10, 20, 25, 50, 100, 200, 250, 500, 1000; the extra rows are
    /// read and dropped). Listings filtered by `since` / `until` are still
    /// planned per call: plan-time partition pruning makes PostgreSQL prefer
    /// custom plans for them.
    CachedPerConnection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pool", &self.inner.pool.status())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Wraps a pool, with unnamed statements ([`StatementMode::Unnamed`], safe
    /// behind any pooler). Nothing is sent to the server until the first call.
    pub fn new(pool: Pool) -> Store {
        Store::with_statement_mode(pool, StatementMode::Unnamed)
    }

    /// Wraps a pool, sending statements as `mode` says (see [`StatementMode`]).
    pub fn with_statement_mode(pool: Pool, mode: StatementMode) -> Store {
        Store {
            inner: Arc::new(Inner {
                pool,
                statements: mode,
                copy_types: tokio::sync::OnceCell::new(),
            }),
            tenant: TenantSettings::default(),
            routing: crate::replica::Routing::default(),
        }
    }

    /// This store, whose tenant transactions ([`Store::tenant`],
    /// [`Store::tenant_with_claims`]) run with `statement_timeout` set locally
    /// to `timeout` (rounded to whole milliseconds, at least 1): a statement
    /// that waits on a lock or runs longer fails with `57014`, which the store
    /// reports as an error of its operation, instead of holding a pooled
    /// connection indefinitely. The service scope is not affected.
    pub fn with_tenant_statement_timeout(mut self, timeout: std::time::Duration) -> Store {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.tenant.statement_timeout_ms = Some(ms);
        self
    }

    /// The tenant scope of `user_id` (like [`Store::tenant`]) whose
    /// transactions set `request.jwt.claims` to `claims` — the verified claims
    /// of the user's JWT — so policies and functions can read any claim
    /// (`auth.jwt()`-style), not only `sub`. The claims are sent as a
    /// parameter, never formatted into SQL.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `claims` is not a JSON object whose `sub`
    /// is `user_id` as a string (the claims must describe the user the scope
    /// acts for).
    pub fn tenant_with_claims(
        &self,
        user_id: Uuid,
        claims: &serde_json::Value,
    ) -> Result<TenantScope> {
        const OP: &str = "tenant_with_claims";
        let object = claims
            .as_object()
            .ok_or_else(|| Error::invalid(OP, "claims", "the claims must be a JSON object"))?;
        let sub_matches = object
            .get("sub")
            .and_then(|s| s.as_str())
            .and_then(|s| s.parse::<Uuid>().ok())
            == Some(user_id);
        if !sub_matches {
            return Err(Error::invalid(
                OP,
                "claims.sub",
                "the claims' sub must be the user id of the scope",
            ));
        }
        let mut store = self.clone();
        store.tenant.claims = Some(Arc::from(claims.to_string()));
        Ok(TenantScope { store, user_id })
    }

    /// How this store sends its statements.
    pub fn statement_mode(&self) -> StatementMode {
        self.inner.statements
    }

    /// The pool this store draws connections from.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The trusted service scope: every call names its org; statements run as
    /// the pool's login role, **without row-level security** when that role
    /// owns the tables. For sync workers, never for request handlers.
    pub fn service(&self) -> ServiceScope {
        ServiceScope {
            store: self.clone(),
        }
    }

    /// The tenant scope of one user: every call runs in its own transaction
    /// that does `SET LOCAL ROLE sync_tenant` and sets `request.jwt.claims` to
    /// `{"sub": user_id}` locally, so the RLS policies decide what the user sees
    /// and writes; the org is the user's `auth.users_extended.org_id`.
    pub fn tenant(&self, user_id: Uuid) -> TenantScope {
        TenantScope {
            store: self.clone(),
            user_id,
        }
    }

    pub(crate) async fn copy_types(&self, client: &Client, op: &'static str) -> Result<&CopyTypes> {
        self.inner
            .copy_types
            .get_or_try_init(|| CopyTypes::load(client, op))
            .await
    }
}

/// Trusted scope for sync workers: every call names its org explicitly.
/// Created by [`Store::service`].
#[derive(Clone, Debug)]
pub struct ServiceScope {
    pub(crate) store: Store,
}

/// Scope of one end user (API handlers), enforced by PostgreSQL's row-level
/// security. Created by [`Store::tenant`].
#[derive(Clone, Debug)]
pub struct TenantScope {
    pub(crate) store: Store,
    pub(crate) user_id: Uuid,
}

/// The tenant user's org, or no row when the user has none.
static TENANT_ORG_ID: ScopedSql = ScopedSql::new("SELECT {org} WHERE {has_org}");

impl TenantScope {
    /// The user this scope acts for.
    pub fn user_id(&self) -> Uuid {
        self.user_id
    }

    /// The org of this user: `auth.users_extended.org_id`, read through the user's
    /// own RLS policy in a tenant transaction.
    ///
    /// Errors: [`Error::Forbidden`] when the user has no `auth.users_extended` row.
    pub async fn org_id(&self) -> Result<Uuid> {
        const OP: &str = "org_id";
        let scope = Scope::Tenant(self.user_id);
        crate::trace::traced(crate::trace::op_span(OP, scope, None), async {
            let row = self.store.one_row(scope, OP, &TENANT_ORG_ID, &[]).await?;
            col::<Uuid>(OP, &row, 0)
        })
        .await
    }
}

/// Most statements one pooled connection keeps prepared in
/// [`StatementMode::CachedPerConnection`]. The store's fixed statements are a few
/// dozen; activity listings add one per filter shape and page-size bucket used.
/// When a prepare would go beyond this, the connection's cache is emptied first
/// (tokio-postgres closes each dropped statement on the server), so server
/// memory per connection stays bounded whatever filters callers combine.
pub const MAX_CACHED_STATEMENTS: usize = 256;

/// `prepare_typed_cached`, within [`MAX_CACHED_STATEMENTS`].
async fn prepare_cached(
    obj: &Object,
    text: &str,
    types: &[Type],
) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
    if obj.statement_cache.size() >= MAX_CACHED_STATEMENTS {
        obj.statement_cache.clear();
    }
    obj.prepare_typed_cached(text, types).await
}

/// The statement `text` prepared and cached on `obj` in
/// [`StatementMode::CachedPerConnection`] (`$1` a uuid, then `params`' types);
/// `None` in [`StatementMode::Unnamed`], without waiting for anything.
pub(crate) async fn prepared(
    obj: &Object,
    mode: StatementMode,
    text: &str,
    params: &[Param<'_>],
) -> std::result::Result<Option<tokio_postgres::Statement>, tokio_postgres::Error> {
    match mode {
        StatementMode::Unnamed => Ok(None),
        StatementMode::CachedPerConnection => {
            let types: Vec<Type> = std::iter::once(Type::UUID)
                .chain(params.iter().map(|(_, t)| t.clone()))
                .collect();
            prepare_cached(obj, text, &types).await.map(Some)
        }
    }
}

/// Runs `stmt` (or `text` as an unnamed statement when `stmt` is `None`) with
/// `$1` = `first` and then `params`, and collects its rows. The request is sent
/// on the first poll, before anything is awaited, so callers can pipeline
/// further requests behind it.
pub(crate) async fn query_rows(
    client: &Client,
    stmt: Option<&tokio_postgres::Statement>,
    text: &str,
    first: &Option<Uuid>,
    params: &[Param<'_>],
) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    let first = first as &(dyn ToSql + Sync);
    let stream = match stmt {
        Some(stmt) => {
            let all: Vec<&(dyn ToSql + Sync)> = std::iter::once(first)
                .chain(params.iter().map(|(v, _)| *v))
                .collect();
            client.query_raw(stmt, all).await?
        }
        None => {
            let all = std::iter::once((first, Type::UUID))
                .chain(params.iter().map(|(v, t)| (*v, t.clone())));
            client.query_typed_raw(text, all).await?
        }
    };
    stream.try_collect().await
}

/// The statement (prepared per `mode` on `obj`, see [`prepared`]) and then
/// `COMMIT`, each sent on its first poll so they follow whatever the caller
/// pipelined before. `(rows, None)` when the prepare failed (no COMMIT sent),
/// else the rows and COMMIT's outcome.
pub(crate) async fn statement_then_commit(
    obj: &Object,
    mode: StatementMode,
    text: &str,
    first: &Option<Uuid>,
    params: &[Param<'_>],
) -> (
    std::result::Result<Vec<Row>, tokio_postgres::Error>,
    Option<std::result::Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>>,
) {
    let stmt = match prepared(obj, mode, text, params).await {
        Ok(stmt) => stmt,
        Err(e) => return (Err(e), None),
    };
    let client: &Client = obj;
    let (rows, commit) = futures_util::future::join(
        query_rows(client, stmt.as_ref(), text, first, params),
        client.simple_query("COMMIT"),
    )
    .await;
    (rows, Some(commit))
}

/// The error of a statement that should have returned a row and returned none.
pub(crate) fn no_row(operation: &'static str) -> Error {
    Error::Decode {
        operation,
        column: "(row)".to_owned(),
        reason: "the statement returned no row".to_owned(),
    }
}

/// Who runs a statement.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope {
    /// Service scope; `$1` is this org (None only for statements that ignore it).
    Service(Option<Uuid>),
    /// Tenant scope of this user; `$1` is a NULL uuid.
    Tenant(Uuid),
}

/// One parameter with its declared type (statements are sent unnamed, typed).
pub(crate) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A pooled connection that is thrown away (closed, never returned to the pool)
/// unless [`ConnGuard::mark_clean`] was called: a call dropped mid-way
/// (cancelled) or failed at the protocol level can leave a transaction, a role or
/// claims behind, and such a connection must never be handed out again.
pub(crate) struct ConnGuard {
    obj: Option<Object>,
    clean: bool,
}

impl ConnGuard {
    pub(crate) fn new(obj: Object) -> ConnGuard {
        ConnGuard {
            obj: Some(obj),
            clean: false,
        }
    }

    pub(crate) fn object(&self) -> &Object {
        self.obj.as_ref().expect("connection present until drop")
    }

    pub(crate) fn mark_clean(&mut self) {
        self.clean = true;
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if !self.clean {
            if let Some(obj) = self.obj.take() {
                // Detach from the pool and close: the server ends the session and
                // with it any open transaction, role and claims.
                drop(Object::take(obj));
            }
        }
    }
}

/// Whether the tenant user has an `auth.users_extended` row (hence an org).
static TENANT_HAS_ORG: ScopedSql = ScopedSql::new("SELECT {has_org}");

impl Store {
    /// Runs one statement in `scope` and returns its rows.
    ///
    /// Service: one unnamed, typed statement on a pooled connection (one round
    /// trip, no transaction).
    ///
    /// Tenant: four requests pipelined in one round trip: `BEGIN`, the set-up
    /// `SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2,
    /// true), …` (every value a parameter), the statement (unnamed and typed, or
    /// the connection's cached prepared statement), `COMMIT`. If the set-up fails the
    /// transaction is aborted, so the statement cannot run outside the tenant
    /// role; if the statement fails, `COMMIT` rolls back. The connection goes
    /// back to the pool only once `COMMIT` was acknowledged. Only when the
    /// statement failed or returned no row does a second tenant transaction ask
    /// whether the user has an org at all (every statement yields an error or no
    /// row for a user without one), to answer [`Error::Forbidden`].
    pub(crate) async fn rows(
        &self,
        scope: Scope,
        operation: &'static str,
        sql: &ScopedSql,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>> {
        // A write (whatever its outcome) is remembered once it finished, for
        // read-your-writes on a replica (see `crate::replica`).
        let _note = (sql.effect() != Effect::Read).then(|| self.routing.note_write());
        match scope {
            Scope::Service(org) => {
                let obj = self
                    .inner
                    .pool
                    .get()
                    .await
                    .map_err(|e| Error::pool(operation, e))?;
                // Nothing below executes the statement until query_rows sends
                // it: a failure up to there is "certainly not applied".
                let stmt = prepared(&obj, self.inner.statements, sql.service(), params)
                    .await
                    .map_err(|e| Error::from_pg(operation, e))?;
                if obj.is_closed() {
                    return Err(Error::Unavailable {
                        operation,
                        reason: "the pooled connection was closed before the statement was sent"
                            .to_owned(),
                        code: None,
                        source: None,
                    });
                }
                // One implicit transaction, committed at Sync before the server
                // flushes the statement's results: rows received mean committed.
                query_rows(&obj, stmt.as_ref(), sql.service(), &org, params)
                    .await
                    .map_err(|e| match sql.effect() {
                        Effect::Read => Error::from_pg(operation, e),
                        Effect::Write { retry_safe } => {
                            Error::from_pg_sent(operation, e, retry_safe)
                        }
                    })
            }
            Scope::Tenant(user) => {
                let outcome = self
                    .tenant_pipeline(operation, user, sql.tenant(), sql.effect(), params)
                    .await;
                if matches!(&outcome, Ok(rows) if !rows.is_empty()) {
                    return outcome;
                }
                let has_org = self
                    .tenant_pipeline(
                        operation,
                        user,
                        TENANT_HAS_ORG.tenant(),
                        TENANT_HAS_ORG.effect(),
                        &[],
                    )
                    .await
                    .and_then(|rows| match rows.first() {
                        Some(row) => col::<bool>(operation, row, 0),
                        None => Ok(false),
                    });
                match has_org {
                    Ok(false) => Err(Error::Forbidden {
                        operation,
                        reason: format!(
                            "user {user} has no auth.users_extended row, so it belongs to no org; \
                             create the user's row (id, org_id) first"
                        ),
                        server: None,
                    }),
                    Ok(true) => outcome,
                    // The set-up itself failed: report the statement's own error.
                    Err(e) => outcome.and(Err(e)),
                }
            }
        }
    }

    /// The `request.jwt.claims` text of a tenant transaction of `user`: the
    /// verified claims, else `{"sub": user}`.
    pub(crate) fn tenant_claims(&self, user: Uuid) -> String {
        match &self.tenant.claims {
            Some(claims) => claims.to_string(),
            None => serde_json::json!({ "sub": user }).to_string(),
        }
    }

    /// One tenant transaction around `text`, pipelined (see [`Store::rows`]).
    async fn tenant_pipeline(
        &self,
        operation: &'static str,
        user: Uuid,
        text: &str,
        effect: Effect,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>> {
        let obj = self
            .inner
            .pool
            .get()
            .await
            .map_err(|e| Error::pool(operation, e))?;
        let mut guard = ConnGuard::new(obj);
        let none: Option<Uuid> = None;
        let settings = &self.tenant;
        let default_claims;
        let claims: &str = match &settings.claims {
            Some(claims) => claims,
            None => {
                default_claims = serde_json::json!({ "sub": user }).to_string();
                &default_claims
            }
        };
        let sub = user.to_string();
        let timeout: Option<String> = settings.statement_timeout_ms.map(|ms| ms.to_string());
        let ((setup, extra), (rows, commit)) = {
            let obj = guard.object();
            let client: &Client = obj;
            // join polls its futures in order, and each sends its request on its
            // first poll: the server receives BEGIN, set-up, statement, COMMIT in
            // that order, in one flight. A statement not yet cached on this
            // connection is prepared after the set-up (as sync_tenant, which alone
            // may use schema auth), and only then are statement and COMMIT sent,
            // so COMMIT never precedes it: a second flight on a cache miss. A
            // failed prepare sends no COMMIT, and the guard closes the connection.
            // A failed set-up aborts the transaction: the statement cannot run
            // outside the tenant role.
            let setup_params: [Param<'_>; 4] = [
                (&TENANT_ROLE, Type::TEXT),
                (&claims, Type::TEXT),
                (&sub, Type::TEXT),
                (&timeout, Type::TEXT),
            ];
            let setup_query = futures_util::future::join(
                client.simple_query("BEGIN"),
                client.query_typed(TENANT_SETUP_SQL, &setup_params),
            );
            futures_util::future::join(
                setup_query,
                statement_then_commit(obj, self.inner.statements, text, &none, params),
            )
            .await
        };
        if matches!(commit, Some(Ok(_))) {
            guard.mark_clean();
        }
        drop(guard);
        let pg = |e| Error::from_pg(operation, e);
        let retry_safe = match effect {
            Effect::Read => {
                setup.map_err(pg)?;
                extra.map_err(pg)?;
                let rows = rows.map_err(pg)?;
                if let Some(commit) = commit {
                    commit.map_err(pg)?;
                }
                return Ok(rows);
            }
            Effect::Write { retry_safe } => retry_safe,
        };
        // A write. The server reporting an error for the set-up, the settings
        // or the statement means the transaction was aborted: not applied. No
        // COMMIT sent (the prepare failed): not applied.
        match commit {
            // The connection was lost, or the server ended the session, with
            // the COMMIT sent: it may have committed.
            Some(Err(e)) if !is_db_err(&setup) && !is_db_err(&extra) && !is_db_err(&rows) => {
                Err(Error::from_pg_commit(operation, e, retry_safe))
            }
            _ => {
                setup.map_err(pg)?;
                extra.map_err(pg)?;
                rows.map_err(pg)
            }
        }
    }

    /// Like [`Store::rows`] for a statement returning at most one row.
    pub(crate) async fn opt_row(
        &self,
        scope: Scope,
        operation: &'static str,
        sql: &ScopedSql,
        params: &[Param<'_>],
    ) -> Result<Option<Row>> {
        Ok(self
            .rows(scope, operation, sql, params)
            .await?
            .into_iter()
            .next())
    }

    /// Like [`Store::rows`] for a statement returning exactly one row.
    pub(crate) async fn one_row(
        &self,
        scope: Scope,
        operation: &'static str,
        sql: &ScopedSql,
        params: &[Param<'_>],
    ) -> Result<Row> {
        self.opt_row(scope, operation, sql, params)
            .await?
            .ok_or_else(|| no_row(operation))
    }
}

/// Whether `r` failed with an error the server reported.
fn is_db_err<T>(r: &std::result::Result<T, tokio_postgres::Error>) -> bool {
    matches!(r, Err(e) if e.as_db_error().is_some())
}

/// Reads column `idx` of `row`, mapping a decoding failure to [`Error::Decode`].
pub(crate) fn col<'a, T: postgres_types::FromSql<'a>>(
    operation: &'static str,
    row: &'a Row,
    idx: usize,
) -> Result<T> {
    row.try_get(idx).map_err(|e| {
        let name = row
            .columns()
            .get(idx)
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| idx.to_string());
        // the driver's message says only "error deserializing column N": keep the cause
        Error::decode(operation, &name, crate::error::source_chain(&e))
    })
}

/// Adds "which row" to a decoding error of a row written outside the store
/// (its `id` at `id_idx`, its `sync_id` at `sync_idx`), so one bad row is
/// named and can be found and repaired. Other errors pass through.
pub(crate) fn name_row(err: Error, row: &Row, id_idx: usize, sync_idx: usize) -> Error {
    match err {
        Error::Decode {
            operation,
            column,
            reason,
        } => Error::Decode {
            operation,
            column,
            reason: format!("{reason} (in {})", row_name(row, id_idx, sync_idx)),
        },
        other => other,
    }
}

/// `row id=<uuid> sync_id="<sync_id>"`, with what of them decodes.
pub(crate) fn row_name(row: &Row, id_idx: usize, sync_idx: usize) -> String {
    let id = row
        .try_get::<_, Uuid>(id_idx)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    match row.try_get::<_, Option<String>>(sync_idx) {
        Ok(Some(s)) => format!("row id={id} sync_id={s:?}"),
        _ => format!("row id={id}"),
    }
}

/// Decodes every row of a listing with `decode`; a row that does not decode
/// (written outside the store) is skipped, with a WARN event (target
/// `sync_store`) naming the operation, the row and the error, so one bad row
/// never fails the whole listing.
pub(crate) fn decode_listing<T>(
    op: &'static str,
    rows: &[Row],
    id_idx: usize,
    sync_idx: usize,
    decode: impl Fn(&'static str, &Row) -> Result<T>,
) -> Vec<T> {
    rows.iter()
        .filter_map(|row| match decode(op, row) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(
                    target: "sync_store",
                    operation = op,
                    row = %row_name(row, id_idx, sync_idx),
                    error = %e,
                    "sync_store: skipped a row that does not decode (written outside sync-store?); repair or delete it"
                );
                None
            }
        })
        .collect()
}
