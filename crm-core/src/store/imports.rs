//! Tracked imports ([`crate::Leads::start_import`]): one row per import holding its
//! report, saved in the transaction of each batch it commits.

use serde_json::Value;
use sqlx::types::Json;

use super::sql::{query, query_as, Tx};
use super::{corrupt, Pool, Ts};
use crate::ids::{ImportId, WorkspaceId};
use crate::leads::import::ImportReport;
use crate::{Error, Result};

fn json(report: &ImportReport) -> Result<Json<Value>> {
    serde_json::to_value(report)
        .map(Json)
        .map_err(|e| Error::Config(format!("an import report does not serialise: {e}")))
}

/// Records a new import.
pub(crate) async fn insert(pool: &Pool, ws: WorkspaceId, report: &ImportReport) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query(
        "INSERT INTO crm_imports (id, workspace_id, report, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(report.id)
    .bind(ws)
    .bind(json(report)?)
    .bind(Ts(report.created_at))
    .bind(Ts(report.updated_at))
    .execute(&mut tx)
    .await?;
    tx.commit().await
}

/// Saves an import's report, inside the caller's transaction.
pub(crate) async fn save(tx: &mut Tx, ws: WorkspaceId, report: &ImportReport) -> Result<()> {
    query(
        "UPDATE crm_imports SET report = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2",
    )
    .bind(ws)
    .bind(report.id)
    .bind(json(report)?)
    .bind(Ts(report.updated_at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Saves an import's report in a transaction of its own.
pub(crate) async fn update(pool: &Pool, ws: WorkspaceId, report: &ImportReport) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    save(&mut tx, ws, report).await?;
    tx.commit().await
}

/// An import of the workspace.
pub(crate) async fn get(pool: &Pool, ws: WorkspaceId, id: ImportId) -> Result<ImportReport> {
    let (report,) = query_as::<(Json<Value>,)>(
        "SELECT report FROM crm_imports WHERE workspace_id = $1 AND id = $2",
    )
    .bind(ws)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound { entity: "import" })?;
    serde_json::from_value(report.0).map_err(|_| corrupt("import report"))
}
