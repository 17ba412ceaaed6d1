//! The types of API keys: the key as stored and shown, and the inputs that make
//! and change one.

use super::Scope;
use crate::ids::{ApiKeyId, WorkspaceId};
use crate::secret::SecretString;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An API key's metadata. The secret is never part of it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    /// Its id.
    pub id: ApiKeyId,
    /// The workspace it acts in.
    pub workspace_id: WorkspaceId,
    /// A name for people.
    pub name: String,
    /// `{prefix}_` and the first 8 random characters, to recognise the key.
    pub display_prefix: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Who made it.
    pub created_by: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When its name or scopes last changed.
    pub updated_at: DateTime<Utc>,
    /// When it stops working (after a rotation: the end of the grace period).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used, to the minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key that replaced it in a rotation.
    pub replaced_by: Option<ApiKeyId>,
}

/// A key just made: its metadata and the secret, which is shown this once.
#[derive(Debug, Clone)]
pub struct CreatedApiKey {
    /// The key's metadata.
    pub key: ApiKey,
    /// The full key. It is not stored and cannot be shown again.
    pub secret: SecretString,
}

/// Input of [`ApiKeys::create`](super::ApiKeys::create).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "Website backend", "scopes": ["leads:read", "leads:write"]})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewApiKey {
    /// 1–100 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub name: String,
    /// At least one scope (see [`Scope::parse`]).
    #[cfg_attr(feature = "openapi", schema(required = true, schema_with = crate::openapi::scopes))]
    pub scopes: Vec<String>,
    /// Optional expiry, in the future.
    #[cfg_attr(feature = "openapi", schema(example = "2099-01-01T00:00:00Z"))]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Input of [`ApiKeys::update`](super::ApiKeys::update): fields left `None` stay.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "Website backend (prod)", "scopes": ["leads:*"]})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeyPatch {
    /// A new name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub name: Option<String>,
    /// New scopes (replacing the old ones).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::scopes_patch))]
    pub scopes: Option<Vec<String>>,
}
