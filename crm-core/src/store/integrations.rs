//! Per-workspace integrations: one row per workspace and provider kind, the
//! settings sealed; a save or delete is one transaction with the actor's role
//! checked on their row, read in it, and the audit entry.

use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{query, query_as, Exec};
use super::{audit, users, Pool, Ts};
use crate::audit::AuditEntry;
use crate::auth::model::User;
use crate::ids::{UserId, WorkspaceId};
use crate::{Error, Result};

const COLUMNS: &str = "workspace_id, kind, settings, inbound_id, created_at, updated_at";

/// A stored integration; `settings` is sealed.
#[derive(FromRow)]
pub(crate) struct IntegrationRow {
    pub(crate) workspace_id: WorkspaceId,
    pub(crate) kind: String,
    pub(crate) settings: String,
    pub(crate) inbound_id: Option<String>,
    pub(crate) created_at: Ts,
    pub(crate) updated_at: Ts,
}

/// The workspace's integrations, by kind.
pub(crate) async fn list(pool: &Pool, ws: WorkspaceId) -> Result<Vec<IntegrationRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM crm_integrations WHERE workspace_id = $1 ORDER BY kind");
    query_as::<IntegrationRow>(&sql)
        .bind(ws)
        .fetch_all(pool)
        .await
}

/// One integration of the workspace (locked, inside a write transaction on
/// Postgres, with `lock`).
async fn fetch(
    on: impl Exec<'_>,
    ws: WorkspaceId,
    kind: &str,
    lock: bool,
) -> Result<Option<IntegrationRow>> {
    let on = on.on();
    let sql = format!(
        "SELECT {COLUMNS} FROM crm_integrations WHERE workspace_id = $1 AND kind = $2{}",
        if lock { on.dialect().for_update() } else { "" }
    );
    query_as::<IntegrationRow>(&sql)
        .bind(ws)
        .bind(kind)
        .fetch_optional(on)
        .await
}

/// One integration of the workspace.
pub(crate) async fn get(
    pool: &Pool,
    ws: WorkspaceId,
    kind: &str,
) -> Result<Option<IntegrationRow>> {
    fetch(pool, ws, kind, false).await
}

/// The integration of `kind` whose inbound id is `inbound_id`, in any workspace.
pub(crate) async fn by_inbound_id(
    pool: &Pool,
    kind: &str,
    inbound_id: &str,
) -> Result<Option<IntegrationRow>> {
    let sql = format!("SELECT {COLUMNS} FROM crm_integrations WHERE inbound_id = $1 AND kind = $2");
    query_as::<IntegrationRow>(&sql)
        .bind(inbound_id)
        .bind(kind)
        .fetch_optional(pool)
        .await
}

/// Checks `check` against the acting user (read and locked in the transaction;
/// `None`: the app) after locking the workspace row (`NotFound` when there is none).
pub(super) async fn authorize(
    tx: &mut super::sql::Tx,
    ws: WorkspaceId,
    by: Option<UserId>,
    check: impl FnOnce(Option<&User>) -> Result<()>,
) -> Result<()> {
    let lock = format!(
        "SELECT id FROM crm_workspaces WHERE id = $1{}",
        tx.dialect().for_no_key_update()
    );
    query_as::<(Uuid,)>(&lock)
        .bind(ws)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound {
            entity: "workspace",
        })?;
    let actor = match by {
        Some(a) => Some(users::actor_row(users::fetch_user(&mut *tx, ws, a).await)?),
        None => None,
    };
    check(actor.as_ref())
}

/// Inserts or replaces an integration's settings (its inbound id and creation time
/// stay) when `check` allows the actor and the row is still as it was read
/// (`expected`: its sealed settings, or `None` when there was none), with its audit
/// entry; returns the row. The workspace row is locked first, so two saves of one
/// workspace take turns and the second sees the first.
pub(crate) async fn save(
    pool: &Pool,
    row: &IntegrationRow,
    expected: Option<String>,
    by: Option<UserId>,
    check: impl FnOnce(Option<&User>) -> Result<()>,
    audit: &AuditEntry,
) -> Result<IntegrationRow> {
    let mut tx = pool.begin_write().await?;
    authorize(&mut tx, row.workspace_id, by, check).await?;
    let now = fetch(&mut tx, row.workspace_id, &row.kind, true)
        .await?
        .map(|r| r.settings);
    if now != expected {
        return Err(Error::Conflict {
            message: "the integration changed while it was being saved: load it and save again"
                .into(),
            field: None,
            existing_id: None,
        });
    }
    query(
        "INSERT INTO crm_integrations (workspace_id, kind, settings, inbound_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace_id, kind) \
         DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at, \
         inbound_id = COALESCE(crm_integrations.inbound_id, excluded.inbound_id)",
    )
    .bind(row.workspace_id)
    .bind(row.kind.as_str())
    .bind(row.settings.as_str())
    .bind(row.inbound_id.as_deref())
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(&mut tx)
    .await?;
    audit::insert_audit(&mut tx, audit).await?;
    let saved = fetch(&mut tx, row.workspace_id, &row.kind, false).await?;
    tx.commit().await?;
    saved.ok_or(Error::NotFound {
        entity: "integration",
    })
}

/// Deletes an integration when `check` allows the actor, with its audit entry;
/// `NotFound` when the workspace has none of that kind.
pub(crate) async fn delete(
    pool: &Pool,
    ws: WorkspaceId,
    kind: &str,
    by: Option<UserId>,
    check: impl FnOnce(Option<&User>) -> Result<()>,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    authorize(&mut tx, ws, by, check).await?;
    let done = query("DELETE FROM crm_integrations WHERE workspace_id = $1 AND kind = $2")
        .bind(ws)
        .bind(kind)
        .execute(&mut tx)
        .await?;
    if done == 0 {
        return Err(Error::NotFound {
            entity: "integration",
        });
    }
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}
