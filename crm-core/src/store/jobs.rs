//! The job queue behind webhook and notification delivery: a fair claim with a
//! lease (skipping rows other workers hold, on Postgres), the finish of an attempt
//! with its record and the endpoint's health in one transaction, and re-enqueueing
//! (resend, test events).

use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{pow2_runs, query, query_as, Dialect, Tx};
use super::{audit, endpoints, outbox, Pool, Ts};
use crate::audit::AuditEntry;
use crate::events::Event;
use crate::ids::{EventId, WorkspaceId};
use crate::webhooks::model::{JobId, JobKind, JobStatus};
use crate::Result;

/// A job a dispatcher holds the lease of.
#[derive(Debug, Clone, FromRow)]
pub(crate) struct ClaimedJob {
    #[sqlx(try_from = "Uuid")]
    pub id: JobId,
    /// As stored: a kind this build does not know (written by a newer version) must
    /// not stop the whole claim from decoding.
    pub kind: String,
    pub workspace_id: WorkspaceId,
    pub target_id: Uuid,
    pub event_id: Uuid,
    pub attempts: i64,
    /// The token of the claim that took it: new for every claim, so a finish or a
    /// release written late (after the lease ran out and the job was claimed again,
    /// even by the same dispatcher) moves nothing.
    pub lease_token: Uuid,
}

/// A recorded delivery attempt.
#[derive(FromRow)]
pub(crate) struct AttemptRow {
    id: Uuid,
    job_id: Uuid,
    kind: String,
    target_id: Uuid,
    event_id: EventId,
    attempt: i64,
    status_code: Option<i64>,
    response_body: Option<String>,
    duration_ms: i64,
    error_kind: Option<String>,
    next_attempt_at: Option<Ts>,
    created_at: Ts,
}

impl AttemptRow {
    fn into_attempt(self) -> crate::webhooks::model::Attempt {
        crate::webhooks::model::Attempt {
            id: self.id,
            job_id: self.job_id,
            kind: self.kind,
            target_id: self.target_id,
            event_id: self.event_id,
            attempt: u32::try_from(self.attempt).unwrap_or(u32::MAX),
            status_code: self.status_code.and_then(|c| u16::try_from(c).ok()),
            response_body: self.response_body,
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            error_kind: self.error_kind,
            next_attempt_at: self.next_attempt_at.map(|t| t.0),
            created_at: self.created_at.0,
        }
    }
}

/// What a finished attempt writes.
pub(crate) struct Finish {
    /// The job, with the token of the claim that took it (only that lease moves).
    pub job: ClaimedJob,
    pub attempt: crate::webhooks::model::Attempt,
    /// Pending (retry at `next_attempt_at`), delivered or failed.
    pub job_status: JobStatus,
    pub success: bool,
    /// Disable the endpoint, with this reason.
    pub disable: Option<String>,
    pub disable_after: u32,
    /// Written when this attempt disables its endpoint (so none for a success,
    /// which cannot).
    pub audit: Option<AuditEntry>,
}

/// A claim on its own ([`claim_in`]), for the tests of the claim.
#[cfg(test)]
pub(crate) async fn claim_jobs(
    pool: &Pool,
    now: chrono::DateTime<chrono::Utc>,
    lease_until: chrono::DateTime<chrono::Utc>,
    (n, per_target): (usize, usize),
    only_kind: Option<JobKind>,
) -> Result<Vec<ClaimedJob>> {
    finish_and_claim(
        pool,
        &[],
        Some(Claim {
            now,
            lease_until,
            n,
            per_target,
            only_kind,
        }),
    )
    .await
}

/// What a claim asks for (see [`claim_in`]).
pub(crate) struct Claim {
    pub now: chrono::DateTime<chrono::Utc>,
    pub lease_until: chrono::DateTime<chrono::Utc>,
    /// At most this many jobs.
    pub n: usize,
    /// At most this many of one target in flight, across every process.
    pub per_target: usize,
    pub only_kind: Option<JobKind>,
}

/// Writes finished attempts ([`finish_in`]) and then claims ([`claim_in`]) in one
/// transaction: a dispatcher takes the write lock (SQLite) and commits
/// (Postgres: one WAL flush) once a cycle instead of twice, and the claim sees the
/// jobs just finished as no longer in flight, so their targets' shares are free at
/// once. The claim comes last, so its target locks are held only until the commit.
pub(crate) async fn finish_and_claim(
    pool: &Pool,
    done: &[Finish],
    claim: Option<Claim>,
) -> Result<Vec<ClaimedJob>> {
    if done.is_empty() && claim.as_ref().is_none_or(|c| c.n == 0) {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin_write().await?;
    finish_in(&mut tx, done).await?;
    let jobs = match claim {
        Some(c) if c.n > 0 => claim_in(&mut tx, c).await?,
        _ => Vec::new(),
    };
    tx.commit().await?;
    Ok(jobs)
}

/// Takes the lease of up to `c.n` due jobs: pending, due, and not leased (or leased
/// by a worker whose lease ran out), under a token new to this claim. Fairly: no
/// target (webhook endpoint or channel) gets more than `c.per_target` jobs in flight
/// across every process (jobs leased and not yet finished count), and the first due
/// job of every target comes before the second of any, so a slow endpoint with a
/// long queue holds at most `per_target` slots and the jobs of other endpoints and
/// workspaces still flow. SQLite's write lock serialises claims; on Postgres a claim
/// first takes a transaction lock on each target it will draw from (skipping those
/// another claim holds), then counts and claims in a statement of its own, whose
/// snapshot sees every lease committed before: two processes never both fill a
/// target's share.
async fn claim_in(tx: &mut Tx, c: Claim) -> Result<Vec<ClaimedJob>> {
    let token = Uuid::now_v7();
    let dialect = tx.dialect();
    let sql = match dialect {
        Dialect::Postgres => claim_postgres(c.only_kind.is_some()),
        Dialect::Sqlite => claim_sqlite(c.only_kind.is_some()),
    };
    let as_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    let mut query = query_as::<ClaimedJob>(&sql)
        .bind(Ts(c.lease_until))
        .bind(token)
        .bind(Ts(c.now))
        .bind(as_i64(c.n))
        .bind(as_i64(c.per_target));
    if dialect == Dialect::Postgres {
        let locked = query_as::<(Uuid,)>(LOCK_TARGETS_POSTGRES)
            .fetch_all(&mut *tx)
            .await?;
        if locked.is_empty() {
            return Ok(Vec::new());
        }
        let list = locked
            .iter()
            .map(|(t,)| t.to_string())
            .collect::<Vec<_>>()
            .join(",");
        query = query.bind(list);
    }
    if let Some(k) = c.only_kind {
        query = query.bind(k.as_str());
    }
    query.fetch_all(&mut *tx).await
}

/// The targets with pending jobs, walked down their index (one probe each), each
/// locked for this transaction unless another claim holds it (then skipped: its
/// jobs are being claimed right now).
const LOCK_TARGETS_POSTGRES: &str = "WITH RECURSIVE targets(t) AS ( \
       SELECT (SELECT target_id FROM crm_jobs WHERE status = 'pending' ORDER BY target_id LIMIT 1) \
       UNION ALL \
       SELECT (SELECT target_id FROM crm_jobs WHERE status = 'pending' AND target_id > t \
         ORDER BY target_id LIMIT 1) FROM targets WHERE t IS NOT NULL) \
     SELECT t FROM targets WHERE t IS NOT NULL \
       AND pg_try_advisory_xact_lock(hashtextextended('crm_claim:' || t::text, 0))";

/// The claim on Postgres, over the targets locked by [`LOCK_TARGETS_POSTGRES`]
/// (`$6`, comma-separated), taking at most `$4` jobs and leaving at most `$5` of a
/// target in flight: each target's jobs in flight are counted once
/// (`MATERIALIZED`: inlined, the count ran once per candidate row), and each target
/// contributes its earliest due jobs up to its free share (`LATERAL`, down its
/// index), locked as they are read, skipping rows locked elsewhere. The cost follows
/// the targets and the batch, not the backlog: the picked rows are updated where
/// they were read and locked (`ctid = ANY(ARRAY(…))`, a TID scan; a locked row
/// stays where it is): joined to `picked`, Postgres' generic plan (the one a
/// prepared statement keeps) hashed them against a scan of the whole queue, 87 ms a
/// claim of 256 at a backlog of 200,000, and found through the primary key they
/// cost an index descent each (the claim went from 37.7 to 30.5 us a job). A row
/// that a late release, cancel or finish of its expired lease changed after the
/// statement's snapshot is locked in its new version, which the TID scan (reading
/// with that snapshot) does not see: it stays pending for the next claim, leased
/// by none. `crm_jobs` must stay unpartitioned: a ctid names a row within one
/// table only. The
/// sizes are bound, not written into the text, so a connection prepares the
/// statement once and Postgres can keep its plan.
fn claim_postgres(by_kind: bool) -> String {
    let kind = if by_kind { " AND c.kind = $7" } else { "" };
    format!(
        "WITH busy AS MATERIALIZED (SELECT t, (SELECT COUNT(*) FROM crm_jobs b WHERE b.status = 'pending' \
           AND b.target_id = t AND b.lease_until >= $3) AS n \
           FROM unnest(string_to_array($6, ',')::uuid[]) AS u(t)), \
         ranked AS (SELECT j.ctid, j.id, j.run_at, \
           ROW_NUMBER() OVER (PARTITION BY j.target_id ORDER BY j.run_at, j.id) AS rn \
           FROM busy CROSS JOIN LATERAL (SELECT c.ctid, c.id, c.target_id, c.run_at FROM crm_jobs c \
             WHERE c.status = 'pending' AND c.target_id = busy.t AND c.run_at <= $3 \
             AND (c.lease_until IS NULL OR c.lease_until < $3){kind} \
             ORDER BY c.run_at, c.id LIMIT LEAST(GREATEST($5 - busy.n, 0), $4) \
             FOR UPDATE SKIP LOCKED) j), \
         picked AS (SELECT ctid FROM ranked ORDER BY rn, run_at, id LIMIT $4) \
         UPDATE crm_jobs SET lease_until = $1, lease_token = $2, attempts = attempts + 1, updated_at = $3 \
         WHERE ctid = ANY(ARRAY(SELECT ctid FROM picked)) \
         RETURNING id, kind, workspace_id, target_id, event_id, attempts, lease_token"
    )
}

/// The claim on SQLite: as on Postgres, the targets are walked down their index and
/// each contributes its earliest `per_target` due jobs, through a correlated `IN`
/// (SQLite has no `LATERAL`); one writer at a time, so nothing to skip. The sizes
/// are bound (`$4`, `$5`), as on Postgres.
fn claim_sqlite(by_kind: bool) -> String {
    let kind = if by_kind { " AND c.kind = $6" } else { "" };
    format!(
        "WITH RECURSIVE targets(t) AS ( \
           SELECT (SELECT target_id FROM crm_jobs WHERE status = 'pending' ORDER BY target_id LIMIT 1) \
           UNION ALL \
           SELECT (SELECT target_id FROM crm_jobs WHERE status = 'pending' AND target_id > t \
             ORDER BY target_id LIMIT 1) FROM targets WHERE t IS NOT NULL), \
         busy AS MATERIALIZED (SELECT t, (SELECT COUNT(*) FROM crm_jobs b WHERE b.status = 'pending' \
           AND b.target_id = t AND b.lease_until >= $3) AS n FROM targets WHERE t IS NOT NULL), \
         ranked AS (SELECT j.id, j.run_at, busy.n AS busy, \
           ROW_NUMBER() OVER (PARTITION BY j.target_id ORDER BY j.run_at, j.id) AS rn \
           FROM busy JOIN crm_jobs j ON j.id IN (SELECT c.id FROM crm_jobs c \
             WHERE c.status = 'pending' AND c.target_id = busy.t AND c.run_at <= $3 \
             AND (c.lease_until IS NULL OR c.lease_until < $3){kind} \
             ORDER BY c.run_at, c.id LIMIT $5)), \
         picked AS (SELECT id FROM ranked WHERE rn + busy <= $5 \
           ORDER BY rn, run_at, id LIMIT $4) \
         UPDATE crm_jobs SET lease_until = $1, lease_token = $2, attempts = attempts + 1, updated_at = $3 \
         WHERE id IN (SELECT id FROM picked) \
           AND status = 'pending' AND (lease_until IS NULL OR lease_until < $3) \
         RETURNING id, kind, workspace_id, target_id, event_id, attempts, lease_token"
    )
}

/// Gives a claimed job back untried (its attempt is not counted), to run at `run_at`.
pub(crate) async fn release_job(
    pool: &Pool,
    id: JobId,
    token: Uuid,
    run_at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    query(
        "UPDATE crm_jobs SET lease_until = NULL, lease_token = NULL, attempts = attempts - 1, run_at = $3 \
         WHERE id = $1 AND lease_token = $2",
    )
    .bind(id.0)
    .bind(token)
    .bind(Ts(run_at))
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends a job without an attempt (its endpoint is gone or disabled).
pub(crate) async fn cancel_job(pool: &Pool, id: JobId, token: Uuid) -> Result<()> {
    query(
        "UPDATE crm_jobs SET status = $3, lease_until = NULL, lease_token = NULL WHERE id = $1 AND lease_token = $2",
    )
    .bind(id.0)
    .bind(token)
    .bind(JobStatus::Cancelled.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// The most finished attempts one statement writes: on SQLite a statement's binding
/// cost grows with the square of its parameters (each is found by name in a list,
/// `sqlite3_bind_parameter_name`, 9 % of a drain's time at 256 rows of 13), so
/// its statements stay short.
fn finish_chunk(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Postgres => 256,
        Dialect::Sqlite => 32,
    }
}

/// Writes finished attempts in a transaction of their own ([`finish_in`]).
pub(crate) async fn finish_jobs(pool: &Pool, done: &[Finish]) -> Result<()> {
    finish_and_claim(pool, done, None).await.map(drop)
}

/// Records finished attempts, moves their jobs on and the endpoints' health: the
/// attempts inserted and the jobs deleted (delivered) or updated (retried, failed)
/// a run at a time, in runs of power-of-two length up to
/// [`finish_chunk`] ([`pow2_runs`]); one health update per endpoint whose attempts
/// all succeeded, and the attempts of an endpoint with failures one by one, in
/// order (each failure may disable it). A job only moves if its worker still holds
/// its lease.
async fn finish_in(tx: &mut Tx, done: &[Finish]) -> Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    let max = finish_chunk(tx.dialect());
    for run in pow2_runs(done, max) {
        let mut attempts = query(
            "INSERT INTO crm_delivery_attempts (id, workspace_id, job_id, kind, target_id, event_id, \
             attempt, status_code, response_body, duration_ms, error_kind, next_attempt_at, created_at) \
             VALUES ",
        );
        for (i, f) in run.iter().enumerate() {
            let a = &f.attempt;
            attempts
                .push(if i == 0 { "(" } else { ", (" })
                .push_bind(a.id)
                .push(", ")
                .push_bind(f.job.workspace_id)
                .push(", ")
                .push_bind(a.job_id)
                .push(", ")
                .push_bind(a.kind.as_str())
                .push(", ")
                .push_bind(a.target_id)
                .push(", ")
                .push_bind(a.event_id)
                .push(", ")
                .push_bind(i64::from(a.attempt))
                .push(", ")
                .push_bind(a.status_code.map(i64::from))
                .push(", ")
                .push_bind(a.response_body.as_deref())
                .push(", ")
                .push_bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
                .push(", ")
                .push_bind(a.error_kind.as_deref())
                .push(", ")
                .push_bind(a.next_attempt_at.map(Ts))
                .push(", ")
                .push_bind(Ts(a.created_at))
                .push(")");
        }
        attempts.execute(&mut *tx).await?;
    }
    // A delivered job is done: its attempt is the record, so the row goes (a delete
    // writes no index entries; an update of the row wrote one to each of its
    // indexes). The others move on: retried later, or failed.
    //
    // Both statements find their rows through the primary key: joined to the list
    // (`v`) alone, Postgres hashed the list against a scan of the whole queue and
    // SQLite scanned the whole table too, a cost that grew with the backlog
    // (Postgres: 7.5 of 9.9 ms to delete 128 jobs from a queue of 16,900).
    let by_id = match tx.dialect() {
        Dialect::Postgres => "= ANY(ARRAY(SELECT id FROM v))",
        Dialect::Sqlite => "IN (SELECT id FROM v)",
    };
    let (delivered, moved): (Vec<&Finish>, Vec<&Finish>) = done
        .iter()
        .partition(|f| f.job_status == JobStatus::Delivered);
    for run in pow2_runs(&delivered, max) {
        let mut gone = query("WITH v(id, token) AS (VALUES ");
        for (i, f) in run.iter().enumerate() {
            gone.push(if i == 0 { "(" } else { ", (" })
                .push_bind(f.job.id.0)
                .push(", ")
                .push_bind(f.job.lease_token)
                .push(")");
        }
        gone.push(") DELETE FROM crm_jobs WHERE id ")
            .push(by_id)
            .push(" AND (id, lease_token) IN (SELECT id, token FROM v)");
        gone.execute(&mut *tx).await?;
    }
    for run in pow2_runs(&moved, max) {
        let mut jobs = query("WITH v(id, token, status, run_at, now) AS (VALUES ");
        for (i, f) in run.iter().enumerate() {
            let a = &f.attempt;
            jobs.push(if i == 0 { "(" } else { ", (" })
                .push_bind(a.job_id)
                .push(", ")
                .push_bind(f.job.lease_token)
                .push(", ")
                .push_bind(f.job_status.as_str())
                .push(", ")
                .push_bind(a.next_attempt_at.map(Ts))
                .push(", ")
                .push_bind(Ts(a.created_at))
                .push(")");
        }
        jobs.push(
            ") UPDATE crm_jobs SET status = v.status, run_at = COALESCE(v.run_at, crm_jobs.run_at), \
             lease_until = NULL, lease_token = NULL, updated_at = v.now \
             FROM v WHERE crm_jobs.id = v.id AND crm_jobs.lease_token = v.token AND crm_jobs.id ",
        )
        .push(by_id);
        jobs.execute(&mut *tx).await?;
    }
    // Channels keep no delivery health; their attempts are in the log.
    // Endpoints in id order: dispatchers in several processes lock their rows in the
    // same order, so they cannot deadlock.
    let webhook = |f: &&Finish| f.attempt.kind == JobKind::Webhook.as_str();
    let mut ids: Vec<Uuid> = done
        .iter()
        .filter(webhook)
        .map(|f| f.attempt.target_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let of_endpoint: Vec<&Finish> = done
            .iter()
            .filter(webhook)
            .filter(|g| g.attempt.target_id == id)
            .collect();
        if of_endpoint.iter().all(|g| g.success) {
            if let Some(last) = of_endpoint.iter().map(|g| g.attempt.created_at).max() {
                endpoints::record_health(tx, id, Ts(last), None).await?;
            }
            continue;
        }
        for g in of_endpoint {
            let disable = (!g.success).then(|| endpoints::Disable {
                reason: g
                    .disable
                    .clone()
                    .unwrap_or_else(|| format!("{} consecutive failed attempts", g.disable_after)),
                now: g.disable.is_some(),
                after_failures: g.disable_after,
            });
            let now = Ts(g.attempt.created_at);
            if endpoints::record_health(tx, id, now, disable).await? {
                if let Some(audit) = &g.audit {
                    audit::insert_audit(tx, audit).await?;
                }
            }
        }
    }
    Ok(())
}

/// Attempts of an endpoint (`event` narrows to one message), at most `limit`: oldest
/// first after a cursor, or newest first before one (`seek`).
pub(crate) async fn list_attempts(
    pool: &Pool,
    ws: WorkspaceId,
    kind: JobKind,
    target: Uuid,
    event: Option<EventId>,
    seek: super::sql::Seek,
    limit: u32,
) -> Result<Vec<crate::webhooks::model::Attempt>> {
    let mut sql = query(
        "SELECT id, job_id, kind, target_id, event_id, attempt, status_code, response_body, duration_ms, error_kind, \
         next_attempt_at, created_at FROM crm_delivery_attempts WHERE workspace_id = ",
    );
    sql.push_bind(ws.0)
        .push(" AND kind = ")
        .push_bind(kind.as_str().to_owned())
        .push(" AND target_id = ")
        .push_bind(target);
    if let Some(e) = event {
        sql.push(" AND event_id = ").push_bind(e.0);
    }
    seek.push(&mut sql, limit);
    let rows: Vec<AttemptRow> = sql.fetch_all(pool).await?;
    Ok(rows.into_iter().map(AttemptRow::into_attempt).collect())
}

/// Queues one job for `endpoint` and `event` (resend, test-send); `test_event`
/// is written first when given (a sample event that no filter fans out).
pub(crate) async fn enqueue(
    pool: &Pool,
    ws: WorkspaceId,
    kind: JobKind,
    target: Uuid,
    event: EventId,
    test_event: Option<&Event>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    if let Some(e) = test_event {
        outbox::insert_event_row(&mut tx, e).await?;
    }
    insert_job(&mut tx, ws, kind, target, event, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Queues one job in the caller's transaction, due now, and tells the other
/// processes' dispatchers when it commits.
pub(super) async fn insert_job(
    tx: &mut Tx,
    ws: WorkspaceId,
    kind: JobKind,
    target: Uuid,
    event: EventId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    query(
        "INSERT INTO crm_jobs (id, workspace_id, kind, target_id, event_id, status, attempts, run_at, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(ws)
    .bind(kind.as_str())
    .bind(target)
    .bind(event.0)
    .bind(Ts(now))
    .execute(&mut *tx)
    .await?;
    announce(tx).await
}

/// The Postgres channel on which a commit that wrote jobs wakes the dispatchers of
/// every process on the database (crm installations in other schemas of the same
/// database share it: they get a wake-up that finds nothing, no more).
pub(crate) const JOBS_CHANNEL: &str = "crm_jobs";

/// Tells the dispatchers of other processes, when `tx` commits, that it wrote jobs
/// (Postgres `NOTIFY`, sent on commit, once per transaction however often it is
/// called). Nothing on SQLite, where one process owns the database.
pub(super) async fn announce(tx: &mut Tx) -> Result<()> {
    if tx.dialect() == Dialect::Postgres {
        query("SELECT pg_notify($1, '')")
            .bind(JOBS_CHANNEL)
            .execute(tx)
            .await?;
    }
    Ok(())
}

/// Calls `wake` whenever another process (or this one) commits jobs, until
/// `shutdown`; reconnects after a lost connection (the dispatcher's poll covers the
/// gap). Returns at once on SQLite.
#[cfg(feature = "postgres")]
pub(crate) async fn listen(
    pool: &Pool,
    wake: impl Fn(),
    shutdown: tokio_util::sync::CancellationToken,
) {
    // Irrefutable in a build with Postgres only.
    #[allow(irrefutable_let_patterns)]
    let Pool::Postgres(pool, _) = pool
    else {
        return;
    };
    loop {
        let connected = async {
            let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
            l.listen(JOBS_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let err = match connected.await {
            Ok(mut l) => loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    n = l.recv() => match n {
                        Ok(_) => wake(),
                        Err(e) => break e,
                    },
                }
            },
            Err(e) => e,
        };
        tracing::warn!(error = %crate::error::Chain(&err), "job notifications lost; the dispatcher polls until they are back");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Without Postgres there is no other process to hear from.
#[cfg(not(feature = "postgres"))]
pub(crate) async fn listen(
    _pool: &Pool,
    _wake: impl Fn(),
    _shutdown: tokio_util::sync::CancellationToken,
) {
}

#[derive(sqlx::FromRow)]
pub(crate) struct QueueRow {
    pub pending: i64,
    pub oldest_run_at: Option<Ts>,
}

/// How many jobs are pending, and the earliest time one of them is due.
pub(crate) async fn queue(pool: &Pool) -> Result<QueueRow> {
    query_as::<QueueRow>(
        "SELECT COUNT(*) AS pending, MIN(run_at) AS oldest_run_at FROM crm_jobs \
         WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await
}
