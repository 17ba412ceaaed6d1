//! The auth entry points on [`Crm`] itself: what is not scoped to a workspace
//! handle (registration, checking and ending sessions, confirming mailed tokens,
//! password hashing).

use chrono::Duration;

pub(super) use password::check_policy;

use super::{
    invalid_credentials, password, token_hash, Auth, Login, NewUser, Role, SessionUser, SignIn,
    User, WorkspaceChoice, RESET, VERIFY,
};
use crate::error::{AuthFailure, Errors};
use crate::ids::WorkspaceId;
use crate::leads::Email;
use crate::store;
use crate::{Crm, Error, Result};

/// How many accounts of one email [`Crm::sign_in`] checks, and how many password
/// hashes every one of its attempts verifies.
pub const SIGN_IN_ACCOUNTS: usize = 3;

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
        let one = self.auth_config().one_account_per_email;
        store::users::create_user(self.pool(), Some((name, one)), &user, &hash, &audit).await?;
        auth.welcome(&user).await;
        Ok(user)
    }

    /// Signs in with an email and password only, in whichever workspace the email has
    /// an account: one account with this password → signed in to it; several →
    /// [`SignIn::ChooseWorkspace`] lists them (sign in again with the chosen one's
    /// [`Auth::login`]). An unknown email and a wrong password both answer
    /// `Unauthorized(InvalidCredentials)`, after the same work: every attempt
    /// verifies exactly [`SIGN_IN_ACCOUNTS`] hashes (the email's accounts, oldest
    /// first, then dummies), so neither the answer nor its time tells whether the
    /// email exists or how many accounts it has. An email with more accounts than
    /// that signs in to the others with their workspace's id.
    ///
    /// Attempts are counted per email under a key of their own (the `login`
    /// policy, with the same lockouts as [`Auth::login`]); a workspace's own login
    /// counts apart, so at most twice the policy's attempts per period reach an
    /// account's hash. The count is forgotten when every account of the email
    /// took the password; a sign-in that matched one account of several keeps it,
    /// so knowing one account's password is no way to guess another's without limit.
    /// Lifting an account's lockout ([`Auth::lift_lockout`]) lifts this count too.
    #[tracing::instrument(skip_all)]
    pub async fn sign_in(&self, login: Login) -> Result<SignIn> {
        let front = Auth::new(self.clone(), WorkspaceId::DEFAULT);
        let email = front.check_login(&login).await?;
        let key = email.key();
        let counted = store::sessions::any_workspace_key(&key);
        let accounts = store::users::accounts_by_email(self.pool(), &key, SIGN_IN_ACCOUNTS).await?;
        let opened = front.count_attempt(&counted, self.now()).await?;
        let passwords = self.passwords();
        let checked = accounts.len();
        let workspaces: Vec<WorkspaceId> = accounts.iter().map(|a| a.0.workspace_id).collect();
        let mut matched = Vec::new();
        for account in accounts {
            if passwords.verify(&login.password, &account.1).await? {
                matched.push(account);
            }
        }
        for _ in checked..SIGN_IN_ACCOUNTS {
            passwords.verify_dummy(&login.password).await?;
        }
        if matched.is_empty() {
            // Each account's workspace sees the attempt on its user; the default
            // workspace never sees the emails of other tenants.
            front
                .attempt_failed_in(
                    &workspaces,
                    "login.failed",
                    &key,
                    login.ip.as_deref(),
                    opened,
                )
                .await?;
            return Err(invalid_credentials());
        }
        if matched.len() == checked {
            store::sessions::forget_attempts(self.pool(), WorkspaceId::DEFAULT, &counted).await?;
        }
        if matched.len() > 1 {
            let choices = matched
                .into_iter()
                .map(|(user, _, name)| WorkspaceChoice {
                    id: user.workspace_id,
                    name,
                })
                .collect();
            return Ok(SignIn::ChooseWorkspace(choices));
        }
        let Some((user, hash, _)) = matched.pop() else {
            return Err(invalid_credentials());
        };
        let auth = Auth::new(self.clone(), user.workspace_id);
        let done = auth.start_session(user, &hash, &login).await?;
        Ok(SignIn::SignedIn(Box::new(done)))
    }

    /// [`Auth::request_password_reset`] for the email's accounts in every workspace
    /// (the oldest [`SIGN_IN_ACCOUNTS`]), each with its own link: for a user who
    /// signs in without a workspace id. The same immediate answer whether the email
    /// has accounts or not; each account's mails are limited as in its workspace.
    #[tracing::instrument(skip_all)]
    pub async fn request_password_reset(&self, email: &str) -> Result<()> {
        self.mail_every_account(email, RESET).await
    }

    /// [`Auth::resend_email_verification`] for the email's unverified accounts in
    /// every workspace, as [`Crm::request_password_reset`] does.
    #[tracing::instrument(skip_all)]
    pub async fn resend_email_verification(&self, email: &str) -> Result<()> {
        self.mail_every_account(email, VERIFY).await
    }

    async fn mail_every_account(&self, email: &str, purpose: &'static str) -> Result<()> {
        let email = Email::parse(email).map_err(|m| Error::invalid("email", m))?;
        if !self.can_mail() {
            self.default_mailer()?;
        }
        let crm = self.clone();
        tokio::spawn(async move {
            let accounts =
                store::users::accounts_by_email(crm.pool(), &email.key(), SIGN_IN_ACCOUNTS).await;
            let workspaces = match accounts {
                Ok(a) => a
                    .into_iter()
                    .map(|(u, _, _)| u.workspace_id)
                    .collect::<Vec<_>>(),
                Err(err) => {
                    tracing::warn!(error = %crate::error::Chain(&err), purpose, "an auth mail was not sent");
                    return;
                }
            };
            for ws in workspaces {
                let auth = Auth::new(crm.clone(), ws);
                if let Err(err) = auth.send_token_to(&email, purpose).await {
                    tracing::warn!(error = %crate::error::Chain(&err), purpose, "an auth mail was not sent");
                }
            }
        });
        Ok(())
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
