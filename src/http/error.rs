//! One error type for every handler, mapped once to a status and the `{"message": ...}` body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::{DomainError, StreamVersion};
use crate::store::{StoreError, WriteError};

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// On 412: the stream's current version, sent as `currentVersion` and `ETag`.
    pub current_version: Option<StreamVersion>,
    /// On 429 and 503: whole seconds after which to retry, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), current_version: None, retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "Provided API key is either invalid or lacks permission")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 410: what was asked for is in an archive segment, no longer in the live log.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, message)
    }

    fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let status = match &error {
            DomainError::Invalid(_) => StatusCode::BAD_REQUEST,
            DomainError::NotFound(_) => StatusCode::NOT_FOUND,
            DomainError::Conflict(_) => StatusCode::CONFLICT,
            DomainError::VersionConflict { .. } => StatusCode::PRECONDITION_FAILED,
            DomainError::DocumentTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        };
        let current_version = match error {
            DomainError::VersionConflict { current } => Some(current),
            _ => None,
        };
        ApiError { status, message: error.to_string(), current_version, retry_after: None }
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Domain(error) => error.into(),
            WriteError::IdempotencyMismatch => Self::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
            WriteError::Unavailable
            | WriteError::CommitFailed
            | WriteError::DatabaseUnreachable
            | WriteError::AccountBusy => ApiError {
                retry_after: Some(1),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
            },
            WriteError::DiskFull => ApiError {
                retry_after: Some(5),
                ..Self::new(StatusCode::INSUFFICIENT_STORAGE, error.to_string())
            },
            WriteError::RateLimited { retry_after } => {
                let message = format!("{error}: at most {} ms from now", retry_after.as_millis().max(1));
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                ApiError {
                    retry_after: Some(seconds.max(1)),
                    ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
                }
            }
            WriteError::Store(error) => Self::internal(&error),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(%error, "a read could not open the store");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server cannot open the store just now; retry",
            );
        }
        Self::internal(&error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.current_version {
            Some(current) => json!({ "message": self.message, "currentVersion": current }),
            None => json!({ "message": self.message }),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        // Kept for API families that answer errors in another shape (`journeys::error_shape`).
        response.extensions_mut().insert(ErrorMessage(self.message));
        if let Some(current) = self.current_version {
            response.headers_mut().insert(header::ETAG, etag(current));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The message of an error response, for layers that render it in their API family's shape.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

/// The `ETag` of a stream at `version`.
pub fn etag(version: StreamVersion) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}
