//! Contacts, organizations and the conversion of a lead: each row, its keys (a
//! contact's emails and phones in `crm_contact_keys`) and its outbox events commit
//! together or not at all.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sqlx::types::Json;
use sqlx::FromRow;

use super::leads::push_page;
use super::sql::{query, query_as, Dialect, Exec, Sql, Tx};
use super::{corrupt, outbox, Ctx, Pool, Ts};
use crate::attachments::model::Parent;
use crate::contacts::model::{Contact, Converted, Organization};
use crate::contacts::parse::{self, ContactChange, Listing, OrganizationChange};
use crate::events::{Event, EventType};
use crate::ids::{ContactId, LeadId, OrganizationId, UserId, WorkspaceId};
use crate::leads::cursor::Cursor;
use crate::leads::model::{SortField, SortOrder};
use crate::leads::values::{ActivityKind, Email, Phone};
use crate::{Error, Result};

const CONTACT_COLUMNS: &str = "c.id, c.workspace_id, c.first_name, c.last_name, c.name, \
    c.emails, c.phones, c.title, c.address, c.social, c.organization_id, c.owner_id, c.notes, \
    c.tags, c.custom, c.last_contacted_at, c.created_at, c.updated_at";

const ORGANIZATION_COLUMNS: &str = "o.id, o.workspace_id, o.name, o.domain, o.industry, o.size, \
    o.address, o.owner_id, o.created_at, o.updated_at";

#[derive(FromRow)]
pub(crate) struct ContactRow {
    id: ContactId,
    workspace_id: WorkspaceId,
    first_name: String,
    last_name: Option<String>,
    name: String,
    emails: Json<Vec<String>>,
    phones: Json<Vec<String>>,
    title: Option<String>,
    address: Option<String>,
    social: Json<BTreeMap<String, String>>,
    organization_id: Option<OrganizationId>,
    owner_id: Option<UserId>,
    notes: Option<String>,
    tags: Json<Vec<String>>,
    custom: Json<Map<String, Value>>,
    last_contacted_at: Option<Ts>,
    created_at: Ts,
    updated_at: Ts,
}

impl ContactRow {
    fn into_contact(self) -> Result<Contact> {
        Ok(Contact {
            id: self.id,
            workspace_id: self.workspace_id,
            first_name: self.first_name,
            last_name: self.last_name,
            name: self.name,
            emails: self
                .emails
                .0
                .iter()
                .map(|e| Email::parse(e).map_err(|_| corrupt("email")))
                .collect::<Result<_>>()?,
            phones: self
                .phones
                .0
                .iter()
                .map(|p| Phone::parse(p).map_err(|_| corrupt("phone")))
                .collect::<Result<_>>()?,
            title: self.title,
            address: self.address,
            social: self.social.0,
            organization_id: self.organization_id,
            owner_id: self.owner_id,
            notes: self.notes,
            tags: self.tags.0,
            custom: self.custom.0,
            last_contacted_at: self.last_contacted_at.map(|t| t.0),
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct OrganizationRow {
    id: OrganizationId,
    workspace_id: WorkspaceId,
    name: String,
    domain: Option<String>,
    industry: Option<String>,
    size: Option<String>,
    address: Option<String>,
    owner_id: Option<UserId>,
    created_at: Ts,
    updated_at: Ts,
}

impl OrganizationRow {
    fn into_organization(self) -> Organization {
        Organization {
            id: self.id,
            workspace_id: self.workspace_id,
            name: self.name,
            domain: self.domain,
            industry: self.industry,
            size: self.size,
            address: self.address,
            owner_id: self.owner_id,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        }
    }
}

fn event(ctx: &Ctx<'_>, t: EventType, data: Value) -> Event {
    Event::new(ctx.ws, t, None, data, ctx.now)
}

/// Fails with a validation error on `owner_id` unless `owner` is a user of the
/// workspace: an owner is never a user of another tenant.
pub(crate) async fn check_owner(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    owner: Option<UserId>,
) -> Result<()> {
    let Some(owner) = owner else { return Ok(()) };
    let found: Option<(UserId,)> =
        query("SELECT id FROM crm_users WHERE workspace_id = $1 AND id = $2")
            .bind(ws)
            .bind(owner)
            .fetch_optional(conn)
            .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(Error::invalid(
            "owner_id",
            "is not a user of this workspace",
        )),
    }
}

/// Fails with a validation error on `organization_id` unless it is an organization
/// of the workspace.
async fn check_organization(
    tx: &mut Tx,
    ws: WorkspaceId,
    org: Option<OrganizationId>,
) -> Result<()> {
    let Some(org) = org else { return Ok(()) };
    let found: Option<(OrganizationId,)> =
        query("SELECT id FROM crm_organizations WHERE workspace_id = $1 AND id = $2")
            .bind(ws)
            .bind(org)
            .fetch_optional(&mut *tx)
            .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(Error::invalid(
            "organization_id",
            "is not an organization of this workspace",
        )),
    }
}

/// The `crm_contact_keys` key of an email (case-insensitive).
fn email_key(e: &Email) -> String {
    format!("email:{}", e.key())
}

/// The `crm_contact_keys` key of a phone.
fn phone_key(p: &Phone) -> String {
    format!("phone:{}", p.as_str())
}

fn contact_keys(c: &Contact) -> Vec<(String, &'static str)> {
    let emails = c.emails.iter().map(|e| (email_key(e), "emails"));
    let phones = c.phones.iter().map(|p| (phone_key(p), "phones"));
    emails.chain(phones).collect()
}

/// The contact holding each of these keys, if any.
async fn key_holders(
    tx: &mut Tx,
    ws: WorkspaceId,
    keys: &[String],
) -> Result<Vec<(String, ContactId)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = query("SELECT key, contact_id FROM crm_contact_keys WHERE workspace_id = ");
    sql.push_bind(ws).push(" AND key IN (");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push_bind(k.clone());
    }
    sql.push(")");
    sql.fetch_all(&mut *tx).await
}

/// Makes the contact's keys (its emails and phones) its own: a key another contact
/// holds is a `Conflict` naming that contact; keys it no longer has are let go.
async fn claim_keys(tx: &mut Tx, c: &Contact) -> Result<()> {
    let keys = contact_keys(c);
    // Inserted in one order whatever order the caller gave: two writers taking
    // the same keys in opposite orders would otherwise deadlock on Postgres.
    let mut names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    names.sort_unstable();
    let holders = key_holders(tx, c.workspace_id, &names).await?;
    for (key, field) in &keys {
        if let Some((_, other)) = holders.iter().find(|(k, id)| k == key && *id != c.id) {
            return Err(Error::Conflict {
                message: format!(
                    "a contact with this {} already exists",
                    if *field == "emails" { "email" } else { "phone" }
                ),
                field: Some(field),
                existing_id: Some(other.0),
            });
        }
    }
    let mut sql = query("DELETE FROM crm_contact_keys WHERE workspace_id = ");
    sql.push_bind(c.workspace_id)
        .push(" AND contact_id = ")
        .push_bind(c.id);
    for k in &names {
        sql.push(" AND key <> ").push_bind(k.clone());
    }
    sql.execute(&mut *tx).await?;
    for key in names {
        if holders.iter().any(|(k, _)| *k == key) {
            continue;
        }
        // A concurrent writer that took the key first makes this a unique
        // violation: a `Conflict` the service retries once, to name the holder.
        query("INSERT INTO crm_contact_keys (workspace_id, key, contact_id) VALUES ($1, $2, $3)")
            .bind(c.workspace_id)
            .bind(key)
            .bind(c.id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// A contact's row as both writes bind it: `$1` workspace, `$2` id, `$3`…`$17`
/// its fields (first name … last contacted, then `updated_at`). The insert adds
/// `created_at` as `$18`.
fn contact_row<'a>(sql: &'static str, c: &'a Contact) -> super::sql::Sql<'a> {
    query(sql)
        .bind(c.workspace_id)
        .bind(c.id)
        .bind(c.first_name.as_str())
        .bind(c.last_name.as_deref())
        .bind(c.name.as_str())
        .bind(Json(json!(c.emails)))
        .bind(Json(json!(c.phones)))
        .bind(c.title.as_deref())
        .bind(c.address.as_deref())
        .bind(Json(json!(c.social)))
        .bind(c.organization_id)
        .bind(c.owner_id)
        .bind(c.notes.as_deref())
        .bind(Json(json!(c.tags)))
        .bind(Json(Value::Object(c.custom.clone())))
        .bind(c.last_contacted_at.map(Ts))
        .bind(Ts(c.updated_at))
}

async fn insert_contact(tx: &mut Tx, c: &Contact) -> Result<()> {
    contact_row(
        "INSERT INTO crm_contacts (workspace_id, id, first_name, last_name, name, emails, \
         phones, title, address, social, organization_id, owner_id, notes, tags, custom, \
         last_contacted_at, updated_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        c,
    )
    .bind(Ts(c.created_at))
    .execute(&mut *tx)
    .await?;
    claim_keys(tx, c).await
}

async fn write_contact(tx: &mut Tx, c: &Contact) -> Result<()> {
    contact_row(
        "UPDATE crm_contacts SET first_name = $3, last_name = $4, name = $5, emails = $6, \
         phones = $7, title = $8, address = $9, social = $10, organization_id = $11, \
         owner_id = $12, notes = $13, tags = $14, custom = $15, last_contacted_at = $16, \
         updated_at = $17 WHERE workspace_id = $1 AND id = $2",
        c,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn fetch_contact(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    id: ContactId,
    lock: bool,
) -> Result<Contact> {
    let on = conn.on();
    let sql = format!(
        "SELECT {CONTACT_COLUMNS} FROM crm_contacts c WHERE c.workspace_id = $1 AND c.id = $2{}",
        if lock { on.dialect().for_update() } else { "" }
    );
    query_as::<ContactRow>(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(on)
        .await?
        .ok_or(Error::NotFound { entity: "contact" })?
        .into_contact()
}

async fn fetch_organization(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    id: OrganizationId,
    lock: bool,
) -> Result<Organization> {
    let on = conn.on();
    let sql = format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM crm_organizations o \
         WHERE o.workspace_id = $1 AND o.id = $2{}",
        if lock { on.dialect().for_update() } else { "" }
    );
    Ok(query_as::<OrganizationRow>(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(on)
        .await?
        .ok_or(Error::NotFound {
            entity: "organization",
        })?
        .into_organization())
}

pub(crate) async fn create_contact(pool: &Pool, ctx: &Ctx<'_>, c: Contact) -> Result<Contact> {
    let mut tx = pool.begin_write().await?;
    check_owner(&mut tx, ctx.ws, c.owner_id).await?;
    check_organization(&mut tx, ctx.ws, c.organization_id).await?;
    insert_contact(&mut tx, &c).await?;
    let data = json!({ "contact": c });
    outbox::insert_event(&mut tx, &event(ctx, EventType::ContactCreated, data)).await?;
    tx.commit().await?;
    Ok(c)
}

pub(crate) async fn get_contact(pool: &Pool, ws: WorkspaceId, id: ContactId) -> Result<Contact> {
    fetch_contact(pool, ws, id, false).await
}

pub(crate) async fn update_contact(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: ContactId,
    change: ContactChange,
) -> Result<Contact> {
    let mut tx = pool.begin_write().await?;
    let old = fetch_contact(&mut tx, ctx.ws, id, true).await?;
    if let Some(owner) = change.owner_id {
        check_owner(&mut tx, ctx.ws, owner).await?;
    }
    if let Some(org) = change.organization_id {
        check_organization(&mut tx, ctx.ws, org).await?;
    }
    let mut new = change.apply(&old);
    let changed = parse::contact_diff(&old, &new);
    if changed.is_empty() {
        return Ok(old);
    }
    new.updated_at = ctx.now;
    write_contact(&mut tx, &new).await?;
    if changed.contains(&"emails") || changed.contains(&"phones") {
        claim_keys(&mut tx, &new).await?;
    }
    let data = json!({ "contact": new, "changed": changed });
    outbox::insert_event(&mut tx, &event(ctx, EventType::ContactUpdated, data)).await?;
    tx.commit().await?;
    Ok(new)
}

/// Deletes the contact (its keys and its files' rows with it); leads converted
/// into it keep their timeline and lose the link. The storage keys of its files,
/// for the caller to delete once this commits.
pub(crate) async fn delete_contact(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: ContactId,
) -> Result<Vec<String>> {
    let mut tx = pool.begin_write().await?;
    let old = fetch_contact(&mut tx, ctx.ws, id, true).await?;
    let files = super::attachments::keys_of(&mut tx, ctx.ws, Parent::Contact(id)).await?;
    query("DELETE FROM crm_contacts WHERE workspace_id = $1 AND id = $2")
        .bind(ctx.ws)
        .bind(id)
        .execute(&mut tx)
        .await?;
    let data = json!({ "contact": old });
    outbox::insert_event(&mut tx, &event(ctx, EventType::ContactDeleted, data)).await?;
    tx.commit().await?;
    Ok(files)
}

fn push_contact_filters(d: Dialect, sql: &mut Sql<'_>, ws: WorkspaceId, q: &Listing) {
    sql.push(" WHERE c.workspace_id = ").push_bind(ws);
    if let Some(owner) = q.owner_id {
        sql.push(" AND c.owner_id = ").push_bind(owner);
    }
    if let Some(org) = q.organization_id {
        sql.push(" AND c.organization_id = ").push_bind(org);
    }
    for tag in &q.tags {
        sql.push(" AND ");
        d.push_has_tag(sql, "c", tag.clone());
    }
    if !q.terms.is_empty() {
        sql.push(" AND ");
        d.push_search(sql, "c", "crm_contacts", &q.terms);
    }
}

fn push_organization_filters(d: Dialect, sql: &mut Sql<'_>, ws: WorkspaceId, q: &Listing) {
    sql.push(" WHERE o.workspace_id = ").push_bind(ws);
    if let Some(owner) = q.owner_id {
        sql.push(" AND o.owner_id = ").push_bind(owner);
    }
    if !q.terms.is_empty() {
        sql.push(" AND ");
        d.push_search(sql, "o", "crm_organizations", &q.terms);
    }
}

/// One page of contacts (`limit + 1` read) and, when asked, the total.
pub(crate) async fn list_contacts(
    pool: &Pool,
    ws: WorkspaceId,
    q: &Listing,
    (sort, order): (SortField, SortOrder),
    after: Option<Cursor>,
    include_total: bool,
) -> Result<(Vec<Contact>, Option<u64>)> {
    let mut sql = query(format!("SELECT {CONTACT_COLUMNS} FROM crm_contacts c"));
    push_contact_filters(pool.dialect(), &mut sql, ws, q);
    push_page(&mut sql, "c", sort, order, after, q.limit)?;
    let rows: Vec<ContactRow> = sql.fetch_all(pool).await?;
    let items = rows
        .into_iter()
        .map(ContactRow::into_contact)
        .collect::<Result<Vec<_>>>()?;
    let total = if include_total {
        let mut sql = query("SELECT COUNT(*) FROM crm_contacts c");
        push_contact_filters(pool.dialect(), &mut sql, ws, q);
        Some(super::count(pool, sql).await?)
    } else {
        None
    };
    Ok((items, total))
}

/// One page of organizations (`limit + 1` read) and, when asked, the total.
pub(crate) async fn list_organizations(
    pool: &Pool,
    ws: WorkspaceId,
    q: &Listing,
    (sort, order): (SortField, SortOrder),
    after: Option<Cursor>,
    include_total: bool,
) -> Result<(Vec<Organization>, Option<u64>)> {
    let mut sql = query(format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM crm_organizations o"
    ));
    push_organization_filters(pool.dialect(), &mut sql, ws, q);
    push_page(&mut sql, "o", sort, order, after, q.limit)?;
    let rows: Vec<OrganizationRow> = sql.fetch_all(pool).await?;
    let items = rows
        .into_iter()
        .map(OrganizationRow::into_organization)
        .collect();
    let total = if include_total {
        let mut sql = query("SELECT COUNT(*) FROM crm_organizations o");
        push_organization_filters(pool.dialect(), &mut sql, ws, q);
        Some(super::count(pool, sql).await?)
    } else {
        None
    };
    Ok((items, total))
}

/// Fails with `Conflict` naming the organization that already has this domain.
async fn check_domain(tx: &mut Tx, o: &Organization) -> Result<()> {
    let Some(domain) = &o.domain else {
        return Ok(());
    };
    let other = by_domain(tx, o.workspace_id, domain).await?;
    match other {
        Some(other) if other.id != o.id => Err(Error::Conflict {
            message: "an organization with this domain already exists".into(),
            field: Some("domain"),
            existing_id: Some(other.id.0),
        }),
        _ => Ok(()),
    }
}

async fn by_domain(tx: &mut Tx, ws: WorkspaceId, domain: &str) -> Result<Option<Organization>> {
    let sql = format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM crm_organizations o \
         WHERE o.workspace_id = $1 AND o.domain = $2"
    );
    Ok(query_as::<OrganizationRow>(&sql)
        .bind(ws)
        .bind(domain)
        .fetch_optional(&mut *tx)
        .await?
        .map(OrganizationRow::into_organization))
}

async fn insert_organization(tx: &mut Tx, o: &Organization) -> Result<()> {
    check_domain(tx, o).await?;
    query(
        "INSERT INTO crm_organizations (id, workspace_id, name, name_key, domain, industry, \
         size, address, owner_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(o.id)
    .bind(o.workspace_id)
    .bind(o.name.as_str())
    .bind(parse::name_key(&o.name))
    .bind(o.domain.as_deref())
    .bind(o.industry.as_deref())
    .bind(o.size.as_deref())
    .bind(o.address.as_deref())
    .bind(o.owner_id)
    .bind(Ts(o.created_at))
    .bind(Ts(o.updated_at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(crate) async fn create_organization(
    pool: &Pool,
    ctx: &Ctx<'_>,
    o: Organization,
) -> Result<Organization> {
    let mut tx = pool.begin_write().await?;
    check_owner(&mut tx, ctx.ws, o.owner_id).await?;
    insert_organization(&mut tx, &o).await?;
    let data = json!({ "organization": o });
    outbox::insert_event(&mut tx, &event(ctx, EventType::OrganizationCreated, data)).await?;
    tx.commit().await?;
    Ok(o)
}

pub(crate) async fn get_organization(
    pool: &Pool,
    ws: WorkspaceId,
    id: OrganizationId,
) -> Result<Organization> {
    fetch_organization(pool, ws, id, false).await
}

pub(crate) async fn update_organization(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: OrganizationId,
    change: OrganizationChange,
) -> Result<Organization> {
    let mut tx = pool.begin_write().await?;
    let old = fetch_organization(&mut tx, ctx.ws, id, true).await?;
    if let Some(owner) = change.owner_id {
        check_owner(&mut tx, ctx.ws, owner).await?;
    }
    let mut new = change.apply(&old);
    let changed = parse::organization_diff(&old, &new);
    if changed.is_empty() {
        return Ok(old);
    }
    if changed.contains(&"domain") {
        check_domain(&mut tx, &new).await?;
    }
    new.updated_at = ctx.now;
    query(
        "UPDATE crm_organizations SET name = $3, name_key = $4, domain = $5, industry = $6, \
         size = $7, address = $8, owner_id = $9, updated_at = $10 \
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(ctx.ws)
    .bind(id)
    .bind(new.name.as_str())
    .bind(parse::name_key(&new.name))
    .bind(new.domain.as_deref())
    .bind(new.industry.as_deref())
    .bind(new.size.as_deref())
    .bind(new.address.as_deref())
    .bind(new.owner_id)
    .bind(Ts(new.updated_at))
    .execute(&mut tx)
    .await?;
    let data = json!({ "organization": new, "changed": changed });
    outbox::insert_event(&mut tx, &event(ctx, EventType::OrganizationUpdated, data)).await?;
    tx.commit().await?;
    Ok(new)
}

/// Deletes the organization; its contacts stay, unlinked.
pub(crate) async fn delete_organization(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: OrganizationId,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let old = fetch_organization(&mut tx, ctx.ws, id, true).await?;
    query("DELETE FROM crm_organizations WHERE workspace_id = $1 AND id = $2")
        .bind(ctx.ws)
        .bind(id)
        .execute(&mut tx)
        .await?;
    let data = json!({ "organization": old });
    outbox::insert_event(&mut tx, &event(ctx, EventType::OrganizationDeleted, data)).await?;
    tx.commit().await
}

/// The organization a converted lead belongs to: the one with its email's company
/// domain, else the one named like its company (folded), else a new one named after
/// its company (with that domain). `None` without a company or a known domain.
async fn organization_for(
    tx: &mut Tx,
    ctx: &Ctx<'_>,
    company: Option<&str>,
    email: Option<&Email>,
    owner: Option<UserId>,
) -> Result<(Option<Organization>, bool)> {
    let domain = email.and_then(parse::company_domain);
    if let Some(d) = &domain {
        if let Some(o) = by_domain(tx, ctx.ws, d).await? {
            return Ok((Some(o), false));
        }
    }
    let Some(company) = company else {
        return Ok((None, false));
    };
    let sql = format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM crm_organizations o \
         WHERE o.workspace_id = $1 AND o.name_key = $2 ORDER BY o.id LIMIT 1"
    );
    let named = query_as::<OrganizationRow>(&sql)
        .bind(ctx.ws)
        .bind(parse::name_key(company))
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(o) = named {
        return Ok((Some(o.into_organization()), false));
    }
    let o = Organization {
        id: OrganizationId::new(),
        workspace_id: ctx.ws,
        name: company.to_owned(),
        domain,
        industry: None,
        size: None,
        address: None,
        owner_id: owner,
        created_at: ctx.now,
        updated_at: ctx.now,
    };
    insert_organization(tx, &o).await?;
    let data = json!({ "organization": o });
    outbox::insert_event(&mut *tx, &event(ctx, EventType::OrganizationCreated, data)).await?;
    Ok((Some(o), true))
}

/// Converts a lead into a contact (see [`crate::Leads::convert`]), in one
/// transaction. On Postgres the workspace row is locked first (`FOR NO KEY
/// UPDATE`), so two conversions never both make the same organization.
pub(crate) async fn convert(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: LeadId,
    with_organization: bool,
) -> Result<Converted> {
    let mut tx = pool.begin_write().await?;
    let lock = format!(
        "SELECT id FROM crm_workspaces WHERE id = $1{}",
        tx.dialect().for_no_key_update()
    );
    let _: Option<(WorkspaceId,)> = query(&lock).bind(ctx.ws).fetch_optional(&mut tx).await?;
    let mut lead = super::leads::fetch_lead(&mut tx, ctx.ws, id, true).await?;
    if lead.archived_at.is_some() {
        return Err(Error::InvalidState {
            code: "lead_archived",
            message: format!("lead {id} is archived; restore it before converting it"),
        });
    }
    // Converted before: the same contact, nothing written.
    if let Some(contact_id) = lead.contact_id {
        let contact = fetch_contact(&mut tx, ctx.ws, contact_id, false).await?;
        let organization = match contact.organization_id {
            Some(o) => Some(fetch_organization(&mut tx, ctx.ws, o, false).await?),
            None => None,
        };
        return Ok(Converted {
            lead,
            contact,
            organization,
            contact_created: false,
            organization_created: false,
        });
    }
    let keys: Vec<String> = lead
        .email
        .iter()
        .map(email_key)
        .chain(lead.phone.iter().map(phone_key))
        .collect();
    // The contact with the lead's email first, else with its phone.
    let holders = key_holders(&mut tx, ctx.ws, &keys).await?;
    let existing = keys
        .iter()
        .find_map(|k| holders.iter().find(|(h, _)| h == k).map(|(_, id)| *id));
    let existing = match existing {
        Some(cid) => Some(fetch_contact(&mut tx, ctx.ws, cid, true).await?),
        None => None,
    };
    let (organization, organization_created) = match &existing {
        Some(c) if c.organization_id.is_some() => (None, false),
        _ if with_organization => {
            organization_for(
                &mut tx,
                ctx,
                lead.company.as_deref(),
                lead.email.as_ref(),
                lead.owner_id,
            )
            .await?
        }
        _ => (None, false),
    };
    let (contact, contact_created) = match existing {
        Some(mut c) => {
            if c.organization_id.is_none() {
                if let Some(o) = &organization {
                    let old = c.clone();
                    c.organization_id = Some(o.id);
                    c.updated_at = ctx.now;
                    write_contact(&mut tx, &c).await?;
                    let data = json!({
                        "contact": c,
                        "changed": parse::contact_diff(&old, &c),
                    });
                    outbox::insert_event(&mut tx, &event(ctx, EventType::ContactUpdated, data))
                        .await?;
                }
            }
            (c, false)
        }
        None => {
            let (first_name, last_name) = parse::split_name(&lead.name);
            let c = Contact {
                id: ContactId::new(),
                workspace_id: ctx.ws,
                name: parse::full_name(&first_name, last_name.as_deref()),
                first_name,
                last_name,
                emails: lead.email.iter().cloned().collect(),
                phones: lead.phone.iter().cloned().collect(),
                title: None,
                address: None,
                social: BTreeMap::new(),
                organization_id: organization.as_ref().map(|o| o.id),
                owner_id: lead.owner_id,
                notes: lead.notes.clone(),
                tags: lead.tags.clone(),
                custom: lead.custom.clone(),
                last_contacted_at: None,
                created_at: ctx.now,
                updated_at: ctx.now,
            };
            insert_contact(&mut tx, &c).await?;
            let data = json!({ "contact": c });
            outbox::insert_event(&mut tx, &event(ctx, EventType::ContactCreated, data)).await?;
            (c, true)
        }
    };
    let organization = match (organization, contact.organization_id) {
        (Some(o), _) => Some(o),
        (None, Some(o)) => Some(fetch_organization(&mut tx, ctx.ws, o, false).await?),
        (None, None) => None,
    };
    lead.contact_id = Some(contact.id);
    lead.updated_at = ctx.now;
    super::leads::write_lead(&mut tx, &lead).await?;
    let description = format!("Converted into contact {} ({})", contact.name, contact.id);
    let activity = ctx.activity(id, ActivityKind::Converted, Some(description));
    super::leads::insert_activity(&mut tx, ctx.ws, &activity).await?;
    let converted = Converted {
        lead,
        contact,
        organization,
        contact_created,
        organization_created,
    };
    let data = json!({
        "lead": converted.lead,
        "contact": converted.contact,
        "organization": converted.organization,
        "contact_created": contact_created,
        "organization_created": organization_created,
    });
    outbox::insert_event(&mut tx, &ctx.event(EventType::LeadConverted, id, data)).await?;
    tx.commit().await?;
    Ok(converted)
}
