//! Sign-in state: sessions, the login throttle (failures and lockouts per email),
//! and single-use reset and verification tokens (only their hashes are stored).

use serde_json::json;
use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{query, query_as, Exec, Tx};
use super::{audit, users, Pool, Ts};
use crate::audit::AuditEntry;
use crate::auth::model::{Session, Throttle, User, RESET, VERIFY};
use crate::ids::{SessionId, UserId, WorkspaceId};
use crate::{Error, Result};

const SESSION_COLUMNS: &str =
    "id, workspace_id, user_id, remember, ip, user_agent, created_at, last_seen_at, expires_at, \
    absolute_expires_at";

#[derive(FromRow)]
pub(crate) struct SessionRow {
    id: SessionId,
    workspace_id: WorkspaceId,
    user_id: UserId,
    remember: bool,
    ip: Option<String>,
    user_agent: Option<String>,
    created_at: Ts,
    last_seen_at: Ts,
    expires_at: Ts,
    absolute_expires_at: Ts,
}

impl SessionRow {
    fn into_session(self) -> Session {
        Session {
            id: self.id,
            workspace_id: self.workspace_id,
            user_id: self.user_id,
            remember: self.remember,
            ip: self.ip,
            user_agent: self.user_agent,
            created_at: self.created_at.0,
            last_seen_at: self.last_seen_at.0,
            expires_at: self.expires_at.0,
            absolute_expires_at: self.absolute_expires_at.0,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct ThrottleRow {
    failures: i64,
    window_start: Ts,
    lockouts: i64,
    locked_until: Option<Ts>,
}

#[derive(FromRow)]
pub(crate) struct TokenOwner {
    workspace_id: WorkspaceId,
    user_id: UserId,
}

/// A user's live sessions, newest first.
pub(crate) async fn list_sessions(pool: &Pool, u: &User, now: Ts) -> Result<Vec<Session>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM crm_sessions WHERE workspace_id = $1 AND user_id = $2 \
         AND expires_at > $3 AND absolute_expires_at > $3 ORDER BY created_at DESC, id DESC"
    );
    Ok(query_as::<SessionRow>(&sql)
        .bind(u.workspace_id)
        .bind(u.id.0)
        .bind(now)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(SessionRow::into_session)
        .collect())
}

/// Ends every reset and verification token of the user (a new password makes the
/// links mailed before it worthless).
pub(super) async fn end_tokens(conn: &mut Tx, u: &User) -> Result<()> {
    query("DELETE FROM crm_auth_tokens WHERE workspace_id = $1 AND user_id = $2")
        .bind(u.workspace_id)
        .bind(u.id.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn delete_sessions(
    conn: &mut Tx,
    u: &User,
    only: Option<SessionId>,
    except: Option<SessionId>,
) -> Result<u64> {
    let mut sql = query("DELETE FROM crm_sessions WHERE workspace_id = ");
    sql.push_bind(u.workspace_id.0)
        .push(" AND user_id = ")
        .push_bind(u.id.0);
    if let Some(id) = only {
        sql.push(" AND id = ").push_bind(id.0);
    }
    if let Some(id) = except {
        sql.push(" AND id <> ").push_bind(id.0);
    }
    sql.execute(&mut *conn).await
}

async fn fetch_throttle(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    email_key: &str,
    lock: bool,
) -> Result<Option<Throttle>> {
    let on = conn.on();
    let sql = format!(
        "SELECT failures, window_start, lockouts, locked_until FROM crm_login_throttle \
         WHERE workspace_id = $1 AND email_key = $2{}",
        if lock { on.dialect().for_update() } else { "" }
    );
    let row = query_as::<ThrottleRow>(&sql)
        .bind(ws)
        .bind(email_key)
        .fetch_optional(on)
        .await?;
    Ok(row.map(|r| Throttle {
        failures: r.failures,
        window_start: r.window_start.0,
        lockouts: r.lockouts,
        locked_until: r.locked_until.map(|t| t.0),
    }))
}

/// The throttle state of an email and its user, if any.
pub(crate) async fn login_lookup(
    pool: &Pool,
    ws: WorkspaceId,
    email_key: &str,
) -> Result<(Option<Throttle>, Option<(User, String)>)> {
    let mut conn = pool.acquire().await?;
    let t = fetch_throttle(&mut conn, ws, email_key, false).await?;
    let user = users::user_by_email(&mut conn, ws, email_key).await?;
    Ok((t, user))
}

/// Counts one password attempt on `email_key` before the password is checked:
/// `f` gets the locked throttle row and returns its next state, or an error (the
/// account is locked) that writes nothing. N attempts at once are counted one
/// after the other, so no more than the policy allows reach the password check.
pub(crate) async fn count_attempt<F>(
    pool: &Pool,
    ws: WorkspaceId,
    email_key: &str,
    now: chrono::DateTime<chrono::Utc>,
    f: F,
) -> Result<()>
where
    F: FnOnce(Option<Throttle>) -> Result<Throttle> + Send,
{
    let mut tx = pool.begin_write().await?;
    // Make sure the row exists, so the locking read below serialises even the
    // first attempts of an email (two inserts racing would each count one).
    query(
        "INSERT INTO crm_login_throttle (workspace_id, email_key, failures, window_start, lockouts, locked_until) \
         VALUES ($1, $2, 0, $3, 0, NULL) ON CONFLICT (workspace_id, email_key) DO NOTHING",
    )
    .bind(ws)
    .bind(email_key)
    .bind(Ts(now))
    .execute(&mut tx)
    .await?;
    let current = fetch_throttle(&mut tx, ws, email_key, true).await?;
    let t = f(current)?;
    // An upsert, not an UPDATE: a success clearing the row since the read above
    // must not make this attempt go uncounted.
    query(
        "INSERT INTO crm_login_throttle (workspace_id, email_key, failures, window_start, lockouts, locked_until) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace_id, email_key) DO UPDATE SET \
         failures = $3, window_start = $4, lockouts = $5, locked_until = $6",
    )
    .bind(ws)
    .bind(email_key)
    .bind(t.failures)
    .bind(Ts(t.window_start))
    .bind(t.lockouts)
    .bind(t.locked_until.map(Ts))
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The key under which sign-ins without a workspace count their attempts (in the
/// default workspace's rows): no account's, since no address has a ':' before its
/// domain.
pub(crate) fn any_workspace_key(email_key: &str) -> String {
    format!("any:{email_key}")
}

/// Forgets the counted attempts of `email_key` (a sign-in that counted under a key
/// of its own and succeeded).
pub(crate) async fn forget_attempts(pool: &Pool, ws: WorkspaceId, email_key: &str) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    clear_throttle(&mut tx, ws, email_key).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn clear_throttle(conn: &mut Tx, ws: WorkspaceId, email_key: &str) -> Result<()> {
    query("DELETE FROM crm_login_throttle WHERE workspace_id = $1 AND email_key = $2")
        .bind(ws)
        .bind(email_key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets the counted attempts and any lockout of `u`, when `check(actor, target)`
/// allows `by` (the rows read and locked as for `set_role`).
pub(crate) async fn lift_lockout(
    pool: &Pool,
    u: &User,
    by: Option<UserId>,
    check: impl FnOnce(Option<&User>, &User) -> Result<()>,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let (target, actor, _) = users::lock_parties(&mut tx, u.workspace_id, u.id, by).await?;
    check(actor.as_ref(), &target)?;
    let key = u.email.key();
    clear_throttle(&mut tx, u.workspace_id, &key).await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn login_succeeded(
    pool: &Pool,
    u: &User,
    email_key: &str,
    password: Option<(&str, Option<&str>)>,
    s: &Session,
    token_hash: &str,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    // The password verified outside this transaction (Argon2 is slow) must still
    // be the user's: a change or reset meanwhile ended every session, and a login
    // with the old password must not start a new one.
    let (now_user, current) = users::fetch_user(&mut tx, u.workspace_id, u.id).await?;
    let changed = password.is_some_and(|(verified, _)| verified != current);
    if changed || now_user.disabled_at.is_some() {
        return Err(Error::unauthorized(crate::AuthFailure::InvalidCredentials));
    }
    clear_throttle(&mut tx, u.workspace_id, email_key).await?;
    if let Some(hash) = password.and_then(|(_, rehash)| rehash) {
        query("UPDATE crm_users SET password_hash = $3 WHERE workspace_id = $1 AND id = $2")
            .bind(u.workspace_id)
            .bind(u.id.0)
            .bind(hash)
            .execute(&mut tx)
            .await?;
    }
    query(
        "INSERT INTO crm_sessions (id, workspace_id, user_id, token_hash, remember, ip, user_agent, \
         created_at, last_seen_at, expires_at, absolute_expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(s.id.0)
    .bind(s.workspace_id)
    .bind(s.user_id.0)
    .bind(token_hash)
    .bind(s.remember)
    .bind(s.ip.as_deref())
    .bind(s.user_agent.as_deref())
    .bind(Ts(s.created_at))
    .bind(Ts(s.last_seen_at))
    .bind(Ts(s.expires_at))
    .bind(Ts(s.absolute_expires_at))
    .execute(&mut tx)
    .await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn find_session(pool: &Pool, token_hash: &str) -> Result<Option<Session>> {
    let mut sql = query(format!(
        "SELECT {SESSION_COLUMNS} FROM crm_sessions WHERE token_hash = "
    ));
    sql.push_bind(token_hash.to_owned());
    let rows: Vec<SessionRow> = sql.fetch_all(pool).await?;
    Ok(rows.into_iter().next().map(SessionRow::into_session))
}

pub(crate) async fn refresh_session(pool: &Pool, s: &Session) -> Result<()> {
    query("UPDATE crm_sessions SET last_seen_at = $2, expires_at = $3 WHERE id = $1")
        .bind(s.id.0)
        .bind(Ts(s.last_seen_at))
        .bind(Ts(s.expires_at))
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends one session (`only`) or all of the user's (but `except`), with an audit
/// entry when any ended.
pub(crate) async fn end_sessions(
    pool: &Pool,
    u: &User,
    only: Option<SessionId>,
    except: Option<SessionId>,
    audit: &AuditEntry,
) -> Result<u64> {
    let mut tx = pool.begin_write().await?;
    let n = delete_sessions(&mut tx, u, only, except).await?;
    if n == 0 {
        // Nothing ended: nothing to audit either.
        return Ok(0);
    }
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_token(
    pool: &Pool,
    u: &User,
    purpose: &str,
    token_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query(
        "INSERT INTO crm_auth_tokens (id, workspace_id, user_id, purpose, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(u.workspace_id)
    .bind(u.id.0)
    .bind(purpose)
    .bind(token_hash)
    .bind(Ts(now))
    .bind(Ts(expires_at))
    .execute(&mut tx)
    .await?;
    audit::insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Marks an unused, unexpired token of `purpose` used and returns its user, locked.
async fn consume_token(
    conn: &mut Tx,
    token_hash: &str,
    purpose: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(User, String)> {
    let invalid = || Error::unauthorized(crate::AuthFailure::InvalidToken);
    // The user row first, then the token: the order a password change takes
    // (user, then its tokens), so the two cannot deadlock on Postgres.
    let owner = query_as::<TokenOwner>(
        "SELECT workspace_id, user_id FROM crm_auth_tokens WHERE token_hash = $1 AND purpose = $2",
    )
    .bind(token_hash)
    .bind(purpose)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(invalid)?;
    let user = users::fetch_user(&mut *conn, owner.workspace_id, owner.user_id).await?;
    // A disabled user's links end with the disabling; one mailed in the moment
    // before it still finds the user disabled here.
    if user.0.disabled_at.is_some() {
        return Err(invalid());
    }
    let used = query(
        "UPDATE crm_auth_tokens SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 \
         AND used_at IS NULL AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(purpose)
    .bind(Ts(now))
    .execute(&mut *conn)
    .await?;
    if used != 1 {
        return Err(invalid());
    }
    Ok(user)
}

/// Whether an unused, unexpired token of `purpose` has this hash (a read only).
pub(crate) async fn token_is_live(
    pool: &Pool,
    token_hash: &str,
    purpose: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool> {
    let n = query_as::<(i64,)>(
        "SELECT COUNT(*) FROM crm_auth_tokens WHERE token_hash = $1 AND purpose = $2 \
         AND used_at IS NULL AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(purpose)
    .bind(Ts(now))
    .fetch_one(pool)
    .await?;
    Ok(n.0 > 0)
}

pub(crate) async fn reset_password(
    pool: &Pool,
    token_hash: &str,
    new_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<User> {
    let mut tx = pool.begin_write().await?;
    let (mut u, _) = consume_token(&mut tx, token_hash, RESET, now).await?;
    u.updated_at = now;
    users::write_password(&mut tx, &u, new_hash, None, Ts(now)).await?;
    delete_sessions(&mut tx, &u, None, None).await?;
    end_tokens(&mut tx, &u).await?;
    clear_throttle(&mut tx, u.workspace_id, &u.email.key()).await?;
    let audit = AuditEntry::new(
        u.workspace_id,
        None,
        "password.reset",
        ("user", u.id.to_string()),
        json!({}),
        now,
    );
    audit::insert_audit(&mut tx, &audit).await?;
    tx.commit().await?;
    Ok(u)
}

pub(crate) async fn verify_email(
    pool: &Pool,
    token_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<User> {
    let mut tx = pool.begin_write().await?;
    let (mut u, _) = consume_token(&mut tx, token_hash, VERIFY, now).await?;
    u.email_verified_at.get_or_insert(now);
    u.updated_at = now;
    query(
        "UPDATE crm_users SET email_verified_at = $3, updated_at = $4 \
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(u.workspace_id)
    .bind(u.id.0)
    .bind(u.email_verified_at.map(Ts))
    .bind(Ts(now))
    .execute(&mut tx)
    .await?;
    let audit = AuditEntry::new(
        u.workspace_id,
        None,
        "email.verified",
        ("user", u.id.to_string()),
        json!({}),
        now,
    );
    audit::insert_audit(&mut tx, &audit).await?;
    tx.commit().await?;
    Ok(u)
}
