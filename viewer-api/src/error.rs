//! The one place where errors become HTTP responses: a status, a stable machine-readable
//! code and a message naming the problem. The full cause goes to the log.

use actix_web::http::StatusCode;
use actix_web::{error, web, HttpResponse, ResponseError};
use storage::StorageError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `invalid_uid`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// 404: also used for data of another site, so existence does not leak.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::BlobNotFound(_) => ApiError::not_found("stored original is missing"),
            StorageError::Invalid(m) => ApiError::bad_request("invalid", m),
            StorageError::Duplicate(m) => ApiError::new(StatusCode::CONFLICT, "duplicate", m),
            StorageError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StorageError::NotFound(m) => ApiError::not_found(format!("{m} not found")),
            e => {
                tracing::error!(error = %e, "storage failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage is unavailable, retry later",
                )
            }
        }
    }
}

impl From<access::AccessError> for ApiError {
    fn from(e: access::AccessError) -> Self {
        match e {
            access::AccessError::Storage(e) => e.into(),
            other => ApiError::new(other.status_code(), "access", other.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(serde_json::json!({
            "error": self.code,
            "message": self.message,
        }))
    }
}

/// Extractor settings whose rejections answer the one error body (actix's defaults answer
/// plain text): a malformed or misspelt JSON body, query string or path segment is a 400
/// naming the problem. Register every [`web::JsonConfig`] through this, with the route's
/// body limit.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|e, _req| {
            let (status, code) = match &e {
                error::JsonPayloadError::OverflowKnownLength { .. }
                | error::JsonPayloadError::Overflow { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                }
                error::JsonPayloadError::ContentType => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                }
                _ => (StatusCode::BAD_REQUEST, "invalid_json"),
            };
            ApiError::new(status, code, format!("request body: {e}")).into()
        })
}

/// Query-string rejections as the one error body (see [`json_config`]).
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|e, _req| {
        ApiError::bad_request("invalid_query", format!("query string: {e}")).into()
    })
}

/// Path-segment rejections as the one error body (see [`json_config`]).
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|e, _req| ApiError::bad_request("invalid_path", format!("path: {e}")).into())
}

/// Parse a UID from a path or query, naming which one is malformed.
pub fn parse_uid(what: &str, raw: &str) -> Result<String, ApiError> {
    formats::dicom::Uid::parse(raw)
        .map(formats::dicom::Uid::into_string)
        .map_err(|e| ApiError::bad_request("invalid_uid", format!("{what}: {e}")))
}

/// Study, series and SOP Instance UIDs of an instance-level path, each validated.
pub(crate) fn instance_uids(
    study: &str,
    series: &str,
    sop: &str,
) -> Result<(String, String, String), ApiError> {
    Ok((
        parse_uid("StudyInstanceUID in path", study)?,
        parse_uid("SeriesInstanceUID in path", series)?,
        parse_uid("SOPInstanceUID in path", sop)?,
    ))
}
