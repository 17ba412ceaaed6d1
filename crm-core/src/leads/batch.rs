//! Group commit for lead creates on SQLite. SQLite has one writer at a time, so
//! concurrent creates queue for the write lock and each pays for its own
//! transaction; here they queue on a channel instead, and one writer task turns
//! whatever is waiting (up to [`MAX_BATCH`]) into one transaction
//! ([`store::leads::create_batch`]). Each caller still gets its own result: a taken
//! email fails only its own create, events stay in the transaction of their lead,
//! and if the database fails the batch (which then wrote nothing) every create is
//! retried on its own. Postgres needs none of this: its transactions run side by
//! side and its WAL flushes commit groups by itself.
//!
//! What a caller should know: a create whose caller goes away (a dropped future)
//! is still written if it was queued; the writer task lives on the runtime of the
//! first create, and a create that finds it gone (that runtime shut down) writes
//! alone.

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
    /// Starts the writer task on the current tokio runtime.
    pub(crate) fn start(pool: Pool) -> Self {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(pool, rx));
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

async fn run(pool: Pool, mut rx: mpsc::Receiver<Pending>) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut waiting, MAX_BATCH).await > 0 {
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
