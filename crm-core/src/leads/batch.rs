//! Group commit for lead creates. Concurrent creates queue on a channel, and a
//! writer task turns whatever is waiting (up to [`MAX_BATCH`]) into one transaction
//! ([`store::leads::create_batch`]): one commit, and the workspace's subscribers
//! read once, for the whole batch. SQLite gets one writer (it has one writer at a
//! time anyway, and this spares each create its own transaction and its wait for
//! the write lock); Postgres gets four, whose batches commit side by side. Each
//! caller still gets its own result: a taken email fails only its own create,
//! events stay in the transaction of their lead, and if the database fails a batch
//! (which then wrote nothing: a deadlock between two batches inserting the same
//! emails in opposite order, a lost connection) every create in it is retried on
//! its own.
//!
//! On Postgres the writers also refresh the planner's statistics of the leads
//! ([`store::leads::analyze`], in a task of its own) each time the leads their
//! batches created (per `Crm`) pass twice the count of the last refresh, from 1,000
//! on: at most a logarithm of the table's growth, where a listing planned without
//! statistics sorted the whole workspace for every page until autovacuum caught up.
//! Creates written one by one (a failed batch's, or with the writer gone) are not
//! counted.
//!
//! What a caller should know: a create whose caller goes away (a dropped future)
//! is still written if it was queued; the writer task lives on the runtime of the
//! first create, and a create that finds it gone (that runtime shut down) writes
//! alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Lead;
use crate::store::leads::NewRow;
use crate::store::{self, Ctx, Pool};
use crate::{Error, Result};

/// The most creates one transaction takes.
pub(crate) const MAX_BATCH: usize = 128;

/// The leads created after which the writers first refresh Postgres's statistics
/// (then at twice the count of the last refresh).
const ANALYZE_FIRST: u64 = 1_000;

/// The leads these writers' batches created, and the count at which they next
/// refresh the statistics.
struct Growth {
    created: AtomicU64,
    next: AtomicU64,
}

impl Growth {
    /// Counts `n` more leads: whether the statistics are due now (true once per
    /// doubling, for one writer).
    fn add(&self, n: u64) -> bool {
        let created = self
            .created
            .fetch_add(n, Ordering::Relaxed)
            .saturating_add(n);
        let next = self.next.load(Ordering::Relaxed);
        created >= next
            && self
                .next
                .compare_exchange(
                    next,
                    created.saturating_mul(2),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

struct Pending {
    row: NewRow,
    reply: oneshot::Sender<Result<Lead>>,
}

/// The sending side of the writer task; the task ends when this is dropped.
#[derive(Debug)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts `writers` writer tasks on the current tokio runtime, taking turns at
    /// the queue.
    pub(crate) fn start(pool: Pool, writers: usize) -> Self {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let growth = Arc::new(Growth {
            created: AtomicU64::new(0),
            next: AtomicU64::new(ANALYZE_FIRST),
        });
        for _ in 0..writers.max(1) {
            tokio::spawn(run(pool.clone(), rx.clone(), growth.clone()));
        }
        Self { queue }
    }

    /// Creates the lead in the next batch; `Err(row)` when the writer is gone (its
    /// runtime shut down), for the caller to write it alone.
    pub(crate) async fn create(&self, row: NewRow) -> std::result::Result<Result<Lead>, NewRow> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(p)) = self.queue.send(Pending { row, reply }).await {
            return Err(p.row);
        }
        Ok(answer.await.unwrap_or_else(|_| {
            Err(Error::Integration(
                "the lead writer stopped before answering".into(),
            ))
        }))
    }
}

async fn run(
    pool: Pool,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    growth: Arc<Growth>,
) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    loop {
        // One writer at a time takes what is waiting; the others write meanwhile.
        if rx.lock().await.recv_many(&mut waiting, MAX_BATCH).await == 0 {
            return;
        }
        let (rows, replies): (Vec<NewRow>, Vec<_>) =
            waiting.drain(..).map(|p| (p.row, p.reply)).unzip();
        match store::leads::create_batch(&pool, &rows).await {
            Ok(results) => {
                let created = results.iter().filter(|r| r.is_ok()).count();
                // Nothing to refresh on SQLite (`analyze` returns at once there).
                if growth.add(created as u64) {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        store::leads::analyze(&pool, "lead creates").await;
                    });
                }
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(r);
                }
            }
            Err(err) => {
                tracing::warn!(error = %crate::error::Chain(&err), creates = rows.len(), "a batch of lead creates failed; writing them one by one");
                for (reply, row) in replies.into_iter().zip(rows) {
                    let ctx = Ctx {
                        ws: row.ws,
                        now: row.now,
                        actor: row.actor.as_deref(),
                    };
                    let _ = reply.send(store::leads::create(&pool, &ctx, row.fields).await);
                }
            }
        }
    }
}
