//! The lead service's public data: what goes in (raw, as a form or API sends it) and
//! what comes out (typed, valid).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::values::{ActivityKind, Email, LeadStatus, Phone};
use crate::ids::{ActivityId, ContactId, LeadId, UserId, WorkspaceId};

/// A lead as stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// Its id (UUIDv7).
    pub id: LeadId,
    /// The workspace it belongs to.
    pub workspace_id: WorkspaceId,
    /// The person's name.
    pub name: String,
    /// Email, unique (case-insensitively) within the workspace.
    pub email: Option<Email>,
    /// Phone in E.164, unique within the workspace.
    pub phone: Option<Phone>,
    /// Company.
    pub company: Option<String>,
    /// Budget, one of the `Crm`'s allowed budgets.
    pub budget: Option<String>,
    /// Project type, one of the `Crm`'s allowed project types.
    pub project_type: Option<String>,
    /// The message the lead sent.
    pub message: Option<String>,
    /// Where the lead came from, one of the `Crm`'s allowed sources.
    pub source: Option<String>,
    /// Pipeline status.
    pub status: LeadStatus,
    /// Internal notes.
    pub notes: Option<String>,
    /// Tags, unique, in the order given.
    pub tags: Vec<String>,
    /// Custom fields (a JSON object).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub custom: Map<String, Value>,
    /// The raw text the lead was parsed from, when it was.
    pub raw_input: Option<String>,
    /// Whether an AI parser produced the fields.
    pub ai_parsed: bool,
    /// When it was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When it last changed (UTC).
    pub updated_at: DateTime<Utc>,
    /// When it was archived ([`crate::Leads::archive`]): hidden from listings unless
    /// asked for, its timeline kept. `None` when it is not archived.
    #[serde(default)]
    pub archived_at: Option<DateTime<Utc>>,
    /// The user of the workspace the lead is assigned to.
    #[serde(default)]
    pub owner_id: Option<UserId>,
    /// The contact the lead was converted into ([`crate::Leads::convert`]).
    #[serde(default)]
    pub contact_id: Option<ContactId>,
}

/// An entry on a lead's timeline.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Its id.
    pub id: ActivityId,
    /// The lead it belongs to.
    pub lead_id: LeadId,
    /// What kind of entry it is.
    pub kind: ActivityKind,
    /// What happened.
    pub description: Option<String>,
    /// For `status_change`: the status before.
    pub old_status: Option<LeadStatus>,
    /// For `status_change`: the status after.
    pub new_status: Option<LeadStatus>,
    /// Who did it (a user, an API key, `system`), as the caller named it.
    pub actor: Option<String>,
    /// For a `message` sent or received through a provider (WhatsApp): what it was
    /// and, for one sent, how far it got.
    pub message: Option<MessageInfo>,
    /// When (UTC).
    pub created_at: DateTime<Utc>,
}

/// A lead with its timeline, oldest activity first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadDetail {
    /// The lead.
    #[serde(flatten)]
    pub lead: Lead,
    /// Its activities, oldest first.
    pub activities: Vec<Activity>,
}

/// The input of a new lead, as a form or API sends it; checked by `create` and `capture`.
///
/// Text is trimmed and an empty optional text counts as absent. `name` is required;
/// so is one of `email` or `phone`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "name": "Ana López", "email": "ana@example.com", "phone": "+34 600 123 456",
    "company": "Acme SL", "message": "We need a booking app.", "tags": ["vip"]
})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewLead {
    /// Required, 1–200 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 200,
            pattern = r"\S",
            example = "Ana López"
        )
    )]
    pub name: String,
    /// An email address.
    #[cfg_attr(feature = "openapi", schema(format = Email, max_length = 254, example = "ana@example.com"))]
    pub email: Option<String>,
    /// A phone number with country code (or national, when the `Crm` has a default).
    #[cfg_attr(
        feature = "openapi",
        schema(
            format = "phone",
            max_length = 32,
            pattern = r"^\s*$|^\s*(\+|00)[0-9 ()./-]+$",
            example = "+34 600 123 456"
        )
    )]
    pub phone: Option<String>,
    /// Up to 200 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 200, example = "Acme SL"))]
    pub company: Option<String>,
    /// One of the allowed budgets.
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub budget: Option<String>,
    /// One of the allowed project types.
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub project_type: Option<String>,
    /// Up to 5,000 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 5000))]
    pub message: Option<String>,
    /// One of the allowed sources.
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub source: Option<String>,
    /// A status name; `new` when absent.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<LeadStatus>))]
    pub status: Option<String>,
    /// Up to 10,000 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 10000))]
    pub notes: Option<String>,
    /// Up to 20 tags of 1–50 characters; duplicates are dropped.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::tags))]
    pub tags: Vec<String>,
    /// A JSON object of at most 16 KiB.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub custom: Option<Map<String, Value>>,
    /// Up to 20,000 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 20000))]
    pub raw_input: Option<String>,
    /// Whether an AI parser produced the fields.
    pub ai_parsed: bool,
    /// The user of the workspace to assign the lead to.
    pub owner_id: Option<UserId>,
}

/// A partial update. A field left `None` is unchanged; for clearable fields,
/// `Some(None)` (JSON `null`) clears it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "status": "contacted", "notes": "Called on Monday", "tags": ["vip"]
})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeadPatch {
    /// A new name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub name: Option<String>,
    /// Set or clear the email (a lead keeps at least one of email and phone).
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(format = Email, max_length = 254))]
    pub email: Option<Option<String>>,
    /// Set or clear the phone.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(format = "phone", max_length = 32))]
    pub phone: Option<Option<String>>,
    /// Set or clear the company.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub company: Option<Option<String>>,
    /// Set or clear the budget.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub budget: Option<Option<String>>,
    /// Set or clear the project type.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub project_type: Option<Option<String>>,
    /// Set or clear the message.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 5000))]
    pub message: Option<Option<String>>,
    /// Set or clear the source.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub source: Option<Option<String>>,
    /// A new status; a change writes a `status_change` activity.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<LeadStatus>))]
    pub status: Option<String>,
    /// Set or clear the notes.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 10000))]
    pub notes: Option<Option<String>>,
    /// Replace the tags.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::tags_patch))]
    pub tags: Option<Vec<String>>,
    /// Replace the custom fields.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub custom: Option<Map<String, Value>>,
    /// Assign the lead to a user of the workspace, or (`null`) to nobody.
    #[serde(deserialize_with = "nullable")]
    pub owner_id: Option<Option<UserId>>,
}

/// Missing field → `None` (through `#[serde(default)]`), `null` → `Some(None)`.
pub(crate) fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A new activity on a lead's timeline.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "kind": "call", "description": "Discussed scope and timeline"
})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewActivity {
    /// An activity kind name (`note`, `call`, …); `status_change` is written by crm
    /// itself and refused here.
    #[cfg_attr(feature = "openapi", schema(required = true, schema_with = crate::openapi::activity_kind))]
    pub kind: String,
    /// Up to 5,000 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 5000))]
    pub description: Option<String>,
}

/// What [`crate::Leads::capture`] did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Captured {
    /// The lead as it is now.
    pub lead: Lead,
    /// `true` when a new lead was made, `false` when the lead existed (a form capture
    /// left it unchanged; an inbound capture filled its blanks).
    pub created: bool,
}

/// A field leads can be sorted by. Ties are broken by id, in the same direction.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortField {
    /// Creation time (the default).
    #[default]
    CreatedAt,
    /// Last change.
    UpdatedAt,
    /// Name, by bytes (so `Zoe` comes before `adam`), the same on every backend.
    Name,
    /// Status name, alphabetically.
    Status,
}

impl SortField {
    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Name => "name",
            Self::Status => "status",
        }
    }
}

/// Sort direction.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Smallest first.
    Asc,
    /// Largest (newest) first (the default).
    #[default]
    Desc,
}

/// Which leads a listing shows by their archived state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Archived {
    /// The leads that are not archived (the default).
    #[default]
    #[serde(rename = "false")]
    Hide,
    /// The archived leads only.
    #[serde(rename = "true")]
    Only,
    /// Both.
    #[serde(rename = "any")]
    Include,
}

/// Filters, sort and page of a lead listing. Every filter narrows the result (AND).
#[derive(Debug, Clone, Default)]
pub struct LeadQuery {
    /// Only these statuses (any of them); empty = all. Status names, checked.
    pub status: Vec<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only leads carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only leads created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only leads created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Free text: each word must prefix-match a word of the name, email, company,
    /// message or notes. Words are runs of letters and digits; up to 8 are used.
    pub q: Option<String>,
    /// Sort field.
    pub sort: SortField,
    /// Sort direction.
    pub order: SortOrder,
    /// Page size, 1–100; 20 when absent.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, with the same filters and sort.
    pub cursor: Option<String>,
    /// Also count every match (one more query; leave off when not shown).
    pub include_total: bool,
    /// Archived leads: hidden (the default), only them, or both.
    pub archived: Archived,
    /// Only leads assigned to this user.
    pub owner_id: Option<UserId>,
}

/// One page of leads.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadPage {
    /// The leads on this page.
    pub items: Vec<Lead>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Every match across all pages, when `include_total` was asked for.
    pub total: Option<u64>,
}

/// Whether a message came from the lead or went to them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageDirection {
    /// From the lead.
    Inbound,
    /// To the lead.
    Outbound,
}

/// How far a sent message got, in order; `failed` ends it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// The provider took it.
    Accepted,
    /// The provider sent it.
    Sent,
    /// It reached the lead's device.
    Delivered,
    /// The lead read it.
    Read,
    /// It could not be delivered (see `error`).
    Failed,
}

impl MessageStatus {
    /// The status a provider names (`sent`, `delivered`, `read`, `failed`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Self::Accepted),
            "sent" => Some(Self::Sent),
            "delivered" => Some(Self::Delivered),
            "read" => Some(Self::Read),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// What a `message` activity records about its message.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MessageInfo {
    /// The provider's channel, e.g. `whatsapp`.
    pub channel: String,
    /// Inbound or outbound.
    pub direction: Option<MessageDirection>,
    /// The provider's id of the message (WhatsApp's `wamid…`).
    pub provider_message_id: Option<String>,
    /// `text`, `template`, `image`, `document`, `audio`, `video`, `sticker` or
    /// `location`. The text or caption is the activity's description.
    #[serde(rename = "type")]
    pub kind: String,
    /// The media's MIME type.
    pub mime_type: Option<String>,
    /// The provider's media id (fetch the file with the workspace's token).
    pub media_id: Option<String>,
    /// A document's file name.
    pub filename: Option<String>,
    /// A location's latitude.
    pub latitude: Option<f64>,
    /// A location's longitude.
    pub longitude: Option<f64>,
    /// When the provider says it was sent (for one received: when the lead wrote).
    pub sent_at: Option<DateTime<Utc>>,
    /// For a message sent: how far it got.
    pub status: Option<MessageStatus>,
    /// When the status was reported.
    pub status_at: Option<DateTime<Utc>>,
    /// Why it failed, in the provider's words.
    pub error: Option<String>,
    /// The file of a media message received, once crm fetched it from the provider
    /// and stored it as an attachment of the lead (see [`crate::attachments`]).
    pub attachment_id: Option<crate::ids::AttachmentId>,
}

impl MessageInfo {
    /// Whether this is a message received with a file crm fetches and stores as an
    /// attachment: an image, a document, audio or a video, with a media id, not yet
    /// fetched. Stickers are left alone.
    pub(crate) fn has_media_to_fetch(&self) -> bool {
        self.direction == Some(MessageDirection::Inbound)
            && self.media_id.as_deref().is_some_and(|m| !m.is_empty())
            && self.attachment_id.is_none()
            && matches!(self.kind.as_str(), "image" | "document" | "audio" | "video")
    }
}

/// A template message: a name the provider approved, its language, and the values
/// of its body's placeholders in order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplate {
    /// The template's name (lower-case letters, digits and `_`).
    #[cfg_attr(feature = "openapi", schema(example = "appointment_reminder"))]
    pub name: String,
    /// Its language code, e.g. `en_US`.
    #[cfg_attr(feature = "openapi", schema(example = "en_US"))]
    pub language: String,
    /// The values of `{{1}}`, `{{2}}`, … (at most 20, each at most 1,024 characters).
    #[serde(default)]
    pub parameters: Vec<String>,
}

/// A message to send: exactly one of `text` and `template`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"text": "Hi Ana, when suits you for a call?"})))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// Free text (1–4,096 characters): only within 24 hours of the lead's last
    /// message on the channel.
    pub text: Option<String>,
    /// A template, which may go at any time.
    pub template: Option<MessageTemplate>,
}
