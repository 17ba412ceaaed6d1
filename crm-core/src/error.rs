//! One error type for every service. Each variant has a meaning a caller can act on;
//! the HTTP router and the Python module map it once each (to RFC 9457 problem details
//! and to the `crm.CrmError` hierarchy). Display strings never carry database text or
//! secrets: the underlying cause stays in [`std::error::Error::source`] for tracing.

use std::fmt;
use std::time::Duration;

use uuid::Uuid;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid field of an input, named as the caller spelled it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The input field (`email`, `tags[3]`, `cursor`, …).
    pub field: String,
    /// What is wrong with it, in a sentence a user can act on.
    pub message: String,
}

impl FieldError {
    /// A field error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Everything a crm service can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was refused; every invalid field is listed, and nothing was written.
    #[error("invalid input: {}", join(errors))]
    Validation {
        /// One entry per invalid field.
        errors: Vec<FieldError>,
    },
    /// The entity does not exist in this workspace (or never existed).
    #[error("{entity} not found")]
    NotFound {
        /// What was looked for (`lead`, `workspace`, …).
        entity: &'static str,
    },
    /// The write would break a uniqueness rule.
    #[error("{message}")]
    Conflict {
        /// What clashed, e.g. "a lead with this email already exists".
        message: String,
        /// The field that clashed, when one did.
        field: Option<&'static str>,
        /// The id of the existing entity, where there is one.
        existing_id: Option<Uuid>,
    },
    /// The entity is in a state that allows no such change; `code` says which:
    /// `key_revoked` (a revoked API key is frozen), `key_rotated` (a key is rotated
    /// once; rotate its replacement), `quota_exceeded` (the workspace holds as many
    /// as its [`crate::Quotas`] allow), `email_taken` (a registration with an email
    /// that has an account, see [`crate::auth::AuthConfig::one_account_per_email`]),
    /// `confirmation_required` (a lead with a timeline deleted without confirming,
    /// see [`crate::Leads::delete_confirmed`]), `storage_quota_exceeded` (a file
    /// would take the workspace past [`crate::Quotas::attachment_bytes`]). Nothing
    /// was written.
    #[error("{message}")]
    InvalidState {
        /// A stable machine-readable code, e.g. `key_revoked`.
        code: &'static str,
        /// What is wrong, in a sentence a user can act on.
        message: String,
    },
    /// Missing or bad credentials; `reason` says which, for logs and for API clients
    /// that own the credential (a login never says more than `InvalidCredentials`).
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// Why the credential was refused.
        reason: AuthFailure,
    },
    /// Valid credentials without the right to do this.
    #[error("forbidden")]
    Forbidden,
    /// Too many requests; try again after `retry_after`.
    #[error("rate limited, retry after {} s", retry_after.as_secs())]
    RateLimited {
        /// How long the caller should wait.
        retry_after: Duration,
    },
    /// A third-party provider failed.
    #[error("integration error: {0}")]
    Integration(String),
    /// A third-party provider refused what was asked of it (an unknown message
    /// template, a recipient it cannot reach), in its own words; nothing was
    /// recorded. Unlike [`Error::Integration`] the request, not the provider, is at
    /// fault: sending it again unchanged fails again.
    #[error("the provider refused: {0}")]
    Provider(String),
    /// A file is larger than the per-file limit
    /// ([`crate::attachments::AttachmentRules::max_file_size`]); nothing was stored.
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A file's type, as sniffed from its bytes (never as named or declared), is not
    /// on the allow-list ([`crate::attachments::AttachmentRules::allowed_types`]);
    /// nothing was stored.
    #[error("files of type {content_type} are not accepted")]
    UnsupportedType {
        /// The type the bytes are (`application/x-executable`, …).
        content_type: String,
    },
    /// The file storage ([`crate::storage::Storage`]) failed or cannot be reached;
    /// nothing was written to the database. The text says what failed, never where.
    #[error("file storage unavailable: {0}")]
    Storage(String),
    /// The `Crm` was built or connected with an unusable configuration.
    #[error("configuration error: {0}")]
    Config(String),
    /// The database failed. The text of the cause is kept out of `Display`; it is the
    /// [`std::error::Error::source`] of this error, for logs.
    #[error("database error")]
    Database(#[source] DatabaseError),
    /// crm's migrations could not run, or the database's crm schema does not match
    /// this library (newer, or an applied migration that differs). Nothing was
    /// changed; `message` names the versions.
    #[error("{message}")]
    Migration {
        /// What went wrong, naming the migration versions involved.
        message: String,
        /// The database failure behind it, when there was one.
        #[source]
        source: Option<DatabaseError>,
    },
    /// An inbound webhook's signature did not verify.
    #[error("webhook verification failed: {0}")]
    WebhookVerification(#[from] crate::webhooks::signing::VerifyError),
    /// Sealed data could not be opened (wrong master key, or corrupted).
    #[error("sealed secret could not be opened")]
    Unseal,
}

/// Why a credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The API key does not have the key format or its checksum fails; the database
    /// was not consulted.
    #[error("malformed API key")]
    MalformedKey,
    /// No such API key.
    #[error("unknown API key")]
    UnknownKey,
    /// The API key was revoked.
    #[error("revoked API key")]
    RevokedKey,
    /// The API key expired (or its rotation grace period ended).
    #[error("expired API key")]
    ExpiredKey,
    /// A session or single-use token that is not 43 base64url characters.
    #[error("malformed token")]
    MalformedToken,
    /// A session or single-use token that is unknown, expired or already used.
    #[error("invalid or expired token")]
    InvalidToken,
    /// Wrong user name or password, or any other credential that must not say more.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The password was right, but the app requires a verified email
    /// ([`crate::auth::AuthConfig::require_verified_email`]) and this account's is
    /// not yet: open the link in the verification mail, or ask for another one.
    #[error("email not verified")]
    EmailNotVerified,
    /// A signed download link that is malformed, was not made by this server, or
    /// has expired.
    #[error("invalid or expired link")]
    InvalidLink,
    /// An external JWT ([`crate::Crm::verify_jwt`]) that is not a JWT.
    #[error("malformed JWT")]
    JwtMalformed,
    /// An external JWT signed with an algorithm the configured key does not take
    /// (`none`, or HS256 where the key is a JWKS: key confusion).
    #[error("JWT algorithm not accepted")]
    JwtAlgorithm,
    /// An external JWT whose signature does not verify.
    #[error("JWT signature does not verify")]
    JwtSignature,
    /// An external JWT past its `exp` (and the leeway).
    #[error("expired JWT")]
    JwtExpired,
    /// An external JWT before its `nbf` (less the leeway).
    #[error("JWT not valid yet")]
    JwtNotYetValid,
    /// An external JWT from another issuer (`iss`).
    #[error("JWT from another issuer")]
    JwtIssuer,
    /// An external JWT for another audience (`aud`).
    #[error("JWT for another audience")]
    JwtAudience,
    /// An external JWT signed with a key the JWKS does not have (or the JWKS could
    /// not be fetched and no key was known).
    #[error("JWT signed with an unknown key")]
    JwtUnknownKey,
    /// An external JWT without `exp` or `sub`, or whose workspace claim is not a
    /// workspace id.
    #[error("JWT claims missing or invalid")]
    JwtClaims,
    /// An OpenID Connect callback whose `state` is unknown, already used or
    /// expired (or whose provider was removed meanwhile).
    #[error("unknown, used or expired sign-in state")]
    OidcState,
    /// The OpenID Connect provider answered an error, or refused the code (used,
    /// expired, or not this sign-in's).
    #[error("the identity provider refused the sign-in")]
    OidcDenied,
    /// An ID token whose `nonce` is not this sign-in's.
    #[error("ID token for another sign-in")]
    OidcNonce,
    /// The provider did not say the email is verified (or gave none).
    #[error("email not verified by the identity provider")]
    OidcEmailUnverified,
    /// The email's domain is not one the provider allows.
    #[error("email domain not allowed")]
    OidcDomain,
    /// No user has this email, and the provider does not create one.
    #[error("no account for this email")]
    OidcNoAccount,
}

impl Error {
    pub(crate) fn unauthorized(reason: AuthFailure) -> Self {
        Self::Unauthorized { reason }
    }
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// A validation error with a single field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            errors: vec![FieldError::new(field, message)],
        }
    }

    /// The field errors of a [`Error::Validation`], empty for any other variant.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Self::Validation { errors } => errors,
            _ => &[],
        }
    }

    /// A stable snake_case code for this error, for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation_failed",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::InvalidState { code, .. } => code,
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::Integration(_) => "integration_failed",
            Self::Provider(_) => "provider_error",
            Self::WebhookVerification(_) => "webhook_verification_failed",
            Self::Config(_) => "configuration_error",
            Self::TooLarge { .. } => "file_too_large",
            Self::UnsupportedType { .. } => "unsupported_media_type",
            Self::Storage(_) => "storage_unavailable",
            Self::Database(_) | Self::Migration { .. } | Self::Unseal => "internal_error",
        }
    }
}

/// An error with every cause under it, for logs: `database error: error returned
/// from database: relation "crm_leads" does not exist`. Never for a user: the causes
/// can name tables, columns and values.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// A failure of the database driver, kept opaque so that the driver (sqlx) is not part
/// of crm's public API: its `Display` is the driver's message and its
/// [`std::error::Error::source`] the driver's own cause, for logs. Never show it to an
/// end user: it can name tables, columns and values.
#[derive(Debug)]
pub struct DatabaseError(sqlx::Error);

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl DatabaseError {
    pub(crate) fn new(err: sqlx::Error) -> Self {
        Self(err)
    }
}

// Hidden: the crate's own `?` on driver results goes through it; it is not a promise
// to callers, whose code should not depend on sqlx's error type through crm.
#[doc(hidden)]
impl From<sqlx::Error> for Error {
    /// The one place where database errors get a meaning: a unique-constraint
    /// violation is a [`Error::Conflict`], a foreign-key violation means the parent
    /// (in practice the workspace) does not exist, anything else is [`Error::Database`].
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            if db.is_unique_violation() {
                return Self::Conflict {
                    message: "an entity with these unique values already exists".into(),
                    field: None,
                    existing_id: None,
                };
            }
            if db.is_foreign_key_violation() {
                return Self::NotFound {
                    entity: "workspace",
                };
            }
        }
        Self::Database(DatabaseError(err))
    }
}

/// The message of a JSON (de)serialization error without serde_json's trailing
/// " at line 1 column 7": callers name the field by its path instead, which says where.
pub fn json_message(err: &serde_json::Error) -> String {
    let msg = err.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    }
}

/// Collects field errors while an input is parsed, so that every problem is reported
/// together instead of the first one alone.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    /// Whether no error was added yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Keeps the value of `r`, or records its error under `field`.
    pub(crate) fn take<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation { errors: self.0 })
        }
    }
}

impl Errors {
    pub(crate) fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|f| f.field.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The user sees "database error"; the log sees what the driver said.
    #[test]
    fn a_chain_shows_every_cause_for_logs_only() {
        let e = Error::Database(DatabaseError::new(sqlx::Error::Protocol(
            "relation \"crm_leads\" does not exist".into(),
        )));
        assert_eq!(e.to_string(), "database error");
        let logged = Chain(&e).to_string();
        assert!(
            logged.starts_with("database error: ") && logged.contains("crm_leads"),
            "{logged}"
        );
    }
}
