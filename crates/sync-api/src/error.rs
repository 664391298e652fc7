//! JSON error replies: every failure, including the framework's own (404,
//! 405, 413, 415, 408), is `{"code": …, "message": …}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sync_store::api::ApiError;

use crate::auth::AuthError;

/// The body of every error reply.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `unauthenticated`.
    pub code: String,
    /// What went wrong and what to do; never SQL, server text or other tenants' data.
    pub message: String,
}

/// An error reply: status, body, and for 401 a `WWW-Authenticate` header.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    body: ErrorBody,
    challenge: Option<&'static str>,
}

impl Failure {
    /// A reply with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            body: ErrorBody {
                code: code.to_owned(),
                message: message.into(),
            },
            challenge: None,
        }
    }

    /// The status of this reply.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Failure::new(status, e.code, e.message)
    }
}

impl From<sync_store::Error> for Failure {
    fn from(e: sync_store::Error) -> Failure {
        ApiError::from(e).into()
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Failure {
        // One sentence for every refusal: nothing tells an expired token from
        // a forged one, or a known user from an unknown one.
        tracing::debug!(reason = %e, "authentication refused");
        match e {
            AuthError::Ambiguous => Failure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "send exactly one Authorization header",
            ),
            AuthError::KeysUnavailable(_) => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the token verification keys are unavailable; retry later",
            ),
            AuthError::Missing => Failure {
                challenge: Some(r#"Bearer realm="sync-api""#),
                ..Failure::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "send Authorization: Bearer <JWT> (a token of this deployment's auth provider)",
                )
            },
            AuthError::Malformed | AuthError::Refused(_) => Failure {
                challenge: Some(
                    r#"Bearer realm="sync-api", error="invalid_token", error_description="the token is invalid or expired""#,
                ),
                ..Failure::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "the bearer token is invalid or expired; sign in again for a new one",
                )
            },
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if let Some(challenge) = self.challenge {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}
