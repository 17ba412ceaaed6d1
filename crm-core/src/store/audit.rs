//! The audit log: entries are written inside the transaction of the change they
//! record (or on their own, for refusals), and listed oldest first.

use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;

use super::sql::{query, Tx};
use super::{Pool, Ts};
use crate::audit::AuditEntry;
use crate::ids::{AuditId, WorkspaceId};
use crate::Result;

#[derive(FromRow)]
pub(crate) struct AuditRow {
    id: AuditId,
    workspace_id: WorkspaceId,
    actor: Option<String>,
    action: String,
    target_type: Option<String>,
    target_id: Option<String>,
    ip: Option<String>,
    details: Json<Value>,
    created_at: Ts,
}

impl AuditRow {
    fn into_entry(self) -> AuditEntry {
        AuditEntry {
            id: self.id,
            workspace_id: self.workspace_id,
            actor: self.actor,
            action: self.action,
            target_type: self.target_type,
            target_id: self.target_id,
            ip: self.ip,
            details: self.details.0,
            created_at: self.created_at.0,
        }
    }
}

pub(super) async fn insert_audit(conn: &mut Tx, a: &AuditEntry) -> Result<()> {
    query(
        "INSERT INTO crm_audit_log (id, workspace_id, actor, action, target_type, target_id, ip, \
         details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.id.0)
    .bind(a.workspace_id)
    .bind(a.actor.as_deref())
    .bind(a.action.as_str())
    .bind(a.target_type.as_deref())
    .bind(a.target_id.as_deref())
    .bind(a.ip.as_deref())
    .bind(Json(a.details.clone()))
    .bind(Ts(a.created_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Audit entries of the workspace, at most `limit`: oldest first after a cursor, or
/// newest first before one (`seek`).
pub(crate) async fn list_audit(
    pool: &Pool,
    ws: WorkspaceId,
    seek: super::sql::Seek,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let mut sql = query(
        "SELECT id, workspace_id, actor, action, target_type, target_id, ip, details, created_at \
         FROM crm_audit_log WHERE workspace_id = ",
    );
    sql.push_bind(ws.0);
    seek.push(&mut sql, limit);
    let rows: Vec<AuditRow> = sql.fetch_all(pool).await?;
    Ok(rows.into_iter().map(AuditRow::into_entry).collect())
}

/// Writes audit entries on their own (in one transaction).
pub(crate) async fn insert_audits(pool: &Pool, entries: &[AuditEntry]) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    for a in entries {
        insert_audit(&mut tx, a).await?;
    }
    tx.commit().await?;
    Ok(())
}
