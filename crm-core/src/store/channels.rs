//! Notification channels: rows with their sealed configuration; a change is one
//! locked read-modify-write with its audit entry, under the workspace's quota.

use serde_json::json;
use sqlx::types::Json;
use sqlx::FromRow;

use super::sql::{query, query_as};
use super::workspaces::{Quota, QuotaKind};
use super::{audit, owned_rows, workspaces, Pool, Ts};
use crate::audit::AuditEntry;
use crate::ids::{ChannelId, WorkspaceId};
use crate::notify::model::Channel;
use crate::{Error, Result};

const CHANNEL_COLUMNS: &str =
    "id, workspace_id, kind, name, config, event_types, enabled, created_at, updated_at";

#[derive(FromRow)]
pub(crate) struct ChannelRow {
    id: ChannelId,
    workspace_id: WorkspaceId,
    kind: String,
    name: String,
    config: String,
    event_types: Json<Vec<String>>,
    enabled: bool,
    created_at: Ts,
    updated_at: Ts,
}

impl ChannelRow {
    fn into_channel(self) -> (Channel, String) {
        let c = Channel {
            id: self.id,
            workspace_id: self.workspace_id,
            kind: self.kind,
            name: self.name,
            event_types: self.event_types.0,
            enabled: self.enabled,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        };
        (c, self.config)
    }
}

/// What a change to a channel writes: the channel as it is to be, its new sealed
/// configuration (if it changes) and the audit entry.
pub(crate) struct ChannelChange {
    pub(crate) channel: Channel,
    pub(crate) sealed_config: Option<String>,
    pub(crate) audit: AuditEntry,
}

/// Inserts a channel with its audit entry, within the workspace's quota of
/// channels (checked in the same transaction).
pub(crate) async fn create_channel(
    pool: &Pool,
    c: &Channel,
    sealed: &str,
    quota: u32,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    workspaces::check_quota(
        &mut tx,
        c.workspace_id,
        Quota::new(QuotaKind::Channels, quota, Ts(c.created_at)),
    )
    .await?;
    query(
        "INSERT INTO crm_notification_channels (id, workspace_id, kind, name, config, event_types, enabled, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(c.id.0)
    .bind(c.workspace_id)
    .bind(c.kind.as_str())
    .bind(c.name.as_str())
    .bind(sealed)
    .bind(Json(json!(c.event_types)))
    .bind(c.enabled)
    .bind(Ts(c.created_at))
    .bind(Ts(c.updated_at))
    .execute(&mut tx)
    .await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// The one way to change a channel: read and locked in a write transaction, `f`
/// decides the change from the row as it is now (the channel as it is to be, a
/// new sealed configuration, the audit entry), written before the lock goes.
pub(crate) async fn change_channel<F>(
    pool: &Pool,
    ws: WorkspaceId,
    id: ChannelId,
    f: F,
) -> Result<Channel>
where
    F: FnOnce(Channel) -> Result<ChannelChange>,
{
    let mut tx = pool.begin_write().await?;
    let sql = format!(
        "SELECT {CHANNEL_COLUMNS} FROM crm_notification_channels WHERE workspace_id = $1 AND id = $2{}",
        tx.dialect().for_update()
    );
    let (c, _) = query_as::<ChannelRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .fetch_optional(&mut tx)
        .await?
        .ok_or(Error::NotFound {
            entity: "notification channel",
        })?
        .into_channel();
    let change = f(c)?;
    let c = &change.channel;
    query(
        "UPDATE crm_notification_channels SET name = $3, config = COALESCE($4, config), event_types = $5, \
         enabled = $6, updated_at = $7 WHERE workspace_id = $1 AND id = $2",
    )
    .bind(c.workspace_id)
    .bind(c.id.0)
    .bind(c.name.as_str())
    .bind(change.sealed_config.as_deref())
    .bind(Json(json!(c.event_types)))
    .bind(c.enabled)
    .bind(Ts(c.updated_at))
    .execute(&mut tx)
    .await?;
    audit::insert_audit(&mut tx, &change.audit).await?;
    tx.commit().await?;
    Ok(change.channel)
}

pub(crate) async fn list_channels(pool: &Pool, ws: WorkspaceId) -> Result<Vec<Channel>> {
    let rows: Vec<ChannelRow> =
        owned_rows(pool, CHANNEL_COLUMNS, "crm_notification_channels", ws, None).await?;
    Ok(rows.into_iter().map(|r| r.into_channel().0).collect())
}

/// A channel and its sealed configuration.
pub(crate) async fn get_channel(
    pool: &Pool,
    ws: WorkspaceId,
    id: ChannelId,
) -> Result<(Channel, String)> {
    let rows: Vec<ChannelRow> = owned_rows(
        pool,
        CHANNEL_COLUMNS,
        "crm_notification_channels",
        ws,
        Some(id.0),
    )
    .await?;
    let row = rows.into_iter().next().ok_or(Error::NotFound {
        entity: "notification channel",
    })?;
    Ok(row.into_channel())
}

pub(crate) async fn delete_channel(
    pool: &Pool,
    ws: WorkspaceId,
    id: ChannelId,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query("DELETE FROM crm_jobs WHERE workspace_id = $1 AND target_id = $2 AND status = 'pending'")
        .bind(ws)
        .bind(id.0)
        .execute(&mut tx)
        .await?;
    query("DELETE FROM crm_notification_channels WHERE workspace_id = $1 AND id = $2")
        .bind(ws)
        .bind(id.0)
        .execute(&mut tx)
        .await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}
