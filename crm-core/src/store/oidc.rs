//! OpenID Connect sign-in: a workspace's providers (changed in one transaction
//! with the actor's role checked on their row and the audit entry), the sign-ins
//! under way (taken once by their state), and the issuer subjects linked to users.

use sqlx::FromRow;

use super::sql::{query, query_as, Tx};
use super::users::{UserRow, USER_COLUMNS};
use super::{audit, integrations, Pool, Ts};
use crate::audit::AuditEntry;
use crate::auth::model::User;
use crate::ids::{UserId, WorkspaceId};
use crate::{Error, Result};

const PROVIDER_COLUMNS: &str = "workspace_id, name, issuer, client_id, client_secret, \
    allowed_domains, allow_signup, created_at, updated_at";

/// A stored provider; `client_secret` is sealed, `allowed_domains` a JSON array.
#[derive(FromRow, Clone)]
pub(crate) struct ProviderRow {
    pub(crate) workspace_id: WorkspaceId,
    pub(crate) name: String,
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<String>,
    pub(crate) allowed_domains: String,
    pub(crate) allow_signup: bool,
    pub(crate) created_at: Ts,
    pub(crate) updated_at: Ts,
}

/// A sign-in under way, as its callback takes it.
#[derive(FromRow)]
pub(crate) struct LoginRow {
    pub(crate) workspace_id: WorkspaceId,
    pub(crate) provider: String,
    pub(crate) issuer: String,
    pub(crate) nonce: String,
    pub(crate) code_verifier: String,
    pub(crate) redirect_uri: String,
    pub(crate) return_to: Option<String>,
    pub(crate) remember: bool,
    pub(crate) expires_at: Ts,
}

/// The workspace's providers, by name.
pub(crate) async fn providers(pool: &Pool, ws: WorkspaceId) -> Result<Vec<ProviderRow>> {
    let sql = format!(
        "SELECT {PROVIDER_COLUMNS} FROM crm_oidc_providers WHERE workspace_id = $1 ORDER BY name"
    );
    query_as::<ProviderRow>(&sql).bind(ws).fetch_all(pool).await
}

/// One provider of the workspace.
pub(crate) async fn provider(
    pool: &Pool,
    ws: WorkspaceId,
    name: &str,
) -> Result<Option<ProviderRow>> {
    let sql = format!(
        "SELECT {PROVIDER_COLUMNS} FROM crm_oidc_providers WHERE workspace_id = $1 AND name = $2"
    );
    query_as::<ProviderRow>(&sql)
        .bind(ws)
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// Inserts or replaces a provider (its creation time stays) when `check` allows
/// the actor, with its audit entry; returns the row as stored.
pub(crate) async fn save_provider(
    pool: &Pool,
    row: &ProviderRow,
    by: Option<UserId>,
    check: impl FnOnce(Option<&User>) -> Result<()>,
    audit: &AuditEntry,
) -> Result<ProviderRow> {
    let mut tx = pool.begin_write().await?;
    integrations::authorize(&mut tx, row.workspace_id, by, check).await?;
    query(
        "INSERT INTO crm_oidc_providers (workspace_id, name, issuer, client_id, client_secret, \
         allowed_domains, allow_signup, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (workspace_id, name) \
         DO UPDATE SET issuer = excluded.issuer, client_id = excluded.client_id, \
         client_secret = excluded.client_secret, allowed_domains = excluded.allowed_domains, \
         allow_signup = excluded.allow_signup, updated_at = excluded.updated_at",
    )
    .bind(row.workspace_id)
    .bind(row.name.as_str())
    .bind(row.issuer.as_str())
    .bind(row.client_id.as_str())
    .bind(row.client_secret.as_deref())
    .bind(row.allowed_domains.as_str())
    .bind(row.allow_signup)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(&mut tx)
    .await?;
    forget_unnamed_issuers(&mut tx, row.workspace_id).await?;
    audit::insert_audit(&mut tx, audit).await?;
    let sql = format!(
        "SELECT {PROVIDER_COLUMNS} FROM crm_oidc_providers WHERE workspace_id = $1 AND name = $2"
    );
    let saved = query_as::<ProviderRow>(&sql)
        .bind(row.workspace_id)
        .bind(row.name.as_str())
        .fetch_one(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(saved)
}

/// Links to an issuer no provider of the workspace names any more: deleted, so
/// that should the issuer come back (its domain in other hands) its old subjects
/// are strangers again.
async fn forget_unnamed_issuers(tx: &mut Tx, ws: WorkspaceId) -> Result<()> {
    query(
        "DELETE FROM crm_oidc_identities WHERE workspace_id = $1 AND issuer NOT IN \
         (SELECT issuer FROM crm_oidc_providers WHERE workspace_id = $1)",
    )
    .bind(ws)
    .execute(tx)
    .await?;
    Ok(())
}

/// Deletes a provider when `check` allows the actor, with its audit entry, the
/// sign-ins under way with it and the links to its issuer (unless another
/// provider of the workspace names it); `NotFound` when there is none of that
/// name. The users it linked keep their accounts.
pub(crate) async fn delete_provider(
    pool: &Pool,
    ws: WorkspaceId,
    name: &str,
    by: Option<UserId>,
    check: impl FnOnce(Option<&User>) -> Result<()>,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    integrations::authorize(&mut tx, ws, by, check).await?;
    let done = query("DELETE FROM crm_oidc_providers WHERE workspace_id = $1 AND name = $2")
        .bind(ws)
        .bind(name)
        .execute(&mut tx)
        .await?;
    if done == 0 {
        return Err(Error::NotFound {
            entity: "sign-in provider",
        });
    }
    query("DELETE FROM crm_oidc_logins WHERE workspace_id = $1 AND provider = $2")
        .bind(ws)
        .bind(name)
        .execute(&mut tx)
        .await?;
    forget_unnamed_issuers(&mut tx, ws).await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Records a sign-in under way.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_login(
    pool: &Pool,
    state_hash: &str,
    ws: WorkspaceId,
    (provider, issuer): (&str, &str),
    (nonce, code_verifier): (&str, &str),
    (redirect_uri, return_to): (&str, Option<&str>),
    remember: bool,
    (created_at, expires_at): (Ts, Ts),
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query(
        "INSERT INTO crm_oidc_logins (state_hash, workspace_id, provider, issuer, nonce, \
         code_verifier, redirect_uri, return_to, remember, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(state_hash)
    .bind(ws)
    .bind(provider)
    .bind(issuer)
    .bind(nonce)
    .bind(code_verifier)
    .bind(redirect_uri)
    .bind(return_to)
    .bind(remember)
    .bind(created_at)
    .bind(expires_at)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Takes (deletes and returns) the sign-in whose state hashes to `state_hash`:
/// a state works once, whatever the callback's outcome.
pub(crate) async fn take_login(pool: &Pool, state_hash: &str) -> Result<Option<LoginRow>> {
    let mut tx = pool.begin_write().await?;
    let row = query_as::<LoginRow>(
        "DELETE FROM crm_oidc_logins WHERE state_hash = $1 RETURNING workspace_id, provider, \
         issuer, nonce, code_verifier, redirect_uri, return_to, remember, expires_at",
    )
    .bind(state_hash)
    .fetch_optional(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// The user an issuer's subject is linked to in the workspace, with its password
/// hash.
pub(crate) async fn linked_user(
    pool: &Pool,
    ws: WorkspaceId,
    issuer: &str,
    subject: &str,
) -> Result<Option<(User, String)>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM crm_users WHERE workspace_id = $1 AND id = \
         (SELECT user_id FROM crm_oidc_identities WHERE workspace_id = $1 AND issuer = $2 \
         AND subject = $3)"
    );
    query_as::<UserRow>(&sql)
        .bind(ws)
        .bind(issuer)
        .bind(subject)
        .fetch_optional(pool)
        .await?
        .map(UserRow::into_user)
        .transpose()
}

/// Links an issuer's subject to a user (whose email the issuer verified: the
/// user's email counts as verified from now on), with its audit entry. A subject
/// linked meanwhile keeps its first link. When the user's email was not verified
/// until now and `replace_password` is given, the password hash becomes that one
/// and the user's sessions end.
pub(crate) async fn link(
    pool: &Pool,
    u: &User,
    (issuer, subject): (&str, &str),
    now: Ts,
    replace_password: Option<&str>,
    audit: &AuditEntry,
) -> Result<bool> {
    let mut tx = pool.begin_write().await?;
    query(
        "INSERT INTO crm_oidc_identities (workspace_id, issuer, subject, user_id, email, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace_id, issuer, subject) DO NOTHING",
    )
    .bind(u.workspace_id)
    .bind(issuer)
    .bind(subject)
    .bind(u.id.0)
    .bind(u.email.as_str())
    .bind(now)
    .execute(&mut tx)
    .await?;
    let verified_now = query(
        "UPDATE crm_users SET email_verified_at = $3, password_hash = COALESCE($4, password_hash) \
         WHERE workspace_id = $1 AND id = $2 AND email_verified_at IS NULL",
    )
    .bind(u.workspace_id)
    .bind(u.id.0)
    .bind(now)
    .bind(replace_password)
    .execute(&mut tx)
    .await?;
    let replaced = verified_now > 0 && replace_password.is_some();
    if replaced {
        query("DELETE FROM crm_sessions WHERE workspace_id = $1 AND user_id = $2")
            .bind(u.workspace_id)
            .bind(u.id.0)
            .execute(&mut tx)
            .await?;
    }
    let mut audit = audit.clone();
    audit.details["password_replaced"] = serde_json::json!(replaced);
    audit::insert_audit(&mut tx, &audit).await?;
    tx.commit().await?;
    Ok(replaced)
}
