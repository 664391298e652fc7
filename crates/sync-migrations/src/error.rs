//! The one error type of this crate.

use sync_connect::source_chain as describe_source_chain;
pub use sync_connect::ServerError;

/// Everything that can go wrong while migrating, rolling back, reading status or
/// verifying. Each message says what failed and what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be reached, or a pooled connection could not be had.
    #[error("cannot connect to the database: {reason}; check the connection string and that the server is up")]
    Unavailable {
        /// What the driver or pool said.
        reason: String,
    },

    /// The connection settings cannot be used (nothing was sent to a server).
    #[error("invalid connection settings: {reason}")]
    InvalidConfig {
        /// What is wrong, and what to set instead.
        reason: String,
    },

    /// A statement outside any migration failed (reading history, taking the lock…).
    #[error("{during} failed: {server}")]
    Database {
        /// What was being done, e.g. "reading the migration history".
        during: &'static str,
        /// What the server reported.
        server: Box<ServerError>,
    },

    /// A migration's SQL failed; its transaction was rolled back and the migrations
    /// before it stay applied.
    #[error("migration V{version}__{name} failed and was rolled back: {server}. fix the cause and apply the migrations again")]
    MigrationFailed {
        /// Version of the failing migration.
        version: i32,
        /// Name of the failing migration.
        name: String,
        /// What the server reported.
        server: Box<ServerError>,
    },

    /// An applied migration's checksum differs from the embedded file: someone
    /// edited a migration after it was applied.
    #[error("migration V{version}__{name} was changed after it was applied (checksum in database {applied_checksum}, in this build {embedded_checksum}); never edit an applied migration: restore the file and add a new migration instead")]
    ChangedAfterApply {
        /// Version of the changed migration.
        version: i32,
        /// Name of the changed migration.
        name: String,
        /// Checksum recorded in the history table.
        applied_checksum: u64,
        /// Checksum of the embedded file.
        embedded_checksum: u64,
    },

    /// The database has a migration applied that this build does not embed (it was
    /// applied by a newer build).
    #[error("migration V{version}__{name} is applied in the database but unknown to this build; run a build that includes it")]
    UnknownApplied {
        /// Version found in the history table.
        version: i32,
        /// Name found in the history table.
        name: String,
    },

    /// `down` refused: a migration later than 0024 is applied and depends on it.
    #[error("refusing to roll back 0024: later migration V{version}__{name} is applied; roll that one back first")]
    LaterMigrationApplied {
        /// Version of the later migration.
        version: i32,
        /// Its name.
        name: String,
    },

    /// A step of `adopt --apply` failed; the steps before it stay done (each is
    /// safe to re-run), this one was rolled back.
    #[error("adopt --apply: {step} failed: {server}; nothing of this step was applied; fix the cause and re-run `sync-migrate adopt --apply` (finished steps are skipped)")]
    AdoptStepFailed {
        /// What was being done.
        step: String,
        /// What the server reported.
        server: Box<ServerError>,
    },

    /// `adopt --apply` refused: the database differs from 0024 in a way adoption
    /// does not converge. Nothing was changed.
    #[error("adopt --apply refused, nothing changed: {blocking} blocking difference(s) — run `sync-migrate adopt` to see them and what to do about each")]
    NotAdoptable {
        /// How many blocking differences.
        blocking: usize,
    },

    /// The rollback script failed; its transaction was rolled back, nothing changed.
    ///
    /// When objects outside 0024 depend on it (SQLSTATE 2BP01: months kept by
    /// `partitions archive`, a view), `server.hint` is ours, not the server's
    /// (which suggests `DROP … CASCADE`): it names those objects and says to drop
    /// or re-attach them; `server.detail` stays the server's.
    #[error("rollback of 0024 failed and changed nothing: {server}")]
    RollbackFailed {
        /// What the server reported.
        server: Box<ServerError>,
    },

    /// Another migrator held the advisory lock for longer than the configured wait.
    #[error("timed out after {waited_secs}s waiting for the migration lock held by another migrator{holder}; retry, or raise the lock wait")]
    LockTimeout {
        /// How long we waited.
        waited_secs: u64,
        /// ` (backend pid N)` when the holder could be seen, else empty.
        holder: String,
    },

    /// A migration or rollback kept waiting for table locks held by other
    /// sessions (each attempt bounded by `lock_timeout`, retried) until the lock
    /// wait ran out. Its transaction was rolled back: nothing of it is applied.
    #[error("{during} waited {waited_secs}s for table locks held by other sessions ({attempts} attempt(s), each cancelled by lock_timeout; last: {server}); nothing of it was applied. Find the blockers with `SELECT pid, state, query FROM pg_stat_activity WHERE pid IN (SELECT unnest(pg_blocking_pids(pid)) FROM pg_stat_activity)`, end them or wait for them, then retry (or raise --lock-wait-secs)")]
    DdlLockTimeout {
        /// What was waiting, e.g. `migration V24__sync_preview_progress_logs`.
        during: String,
        /// How long it tried in all.
        waited_secs: u64,
        /// How many attempts ran out of `lock_timeout`.
        attempts: u32,
        /// The last attempt's error (SQLSTATE 55P03).
        server: Box<ServerError>,
    },

    /// The connection goes through a transaction-mode pooler (PgBouncer, Neon's
    /// `-pooler` endpoints), where session advisory locks protect nothing.
    #[error("{reason}: migrations need a direct (session) connection. Use the direct endpoint{suggestion}")]
    PoolerDetected {
        /// How it was detected.
        reason: String,
        /// ` such as <host>` when a direct host name can be derived.
        suggestion: String,
    },

    /// refinery reported something this crate does not map (should not happen).
    #[error("migration runner error: {0}")]
    Runner(String),
}

impl Error {
    /// The SQLSTATE of the underlying server error, when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Database { server, .. }
            | Error::MigrationFailed { server, .. }
            | Error::AdoptStepFailed { server, .. }
            | Error::RollbackFailed { server } => server.code.as_deref(),
            Error::DdlLockTimeout { server, .. } => server.code.as_deref(),
            _ => None,
        }
    }

    /// The server's report, when the error came from a statement.
    pub fn server_error(&self) -> Option<&ServerError> {
        match self {
            Error::Database { server, .. }
            | Error::MigrationFailed { server, .. }
            | Error::AdoptStepFailed { server, .. }
            | Error::RollbackFailed { server } => Some(server),
            Error::DdlLockTimeout { server, .. } => Some(server),
            _ => None,
        }
    }

    pub(crate) fn db(during: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |e| {
            if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
                Error::Unavailable {
                    reason: format!("{during}: {}", describe_source_chain(&e)),
                }
            } else {
                Error::Database {
                    during,
                    server: Box::new(ServerError::from_pg(&e)),
                }
            }
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sync_connect::Error> for Error {
    fn from(e: sync_connect::Error) -> Self {
        match e {
            sync_connect::Error::Database { during, server } => Error::Database { during, server },
            sync_connect::Error::InvalidConfig { reason } => Error::InvalidConfig { reason },
            sync_connect::Error::PoolerDetected { reason, suggestion } => {
                Error::PoolerDetected { reason, suggestion }
            }
            other => Error::Unavailable {
                reason: match other {
                    sync_connect::Error::Unavailable { reason } => reason,
                    other => other.to_string(),
                },
            },
        }
    }
}
