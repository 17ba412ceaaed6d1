//! The types of notification channels: the channel as stored and shown, and the
//! inputs that make and change one.

use crate::ids::{ChannelId, WorkspaceId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A notification channel (its configuration is only read back with
/// [`Notifications::config`](super::Notifications::config)).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Channel {
    /// Its id.
    pub id: ChannelId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// The plugin kind.
    pub kind: String,
    /// A name for people.
    pub name: String,
    /// Event types it receives: names, `lead.*`, or `*`.
    pub event_types: Vec<String>,
    /// Whether it receives notifications.
    pub enabled: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Input of [`Notifications::create`](super::Notifications::create).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"kind": "email", "name": "Sales inbox", "config": {"to": ["sales@example.com"]}, "event_types": ["lead.created"]})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewChannel {
    /// The plugin kind; a plugin of that kind must be registered.
    #[cfg_attr(feature = "openapi", schema(required = true, min_length = 1))]
    pub kind: String,
    /// 1–100 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub name: String,
    /// The plugin's configuration (a JSON object), checked by the plugin.
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = Object))]
    pub config: Value,
    /// Event filter; `["lead.created"]` when empty (people want to hear about new
    /// leads, not every edit; webhooks, for machines, default to `*`).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::event_filter))]
    pub event_types: Vec<String>,
    /// `true` when absent.
    pub enabled: Option<bool>,
}

/// Input of [`Notifications::update`](super::Notifications::update); fields left `None` stay.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "Sales inbox (EU)", "event_types": ["lead.*"], "enabled": true})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelPatch {
    /// A new name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub name: Option<String>,
    /// A new configuration (checked by the plugin).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub config: Option<Value>,
    /// A new event filter.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::event_filter_patch))]
    pub event_types: Option<Vec<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}
