//! The one error type of this crate: what went wrong, in terms a caller can act on.

use std::fmt;

use tokio_postgres::error::SqlState;

pub use sync_connect::ServerError;

/// SQLSTATEs of input the database refused (checks, keys, not-null, enum,
/// length, range, format, JSON nesting): [`Error::InvalidInput`], nothing written.
const REFUSED_INPUT: [SqlState; 14] = [
    SqlState::CHECK_VIOLATION,
    SqlState::FOREIGN_KEY_VIOLATION,
    SqlState::NOT_NULL_VIOLATION,
    SqlState::INVALID_TEXT_REPRESENTATION,
    SqlState::STRING_DATA_RIGHT_TRUNCATION,
    SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
    SqlState::CHARACTER_NOT_IN_REPERTOIRE,
    SqlState::INVALID_DATETIME_FORMAT,
    SqlState::DATETIME_FIELD_OVERFLOW,
    SqlState::INVALID_PARAMETER_VALUE,
    SqlState::UNTRANSLATABLE_CHARACTER,
    SqlState::ARRAY_SUBSCRIPT_ERROR,
    SqlState::PROGRAM_LIMIT_EXCEEDED,
    SqlState::STATEMENT_TOO_COMPLEX,
];

/// A cause kept as the [`source`](std::error::Error::source) of an [`Error`].
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a call of this crate can fail with. Each message names the
/// operation that failed and says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The row the call needs does not exist (or is not visible to the tenant).
    #[error("{operation}: {what} was not found (or is not visible to this caller); check the id and the org")]
    NotFound {
        /// The operation, e.g. `report_progress`.
        operation: &'static str,
        /// What was looked for, e.g. `sync "s1" of org …`.
        what: String,
    },

    /// The sync already finished (completed, failed or cancelled); it accepts no
    /// more progress, total changes or outcome.
    #[error("{operation}: sync {sync_id:?} already finished; start a new sync with a new sync_id")]
    SyncFinished {
        /// The operation, e.g. `report_progress`.
        operation: &'static str,
        /// The finished sync.
        sync_id: String,
    },

    /// A unique constraint refused the write (e.g. a sync_id already started).
    #[error("{operation}: conflicts with an existing row: {server}; use another id or act on the existing row")]
    Conflict {
        /// The operation.
        operation: &'static str,
        /// What the server reported.
        server: Box<ServerError>,
    },

    /// Row-level security or a missing privilege refused the call, or the tenant
    /// user has no `auth.users_extended` row (so it belongs to no org).
    #[error("{operation}: forbidden: {reason}")]
    Forbidden {
        /// The operation.
        operation: &'static str,
        /// Why, in words.
        reason: String,
        /// What the server reported, when the refusal came from the server.
        server: Option<Box<ServerError>>,
    },

    /// The input was refused, before anything was written (validation) or by the
    /// database (check, foreign key, not-null, enum, length, numeric range).
    /// Nothing was written.
    #[error("{operation}: invalid {field}: {reason}; fix the input and retry")]
    InvalidInput {
        /// The operation.
        operation: &'static str,
        /// The offending field, or the constraint / column the server named.
        field: String,
        /// Why it is invalid.
        reason: String,
        /// What the server reported, when the server refused it.
        server: Option<Box<ServerError>>,
    },

    /// No connection could be had or used (pool exhausted or timed out, server
    /// down or shutting down, statement cancelled by a timeout), and the call
    /// was **certainly not applied**: it failed before it was sent, or the
    /// server refused or aborted it. Safe to retry later, whatever the call.
    /// A lost connection after a write was sent is [`Error::OutcomeUnknown`].
    #[error("{operation}: database unavailable: {reason}; retry later and check the server and the pool size")]
    Unavailable {
        /// The operation.
        operation: &'static str,
        /// What the pool, the driver or the server said.
        reason: String,
        /// SQLSTATE, when the server sent one.
        code: Option<String>,
        /// The driver's or the pool's error, when one caused this.
        #[source]
        source: Option<BoxError>,
    },

    /// The connection was lost after the write (or its `COMMIT`) was sent, before
    /// the server confirmed it: the write **may or may not have been applied**.
    /// Nothing else is known; the next call decides. It errs on the safe side:
    /// a write sent on a pooled connection whose server session had already
    /// ended (before the driver noticed) is reported so too, although it was
    /// not applied; never the reverse.
    ///
    /// `retry_safe` is `true` only for the idempotent writes, which carry an
    /// idempotency key so that applying them twice is a no-op (see the crate's
    /// README, "Retries"): `report_progress_keyed`, `append_activity` with both
    /// `id` and `created_at`, `append_activity_batch`. Then
    /// [`Error::is_retryable`] is `true` and the same call (same key) may be
    /// retried as is. For every other write it is `false`: read the state back
    /// (e.g. `get_sync`, `list_activity`) before deciding to write again.
    #[error("{operation}: outcome unknown, the connection was lost after the write was sent: {reason}; {}", if *retry_safe { "retry the same call with the same key (it is idempotent)" } else { "read the state back before writing again (this call is not idempotent)" })]
    OutcomeUnknown {
        /// The operation.
        operation: &'static str,
        /// What the driver or the server said.
        reason: String,
        /// SQLSTATE, when the server sent one (e.g. `57P01` on the `COMMIT`).
        code: Option<String>,
        /// Whether the call was an idempotent (keyed) write, safe to repeat.
        retry_safe: bool,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },

    /// The database returned an enum label this build does not know (a newer
    /// migration added it). No longer returned by reads: such labels read as the
    /// enums' `Other(label)` variant. Kept so that matches on it keep compiling.
    #[error("{operation}: the database returned label {label:?} of enum {type_name}, unknown to this build of sync-store; upgrade sync-store")]
    UnknownLabel {
        /// The operation.
        operation: &'static str,
        /// The PostgreSQL enum, e.g. `sync_action`.
        type_name: &'static str,
        /// The label.
        label: String,
    },

    /// Any other server error, kept whole.
    #[error("{operation} failed: {server}")]
    Database {
        /// The operation.
        operation: &'static str,
        /// What the server reported.
        server: Box<ServerError>,
    },

    /// The driver failed the call for a reason that is neither the server nor
    /// the connection (a value it could not encode, an unexpected reply).
    #[error("{operation}: database driver error: {reason}; this is a bug, please report it with this message")]
    Driver {
        /// The operation.
        operation: &'static str,
        /// What the driver said.
        reason: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },

    /// A value read from the database did not decode into its Rust type (a
    /// schema this build does not match).
    #[error("{operation}: cannot decode column {column}: {reason}; check that the schema matches this build (verify the schema)")]
    Decode {
        /// The operation.
        operation: &'static str,
        /// The column.
        column: String,
        /// What the driver said.
        reason: String,
    },
}

impl Error {
    /// The SQLSTATE of the server error behind this one, when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Unavailable { code, .. } | Error::OutcomeUnknown { code, .. } => code.as_deref(),
            _ => self.server().and_then(|s| s.code.as_deref()),
        }
    }

    /// The server's report behind this error, when a statement failed.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            Error::Conflict { server, .. } | Error::Database { server, .. } => Some(server),
            Error::Forbidden { server, .. } | Error::InvalidInput { server, .. } => {
                server.as_deref()
            }
            _ => None,
        }
    }

    /// The operation (public function) that failed, e.g. `report_progress`.
    pub fn operation(&self) -> &'static str {
        match self {
            Error::NotFound { operation, .. }
            | Error::SyncFinished { operation, .. }
            | Error::Conflict { operation, .. }
            | Error::Forbidden { operation, .. }
            | Error::InvalidInput { operation, .. }
            | Error::Unavailable { operation, .. }
            | Error::OutcomeUnknown { operation, .. }
            | Error::UnknownLabel { operation, .. }
            | Error::Database { operation, .. }
            | Error::Driver { operation, .. }
            | Error::Decode { operation, .. } => operation,
        }
    }

    /// Whether repeating the same call is **safe** and may succeed:
    /// - [`Error::Unavailable`], serialization failures (`40001`) and deadlocks
    ///   (`40P01`): the call was certainly not applied, any call may be repeated;
    /// - [`Error::OutcomeUnknown`] only when `retry_safe`: the call was an
    ///   idempotent (keyed) write, so repeating it with the same key applies it
    ///   at most once. An unknown outcome of any other write is **not**
    ///   retryable: it may have been applied, and a repeat could apply it twice.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::OutcomeUnknown { retry_safe, .. } => *retry_safe,
            Error::Unavailable { .. } => true,
            _ => matches!(
                self.code(),
                Some(c) if c == SqlState::T_R_SERIALIZATION_FAILURE.code()
                    || c == SqlState::T_R_DEADLOCK_DETECTED.code()
            ),
        }
    }

    /// Whether the call may have been applied although it failed
    /// ([`Error::OutcomeUnknown`]).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }

    /// Maps a driver error of a **write** whose request had been handed to the
    /// connection (`sent`): a lost connection without a server report means the
    /// outcome is unknown ([`Error::OutcomeUnknown`], `retry_safe` as given).
    /// A server error report for the statement itself means it failed, hence
    /// was not applied, and maps as [`Error::from_pg`] does.
    pub(crate) fn from_pg_sent(
        operation: &'static str,
        err: tokio_postgres::Error,
        retry_safe: bool,
    ) -> Error {
        if err.as_db_error().is_none() && (err.is_closed() || has_io_source(&err)) {
            return Error::OutcomeUnknown {
                operation,
                reason: err.to_string(),
                code: None,
                retry_safe,
                source: Some(Box::new(err)),
            };
        }
        Error::from_pg(operation, err)
    }

    /// Maps a driver error of the `COMMIT` of a write (or of the request that
    /// proves it committed): a lost connection, or the server ending the session
    /// (`57P01`-`57P03`, class `08`) while it commits, leaves the outcome unknown;
    /// any other server error means the transaction was rolled back.
    pub(crate) fn from_pg_commit(
        operation: &'static str,
        err: tokio_postgres::Error,
        retry_safe: bool,
    ) -> Error {
        let ends_session = err.as_db_error().map(|db| {
            let c = db.code().code();
            c.starts_with("08") || c.starts_with("57P") || c.starts_with("XX")
        });
        match ends_session {
            Some(true) => Error::OutcomeUnknown {
                operation,
                reason: err.to_string(),
                code: err.code().map(|c| c.code().to_owned()),
                retry_safe,
                source: Some(Box::new(err)),
            },
            Some(false) => Error::from_pg(operation, err),
            None => Error::from_pg_sent(operation, err, retry_safe),
        }
    }

    /// Maps a driver error of `operation` to what a caller can act on.
    pub(crate) fn from_pg(operation: &'static str, err: tokio_postgres::Error) -> Error {
        let Some(db) = err.as_db_error() else {
            return if err.is_closed() || has_io_source(&err) {
                Error::Unavailable {
                    operation,
                    reason: err.to_string(),
                    code: err.code().map(|c| c.code().to_owned()),
                    source: Some(Box::new(err)),
                }
            } else {
                Error::Driver {
                    operation,
                    reason: err.to_string(),
                    source: Some(Box::new(err)),
                }
            };
        };
        let state = db.code();
        let server = Box::new(ServerError::from_db(db));
        let class = |prefix: &str| state.code().starts_with(prefix);
        if [SqlState::UNIQUE_VIOLATION, SqlState::EXCLUSION_VIOLATION].contains(state) {
            Error::Conflict { operation, server }
        } else if *state == SqlState::INSUFFICIENT_PRIVILEGE {
            Error::Forbidden {
                operation,
                reason: server.message.clone(),
                server: Some(server),
            }
        } else if REFUSED_INPUT.contains(state) {
            Error::InvalidInput {
                operation,
                field: server
                    .constraint
                    .clone()
                    .or_else(|| server.column.clone())
                    .unwrap_or_else(|| "value".to_owned()),
                reason: server.to_string(),
                server: Some(server),
            }
        } else if class("08")
            || class("53")
            || class("57P")
            || *state == SqlState::QUERY_CANCELED
            || *state == SqlState::LOCK_NOT_AVAILABLE
        {
            Error::Unavailable {
                operation,
                reason: server.to_string(),
                code: server.code.clone(),
                source: None,
            }
        } else {
            Error::Database { operation, server }
        }
    }

    pub(crate) fn pool(operation: &'static str, err: deadpool_postgres::PoolError) -> Error {
        match err {
            deadpool_postgres::PoolError::Backend(e) => match Error::from_pg(operation, e) {
                Error::Database { operation, server } => Error::Unavailable {
                    operation,
                    reason: format!("connecting: {server}"),
                    code: server.code.clone(),
                    source: None,
                },
                other => other,
            },
            other => Error::Unavailable {
                operation,
                reason: format!("getting a pooled connection: {other}"),
                code: None,
                source: Some(Box::new(other)),
            },
        }
    }

    pub(crate) fn invalid(
        operation: &'static str,
        field: &str,
        reason: impl Into<String>,
    ) -> Error {
        Error::InvalidInput {
            operation,
            field: field.to_owned(),
            reason: reason.into(),
            server: None,
        }
    }

    pub(crate) fn decode(operation: &'static str, column: &str, err: impl fmt::Display) -> Error {
        Error::Decode {
            operation,
            column: column.to_owned(),
            reason: err.to_string(),
        }
    }
}

fn has_io_source(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = err.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

pub(crate) fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(retry_safe: bool) -> Error {
        Error::OutcomeUnknown {
            operation: "report_progress",
            reason: "connection closed".to_owned(),
            code: None,
            retry_safe,
            source: None,
        }
    }

    #[test]
    fn an_unknown_outcome_is_retryable_only_for_keyed_writes() {
        assert!(unknown(true).is_retryable());
        assert!(!unknown(false).is_retryable());
        assert!(unknown(false).is_outcome_unknown());
        assert!(unknown(false).to_string().contains("read the state back"));
        assert!(unknown(true).to_string().contains("same key"));
        let unavailable = Error::Unavailable {
            operation: "report_progress",
            reason: "pool timed out".to_owned(),
            code: None,
            source: None,
        };
        assert!(unavailable.is_retryable());
        assert!(!unavailable.is_outcome_unknown());
    }
}
