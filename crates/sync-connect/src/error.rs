//! The error type of this crate, and [`ServerError`]: what the server said, shared by
//! every library of the workspace.

use std::fmt;

/// What the server said about a failed statement: SQLSTATE, message, detail, hint,
/// and the constraint or column it named.
///
/// Built from any [`tokio_postgres::Error`]; when the error did not come from the
/// server (a closed connection, an I/O error) only `message` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// Five-character SQLSTATE, e.g. `42P07`; `None` when the server sent nothing.
    pub code: Option<String>,
    /// Primary message (the server's, or the client library's).
    pub message: String,
    /// The server's DETAIL line, if any.
    pub detail: Option<String>,
    /// The server's HINT line, if any.
    pub hint: Option<String>,
    /// The constraint the server named, if any.
    pub constraint: Option<String>,
    /// The column the server named, if any.
    pub column: Option<String>,
}

impl ServerError {
    /// Extracts what the server reported from a driver error.
    pub fn from_pg(err: &tokio_postgres::Error) -> Self {
        match err.as_db_error() {
            Some(db) => Self::from_db(db),
            None => ServerError {
                code: err.code().map(|c| c.code().to_owned()),
                message: source_chain(err),
                detail: None,
                hint: None,
                constraint: None,
                column: None,
            },
        }
    }

    /// A report made on the client's side (no SQLSTATE, no server fields).
    pub fn client(message: impl Into<String>) -> Self {
        ServerError {
            code: None,
            message: message.into(),
            detail: None,
            hint: None,
            constraint: None,
            column: None,
        }
    }

    /// Copies the fields of an error response the server sent.
    pub fn from_db(db: &tokio_postgres::error::DbError) -> Self {
        ServerError {
            code: Some(db.code().code().to_owned()),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            hint: db.hint().map(str::to_owned),
            constraint: db.constraint().map(str::to_owned),
            column: db.column().map(str::to_owned),
        }
    }
}

/// `err`, then each of its sources, joined with `": "`.
pub fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "SQLSTATE {code}: {}", self.message)?,
            None => write!(f, "{}", self.message)?,
        }
        if let Some(detail) = &self.detail {
            write!(f, " (detail: {detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// What can go wrong while resolving settings, connecting, or probing for a pooler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be reached, refused the login or the TLS check, or the
    /// connection settings are not valid.
    #[error("cannot connect to the database: {reason}; check the connection string and that the server is up")]
    Unavailable {
        /// What the driver, the pool or the settings check said.
        reason: String,
    },

    /// The connection settings cannot be used: a connection string that does not
    /// parse, a `PGPORT` that is not a port, an unsupported `sslmode`, no user to
    /// log in as. Nothing was sent to any server.
    #[error("invalid connection settings: {reason}")]
    InvalidConfig {
        /// What is wrong, and what to set instead.
        reason: String,
    },

    /// A statement failed (while probing for a pooler).
    #[error("{during} failed: {server}")]
    Database {
        /// What was being done, e.g. "probing for a connection pooler".
        during: &'static str,
        /// What the server reported.
        server: Box<ServerError>,
    },

    /// The connection goes through a transaction-mode pooler (PgBouncer, Neon's
    /// `-pooler` endpoints), where session state does not survive a transaction.
    #[error(
        "{reason}: this needs a direct (session) connection. Use the direct endpoint{suggestion}"
    )]
    PoolerDetected {
        /// How it was detected.
        reason: String,
        /// ` such as <host>` when a direct host name can be derived.
        suggestion: String,
    },
}

impl Error {
    /// The SQLSTATE of the underlying server error, when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Database { server, .. } => server.code.as_deref(),
            _ => None,
        }
    }

    /// A closure mapping a driver error of `during` to [`Error::Unavailable`] (the
    /// connection is gone) or [`Error::Database`].
    pub(crate) fn db(during: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |e| {
            if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
                Error::Unavailable {
                    reason: format!("{during}: {}", source_chain(&e)),
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
