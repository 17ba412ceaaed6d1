//! Leads and their timeline: the lead row, its activities and its outbox events
//! commit together or not at all. The business rules (what a capture fills, which
//! change is worth an event) are pure functions in [`crate::leads::rules`]; this
//! file only reads and writes rows.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sqlx::types::Json;
use sqlx::FromRow;

use super::sql::{per_statement, pow2_runs, query, query_as, Dialect, Exec, Sql, Tx};
use super::{corrupt, outbox, Ctx, Pool, Ts};
use crate::attachments::model::Parent;
use crate::events::EventType;
use crate::ids::{ActivityId, AttachmentId, ContactId, EventId, LeadId, UserId, WorkspaceId};
use crate::leads::cursor::{Cursor, Key};
use crate::leads::import::{Checked, ImportReport, Outcome, Resolver, RowError};
use crate::leads::merge::Merged;
use crate::leads::model::{Activity, Archived, Lead, MessageInfo, SortField, SortOrder};
use crate::leads::parse::{Fields, Patch, Query as LeadQuery};
use crate::leads::rules;
use crate::leads::values::{ActivityKind, Email, LeadStatus, Phone};
use crate::webhooks::model::JobKind;
use crate::{Error, Result};

const LEAD_COLUMNS: &str = "l.id, l.workspace_id, l.name, l.email, l.phone, l.company, l.budget, \
    l.project_type, l.message, l.source, l.status, l.notes, l.tags, l.custom, l.raw_input, \
    l.ai_parsed, l.created_at, l.updated_at, l.archived_at, l.owner_id, l.contact_id";

const ACTIVITY_COLUMNS: &str =
    "id, lead_id, kind, description, old_status, new_status, actor, message, created_at";

#[derive(FromRow)]
pub(crate) struct LeadRow {
    id: LeadId,
    workspace_id: WorkspaceId,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    budget: Option<String>,
    project_type: Option<String>,
    message: Option<String>,
    source: Option<String>,
    status: String,
    notes: Option<String>,
    tags: Json<Vec<String>>,
    custom: Json<Map<String, Value>>,
    raw_input: Option<String>,
    ai_parsed: bool,
    created_at: Ts,
    updated_at: Ts,
    archived_at: Option<Ts>,
    owner_id: Option<UserId>,
    contact_id: Option<ContactId>,
}

#[derive(FromRow)]
pub(crate) struct ActivityRow {
    id: ActivityId,
    lead_id: LeadId,
    kind: String,
    description: Option<String>,
    old_status: Option<String>,
    new_status: Option<String>,
    actor: Option<String>,
    message: Option<String>,
    created_at: Ts,
}

/// What a capture does to a lead that already has the input's email or phone.
#[derive(Debug, Clone)]
pub(crate) enum OnKnown {
    /// Fills the lead's blank fields (inbound messages verified by their provider).
    Fill,
    /// Changes nothing of the lead; the activity gets this description instead
    /// (anonymous submissions, which must not attach anything to a known lead).
    Record(Option<String>),
}

impl LeadRow {
    fn into_lead(self) -> Result<Lead> {
        Ok(Lead {
            id: self.id,
            workspace_id: self.workspace_id,
            name: self.name,
            email: self
                .email
                .map(|e| Email::parse(&e).map_err(|_| corrupt("email")))
                .transpose()?,
            phone: self
                .phone
                .map(|p| Phone::parse(&p).map_err(|_| corrupt("phone")))
                .transpose()?,
            company: self.company,
            budget: self.budget,
            project_type: self.project_type,
            message: self.message,
            source: self.source,
            status: self.status.parse().map_err(|_| corrupt("status"))?,
            notes: self.notes,
            tags: self.tags.0,
            custom: self.custom.0,
            raw_input: self.raw_input,
            ai_parsed: self.ai_parsed,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
            archived_at: self.archived_at.map(|t| t.0),
            owner_id: self.owner_id,
            contact_id: self.contact_id,
        })
    }
}

impl ActivityRow {
    fn into_activity(self) -> Result<Activity> {
        let status = |s: Option<String>| -> Result<Option<LeadStatus>> {
            s.map(|s| s.parse().map_err(|_| corrupt("status")))
                .transpose()
        };
        Ok(Activity {
            id: self.id,
            lead_id: self.lead_id,
            kind: self.kind.parse().map_err(|_| corrupt("activity kind"))?,
            description: self.description,
            old_status: status(self.old_status)?,
            new_status: status(self.new_status)?,
            actor: self.actor,
            message: self
                .message
                .map(|m| serde_json::from_str(&m).map_err(|_| corrupt("activity message")))
                .transpose()?,
            created_at: self.created_at.0,
        })
    }
}

fn conflict(field: &'static str, existing: LeadId) -> Error {
    Error::Conflict {
        message: format!("a lead with this {field} already exists"),
        field: Some(field),
        existing_id: Some(existing.0),
    }
}

/// A clash the unique indexes saw but the lookup after them did not (the other lead
/// changed its email or phone in between).
fn taken() -> Error {
    Error::Conflict {
        message: "a lead with this email or phone already exists".into(),
        field: None,
        existing_id: None,
    }
}

fn no_contact() -> Error {
    Error::invalid("email", "a lead needs an email or a phone")
}

pub(super) async fn fetch_lead(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    id: LeadId,
    lock: bool,
) -> Result<Lead> {
    let on = conn.on();
    let sql = format!(
        "SELECT {LEAD_COLUMNS} FROM crm_leads l WHERE l.workspace_id = $1 AND l.id = $2{}",
        if lock { on.dialect().for_update() } else { "" }
    );
    query_as::<LeadRow>(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(on)
        .await?
        .ok_or(Error::NotFound { entity: "lead" })?
        .into_lead()
}

/// Leads of the workspace holding this email (case-insensitively) or phone.
async fn find_by_contact(
    conn: &mut Tx,
    ws: WorkspaceId,
    email: Option<&Email>,
    phone: Option<&Phone>,
) -> Result<Vec<Lead>> {
    if email.is_none() && phone.is_none() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {LEAD_COLUMNS} FROM crm_leads l \
         WHERE l.workspace_id = $1 AND (l.email_key = $2 OR l.phone = $3){}",
        conn.dialect().for_update()
    );
    let rows = query_as::<LeadRow>(&sql)
        .bind(ws)
        .bind(email.map(Email::key))
        .bind(phone.map(|p| p.as_str().to_owned()))
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter().map(LeadRow::into_lead).collect()
}

/// Fails with `Conflict` when another lead (not one `skip` names) holds the lead's
/// email or phone; the holder of the email is named before the holder of the phone.
async fn check_unique(conn: &mut Tx, lead: &Lead, skip: impl Fn(LeadId) -> bool) -> Result<()> {
    let others = find_by_contact(
        conn,
        lead.workspace_id,
        lead.email.as_ref(),
        lead.phone.as_ref(),
    )
    .await?;
    let others: Vec<&Lead> = others.iter().filter(|o| !skip(o.id)).collect();
    let key = lead.email.as_ref().map(Email::key);
    let email = others
        .iter()
        .find(|o| key.is_some() && o.email.as_ref().map(Email::key) == key);
    match (email, others.first()) {
        (Some(o), _) => Err(conflict("email", o.id)),
        (None, Some(o)) => Err(conflict("phone", o.id)),
        (None, None) => Ok(()),
    }
}

/// Inserts the lead unless its email or phone is taken (the unique indexes decide,
/// waiting for a concurrent insert of the same to commit or roll back): whether it
/// was inserted.
async fn insert_lead(conn: &mut Tx, l: &Lead) -> Result<bool> {
    Ok(!insert_leads(conn, std::iter::once(l)).await?.is_empty())
}

pub(super) async fn write_lead(conn: &mut Tx, l: &Lead) -> Result<()> {
    query(
        "UPDATE crm_leads SET name = $3, email = $4, email_key = $5, phone = $6, company = $7, \
         budget = $8, project_type = $9, message = $10, source = $11, status = $12, notes = $13, \
         tags = $14, custom = $15, raw_input = $16, updated_at = $17, owner_id = $18, \
         contact_id = $19 WHERE workspace_id = $1 AND id = $2",
    )
    .bind(l.workspace_id)
    .bind(l.id)
    .bind(l.name.as_str())
    .bind(l.email.as_ref().map(Email::as_str))
    .bind(l.email.as_ref().map(Email::key))
    .bind(l.phone.as_ref().map(Phone::as_str))
    .bind(l.company.as_deref())
    .bind(l.budget.as_deref())
    .bind(l.project_type.as_deref())
    .bind(l.message.as_deref())
    .bind(l.source.as_deref())
    .bind(l.status.as_str())
    .bind(l.notes.as_deref())
    .bind(Json(json!(l.tags)))
    .bind(Json(Value::Object(l.custom.clone())))
    .bind(l.raw_input.as_deref())
    .bind(Ts(l.updated_at))
    .bind(l.owner_id)
    .bind(l.contact_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn insert_activity(conn: &mut Tx, ws: WorkspaceId, a: &Activity) -> Result<()> {
    let message = a.message.as_ref().map(|m| json!(m).to_string());
    let message_id = a.message.as_ref().and_then(|m| {
        m.provider_message_id
            .as_deref()
            .map(|id| message_key(&m.channel, id))
    });
    query(
        "INSERT INTO crm_activities (id, workspace_id, lead_id, kind, description, old_status, \
         new_status, actor, message, message_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(a.id)
    .bind(ws)
    .bind(a.lead_id)
    .bind(a.kind.as_str())
    .bind(a.description.as_deref())
    .bind(a.old_status.map(LeadStatus::as_str))
    .bind(a.new_status.map(LeadStatus::as_str))
    .bind(a.actor.as_deref())
    .bind(message.as_deref())
    .bind(message_id.as_deref())
    .bind(Ts(a.created_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The lookup key of a provider's message id: `channel:id`.
fn message_key(channel: &str, id: &str) -> String {
    format!("{channel}:{id}")
}

/// Adds a `message` activity to lead `id` (its `lead.activity_added` event too).
pub(crate) async fn add_message(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: LeadId,
    message: MessageInfo,
    description: String,
) -> Result<Activity> {
    let mut tx = pool.begin_write().await?;
    fetch_lead(&mut tx, ctx.ws, id, true).await?;
    let activity = Activity {
        message: Some(message),
        ..ctx.activity(id, ActivityKind::Message, Some(description))
    };
    record_activity(&mut tx, ctx, &activity).await?;
    tx.commit().await?;
    Ok(activity)
}

/// Changes the message of the activity that recorded provider message `id` sent
/// on `channel` in workspace `ws`, when `change` says it changed it.
pub(crate) async fn message_status(
    pool: &Pool,
    ws: WorkspaceId,
    channel: &str,
    id: &str,
    change: impl FnOnce(&mut MessageInfo) -> bool,
) -> Result<Option<Activity>> {
    let mut tx = pool.begin_write().await?;
    let sql = format!(
        "SELECT {ACTIVITY_COLUMNS} FROM crm_activities WHERE workspace_id = $1 AND message_id = $2{}",
        tx.dialect().for_update()
    );
    let Some(row) = query_as::<ActivityRow>(&sql)
        .bind(ws)
        .bind(message_key(channel, id))
        .fetch_optional(&mut tx)
        .await?
    else {
        return Ok(None);
    };
    let mut activity = row.into_activity()?;
    let Some(message) = activity.message.as_mut() else {
        return Ok(None);
    };
    if !change(message) {
        return Ok(None);
    }
    query("UPDATE crm_activities SET message = $3 WHERE workspace_id = $1 AND id = $2")
        .bind(ws)
        .bind(activity.id)
        .bind(json!(message).to_string())
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(Some(activity))
}

/// The lead and the message of `message` activity `id`, when the workspace has it.
pub(crate) async fn message_of(
    pool: &Pool,
    ws: WorkspaceId,
    id: ActivityId,
) -> Result<Option<(LeadId, MessageInfo)>> {
    let sql = format!(
        "SELECT {ACTIVITY_COLUMNS} FROM crm_activities WHERE workspace_id = $1 AND id = $2"
    );
    let Some(row) = query_as::<ActivityRow>(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let a = row.into_activity()?;
    Ok(a.message.map(|m| (a.lead_id, m)))
}

/// Links the file fetched for `message` activity `id` (row locked; a link already
/// there stays).
pub(crate) async fn link_message_file(
    pool: &Pool,
    ws: WorkspaceId,
    id: ActivityId,
    file: AttachmentId,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let sql = format!(
        "SELECT {ACTIVITY_COLUMNS} FROM crm_activities WHERE workspace_id = $1 AND id = $2{}",
        tx.dialect().for_update()
    );
    let row = query_as::<ActivityRow>(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(&mut tx)
        .await?;
    let Some(mut message) = row
        .map(ActivityRow::into_activity)
        .transpose()?
        .and_then(|a| a.message)
    else {
        return Ok(());
    };
    if message.attachment_id.is_some() {
        return Ok(());
    }
    message.attachment_id = Some(file);
    query("UPDATE crm_activities SET message = $3 WHERE workspace_id = $1 AND id = $2")
        .bind(ws)
        .bind(id)
        .bind(json!(message).to_string())
        .execute(&mut tx)
        .await?;
    tx.commit().await
}

/// Adds an activity and its `lead.activity_added` event; the event's id.
async fn record_activity(conn: &mut Tx, ctx: &Ctx<'_>, a: &Activity) -> Result<EventId> {
    insert_activity(conn, ctx.ws, a).await?;
    let event = ctx.event(
        EventType::LeadActivityAdded,
        a.lead_id,
        json!({ "lead_id": a.lead_id, "activity": a }),
    );
    outbox::insert_event(conn, &event).await?;
    Ok(event.id)
}

/// Creates one lead: a batch of one ([`create_batch`]).
pub(crate) async fn create(pool: &Pool, ctx: &Ctx<'_>, fields: Fields) -> Result<Lead> {
    let row = NewRow {
        ws: ctx.ws,
        now: ctx.now,
        actor: ctx.actor.map(str::to_owned),
        fields,
    };
    create_batch(pool, std::slice::from_ref(&row))
        .await?
        .pop()
        .unwrap_or_else(|| Err(taken()))
}

/// One create of a batch ([`create_batch`]).
pub(crate) struct NewRow {
    pub(crate) ws: WorkspaceId,
    pub(crate) now: chrono::DateTime<chrono::Utc>,
    pub(crate) actor: Option<String>,
    pub(crate) fields: Fields,
}

/// Creates many leads in one write transaction (group commit): each its own
/// result, a taken email or phone failing only its own create. The leads, their
/// events and the events' jobs go in many rows per statement (a few statements a
/// batch, where a statement per row was 4 round trips per create on Postgres), and
/// the subscribers of each workspace are read once (the write lock keeps them as
/// they are). An error of the database fails the whole batch, which writes
/// nothing: the caller then creates each lead on its own.
pub(crate) async fn create_batch(pool: &Pool, rows: &[NewRow]) -> Result<Vec<Result<Lead>>> {
    let mut tx = pool.begin_write().await?;
    let leads: Vec<Lead> = rows
        .iter()
        .map(|row| row.fields.clone().into_lead(row.ws, row.now))
        .collect();
    // Rows go in in order, so of two creates of one email the first wins, as it
    // would one by one.
    let inserted = insert_leads(&mut tx, leads.iter()).await?;
    let mut subscribers: Vec<(WorkspaceId, outbox::Subscribers)> = Vec::new();
    let mut events = Vec::with_capacity(rows.len());
    let mut out = Vec::with_capacity(rows.len());
    // The leads of the rows still to come: a create refused is told of the lead
    // that held its email or phone before it, never of one a later row inserted.
    let mut later = inserted;
    for (row, lead) in rows.iter().zip(leads) {
        if !later.remove(&lead.id) {
            out.push(
                match check_unique(&mut tx, &lead, |o| later.contains(&o)).await {
                    Ok(()) => Err(taken()),
                    Err(e @ Error::Conflict { .. }) => Err(e),
                    Err(e) => return Err(e),
                },
            );
            continue;
        }
        let ctx = Ctx {
            ws: row.ws,
            now: row.now,
            actor: row.actor.as_deref(),
        };
        let at = subscribers.iter().position(|(ws, _)| *ws == row.ws);
        let at = match at {
            Some(at) => at,
            None => {
                subscribers.push((row.ws, outbox::subscribers(&mut tx, row.ws).await?));
                subscribers.len() - 1
            }
        };
        events.push((
            ctx.event(EventType::LeadCreated, lead.id, json!({ "lead": lead })),
            at,
        ));
        out.push(Ok(lead));
    }
    let with: Vec<_> = events
        .iter()
        .map(|(e, at)| (e, &subscribers[*at].1))
        .collect();
    outbox::insert_events(&mut tx, &with).await?;
    tx.commit().await?;
    Ok(out)
}

/// Creates the lead, or finds the lead that already has its email (first) or phone
/// and, as `on_known` says, fills its blanks or leaves it as it is; either way
/// records the activity (and the inbound receipt, when there is one). With
/// `fetch_media`, a message received with a media file queues the job that fetches
/// it.
pub(crate) async fn capture(
    pool: &Pool,
    ctx: &Ctx<'_>,
    fields: Fields,
    activity: (ActivityKind, Option<String>, Option<MessageInfo>),
    on_known: OnKnown,
    receipt: Option<(&str, &str)>,
    fetch_media: bool,
) -> Result<Option<(Lead, bool)>> {
    let mut activity = activity;
    let mut tx = pool.begin_write().await?;
    if let Some((source, external_id)) = receipt {
        let seen = query_as::<(i64,)>(
            "SELECT COUNT(*) FROM crm_inbound_receipts WHERE workspace_id = $1 AND source = $2 AND external_id = $3",
        )
        .bind(ctx.ws)
        .bind(source)
        .bind(external_id)
        .fetch_one(&mut tx)
        .await?;
        if seen.0 > 0 {
            return Ok(None);
        }
    }
    let matches = find_by_contact(
        &mut tx,
        ctx.ws,
        fields.email.as_ref(),
        fields.phone.as_ref(),
    )
    .await?;
    let existing = rules::known(&matches, fields.email.as_ref(), fields.phone.as_ref());
    let (lead, created) = match existing {
        None => {
            let lead = fields.into_lead(ctx.ws, ctx.now);
            if !insert_lead(&mut tx, &lead).await? {
                return Err(taken());
            }
            outbox::insert_event(
                &mut tx,
                &ctx.event(EventType::LeadCreated, lead.id, json!({ "lead": lead })),
            )
            .await?;
            (lead, true)
        }
        Some(old) if matches!(on_known, OnKnown::Record(_)) => {
            if let OnKnown::Record(description) = on_known {
                activity.1 = description;
            }
            (old.clone(), false)
        }
        Some(old) => {
            let mut new = rules::merge(old, fields, &matches);
            let changed = rules::diff(old, &new);
            if !changed.is_empty() {
                new.updated_at = ctx.now;
                write_lead(&mut tx, &new).await?;
                let data = json!({ "lead": new, "changed": changed });
                outbox::insert_event(&mut tx, &ctx.event(EventType::LeadUpdated, new.id, data))
                    .await?;
            }
            (new, false)
        }
    };
    let activity = Activity {
        message: activity.2,
        ..ctx.activity(lead.id, activity.0, activity.1)
    };
    let event = record_activity(&mut tx, ctx, &activity).await?;
    if fetch_media
        && activity
            .message
            .as_ref()
            .is_some_and(MessageInfo::has_media_to_fetch)
    {
        // The file is fetched from the provider and stored by a job (retried with
        // the delivery schedule), so a slow or failing provider never holds up
        // the capture.
        super::jobs::insert_job(
            &mut tx,
            ctx.ws,
            JobKind::Media,
            activity.id.0,
            event,
            ctx.now,
        )
        .await?;
    }
    if let Some((source, external_id)) = receipt {
        query(
            "INSERT INTO crm_inbound_receipts (workspace_id, source, external_id, lead_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(ctx.ws)
        .bind(source)
        .bind(external_id)
        .bind(lead.id)
        .bind(Ts(ctx.now))
        .execute(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some((lead, created)))
}

pub(crate) async fn get(pool: &Pool, ws: WorkspaceId, id: LeadId) -> Result<(Lead, Vec<Activity>)> {
    let mut conn = pool.acquire().await?;
    let lead = fetch_lead(&mut conn, ws, id, false).await?;
    let activities = activities_of(&mut conn, ws, id).await?;
    Ok((lead, activities))
}

pub(crate) async fn update(pool: &Pool, ctx: &Ctx<'_>, id: LeadId, patch: Patch) -> Result<Lead> {
    let mut tx = pool.begin_write().await?;
    let old = fetch_lead(&mut tx, ctx.ws, id, true).await?;
    let mut new = patch.apply(&old);
    if new.email.is_none() && new.phone.is_none() {
        return Err(no_contact());
    }
    let changed = rules::diff(&old, &new);
    if changed.is_empty() {
        return Ok(old);
    }
    if changed.contains(&"email") || changed.contains(&"phone") {
        check_unique(&mut tx, &new, |o| o == id).await?;
    }
    new.updated_at = ctx.now;
    write_lead(&mut tx, &new).await?;
    if old.status != new.status {
        let activity = Activity {
            old_status: Some(old.status),
            new_status: Some(new.status),
            ..ctx.activity(id, ActivityKind::StatusChange, None)
        };
        insert_activity(&mut tx, ctx.ws, &activity).await?;
        let data = json!({ "lead": new, "old_status": old.status, "new_status": new.status });
        outbox::insert_event(&mut tx, &ctx.event(EventType::LeadStatusChanged, id, data)).await?;
    }
    let data = json!({ "lead": new, "changed": changed });
    outbox::insert_event(&mut tx, &ctx.event(EventType::LeadUpdated, id, data)).await?;
    tx.commit().await?;
    Ok(new)
}

/// The id, name, company and email of the workspace's leads that are not archived,
/// oldest first: what duplicate detection reads.
pub(crate) async fn duplicate_keys(
    pool: &Pool,
    ws: WorkspaceId,
) -> Result<Vec<(LeadId, String, Option<String>, Option<String>)>> {
    let rows = query_as::<(LeadId, String, Option<String>, Option<String>)>(
        "SELECT id, name, company, email FROM crm_leads \
         WHERE workspace_id = $1 AND archived_at IS NULL ORDER BY created_at, id",
    )
    .bind(ws)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// The workspace's leads among `ids` that are not archived, oldest first.
pub(crate) async fn by_ids(pool: &Pool, ws: WorkspaceId, ids: &[LeadId]) -> Result<Vec<Lead>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = query(format!(
        "SELECT {LEAD_COLUMNS} FROM crm_leads l WHERE l.workspace_id = "
    ));
    sql.push_bind(ws.0);
    for (i, id) in ids.iter().enumerate() {
        sql.push(if i == 0 { " AND l.id IN (" } else { ", " })
            .push_bind(id.0);
    }
    sql.push(") AND l.archived_at IS NULL ORDER BY l.created_at, l.id");
    let rows: Vec<LeadRow> = sql.fetch_all(pool).await?;
    rows.into_iter().map(LeadRow::into_lead).collect()
}

/// Merges `from` into `target` (see [`crate::leads::merge`]): in one transaction,
/// rolled back when `dry_run`.
pub(crate) async fn merge(
    pool: &Pool,
    ctx: &Ctx<'_>,
    target: LeadId,
    from: &[LeadId],
    prefer: &std::collections::BTreeMap<String, LeadId>,
    dry_run: bool,
) -> Result<Merged> {
    let archived = |id: LeadId| Error::InvalidState {
        code: "lead_archived",
        message: format!("lead {id} is archived: restore it before merging"),
    };
    let mut tx = pool.begin_write().await?;
    // Every lead of the merge locked in one statement, in id order: two merges of
    // the same leads (A into B, B into A) wait for each other instead of deadlocking.
    let mut all = vec![target];
    all.extend_from_slice(from);
    let mut sql = query(format!(
        "SELECT {LEAD_COLUMNS} FROM crm_leads l WHERE l.workspace_id = "
    ));
    sql.push_bind(ctx.ws.0);
    for (i, id) in all.iter().enumerate() {
        sql.push(if i == 0 { " AND l.id IN (" } else { ", " })
            .push_bind(id.0);
    }
    sql.push(&format!(") ORDER BY l.id{}", pool.dialect().for_update()));
    let rows: Vec<LeadRow> = sql.fetch_all(&mut tx).await?;
    let locked = rows
        .into_iter()
        .map(LeadRow::into_lead)
        .collect::<Result<Vec<_>>>()?;
    let find = |id: &LeadId| locked.iter().find(|l| l.id == *id).cloned();
    let old = find(&target).ok_or(Error::NotFound { entity: "lead" })?;
    let mut absorbed = Vec::with_capacity(from.len());
    for id in from {
        absorbed.push(find(id).ok_or(Error::NotFound { entity: "lead" })?);
    }
    for l in std::iter::once(&old).chain(&absorbed) {
        if l.archived_at.is_some() {
            return Err(archived(l.id));
        }
    }
    let mut new = crate::leads::merge::combine(&old, &absorbed, prefer)?;
    if new.email.is_none() && new.phone.is_none() {
        return Err(no_contact());
    }
    new.updated_at = ctx.now;
    // The timelines move first; then the absorbed leads go, freeing their email and
    // phone for the target.
    let mut moved = 0;
    for id in from {
        moved += query(
            "UPDATE crm_activities SET lead_id = $3 WHERE workspace_id = $1 AND lead_id = $2",
        )
        .bind(ctx.ws)
        .bind(*id)
        .bind(target)
        .execute(&mut tx)
        .await?;
        super::attachments::move_to(&mut tx, ctx.ws, *id, target).await?;
        query("DELETE FROM crm_leads WHERE workspace_id = $1 AND id = $2")
            .bind(ctx.ws)
            .bind(*id)
            .execute(&mut tx)
            .await?;
    }
    check_unique(&mut tx, &new, |o| o == target).await?;
    write_lead(&mut tx, &new).await?;
    if old.status != new.status {
        let activity = Activity {
            old_status: Some(old.status),
            new_status: Some(new.status),
            ..ctx.activity(target, ActivityKind::StatusChange, None)
        };
        insert_activity(&mut tx, ctx.ws, &activity).await?;
        let data = json!({ "lead": new, "old_status": old.status, "new_status": new.status });
        outbox::insert_event(
            &mut tx,
            &ctx.event(EventType::LeadStatusChanged, target, data),
        )
        .await?;
    }
    let names: Vec<String> = from.iter().map(ToString::to_string).collect();
    let description = format!("Merged {}", names.join(", "));
    let activity = ctx.activity(target, ActivityKind::Merged, Some(description));
    insert_activity(&mut tx, ctx.ws, &activity).await?;
    let data = json!({ "lead": new, "absorbed": from, "absorbed_leads": absorbed });
    outbox::insert_event(&mut tx, &ctx.event(EventType::LeadMerged, target, data)).await?;
    if dry_run {
        // Dropped uncommitted: rolled back, events and jobs with it.
        drop(tx);
    } else {
        tx.commit().await?;
    }
    Ok(Merged {
        lead: new,
        absorbed: from.to_vec(),
        moved_activities: moved,
        dry_run,
    })
}

/// Archives the lead (`archive`) or restores it: `lead.archived` or `lead.restored`
/// with the lead as it is now. A lead already in that state is answered as it is,
/// with no event.
pub(crate) async fn set_archived(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: LeadId,
    archive: bool,
) -> Result<Lead> {
    let mut tx = pool.begin_write().await?;
    let mut lead = fetch_lead(&mut tx, ctx.ws, id, true).await?;
    if lead.archived_at.is_some() == archive {
        return Ok(lead);
    }
    lead.archived_at = archive.then_some(ctx.now);
    lead.updated_at = ctx.now;
    query("UPDATE crm_leads SET archived_at = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2")
        .bind(ctx.ws)
        .bind(id)
        .bind(lead.archived_at.map(Ts))
        .bind(Ts(ctx.now))
        .execute(&mut tx)
        .await?;
    let kind = if archive {
        EventType::LeadArchived
    } else {
        EventType::LeadRestored
    };
    outbox::insert_event(&mut tx, &ctx.event(kind, id, json!({ "lead": lead }))).await?;
    tx.commit().await?;
    Ok(lead)
}

/// Deletes the lead, its timeline and its files' rows; the storage keys of the
/// files, for the caller to delete once this commits. With `unless_active`, a lead that has
/// activities is refused (`confirmation_required`) and kept.
pub(crate) async fn delete(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: LeadId,
    unless_active: bool,
) -> Result<Vec<String>> {
    let mut tx = pool.begin_write().await?;
    let old = fetch_lead(&mut tx, ctx.ws, id, true).await?;
    if unless_active {
        let rows: Vec<(i64,)> = query_as(
            "SELECT COUNT(*) FROM crm_activities WHERE workspace_id = $1 AND lead_id = $2",
        )
        .bind(ctx.ws)
        .bind(id)
        .fetch_all(&mut tx)
        .await?;
        let n = rows.first().map_or(0, |r| r.0);
        if n > 0 {
            return Err(Error::InvalidState {
                code: "confirmation_required",
                message: format!(
                    "the lead has {n} timeline entries: delete it with confirm=true, or archive it"
                ),
            });
        }
    }
    let files = super::attachments::keys_of(&mut tx, ctx.ws, Parent::Lead(id)).await?;
    query("DELETE FROM crm_leads WHERE workspace_id = $1 AND id = $2")
        .bind(ctx.ws)
        .bind(id)
        .execute(&mut tx)
        .await?;
    outbox::insert_event(
        &mut tx,
        &ctx.event(EventType::LeadDeleted, id, json!({ "lead": old })),
    )
    .await?;
    tx.commit().await?;
    Ok(files)
}

pub(crate) async fn add_activity(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: LeadId,
    kind: ActivityKind,
    description: Option<String>,
) -> Result<Activity> {
    let mut tx = pool.begin_write().await?;
    fetch_lead(&mut tx, ctx.ws, id, true).await?;
    let activity = ctx.activity(id, kind, description);
    record_activity(&mut tx, ctx, &activity).await?;
    tx.commit().await?;
    Ok(activity)
}

async fn activities_of(conn: impl Exec<'_>, ws: WorkspaceId, id: LeadId) -> Result<Vec<Activity>> {
    let sql = format!(
        "SELECT {ACTIVITY_COLUMNS} FROM crm_activities WHERE workspace_id = $1 AND lead_id = $2 \
         ORDER BY created_at, id"
    );
    let rows = query_as::<ActivityRow>(&sql)
        .bind(ws)
        .bind(id)
        .fetch_all(conn)
        .await?;
    rows.into_iter().map(ActivityRow::into_activity).collect()
}

pub(crate) async fn activities(pool: &Pool, ws: WorkspaceId, id: LeadId) -> Result<Vec<Activity>> {
    let mut conn = pool.acquire().await?;
    fetch_lead(&mut conn, ws, id, false).await?;
    activities_of(&mut conn, ws, id).await
}

fn push_filters(d: Dialect, sql: &mut Sql<'_>, ws: WorkspaceId, q: &LeadQuery) {
    sql.push(" WHERE l.workspace_id = ").push_bind(ws.0);
    match q.archived {
        Archived::Hide => sql.push(" AND l.archived_at IS NULL"),
        Archived::Only => sql.push(" AND l.archived_at IS NOT NULL"),
        Archived::Include => sql,
    };
    for (i, s) in q.statuses.iter().enumerate() {
        sql.push(if i == 0 { " AND l.status IN (" } else { ", " })
            .push_bind(s.as_str().to_owned());
    }
    if !q.statuses.is_empty() {
        sql.push(")");
    }
    if let Some(source) = &q.source {
        sql.push(" AND l.source = ").push_bind(source.clone());
    }
    if let Some(owner) = q.owner_id {
        sql.push(" AND l.owner_id = ").push_bind(owner);
    }
    for tag in &q.tags {
        sql.push(" AND ");
        d.push_has_tag(sql, "l", tag.clone());
    }
    if let Some(t) = q.created_after {
        sql.push(" AND l.created_at >= ").push_bind(Ts(t));
    }
    if let Some(t) = q.created_before {
        sql.push(" AND l.created_at < ").push_bind(Ts(t));
    }
    if !q.terms.is_empty() {
        sql.push(" AND ");
        d.push_search(sql, "l", "crm_leads", &q.terms);
    }
}

/// One page (`limit + 1` rows are read to know whether another page follows) and,
/// when asked, the total.
pub(crate) async fn list(
    pool: &Pool,
    ws: WorkspaceId,
    q: &LeadQuery,
    sort: SortField,
    order: SortOrder,
    after: Option<Cursor>,
    include_total: bool,
) -> Result<(Vec<Lead>, Option<u64>)> {
    let mut sql = query(format!("SELECT {LEAD_COLUMNS} FROM crm_leads l"));
    push_filters(pool.dialect(), &mut sql, ws, q);
    push_page(&mut sql, "l", sort, order, after, q.limit)?;
    let rows: Vec<LeadRow> = sql.fetch_all(pool).await?;
    let leads = rows
        .into_iter()
        .map(LeadRow::into_lead)
        .collect::<Result<Vec<_>>>()?;

    let total = if include_total {
        let mut sql = query("SELECT COUNT(*) FROM crm_leads l");
        push_filters(pool.dialect(), &mut sql, ws, q);
        Some(super::count(pool, sql).await?)
    } else {
        None
    };
    Ok((leads, total))
}

/// Appends the keyset condition after cursor `after` and the `ORDER BY … LIMIT` of
/// one page (`limit + 1` rows) of a listing of `alias` sorted by `sort`, the id
/// breaking ties.
pub(super) fn push_page(
    sql: &mut Sql<'_>,
    alias: &'static str,
    sort: SortField,
    order: SortOrder,
    after: Option<Cursor>,
    limit: u32,
) -> Result<()> {
    let col = sort.column();
    let (dir, op) = match order {
        SortOrder::Asc => ("ASC", ">"),
        SortOrder::Desc => ("DESC", "<"),
    };
    if let Some(c) = after {
        let key = match c.key {
            Key::Time(micros) => chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| super::sql::Arg::from(Ts(t)))
                .ok_or_else(|| Error::invalid("cursor", "is not a cursor of this listing"))?,
            Key::Text(s) => super::sql::Arg::from(s),
        };
        sql.push(&format!(" AND ({alias}.{col}, {alias}.id) {op} ("))
            .push_bind(key)
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
    sql.push(&format!(
        " ORDER BY {alias}.{col} {dir}, {alias}.id {dir} LIMIT {}",
        limit + 1
    ));
    Ok(())
}

/// What the lead statistics are made of, read on one connection.
pub(crate) struct StatsRows {
    /// `(status, leads)` now.
    pub statuses: Vec<(String, i64)>,
    /// `(source, leads)` now.
    pub sources: Vec<(Option<String>, i64)>,
    /// `(UTC day, leads created in it)` within the range, days since 1970-01-01.
    pub created: Vec<(i64, i64)>,
    /// `(status, leads that were in it but are in another now)`, from the recorded
    /// status changes.
    pub left: Vec<(String, i64)>,
    /// Seconds from creation to the first change from `new` to `contacted`, a lead
    /// each.
    pub to_contacted: Vec<f64>,
}

/// Reads the lead statistics of `ws`, with the series' creations in `[from, to)`
/// counted by day. Each part reads one index (`crm_leads_status`,
/// `crm_leads_source`, `crm_leads_created`, `crm_activities_status_changes`), and
/// only the status changes are joined to their leads.
pub(crate) async fn stats(
    pool: &Pool,
    ws: WorkspaceId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<StatsRows> {
    let mut conn = pool.acquire().await?;
    let mut sql = query("SELECT status, COUNT(*) FROM crm_leads WHERE workspace_id = ");
    sql.push_bind(ws.0).push(" GROUP BY status");
    let statuses: Vec<(String, i64)> = sql.fetch_all(&mut conn).await?;

    let mut sql = query("SELECT source, COUNT(*) FROM crm_leads WHERE workspace_id = ");
    sql.push_bind(ws.0).push(" GROUP BY source");
    let sources: Vec<(Option<String>, i64)> = sql.fetch_all(&mut conn).await?;

    let day = pool.dialect().unix_day("created_at");
    let mut sql = query(format!(
        "SELECT {day}, COUNT(*) FROM crm_leads WHERE workspace_id = "
    ));
    sql.push_bind(ws.0)
        .push(" AND created_at >= ")
        .push_bind(Ts(from))
        .push(" AND created_at < ")
        .push_bind(Ts(to))
        .push(&format!(" GROUP BY {day}"));
    let created: Vec<(i64, i64)> = sql.fetch_all(&mut conn).await?;

    // The statuses a lead left or passed through, other than the one it is in.
    let mut sql = query(
        "SELECT c.status, COUNT(DISTINCT c.lead_id) FROM (\
           SELECT lead_id, new_status AS status FROM crm_activities \
           WHERE kind = 'status_change' AND new_status IS NOT NULL AND workspace_id = ",
    );
    sql.push_bind(ws.0)
        .push(
            " UNION ALL SELECT lead_id, old_status FROM crm_activities \
               WHERE kind = 'status_change' AND old_status IS NOT NULL AND workspace_id = ",
        )
        .push_bind(ws.0)
        .push(
            ") c JOIN crm_leads l ON l.id = c.lead_id AND l.status <> c.status \
               AND l.workspace_id = ",
        )
        .push_bind(ws.0)
        .push(" GROUP BY c.status");
    let left: Vec<(String, i64)> = sql.fetch_all(&mut conn).await?;

    let mut sql = query(
        "SELECT l.created_at, MIN(a.created_at) FROM crm_activities a \
         JOIN crm_leads l ON l.id = a.lead_id AND l.workspace_id = a.workspace_id \
         WHERE a.kind = 'status_change' AND a.old_status = 'new' \
           AND a.new_status = 'contacted' AND a.workspace_id = ",
    );
    sql.push_bind(ws.0)
        .push(" GROUP BY a.lead_id, l.created_at");
    let contacted: Vec<(Ts, Ts)> = sql.fetch_all(&mut conn).await?;
    Ok(StatsRows {
        statuses,
        sources,
        created,
        left,
        to_contacted: contacted
            .into_iter()
            .map(|(created, first)| (first.0 - created.0).num_milliseconds() as f64 / 1000.0)
            .collect(),
    })
}

/// The leads of `ws` holding any of these email keys or phones, locked. One query
/// per column, each an `IN` list on its unique index (an `OR` of the two lists was
/// planned as a scan of the workspace's leads, filtered: seconds per batch at
/// 100,000 leads on Postgres). A lead holding both keys comes back twice. The lists
/// are chunked and padded to a power of two (with their last key) so that the
/// statements' texts, and their prepared plans, are few.
async fn by_contacts(
    tx: &mut Tx,
    ws: WorkspaceId,
    emails: &[String],
    phones: &[String],
) -> Result<Vec<Lead>> {
    let mut out = Vec::new();
    // A power of two, so that padding never passes it.
    let per_query = 1 << per_statement(tx.dialect(), 1).ilog2();
    for (col, all) in [("l.email_key", emails), ("l.phone", phones)] {
        for keys in all.chunks(per_query) {
            let Some(last) = keys.last() else {
                continue;
            };
            let padded = keys.len().next_power_of_two();
            let mut sql = query(format!(
                "SELECT {LEAD_COLUMNS} FROM crm_leads l WHERE l.workspace_id = "
            ));
            sql.push_bind(ws).push(&format!(" AND {col} IN ("));
            for (j, k) in keys
                .iter()
                .chain(std::iter::repeat(last))
                .take(padded)
                .enumerate()
            {
                if j > 0 {
                    sql.push(", ");
                }
                sql.push_bind(k.as_str());
            }
            sql.push(")").push(tx.dialect().for_update());
            let rows: Vec<LeadRow> = sql.fetch_all(&mut *tx).await?;
            for row in rows {
                out.push(row.into_lead()?);
            }
        }
    }
    Ok(out)
}

/// Inserts new leads, many per statement, passing over any whose email or phone a
/// concurrent write took meanwhile: the ids inserted.
async fn insert_leads<'l>(
    tx: &mut Tx,
    leads: impl Iterator<Item = &'l Lead>,
) -> Result<std::collections::HashSet<LeadId>> {
    let leads: Vec<&Lead> = leads.collect();
    if tx.dialect() == Dialect::Sqlite {
        return insert_leads_json(tx, &leads).await;
    }
    let mut inserted = std::collections::HashSet::with_capacity(leads.len());
    for run in pow2_runs(&leads, per_statement(tx.dialect(), 21).max(1)) {
        let mut sql = query(
            "INSERT INTO crm_leads (id, workspace_id, name, email, email_key, phone, company, \
             budget, project_type, message, source, status, notes, tags, custom, raw_input, \
             ai_parsed, created_at, updated_at, owner_id, contact_id) VALUES ",
        );
        for (i, l) in run.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" })
                .push_bind(l.id)
                .push(", ")
                .push_bind(l.workspace_id)
                .push(", ")
                .push_bind(l.name.as_str())
                .push(", ")
                .push_bind(l.email.as_ref().map(Email::as_str))
                .push(", ")
                .push_bind(l.email.as_ref().map(Email::key))
                .push(", ")
                .push_bind(l.phone.as_ref().map(Phone::as_str))
                .push(", ")
                .push_bind(l.company.as_deref())
                .push(", ")
                .push_bind(l.budget.as_deref())
                .push(", ")
                .push_bind(l.project_type.as_deref())
                .push(", ")
                .push_bind(l.message.as_deref())
                .push(", ")
                .push_bind(l.source.as_deref())
                .push(", ")
                .push_bind(l.status.as_str())
                .push(", ")
                .push_bind(l.notes.as_deref())
                .push(", ")
                .push_bind(Json(json!(l.tags)))
                .push(", ")
                .push_bind(Json(Value::Object(l.custom.clone())))
                .push(", ")
                .push_bind(l.raw_input.as_deref())
                .push(", ")
                .push_bind(l.ai_parsed)
                .push(", ")
                .push_bind(Ts(l.created_at))
                .push(", ")
                .push_bind(Ts(l.updated_at))
                .push(", ")
                .push_bind(l.owner_id)
                .push(", ")
                .push_bind(l.contact_id)
                .push(")");
        }
        sql.push(" ON CONFLICT DO NOTHING RETURNING id");
        let ids: Vec<(LeadId,)> = sql.fetch_all(&mut *tx).await?;
        inserted.extend(ids.into_iter().map(|(id,)| id));
    }
    Ok(inserted)
}

/// SQLite: every lead of a batch in one statement with one parameter, a JSON array
/// of rows that `json_each` unpacks. Bound value by value, a statement cost a
/// linear name lookup per value (so the square of its values) and a round trip to
/// sqlx's worker thread per 15 leads; this is one of each per batch. An import of
/// 100,000 new leads (`scripts/bench-transfer.sh 100000`, one sitting) went from
/// 15,959 to 21,473 rows/s. Ids travel as hex (`unhex` makes the 16-byte blobs
/// crm stores), times as integer microseconds, tags and custom fields as JSON text.
async fn insert_leads_json(
    tx: &mut Tx,
    leads: &[&Lead],
) -> Result<std::collections::HashSet<LeadId>> {
    let hex = |id: uuid::Uuid| id.simple().to_string();
    let mut inserted = std::collections::HashSet::with_capacity(leads.len());
    let mut rows: Vec<Value> = Vec::new();
    let mut bytes = 0;
    for (i, l) in leads.iter().enumerate() {
        let tags = json!(l.tags).to_string();
        let custom = Value::Object(l.custom.clone()).to_string();
        let text = |v: &Option<String>| v.as_ref().map_or(0, String::len);
        bytes += 200
            + l.name.len()
            + tags.len()
            + custom.len()
            + [&l.company, &l.message, &l.notes, &l.raw_input]
                .into_iter()
                .map(text)
                .sum::<usize>();
        rows.push(json!([
            hex(l.id.0),
            hex(l.workspace_id.0),
            l.name,
            l.email.as_ref().map(Email::as_str),
            l.email.as_ref().map(Email::key),
            l.phone.as_ref().map(Phone::as_str),
            l.company,
            l.budget,
            l.project_type,
            l.message,
            l.source,
            l.status.as_str(),
            l.notes,
            tags,
            custom,
            l.raw_input,
            i64::from(l.ai_parsed),
            l.created_at.timestamp_micros(),
            l.updated_at.timestamp_micros(),
            l.owner_id.map(|u| hex(u.0)),
            l.contact_id.map(|c| hex(c.0)),
        ]));
        // A parameter of at most a few MiB: a batch of long leads (notes and raw
        // input near their limits) goes in as several statements.
        if bytes < JSON_PARAM_BYTES && i + 1 < leads.len() {
            continue;
        }
        // `WHERE true`: SQLite's grammar needs it between a SELECT and ON CONFLICT.
        let ids: Vec<(LeadId,)> = query(
            "INSERT INTO crm_leads (id, workspace_id, name, email, email_key, phone, company, \
             budget, project_type, message, source, status, notes, tags, custom, raw_input, \
             ai_parsed, created_at, updated_at, owner_id, contact_id) \
             SELECT unhex(r.value ->> 0), unhex(r.value ->> 1), r.value ->> 2, r.value ->> 3, \
             r.value ->> 4, r.value ->> 5, r.value ->> 6, r.value ->> 7, r.value ->> 8, \
             r.value ->> 9, r.value ->> 10, r.value ->> 11, r.value ->> 12, r.value ->> 13, \
             r.value ->> 14, r.value ->> 15, r.value ->> 16, r.value ->> 17, r.value ->> 18, \
             unhex(r.value ->> 19), unhex(r.value ->> 20) \
             FROM json_each($1) AS r WHERE true \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(Json(Value::Array(std::mem::take(&mut rows))))
        .fetch_all(&mut *tx)
        .await?;
        inserted.extend(ids.into_iter().map(|(id,)| id));
        bytes = 0;
    }
    Ok(inserted)
}

/// About the most text one JSON parameter of [`insert_leads_json`] carries.
const JSON_PARAM_BYTES: usize = 4 << 20;

/// Writes one batch of an import in one transaction: the rows are resolved against
/// the leads holding their emails and phones (locked), changed leads are written
/// (those giving up a key first park it on a placeholder, so a key moving between
/// leads, even a swap, never meets the unique indexes), then new leads inserted
/// many per statement; a status change is
/// recorded on the timeline; per-lead events only with `lead_events`. On Postgres
/// the workspace row is locked first (`FOR NO KEY UPDATE`), so two imports into one
/// workspace take turns batch by batch instead of deadlocking on each other's new
/// keys. A dry run does the same and rolls it back. `report` counts the rows (`read`
/// of them were read) once the batch is committed and, for a tracked import, is
/// saved in the same transaction (a dry run's after the rollback), so its
/// `rows_done` is always what is committed (for a dry run: checked).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn import_batch(
    pool: &Pool,
    ctx: &Ctx<'_>,
    rows: Vec<Checked>,
    read: u64,
    lead_events: bool,
    dry_run: bool,
    report: &mut ImportReport,
    tracked: bool,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    if tx.dialect() == Dialect::Postgres {
        query("SELECT id FROM crm_workspaces WHERE id = $1 FOR NO KEY UPDATE")
            .bind(ctx.ws)
            .execute(&mut tx)
            .await?;
        // The lookups' key lists change every batch: a generic plan for them (which
        // Postgres picks after five runs) scanned the workspace's leads comparing
        // each with every key, seconds per batch at 100,000 leads.
        query("SET LOCAL plan_cache_mode = force_custom_plan")
            .execute(&mut tx)
            .await?;
    }
    let (emails, phones) = Resolver::keys(&rows);
    let mut resolver = Resolver::default();
    for lead in by_contacts(&mut tx, ctx.ws, &emails, &phones).await? {
        resolver.stored(lead);
    }
    let mut outcomes: Vec<Outcome> = rows
        .into_iter()
        .map(|row| resolver.apply(row, ctx.ws, ctx.now))
        .collect();
    let writes = resolver.take();
    let subscribers = match lead_events {
        true => Some(outbox::subscribers(&mut tx, ctx.ws).await?),
        false => None,
    };
    // Keys that move between leads of this batch: the leads giving one up first
    // take a placeholder no real key can be (no `@`, no `+`), so the final writes
    // below can go in any order (a swap included) without meeting the unique indexes.
    for (old, new) in &writes.updates {
        let email_moves = old.email.as_ref().map(Email::key) != new.email.as_ref().map(Email::key);
        let phone_moves = old.phone != new.phone;
        if (email_moves && old.email.is_some()) || (phone_moves && old.phone.is_some()) {
            let placeholder = format!("moving:{}", old.id);
            query("UPDATE crm_leads SET email_key = $3, phone = $4 WHERE workspace_id = $1 AND id = $2")
                .bind(ctx.ws)
                .bind(old.id)
                .bind(match email_moves {
                    true => old.email.as_ref().map(|_| placeholder.clone()),
                    false => old.email.as_ref().map(Email::key),
                })
                .bind(match phone_moves {
                    true => old.phone.as_ref().map(|_| placeholder.clone()),
                    false => old.phone.as_ref().map(|p| p.as_str().to_owned()),
                })
                .execute(&mut tx)
                .await?;
        }
    }
    let mut events = Vec::new();
    for (old, new) in &writes.updates {
        write_lead(&mut tx, new).await?;
        if old.status != new.status {
            let activity = Activity {
                old_status: Some(old.status),
                new_status: Some(new.status),
                ..ctx.activity(new.id, ActivityKind::StatusChange, None)
            };
            insert_activity(&mut tx, ctx.ws, &activity).await?;
            if subscribers.is_some() {
                let data =
                    json!({ "lead": new, "old_status": old.status, "new_status": new.status });
                events.push(ctx.event(EventType::LeadStatusChanged, new.id, data));
            }
        }
        if subscribers.is_some() {
            let data = json!({ "lead": new, "changed": rules::diff(old, new) });
            events.push(ctx.event(EventType::LeadUpdated, new.id, data));
        }
    }
    let inserted = insert_leads(&mut tx, writes.creates.iter().map(|(l, _)| l)).await?;
    for (lead, made_by) in &writes.creates {
        if !inserted.contains(&lead.id) {
            // A concurrent write took its email or phone after the lookup.
            for &(at, row, line) in made_by {
                if let Some(o) = outcomes.get_mut(at) {
                    *o = Outcome::Failed(RowError {
                        row,
                        line,
                        field: None,
                        message: "a lead with this email or phone was created meanwhile".into(),
                    });
                }
            }
            continue;
        }
        if subscribers.is_some() {
            events.push(ctx.event(EventType::LeadCreated, lead.id, json!({ "lead": lead })));
        }
    }
    if let Some(subscribers) = &subscribers {
        let with: Vec<_> = events.iter().map(|e| (e, subscribers)).collect();
        outbox::insert_events(&mut tx, &with).await?;
    }
    let mut next = report.clone();
    for o in outcomes {
        next.count(o);
    }
    next.rows_done += read;
    next.updated_at = ctx.now;
    if dry_run {
        drop(tx);
        if tracked {
            super::imports::update(pool, ctx.ws, &next).await?;
        }
    } else {
        if tracked {
            super::imports::save(&mut tx, ctx.ws, &next).await?;
        }
        tx.commit().await?;
    }
    *report = next;
    Ok(())
}

/// Ends an import: its `leads.imported` event when it wrote anything, and a
/// tracked import's last state, together.
pub(crate) async fn import_finish(
    pool: &Pool,
    ws: WorkspaceId,
    report: &ImportReport,
    tracked: bool,
) -> Result<()> {
    let wrote = !report.dry_run && report.created + report.updated > 0;
    if !wrote && !tracked {
        return Ok(());
    }
    let mut tx = pool.begin_write().await?;
    if wrote {
        let data = json!({
            "import_id": report.id,
            "rows": report.rows_done,
            "created": report.created,
            "updated": report.updated,
            "skipped": report.skipped,
            "failed": report.failed,
        });
        let event =
            crate::events::Event::new(ws, EventType::LeadsImported, None, data, report.updated_at);
        outbox::insert_event(&mut tx, &event).await?;
    }
    if tracked {
        super::imports::save(&mut tx, ws, report).await?;
    }
    tx.commit().await?;
    if !report.dry_run && report.created >= ANALYZE_AFTER {
        analyze(pool, "an import").await;
    }
    Ok(())
}

/// The new leads after which an import refreshes Postgres's statistics.
const ANALYZE_AFTER: u64 = 10_000;

/// Refreshes Postgres's statistics of the leads (nothing on SQLite). Many new leads
/// leave them behind until autovacuum gets to them (after up to a minute, and never
/// where it is off), and until then a workspace's listing is planned as a scan and
/// a sort of all its leads: 120 ms a page at 100,000 new leads instead of 0.6 ms,
/// 44 pages/s against 4,500 in `scripts/bench-http.sh`. Called after a large import
/// and by the lead writer as the table grows ([`crate::leads`]'s batches); the
/// writes are done either way, so a failure is only logged. A role that does not
/// own the table (the app role under row-level security) gets a warning from
/// Postgres instead and the table is skipped: its statistics then come from
/// autovacuum alone (or, on Postgres 17 and later, `GRANT MAINTAIN ON crm_leads`).
pub(crate) async fn analyze(pool: &Pool, after: &str) {
    if pool.dialect() != Dialect::Postgres {
        return;
    }
    if let Err(e) = query("ANALYZE crm_leads").execute(pool).await {
        tracing::warn!(error = %crate::error::Chain(&e), "ANALYZE crm_leads after {after} failed");
    }
}

/// The custom-field keys of the workspace's leads, sorted, at most `max + 1` (so a
/// caller knows there are more than `max`).
pub(crate) async fn custom_keys(pool: &Pool, ws: WorkspaceId, max: usize) -> Result<Vec<String>> {
    let from = match pool.dialect() {
        Dialect::Sqlite => "json_each(l.custom) j",
        Dialect::Postgres => "jsonb_each(l.custom) j",
    };
    let rows: Vec<(String,)> = query(format!(
        "SELECT DISTINCT j.key FROM crm_leads l, {from} WHERE l.workspace_id = $1 \
         ORDER BY 1 LIMIT {}",
        max + 1
    ))
    .bind(ws)
    .fetch_all(pool)
    .await?;
    // Sorted by bytes here: the databases' collations differ.
    let mut keys: Vec<String> = rows.into_iter().map(|(k,)| k).collect();
    keys.sort_unstable();
    Ok(keys)
}
