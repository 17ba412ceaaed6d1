//! Contacts (people) and organizations (the companies they belong to), the records
//! a lead becomes once it is a customer ([`crate::Leads::convert`]).
//!
//! Decisions where the design is silent, taken as a user of Twenty, EspoCRM or
//! Frappe CRM would expect:
//! - **Names.** A contact has a `first_name` (required) and a `last_name`; `name`
//!   is the two joined, shown, sorted by (by bytes, as leads) and searched. A lead's
//!   single name is split at its first space when converted (`Ana López García` →
//!   `Ana` / `López García`).
//! - **Emails and phones.** A contact has up to ten of each, the first the main
//!   one. Each belongs to one contact of the workspace (emails case-insensitively):
//!   another contact with one of them is a `Conflict` naming it. A contact may have
//!   neither (a person met at a fair).
//! - **Organizations.** Many contacts to one organization (`organization_id`,
//!   checked to be of the workspace). An organization's `domain` is stored as a
//!   lower-case host without `www.` and is unique in the workspace. Deleting an
//!   organization keeps its contacts, unlinked; deleting a contact keeps the leads
//!   converted into it, unlinked.
//! - **Owner.** Leads, contacts and organizations have an `owner_id`: a user of
//!   the same workspace (anything else is a validation error on `owner_id`), or
//!   none. Deleting the user leaves the records without an owner. Listings filter
//!   by it.
//! - **Listing.** As leads: keyset cursors bound to the sort and filters, `q`
//!   prefix-matching words (contacts: name, emails, title, notes; organizations:
//!   name, domain, industry), sorting by `created_at`, `updated_at` or `name`.
//! - **Events.** `contact.created`, `contact.updated` (with `changed`),
//!   `contact.deleted`, and the same for `organization.*`; a change that changes
//!   nothing writes nothing.

pub mod model;
pub(crate) mod parse;

pub use model::{
    Contact, ContactPage, ContactPatch, ContactQuery, ConvertInput, Converted, NewContact,
    NewOrganization, Organization, OrganizationPage, OrganizationPatch, OrganizationQuery,
};
pub use parse::{CONTACT_POINTS_MAX, PERSON_NAME_MAX, SOCIAL_MAX};

use crate::ids::{ContactId, OrganizationId};
use crate::leads::cursor::{Cursor, Key};
use crate::leads::{SortField, SortOrder};
use crate::store::{self, Ctx};
use crate::{Crm, Result, WorkspaceId};

/// The cursor of the page after the last of `items`, when one more than `limit`
/// were read (the extra one is dropped).
fn next_cursor<T>(
    crm: &Crm,
    items: &mut Vec<T>,
    limit: u32,
    (sort, order): (SortField, SortOrder),
    fingerprint: &str,
    key: impl Fn(&T) -> (Key, uuid::Uuid),
) -> Option<String> {
    if items.len() <= limit as usize {
        return None;
    }
    items.truncate(limit as usize);
    items.last().map(|last| {
        let (k, id) = key(last);
        Cursor::new(sort, order, k, id, fingerprint).encode(crm.cursor_key())
    })
}

fn sort_key(
    sort: SortField,
    created: chrono::DateTime<chrono::Utc>,
    updated: chrono::DateTime<chrono::Utc>,
    name: &str,
) -> Key {
    match sort {
        SortField::UpdatedAt => Key::Time(updated.timestamp_micros()),
        SortField::Name | SortField::Status => Key::Text(name.to_owned()),
        SortField::CreatedAt => Key::Time(created.timestamp_micros()),
    }
}

fn decode_cursor(
    crm: &Crm,
    cursor: Option<&str>,
    (sort, order): (SortField, SortOrder),
    fingerprint: &str,
) -> Result<Option<Cursor>> {
    cursor
        .map(|c| Cursor::decode(c, sort, order, fingerprint, crm.cursor_key()))
        .transpose()
}

fn ctx(crm: &Crm, ws: WorkspaceId) -> Ctx<'static> {
    Ctx {
        ws,
        now: crm.now(),
        actor: None,
    }
}

/// The contact service of one workspace; from [`crate::Workspace::contacts`].
#[derive(Clone, Debug)]
pub struct Contacts {
    crm: Crm,
    ws: WorkspaceId,
}

impl Contacts {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self { crm, ws }
    }

    /// Creates a contact; `contact.created`. Fails with `Validation` listing every
    /// bad field (an `owner_id` or `organization_id` not of this workspace among
    /// them), or `Conflict` naming the contact that has one of its emails or phones.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn create(&self, input: NewContact) -> Result<Contact> {
        let ctx = ctx(&self.crm, self.ws);
        let contact = parse::new_contact(input, self.ws, ctx.now, self.crm.rules())?;
        let r = crate::leads::retry_race(|| {
            store::contacts::create_contact(self.crm.pool(), &ctx, contact.clone())
        })
        .await;
        self.crm.written(r)
    }

    /// A contact. `NotFound` when the workspace has none with this id.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, contact_id = %id))]
    pub async fn get(&self, id: ContactId) -> Result<Contact> {
        store::contacts::get_contact(self.crm.pool(), self.ws, id).await
    }

    /// Changes the fields the patch sets (lists and `social` are replaced whole);
    /// `contact.updated` names them. A patch that changes nothing writes nothing.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, contact_id = %id))]
    pub async fn update(&self, id: ContactId, patch: ContactPatch) -> Result<Contact> {
        let change = parse::contact_patch(patch, self.crm.rules())?;
        let ctx = ctx(&self.crm, self.ws);
        let r = crate::leads::retry_race(|| {
            store::contacts::update_contact(self.crm.pool(), &ctx, id, change.clone())
        })
        .await;
        self.crm.written(r)
    }

    /// Deletes the contact; `contact.deleted` carries its last state. Leads converted
    /// into it keep their timeline and lose the link.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, contact_id = %id))]
    pub async fn delete(&self, id: ContactId) -> Result<()> {
        let ctx = ctx(&self.crm, self.ws);
        let r = store::contacts::delete_contact(self.crm.pool(), &ctx, id).await;
        let files = self.crm.written(r)?;
        self.crm.delete_bytes(files).await;
        Ok(())
    }

    /// One page of contacts matching `query`, keyset-paged as leads are.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn list(&self, query: &ContactQuery) -> Result<ContactPage> {
        let q = parse::contact_query(query)?;
        let sort = (query.sort, query.order);
        let fingerprint = q.fingerprint("contacts");
        let after = decode_cursor(&self.crm, query.cursor.as_deref(), sort, &fingerprint)?;
        let (mut items, total) = store::contacts::list_contacts(
            self.crm.pool(),
            self.ws,
            &q,
            sort,
            after,
            query.include_total,
        )
        .await?;
        let next_cursor = next_cursor(&self.crm, &mut items, q.limit, sort, &fingerprint, |c| {
            (
                sort_key(query.sort, c.created_at, c.updated_at, &c.name),
                c.id.0,
            )
        });
        Ok(ContactPage {
            items,
            next_cursor,
            total,
        })
    }
}

/// The organization service of one workspace; from
/// [`crate::Workspace::organizations`].
#[derive(Clone, Debug)]
pub struct Organizations {
    crm: Crm,
    ws: WorkspaceId,
}

impl Organizations {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self { crm, ws }
    }

    /// Creates an organization; `organization.created`. Fails with `Validation`
    /// (an `owner_id` not of this workspace among the fields) or `Conflict` naming
    /// the organization that has its domain.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn create(&self, input: NewOrganization) -> Result<Organization> {
        let ctx = ctx(&self.crm, self.ws);
        let o = parse::new_organization(input, self.ws, ctx.now)?;
        let r = crate::leads::retry_race(|| {
            store::contacts::create_organization(self.crm.pool(), &ctx, o.clone())
        })
        .await;
        self.crm.written(r)
    }

    /// An organization. `NotFound` when the workspace has none with this id.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, organization_id = %id))]
    pub async fn get(&self, id: OrganizationId) -> Result<Organization> {
        store::contacts::get_organization(self.crm.pool(), self.ws, id).await
    }

    /// Changes the fields the patch sets; `organization.updated` names them.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, organization_id = %id))]
    pub async fn update(
        &self,
        id: OrganizationId,
        patch: OrganizationPatch,
    ) -> Result<Organization> {
        let change = parse::organization_patch(patch)?;
        let ctx = ctx(&self.crm, self.ws);
        let r = crate::leads::retry_race(|| {
            store::contacts::update_organization(self.crm.pool(), &ctx, id, change.clone())
        })
        .await;
        self.crm.written(r)
    }

    /// Deletes the organization; its contacts stay, unlinked.
    /// `organization.deleted` carries its last state.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, organization_id = %id))]
    pub async fn delete(&self, id: OrganizationId) -> Result<()> {
        let ctx = ctx(&self.crm, self.ws);
        let r = store::contacts::delete_organization(self.crm.pool(), &ctx, id).await;
        self.crm.written(r)
    }

    /// One page of organizations matching `query`, keyset-paged as leads are.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn list(&self, query: &OrganizationQuery) -> Result<OrganizationPage> {
        let q = parse::organization_query(query)?;
        let sort = (query.sort, query.order);
        let fingerprint = q.fingerprint("organizations");
        let after = decode_cursor(&self.crm, query.cursor.as_deref(), sort, &fingerprint)?;
        let (mut items, total) = store::contacts::list_organizations(
            self.crm.pool(),
            self.ws,
            &q,
            sort,
            after,
            query.include_total,
        )
        .await?;
        let next_cursor = next_cursor(&self.crm, &mut items, q.limit, sort, &fingerprint, |o| {
            (
                sort_key(query.sort, o.created_at, o.updated_at, &o.name),
                o.id.0,
            )
        });
        Ok(OrganizationPage {
            items,
            next_cursor,
            total,
        })
    }
}
