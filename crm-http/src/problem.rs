//! RFC 9457 problem details: the one mapping of [`crm_core::Error`] to HTTP, and of
//! everything the router itself refuses (bad JSON, wrong content type, unknown route,
//! wrong method, body too large, a panic).
//!
//! A 5xx body never carries internal text: the cause goes to tracing, the client gets
//! the generic title.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_core::{AuthFailure, Error, FieldError};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error response (RFC 9457), with crm's `code` and field `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `about:blank` plus `code` (crm's types have no page).
    #[serde(rename = "type")]
    pub type_: String,
    /// The HTTP reason phrase of the status.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A stable snake_case code for programs (`validation_failed`, `not_found`, …).
    pub code: String,
    /// The invalid fields, for `validation_failed` (and malformed bodies or parameters).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The id of the existing entity, for a `conflict` where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_id: Option<uuid::Uuid>,
    /// Seconds to wait, for `rate_limited`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with `status`, `code` and `detail`.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            type_: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: Some(detail.into()),
            code: code.into(),
            errors: Vec::new(),
            existing_id: None,
            retry_after: None,
        }
    }

    /// A problem about one field (a body field, a query or path parameter, a header).
    pub fn field(status: StatusCode, code: &str, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut p = Self::new(status, code, format!("{field}: {message}"));
        p.errors.push(FieldError::new(field, message));
        p
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.retry_after;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = retry {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// A handler's error: a crm error or a problem the HTTP layer found itself.
#[derive(Debug)]
pub enum ApiError {
    /// From a crm service.
    Crm(Error),
    /// From the HTTP layer (a malformed request).
    Problem(Box<Problem>),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self::Crm(e)
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self::Problem(Box::new(p))
    }
}

/// Whole seconds to wait, at least 1.
pub(crate) fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The one mapping of a crm error to a problem.
pub fn problem_of(e: &Error) -> Problem {
    use StatusCode as S;
    let code = e.code();
    match e {
        Error::Validation { errors } => {
            let mut p = Problem::new(S::UNPROCESSABLE_ENTITY, code, e.to_string());
            p.errors = errors.clone();
            p
        }
        Error::NotFound { .. } => Problem::new(S::NOT_FOUND, code, e.to_string()),
        Error::Conflict {
            message,
            field,
            existing_id,
        } => {
            let mut p = Problem::new(S::CONFLICT, code, message.clone());
            if let Some(f) = field {
                p.errors.push(FieldError::new(*f, message.clone()));
            }
            p.existing_id = *existing_id;
            p
        }
        Error::InvalidState { message, .. } => Problem::new(S::CONFLICT, code, message.clone()),
        Error::Unauthorized { reason } => {
            // A login never says more than "invalid credentials"; a key or token its
            // owner presented may say what is wrong with it.
            let detail = match reason {
                AuthFailure::InvalidCredentials => "invalid credentials".to_owned(),
                other => other.to_string(),
            };
            Problem::new(S::UNAUTHORIZED, code, detail)
        }
        Error::Forbidden => Problem::new(
            S::FORBIDDEN,
            code,
            "the credential does not allow this action",
        ),
        Error::RateLimited { retry_after } => {
            let secs = retry_secs(*retry_after);
            let mut p = Problem::new(
                S::TOO_MANY_REQUESTS,
                code,
                format!("too many requests; retry after {secs} s"),
            );
            p.retry_after = Some(secs);
            p
        }
        Error::WebhookVerification(v) => Problem::new(S::UNAUTHORIZED, code, v.to_string()),
        Error::Provider(message) => Problem::new(
            S::UNPROCESSABLE_ENTITY,
            code,
            format!("the provider refused: {message}"),
        ),
        Error::Integration(_) => {
            tracing::warn!(error = %e, "integration failed");
            Problem::new(S::BAD_GATEWAY, code, "a third-party provider failed")
        }
        Error::TooLarge { .. } => Problem::new(S::PAYLOAD_TOO_LARGE, code, e.to_string()),
        Error::UnsupportedType { .. } => {
            Problem::new(S::UNSUPPORTED_MEDIA_TYPE, code, e.to_string())
        }
        Error::Storage(_) => {
            tracing::error!(error = %e, "file storage failed");
            Problem::new(
                S::SERVICE_UNAVAILABLE,
                code,
                "the file storage is unavailable; nothing was written",
            )
        }
        Error::Config(_) => {
            tracing::error!(error = %e, "configuration error");
            Problem::new(
                S::SERVICE_UNAVAILABLE,
                code,
                "this server is not configured for this request",
            )
        }
        _ => {
            tracing::error!(error = %crm_core::error::Chain(e), "internal error");
            Problem::new(S::INTERNAL_SERVER_ERROR, code, "internal error")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Crm(e) => problem_of(&e).into_response(),
            Self::Problem(p) => p.into_response(),
        }
    }
}

/// `Result` of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// The router's fallback: 404 for a path it does not serve.
pub(crate) async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

/// 405 for a path served without this method.
pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept this method",
    )
}

/// A panic inside a handler becomes a plain 500 problem (its message goes to tracing).
pub(crate) fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error",
    )
    .into_response()
}
