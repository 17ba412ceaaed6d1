//! The contact and organization services' public data: what goes in (raw, as an
//! API sends it) and what comes out (typed, valid).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{ContactId, OrganizationId, UserId, WorkspaceId};
use crate::leads::nullable;
use crate::leads::{Email, Lead, Phone, SortField, SortOrder};

/// A contact (a person) as stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    /// Its id (UUIDv7).
    pub id: ContactId,
    /// The workspace it belongs to.
    pub workspace_id: WorkspaceId,
    /// First (given) name.
    pub first_name: String,
    /// Last (family) name.
    pub last_name: Option<String>,
    /// First and last name, as shown, sorted by and searched.
    pub name: String,
    /// Email addresses, the first the main one; each belongs to one contact of the
    /// workspace (case-insensitively).
    pub emails: Vec<Email>,
    /// Phones in E.164, the first the main one; each belongs to one contact.
    pub phones: Vec<Phone>,
    /// Job title.
    pub title: Option<String>,
    /// Postal address, as one text.
    pub address: Option<String>,
    /// Social links by network (`linkedin`, `x`, …): `https` URLs.
    pub social: BTreeMap<String, String>,
    /// The organization the person belongs to.
    pub organization_id: Option<OrganizationId>,
    /// The user of the workspace the contact is assigned to.
    pub owner_id: Option<UserId>,
    /// Internal notes.
    pub notes: Option<String>,
    /// Tags, unique, in the order given.
    pub tags: Vec<String>,
    /// Custom fields (a JSON object).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub custom: Map<String, Value>,
    /// When someone last got in touch with the person (set by the caller).
    pub last_contacted_at: Option<DateTime<Utc>>,
    /// When it was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When it last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

/// The input of a new contact. Text is trimmed and an empty optional text counts as
/// absent; `first_name` is required.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "first_name": "Ana", "last_name": "López", "emails": ["ana@acme.example"],
    "phones": ["+34 600 123 456"], "title": "CTO",
    "social": {"linkedin": "https://www.linkedin.com/in/ana"}
})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewContact {
    /// Required, 1–100 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub first_name: String,
    /// Up to 100 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 100))]
    pub last_name: Option<String>,
    /// Up to 10 email addresses.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::emails))]
    pub emails: Vec<String>,
    /// Up to 10 phones with country code (or national, when the `Crm` has a default).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::phones))]
    pub phones: Vec<String>,
    /// Up to 200 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub title: Option<String>,
    /// Up to 500 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub address: Option<String>,
    /// Up to 10 links: a network name (lower-case letters, digits, `_`, 1–32) to an
    /// `https` URL of up to 500 characters.
    pub social: BTreeMap<String, String>,
    /// An organization of the workspace.
    pub organization_id: Option<OrganizationId>,
    /// A user of the workspace to assign the contact to.
    pub owner_id: Option<UserId>,
    /// Up to 10,000 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 10000))]
    pub notes: Option<String>,
    /// Up to 20 tags of 1–50 characters; duplicates are dropped.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::tags))]
    pub tags: Vec<String>,
    /// A JSON object of at most 16 KiB.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub custom: Option<Map<String, Value>>,
    /// When someone last got in touch with the person.
    pub last_contacted_at: Option<DateTime<Utc>>,
}

/// A partial update of a contact. A field left `None` is unchanged; for clearable
/// fields `Some(None)` (JSON `null`) clears it; lists and maps are replaced whole.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactPatch {
    /// A new first name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub first_name: Option<String>,
    /// Set or clear the last name.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 100))]
    pub last_name: Option<Option<String>>,
    /// Replace the emails.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::emails_patch))]
    pub emails: Option<Vec<String>>,
    /// Replace the phones.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::phones_patch))]
    pub phones: Option<Vec<String>>,
    /// Set or clear the title.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub title: Option<Option<String>>,
    /// Set or clear the address.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub address: Option<Option<String>>,
    /// Replace the social links.
    pub social: Option<BTreeMap<String, String>>,
    /// Link to an organization of the workspace, or (`null`) to none.
    #[serde(deserialize_with = "nullable")]
    pub organization_id: Option<Option<OrganizationId>>,
    /// Assign to a user of the workspace, or (`null`) to nobody.
    #[serde(deserialize_with = "nullable")]
    pub owner_id: Option<Option<UserId>>,
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
    /// Set or clear when someone last got in touch.
    #[serde(deserialize_with = "nullable")]
    pub last_contacted_at: Option<Option<DateTime<Utc>>>,
}

/// Filters, sort and page of a contact listing. Every filter narrows (AND).
#[derive(Debug, Clone, Default)]
pub struct ContactQuery {
    /// Free text: each word must prefix-match a word of the name, emails, title or
    /// notes. Up to 8 words are used.
    pub q: Option<String>,
    /// Only contacts assigned to this user.
    pub owner_id: Option<UserId>,
    /// Only contacts of this organization.
    pub organization_id: Option<OrganizationId>,
    /// Only contacts carrying every one of these tags.
    pub tags: Vec<String>,
    /// Sort field: `created_at`, `updated_at` or `name` (`status` is refused).
    pub sort: SortField,
    /// Sort direction.
    pub order: SortOrder,
    /// Page size, 1–100; 20 when absent.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, with the same filters and sort.
    pub cursor: Option<String>,
    /// Also count every match.
    pub include_total: bool,
}

/// One page of contacts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactPage {
    /// The contacts on this page.
    pub items: Vec<Contact>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Every match across all pages, when `include_total` was asked for.
    pub total: Option<u64>,
}

/// An organization (a company) as stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    /// Its id (UUIDv7).
    pub id: OrganizationId,
    /// The workspace it belongs to.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// Its web domain (`acme.example`), lower case; unique in the workspace.
    pub domain: Option<String>,
    /// Industry, as the workspace names them.
    pub industry: Option<String>,
    /// Size, as the workspace writes it (`11-50`, `enterprise`, …).
    pub size: Option<String>,
    /// Postal address, as one text.
    pub address: Option<String>,
    /// The user of the workspace it is assigned to.
    pub owner_id: Option<UserId>,
    /// When it was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When it last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

/// The input of a new organization; `name` is required.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "name": "Acme SL", "domain": "acme.example", "industry": "software", "size": "11-50"
})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewOrganization {
    /// Required, 1–200 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub name: String,
    /// A domain name (`acme.example`; a URL is cut to its host, `www.` dropped);
    /// ASCII (punycode for international names), unique in the workspace.
    #[cfg_attr(feature = "openapi", schema(format = Hostname, max_length = 253))]
    pub domain: Option<String>,
    /// Up to 100 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 100))]
    pub industry: Option<String>,
    /// Up to 64 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub size: Option<String>,
    /// Up to 500 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub address: Option<String>,
    /// A user of the workspace to assign it to.
    pub owner_id: Option<UserId>,
}

/// A partial update of an organization (`null` clears a clearable field).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrganizationPatch {
    /// A new name.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub name: Option<String>,
    /// Set or clear the domain.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(format = Hostname, max_length = 253))]
    pub domain: Option<Option<String>>,
    /// Set or clear the industry.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 100))]
    pub industry: Option<Option<String>>,
    /// Set or clear the size.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub size: Option<Option<String>>,
    /// Set or clear the address.
    #[serde(deserialize_with = "nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub address: Option<Option<String>>,
    /// Assign to a user of the workspace, or (`null`) to nobody.
    #[serde(deserialize_with = "nullable")]
    pub owner_id: Option<Option<UserId>>,
}

/// Filters, sort and page of an organization listing. Every filter narrows (AND).
#[derive(Debug, Clone, Default)]
pub struct OrganizationQuery {
    /// Free text: each word must prefix-match a word of the name, domain or industry.
    pub q: Option<String>,
    /// Only organizations assigned to this user.
    pub owner_id: Option<UserId>,
    /// Sort field: `created_at`, `updated_at` or `name` (`status` is refused).
    pub sort: SortField,
    /// Sort direction.
    pub order: SortOrder,
    /// Page size, 1–100; 20 when absent.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, with the same filters and sort.
    pub cursor: Option<String>,
    /// Also count every match.
    pub include_total: bool,
}

/// One page of organizations.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrganizationPage {
    /// The organizations on this page.
    pub items: Vec<Organization>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Every match across all pages, when `include_total` was asked for.
    pub total: Option<u64>,
}

/// How [`crate::Leads::convert`] converts a lead.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvertInput {
    /// `false` converts the person only. Otherwise (the default) the contact, when
    /// it has no organization, gets the one with the lead's company-mail domain,
    /// else the one named like the lead's company, else a new one named after the
    /// company; a lead with neither a company nor a known domain gets none.
    pub organization: Option<bool>,
}

/// What [`crate::Leads::convert`] did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Converted {
    /// The lead as it is now, linked to its contact (`contact_id`).
    pub lead: Lead,
    /// The contact the lead is.
    pub contact: Contact,
    /// The contact's organization, if it has one.
    pub organization: Option<Organization>,
    /// `true` when the contact was made by this conversion, `false` when an
    /// existing one (the lead's earlier conversion, or a contact with its email or
    /// phone) was reused.
    pub contact_created: bool,
    /// `true` when the organization was made by this conversion.
    pub organization_created: bool,
}
