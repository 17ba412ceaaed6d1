//! Housekeeping: deleting what crm's tables no longer need, so they do not grow
//! forever. [`Crm::housekeep`] runs one pass; the `crm` server runs it on a timer,
//! and an embedding app schedules it as it likes (every few minutes to once an hour
//! is plenty; passes from several instances at once are harmless).
//!
//! A pass deletes:
//! - sessions past their idle or absolute expiry;
//! - password-reset and verification tokens that are used or past their expiry;
//! - login-throttle rows of emails with no failed sign-in for [`THROTTLE_MEMORY`]
//!   and no lockout running (their lockout escalation starts again from the first
//!   step);
//! - idempotency keys older than [`REPLAY_FOR`];
//! - on Postgres, rate-limit rows whose key is idle (it behaves as one never seen;
//!   on SQLite the limiter's state is in memory and bounded);
//! - with a retention period: events older than it whose deliveries are all finished
//!   (a job still pending keeps its event), with their jobs, delivery attempts
//!   older than it, and the reports of tracked imports not updated within it;
//!
//! - stored files no attachment names, an hour after they were written (see
//!   [`crate::storage`]); a warning in the log counts them.
//!
//! Rows go in batches of 500, each its own short transaction, so writers never wait
//! for a whole pass. Leads, activities, users, keys, endpoints and the audit log are
//! never touched.

use chrono::Duration;

use crate::idempotency::REPLAY_FOR;

/// How long the login throttle remembers an email's failures and lockouts after
/// the last failure.
pub const THROTTLE_MEMORY: Duration = Duration::days(7);
use crate::store::{self, Ts};
use crate::{Crm, Result};

/// What a pass keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Housekeeping {
    /// How long events, delivery attempts and import reports are kept; `None` keeps them forever.
    /// Default 30 days.
    pub retention: Option<Duration>,
}

impl Default for Housekeeping {
    fn default() -> Self {
        Self {
            retention: Some(Duration::days(30)),
        }
    }
}

/// How many rows one pass deleted, by kind.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    /// Expired sessions.
    pub sessions: u64,
    /// Used or expired password-reset and verification tokens, and expired
    /// sign-ins with an OpenID Connect provider that were never finished.
    pub auth_tokens: u64,
    /// Login-throttle rows of emails quiet for [`THROTTLE_MEMORY`].
    pub login_throttles: u64,
    /// Idempotency keys past their replay window.
    pub idempotency_keys: u64,
    /// Idle rate-limit rows (Postgres).
    pub rate_limit_rows: u64,
    /// Events past the retention period (with their finished jobs).
    pub events: u64,
    /// Delivery attempts past the retention period.
    pub attempts: u64,
    /// Tracked import reports not updated within the retention period.
    pub imports: u64,
    /// Stored files no attachment names, older than
    /// [`crate::attachments::ORPHAN_GRACE`] (bytes left by a crash between a file's
    /// bytes and its row, or by a deleted workspace): found and deleted.
    pub orphaned_files: u64,
}

impl Purged {
    /// All rows deleted.
    pub fn total(&self) -> u64 {
        self.sessions
            + self.auth_tokens
            + self.login_throttles
            + self.idempotency_keys
            + self.rate_limit_rows
            + self.events
            + self.attempts
            + self.imports
            + self.orphaned_files
    }
}

impl Crm {
    /// One housekeeping pass (see [the module docs](crate::housekeeping)), at the
    /// configured clock's time. An error stops the pass where it was; what was
    /// deleted before stays deleted, and the next pass goes on.
    pub async fn housekeep(&self, config: Housekeeping) -> Result<Purged> {
        let pool = self.pool();
        let now = self.now();
        let mut purged = Purged {
            sessions: store::housekeeping::sessions(pool, Ts(now)).await?,
            auth_tokens: store::housekeeping::auth_tokens(pool, Ts(now)).await?
                + store::housekeeping::oidc_logins(pool, Ts(now)).await?,
            login_throttles: store::housekeeping::login_throttles(pool, Ts(now - THROTTLE_MEMORY))
                .await?,
            idempotency_keys: store::housekeeping::idempotency_keys(pool, Ts(now - REPLAY_FOR))
                .await?,
            ..Purged::default()
        };
        #[cfg(feature = "postgres")]
        if pool.dialect() == store::Dialect::Postgres {
            purged.rate_limit_rows =
                store::housekeeping::rate_limits(pool, now.timestamp_micros()).await?;
        }
        if let Some(keep) = config.retention {
            let before = Ts(now - keep);
            purged.events = store::housekeeping::events(pool, before).await?;
            purged.attempts = store::housekeeping::attempts(pool, before).await?;
            purged.imports = store::housekeeping::imports(pool, before).await?;
        }
        purged.orphaned_files = self.sweep_orphans().await?;
        Ok(purged)
    }
}
