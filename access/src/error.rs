//! Refusals of the access layer as HTTP answers.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// No credentials, or credentials that are malformed, expired or revoked.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Wrong username or password (one message for both, so names cannot be probed).
    #[error("wrong username or password")]
    BadLogin,
    /// The account is locked after repeated failures.
    #[error("too many failed logins: try again in {retry_after_secs} s")]
    Locked {
        /// Seconds until the lock ends.
        retry_after_secs: u64,
    },
    /// Authenticated, but the role may not use this kind of route.
    #[error("a {0} may not use this")]
    Forbidden(String),
    /// A request that cannot be processed as sent.
    #[error("{0}")]
    BadRequest(String),
    /// The database failed.
    #[error("{0}")]
    Storage(#[from] storage::StorageError),
    /// Anything else on the server side.
    #[error("{0}")]
    Internal(String),
}

impl ResponseError for AccessError {
    fn status_code(&self) -> StatusCode {
        match self {
            AccessError::Unauthenticated(_) | AccessError::BadLogin => StatusCode::UNAUTHORIZED,
            AccessError::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
            AccessError::Forbidden(_) => StatusCode::FORBIDDEN,
            AccessError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AccessError::Storage(storage::StorageError::Invalid(_)) => StatusCode::BAD_REQUEST,
            AccessError::Storage(storage::StorageError::Duplicate(_)) => StatusCode::CONFLICT,
            AccessError::Storage(storage::StorageError::NotFound(_)) => StatusCode::NOT_FOUND,
            AccessError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            AccessError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "access layer failure");
        }
        let mut response = HttpResponse::build(status);
        match self {
            AccessError::Unauthenticated(_) | AccessError::BadLogin => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"hub\""));
            }
            AccessError::Locked { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}
