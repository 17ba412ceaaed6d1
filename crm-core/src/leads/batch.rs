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
//! What a caller should know: a create whose caller goes away (a dropped future)
//! is still written if it was queued; the writer task lives on the runtime of the
//! first create, and a create that finds it gone (that runtime shut down) writes
//! alone.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Lead;
use crate::store::leads::NewRow;
use crate::store::{self, Ctx, Pool};
use crate::{Error, Result};

/// The most creates one transaction takes.
pub(crate) const MAX_BATCH: usize = 128;

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
        for _ in 0..writers.max(1) {
            tokio::spawn(run(pool.clone(), rx.clone()));
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

async fn run(pool: Pool, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>) {
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
