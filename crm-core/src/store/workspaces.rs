//! Workspaces (tenants), the health ping, and the per-workspace quotas that every
//! create of a counted row checks with the workspace row locked.

use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{query, query_as, Tx};
use super::{Pool, Ts};
use crate::ids::WorkspaceId;
use crate::{Error, Result};

#[derive(FromRow)]
pub(crate) struct WorkspaceRow {
    pub name: String,
    pub created_at: Ts,
}

/// What a quota counts (see [`crate::Quotas`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum QuotaKind {
    Users,
    ApiKeys,
    Endpoints,
    Channels,
}

/// A per-workspace limit on rows of one kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    kind: QuotaKind,
    limit: u32,
    /// What "expired" is measured against.
    now: Ts,
}

impl Quota {
    pub(crate) fn new(kind: QuotaKind, limit: u32, now: Ts) -> Self {
        Self { kind, limit, now }
    }
}

/// Locks the workspace row for the rest of the transaction (on SQLite the write
/// transaction holds the lock already): writers that count what the workspace
/// holds take turns.
pub(super) async fn lock_workspace(conn: &mut Tx, ws: WorkspaceId) -> Result<()> {
    let lock = format!(
        "SELECT id FROM crm_workspaces WHERE id = $1{}",
        conn.dialect().for_no_key_update()
    );
    query_as::<(Uuid,)>(&lock)
        .bind(ws)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(())
}

/// Refuses an insert that would take workspace `ws` past `quota` rows of
/// `table` (those matching `filter`, an SQL condition). The workspace row is
/// locked first, so two creates cannot both see room for one.
pub(super) async fn check_quota(conn: &mut Tx, ws: WorkspaceId, quota: Quota) -> Result<()> {
    lock_workspace(conn, ws).await?;
    let (table, filter, what) = match quota.kind {
        QuotaKind::Users => ("crm_users", "", "users"),
        // Live keys: neither revoked nor expired (a rotated key counts until its
        // grace period ends).
        QuotaKind::ApiKeys => (
            "crm_api_keys",
            " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            "API keys",
        ),
        QuotaKind::Endpoints => ("crm_webhook_endpoints", "", "webhook endpoints"),
        QuotaKind::Channels => ("crm_notification_channels", "", "notification channels"),
    };
    let count = format!("SELECT COUNT(*) FROM {table} WHERE workspace_id = $1{filter}");
    let mut q = query_as::<(i64,)>(&count).bind(ws);
    if matches!(quota.kind, QuotaKind::ApiKeys) {
        q = q.bind(quota.now);
    }
    let (n,) = q.fetch_one(&mut *conn).await?;
    if n >= i64::from(quota.limit) {
        return Err(Error::InvalidState {
            code: "quota_exceeded",
            message: format!(
                "the workspace has reached its quota of {} {what}",
                quota.limit
            ),
        });
    }
    Ok(())
}

pub(crate) async fn ping(pool: &Pool) -> Result<()> {
    query("SELECT 1").execute(pool).await?;
    Ok(())
}

pub(crate) async fn get_workspace(pool: &Pool, ws: WorkspaceId) -> Result<WorkspaceRow> {
    query_as::<WorkspaceRow>("SELECT name, created_at FROM crm_workspaces WHERE id = $1")
        .bind(ws)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound {
            entity: "workspace",
        })
}

pub(crate) async fn rename_workspace(pool: &Pool, ws: WorkspaceId, name: &str) -> Result<()> {
    let r = query("UPDATE crm_workspaces SET name = $2 WHERE id = $1")
        .bind(ws)
        .bind(name)
        .execute(pool)
        .await?;
    if r == 0 {
        return Err(Error::NotFound {
            entity: "workspace",
        });
    }
    Ok(())
}

pub(crate) async fn create_workspace(
    pool: &Pool,
    id: WorkspaceId,
    name: &str,
    now: Ts,
) -> Result<()> {
    query("INSERT INTO crm_workspaces (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}
