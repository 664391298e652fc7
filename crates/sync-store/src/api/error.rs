//! [`ApiError`]: what an API caller is told when an operation fails.

use crate::Error;

/// An API failure: HTTP status, stable machine-readable `code`, human message.
///
/// | status | code | when |
/// |---|---|---|
/// | 400 | `invalid_input` | a bad id, count, cursor, entity, limit or body |
/// | 401 | `unauthenticated` | no or malformed credentials (set by the HTTP layer) |
/// | 403 | `forbidden` | the user belongs to no org, or RLS/privileges refused the call |
/// | 404 | `not_found` | no such sync / preview / org for this user (also another org's) |
/// | 409 | `sync_finished`, `conflict` | the sync already ended; a unique id is taken |
/// | 503 | `unavailable` | the database cannot be reached; retry |
/// | 500 | `internal` | anything else (logged server-side, not shown) |
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiError {
    /// HTTP status code.
    #[serde(skip)]
    pub status: u16,
    /// Stable code, e.g. `not_found`.
    pub code: &'static str,
    /// What went wrong, without SQL, server messages or other tenants' data.
    pub message: String,
}

impl ApiError {
    /// A 400 `invalid_input` with `message`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code: "invalid_input",
            message: message.into(),
        }
    }

    /// A 404 `not_found` with `message`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            code: "not_found",
            message: message.into(),
        }
    }

    /// A 401 `unauthenticated` with `message`.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 401,
            code: "unauthenticated",
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match &e {
            Error::NotFound { .. } => ApiError::not_found("not found"),
            Error::SyncFinished { sync_id, .. } => ApiError {
                status: 409,
                code: "sync_finished",
                message: format!("sync {sync_id:?} already finished"),
            },
            Error::Conflict { .. } => ApiError {
                status: 409,
                code: "conflict",
                message: "conflicts with an existing record".into(),
            },
            Error::Forbidden { .. } => ApiError {
                status: 403,
                code: "forbidden",
                message: "not allowed for this user".into(),
            },
            // Validation errors (no server report) say what is wrong; a server
            // refusal is named by the field or constraint only.
            Error::InvalidInput {
                field,
                reason,
                server,
                ..
            } => ApiError::invalid(match server {
                None => reason.clone(),
                Some(_) => format!("invalid {field}"),
            }),
            Error::Unavailable { .. } => ApiError {
                status: 503,
                code: "unavailable",
                message: "the database is unavailable; retry later".into(),
            },
            _ => ApiError {
                status: 500,
                code: "internal",
                message: "internal error".into(),
            },
        }
    }
}
