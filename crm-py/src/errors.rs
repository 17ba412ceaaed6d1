//! `crm_core::Error` → the `crm.CrmError` hierarchy, mapped once.
//!
//! The exception classes are written in Python (`crm/errors.py`): they carry typed
//! attributes (`errors`, `existing_id`, `retry_after`, …), pickle, and need no stubs
//! of their own. This module only picks the class and its arguments.

use crm_core::webhooks::signing::VerifyError;
use crm_core::Error;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;

/// `crm.errors`, imported once.
fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || py.import("crm.errors").map(Bound::unbind))
        .map(|m| m.bind(py))
}

/// Builds the exception for `err`. Display strings of `crm_core::Error` never carry
/// database text or secrets, so they are safe as messages.
pub(crate) fn to_py(py: Python<'_>, err: &Error) -> PyErr {
    build(py, err).unwrap_or_else(|e| e)
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let m = errors_module(py)?;
    let msg = err.to_string();
    let exc = match err {
        Error::Validation { errors } => {
            let list = PyList::empty(py);
            for e in errors {
                list.append((e.field.as_str(), e.message.as_str()))?;
            }
            m.getattr("ValidationError")?.call1((msg, list))?
        }
        Error::NotFound { entity } => m.getattr("NotFoundError")?.call1((msg, *entity))?,
        Error::Conflict {
            field, existing_id, ..
        } => m.getattr("ConflictError")?.call1((
            msg,
            existing_id.map(|id| id.to_string()),
            *field,
        ))?,
        Error::InvalidState { code, .. } => {
            m.getattr("ConflictError")?
                .call1((msg, None::<String>, None::<&str>, *code))?
        }
        Error::Unauthorized { reason } => m
            .getattr("UnauthorizedError")?
            .call1((msg, reason_code(*reason)))?,
        Error::Forbidden => m.getattr("ForbiddenError")?.call1((msg,))?,
        Error::RateLimited { retry_after } => m
            .getattr("RateLimitedError")?
            .call1((msg, retry_after.as_secs_f64()))?,
        Error::Integration(_) => m.getattr("IntegrationError")?.call1((msg,))?,
        Error::WebhookVerification(v) => return Ok(verification(py, *v)),
        other => m.getattr("CrmError")?.call1((msg, other.code()))?,
    };
    Ok(PyErr::from_value(exc))
}

/// `crm.WebhookVerificationError` for a signature that did not verify.
pub(crate) fn verification(py: Python<'_>, err: VerifyError) -> PyErr {
    let made = errors_module(py).and_then(|m| {
        m.getattr("WebhookVerificationError")?
            .call1((err.to_string(), err.kind()))
    });
    made.map_or_else(|e| e, PyErr::from_value)
}

/// A `ValidationError` on one field, for input refused before any service sees it.
pub(crate) fn invalid(py: Python<'_>, field: &str, message: &str) -> PyErr {
    to_py(py, &Error::invalid(field, message))
}

fn reason_code(r: crm_core::AuthFailure) -> &'static str {
    use crm_core::AuthFailure as A;
    match r {
        A::MalformedKey => "malformed_key",
        A::UnknownKey => "unknown_key",
        A::RevokedKey => "revoked_key",
        A::ExpiredKey => "expired_key",
        A::MalformedToken => "malformed_token",
        A::InvalidToken => "invalid_token",
        A::InvalidCredentials => "invalid_credentials",
        A::EmailNotVerified => "email_not_verified",
        A::InvalidLink => "invalid_link",
        A::JwtMalformed => "jwt_malformed",
        A::JwtAlgorithm => "jwt_algorithm",
        A::JwtSignature => "jwt_signature",
        A::JwtExpired => "jwt_expired",
        A::JwtNotYetValid => "jwt_not_yet_valid",
        A::JwtIssuer => "jwt_issuer",
        A::JwtAudience => "jwt_audience",
        A::JwtUnknownKey => "jwt_unknown_key",
        A::JwtClaims => "jwt_claims",
        _ => "unauthorized",
    }
}

/// A `CrmError` for a failure inside crm itself (a panic caught before it reached
/// Python, a poisoned lock); the detail goes nowhere near the caller.
pub(crate) fn internal(py: Python<'_>) -> PyErr {
    plain(py, "internal error", "internal_error")
}

/// The `CrmError` (`client_closed`) of a call on a client after its `close()`.
pub(crate) fn closed(py: Python<'_>) -> PyErr {
    plain(py, "the client is closed", "client_closed")
}

fn plain(py: Python<'_>, message: &str, code: &str) -> PyErr {
    let made = errors_module(py).and_then(|m| m.getattr("CrmError")?.call1((message, code)));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// Raises what the mapping makes of a sample error of kind `code` (a
/// [`crm_core::Error::code`], or `webhook_verification_failed`). For the test of the
/// mapping: some kinds (an integration failure, a broken database) cannot be caused
/// on demand from Python. Not part of the public API.
#[pyfunction]
pub(crate) fn sample_error(py: Python<'_>, code: PyBackedStr) -> PyResult<()> {
    use crm_core::AuthFailure;
    use std::time::Duration;
    let err = match &*code {
        "validation_failed" => Error::Validation {
            errors: vec![
                crm_core::FieldError::new("email", "is not an email"),
                crm_core::FieldError::new("tags[1]", "is empty"),
            ],
        },
        "not_found" => Error::NotFound { entity: "lead" },
        "conflict" => Error::Conflict {
            message: "a lead with this email already exists".into(),
            field: Some("email"),
            existing_id: Some(uuid::Uuid::nil()),
        },
        "key_revoked" => Error::InvalidState {
            code: "key_revoked",
            message: "a revoked API key cannot be changed".into(),
        },
        "quota_exceeded" => Error::InvalidState {
            code: "quota_exceeded",
            message: "the workspace has reached its quota of 20 webhook endpoints".into(),
        },
        "unauthorized" => Error::Unauthorized {
            reason: AuthFailure::RevokedKey,
        },
        "forbidden" => Error::Forbidden,
        "rate_limited" => Error::RateLimited {
            retry_after: Duration::from_millis(1500),
        },
        "integration_failed" => Error::Integration("discord: 500".into()),
        "provider_error" => Error::Provider("132001: template name does not exist".into()),
        "webhook_verification_failed" => Error::WebhookVerification(VerifyError::InvalidTimestamp),
        "configuration_error" => Error::Config("no master key".into()),
        "file_too_large" => Error::TooLarge { limit: 1024 },
        "unsupported_media_type" => Error::UnsupportedType {
            content_type: "application/x-executable".into(),
        },
        "storage_unavailable" => Error::Storage("the file could not be stored".into()),
        "internal_error" => Error::Unseal,
        _ => return Err(invalid(py, "code", "unknown error code")),
    };
    Err(to_py(py, &err))
}
