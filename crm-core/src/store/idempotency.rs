//! Idempotency keys: a request claims its key (or finds the earlier response to
//! replay), then completes it (expired keys go in `housekeeping`).

use sqlx::FromRow;

use super::sql::{query, query_as};
use super::{Pool, Ts};
use crate::ids::WorkspaceId;
use crate::Result;

#[derive(FromRow)]
pub(crate) struct IdempotencyRow {
    pub fingerprint: String,
    pub status_code: Option<i64>,
    pub response: Option<String>,
}

/// Claims `key`: a row older than `expired_before` (or still running and older
/// than `stale_before`) is dropped first. Returns `None` when the claim is new,
/// else the existing row's fingerprint, status and response.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn claim_idempotency(
    pool: &Pool,
    ws: WorkspaceId,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: Ts,
    expired_before: Ts,
    stale_before: Ts,
) -> Result<Option<IdempotencyRow>> {
    let mut tx = pool.begin_write().await?;
    query(
        "DELETE FROM crm_idempotency_keys WHERE workspace_id = $1 AND scope = $2 AND idem_key = $3 \
         AND (created_at < $4 OR (status_code IS NULL AND created_at < $5))",
    )
    .bind(ws)
    .bind(scope)
    .bind(key)
    .bind(expired_before)
    .bind(stale_before)
    .execute(&mut tx)
    .await?;
    let inserted = query(
        "INSERT INTO crm_idempotency_keys (workspace_id, scope, idem_key, fingerprint, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(ws)
    .bind(scope)
    .bind(key)
    .bind(fingerprint)
    .bind(now)
    .execute(&mut tx)
    .await?;
    let existing = if inserted == 1 {
        None
    } else {
        let row: IdempotencyRow = query_as::<IdempotencyRow>(
            "SELECT fingerprint, status_code, response FROM crm_idempotency_keys \
             WHERE workspace_id = $1 AND scope = $2 AND idem_key = $3",
        )
        .bind(ws)
        .bind(scope)
        .bind(key)
        .fetch_one(&mut tx)
        .await?;
        Some(row)
    };
    tx.commit().await?;
    Ok(existing)
}

/// Stores the response of a claimed key (`Some`), or gives the claim up (`None`).
pub(crate) async fn finish_idempotency(
    pool: &Pool,
    ws: WorkspaceId,
    scope: &str,
    key: &str,
    response: Option<(i64, &str)>,
) -> Result<()> {
    let q = match response {
        Some((status, body)) => query(
            "UPDATE crm_idempotency_keys SET status_code = $4, response = $5 \
             WHERE workspace_id = $1 AND scope = $2 AND idem_key = $3 AND status_code IS NULL",
        )
        .bind(ws)
        .bind(scope)
        .bind(key)
        .bind(status)
        .bind(body),
        None => query(
            "DELETE FROM crm_idempotency_keys \
             WHERE workspace_id = $1 AND scope = $2 AND idem_key = $3 AND status_code IS NULL",
        )
        .bind(ws)
        .bind(scope)
        .bind(key),
    };
    q.execute(pool).await?;
    Ok(())
}
