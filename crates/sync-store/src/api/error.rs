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
/// | 503 | `unavailable` | the database cannot be reached; retry (logged server-side at warn) |
/// | 500 | `internal` | anything else (logged server-side at error with the cause, not shown) |
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

/// A plain sentence for input the database refused, by SQLSTATE. It names the
/// constraint or column only (never the server's message, which can quote values
/// of other rows, e.g. a foreign key's DETAIL).
fn refused_input(sqlstate: &str, field: &str) -> String {
    match sqlstate {
        "23503" => format!("{field}: refers to a record that does not exist"),
        "23502" => format!("{field}: a required value is missing"),
        "23514" => format!("{field}: a value breaks a rule of the table"),
        "22001" => format!("{field}: a value is too long"),
        "22003" => format!("{field}: a number is out of range"),
        "22P02" | "22007" | "22008" | "22P05" | "22021" => {
            format!("{field}: a value has the wrong format")
        }
        _ => format!("{field}: the database refused the value"),
    }
}

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
                Some(server) => refused_input(server.code.as_deref().unwrap_or_default(), field),
            }),
            Error::Unavailable { .. } => {
                tracing::warn!(error = %e, "sync_store::api: database unavailable (503)");
                ApiError {
                    status: 503,
                    code: "unavailable",
                    message: "the database is unavailable; retry later".into(),
                }
            }
            Error::OutcomeUnknown { .. } => {
                tracing::warn!(error = %e, "sync_store::api: outcome unknown (503)");
                ApiError {
                    status: 503,
                    code: "outcome_unknown",
                    message: "the database connection was lost after the write was sent; \
                              it may have been applied: read the state back before retrying"
                        .into(),
                }
            }
            _ => {
                // The cause stays server-side: the client sees only "internal error".
                tracing::error!(error = %e, "sync_store::api: internal error (500)");
                ApiError {
                    status: 500,
                    code: "internal",
                    message: "internal error".into(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerError;

    fn refused(code: &str, constraint: &str) -> Error {
        let server = ServerError {
            code: Some(code.to_owned()),
            message: "insert or update violates foreign key constraint".to_owned(),
            detail: Some("Key (initiated_by)=(0c5e…) is not present in table".to_owned()),
            hint: None,
            constraint: Some(constraint.to_owned()),
            column: None,
        };
        Error::InvalidInput {
            operation: "start_sync",
            field: constraint.to_owned(),
            reason: server.to_string(),
            server: Some(Box::new(server)),
        }
    }

    #[test]
    fn database_refusals_become_plain_sentences_without_server_details() {
        let e = ApiError::from(refused("23503", "sync_progress_initiated_by_fkey"));
        assert_eq!((e.status, e.code), (400, "invalid_input"));
        assert_eq!(
            e.message,
            "sync_progress_initiated_by_fkey: refers to a record that does not exist"
        );
        let e = ApiError::from(refused("23514", "sync_progress_counts_non_negative"));
        assert_eq!(
            e.message,
            "sync_progress_counts_non_negative: a value breaks a rule of the table"
        );
        let e = ApiError::from(refused("22001", "value"));
        assert_eq!(e.message, "value: a value is too long");
        for code in ["23503", "23514", "22001", "22P02", "XX000"] {
            let m = ApiError::from(refused(code, "c")).message;
            assert!(
                !m.contains("Key (") && !m.contains("violates"),
                "{code}: {m}"
            );
        }
    }

    #[test]
    fn validation_errors_keep_their_reason() {
        let e = ApiError::from(Error::invalid(
            "report_progress",
            "processed",
            "must be >= 0",
        ));
        assert_eq!((e.status, e.message.as_str()), (400, "must be >= 0"));
    }
}
