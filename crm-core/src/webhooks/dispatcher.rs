//! The dispatcher: background tasks that drain `crm_jobs`: webhook deliveries, and
//! notifications through their channels' plugins (see [`crate::notify`]).
//!
//! Jobs are claimed with a lease (Postgres: `FOR UPDATE SKIP LOCKED`; SQLite: one
//! `UPDATE … RETURNING` under the write lock), so any number of dispatchers in any
//! number of processes share the queue and none delivers an attempt twice. A worker
//! that dies mid-delivery leaves its lease to run out; another worker then takes the
//! job, and the `webhook-id` (from the event) is the same, so receivers deduplicate.
//! A dispatcher wakes when this process writes a job, on Postgres also when another
//! process commits one (`LISTEN`/`NOTIFY`), and polls slowly otherwise (retries
//! coming due, a lost notification connection). On Postgres each dispatcher keeps
//! one connection of the pool for `LISTEN`, and a commit that wrote jobs takes
//! Postgres' notification lock for its commit (such commits go one at a time).
//!
//! Delivery: POST the event payload with the three `webhook-*` headers, signed with
//! the endpoint's secret (and its previous one during a rotation); redirects are not
//! followed; only 2xx succeeds; 410 disables the endpoint; `Retry-After` on 429/503
//! sets the next try (1 s to 24 h); otherwise retries follow the schedule with ±20 %
//! jitter; after `disable_after` consecutive failures the endpoint is disabled and the
//! audit log says why. Every attempt is recorded.

pub use super::model::Attempt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[cfg(feature = "webhooks")]
use super::delivery;
use super::model::{Endpoint, JobKind, JobStatus};
use super::signing::WebhookSecret;
use crate::ids::EventId;
use crate::notify::Outcome;
use crate::store::{
    self,
    jobs::{Claim, ClaimedJob, Finish},
    outbox::QueuedEvent,
};
use crate::{Crm, Error, Result};

/// Longest response body kept in the attempt log, in bytes.
pub const RESPONSE_BODY_MAX: usize = 4096;
/// Largest payload crm will send, in bytes.
pub const PAYLOAD_MAX: usize = 256 * 1024;

/// How a dispatcher works; the defaults follow the design.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Deliveries in flight at once to one endpoint (or channel), counted across
    /// every dispatcher on the database: a slow endpoint holds no more slots than
    /// this, and the claim takes the first due job of every endpoint before the
    /// second of any.
    pub per_endpoint: usize,
    /// How long a claimed job stays with this worker before another may take it.
    pub lease: Duration,
    /// How often to look for due jobs when nothing wakes the dispatcher.
    pub poll_interval: Duration,
    /// Timeout of one delivery.
    pub timeout: Duration,
    /// Delay before each attempt: the first is the initial one (normally zero).
    pub schedule: Vec<Duration>,
    /// Random spread of each retry delay, as a fraction (0.2 = ±20 %).
    pub jitter: f64,
    /// Consecutive failed attempts after which an endpoint is disabled.
    pub disable_after: u32,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Self {
            concurrency: 8,
            per_endpoint: 2,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            schedule: vec![Duration::ZERO, m(1), m(5), m(30), m(120), m(24 * 60)],
            jitter: 0.2,
            disable_after: 10,
        }
    }
}

/// The `webhook-id` of an event.
pub fn message_id(event: EventId) -> String {
    format!("msg_{}", event.0.simple())
}

pub(super) struct Worker {
    pub(super) crm: Crm,
    pub(super) cfg: DispatcherConfig,
    #[cfg(feature = "webhooks")]
    pub(super) client: reqwest::Client,
    finished: mpsc::Sender<Done>,
}

/// One of a dispatcher's delivery slots ([`DispatcherConfig::concurrency`]), held
/// from the claim until the attempt is handed back to the dispatcher's loop.
pub(super) type Slot = OwnedSemaphorePermit;

/// An endpoint ready to send to, made once a batch (not once a delivery): its row,
/// the secrets it signs with, and its URL parsed, its shape checked and, when its
/// host is a literal address, that address checked against the allow-list (or why
/// it is refused). A host name is checked by the client's resolver as it connects.
#[cfg_attr(not(feature = "webhooks"), allow(dead_code))]
pub(super) struct Target {
    pub(super) endpoint: Endpoint,
    pub(super) secrets: Vec<WebhookSecret>,
    pub(super) url: std::result::Result<url::Url, String>,
}

/// What [`Worker::prefetch`] read for a claimed batch.
pub(super) struct Prefetched {
    pub(super) events: HashMap<Uuid, Arc<QueuedEvent>>,
    /// Per endpoint: found (with its secrets and checked URL), or gone (`None`);
    /// absent when the read failed (the job reads it again).
    #[cfg_attr(not(feature = "webhooks"), allow(dead_code))]
    pub(super) endpoints: HashMap<Uuid, Option<Arc<Target>>>,
}

impl Prefetched {
    /// The job's event, from the batch or read now.
    pub(super) async fn event(&self, crm: &Crm, id: Uuid) -> Result<Option<Arc<QueuedEvent>>> {
        if let Some(e) = self.events.get(&id) {
            return Ok(Some(e.clone()));
        }
        let found = store::outbox::events_by_ids(crm.pool(), &[id]).await?;
        Ok(found.into_iter().next().map(Arc::new))
    }
}

/// Finished attempts written per transaction when the dispatcher stops.
const FINISH_BATCH: usize = 256;

/// A finished attempt on its way to be written, with where to say it was.
type Done = (Finish, oneshot::Sender<Result<()>>);

/// Writes finished attempts without claiming: all in one transaction, or, if that
/// fails, each on its own, so one bad record does not lose its batch-mates.
async fn write_finished(crm: &Crm, waiting: Vec<Done>) {
    let (done, replies): (Vec<Finish>, Vec<_>) = waiting.into_iter().unzip();
    match store::jobs::finish_jobs(crm.pool(), &done).await {
        Ok(()) => answer(replies),
        Err(err) => one_by_one(crm, done, replies, err).await,
    }
}

fn answer(replies: Vec<oneshot::Sender<Result<()>>>) {
    for reply in replies {
        let _ = reply.send(Ok(()));
    }
}

/// Writes a batch whose transaction failed with `err` again, one attempt a time.
async fn one_by_one(
    crm: &Crm,
    done: Vec<Finish>,
    replies: Vec<oneshot::Sender<Result<()>>>,
    err: Error,
) {
    if done.len() == 1 {
        if let Some(reply) = replies.into_iter().next() {
            let _ = reply.send(Err(err));
        }
        return;
    }
    tracing::warn!(error = %crate::error::Chain(&err), attempts = done.len(), "a batch of finished attempts failed; writing them one by one");
    for (f, reply) in done.into_iter().zip(replies) {
        let one = [f];
        let _ = reply.send(store::jobs::finish_jobs(crm.pool(), &one).await);
    }
}

impl Worker {
    /// Hands a finished attempt to the dispatcher's loop, frees the delivery's slot
    /// (the next delivery need not wait for this one's write; the job stays leased
    /// until it is written), and waits until it is written: in the loop's next
    /// transaction, which also claims the next jobs.
    pub(super) async fn finish(&self, f: Finish, slot: Slot) -> Result<()> {
        let kind = f.job.kind.clone();
        let outcome = match (f.job_status, f.disable.is_some()) {
            (_, true) => "disabled",
            (JobStatus::Delivered, _) => "succeeded",
            (JobStatus::Pending, _) => "retrying",
            _ => "failed",
        };
        metrics::counter!("crm_jobs_finished_total", "kind" => kind.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("crm_delivery_duration_seconds", "kind" => kind)
            .record(f.attempt.duration_ms as f64 / 1000.0);
        let (reply, written) = oneshot::channel();
        if self.finished.send((f, reply)).await.is_err() {
            return Err(Error::Integration("the dispatcher stopped".into()));
        }
        drop(slot);
        written
            .await
            .unwrap_or_else(|_| Err(Error::Integration("the dispatcher stopped".into())))
    }

    fn lease_until(&self) -> DateTime<Utc> {
        self.crm.now()
            + chrono::Duration::from_std(self.cfg.lease).unwrap_or(chrono::Duration::seconds(60))
    }

    /// A claim of up to `n` jobs, leased from now.
    fn claim_of(&self, n: usize) -> Claim {
        // Without the `webhooks` feature this process cannot deliver webhooks: it
        // leaves those jobs to a process that can.
        #[cfg(feature = "webhooks")]
        let only_kind = None;
        #[cfg(not(feature = "webhooks"))]
        let only_kind = Some(JobKind::Notification);
        Claim {
            now: self.crm.now(),
            lease_until: self.lease_until(),
            n,
            per_target: self.cfg.per_endpoint,
            only_kind,
        }
    }

    pub(super) fn next_delay(&self, attempt: i64, hint: Option<Duration>) -> Option<Duration> {
        if let Some(h) = hint {
            return Some(h);
        }
        let base = *self.cfg.schedule.get(usize::try_from(attempt).ok()?)?;
        let j = self.cfg.jitter.clamp(0.0, 1.0);
        let factor = if j > 0.0 {
            rand::thread_rng().gen_range(1.0 - j..=1.0 + j)
        } else {
            1.0
        };
        Some(base.mul_f64(factor))
    }

    /// What a claimed batch needs, read once for the batch instead of once a job:
    /// its events and (for webhooks) its endpoints with their secrets. What cannot
    /// be read here is read again by the job itself.
    async fn prefetch(&self, jobs: &[ClaimedJob]) -> Prefetched {
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.event_id).collect();
        let events = match store::outbox::events_by_ids(self.crm.pool(), &ids).await {
            Ok(events) => events
                .into_iter()
                .map(|e| (e.id().0, Arc::new(e)))
                .collect(),
            Err(err) => {
                tracing::warn!(error = %crate::error::Chain(&err), "could not read a batch of events");
                HashMap::new()
            }
        };
        #[cfg_attr(not(feature = "webhooks"), allow(unused_mut))]
        let mut endpoints = HashMap::new();
        #[cfg(feature = "webhooks")]
        for j in jobs.iter().filter(|j| j.kind == JobKind::Webhook.as_str()) {
            if endpoints.contains_key(&j.target_id) {
                continue;
            }
            if let Ok(found) = self.target(j).await {
                endpoints.insert(j.target_id, found.map(Arc::new));
            }
        }
        Prefetched { events, endpoints }
    }

    async fn deliver(&self, job: ClaimedJob, ahead: &Prefetched, slot: Slot) -> Result<()> {
        match job.kind.parse::<JobKind>() {
            #[cfg(feature = "webhooks")]
            Ok(JobKind::Webhook) => self.deliver_webhook(job, ahead, slot).await,
            Ok(JobKind::Notification) => self.notify(job, ahead, slot).await,
            Ok(JobKind::Media) => self.media(job, slot).await,
            // Left to a process built with the `webhooks` feature (never claimed here).
            #[cfg(not(feature = "webhooks"))]
            Ok(JobKind::Webhook) => Ok(()),
            Err(_) => store::jobs::cancel_job(self.crm.pool(), job.id, job.lease_token).await,
        }
    }

    /// The next try after a failed attempt, or `None` when the schedule is spent.
    fn next_try(
        &self,
        job: &ClaimedJob,
        now: DateTime<Utc>,
        hint: Option<Duration>,
    ) -> Option<DateTime<Utc>> {
        self.next_delay(job.attempts, hint)
            .map(|d| now + chrono::Duration::from_std(d).unwrap_or_default())
    }

    /// Sends one notification through its channel's plugin.
    async fn notify(&self, job: ClaimedJob, ahead: &Prefetched, slot: Slot) -> Result<()> {
        let service = self.crm.workspace(job.workspace_id).notifications();
        let id = crate::ids::ChannelId(job.target_id);
        let cancel =
            || async { store::jobs::cancel_job(self.crm.pool(), job.id, job.lease_token).await };
        let channel = match service.get(id).await {
            Ok(c) if c.enabled => c,
            Ok(_) | Err(Error::NotFound { .. }) => return cancel().await,
            Err(e) => return Err(e),
        };
        let Some(event) = ahead.event(&self.crm, job.event_id).await? else {
            return cancel().await;
        };
        let event = event.to_event()?;
        let config = service
            .with_defaults(&channel.kind, &service.config(id).await?)
            .await?;
        let notification = crate::notify::Notification::from_event(&event, id);
        // Recipients are checked again at each send: a user disabled or deleted since
        // the channel was saved gets no more mail.
        let refused = service.refused_recipients(&channel.kind, &config).await?;
        let now = self.crm.now();
        let started = Instant::now();
        let outcome = match self.crm.notifier(&channel.kind) {
            _ if !refused.is_empty() => Outcome::Permanent(format!(
                "not a verified user of the workspace any more: {}",
                refused.join(", ")
            )),
            None => Outcome::Permanent(format!(
                "no notification plugin of kind {:?} is registered",
                channel.kind
            )),
            Some(plugin) => {
                match tokio::time::timeout(self.cfg.timeout, plugin.send(&config, &notification))
                    .await
                {
                    Ok(o) => o,
                    Err(_) => Outcome::Retry {
                        after: None,
                        reason: "timeout".into(),
                    },
                }
            }
        };
        self.record(
            job,
            JobKind::Notification,
            event.id,
            outcome,
            started,
            now,
            slot,
        )
        .await
    }

    /// Fetches the media of a message received and stores it as an attachment
    /// (see [`Crm::store_message_media`]); the job's target is the message's
    /// activity. A message that is gone (its lead was deleted) cancels the job.
    async fn media(&self, job: ClaimedJob, slot: Slot) -> Result<()> {
        let now = self.crm.now();
        let started = Instant::now();
        let id = crate::ids::ActivityId(job.target_id);
        let outcome = match tokio::time::timeout(
            self.cfg.lease.saturating_sub(Duration::from_secs(1)),
            self.crm.store_message_media(job.workspace_id, id),
        )
        .await
        {
            Ok(Ok(true)) => Outcome::Sent,
            Ok(Ok(false)) => {
                return store::jobs::cancel_job(self.crm.pool(), job.id, job.lease_token).await
            }
            Ok(Err(e)) if crate::attachments::retry_media(&e) => Outcome::Retry {
                after: None,
                reason: e.to_string(),
            },
            Ok(Err(e)) => Outcome::Permanent(e.to_string()),
            Err(_) => Outcome::Retry {
                after: None,
                reason: "timeout".into(),
            },
        };
        let event = EventId(job.event_id);
        self.record(job, JobKind::Media, event, outcome, started, now, slot)
            .await
    }

    /// Writes the attempt of a job that is not a webhook (a notification, a media
    /// fetch) as its outcome says: done, tried again on the schedule, or failed.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        job: ClaimedJob,
        kind: JobKind,
        event_id: EventId,
        outcome: Outcome,
        started: Instant,
        now: DateTime<Utc>,
        slot: Slot,
    ) -> Result<()> {
        let (status, next, error) = match outcome {
            Outcome::Sent => (JobStatus::Delivered, None, None),
            Outcome::Permanent(why) => (JobStatus::Failed, None, Some(why)),
            Outcome::Retry { after, reason } => {
                let hint =
                    after.map(|d| d.clamp(Duration::from_secs(1), Duration::from_secs(24 * 3600)));
                match self.next_try(&job, now, hint) {
                    Some(at) => (JobStatus::Pending, Some(at), Some(reason)),
                    None => (JobStatus::Failed, None, Some(reason)),
                }
            }
        };
        let attempt = Attempt {
            id: Uuid::now_v7(),
            job_id: job.id.0,
            kind: kind.as_str().into(),
            target_id: job.target_id,
            event_id,
            attempt: u32::try_from(job.attempts).unwrap_or(u32::MAX),
            status_code: None,
            response_body: None,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            // A provider's text, kept short and storable (Postgres text holds no NUL; a
            // failed write would leave the job to be claimed and sent again and again).
            error_kind: error.map(|e| {
                e.chars()
                    .take(500)
                    .collect::<String>()
                    .replace('\0', "\u{fffd}")
            }),
            next_attempt_at: next,
            created_at: now,
        };
        self.finish(
            Finish {
                job,
                attempt,
                job_status: status,
                success: status == JobStatus::Delivered,
                disable: None,
                disable_after: self.cfg.disable_after,
                audit: None,
            },
            slot,
        )
        .await
    }
}

impl Crm {
    /// How many jobs are pending and when the earliest is due (one indexed query;
    /// for metrics and dashboards, every few seconds at most).
    pub async fn job_queue(&self) -> Result<super::QueueStats> {
        let q = store::jobs::queue(self.pool()).await?;
        Ok(super::QueueStats {
            pending: u64::try_from(q.pending).unwrap_or(0),
            oldest_due_at: q.oldest_run_at.map(|t| t.0),
        })
    }

    /// Starts a dispatcher on the current tokio runtime. It runs until `shutdown` is
    /// cancelled, then stops claiming and waits for the deliveries in flight (each
    /// bounded by the timeout) and writes their attempts before the returned handle
    /// completes. Aborting the handle instead (like a crash) leaves the attempts in
    /// flight unwritten: their leases run out and those jobs are sent again, with
    /// the same `webhook-id`. Built without the `webhooks` feature it sends
    /// notifications only and leaves webhook jobs pending for a process that has it
    /// (and says so in a warning).
    pub fn start_dispatcher(
        &self,
        config: DispatcherConfig,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>> {
        if config.concurrency == 0 || config.per_endpoint == 0 || config.schedule.is_empty() {
            return Err(Error::Config(
                "dispatcher needs concurrency, per_endpoint and a schedule".into(),
            ));
        }
        // A lease shorter than a delivery could hand a job to a second worker while
        // the first is still sending it.
        if config.lease <= config.timeout {
            return Err(Error::Config(
                "the dispatcher's lease must be longer than its timeout".into(),
            ));
        }
        #[cfg(not(feature = "webhooks"))]
        tracing::warn!(
            "crm was built without its `webhooks` feature: this dispatcher sends \
             notifications only and leaves webhook deliveries to a process built with it"
        );
        // Each delivery hands over one attempt, and the loop takes all that wait
        // every cycle (and, stopping, until the last delivery ends): a send waits
        // for one cycle at most.
        let (finished, to_write) = mpsc::channel(config.concurrency);
        let worker = Arc::new(Worker {
            #[cfg(feature = "webhooks")]
            client: delivery::client(config.timeout, self.webhook_allow())?,
            crm: self.clone(),
            cfg: config,
            finished,
        });
        Ok(tokio::spawn(run(worker, shutdown, to_write)))
    }

    /// Wakes this process's dispatchers (crm calls it after writing jobs).
    pub fn wake_dispatchers(&self) {
        self.dispatch_wake().notify_waiters();
    }

    /// `r`, after waking the dispatchers when it is a success: the services call it
    /// on every write (its events may have queued deliveries).
    pub(crate) fn written<T>(&self, r: crate::Result<T>) -> crate::Result<T> {
        if r.is_ok() {
            self.wake_dispatchers();
        }
        r
    }
}

async fn run(w: Arc<Worker>, shutdown: CancellationToken, mut finished: mpsc::Receiver<Done>) {
    let slots = Arc::new(Semaphore::new(w.cfg.concurrency));
    let crm = w.crm.clone();
    // So that the first pass claims whatever is free.
    let mut last_claim = Instant::now()
        .checked_sub(w.cfg.poll_interval)
        .unwrap_or_else(Instant::now);
    // Jobs other processes commit wake this one at once (Postgres); the poll stays
    // as the fallback.
    let listener = {
        let crm = crm.clone();
        let stop = shutdown.child_token();
        tokio::spawn(async move {
            store::jobs::listen(crm.pool(), || crm.wake_dispatchers(), stop).await;
        })
    };
    let mut waiting: Vec<Done> = Vec::with_capacity(FINISH_BATCH);
    loop {
        // Listen before claiming, so a wake-up sent while claiming is not lost.
        let notified = crm.dispatch_wake().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        // One transaction a cycle: every attempt handed over since the last one is
        // written, then the free slots are filled. Claims come in batches: the loop
        // claims once a quarter of the slots are free, when it writes anyway, and
        // whatever is free once a poll interval has passed since the last claim
        // (slow endpoints holding most slots must not idle the rest).
        while let Ok(d) = finished.try_recv() {
            waiting.push(d);
        }
        let free = slots.available_permits();
        let due = last_claim.elapsed() >= w.cfg.poll_interval;
        let claim =
            free > 0 && (free >= (w.cfg.concurrency / 4).max(1) || due || !waiting.is_empty());
        if claim || !waiting.is_empty() {
            if claim {
                last_claim = Instant::now();
            }
            let (done, replies): (Vec<Finish>, Vec<_>) = waiting.drain(..).unzip();
            let asked = claim.then(|| w.claim_of(free));
            match store::jobs::finish_and_claim(crm.pool(), &done, asked).await {
                Ok(jobs) => {
                    answer(replies);
                    start(&w, &slots, jobs);
                }
                Err(err) => {
                    tracing::warn!(error = %crate::error::Chain(&err), "could not claim webhook jobs");
                    // The attempts alone (the claim may be what failed); the claim
                    // is tried again in the next cycle.
                    if !done.is_empty() {
                        write_finished(&crm, done.into_iter().zip(replies).collect()).await;
                    }
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = &mut notified => {}
            () = tokio::time::sleep(w.cfg.poll_interval) => {}
            Some(d) = finished.recv() => waiting.push(d),
        }
    }
    let _ = listener.await;
    // Write what the deliveries in flight hand over until the last of them ends
    // (each holds the worker, and with it the channel's sender).
    drop(w);
    while finished.recv_many(&mut waiting, FINISH_BATCH).await > 0 {
        write_finished(&crm, std::mem::take(&mut waiting)).await;
    }
}

/// Starts a delivery for each claimed job. Their slots are taken here, before the
/// loop counts the free ones again; reading what the batch needs (its events and
/// endpoints) and the deliveries go on in a task of their own, so the loop writes
/// and claims again meanwhile instead of waiting for those reads.
fn start(w: &Arc<Worker>, slots: &Arc<Semaphore>, jobs: Vec<ClaimedJob>) {
    if jobs.is_empty() {
        return;
    }
    let mut taken = Vec::with_capacity(jobs.len());
    let mut permits = Vec::with_capacity(jobs.len());
    let mut spare = Vec::new();
    for job in jobs {
        metrics::counter!("crm_jobs_claimed_total", "kind" => job.kind.clone()).increment(1);
        // Only the loop takes permits, and it claimed no more than were free.
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                taken.push(job);
                permits.push(permit);
            }
            Err(_) => spare.push(job),
        }
    }
    // The task holds the worker (and with it the loop's channel), so a stopping
    // loop waits for these deliveries too.
    let w = w.clone();
    tokio::spawn(async move {
        for job in &spare {
            release(&w, job).await;
        }
        let ahead = Arc::new(w.prefetch(&taken).await);
        for (job, permit) in taken.into_iter().zip(permits) {
            let w2 = w.clone();
            let ahead = ahead.clone();
            tokio::spawn(async move {
                if let Err(err) = w2.deliver(job, &ahead, permit).await {
                    tracing::warn!(error = %crate::error::Chain(&err), "webhook delivery could not be recorded");
                }
                w2.crm.wake_dispatchers();
            });
        }
    });
}

/// Gives a claimed job back untried, due now.
async fn release(w: &Worker, job: &ClaimedJob) {
    let at = w.crm.now();
    let r = store::jobs::release_job(w.crm.pool(), job.id, job.lease_token, at).await;
    if let Err(err) = r {
        tracing::warn!(error = %crate::error::Chain(&err), "could not release a webhook job");
    }
}
