//! Shared rate-limit state (GCRA: one theoretical arrival time per key) for the
//! Postgres store of [`crate::ratelimit`]. Postgres only: on SQLite one process owns
//! the database, and the limiter keeps its state in memory.

use crate::Result;

/// Admits one request for `key` at `now` (microseconds) with emission interval `t`
/// and burst tolerance `p`, advancing the key's arrival time under the row lock; or
/// reads it to say when to retry. `(admitted, arrival time)`.
pub(crate) async fn step(
    pool: &sqlx::PgPool,
    key: &str,
    now: i64,
    t: i64,
    p: i64,
) -> Result<(bool, i64)> {
    Ok(sqlx::query_as(
        "WITH up AS ( \
             INSERT INTO crm_rate_limits AS r (key, tat) VALUES ($1, $2 + $3) \
             ON CONFLICT (key) DO UPDATE SET tat = GREATEST(r.tat, $2) + $3 \
             WHERE GREATEST(r.tat, $2) + $3 - $4 <= $2 \
             RETURNING tat) \
         SELECT true, tat FROM up \
         UNION ALL \
         SELECT false, GREATEST(tat, $2) FROM crm_rate_limits \
         WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM up)",
    )
    .bind(key)
    .bind(now)
    .bind(t)
    .bind(p)
    .fetch_one(pool)
    .await?)
}
