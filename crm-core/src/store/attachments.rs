//! Attachments' rows: each insert and delete commits with its event (and, on a
//! lead, its timeline entry) or not at all. The bytes are the storage's; these
//! functions never touch them.

use serde_json::json;
use sqlx::FromRow;

use super::sql::{query, query_as, Exec, Tx};
use super::{contacts, leads, outbox, Ctx, Pool, Ts};
use crate::attachments::model::{Attachment, Parent};
use crate::events::{Event, EventType};
use crate::ids::{AttachmentId, ContactId, LeadId, WorkspaceId};
use crate::leads::values::ActivityKind;
use crate::{Error, Result};

const COLUMNS: &str = "id, lead_id, contact_id, name, size, content_type, sha256, uploaded_by, \
    created_at, storage_key";

#[derive(FromRow)]
struct AttachmentRow {
    id: AttachmentId,
    lead_id: Option<LeadId>,
    contact_id: Option<ContactId>,
    name: String,
    size: i64,
    content_type: String,
    sha256: String,
    uploaded_by: Option<String>,
    created_at: Ts,
    storage_key: String,
}

impl AttachmentRow {
    fn split(self) -> (Attachment, String) {
        let a = Attachment {
            id: self.id,
            lead_id: self.lead_id,
            contact_id: self.contact_id,
            name: self.name,
            size: u64::try_from(self.size).unwrap_or(0),
            content_type: self.content_type,
            sha256: self.sha256,
            uploaded_by: self.uploaded_by,
            created_at: self.created_at.0,
        };
        (a, self.storage_key)
    }
}

/// The column and value a parent is found by.
fn parent_filter(parent: Parent) -> (&'static str, uuid::Uuid) {
    match parent {
        Parent::Lead(id) => ("lead_id", id.0),
        Parent::Contact(id) => ("contact_id", id.0),
    }
}

/// `NotFound` unless the parent is a lead or contact of the workspace; locks it
/// (the row a delete of the parent also locks) when `lock`.
async fn check_parent(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    parent: Parent,
    lock: bool,
) -> Result<()> {
    match parent {
        Parent::Lead(id) => leads::fetch_lead(conn, ws, id, lock).await.map(drop),
        Parent::Contact(id) => contacts::fetch_contact(conn, ws, id, lock).await.map(drop),
    }
}

/// The bytes the workspace's files take.
pub(crate) async fn usage(conn: impl Exec<'_>, ws: WorkspaceId) -> Result<u64> {
    let rows: Vec<(Option<i64>,)> =
        query_as("SELECT CAST(SUM(size) AS BIGINT) FROM crm_attachments WHERE workspace_id = $1")
            .bind(ws)
            .fetch_all(conn)
            .await?;
    Ok(rows
        .first()
        .and_then(|r| r.0)
        .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

fn over_quota(quota: u64) -> Error {
    Error::InvalidState {
        code: "storage_quota_exceeded",
        message: format!(
            "the file would take the workspace past its storage quota of {quota} bytes"
        ),
    }
}

/// Refuses, before any byte is stored, a file whose parent is not of the workspace
/// or that would not fit the quota now. [`insert`] checks both again.
pub(crate) async fn check_room(
    pool: &Pool,
    ws: WorkspaceId,
    parent: Parent,
    size: u64,
    quota: u64,
) -> Result<()> {
    let mut conn = pool.acquire().await?;
    check_parent(&mut conn, ws, parent, false).await?;
    if usage(&mut conn, ws).await?.saturating_add(size) > quota {
        return Err(over_quota(quota));
    }
    Ok(())
}

/// Inserts the row of a file whose bytes are stored under `key`, with its event
/// and (on a lead) its timeline entry. The workspace row is locked first, so two
/// uploads cannot both fit in the last of the quota.
pub(crate) async fn insert(
    pool: &Pool,
    ctx: &Ctx<'_>,
    a: &Attachment,
    parent: Parent,
    key: &str,
    quota: u64,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    super::workspaces::lock_workspace(&mut tx, ctx.ws).await?;
    check_parent(&mut tx, ctx.ws, parent, true).await?;
    if usage(&mut tx, ctx.ws).await?.saturating_add(a.size) > quota {
        return Err(over_quota(quota));
    }
    query(
        "INSERT INTO crm_attachments (id, workspace_id, lead_id, contact_id, name, size, \
         content_type, sha256, storage_key, uploaded_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(a.id)
    .bind(ctx.ws)
    .bind(a.lead_id)
    .bind(a.contact_id)
    .bind(a.name.as_str())
    .bind(i64::try_from(a.size).unwrap_or(i64::MAX))
    .bind(a.content_type.as_str())
    .bind(a.sha256.as_str())
    .bind(key)
    .bind(a.uploaded_by.as_deref())
    .bind(Ts(a.created_at))
    .execute(&mut tx)
    .await?;
    written(&mut tx, ctx, a, EventType::AttachmentAdded, "Attached").await?;
    tx.commit().await
}

/// The event of an added or removed file and, on a lead, its timeline entry.
async fn written(
    tx: &mut Tx,
    ctx: &Ctx<'_>,
    a: &Attachment,
    t: EventType,
    verb: &str,
) -> Result<()> {
    if let Some(lead_id) = a.lead_id {
        let description = format!("{verb} {}", a.name);
        let activity = ctx.activity(lead_id, ActivityKind::Attachment, Some(description));
        leads::insert_activity(tx, ctx.ws, &activity).await?;
    }
    let data = json!({ "attachment": a });
    outbox::insert_event(tx, &Event::new(ctx.ws, t, a.lead_id, data, ctx.now)).await
}

/// The parent's files, oldest first; `NotFound` when the parent is not of the
/// workspace.
pub(crate) async fn list(pool: &Pool, ws: WorkspaceId, parent: Parent) -> Result<Vec<Attachment>> {
    let mut conn = pool.acquire().await?;
    check_parent(&mut conn, ws, parent, false).await?;
    let (column, id) = parent_filter(parent);
    let sql = format!(
        "SELECT {COLUMNS} FROM crm_attachments WHERE workspace_id = $1 AND {column} = $2 \
         ORDER BY created_at, id"
    );
    let rows: Vec<AttachmentRow> = query_as(&sql)
        .bind(ws)
        .bind(id)
        .fetch_all(&mut conn)
        .await?;
    Ok(rows.into_iter().map(|r| r.split().0).collect())
}

/// One file and its storage key; `NotFound` unless it is the parent's (any parent
/// of the workspace when `parent` is `None`).
pub(crate) async fn get(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    parent: Option<Parent>,
    id: AttachmentId,
) -> Result<(Attachment, String)> {
    let mut sql =
        format!("SELECT {COLUMNS} FROM crm_attachments WHERE workspace_id = $1 AND id = $2");
    let by = parent.map(parent_filter);
    if let Some((column, _)) = by {
        sql.push_str(&format!(" AND {column} = $3"));
    }
    let mut q = query_as::<AttachmentRow>(&sql).bind(ws).bind(id);
    if let Some((_, parent_id)) = by {
        q = q.bind(parent_id);
    }
    q.fetch_optional(conn)
        .await?
        .map(AttachmentRow::split)
        .ok_or(Error::NotFound {
            entity: "attachment",
        })
}

/// Deletes the parent's file `id`; its event and (on a lead) timeline entry. The
/// row as it was and its storage key, for the caller to delete the bytes.
pub(crate) async fn delete(
    pool: &Pool,
    ctx: &Ctx<'_>,
    parent: Parent,
    id: AttachmentId,
) -> Result<(Attachment, String)> {
    let mut tx = pool.begin_write().await?;
    check_parent(&mut tx, ctx.ws, parent, true).await?;
    let (a, key) = get(&mut tx, ctx.ws, Some(parent), id).await?;
    query("DELETE FROM crm_attachments WHERE workspace_id = $1 AND id = $2")
        .bind(ctx.ws)
        .bind(id)
        .execute(&mut tx)
        .await?;
    written(&mut tx, ctx, &a, EventType::AttachmentRemoved, "Removed").await?;
    tx.commit().await?;
    Ok((a, key))
}

/// The storage keys of the files of a lead or contact, read in the transaction
/// that deletes it (the rows go with it, by cascade; the caller deletes the bytes
/// once it commits).
pub(crate) async fn keys_of(tx: &mut Tx, ws: WorkspaceId, parent: Parent) -> Result<Vec<String>> {
    let (column, id) = parent_filter(parent);
    let sql = format!(
        "SELECT storage_key FROM crm_attachments WHERE workspace_id = $1 AND {column} = $2"
    );
    let rows: Vec<(String,)> = query_as(&sql).bind(ws).bind(id).fetch_all(tx).await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Moves the files of `from` to lead `to` (a merge).
pub(crate) async fn move_to(tx: &mut Tx, ws: WorkspaceId, from: LeadId, to: LeadId) -> Result<u64> {
    query("UPDATE crm_attachments SET lead_id = $3 WHERE workspace_id = $1 AND lead_id = $2")
        .bind(ws)
        .bind(from)
        .bind(to)
        .execute(tx)
        .await
}

/// Which of `keys` a row names.
pub(crate) async fn known_keys(pool: &Pool, keys: &[&str]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for chunk in keys.chunks(500) {
        let mut sql = query("SELECT storage_key FROM crm_attachments WHERE storage_key IN (");
        for (i, k) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push_bind(*k);
        }
        sql.push(")");
        let rows: Vec<(String,)> = sql.fetch_all(pool).await?;
        found.extend(rows.into_iter().map(|r| r.0));
    }
    Ok(found)
}
