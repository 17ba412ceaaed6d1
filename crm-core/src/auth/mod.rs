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

mod global;
pub use global::SIGN_IN_ACCOUNTS;
pub(crate) mod model;
pub mod password;
pub(crate) mod rules;

use std::future::Future;
use std::pin::Pin;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use serde_json::json;

pub use model::{
    Actor, AuthConfig, AuthMail, LoggedIn, Login, NewUser, Role, Session, SessionUser, SignIn,
    User, WorkspaceChoice,
};
pub(crate) use model::{Throttle, UserAccess, RESET, VERIFY};
pub use password::{check_policy, PasswordParams};
pub(crate) use rules::{may_change_access, may_create, may_lift_lockout, may_set_role};

use crate::api_keys::format::{hash as sha256, hex};
use crate::audit::AuditEntry;
use crate::error::{AuthFailure, Errors};
use crate::ids::{SessionId, UserId, WorkspaceId};
use crate::leads::Email;
use crate::secret::SecretString;
use crate::store;
use crate::store::Ts;
use crate::{Crm, Error, Result};

/// Sends auth mails; the email integration implements it. A failure is logged.
pub trait Mailer: Send + Sync + 'static {
    /// Sends one mail.
    fn send(&self, mail: AuthMail) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;
}

/// How a session opened by [`Auth::open_session`] starts.
pub(crate) struct SessionStart<'a> {
    /// A remember-me session.
    pub(crate) remember_me: bool,
    /// The client's IP address.
    pub(crate) ip: Option<&'a str>,
    /// The client's `User-Agent`.
    pub(crate) user_agent: Option<&'a str>,
    /// What the `login.succeeded` audit entry says besides.
    pub(crate) details: serde_json::Value,
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
        self.welcome(&user).await;
        Ok(user)
    }

    /// Creates a member whose email an OpenID Connect provider has verified (so
    /// no verification mail), audited as `user.created` by `via`; the users quota
    /// holds.
    #[cfg(feature = "oidc")]
    pub(crate) async fn create_verified_member(&self, input: NewUser, via: &str) -> Result<User> {
        let (mut user, hash) = self.prepare(input, Some(Role::Member)).await?;
        user.email_verified_at = Some(user.created_at);
        let audit = self.audit(Some(via), "user.created", Some(&user), None);
        store::users::create_user_by(
            self.crm.pool(),
            &user,
            &hash,
            &audit,
            None,
            |_| Ok(()),
            self.crm.quotas().users,
        )
        .await?;
        Ok(user)
    }

    /// Sends a new user their verification mail when a mailer is registered (a
    /// failure is logged: the user exists, and can ask for another mail).
    pub(super) async fn welcome(&self, user: &User) {
        if user.email_verified_at.is_some() || self.crm.mailer_for(self.ws).await.is_err() {
            return;
        }
        if let Err(err) = self.send_token(user.clone(), VERIFY).await {
            tracing::warn!(error = %crate::error::Chain(&err), "the verification mail was not sent");
        }
    }

    /// Creates the first owner of this workspace when it has none, with the email
    /// counted as verified (the operator gave it); returns `None` when an owner
    /// already exists (the server calls this at every start).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn bootstrap_owner(&self, input: NewUser) -> Result<Option<User>> {
        let users = self.users().await?;
        if users.iter().any(|u| u.role == Role::Owner) {
            return Ok(None);
        }
        let (mut user, hash) = self.prepare(input, Some(Role::Owner)).await?;
        // The operator gave this address themselves: it counts as verified, so that
        // `require_verified_email` never locks out the first owner.
        user.email_verified_at = Some(user.created_at);
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
        store::sessions::lift_lockout(self.crm.pool(), &user, by, may_lift_lockout, &audit).await?;
        // The email's sign-ins without a workspace count apart, on the default
        // workspace's row: lifted too, as crm's own (under row-level security a
        // workspace's statements cannot reach that row).
        let any = store::sessions::any_workspace_key(&user.email.key());
        store::sessions::forget_attempts(self.crm.root_pool(), WorkspaceId::DEFAULT, &any).await
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
    pub(super) async fn count_attempt(
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

    /// Audits a counted attempt whose password was wrong (and the lockout it opened)
    /// in this workspace.
    pub(super) async fn attempt_failed(
        &self,
        action: &str,
        email_key: &str,
        ip: Option<&str>,
        opened: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.attempt_failed_in(&[self.ws], action, email_key, ip, opened)
            .await
    }

    /// [`Auth::attempt_failed`], audited in each of `workspaces` (those whose
    /// accounts the attempt was about; none for an email no workspace knows).
    pub(super) async fn attempt_failed_in(
        &self,
        workspaces: &[WorkspaceId],
        action: &str,
        email_key: &str,
        ip: Option<&str>,
        opened: Option<DateTime<Utc>>,
    ) -> Result<()> {
        metrics::counter!("crm_auth_failures_total", "action" => action.to_owned()).increment(1);
        if opened.is_some() {
            metrics::counter!("crm_auth_lockouts_total").increment(1);
        }
        let mut audits = Vec::new();
        for ws in workspaces {
            audits.push(AuditEntry {
                workspace_id: *ws,
                details: json!({ "email": email_key }),
                ..self.audit(None, action, None, ip)
            });
            if let Some(until) = opened {
                audits.push(AuditEntry {
                    workspace_id: *ws,
                    details: json!({ "email": email_key, "until": until }),
                    ..self.audit(None, "login.locked", None, ip)
                });
            }
        }
        if audits.is_empty() {
            return Ok(());
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
        let email = self.check_login(&login).await?;
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
            self.attempt_failed("login.failed", &key, login.ip.as_deref(), opened)
                .await?;
            return Err(invalid_credentials());
        };
        self.start_session(user, &hash, &login).await
    }

    /// What every sign-in checks before it looks anything up: the email's shape, the
    /// password's length and the IP's budget.
    pub(super) async fn check_login(&self, login: &Login) -> Result<Email> {
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
        Ok(email)
    }

    /// Opens a session for `user` (of this workspace), whose password `hash` has just
    /// verified `login.password`: rehashes it when its parameters are outdated, clears
    /// the email's counted attempts and audits the sign-in.
    pub(super) async fn start_session(
        &self,
        user: User,
        hash: &str,
        login: &Login,
    ) -> Result<LoggedIn> {
        if self.crm.auth_config().require_verified_email && user.email_verified_at.is_none() {
            // The password was right: it counts as no failure (five sign-ins before
            // the mail is opened must not lock the account).
            store::sessions::forget_attempts(self.crm.pool(), self.ws, &user.email.key()).await?;
            return Err(Error::unauthorized(AuthFailure::EmailNotVerified));
        }
        let passwords = self.crm.passwords();
        let rehash = if passwords.needs_rehash(hash) {
            Some(passwords.hash(&login.password).await?)
        } else {
            None
        };
        let start = SessionStart {
            remember_me: login.remember_me,
            ip: login.ip.as_deref(),
            user_agent: login.user_agent.as_deref(),
            details: json!({}),
        };
        self.open_session(user, Some((hash, rehash.as_deref())), start)
            .await
    }

    /// Opens a session for `user` (of this workspace) who has just proved who they
    /// are: with the password whose `(hash, rehash)` is given (the hash must still
    /// be the user's when the session is written), or another way (`None`). The
    /// user must not be disabled by then; clears the email's counted attempts and
    /// audits `login.succeeded` with `start.details`.
    pub(crate) async fn open_session(
        &self,
        user: User,
        password: Option<(&str, Option<&str>)>,
        start: SessionStart<'_>,
    ) -> Result<LoggedIn> {
        let cfg = self.crm.auth_config();
        let (ttl, cap) = if start.remember_me {
            (cfg.remember_ttl, cfg.remember_cap)
        } else {
            (cfg.session_ttl, cfg.session_cap)
        };
        let now = self.crm.now();
        let ip = start.ip;
        let (token, token_hash) = new_token();
        let session = Session {
            id: SessionId::new(),
            workspace_id: self.ws,
            user_id: user.id,
            remember: start.remember_me,
            ip: ip.map(str::to_owned),
            user_agent: start
                .user_agent
                .map(|ua| ua.chars().filter(|c| !c.is_control()).take(512).collect()),
            created_at: now,
            last_seen_at: now,
            expires_at: now + ttl.min(cap),
            absolute_expires_at: now + cap,
        };
        let mut audit = self.audit(
            Some(&user.id.to_string()),
            "login.succeeded",
            Some(&user),
            ip,
        );
        audit.details = start.details;
        store::sessions::login_succeeded(
            self.crm.pool(),
            &user,
            &user.email.key(),
            password,
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
        self.mail_token_to(email, RESET).await
    }

    /// Sends another verification mail to the account of `email`, as
    /// [`Auth::request_password_reset`] does a reset mail: the same answer at once
    /// whether the account exists or not, at most as often as the
    /// `email_verification` policy allows per account (5 an hour), nothing for an
    /// account already verified.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn resend_email_verification(&self, email: &str) -> Result<()> {
        self.mail_token_to(email, VERIFY).await
    }

    pub(super) async fn mail_token_to(&self, email: &str, purpose: &'static str) -> Result<()> {
        let email = Email::parse(email).map_err(|m| Error::invalid("email", m))?;
        self.crm.mailer_for(self.ws).await?;
        let auth = self.clone();
        tokio::spawn(async move {
            if let Err(err) = auth.send_token_to(&email, purpose).await {
                tracing::warn!(error = %crate::error::Chain(&err), purpose, "an auth mail was not sent");
            }
        });
        Ok(())
    }

    /// The work behind [`Auth::mail_token_to`], off the caller's path.
    pub(super) async fn send_token_to(&self, email: &Email, purpose: &'static str) -> Result<()> {
        let key = email.key();
        // Hashed: an email of any length makes a key within the limiter's bound.
        let budget = format!("{}:{}", self.ws, hex(&sha256(&key)));
        let policy = if purpose == RESET {
            "password_reset"
        } else {
            "email_verification"
        };
        if !self
            .crm
            .rate_limiter()
            .check(policy, &budget)
            .await?
            .allowed
        {
            return Ok(());
        }
        let found = store::sessions::login_lookup(self.crm.pool(), self.ws, &key)
            .await?
            .1;
        let wanted = |u: &User| {
            u.disabled_at.is_none() && (purpose == RESET || u.email_verified_at.is_none())
        };
        if let Some((user, _)) = found.filter(|(u, _)| wanted(u)) {
            self.send_token(user, purpose).await?;
        }
        Ok(())
    }

    /// Sends a verification mail to a user.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, user_id = %id))]
    pub async fn request_email_verification(&self, id: UserId) -> Result<()> {
        self.crm.mailer_for(self.ws).await?;
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
        let (crm, ws) = (self.crm.clone(), self.ws);
        tokio::spawn(async move {
            let sent = match crm.mailer_for(ws).await {
                Ok(mailer) => mailer.send(mail).await,
                Err(err) => Err(err),
            };
            if let Err(err) = sent {
                tracing::warn!(error = %crate::error::Chain(&err), "auth mail was not sent");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
