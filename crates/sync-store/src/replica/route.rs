//! Which server answers a stale-tolerant read, and the replica's side of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use postgres_types::{PgLsn, Type};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use super::token::ConsistencyToken;
use crate::error::{Error, Result};
use crate::sql::ScopedSql;
use crate::store::{
    no_row, statement_then_commit, ConnGuard, Param, Scope, ServiceScope, Store, TenantScope,
    TENANT_ROLE, TENANT_SETUP_SQL,
};

/// Which server a stale-tolerant read may use (see the [module docs](crate::replica)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Consistency {
    /// The replica once it has replayed this store's (or session's) last write
    /// and any [observed](Store::observe) token, waiting at most
    /// [`ReplicaOptions::max_wait`]; else the primary. The default.
    #[default]
    ReadYourWrites,
    /// The replica, whatever its lag (no position check).
    Stale,
    /// The primary, always.
    Fresh,
}

/// Bounds of the replica reads of a [`Store`] (see [`Store::with_replica`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicaOptions {
    /// Longest wait for the replica to replay past the position a read must
    /// see, before the read goes to the primary. Default 250 ms.
    pub max_wait: Duration,
    /// `statement_timeout` set locally in every replica transaction. Default 5 s.
    pub statement_timeout: Duration,
    /// Bound on a replica pool checkout (connect included). Default 2 s.
    pub checkout_timeout: Duration,
    /// After the replica was unreachable, routed reads go straight to the
    /// primary for this long; also the least time between two WARN events
    /// of the same fallback reason. Default 5 s.
    pub retry_after: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> ReplicaOptions {
        ReplicaOptions {
            max_wait: Duration::from_millis(250),
            statement_timeout: Duration::from_secs(5),
            checkout_timeout: Duration::from_secs(2),
            retry_after: Duration::from_secs(5),
        }
    }
}

/// Counts of the routed reads of a [`Store`] since [`Store::with_replica`]
/// (shared by all its clones and sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReplicaStats {
    /// Reads answered by the replica.
    pub replica_reads: u64,
    /// Reads sent to the primary because they asked for [`Consistency::Fresh`].
    pub fresh_reads: u64,
    /// Replica reads that first waited for the replica to replay a position.
    pub waited: u64,
    /// Reads that went to the primary: the replica had not replayed the
    /// position within [`ReplicaOptions::max_wait`].
    pub fallback_lag: u64,
    /// … the replica could not be reached or used (or was skipped after that).
    pub fallback_unavailable: u64,
    /// … the replica cancelled the read for a recovery conflict (`40001`).
    pub fallback_conflict: u64,
    /// … the read hit the replica's statement timeout (`57014`) or its overall bound.
    pub fallback_timeout: u64,
    /// … the replica failed otherwise (the primary's answer was returned).
    pub fallback_error: u64,
    /// … a tenant read found no row on the replica and was confirmed on the primary.
    pub fallback_empty: u64,
}

/// Why a routed read left the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Lag,
    Unavailable,
    Conflict,
    Timeout,
    Error,
    Empty,
}

impl Reason {
    const ALL: usize = 6;

    fn as_str(self) -> &'static str {
        match self {
            Reason::Lag => "lag",
            Reason::Unavailable => "unavailable",
            Reason::Conflict => "recovery_conflict",
            Reason::Timeout => "timeout",
            Reason::Error => "error",
            Reason::Empty => "tenant_empty",
        }
    }
}

#[derive(Default)]
struct Counters {
    replica_reads: AtomicU64,
    fresh_reads: AtomicU64,
    waited: AtomicU64,
    fallback: [AtomicU64; Reason::ALL],
}

/// The replica pool of a store and what the store learned about it.
pub(crate) struct Replica {
    pool: Pool,
    options: ReplicaOptions,
    counters: Counters,
    /// Highest `pg_last_wal_replay_lsn()` seen on the replica.
    replayed: AtomicU64,
    /// Highest `pg_current_wal_insert_lsn()` seen on the primary.
    primary_seen: AtomicU64,
    epoch: Instant,
    /// Milliseconds since `epoch` until which the replica is skipped.
    down_until_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last WARN per reason (+1; 0 = never).
    last_warn_ms: [AtomicU64; Reason::ALL],
}

impl Replica {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn count(&self, reason: Reason) {
        self.counters.fallback[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn stats(&self) -> ReplicaStats {
        let f = |r: Reason| self.counters.fallback[r as usize].load(Ordering::Relaxed);
        ReplicaStats {
            replica_reads: self.counters.replica_reads.load(Ordering::Relaxed),
            fresh_reads: self.counters.fresh_reads.load(Ordering::Relaxed),
            waited: self.counters.waited.load(Ordering::Relaxed),
            fallback_lag: f(Reason::Lag),
            fallback_unavailable: f(Reason::Unavailable),
            fallback_conflict: f(Reason::Conflict),
            fallback_timeout: f(Reason::Timeout),
            fallback_error: f(Reason::Error),
            fallback_empty: f(Reason::Empty),
        }
    }

    /// Whether a WARN for `reason` is due (at most one per `retry_after`).
    fn warn_due(&self, reason: Reason) -> bool {
        let now = self.now_ms().saturating_add(1);
        let gap = u64::try_from(self.options.retry_after.as_millis()).unwrap_or(u64::MAX);
        let slot = &self.last_warn_ms[reason as usize];
        let last = slot.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= gap)
            && slot
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// What a store (or session) remembers of its own writes.
#[derive(Default)]
struct WriteMark {
    /// The position reads must see (writes resolved so far, observed tokens).
    lsn: AtomicU64,
    /// A write finished since `lsn` was last resolved on the primary.
    dirty: AtomicBool,
}

/// The read routing of a [`Store`]: its replica (if any), the consistency of
/// its routed reads, and its write mark.
#[derive(Clone, Default)]
pub(crate) struct Routing {
    replica: Option<Arc<Replica>>,
    consistency: Consistency,
    mark: Arc<WriteMark>,
}

/// Notes a write of the store when dropped (whatever the call's outcome: a
/// failed write may still have committed, and marking too much only costs a
/// position check).
pub(crate) struct WriteNote<'a>(&'a Routing);

impl Drop for WriteNote<'_> {
    fn drop(&mut self) {
        self.0.mark.dirty.store(true, Ordering::Release);
    }
}

impl Routing {
    pub(crate) fn note_write(&self) -> WriteNote<'_> {
        WriteNote(self)
    }
}

/// The replica transaction's set-up in the service scope: the statement
/// timeout, as a parameter.
const REPLICA_SETUP_SQL: &str = "SELECT set_config('statement_timeout', $1::text, true)";

/// The replica's replay position (NULL when the server is not a standby).
const REPLAY_LSN_SQL: &str = "SELECT pg_last_wal_replay_lsn()";

/// The primary's WAL insert position: at or past the end of every commit
/// record already inserted, even with `synchronous_commit = off`.
const PRIMARY_LSN_SQL: &str = "SELECT pg_current_wal_insert_lsn()";

/// Why a replica attempt gave up.
enum Fallback {
    Lag {
        lag_bytes: u64,
    },
    Failed {
        reason: Reason,
        error: Option<Error>,
    },
}

impl Fallback {
    fn from_error(error: Error) -> Fallback {
        let reason = match error.code() {
            Some("40001") => Reason::Conflict,
            Some("57014") => Reason::Timeout,
            _ if matches!(error, Error::Unavailable { .. }) => Reason::Unavailable,
            _ => Reason::Error,
        };
        Fallback::Failed {
            reason,
            error: Some(error),
        }
    }
}

fn ms_text(d: Duration) -> String {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
        .to_string()
}

impl Store {
    /// This store, sending its stale-tolerant reads (`list_activity`,
    /// `metrics`, `metrics_all_orgs`, `list_recent_syncs`) to `replica` — a pool
    /// on one hot standby of this store's primary, whose login role is the
    /// primary's (roles replicate) — as the [module docs](crate::replica) say.
    /// The replica pool uses this store's statement mode. Nothing is sent until
    /// the first routed read.
    pub fn with_replica(mut self, replica: Pool, options: ReplicaOptions) -> Store {
        self.routing.replica = Some(Arc::new(Replica {
            pool: replica,
            options,
            counters: Counters::default(),
            replayed: AtomicU64::new(0),
            primary_seen: AtomicU64::new(0),
            epoch: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            last_warn_ms: Default::default(),
        }));
        self
    }

    /// The replica pool, when the store has one.
    pub fn replica_pool(&self) -> Option<&Pool> {
        self.routing.replica.as_ref().map(|r| &r.pool)
    }

    /// Counts of routed reads so far; `None` without a replica.
    pub fn replica_stats(&self) -> Option<ReplicaStats> {
        self.routing.replica.as_ref().map(|r| r.stats())
    }

    /// This store (sharing pools, replica counters and write mark), whose
    /// routed reads use `consistency`.
    pub fn with_consistency(mut self, consistency: Consistency) -> Store {
        self.routing.consistency = consistency;
        self
    }

    /// The consistency of this store's routed reads.
    pub fn consistency(&self) -> Consistency {
        self.routing.consistency
    }

    /// This store with a write mark of its own: its reads see the writes made
    /// through it (and tokens it [observed](Store::observe)), not those of the
    /// store it came from. One session per caller — e.g. per HTTP request —
    /// keeps callers from waiting for each other's writes. Clones of a session
    /// share its mark.
    pub fn session(&self) -> Store {
        let mut store = self.clone();
        store.routing.mark = Arc::default();
        store
    }

    /// Makes this store's (session's) later routed reads see at least
    /// `token`'s position — a token of a write made elsewhere (another
    /// process, an earlier request). A token past the primary's own position
    /// is treated as the primary's position.
    pub fn observe(&self, token: ConsistencyToken) {
        self.routing
            .mark
            .lsn
            .fetch_max(token.lsn(), Ordering::AcqRel);
    }

    /// A token of everything written through this store (session) so far and
    /// every token it observed, for a later read elsewhere (e.g. the
    /// `X-Sync-Consistency` header of `sync-api`); `None` when there is
    /// nothing to wait for. After a write it asks the primary for its WAL
    /// position (one round trip), with or without a replica.
    ///
    /// # Errors
    /// [`Error::Unavailable`] (and the other errors of a read) when the primary
    /// cannot be asked; the write is then still remembered.
    pub async fn consistency_token(&self) -> Result<Option<ConsistencyToken>> {
        let mark = &self.routing.mark;
        if mark.dirty.swap(false, Ordering::AcqRel) {
            match self.primary_lsn("consistency_token").await {
                Ok(lsn) => {
                    mark.lsn.fetch_max(lsn, Ordering::AcqRel);
                }
                Err(e) => {
                    mark.dirty.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
        let lsn = mark.lsn.load(Ordering::Acquire);
        Ok((lsn > 0).then(|| ConsistencyToken::from_lsn(lsn)))
    }

    /// `pg_current_wal_insert_lsn()` of the primary.
    async fn primary_lsn(&self, operation: &'static str) -> Result<u64> {
        let obj = self
            .pool()
            .get()
            .await
            .map_err(|e| Error::pool(operation, e))?;
        let row = obj
            .query_typed(PRIMARY_LSN_SQL, &[])
            .await
            .map_err(|e| Error::from_pg(operation, e))?;
        let lsn: Option<PgLsn> = crate::store::col(operation, &row[0], 0)?;
        let lsn = lsn.map(u64::from).unwrap_or(0);
        if let Some(replica) = &self.routing.replica {
            replica.primary_seen.fetch_max(lsn, Ordering::AcqRel);
        }
        Ok(lsn)
    }

    /// The position a [`Consistency::ReadYourWrites`] read must see: the
    /// primary's current position after a write of this store, observed tokens
    /// capped at the primary's position.
    async fn read_target(&self, replica: &Replica, operation: &'static str) -> Result<u64> {
        let mark = &self.routing.mark;
        let dirty = mark.dirty.swap(false, Ordering::AcqRel);
        let wanted = mark.lsn.load(Ordering::Acquire);
        if !dirty && wanted <= replica.primary_seen.load(Ordering::Acquire) {
            return Ok(wanted);
        }
        match self.primary_lsn(operation).await {
            Ok(current) => {
                if dirty {
                    mark.lsn.fetch_max(current, Ordering::AcqRel);
                    Ok(current)
                } else {
                    Ok(wanted.min(current))
                }
            }
            Err(e) => {
                if dirty {
                    mark.dirty.store(true, Ordering::Release);
                }
                Err(e)
            }
        }
    }

    /// Like `Store::rows` for a stale-tolerant read: on the replica when this
    /// store has one and the consistency allows, else (and on any replica
    /// failure) on the primary.
    pub(crate) async fn routed_rows(
        &self,
        scope: Scope,
        operation: &'static str,
        sql: &ScopedSql,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>> {
        let Some(replica) = self.routing.replica.as_deref() else {
            return self.rows(scope, operation, sql, params).await;
        };
        let target = match self.routing.consistency {
            Consistency::Fresh => {
                replica.counters.fresh_reads.fetch_add(1, Ordering::Relaxed);
                return self.rows(scope, operation, sql, params).await;
            }
            Consistency::Stale => 0,
            Consistency::ReadYourWrites => self.read_target(replica, operation).await?,
        };
        if replica.down_until_ms.load(Ordering::Relaxed) > replica.now_ms() {
            replica.count(Reason::Unavailable);
            return self.rows(scope, operation, sql, params).await;
        }
        let opts = &replica.options;
        let bound = opts.checkout_timeout + opts.max_wait + opts.statement_timeout;
        let attempt = tokio::time::timeout(
            bound + Duration::from_secs(1),
            self.replica_rows(replica, scope, operation, sql, params, target),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Fallback::Failed {
                reason: Reason::Timeout,
                error: None,
            })
        });
        match attempt {
            Ok(rows) => {
                replica
                    .counters
                    .replica_reads
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(rows);
            }
            Err(Fallback::Lag { lag_bytes }) => {
                replica.count(Reason::Lag);
                tracing::debug!(
                    target: "sync_store",
                    operation,
                    reason = Reason::Lag.as_str(),
                    lag_bytes,
                    max_wait_ms = opts.max_wait.as_millis() as u64,
                    "sync_store: the replica had not replayed the caller's writes in time; reading the primary"
                );
            }
            Err(Fallback::Failed { reason, error }) => {
                replica.count(reason);
                if reason == Reason::Unavailable {
                    let until = replica.now_ms().saturating_add(
                        u64::try_from(opts.retry_after.as_millis()).unwrap_or(u64::MAX),
                    );
                    replica.down_until_ms.store(until, Ordering::Relaxed);
                }
                if reason != Reason::Empty && replica.warn_due(reason) {
                    tracing::warn!(
                        target: "sync_store",
                        operation,
                        reason = reason.as_str(),
                        sqlstate = error.as_ref().and_then(|e| e.code()),
                        error = error.as_ref().map(tracing::field::display),
                        "sync_store: replica read failed; reading the primary (check the replica)"
                    );
                }
            }
        }
        self.rows(scope, operation, sql, params).await
    }

    /// Like [`Store::routed_rows`] for a statement returning exactly one row.
    pub(crate) async fn routed_one_row(
        &self,
        scope: Scope,
        operation: &'static str,
        sql: &ScopedSql,
        params: &[Param<'_>],
    ) -> Result<Row> {
        self.routed_rows(scope, operation, sql, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| no_row(operation))
    }

    /// One read on the replica: a checkout, the replay check when `target`
    /// is past what the replica is known to have replayed, then `BEGIN`,
    /// set-up, statement, `COMMIT` pipelined (as the tenant scope does on the
    /// primary).
    async fn replica_rows(
        &self,
        replica: &Replica,
        scope: Scope,
        operation: &'static str,
        sql: &ScopedSql,
        params: &[Param<'_>],
        target: u64,
    ) -> std::result::Result<Vec<Row>, Fallback> {
        let opts = &replica.options;
        let obj = tokio::time::timeout(opts.checkout_timeout, replica.pool.get())
            .await
            .map_err(|_| Fallback::Failed {
                reason: Reason::Unavailable,
                error: None,
            })?
            .map_err(|e| Fallback::from_error(Error::pool(operation, e)))?;
        let mut guard = ConnGuard::new(obj);
        let client: &Client = guard.object();
        if target > replica.replayed.load(Ordering::Acquire) {
            wait_replayed(client, replica, operation, target).await?;
        }
        let timeout = ms_text(opts.statement_timeout);
        let claims;
        let sub;
        let none: Option<Uuid> = None;
        let (text, first, setup_sql, setup): (_, _, _, Vec<Param<'_>>) = match scope {
            Scope::Service(org) => (
                sql.service(),
                org,
                REPLICA_SETUP_SQL,
                vec![(&timeout, Type::TEXT)],
            ),
            Scope::Tenant(user) => {
                claims = self.tenant_claims(user);
                sub = user.to_string();
                let timeout: &(dyn postgres_types::ToSql + Sync) = &timeout;
                (
                    sql.tenant(),
                    none,
                    TENANT_SETUP_SQL,
                    vec![
                        (&TENANT_ROLE, Type::TEXT),
                        (&claims, Type::TEXT),
                        (&sub, Type::TEXT),
                        (timeout, Type::TEXT),
                    ],
                )
            }
        };
        let mode = self.statement_mode();
        let ((begin, set_up), (rows, commit)) = {
            let obj = guard.object();
            futures_util::future::join(
                futures_util::future::join(
                    client.simple_query("BEGIN"),
                    client.query_typed(setup_sql, &setup),
                ),
                statement_then_commit(obj, mode, text, &first, params),
            )
            .await
        };
        if matches!(commit, Some(Ok(_))) {
            guard.mark_clean();
        }
        drop(guard);
        let pg = |e| Fallback::from_error(Error::from_pg(operation, e));
        begin.map_err(pg)?;
        set_up.map_err(pg)?;
        let rows = rows.map_err(pg)?;
        match commit {
            Some(commit) => commit.map_err(pg)?,
            None => {
                return Err(Fallback::Failed {
                    reason: Reason::Error,
                    error: None,
                })
            }
        };
        if rows.is_empty() && matches!(scope, Scope::Tenant(_)) {
            return Err(Fallback::Failed {
                reason: Reason::Empty,
                error: None,
            });
        }
        Ok(rows)
    }
}

/// Polls the replica's replay position on `client` until it reaches `target`
/// (then `Ok`), or [`ReplicaOptions::max_wait`] passes (then `Fallback::Lag`).
async fn wait_replayed(
    client: &Client,
    replica: &Replica,
    operation: &'static str,
    target: u64,
) -> std::result::Result<(), Fallback> {
    let deadline = Instant::now() + replica.options.max_wait;
    let mut pause = Duration::from_millis(1);
    let mut first = true;
    loop {
        let rows = client
            .query_typed(REPLAY_LSN_SQL, &[])
            .await
            .map_err(|e| Fallback::from_error(Error::from_pg(operation, e)))?;
        let replayed: Option<PgLsn> = rows.first().and_then(|r| r.try_get(0).ok()).unwrap_or(None);
        let Some(replayed) = replayed.map(u64::from) else {
            // Not a standby (or not replaying): nothing says it has the writes.
            return Err(Fallback::Failed {
                reason: Reason::Error,
                error: Some(Error::Unavailable {
                    operation,
                    reason: "the replica is not a standby in recovery (pg_last_wal_replay_lsn() is NULL); point the replica URL at a hot standby".to_owned(),
                    code: None,
                    source: None,
                }),
            });
        };
        replica.replayed.fetch_max(replayed, Ordering::AcqRel);
        if replayed >= target {
            if !first {
                replica.counters.waited.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(());
        }
        first = false;
        let now = Instant::now();
        if now >= deadline {
            return Err(Fallback::Lag {
                lag_bytes: target - replayed,
            });
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

impl ServiceScope {
    /// This scope, whose stale-tolerant reads use `consistency`.
    pub fn with_consistency(mut self, consistency: Consistency) -> ServiceScope {
        self.store = self.store.with_consistency(consistency);
        self
    }
}

impl TenantScope {
    /// This scope, whose stale-tolerant reads use `consistency`.
    pub fn with_consistency(mut self, consistency: Consistency) -> TenantScope {
        self.store = self.store.with_consistency(consistency);
        self
    }

    /// [`Store::consistency_token`] of the store (session) this scope was made from.
    ///
    /// # Errors
    /// As [`Store::consistency_token`].
    pub async fn consistency_token(&self) -> Result<Option<ConsistencyToken>> {
        self.store.consistency_token().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> Box<crate::ServerError> {
        let mut s = crate::ServerError::client("x");
        s.code = Some(code.to_owned());
        Box::new(s)
    }

    fn reason(e: Error) -> Reason {
        match Fallback::from_error(e) {
            Fallback::Failed { reason, .. } => reason,
            Fallback::Lag { .. } => unreachable!(),
        }
    }

    #[test]
    fn replica_errors_are_classified_for_counting() {
        let db = |code: &str| Error::Database {
            operation: "op",
            server: server(code),
        };
        let unavailable = |code: Option<&str>| Error::Unavailable {
            operation: "op",
            reason: "r".into(),
            code: code.map(str::to_owned),
            source: None,
        };
        assert_eq!(reason(db("40001")), Reason::Conflict);
        assert_eq!(reason(unavailable(Some("57014"))), Reason::Timeout);
        assert_eq!(reason(unavailable(Some("57P01"))), Reason::Unavailable);
        assert_eq!(reason(unavailable(None)), Reason::Unavailable);
        assert_eq!(reason(db("42P01")), Reason::Error);
    }

    #[test]
    fn warnings_are_rate_limited_per_reason() {
        let pool = {
            let mut cfg = deadpool_postgres::Config::new();
            cfg.host = Some("127.0.0.1".into());
            cfg.dbname = Some("unused".into());
            cfg.create_pool(None, tokio_postgres::NoTls).unwrap()
        };
        let store = Store::new(pool.clone()).with_replica(pool, ReplicaOptions::default());
        let replica = store.routing.replica.as_deref().unwrap();
        assert!(replica.warn_due(Reason::Timeout));
        assert!(!replica.warn_due(Reason::Timeout));
        assert!(replica.warn_due(Reason::Conflict));
    }
}
