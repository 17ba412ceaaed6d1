//! The attachment service's public data.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::{AttachmentId, ContactId, LeadId};
use crate::storage::ByteStream;

/// What a file is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// A lead (its timeline records each file added and removed).
    Lead(LeadId),
    /// A contact.
    Contact(ContactId),
}

impl From<LeadId> for Parent {
    fn from(id: LeadId) -> Self {
        Self::Lead(id)
    }
}

impl From<ContactId> for Parent {
    fn from(id: ContactId) -> Self {
        Self::Contact(id)
    }
}

/// A stored file's metadata.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// Its id (UUIDv7).
    pub id: AttachmentId,
    /// The lead it is attached to (or `contact_id`).
    pub lead_id: Option<LeadId>,
    /// The contact it is attached to (or `lead_id`).
    pub contact_id: Option<ContactId>,
    /// The file name as given, without any directory part (1–255 characters).
    pub name: String,
    /// Its size in bytes (at least 1).
    pub size: u64,
    /// Its type, sniffed from its bytes (never taken from the name or the upload's
    /// header), e.g. `application/pdf`.
    pub content_type: String,
    /// The SHA-256 of its bytes, in lower-case hex.
    pub sha256: String,
    /// Who uploaded it (`user:…`, `api_key:…`, `whatsapp`, …), when known.
    pub uploaded_by: Option<String>,
    /// When it was added (UTC).
    pub created_at: DateTime<Utc>,
}

/// A file's bytes, as they arrive from the storage, with its metadata.
pub struct Download {
    /// The file's metadata (name, size, type).
    pub attachment: Attachment,
    /// Its bytes.
    pub body: ByteStream,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("attachment", &self.attachment)
            .finish_non_exhaustive()
    }
}

/// A link anyone holding it can download one file from, until it expires.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedLink {
    /// The link: the storage's own (an S3 presigned URL), or crm's
    /// `/api/files?token=…` under [`AttachmentRules::link_base`] (without a base,
    /// a path from the router's root: put the mount path in front when the router
    /// is nested).
    pub url: String,
    /// When it stops working (UTC).
    pub expires_at: DateTime<Utc>,
}

/// What files a [`crate::Crm`] takes, and how its links look; see
/// [`crate::CrmBuilder::attachment_rules`]. The total a workspace may hold is
/// [`crate::Quotas::attachment_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRules {
    /// The largest file, in bytes (default 25 MiB). A larger one is
    /// [`crate::Error::TooLarge`] (413 over HTTP, refused before the body is read
    /// whole).
    pub max_file_size: u64,
    /// The types files may be, as sniffed from their bytes (default
    /// [`DEFAULT_TYPES`]). Another is [`crate::Error::UnsupportedType`] naming it.
    pub allowed_types: Vec<String>,
    /// Where crm's own signed links point: the address the router is reached at,
    /// with its mount path (`https://crm.example.com`, `https://app.example.com/crm`).
    /// `None`: links are paths from the router's root (`/api/files?token=…`).
    pub link_base: Option<String>,
}

/// The types files may be by default: PDF, images, office documents, plain text
/// and CSV, and the audio and video formats messengers send.
pub const DEFAULT_TYPES: &[&str] = &[
    "application/pdf",
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/heif",
    "text/plain",
    "text/csv",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "audio/ogg",
    "audio/opus",
    "audio/mpeg",
    "audio/aac",
    "audio/amr",
    "audio/m4a",
    "video/mp4",
    "video/quicktime",
];

impl Default for AttachmentRules {
    fn default() -> Self {
        Self {
            max_file_size: 25 * 1024 * 1024,
            allowed_types: DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            link_base: None,
        }
    }
}
