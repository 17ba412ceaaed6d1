//! The types of sign-in and users: roles, users, sessions, the login throttle.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::password::PasswordParams;
use crate::ids::{SessionId, UserId, WorkspaceId};
use crate::leads::Email;
use crate::macros::string_enum;
use crate::secret::SecretString;
use crate::Result;

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
    pub(crate) fn user_id(&self) -> Option<UserId> {
        match self {
            Actor::User(id) => Some(*id),
            Actor::App(_) => None,
        }
    }

    /// The actor as the audit log names it.
    pub(crate) fn audit_name(&self) -> Option<String> {
        match self {
            Actor::User(id) => Some(format!("user:{id}")),
            Actor::App(name) => name.map(str::to_owned),
        }
    }
}

/// A change to a user's access (see [`Auth::disable_user`](super::Auth::disable_user) and its siblings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserAccess {
    Disable,
    Enable,
    Delete,
    EndSessions,
}

impl UserAccess {
    pub(crate) fn action(self) -> &'static str {
        match self {
            UserAccess::Disable => "user.disabled",
            UserAccess::Enable => "user.enabled",
            UserAccess::Delete => "user.deleted",
            UserAccess::EndSessions => "session.revoked_all",
        }
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
    /// A password meeting [`check_policy`](super::check_policy).
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

/// What a sign-in with an email and password only ([`crate::Crm::sign_in`]) found.
#[derive(Debug)]
pub enum SignIn {
    /// One account of the email has this password: signed in to it.
    SignedIn(Box<LoggedIn>),
    /// Several accounts of the email have this password: sign in again with the
    /// chosen workspace's id ([`crate::Workspace::auth`], [`crate::auth::Auth::login`]).
    /// No session was opened.
    ChooseWorkspace(Vec<WorkspaceChoice>),
}

/// A workspace to choose from at sign-in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkspaceChoice {
    /// The id to sign in with.
    pub id: WorkspaceId,
    /// Its name.
    pub name: String,
}

/// A session that checked out, and its user.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUser {
    /// The session (with its refreshed expiry).
    pub session: Session,
    /// Its user.
    pub user: User,
}

/// A mail the auth service asks the [`Mailer`](super::Mailer) to send.
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
    pub(crate) fn after_failure(
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
    /// Registration refuses an email that has an account in any workspace
    /// (`InvalidState` with code `email_taken`), so an email-only sign-in finds one
    /// account. Default true; false lets one email register several workspaces
    /// (sign-in then lists them to choose from). Users added to a workspace by its
    /// admins may always share an email with an account elsewhere.
    pub one_account_per_email: bool,
    /// Sign-in refuses an account whose email is not verified yet
    /// (`Unauthorized(EmailNotVerified)`, said only after the password checked out).
    /// Default false. With a mailer, registration and every new user get a
    /// verification mail either way.
    pub require_verified_email: bool,
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
            one_account_per_email: true,
            require_verified_email: false,
        }
    }
}
