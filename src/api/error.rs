//! The one place where an error becomes an HTTP status and body.
//!
//! Bodies use the vendor's documented shape `{"code": N, "message": "..."}`. 5xx
//! answers log their cause and tell the client nothing internal.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use thiserror::Error;

use crate::auth::AuthError;
use crate::store::StoreError;

/// The vendor's own message for an unknown bot (SPEC.md).
pub const UNKNOWN_BOT: &str = "Linked bot details couldn't be found. Please verify that the botId provided in the request body is correct.";

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed, but past a bound of the conversation it is for.
    #[error("{0}")]
    Unprocessable(String),
    /// The caller's app is over its `rate_limit`.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u32,
    },
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: u32,
    },
    /// A fault of ours: the cause is kept whole (its chain of sources) for the log and
    /// never shown to the client.
    #[error("internal error")]
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::BadRequest(format!("path: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(format!("query: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::BadRequest(format!("body: {}", e.body_text()))
    }
}

impl From<crate::domain::ParseError> for ApiError {
    fn from(e: crate::domain::ParseError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<crate::domain::strict_json::StrictError> for ApiError {
    fn from(e: crate::domain::strict_json::StrictError) -> Self {
        use crate::domain::strict_json::{RESERVED, StrictError};
        ApiError::BadRequest(match e {
            StrictError::Syntax(e) => format!("the body is not valid JSON: {e}"),
            StrictError::Duplicate(path) => format!("{path} appears twice in the same object"),
            StrictError::Reserved(path) => {
                format!("{path}: keys starting with \"{RESERVED}\" are reserved")
            }
        })
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded => ApiError::Unavailable {
                message: "the server is busy; retry shortly".into(),
                retry_after_secs: 1,
            },
            e @ StoreError::Unavailable { .. } => {
                tracing::error!(error = %e.chain(), "store unavailable");
                ApiError::Unavailable {
                    message: "the store is unavailable; nothing was stored, retry later".into(),
                    retry_after_secs: 5,
                }
            }
            e @ (StoreError::Failed { .. } | StoreError::Corrupt { .. }) => {
                ApiError::Internal(e.into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(cause = format!("{cause:#}"), "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(json!({ "code": status.as_u16(), "message": message })),
        )
            .into_response();
        if let ApiError::Unavailable {
            retry_after_secs, ..
        }
        | ApiError::TooManyRequests {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
