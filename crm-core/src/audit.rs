//! The audit log: security-relevant actions (API-key changes now; logins, password
//! changes and webhook changes as those services land), each with actor, workspace,
//! IP when known, and time. Entries are written in the transaction of the change
//! they record.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::ids::{AuditId, WorkspaceId};

/// One audit-log entry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Its id (UUIDv7, so ids sort by time).
    pub id: AuditId,
    /// The workspace it happened in.
    pub workspace_id: WorkspaceId,
    /// Who did it, as the caller named them.
    pub actor: Option<String>,
    /// What happened, e.g. `api_key.created`.
    pub action: String,
    /// The kind of thing it happened to, e.g. `api_key`.
    pub target_type: Option<String>,
    /// Its id.
    pub target_id: Option<String>,
    /// The client IP, when the caller passed one.
    pub ip: Option<String>,
    /// Action-specific details (never secrets).
    pub details: Value,
    /// When (UTC).
    pub created_at: DateTime<Utc>,
}

impl AuditEntry {
    pub(crate) fn new(
        workspace_id: WorkspaceId,
        actor: Option<&str>,
        action: &str,
        target: (&str, String),
        details: Value,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: AuditId::new(),
            workspace_id,
            // The actor is the caller's label (`with_actor`, `Actor::App`): stored as
            // text, which on Postgres holds no NUL.
            actor: actor.map(|a| a.replace('\0', "\u{fffd}")),
            action: action.to_owned(),
            target_type: Some(target.0.to_owned()),
            target_id: Some(target.1),
            ip: None,
            details,
            created_at: now,
        }
    }
}
