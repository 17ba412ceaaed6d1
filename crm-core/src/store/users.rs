//! Users: rows with their password hash, the locked reads that role and access
//! rules run on ([`crate::auth`] holds the rules), and password writes.

use sqlx::FromRow;

use super::sql::{query, query_as, Exec, Tx};
use super::workspaces::{Quota, QuotaKind};
use super::{audit, corrupt, owned_rows, sessions, workspaces, Pool, Ts};
use crate::audit::AuditEntry;
use crate::auth::model::{Role, User, UserAccess};
use crate::ids::{SessionId, UserId, WorkspaceId};
use crate::leads::values::Email;
use crate::{Error, Result};

pub(super) const USER_COLUMNS: &str =
    "id, workspace_id, email, display_name, role, password_hash, email_verified_at, disabled_at, \
    created_at, updated_at";

#[derive(FromRow)]
pub(crate) struct UserRow {
    id: UserId,
    workspace_id: WorkspaceId,
    email: String,
    display_name: String,
    role: String,
    password_hash: String,
    email_verified_at: Option<Ts>,
    disabled_at: Option<Ts>,
    created_at: Ts,
    updated_at: Ts,
}

impl UserRow {
    pub(super) fn into_user(self) -> Result<(User, String)> {
        let user = User {
            id: self.id,
            workspace_id: self.workspace_id,
            email: Email::parse(&self.email).map_err(|_| corrupt("email"))?,
            display_name: self.display_name,
            role: self.role.parse().map_err(|_| corrupt("role"))?,
            email_verified_at: self.email_verified_at.map(|t| t.0),
            disabled_at: self.disabled_at.map(|t| t.0),
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        };
        Ok((user, self.password_hash))
    }
}

/// The acting user's row: one that is not in the workspace may do nothing there.
/// A disabled user may do nothing either, even with a session checked a moment
/// before they were disabled: the rule runs on the row as it is now.
pub(super) fn actor_row(found: Result<(User, String)>) -> Result<User> {
    match found {
        Ok((u, _)) if u.disabled_at.is_some() => Err(Error::Forbidden),
        Ok((u, _)) => Ok(u),
        Err(Error::NotFound { .. }) => Err(Error::Forbidden),
        Err(e) => Err(e),
    }
}

async fn insert_user(conn: &mut Tx, u: &User, hash: &str) -> Result<()> {
    query(
        "INSERT INTO crm_users (id, workspace_id, email, email_key, display_name, role, password_hash, \
         email_verified_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(u.id.0)
    .bind(u.workspace_id)
    .bind(u.email.as_str())
    .bind(u.email.key())
    .bind(u.display_name.as_str())
    .bind(u.role.as_str())
    .bind(hash)
    .bind(u.email_verified_at.map(Ts))
    .bind(Ts(u.created_at))
    .bind(Ts(u.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| match e {
        Error::Conflict { .. } => Error::Conflict {
            message: "a user with this email already exists".into(),
            field: Some("email"),
            existing_id: None,
        },
        other => other,
    })?;
    Ok(())
}

/// A user row with its workspace's name.
#[derive(FromRow)]
struct AccountRow {
    #[sqlx(flatten)]
    user: UserRow,
    workspace_name: String,
}

/// The enabled accounts of an email in every workspace, oldest first, at most
/// `limit`: each user with its password hash and its workspace's name.
pub(crate) async fn accounts_by_email(
    pool: &Pool,
    email_key: &str,
    limit: usize,
) -> Result<Vec<(User, String, String)>> {
    let sql = format!(
        "SELECT {USER_COLUMNS}, (SELECT name FROM crm_workspaces w WHERE w.id = crm_users.workspace_id) \
         AS workspace_name FROM crm_users WHERE email_key = $1 AND disabled_at IS NULL \
         ORDER BY created_at, id LIMIT $2"
    );
    let rows: Vec<AccountRow> = query_as(&sql)
        .bind(email_key)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|r| {
            let (user, hash) = r.user.into_user()?;
            Ok((user, hash, r.workspace_name))
        })
        .collect()
}

/// Inserts a user (and first its new workspace, for a registration) with its audit
/// entry. A registration with `one_account_per_email` fails with `email_taken` when
/// the email has an account in any workspace (checked in the same transaction;
/// registrations of one email go one at a time).
pub(crate) async fn create_user(
    pool: &Pool,
    new_workspace: Option<(&str, bool)>,
    u: &User,
    hash: &str,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    if let Some((name, one_account_per_email)) = new_workspace {
        let key = u.email.key();
        if one_account_per_email {
            // SQLite's write transaction already serialises; on Postgres two
            // registrations of one email would both see no account.
            if tx.dialect() == super::Dialect::Postgres {
                query("SELECT pg_advisory_xact_lock(hashtextextended('crm_register:' || $1, 0))")
                    .bind(&key)
                    .execute(&mut tx)
                    .await?;
            }
            let taken = query_as::<(i64,)>("SELECT COUNT(*) FROM crm_users WHERE email_key = $1")
                .bind(&key)
                .fetch_optional(&mut tx)
                .await?;
            if taken.is_some_and(|(n,)| n > 0) {
                return Err(Error::InvalidState {
                    code: "email_taken",
                    message: "an account with this email exists: sign in instead".into(),
                });
            }
        }
        query("INSERT INTO crm_workspaces (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(u.workspace_id)
            .bind(name)
            .bind(Ts(u.created_at))
            .execute(&mut tx)
            .await?;
    }
    insert_user(&mut tx, u, hash).await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Creates a user on behalf of `by` (a user of the workspace, read and locked in
/// the same transaction; `None`: the app), when `check` allows it.
pub(crate) async fn create_user_by(
    pool: &Pool,
    u: &User,
    hash: &str,
    audit: &AuditEntry,
    by: Option<UserId>,
    check: impl FnOnce(Option<&User>) -> Result<()>,
    users_quota: u32,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let actor = match by {
        Some(a) => Some(actor_row(fetch_user(&mut tx, u.workspace_id, a).await)?),
        None => None,
    };
    check(actor.as_ref())?;
    workspaces::check_quota(
        &mut tx,
        u.workspace_id,
        Quota::new(QuotaKind::Users, users_quota, Ts(u.created_at)),
    )
    .await?;
    insert_user(&mut tx, u, hash).await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// The users a change by `by` to user `id` involves, read and locked in one
/// statement in id order (so two such changes cannot deadlock): the target, the
/// actor (`Forbidden` when they are not a user of the workspace) and the number of
/// the workspace's owners.
pub(super) async fn lock_parties(
    conn: &mut Tx,
    ws: WorkspaceId,
    id: UserId,
    by: Option<UserId>,
) -> Result<(User, Option<User>, usize)> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM crm_users WHERE workspace_id = $1 \
         AND (id = $2 OR id = $3 OR role = 'owner') ORDER BY id{}",
        conn.dialect().for_update()
    );
    let rows = query_as::<UserRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .bind(by.map_or(id.0, |a| a.0))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| r.into_user().map(|(u, _)| u))
        .collect::<Result<Vec<User>>>()?;
    let find = |want: UserId| rows.iter().find(|u| u.id == want).cloned();
    let target = find(id).ok_or(Error::NotFound { entity: "user" })?;
    let actor = match by {
        Some(a) => Some(
            find(a)
                .filter(|u| u.disabled_at.is_none())
                .ok_or(Error::Forbidden)?,
        ),
        None => None,
    };
    // Owners who can still sign in: a disabled owner keeps no workspace running.
    let owners = rows
        .iter()
        .filter(|u| u.role == Role::Owner && u.disabled_at.is_none())
        .count();
    Ok((target, actor, owners))
}

/// Changes one user's role when `check(actor, target, owners)` allows it: the
/// target, the actor and every owner of the workspace are read and locked in one
/// statement (in id order, so two such changes cannot deadlock), the role column
/// alone is written, and the audit entry goes in the same transaction. Returns
/// the user as it is now.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn set_role(
    pool: &Pool,
    ws: WorkspaceId,
    id: UserId,
    role: Role,
    by: Option<UserId>,
    now: Ts,
    check: impl FnOnce(Option<&User>, &User, usize) -> Result<()>,
    audit: impl FnOnce(&User) -> AuditEntry,
) -> Result<User> {
    let mut tx = pool.begin_write().await?;
    let (mut target, actor, owners) = lock_parties(&mut tx, ws, id, by).await?;
    check(actor.as_ref(), &target, owners)?;
    if target.role == role {
        return Ok(target);
    }
    let entry = audit(&target);
    query("UPDATE crm_users SET role = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2")
        .bind(ws)
        .bind(id.0)
        .bind(role.as_str())
        .bind(now)
        .execute(&mut tx)
        .await?;
    audit::insert_audit(&mut tx, &entry).await?;
    tx.commit().await?;
    target.role = role;
    target.updated_at = now.0;
    Ok(target)
}

/// Disables, enables or deletes user `id`, or ends their sessions, on behalf of
/// `by` when `check(actor, target, active_owners)` allows it: the parties are
/// locked as for [`set_role`]. Disabling and deleting end the user's
/// sessions and reset/verification tokens, with the audit entry, in the same
/// transaction (deleting also forgets their failed attempts). A change that
/// changes nothing writes nothing, audit entry included. Returns the user as it
/// is now and how many sessions ended.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn user_access(
    pool: &Pool,
    ws: WorkspaceId,
    id: UserId,
    by: Option<UserId>,
    access: UserAccess,
    now: Ts,
    check: impl FnOnce(Option<&User>, &User, usize) -> Result<()>,
    audit: impl FnOnce(&User) -> AuditEntry,
) -> Result<(User, u64)> {
    let mut tx = pool.begin_write().await?;
    let (mut target, actor, owners) = lock_parties(&mut tx, ws, id, by).await?;
    check(actor.as_ref(), &target, owners)?;
    let ended = match access {
        UserAccess::EndSessions => {
            let n = sessions::delete_sessions(&mut tx, &target, None, None).await?;
            if n == 0 {
                // Nothing ended: nothing to audit.
                return Ok((target, 0));
            }
            n
        }
        UserAccess::Enable => {
            if target.disabled_at.is_none() {
                return Ok((target, 0));
            }
            target.disabled_at = None;
            0
        }
        UserAccess::Disable if target.disabled_at.is_some() => {
            // Already disabled: nothing changes (its sessions and links ended then).
            return Ok((target, 0));
        }
        UserAccess::Disable => {
            let n = sessions::delete_sessions(&mut tx, &target, None, None).await?;
            sessions::end_tokens(&mut tx, &target).await?;
            target.disabled_at = Some(now.0);
            n
        }
        UserAccess::Delete => {
            let n = sessions::delete_sessions(&mut tx, &target, None, None).await?;
            sessions::end_tokens(&mut tx, &target).await?;
            // The address may come back as a new user: no lockout carries over.
            sessions::clear_throttle(&mut tx, ws, &target.email.key()).await?;
            n
        }
    };
    let entry = audit(&target);
    if access == UserAccess::Delete {
        query("DELETE FROM crm_users WHERE workspace_id = $1 AND id = $2")
            .bind(ws)
            .bind(id.0)
            .execute(&mut tx)
            .await?;
    } else if access != UserAccess::EndSessions {
        target.updated_at = now.0;
        query(
            "UPDATE crm_users SET disabled_at = $3, updated_at = $4 \
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(ws)
        .bind(id.0)
        .bind(target.disabled_at.map(Ts))
        .bind(now)
        .execute(&mut tx)
        .await?;
    }
    audit::insert_audit(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok((target, ended))
}

/// The workspace's user with this email key, with its password hash (a sign-in's
/// lookup, by password or by an OIDC provider's verified email).
pub(crate) async fn user_by_email(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    email_key: &str,
) -> Result<Option<(User, String)>> {
    let sql =
        format!("SELECT {USER_COLUMNS} FROM crm_users WHERE workspace_id = $1 AND email_key = $2");
    query_as::<UserRow>(&sql)
        .bind(ws)
        .bind(email_key)
        .fetch_optional(conn.on())
        .await?
        .map(UserRow::into_user)
        .transpose()
}

pub(super) async fn fetch_user(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    id: UserId,
) -> Result<(User, String)> {
    let on = conn.on();
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM crm_users WHERE workspace_id = $1 AND id = $2{}",
        on.dialect().for_update()
    );
    query_as::<UserRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .fetch_optional(on)
        .await?
        .ok_or(Error::NotFound { entity: "user" })?
        .into_user()
}

pub(crate) async fn get_user(pool: &Pool, ws: WorkspaceId, id: UserId) -> Result<(User, String)> {
    let rows: Vec<UserRow> = owned_rows(pool, USER_COLUMNS, "crm_users", ws, Some(id.0)).await?;
    rows.into_iter()
        .next()
        .ok_or(Error::NotFound { entity: "user" })?
        .into_user()
}

pub(crate) async fn list_users(pool: &Pool, ws: WorkspaceId) -> Result<Vec<User>> {
    let rows: Vec<UserRow> = owned_rows(pool, USER_COLUMNS, "crm_users", ws, None).await?;
    rows.into_iter()
        .map(|r| r.into_user().map(|(u, _)| u))
        .collect()
}

/// Writes a new password hash (and `updated_at`), nothing else of the row. With
/// `only_if` it is one conditional UPDATE: it writes only while the stored hash is
/// still that one, and says whether it did.
pub(super) async fn write_password(
    conn: &mut Tx,
    u: &User,
    hash: &str,
    only_if: Option<&str>,
    now: Ts,
) -> Result<bool> {
    let sql = if only_if.is_some() {
        "UPDATE crm_users SET password_hash = $3, updated_at = $4 \
         WHERE workspace_id = $1 AND id = $2 AND password_hash = $5"
    } else {
        "UPDATE crm_users SET password_hash = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2"
    };
    let mut q = query(sql)
        .bind(u.workspace_id)
        .bind(u.id.0)
        .bind(hash)
        .bind(now);
    if let Some(old) = only_if {
        q = q.bind(old);
    }
    Ok(q.execute(&mut *conn).await? == 1)
}

/// Changes a password the caller verified against `old_hash`: one conditional
/// UPDATE of the hash alone (`false` when the password changed meanwhile, and
/// nothing is written), then every session but `keep` and every reset and
/// verification token end and the failed attempts are forgotten, with the audit
/// entry, in the same transaction.
pub(crate) async fn change_password(
    pool: &Pool,
    u: &User,
    old_hash: &str,
    new_hash: &str,
    keep: Option<SessionId>,
    now: Ts,
    audit: &AuditEntry,
) -> Result<bool> {
    let mut tx = pool.begin_write().await?;
    if !write_password(&mut tx, u, new_hash, Some(old_hash), now).await? {
        return Ok(false);
    }
    sessions::delete_sessions(&mut tx, u, None, keep).await?;
    sessions::end_tokens(&mut tx, u).await?;
    sessions::clear_throttle(&mut tx, u.workspace_id, &u.email.key()).await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(true)
}
