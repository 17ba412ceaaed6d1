//! Housekeeping deletes: rows that hold nothing any more (expired sessions and
//! tokens, spent idempotency keys, idle rate-limit rows) and history older than the
//! retention period (events whose deliveries are all finished, delivery attempts).
//! Each goes in batches of [`BATCH`] rows, one short write transaction per batch, so
//! writers wait for one batch at most, never for the whole purge.

use super::sql::{query, Arg};
use super::{Pool, Ts};
use crate::Result;

/// Rows deleted per transaction.
pub(crate) const BATCH: u64 = 500;

/// Deletes the rows of `table` that match `cond` (`$1` is `cutoff`), [`BATCH`] at a
/// time, found by their key columns `key`; returns how many. The condition is checked
/// again on the rows deleted (on Postgres a row changed since the batch was chosen is
/// re-read, and must still match). The text is crm's own, never a caller's.
async fn purge(pool: &Pool, table: &str, key: &str, cond: &str, cutoff: Arg<'_>) -> Result<u64> {
    let sql = format!(
        "DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {cond} LIMIT {BATCH}) \
         AND ({cond})"
    );
    let mut total = 0;
    loop {
        let mut tx = pool.begin_write().await?;
        let n = query(sql.as_str())
            .bind(cutoff.clone())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        total += n;
        if n < BATCH {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Sessions past their idle or absolute expiry.
pub(crate) async fn sessions(pool: &Pool, now: Ts) -> Result<u64> {
    let cond = "expires_at <= $1 OR absolute_expires_at <= $1";
    purge(pool, "crm_sessions", "id", cond, now.into()).await
}

/// Password-reset and verification tokens that are used or past their expiry (a
/// token that is not there is refused as a used one is).
pub(crate) async fn auth_tokens(pool: &Pool, now: Ts) -> Result<u64> {
    let cond = "used_at IS NOT NULL OR expires_at <= $1";
    purge(pool, "crm_auth_tokens", "id", cond, now.into()).await
}

/// Sign-ins with an OpenID Connect provider that were started and never finished,
/// past their expiry.
pub(crate) async fn oidc_logins(pool: &Pool, now: Ts) -> Result<u64> {
    let cond = "expires_at <= $1";
    purge(pool, "crm_oidc_logins", "state_hash", cond, now.into()).await
}

/// Login-throttle rows with no failure since `before` and no lockout running then.
pub(crate) async fn login_throttles(pool: &Pool, before: Ts) -> Result<u64> {
    let key = "workspace_id, email_key";
    let cond = "window_start < $1 AND (locked_until IS NULL OR locked_until < $1)";
    purge(pool, "crm_login_throttle", key, cond, before.into()).await
}

/// Idempotency keys created before `before`.
pub(crate) async fn idempotency_keys(pool: &Pool, before: Ts) -> Result<u64> {
    let key = "workspace_id, scope, idem_key";
    let cond = "created_at < $1";
    purge(pool, "crm_idempotency_keys", key, cond, before.into()).await
}

/// Postgres rate-limit rows whose theoretical arrival time is before `now` (µs):
/// such a key behaves exactly as one never seen.
#[cfg(feature = "postgres")]
pub(crate) async fn rate_limits(pool: &Pool, now: i64) -> Result<u64> {
    purge(pool, "crm_rate_limits", "key", "tat < $1", now.into()).await
}

/// Events created before `before` that no pending job still needs (their jobs go
/// with them).
pub(crate) async fn events(pool: &Pool, before: Ts) -> Result<u64> {
    let cond = "created_at < $1 AND NOT EXISTS (SELECT 1 FROM crm_jobs j \
                WHERE j.event_id = crm_events.id AND j.status = 'pending')";
    purge(pool, "crm_events", "id", cond, before.into()).await
}

/// Delivery attempts logged before `before`.
pub(crate) async fn attempts(pool: &Pool, before: Ts) -> Result<u64> {
    let cond = "created_at < $1";
    purge(pool, "crm_delivery_attempts", "id", cond, before.into()).await
}

/// Tracked import reports last updated before `before`.
pub(crate) async fn imports(pool: &Pool, before: Ts) -> Result<u64> {
    purge(pool, "crm_imports", "id", "updated_at < $1", before.into()).await
}
