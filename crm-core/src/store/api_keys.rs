//! API keys: the key rows (only the hash of a secret is stored), their lookup by
//! hash, and key changes (revoke, rotate) as one locked read-modify-write with the
//! audit entry in the same transaction.

use serde_json::json;
use sqlx::types::Json;
use sqlx::FromRow;

use super::sql::{query, query_as, Exec, Tx};
use super::workspaces::{Quota, QuotaKind};
use super::{audit, corrupt, owned_rows, workspaces, Pool, Ts};
use crate::api_keys::model::ApiKey;
use crate::api_keys::scope::Scope;
use crate::audit::AuditEntry;
use crate::ids::{ApiKeyId, WorkspaceId};
use crate::{Error, Result};

const API_KEY_COLUMNS: &str =
    "id, workspace_id, name, display_prefix, scopes, created_by, created_at, \
    updated_at, expires_at, revoked_at, last_used_at, replaced_by";

#[derive(FromRow)]
pub(crate) struct ApiKeyRow {
    id: ApiKeyId,
    workspace_id: WorkspaceId,
    name: String,
    display_prefix: String,
    scopes: Json<Vec<String>>,
    created_by: Option<String>,
    created_at: Ts,
    updated_at: Ts,
    expires_at: Option<Ts>,
    revoked_at: Option<Ts>,
    last_used_at: Option<Ts>,
    replaced_by: Option<ApiKeyId>,
}

impl ApiKeyRow {
    fn into_key(self) -> Result<ApiKey> {
        Ok(ApiKey {
            id: self.id,
            workspace_id: self.workspace_id,
            name: self.name,
            display_prefix: self.display_prefix,
            scopes: self
                .scopes
                .0
                .iter()
                .map(|s| Scope::parse(s).map_err(|_| corrupt("scope")))
                .collect::<Result<_>>()?,
            created_by: self.created_by,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
            expires_at: self.expires_at.map(|t| t.0),
            revoked_at: self.revoked_at.map(|t| t.0),
            last_used_at: self.last_used_at.map(|t| t.0),
            replaced_by: self.replaced_by,
        })
    }
}

/// What a change to an API key writes: the key's new state, maybe a new key (with
/// its hash), and the audit entry.
pub(crate) struct KeyChange {
    pub key: ApiKey,
    pub new_key: Option<(ApiKey, String)>,
    pub audit: AuditEntry,
}

async fn insert_api_key(conn: &mut Tx, k: &ApiKey, hash: &str) -> Result<()> {
    query(
        "INSERT INTO crm_api_keys (id, workspace_id, name, key_hash, display_prefix, scopes, \
         created_by, created_at, updated_at, expires_at, revoked_at, last_used_at, replaced_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, NULL)",
    )
    .bind(k.id.0)
    .bind(k.workspace_id)
    .bind(k.name.as_str())
    .bind(hash)
    .bind(k.display_prefix.as_str())
    .bind(Json(json!(k.scopes)))
    .bind(k.created_by.as_deref())
    .bind(Ts(k.created_at))
    .bind(Ts(k.updated_at))
    .bind(k.expires_at.map(Ts))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn create_api_key(
    pool: &Pool,
    k: &ApiKey,
    hash: &str,
    audit: &AuditEntry,
    limit: u32,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    workspaces::check_quota(
        &mut tx,
        k.workspace_id,
        Quota::new(QuotaKind::ApiKeys, limit, Ts(k.created_at)),
    )
    .await?;
    insert_api_key(&mut tx, k, hash).await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

async fn fetch_api_key(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    id: ApiKeyId,
    lock: bool,
) -> Result<ApiKey> {
    let on = conn.on();
    let sql = format!(
        "SELECT {API_KEY_COLUMNS} FROM crm_api_keys WHERE workspace_id = $1 AND id = $2{}",
        if lock { on.dialect().for_update() } else { "" }
    );
    query_as::<ApiKeyRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .fetch_optional(on)
        .await?
        .ok_or(Error::NotFound { entity: "api key" })?
        .into_key()
}

pub(crate) async fn get_api_key(pool: &Pool, ws: WorkspaceId, id: ApiKeyId) -> Result<ApiKey> {
    let mut conn = pool.acquire().await?;
    fetch_api_key(&mut conn, ws, id, false).await
}

pub(crate) async fn list_api_keys(pool: &Pool, ws: WorkspaceId) -> Result<Vec<ApiKey>> {
    let rows: Vec<ApiKeyRow> = owned_rows(pool, API_KEY_COLUMNS, "crm_api_keys", ws, None).await?;
    rows.into_iter().map(ApiKeyRow::into_key).collect()
}

/// Looks a key up by the hex SHA-256 of the whole key, in any workspace.
pub(crate) async fn find_api_key(pool: &Pool, hash: &str) -> Result<Option<ApiKey>> {
    let mut sql = query(format!(
        "SELECT {API_KEY_COLUMNS} FROM crm_api_keys WHERE key_hash = "
    ));
    sql.push_bind(hash.to_owned());
    let rows: Vec<ApiKeyRow> = sql.fetch_all(pool).await?;
    rows.into_iter().next().map(ApiKeyRow::into_key).transpose()
}

/// Reads the key under a lock, lets `f` decide the change, and writes it with its
/// audit entry (and the new key of a rotation) in one transaction.
pub(crate) async fn change_api_key<F>(
    pool: &Pool,
    ws: WorkspaceId,
    id: ApiKeyId,
    f: F,
) -> Result<(ApiKey, Option<ApiKey>)>
where
    F: FnOnce(ApiKey) -> Result<KeyChange> + Send,
{
    let mut tx = pool.begin_write().await?;
    let old = fetch_api_key(&mut tx, ws, id, true).await?;
    let change = f(old)?;
    let k = &change.key;
    if let Some((new, hash)) = &change.new_key {
        insert_api_key(&mut tx, new, hash).await?;
    }
    query(
        "UPDATE crm_api_keys SET name = $3, scopes = $4, updated_at = $5, expires_at = $6, \
         revoked_at = $7, replaced_by = $8 WHERE workspace_id = $1 AND id = $2",
    )
    .bind(ws)
    .bind(id.0)
    .bind(k.name.as_str())
    .bind(Json(json!(k.scopes)))
    .bind(Ts(k.updated_at))
    .bind(k.expires_at.map(Ts))
    .bind(k.revoked_at.map(Ts))
    .bind(k.replaced_by.map(|r| r.0))
    .execute(&mut tx)
    .await?;
    audit::insert_audit(&mut tx, &change.audit).await?;
    tx.commit().await?;
    Ok((change.key, change.new_key.map(|(k, _)| k)))
}

/// Records a use; never moves `last_used_at` backwards.
pub(crate) async fn touch_api_key(
    pool: &Pool,
    id: ApiKeyId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    query(
        "UPDATE crm_api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
    )
    .bind(id.0)
    .bind(Ts(now))
    .execute(pool)
    .await?;
    Ok(())
}
