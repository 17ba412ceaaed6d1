//! Webhook endpoints: rows with their sealed signing secrets; a change is one locked
//! read-modify-write with its audit entry, so an update cannot undo what the
//! dispatcher wrote meanwhile (an auto-disable, a failure count).

use serde_json::json;
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{query, query_as, Tx};
use super::workspaces::{Quota, QuotaKind};
use super::{audit, owned_rows, workspaces, Pool, Ts};
use crate::audit::AuditEntry;
use crate::ids::{EndpointId, WorkspaceId};
use crate::webhooks::model::Endpoint;
use crate::webhooks::model::SealedSecrets;
use crate::{Error, Result};

const ENDPOINT_COLUMNS: &str = "id, workspace_id, url, description, event_types, enabled, secret, \
    previous_secret, previous_secret_until, rate_limit_per_minute, consecutive_failures, last_success_at, \
    last_failure_at, disabled_reason, created_at, updated_at";

#[derive(FromRow)]
pub(crate) struct EndpointRow {
    id: EndpointId,
    workspace_id: WorkspaceId,
    url: String,
    description: Option<String>,
    event_types: Json<Vec<String>>,
    enabled: bool,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_until: Option<Ts>,
    rate_limit_per_minute: Option<i64>,
    consecutive_failures: i64,
    last_success_at: Option<Ts>,
    last_failure_at: Option<Ts>,
    disabled_reason: Option<String>,
    created_at: Ts,
    updated_at: Ts,
}

impl EndpointRow {
    fn into_endpoint(self) -> (Endpoint, SealedSecrets) {
        let ep = Endpoint {
            id: self.id,
            workspace_id: self.workspace_id,
            url: self.url,
            description: self.description,
            event_types: self.event_types.0,
            enabled: self.enabled,
            rate_limit_per_minute: self
                .rate_limit_per_minute
                .and_then(|l| u32::try_from(l).ok()),
            consecutive_failures: u32::try_from(self.consecutive_failures).unwrap_or(u32::MAX),
            last_success_at: self.last_success_at.map(|t| t.0),
            last_failure_at: self.last_failure_at.map(|t| t.0),
            disabled_reason: self.disabled_reason,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        };
        let sealed = SealedSecrets {
            current: self.secret,
            previous: self.previous_secret,
            previous_until: self.previous_secret_until.map(|t| t.0),
        };
        (ep, sealed)
    }
}

/// What a change to an endpoint writes: the endpoint as it is to be, a secret
/// rotation (new sealed secret, previous sealed secret, end of their overlap) and
/// the audit entry.
pub(crate) struct EndpointChange {
    pub(crate) endpoint: Endpoint,
    pub(crate) rotation: Option<(String, String, chrono::DateTime<chrono::Utc>)>,
    pub(crate) audit: AuditEntry,
}

async fn write_endpoint(conn: &mut Tx, ep: &Endpoint) -> Result<()> {
    query(
        "UPDATE crm_webhook_endpoints SET url = $3, description = $4, event_types = $5, enabled = $6, \
         rate_limit_per_minute = $7, consecutive_failures = $8, disabled_reason = $9, updated_at = $10 \
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(ep.workspace_id)
    .bind(ep.id.0)
    .bind(ep.url.as_str())
    .bind(ep.description.as_deref())
    .bind(Json(json!(ep.event_types)))
    .bind(ep.enabled)
    .bind(ep.rate_limit_per_minute.map(i64::from))
    .bind(i64::from(ep.consecutive_failures))
    .bind(ep.disabled_reason.as_deref())
    .bind(Ts(ep.updated_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn create_endpoint(
    pool: &Pool,
    ep: &Endpoint,
    sealed: &str,
    audit: &AuditEntry,
    limit: u32,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    workspaces::check_quota(
        &mut tx,
        ep.workspace_id,
        Quota::new(QuotaKind::Endpoints, limit, Ts(ep.created_at)),
    )
    .await?;
    query(
        "INSERT INTO crm_webhook_endpoints (id, workspace_id, url, description, event_types, enabled, secret, \
         rate_limit_per_minute, consecutive_failures, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10)",
    )
    .bind(ep.id.0)
    .bind(ep.workspace_id)
    .bind(ep.url.as_str())
    .bind(ep.description.as_deref())
    .bind(Json(json!(ep.event_types)))
    .bind(ep.enabled)
    .bind(sealed)
    .bind(ep.rate_limit_per_minute.map(i64::from))
    .bind(Ts(ep.created_at))
    .bind(Ts(ep.updated_at))
    .execute(&mut tx)
    .await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn list_endpoints(pool: &Pool, ws: WorkspaceId) -> Result<Vec<Endpoint>> {
    let rows: Vec<EndpointRow> =
        owned_rows(pool, ENDPOINT_COLUMNS, "crm_webhook_endpoints", ws, None).await?;
    Ok(rows.into_iter().map(|r| r.into_endpoint().0).collect())
}

pub(crate) async fn get_endpoint(
    pool: &Pool,
    ws: WorkspaceId,
    id: EndpointId,
) -> Result<(Endpoint, SealedSecrets)> {
    let rows: Vec<EndpointRow> = owned_rows(
        pool,
        ENDPOINT_COLUMNS,
        "crm_webhook_endpoints",
        ws,
        Some(id.0),
    )
    .await?;
    let row = rows.into_iter().next().ok_or(Error::NotFound {
        entity: "webhook endpoint",
    })?;
    Ok(row.into_endpoint())
}

/// The one way to change an endpoint: it is read and locked in a write
/// transaction, `f` decides the change from the row as it is now, and the change
/// is written with its audit entry before the lock goes. A delivery that disables
/// the endpoint meanwhile waits for the lock or is seen by `f`: never undone.
pub(crate) async fn change_endpoint<F>(
    pool: &Pool,
    ws: WorkspaceId,
    id: EndpointId,
    f: F,
) -> Result<Endpoint>
where
    F: FnOnce(Endpoint, SealedSecrets) -> Result<EndpointChange>,
{
    let mut tx = pool.begin_write().await?;
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM crm_webhook_endpoints WHERE workspace_id = $1 AND id = $2{}",
        tx.dialect().for_update()
    );
    let (ep, sealed) = query_as::<EndpointRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .fetch_optional(&mut tx)
        .await?
        .ok_or(Error::NotFound {
            entity: "webhook endpoint",
        })?
        .into_endpoint();
    let change = f(ep, sealed)?;
    let ep = &change.endpoint;
    write_endpoint(&mut tx, ep).await?;
    if let Some((new, previous, until)) = &change.rotation {
        query(
            "UPDATE crm_webhook_endpoints SET secret = $3, previous_secret = $4, previous_secret_until = $5 \
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(ep.workspace_id)
        .bind(ep.id.0)
        .bind(new.as_str())
        .bind(previous.as_str())
        .bind(Ts(*until))
        .execute(&mut tx)
        .await?;
    }
    audit::insert_audit(&mut tx, &change.audit).await?;
    tx.commit().await?;
    Ok(change.endpoint)
}

pub(crate) async fn delete_endpoint(
    pool: &Pool,
    ws: WorkspaceId,
    id: EndpointId,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query("DELETE FROM crm_jobs WHERE workspace_id = $1 AND target_id = $2 AND status = 'pending'")
        .bind(ws)
        .bind(id.0)
        .execute(&mut tx)
        .await?;
    query("DELETE FROM crm_webhook_endpoints WHERE workspace_id = $1 AND id = $2")
        .bind(ws)
        .bind(id.0)
        .execute(&mut tx)
        .await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// How a failed delivery may disable its endpoint.
pub(super) struct Disable {
    pub(super) reason: String,
    /// At once (the receiver answered 410 Gone).
    pub(super) now: bool,
    /// Once this many attempts in a row have failed.
    pub(super) after_failures: u32,
}

/// Records a delivery's outcome on endpoint `id`: a success resets its failure
/// count (and moves `last_success_at`, to within a second); a failure (`disable` given) counts, and disables the endpoint as
/// `disable` says. Whether this call disabled it.
pub(super) async fn record_health(
    tx: &mut Tx,
    id: Uuid,
    now: Ts,
    disable: Option<Disable>,
) -> Result<bool> {
    let Some(disable) = disable else {
        // A healthy endpoint's row is left alone (not even locked) unless its last
        // success is over a second old: dispatchers in several processes finishing
        // deliveries to one busy endpoint do not queue on its row.
        query(
            "UPDATE crm_webhook_endpoints SET consecutive_failures = 0, last_success_at = $2 \
             WHERE id = $1 AND (consecutive_failures <> 0 OR last_success_at IS NULL \
             OR last_success_at < $3)",
        )
        .bind(id)
        .bind(now)
        .bind(Ts(now.0 - chrono::Duration::seconds(1)))
        .execute(&mut *tx)
        .await?;
        return Ok(false);
    };
    query(
        "UPDATE crm_webhook_endpoints SET consecutive_failures = consecutive_failures + 1, last_failure_at = $2 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let disabled = query(
        "UPDATE crm_webhook_endpoints SET enabled = $2, disabled_reason = $3, updated_at = $4 \
         WHERE id = $1 AND enabled AND ($5 OR consecutive_failures >= $6)",
    )
    .bind(id)
    .bind(false)
    .bind(disable.reason)
    .bind(now)
    .bind(disable.now)
    .bind(i64::from(disable.after_failures))
    .execute(&mut *tx)
    .await?;
    Ok(disabled == 1)
}
