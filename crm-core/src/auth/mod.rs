//! Auth: users, Argon2id passwords, sessions, throttling and lockout, password reset,
//! email verification, and the audit trail of all of it. A library API; the HTTP
//! router puts cookies and routes on top.
//!
//! Decisions where the design is silent:
//! - **Scope.** Users belong to one workspace and are unique by email within it
//!   (case-insensitively); [`Auth`] is a workspace's service (`crm.auth()` is the
//!   default workspace's). [`Crm::register`] makes a new workspace with its owner;
//!   session tokens and reset/verification tokens identify their workspace.
//! - **Throttling.** Failed logins are counted per (workspace, email) whether or not
//!   the account exists, in `crm_login_throttle`, so a lockout reveals nothing about
//!   which accounts exist. Every attempt is counted before its password is checked
//!   (so attempts made at once cannot all slip through), and a success clears the
//!   count. The `login` rate-limit policy (5 per 15 min) sets how many attempts open a
//!   lockout; lockouts last 15 min, doubling with each lockout, and the
//!   escalation stops at 1 h (`AuthConfig::lockout_cap`): someone guessing an owner's
//!   password can keep them out for at most an hour at a time, never for good. A
//!   successful login or a password reset clears the count, and an admin lifts a lock
//!   with [`Auth::lift_lockout`] (`DELETE /api/admin/users/{id}/lockout`). A locked
//!   account answers `RateLimited` before the password is looked at. The caller's
//!   IP, when given, draws on the `login_ip` policy (20 per minute) for every attempt.
//! - **Sessions** last 24 h (30 days with remember-me) from their last use, refreshed
//!   at most once a minute, and never beyond 7 days (90 with remember-me) from login.
//! - **Mail.** Reset and verification mails go through the [`Mailer`] registered on the
//!   builder, sent in a task of their own so the neutral answer of a reset request
//!   does not wait on (or time) the mail provider.

pub mod password;

use std::future::Future;
use std::pin::Pin;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde::Serialize;
use serde_json::json;

pub use password::{check_policy, PasswordParams};

use crate::api_keys::format::{hash as sha256, hex};
use crate::audit::AuditEntry;
use crate::error::{AuthFailure, Errors};
use crate::ids::{SessionId, UserId, WorkspaceId};
use crate::leads::Email;
use crate::macros::string_enum;
use crate::secret::SecretString;
use crate::store;
use crate::store::Ts;
use crate::{Crm, Error, Result};

string_enum!(
    /// What a user may do in their workspace.
    pub Role, "role" {
        /// Everything, including the workspace itself; registration makes one.
        Owner => "owner",
        /// Everything in the workspace: users, keys, webhooks, settings.
        Admin => "admin",
        /// Day-to-day work on leads.
        Member => "member",
    }
);

impl Role {
    /// Whether this role may administer the workspace (owner or admin).
    pub fn is_admin(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// Who asks for a change to a workspace's users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// A user of the workspace (e.g. signed in to the admin routes). The service
    /// checks their current role against the rules of roles, inside the transaction
    /// that makes the change: owners manage everyone, admins manage members and
    /// admins, members manage nobody, and nobody changes their own role.
    User(UserId),
    /// The embedding app itself (its own code, a CLI, the Python module): trusted
    /// with any change but the removal of the last owner. The name, when given, goes
    /// to the audit log as the actor.
    App(Option<&'a str>),
}

impl Actor<'_> {
    /// The acting user, when it is one.
    fn user_id(&self) -> Option<UserId> {
        match self {
            Actor::User(id) => Some(*id),
            Actor::App(_) => None,
        }
    }

    /// The actor as the audit log names it.
    fn audit_name(&self) -> Option<String> {
        match self {
            Actor::User(id) => Some(format!("user:{id}")),
            Actor::App(name) => name.map(str::to_owned),
        }
    }
}

/// Whether `actor` (`None`: the app) may give `target` the role `role`, in a
/// workspace that has `owners` owners. Pure: the store calls it with the rows it
/// locked.
pub(crate) fn may_set_role(
    actor: Option<&User>,
    target: &User,
    role: Role,
    owners: usize,
) -> Result<()> {
    if let Some(a) = actor {
        if a.id == target.id {
            return Err(Error::Forbidden);
        }
        let owner_involved = target.role == Role::Owner || role == Role::Owner;
        if !a.role.is_admin() || (owner_involved && a.role != Role::Owner) {
            return Err(Error::Forbidden);
        }
    }
    let active_owner = target.role == Role::Owner && target.disabled_at.is_none();
    if active_owner && role != Role::Owner && owners <= 1 {
        return Err(last_owner());
    }
    Ok(())
}

/// A change to a user's access (see [`Auth::disable_user`] and its siblings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserAccess {
    Disable,
    Enable,
    Delete,
    EndSessions,
}

impl UserAccess {
    fn action(self) -> &'static str {
        match self {
            UserAccess::Disable => "user.disabled",
            UserAccess::Enable => "user.enabled",
            UserAccess::Delete => "user.deleted",
            UserAccess::EndSessions => "session.revoked_all",
        }
    }
}

/// Whether `actor` (`None`: the app) may apply `access` to `target`, in a workspace
/// that has `owners` owners who can sign in: the rules of roles (admins act on
/// members and admins, owners on everyone, members on nobody), nobody disables or
/// deletes themselves, and the last active owner is never disabled or deleted,
/// whoever asks. Pure: the store calls it with the rows it locked.
pub(crate) fn may_change_access(
    actor: Option<&User>,
    target: &User,
    access: UserAccess,
    owners: usize,
) -> Result<()> {
    if let Some(a) = actor {
        if a.id == target.id {
            // Anyone may sign themselves out everywhere; nobody disables or deletes
            // themselves.
            return if access == UserAccess::EndSessions {
                Ok(())
            } else {
                Err(Error::Forbidden)
            };
        }
        if !a.role.is_admin() || (target.role == Role::Owner && a.role != Role::Owner) {
            return Err(Error::Forbidden);
        }
    }
    let removes_owner = matches!(access, UserAccess::Disable | UserAccess::Delete)
        && target.role == Role::Owner
        && target.disabled_at.is_none();
    if removes_owner && owners <= 1 {
        return Err(last_owner());
    }
    Ok(())
}

/// Whether `actor` (`None`: the app) may lift `target`'s login lockout: the rules of
/// roles again (an owner's lock is an owner's business).
pub(crate) fn may_lift_lockout(actor: Option<&User>, target: &User) -> Result<()> {
    match actor {
        Some(a) if !a.role.is_admin() => Err(Error::Forbidden),
        Some(a) if target.role == Role::Owner && a.role != Role::Owner => Err(Error::Forbidden),
        _ => Ok(()),
    }
}

/// Whether `actor` (`None`: the app) may add a user with `role`.
pub(crate) fn may_create(actor: Option<&User>, role: Role) -> Result<()> {
    match actor {
        Some(a) if !a.role.is_admin() => Err(Error::Forbidden),
        Some(a) if role == Role::Owner && a.role != Role::Owner => Err(Error::Forbidden),
        _ => Ok(()),
    }
}

fn last_owner() -> Error {
    Error::Conflict {
        message: "a workspace keeps at least one owner: make another user owner first".into(),
        field: Some("role"),
        existing_id: None,
    }
}

/// A user. The password hash never leaves the store.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Email (unique case-insensitively within the workspace).
    pub email: Email,
    /// Name shown to people.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// When the email was verified.
    pub email_verified_at: Option<DateTime<Utc>>,
    /// When it was disabled: a disabled user cannot sign in or reset their password
    /// and has no sessions. `None` for an active user.
    pub disabled_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Input for a new user. `Debug` hides the password.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"email": "sam@example.com", "display_name": "Sam Ortiz", "role": "admin", "password": "Correct-Horse-9-Battery"})))]
#[derive(Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewUser {
    /// Email.
    #[cfg_attr(feature = "openapi", schema(required = true, format = Email, max_length = 254))]
    pub email: String,
    /// 1–200 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub display_name: String,
    /// A role name; `member` when absent (ignored by registration and bootstrap,
    /// which make owners).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Role>))]
    pub role: Option<String>,
    /// A password meeting [`check_policy`].
    #[cfg_attr(feature = "openapi", schema(required = true, schema_with = crate::openapi::new_password))]
    pub password: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// A login attempt. `Debug` hides the password.
#[derive(Clone, Default)]
pub struct Login {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
    /// A longer session (30 days instead of 24 h).
    pub remember_me: bool,
    /// The client's IP, for the per-IP budget and the audit log.
    pub ip: Option<String>,
    /// The client's `User-Agent`, kept with the session so its user can tell their
    /// sessions apart (cut to 512 characters).
    pub user_agent: Option<String>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("email", &self.email)
            .field("password", &"[redacted]")
            .field("remember_me", &self.remember_me)
            .field("ip", &self.ip)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// A session (its token is only ever in [`LoggedIn`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Its user.
    pub user_id: UserId,
    /// Whether remember-me was asked for.
    pub remember: bool,
    /// The IP it was opened from.
    pub ip: Option<String>,
    /// The user agent it was opened with.
    pub user_agent: Option<String>,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it was last used (to the minute).
    pub last_seen_at: DateTime<Utc>,
    /// When it ends unless used again.
    pub expires_at: DateTime<Utc>,
    /// When it ends however much it is used.
    pub absolute_expires_at: DateTime<Utc>,
}

/// A successful login: the session token (shown this once), the session and the user.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    /// The session token for the cookie. Only its SHA-256 is stored.
    pub token: SecretString,
    /// The session.
    pub session: Session,
    /// The user.
    pub user: User,
}

/// A session that checked out, and its user.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUser {
    /// The session (with its refreshed expiry).
    pub session: Session,
    /// Its user.
    pub user: User,
}

/// A mail the auth service asks the [`Mailer`] to send.
#[derive(Debug, Clone)]
pub enum AuthMail {
    /// A password-reset link or code.
    PasswordReset {
        /// The recipient.
        user: User,
        /// The single-use token to put in the link.
        token: SecretString,
        /// When the token stops working.
        expires_at: DateTime<Utc>,
    },
    /// An email-verification link or code.
    EmailVerification {
        /// The recipient.
        user: User,
        /// The single-use token to put in the link.
        token: SecretString,
        /// When the token stops working.
        expires_at: DateTime<Utc>,
    },
}

/// Sends auth mails; the email integration implements it. A failure is logged.
pub trait Mailer: Send + Sync + 'static {
    /// Sends one mail.
    fn send(&self, mail: AuthMail) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;
}

/// Lifetimes and limits of the auth service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    /// Argon2id parameters.
    pub password: PasswordParams,
    /// Idle lifetime of a session.
    pub session_ttl: Duration,
    /// Idle lifetime of a remember-me session.
    pub remember_ttl: Duration,
    /// Longest life of a session, used or not.
    pub session_cap: Duration,
    /// Longest life of a remember-me session.
    pub remember_cap: Duration,
    /// Lifetime of reset and verification tokens.
    pub token_ttl: Duration,
    /// First lockout; each further one doubles.
    pub lockout_base: Duration,
    /// Longest lockout.
    pub lockout_cap: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            password: PasswordParams::default(),
            session_ttl: Duration::hours(24),
            remember_ttl: Duration::days(30),
            session_cap: Duration::days(7),
            remember_cap: Duration::days(90),
            token_ttl: Duration::hours(1),
            lockout_base: Duration::minutes(15),
            lockout_cap: Duration::hours(1),
        }
    }
}

/// Purposes of single-use tokens.
pub(crate) const RESET: &str = "password_reset";
pub(crate) const VERIFY: &str = "email_verification";

/// Failed-login state of one (workspace, email).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttle {
    pub failures: i64,
    pub window_start: DateTime<Utc>,
    pub lockouts: i64,
    pub locked_until: Option<DateTime<Utc>>,
}

impl Throttle {
    /// The state after one more failure, and whether it opened a lockout.
    fn after_failure(
        prev: Option<Throttle>,
        now: DateTime<Utc>,
        limit: i64,
        window: Duration,
        cfg: &AuthConfig,
    ) -> (Throttle, bool) {
        let mut t = prev.unwrap_or(Throttle {
            failures: 0,
            window_start: now,
            lockouts: 0,
            locked_until: None,
        });
        if now - t.window_start >= window {
            t.failures = 0;
            t.window_start = now;
        }
        t.failures += 1;
        if t.failures < limit {
            return (t, false);
        }
        let factor = 1i32 << t.lockouts.clamp(0, 20);
        let lock = cfg
            .lockout_base
            .checked_mul(factor)
            .unwrap_or(cfg.lockout_cap)
            .min(cfg.lockout_cap);
        t.locked_until = Some(now + lock);
        t.lockouts += 1;
        t.failures = 0;
        t.window_start = now;
        (t, true)
    }
}

/// 32 random bytes, base64url without padding (43 characters).
fn new_token() -> (SecretString, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hex(&sha256(&token));
    (SecretString::new(token), hash)
}

/// The stored hash of a token, or `MalformedToken` when it is not 43 base64url characters.
fn token_hash(token: &str) -> Result<String> {
    let ok = token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok || URL_SAFE_NO_PAD.decode(token).map(|b| b.len()) != Ok(32) {
        return Err(Error::unauthorized(AuthFailure::MalformedToken));
    }
    Ok(hex(&sha256(token)))
}

fn invalid_credentials() -> Error {
    Error::unauthorized(AuthFailure::InvalidCredentials)
}

fn display_name(e: &mut Errors, v: &str) -> String {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > 200 || v.contains('\0') {
        e.add("display_name", "must be 1-200 characters");
    }
    v.to_owned()
}

/// The auth service of one workspace; from [`crate::Workspace::auth`] or [`Crm::auth`].
#[derive(Clone, Debug)]
pub struct Auth {
    crm: Crm,
    ws: WorkspaceId,
}

impl Auth {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self { crm, ws }
    }

    fn audit(
        &self,
        actor: Option<&str>,
        action: &str,
        user: Option<&User>,
        ip: Option<&str>,
    ) -> AuditEntry {
        let target = user.map_or(("user", String::new()), |u| ("user", u.id.to_string()));
        let mut a = AuditEntry::new(self.ws, actor, action, target, json!({}), self.crm.now());
        if user.is_none() {
            a.target_type = None;
            a.target_id = None;
        }
        a.ip = ip.map(str::to_owned);
        a
    }

    /// Checks a new user's input and hashes the password.
    async fn prepare(&self, input: NewUser, role: Option<Role>) -> Result<(User, String)> {
        let mut e = Errors::default();
        let email = e.take("email", Email::parse(&input.email));
        let name = display_name(&mut e, &input.display_name);
        let role = match (role, input.role.as_deref()) {
            (Some(r), _) => Some(r),
            (None, Some(r)) => e.take("role", r.trim().parse::<Role>()),
            (None, None) => Some(Role::Member),
        };
        if let Err(err) = check_policy(&input.password) {
            for f in err.field_errors() {
                e.add(f.field.clone(), f.message.clone());
            }
        }
        e.finish()?;
        let (Some(email), Some(role)) = (email, role) else {
            return Err(Error::invalid("email", "is required"));
        };
        let hash = self.crm.passwords().hash(&input.password).await?;
        let now = self.crm.now();
        let user = User {
            id: UserId::new(),
            workspace_id: self.ws,
            email,
            display_name: name,
            role,
            email_verified_at: None,
            disabled_at: None,
            created_at: now,
            updated_at: now,
        };
        Ok((user, hash))
    }

    /// Creates a user in this workspace (`Conflict` when the email is taken).
    /// `Forbidden` unless `actor` may add a user of that role (see [`Actor`]): only an
    /// owner (or the app) adds an owner; members add nobody.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn create_user(&self, input: NewUser, actor: Actor<'_>) -> Result<User> {
        let (user, hash) = self.prepare(input, None).await?;
        let audit = self.audit(
            actor.audit_name().as_deref(),
            "user.created",
            Some(&user),
            None,
        );
        let by = actor.user_id();
        let role = user.role;
        store::users::create_user_by(
            self.crm.pool(),
            &user,
            &hash,
            &audit,
            by,
            |a| may_create(a, role),
            self.crm.quotas().users,
        )
        .await?;
        Ok(user)
    }

    /// Creates the first owner of this workspace when it has none; returns `None` when
    /// an owner already exists (the server example calls this at every start).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn bootstrap_owner(&self, input: NewUser) -> Result<Option<User>> {
        let users = self.users().await?;
        if users.iter().any(|u| u.role == Role::Owner) {
            return Ok(None);
        }
        let (user, hash) = self.prepare(input, Some(Role::Owner)).await?;
        let audit = self.audit(Some("bootstrap"), "user.created", Some(&user), None);
        store::users::create_user(self.crm.pool(), None, &user, &hash, &audit).await?;
        Ok(Some(user))
    }

    /// The workspace's users, oldest first.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn users(&self) -> Result<Vec<User>> {
        store::users::list_users(self.crm.pool(), self.ws).await
    }

    /// One user.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn user(&self, id: UserId) -> Result<User> {
        store::users::get_user(self.crm.pool(), self.ws, id)
            .await
            .map(|(u, _)| u)
    }

    /// Changes a user's role, checked against the rules of roles inside the
    /// transaction that writes it (see [`Actor`]): `Forbidden` for a change the actor
    /// may not make, `Conflict` for the demotion of the workspace's last owner.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn set_role(&self, id: UserId, role: &str, actor: Actor<'_>) -> Result<User> {
        let role: Role = role
            .trim()
            .parse()
            .map_err(|m: String| Error::invalid("role", m))?;
        let by = actor.user_id();
        let now = self.crm.now();
        let name = actor.audit_name();
        let audit = |u: &User| {
            let mut a = self.audit(name.as_deref(), "user.role_changed", Some(u), None);
            a.details = json!({ "old_role": u.role, "new_role": role });
            a
        };
        store::users::set_role(
            self.crm.pool(),
            self.ws,
            id,
            role,
            by,
            Ts(now),
            |a, t, owners| may_set_role(a, t, role, owners),
            &audit,
        )
        .await
    }

    /// Lifts a login lockout of the user (and forgets their counted attempts), on
    /// behalf of `actor`: an admin or owner of the workspace, or the app; an owner's
    /// lock only by another owner (or the app), else an admin could guess an owner's
    /// password and lift the lock between rounds. `Forbidden` for anyone else.
    /// Audited as `login.unlocked`.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn lift_lockout(&self, id: UserId, actor: Actor<'_>) -> Result<()> {
        let user = self.user(id).await?;
        let by = actor.user_id();
        let audit = self.audit(
            actor.audit_name().as_deref(),
            "login.unlocked",
            Some(&user),
            None,
        );
        store::sessions::lift_lockout(self.crm.pool(), &user, by, may_lift_lockout, &audit).await
    }

    /// Applies an access change to user `id` on behalf of `actor`, checked by
    /// [`may_change_access`] inside the transaction that makes it.
    async fn change_access(
        &self,
        id: UserId,
        access: UserAccess,
        actor: Actor<'_>,
    ) -> Result<(User, u64)> {
        let by = actor.user_id();
        let now = self.crm.now();
        let name = actor.audit_name();
        let audit = |u: &User| self.audit(name.as_deref(), access.action(), Some(u), None);
        store::users::user_access(
            self.crm.pool(),
            self.ws,
            id,
            by,
            access,
            Ts(now),
            |a, t, owners| may_change_access(a, t, access, owners),
            &audit,
        )
        .await
    }

    /// Disables a user: in one transaction their sessions, reset and verification
    /// tokens end, and `user.disabled` is audited; from then on they cannot sign in
    /// (a login answers as for a wrong password), use a session or reset their
    /// password. Checked against the rules of roles inside that transaction:
    /// `Forbidden` for a user disabling themselves or anyone the rules of roles keep
    /// from `actor` (see [`Actor`]), `Conflict` for the workspace's last active
    /// owner. Disabling a disabled user changes nothing but ends stray sessions.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn disable_user(&self, id: UserId, actor: Actor<'_>) -> Result<User> {
        self.change_access(id, UserAccess::Disable, actor)
            .await
            .map(|(u, _)| u)
    }

    /// Enables a disabled user again (they sign in with their password; their old
    /// sessions stay ended) and returns them. Same rules as [`Auth::disable_user`];
    /// audited as `user.enabled`.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn enable_user(&self, id: UserId, actor: Actor<'_>) -> Result<User> {
        self.change_access(id, UserAccess::Enable, actor)
            .await
            .map(|(u, _)| u)
    }

    /// Deletes a user, their sessions and tokens, in one transaction with the
    /// `user.deleted` audit entry (the audit log keeps their id). Same rules as
    /// [`Auth::disable_user`]: never the last active owner, never oneself.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn delete_user(&self, id: UserId, actor: Actor<'_>) -> Result<()> {
        self.change_access(id, UserAccess::Delete, actor)
            .await
            .map(|_| ())
    }

    /// Ends every session of user `id` on behalf of `actor` (an admin signing a
    /// member out everywhere); returns how many ended. The rules of roles apply (an
    /// owner's sessions only by an owner); a user may end their own.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn end_user_sessions(&self, id: UserId, actor: Actor<'_>) -> Result<u64> {
        self.change_access(id, UserAccess::EndSessions, actor)
            .await
            .map(|(_, n)| n)
    }

    /// The live sessions of user `id`, newest first (never their tokens).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn sessions(&self, id: UserId) -> Result<Vec<Session>> {
        let user = self.user(id).await?;
        let now = Ts(self.crm.now());
        store::sessions::list_sessions(self.crm.pool(), &user, now).await
    }

    /// Ends one session of user `id` (`NotFound` when the user has no such session,
    /// whoever else has it). Audited as `session.revoked`.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn end_session(&self, id: UserId, session: SessionId) -> Result<()> {
        let user = self.user(id).await?;
        let audit = self.audit(
            Some(&user.id.to_string()),
            "session.revoked",
            Some(&user),
            None,
        );
        let n = store::sessions::end_sessions(self.crm.pool(), &user, Some(session), None, &audit)
            .await?;
        if n == 0 {
            return Err(Error::NotFound { entity: "session" });
        }
        Ok(())
    }

    /// Counts a password attempt on `email_key` before the password is checked, and
    /// answers `RateLimited` when the account is locked: attempts made at the same
    /// moment are counted one after the other, so at most the `login` policy's limit of
    /// them reach Argon2 before the lock. Returns the end of the lockout this attempt
    /// opened, if it did (its audit entry waits for the verdict).
    async fn count_attempt(
        &self,
        email_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let policy = self
            .crm
            .rate_limiter()
            .policy("login")
            .unwrap_or(crate::ratelimit::Policy {
                limit: 5,
                period: std::time::Duration::from_secs(900),
            });
        let window = Duration::from_std(policy.period).unwrap_or(Duration::minutes(15));
        let cfg = *self.crm.auth_config();
        let mut opened = None;
        let step = |current: Option<Throttle>| {
            if let Some(until) = current
                .as_ref()
                .and_then(|t| t.locked_until)
                .filter(|u| *u > now)
            {
                let retry_after = (until - now).to_std().unwrap_or_default();
                return Err(Error::RateLimited { retry_after });
            }
            let (t, locked) =
                Throttle::after_failure(current, now, i64::from(policy.limit), window, &cfg);
            if locked {
                opened = t.locked_until;
            }
            Ok(t)
        };
        let counted =
            store::sessions::count_attempt(self.crm.pool(), self.ws, email_key, now, step).await;
        match counted {
            // A workspace that does not exist has no throttle row to write: the
            // attempt goes on to the same verdict as a wrong password (no 404 telling
            // which workspace ids exist).
            Ok(()) | Err(Error::NotFound { .. }) => Ok(opened),
            Err(e) => Err(e),
        }
    }

    /// Audits a counted attempt whose password was wrong (and the lockout it opened).
    async fn attempt_failed(
        &self,
        action: &str,
        email_key: &str,
        ip: Option<&str>,
        opened: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let mut audits = vec![AuditEntry {
            details: json!({ "email": email_key }),
            ..self.audit(None, action, None, ip)
        }];
        if let Some(until) = opened {
            audits.push(AuditEntry {
                details: json!({ "email": email_key, "until": until }),
                ..self.audit(None, "login.locked", None, ip)
            });
        }
        match store::audit::insert_audits(self.crm.pool(), &audits).await {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Logs in: a new session on success; `Unauthorized(InvalidCredentials)` for an
    /// unknown email and a wrong password alike (both verify a hash); `RateLimited`
    /// while the email is locked out or the IP is over its budget.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn login(&self, login: Login) -> Result<LoggedIn> {
        let email = Email::parse(&login.email).map_err(|m| Error::invalid("email", m))?;
        if login.password.is_empty() || login.password.len() > password::MAX_BYTES {
            return Err(invalid_credentials());
        }
        if let Some(ip) = login.ip.as_deref() {
            // An address, nothing else: it becomes a rate-limit key, a session column
            // and an audit field.
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::invalid("ip", "must be an IP address"));
            }
            self.crm
                .rate_limiter()
                .enforce("login_ip", &crate::ratelimit::ip_key(ip))
                .await?;
        }
        let key = email.key();
        let now = self.crm.now();
        let (throttle, found) =
            store::sessions::login_lookup(self.crm.pool(), self.ws, &key).await?;
        // A disabled user signs in no more than an unknown one, at the same cost.
        let found = found.filter(|(u, _)| u.disabled_at.is_none());
        if let Some(until) = throttle.and_then(|t| t.locked_until).filter(|u| *u > now) {
            let retry_after = (until - now).to_std().unwrap_or_default();
            return Err(Error::RateLimited { retry_after });
        }
        let ip = login.ip.as_deref();
        let opened = self.count_attempt(&key, now).await?;
        let passwords = self.crm.passwords();
        let ok = match &found {
            Some((_, hash)) => passwords.verify(&login.password, hash).await?,
            None => {
                passwords.verify_dummy(&login.password).await?;
                false
            }
        };
        let Some((user, hash)) = found.filter(|_| ok) else {
            self.attempt_failed("login.failed", &key, ip, opened)
                .await?;
            return Err(invalid_credentials());
        };
        let rehash = if passwords.needs_rehash(&hash) {
            Some(passwords.hash(&login.password).await?)
        } else {
            None
        };
        let cfg = self.crm.auth_config();
        let (ttl, cap) = if login.remember_me {
            (cfg.remember_ttl, cfg.remember_cap)
        } else {
            (cfg.session_ttl, cfg.session_cap)
        };
        let (token, token_hash) = new_token();
        let session = Session {
            id: SessionId::new(),
            workspace_id: self.ws,
            user_id: user.id,
            remember: login.remember_me,
            ip: ip.map(str::to_owned),
            user_agent: login
                .user_agent
                .as_deref()
                .map(|ua| ua.chars().filter(|c| !c.is_control()).take(512).collect()),
            created_at: now,
            last_seen_at: now,
            expires_at: now + ttl.min(cap),
            absolute_expires_at: now + cap,
        };
        let audit = self.audit(
            Some(&user.id.to_string()),
            "login.succeeded",
            Some(&user),
            ip,
        );
        store::sessions::login_succeeded(
            self.crm.pool(),
            &user,
            &key,
            (&hash, rehash.as_deref()),
            &session,
            &token_hash,
            &audit,
        )
        .await?;
        Ok(LoggedIn {
            token,
            session,
            user,
        })
    }

    /// Changes a password after checking the current one; ends the user's other
    /// sessions (all but `keep`, the session making the change) and every reset and
    /// verification link mailed before. Wrong current passwords count against the
    /// account like failed logins (`RateLimited` once it is locked).
    pub async fn change_password(
        &self,
        id: UserId,
        current: &str,
        new: &str,
        keep: Option<SessionId>,
    ) -> Result<()> {
        check_policy(new)?;
        let (user, hash) = store::users::get_user(self.crm.pool(), self.ws, id).await?;
        // Throttled like a login, on the same count: a stolen session cookie must not
        // be a way to guess the current password at the speed of Argon2.
        let key = user.email.key();
        let opened = self.count_attempt(&key, self.crm.now()).await?;
        if !self.crm.passwords().verify(current, &hash).await? {
            self.attempt_failed("password.change_failed", &key, None, opened)
                .await?;
            return Err(invalid_credentials());
        }
        let new_hash = self.crm.passwords().hash(new).await?;
        let now = Ts(self.crm.now());
        let audit = self.audit(
            Some(&user.id.to_string()),
            "password.changed",
            Some(&user),
            None,
        );
        // Only the hash is written, and only while it is still the one verified above:
        // a role change or a reset meanwhile is never overwritten.
        let changed = store::users::change_password(
            self.crm.pool(),
            &user,
            &hash,
            &new_hash,
            keep,
            now,
            &audit,
        )
        .await?;
        if changed {
            Ok(())
        } else {
            Err(invalid_credentials())
        }
    }

    /// Starts a password reset. Always answers `Ok(())` for a well-formed email, known
    /// or not, and at once: the lookup, the token and the mail happen in a task of
    /// their own, so neither the answer nor its timing tells whether the account
    /// exists. For a known account a single-use token (1 h) goes to the [`Mailer`], at
    /// most as often as the `password_reset` policy allows per account (5 an hour by
    /// default; more requests are dropped silently: no mail bombing). `Config` error
    /// when no mailer is registered (said before any lookup).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn request_password_reset(&self, email: &str) -> Result<()> {
        let email = Email::parse(email).map_err(|m| Error::invalid("email", m))?;
        self.crm.mailer()?;
        let auth = self.clone();
        tokio::spawn(async move {
            if let Err(err) = auth.send_reset(&email).await {
                tracing::warn!(error = %crate::error::Chain(&err), "password reset was not sent");
            }
        });
        Ok(())
    }

    /// The work behind [`Auth::request_password_reset`], off the caller's path.
    async fn send_reset(&self, email: &Email) -> Result<()> {
        let key = email.key();
        // Hashed: an email of any length makes a key within the limiter's bound.
        let budget = format!("{}:{}", self.ws, hex(&sha256(&key)));
        if !self
            .crm
            .rate_limiter()
            .check("password_reset", &budget)
            .await?
            .allowed
        {
            return Ok(());
        }
        let found = store::sessions::login_lookup(self.crm.pool(), self.ws, &key)
            .await?
            .1;
        if let Some((user, _)) = found.filter(|(u, _)| u.disabled_at.is_none()) {
            self.send_token(user, RESET).await?;
        }
        Ok(())
    }

    /// Sends a verification mail to a user.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn request_email_verification(&self, id: UserId) -> Result<()> {
        self.crm.mailer()?;
        let user = self.user(id).await?;
        self.send_token(user, VERIFY).await
    }

    async fn send_token(&self, user: User, purpose: &'static str) -> Result<()> {
        let now = self.crm.now();
        let expires_at = now + self.crm.auth_config().token_ttl;
        let (token, hash) = new_token();
        let mut audit = self.audit(
            None,
            if purpose == RESET {
                "password.reset_requested"
            } else {
                "email.verification_requested"
            },
            Some(&user),
            None,
        );
        audit.details = json!({ "expires_at": expires_at });
        store::sessions::insert_token(
            self.crm.pool(),
            &user,
            purpose,
            &hash,
            now,
            expires_at,
            &audit,
        )
        .await?;
        let mail = if purpose == RESET {
            AuthMail::PasswordReset {
                user,
                token,
                expires_at,
            }
        } else {
            AuthMail::EmailVerification {
                user,
                token,
                expires_at,
            }
        };
        let crm = self.crm.clone();
        tokio::spawn(async move {
            if let Ok(mailer) = crm.mailer() {
                if let Err(err) = mailer.send(mail).await {
                    tracing::warn!(error = %crate::error::Chain(&err), "auth mail was not sent");
                }
            }
        });
        Ok(())
    }
}

impl Crm {
    /// The default workspace's auth service.
    pub fn auth(&self) -> Auth {
        self.workspace(WorkspaceId::DEFAULT).auth()
    }

    /// Registration: a new workspace named `workspace_name` and its owner, in one
    /// transaction.
    #[tracing::instrument(skip_all)]
    pub async fn register(&self, workspace_name: &str, owner: NewUser) -> Result<User> {
        let name = workspace_name.trim();
        let ws = WorkspaceId::new();
        let auth = Auth::new(self.clone(), ws);
        let mut e = Errors::default();
        if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
            e.add("workspace_name", "must be 1-200 characters");
        }
        let prepared = auth.prepare(owner, Some(Role::Owner)).await;
        if let Err(Error::Validation { errors }) = &prepared {
            for f in errors {
                e.add(f.field.clone(), f.message.clone());
            }
        }
        e.finish()?;
        let (user, hash) = prepared?;
        let audit = auth.audit(Some("registration"), "user.registered", Some(&user), None);
        store::users::create_user(self.pool(), Some(name), &user, &hash, &audit).await?;
        Ok(user)
    }

    /// Checks a session token: its session (refreshed when used a minute or more after
    /// the last refresh) and user, or `Unauthorized` (`MalformedToken` for a token of
    /// the wrong length or alphabet, `InvalidToken` for an unknown or expired one).
    #[tracing::instrument(skip_all)]
    pub async fn authenticate_session(&self, token: &str) -> Result<SessionUser> {
        let hash = token_hash(token)?;
        let now = self.now();
        let found = store::sessions::find_session(self.pool(), &hash).await?;
        let Some(mut session) = found.filter(|s| s.expires_at > now && s.absolute_expires_at > now)
        else {
            return Err(Error::unauthorized(AuthFailure::InvalidToken));
        };
        let cfg = self.auth_config();
        if now - session.last_seen_at >= Duration::minutes(1) {
            let ttl = if session.remember {
                cfg.remember_ttl
            } else {
                cfg.session_ttl
            };
            session.last_seen_at = now;
            session.expires_at = (now + ttl).min(session.absolute_expires_at);
            store::sessions::refresh_session(self.pool(), &session).await?;
        }
        let (user, _) =
            store::users::get_user(self.pool(), session.workspace_id, session.user_id).await?;
        if user.disabled_at.is_some() {
            return Err(Error::unauthorized(AuthFailure::InvalidToken));
        }
        Ok(SessionUser { session, user })
    }

    /// Logs a session out. An unknown or malformed token is `Unauthorized`.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, token: &str) -> Result<()> {
        let su = self.authenticate_session(token).await?;
        let audit = Auth::new(self.clone(), su.user.workspace_id).audit(
            Some(&su.user.id.to_string()),
            "session.revoked",
            Some(&su.user),
            None,
        );
        store::sessions::end_sessions(self.pool(), &su.user, Some(su.session.id), None, &audit)
            .await
            .map(|_| ())
    }

    /// Ends every session of the token's user ("log out everywhere").
    #[tracing::instrument(skip_all)]
    pub async fn logout_everywhere(&self, token: &str) -> Result<u64> {
        let su = self.authenticate_session(token).await?;
        let audit = Auth::new(self.clone(), su.user.workspace_id).audit(
            Some(&su.user.id.to_string()),
            "session.revoked_all",
            Some(&su.user),
            None,
        );
        store::sessions::end_sessions(self.pool(), &su.user, None, None, &audit).await
    }

    /// Deletes expired sessions and used or expired tokens; returns how many rows went.
    #[tracing::instrument(skip_all)]
    pub async fn cleanup_auth(&self) -> Result<u64> {
        let now = self.now();
        store::sessions::cleanup_auth(self.pool(), now).await
    }

    /// Completes a password reset: checks the policy, consumes the token, sets the
    /// password, ends every session and lifts any lockout of the email.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_password_reset(&self, token: &str, new_password: &str) -> Result<User> {
        let hash = token_hash(token)?;
        check_policy(new_password)?;
        // The token first: a guessed or spent token must not cost an Argon2 hash. It
        // is consumed below, in the transaction that sets the password.
        let now = self.now();
        let live = store::sessions::token_is_live(self.pool(), &hash, RESET, now).await?;
        if !live {
            return Err(Error::unauthorized(AuthFailure::InvalidToken));
        }
        let new_hash = self.passwords().hash(new_password).await?;
        store::sessions::reset_password(self.pool(), &hash, &new_hash, now).await
    }

    /// Completes an email verification: consumes the token and marks the email verified.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_email(&self, token: &str) -> Result<User> {
        let hash = token_hash(token)?;
        let now = self.now();
        store::sessions::verify_email(self.pool(), &hash, now).await
    }

    /// Hashes a password (Argon2id, the configured parameters) on the blocking pool.
    /// The policy is not applied here; see [`check_policy`].
    #[tracing::instrument(skip_all)]
    pub async fn hash_password(&self, password: &str) -> Result<String> {
        if password.len() > password::MAX_BYTES {
            return Err(Error::invalid(
                "password",
                format!("must be at most {} bytes", password::MAX_BYTES),
            ));
        }
        self.passwords().hash(password).await
    }

    /// Whether `password` matches a PHC string from [`Crm::hash_password`]; a
    /// malformed PHC string never matches.
    #[tracing::instrument(skip_all)]
    pub async fn verify_password(&self, password: &str, phc: &str) -> Result<bool> {
        if password.len() > password::MAX_BYTES {
            return Ok(false);
        }
        self.passwords().verify(password, phc).await
    }

    /// Password verifications this `Crm` has run, for unknown accounts too (a metric,
    /// and how tests show that unknown accounts cost a verify).
    pub fn password_verifications(&self) -> u64 {
        self.passwords().verifications()
    }

    /// Passwords this `Crm` has hashed (a metric; tests show that a refused reset
    /// token costs no hash).
    pub fn password_hashes(&self) -> u64 {
        self.passwords().hashes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn someone(role: Role) -> User {
        User {
            id: UserId::new(),
            workspace_id: WorkspaceId::DEFAULT,
            email: Email::parse("u@example.com").expect("email"),
            display_name: "U".into(),
            role,
            email_verified_at: None,
            disabled_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    /// The rules of roles, every (actor, target, new role) combination.
    #[test]
    fn who_may_set_which_role() {
        use Role::{Admin, Member, Owner};
        let allowed = |actor: Option<Role>, target: Role, role: Role, owners: usize| {
            let a = actor.map(someone);
            may_set_role(a.as_ref(), &someone(target), role, owners).is_ok()
        };
        for target in [Owner, Admin, Member] {
            for role in [Owner, Admin, Member] {
                let owner_involved = target == Owner || role == Owner;
                assert!(
                    allowed(Some(Owner), target, role, 2),
                    "{target:?}->{role:?}"
                );
                assert_eq!(allowed(Some(Admin), target, role, 2), !owner_involved);
                assert!(!allowed(Some(Member), target, role, 2));
                assert!(allowed(None, target, role, 2));
            }
        }
        // The last owner stays, whoever asks; keeping the role is no demotion.
        assert!(!allowed(None, Owner, Admin, 1));
        assert!(!allowed(Some(Owner), Owner, Member, 1));
        assert!(allowed(None, Owner, Owner, 1));
        // Nobody changes their own role.
        let me = someone(Owner);
        assert!(matches!(
            may_set_role(Some(&me), &me, Admin, 3),
            Err(Error::Forbidden)
        ));
        assert!(may_create(Some(&someone(Admin)), Owner).is_err());
        assert!(may_create(Some(&someone(Admin)), Admin).is_ok());
        assert!(may_create(Some(&someone(Member)), Member).is_err());
        assert!(may_create(Some(&someone(Owner)), Owner).is_ok());
        assert!(may_create(None, Owner).is_ok());
    }

    #[test]
    fn lockouts_grow_and_cap() {
        let cfg = AuthConfig::default();
        let t0 = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let mut t: Option<Throttle> = None;
        let mut locks = Vec::new();
        let mut now = t0;
        for _ in 0..40 {
            let (next, locked) = Throttle::after_failure(t, now, 5, Duration::minutes(15), &cfg);
            if locked {
                locks.push(next.locked_until.expect("locked") - now);
                now = next.locked_until.expect("locked");
            }
            t = Some(next);
        }
        let minutes: Vec<i64> = locks.iter().map(|d| d.num_minutes()).collect();
        // Issue 15, item 8: the escalation stops at a bound (it reached 24 h).
        assert_eq!(&minutes[..4], [15, 30, 60, 60]);
        assert!(minutes.iter().all(|m| *m <= 60), "{minutes:?}");
    }

    #[test]
    fn failures_outside_the_window_start_over() {
        let cfg = AuthConfig::default();
        let t0 = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let mut t = None;
        for i in 0..4 {
            t = Some(
                Throttle::after_failure(
                    t,
                    t0 + Duration::minutes(i),
                    5,
                    Duration::minutes(15),
                    &cfg,
                )
                .0,
            );
        }
        let (after, locked) = Throttle::after_failure(
            t,
            t0 + Duration::minutes(20),
            5,
            Duration::minutes(15),
            &cfg,
        );
        assert!(!locked);
        assert_eq!(after.failures, 1);
    }

    #[test]
    fn tokens_have_one_shape() {
        let (t, h) = new_token();
        assert_eq!(t.expose().len(), 43);
        assert_eq!(token_hash(t.expose()).expect("valid"), h);
        for bad in [
            "",
            "short",
            &format!("{}=", &t.expose()[..42]),
            &format!("{}!", &t.expose()[..42]),
            &format!("{}A", t.expose()),
        ] {
            assert!(
                matches!(
                    token_hash(bad),
                    Err(Error::Unauthorized {
                        reason: AuthFailure::MalformedToken
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_hides_passwords() {
        let l = Login {
            email: "a@x.com".into(),
            password: "Sup3r-Secret-Pw".into(),
            ..Default::default()
        };
        assert!(!format!("{l:?}").contains("Sup3r"));
        let u = NewUser {
            password: "Sup3r-Secret-Pw".into(),
            ..Default::default()
        };
        assert!(!format!("{u:?}").contains("Sup3r"));
    }
}
