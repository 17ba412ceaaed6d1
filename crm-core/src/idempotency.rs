//! Idempotency keys for API writes, stored in the database so that every instance on
//! one database sees the same keys (Stripe's `Idempotency-Key` contract).
//!
//! The first request with a key claims it; its response is stored and replayed for
//! 24 hours to a request with the same key and the same fingerprint (a hash of what
//! the request asked for). A different fingerprint is a mismatch; a second request
//! while the first still runs is told so. A claim whose request fails without a
//! response worth keeping (a server error) is given up, so a retry runs again; a claim
//! left by a process that died is taken over after [`STALE_AFTER`].

use chrono::Duration;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::WorkspaceId;
use crate::store;
use crate::store::Ts;
use crate::{Crm, Error, Result};

/// The fingerprint key of a `Crm` built without a master key (then a fingerprint is
/// only as secret as the request; with one, the key is derived from it).
pub(crate) const PUBLIC_FINGERPRINT_KEY: [u8; 32] = *b"crm idempotency, no master key!!";

/// How long a stored response is replayed.
pub const REPLAY_FOR: Duration = Duration::hours(24);
/// How long a claim may run before another request may take it over.
pub const STALE_AFTER: Duration = Duration::minutes(5);
/// Longest key, in bytes.
pub const KEY_MAX: usize = 255;

/// What [`Idempotency::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: run the request, then [`Idempotency::complete`] or
    /// [`Idempotency::release`] it.
    New,
    /// The key was used with the same fingerprint: answer with this stored response.
    Replay {
        /// The stored status code.
        status: u16,
        /// The stored body.
        body: String,
    },
    /// The first request with this key has not finished yet.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

/// The idempotency-key store of one workspace; from [`crate::Workspace::idempotency`].
#[derive(Clone, Debug)]
pub struct Idempotency {
    crm: Crm,
    ws: WorkspaceId,
}

/// Checks a key as a client sent it: 1–255 visible ASCII characters.
fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > KEY_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "Idempotency-Key",
            format!("must be 1-{KEY_MAX} visible ASCII characters"),
        ));
    }
    Ok(())
}

fn check_scope(scope: &str) -> Result<()> {
    if scope.is_empty() || scope.len() > KEY_MAX || scope.contains('\0') {
        return Err(Error::invalid(
            "scope",
            format!("must be 1-{KEY_MAX} bytes without NUL"),
        ));
    }
    Ok(())
}

impl Idempotency {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self { crm, ws }
    }

    /// Claims `key` within `scope` (e.g. an API key id) for a request made of the
    /// byte strings `request` (say its path and body): a later claim replays only when
    /// they are equal, compared by HMAC-SHA256 under a key derived from the master key
    /// (a stored fingerprint reveals nothing of a request, such as a password in it). A malformed key is a `Validation` error
    /// naming `Idempotency-Key`.
    pub async fn claim(&self, scope: &str, key: &str, request: &[&[u8]]) -> Result<Claim> {
        check_key(key)?;
        check_scope(scope)?;
        // An HMAC, not a bare hash: a body may hold a password (a user created, a
        // password changed), and a stored fingerprint must not let a reader of the
        // database test guesses of it at hash speed.
        let mut h = <Hmac<Sha256> as Mac>::new_from_slice(self.crm.fingerprint_key())
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        for part in request {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let fingerprint = crate::api_keys::format::hex(&h.finalize().into_bytes().into());
        let now = self.crm.now();
        let found = store::idempotency::claim_idempotency(
            self.crm.pool(),
            self.ws,
            scope,
            key,
            &fingerprint,
            Ts(now),
            Ts(now - REPLAY_FOR),
            Ts(now - STALE_AFTER),
        )
        .await?;
        Ok(match found {
            None => Claim::New,
            Some(row) if row.fingerprint != fingerprint => Claim::Mismatch,
            Some(row) => match (row.status_code, row.response) {
                (Some(status), Some(body)) => Claim::Replay {
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                },
                _ => Claim::InFlight,
            },
        })
    }

    /// Stores the response of a claimed key for replay.
    pub async fn complete(&self, scope: &str, key: &str, status: u16, body: &str) -> Result<()> {
        check_key(key)?;
        check_scope(scope)?;
        if body.contains('\0') {
            return Err(Error::invalid("body", "must not contain NUL characters"));
        }
        store::idempotency::finish_idempotency(
            self.crm.pool(),
            self.ws,
            scope,
            key,
            Some((i64::from(status), body)),
        )
        .await
    }

    /// Gives a claim up without a response, so the next request with the key runs.
    pub async fn release(&self, scope: &str, key: &str) -> Result<()> {
        check_key(key)?;
        check_scope(scope)?;
        store::idempotency::finish_idempotency(self.crm.pool(), self.ws, scope, key, None).await
    }
}
