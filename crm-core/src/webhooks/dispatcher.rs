//! The dispatcher: background tasks that drain `crm_jobs`: webhook deliveries, and
//! notifications through their channels' plugins (see [`crate::notify`]).
//!
//! Jobs are claimed with a lease (Postgres: `FOR UPDATE SKIP LOCKED`; SQLite: one
//! `UPDATE … RETURNING` under the write lock), so any number of dispatchers in any
//! number of processes share the queue and none delivers an attempt twice. A worker
//! that dies mid-delivery leaves its lease to run out; another worker then takes the
//! job, and the `webhook-id` (from the event) is the same, so receivers deduplicate.
//! A dispatcher wakes when this process writes a job and polls slowly otherwise (jobs
//! written by other processes, retries coming due).
//!
//! Delivery: POST the event payload with the three `webhook-*` headers, signed with
//! the endpoint's secret (and its previous one during a rotation); redirects are not
//! followed; only 2xx succeeds; 410 disables the endpoint; `Retry-After` on 429/503
//! sets the next try (1 s to 24 h); otherwise retries follow the schedule with ±20 %
//! jitter; after `disable_after` consecutive failures the endpoint is disabled and the
//! audit log says why. Every attempt is recorded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ssrf::{self, IpNet};
use crate::audit::AuditEntry;
use crate::db::with_pool;
use crate::ids::{EndpointId, EventId};
use crate::notify::Outcome;
use crate::ratelimit::Policy;
use crate::store::{ClaimedJob, Finish, Repo};
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
    /// Deliveries in flight at once to one endpoint.
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

/// One recorded delivery attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// Its id.
    pub id: Uuid,
    /// The job (one message to one endpoint or channel).
    pub job_id: Uuid,
    /// `webhook` or `notification`.
    pub kind: String,
    /// The webhook endpoint or notification channel.
    pub target_id: Uuid,
    /// The event (its id is the `webhook-id`).
    pub event_id: EventId,
    /// 1 for the first attempt of the job.
    pub attempt: u32,
    /// The HTTP status, when a response came.
    pub status_code: Option<u16>,
    /// The response body, cut at 4 KiB.
    pub response_body: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
    /// Why it failed: for webhooks `http_status`, `redirect`, `timeout`, `connect`,
    /// `network`, `ssrf_refused` or `payload_too_large`; for notifications the plugin's
    /// reason. `None` on success.
    pub error_kind: Option<String>,
    /// When the next attempt is due, when there is one.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// The `webhook-id` of an event.
pub fn message_id(event: EventId) -> String {
    format!("msg_{}", event.0.simple())
}

/// The resolver's refusal, recognised in the error chain as `ssrf_refused`.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves to a refused address", self.0)
    }
}

impl std::error::Error for Refused {}

/// A DNS resolver that refuses names resolving to non-public addresses, so the
/// connection goes to the checked address and no second lookup can differ.
struct GuardedResolver {
    allow: Arc<Vec<IpNet>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() || addrs.iter().any(|a| !ssrf::allowed(a.ip(), &allow)) {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

struct Sent {
    status: Option<u16>,
    body: Option<String>,
    error: Option<&'static str>,
    retry_after: Option<Duration>,
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.clamp(1, 24 * 3600)))
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    headers: [(&'static str, String); 3],
    body: Vec<u8>,
) -> Sent {
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        req = req.header(name, value);
    }
    match req.body(body).send().await {
        Ok(mut resp) => {
            let status = resp.status();
            let hint = if status.as_u16() == 429 || status.as_u16() == 503 {
                retry_after(resp.headers())
            } else {
                None
            };
            let mut kept = Vec::new();
            while kept.len() < RESPONSE_BODY_MAX {
                match resp.chunk().await {
                    Ok(Some(chunk)) => kept.extend_from_slice(
                        &chunk[..chunk.len().min(RESPONSE_BODY_MAX - kept.len())],
                    ),
                    _ => break,
                }
            }
            let error = if status.is_success() {
                None
            } else if status.is_redirection() {
                Some("redirect")
            } else {
                Some("http_status")
            };
            Sent {
                status: Some(status.as_u16()),
                // Postgres text cannot hold NUL, and a receiver may send anything.
                body: Some(String::from_utf8_lossy(&kept).replace('\0', "\u{fffd}")),
                error,
                retry_after: hint,
            }
        }
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut refused = false;
            while let Some(err) = source {
                refused |= err.downcast_ref::<Refused>().is_some();
                source = err.source();
            }
            let kind = if refused {
                "ssrf_refused"
            } else if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "network"
            };
            Sent {
                status: None,
                body: None,
                error: Some(kind),
                retry_after: None,
            }
        }
    }
}

/// In-flight deliveries per endpoint.
#[derive(Default)]
struct PerEndpoint(Mutex<HashMap<Uuid, usize>>);

impl PerEndpoint {
    fn try_take(&self, id: Uuid, cap: usize) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(id).or_insert(0);
        if *n >= cap {
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, id: Uuid) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&id);
            }
        }
    }
}

struct Worker {
    crm: Crm,
    cfg: DispatcherConfig,
    client: reqwest::Client,
    token: Uuid,
    per_endpoint: PerEndpoint,
}

impl Worker {
    fn lease_until(&self) -> DateTime<Utc> {
        self.crm.now()
            + chrono::Duration::from_std(self.cfg.lease).unwrap_or(chrono::Duration::seconds(60))
    }

    async fn claim(&self, n: usize) -> Result<Vec<ClaimedJob>> {
        let (now, until, token) = (self.crm.now(), self.lease_until(), self.token);
        with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::claim_jobs(
            p, now, until, token, n
        )
        .await)
    }

    fn next_delay(&self, attempt: i64, hint: Option<Duration>) -> Option<Duration> {
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

    async fn deliver(&self, job: ClaimedJob) -> Result<()> {
        match job.kind.as_str() {
            "webhook" => self.deliver_webhook(job).await,
            "notification" => self.notify(job).await,
            _ => with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::cancel_job(
                p, job.id, self.token
            )
            .await),
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
    async fn notify(&self, job: ClaimedJob) -> Result<()> {
        let service = self.crm.workspace(job.workspace_id).notifications();
        let id = crate::ids::ChannelId(job.target_id);
        let cancel = || async {
            with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::cancel_job(
                p, job.id, self.token
            )
            .await)
        };
        let channel = match service.get(id).await {
            Ok(c) if c.enabled => c,
            Ok(_) | Err(Error::NotFound { .. }) => return cancel().await,
            Err(e) => return Err(e),
        };
        let Some(event) = with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::event_by_id(
            p,
            job.event_id
        )
        .await)?
        else {
            return cancel().await;
        };
        let config = service.config(id).await?;
        let notification = crate::notify::Notification::from_event(&event, id);
        let now = self.crm.now();
        let started = Instant::now();
        let outcome = match self.crm.notifier(&channel.kind) {
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
        let (status, next, error) = match outcome {
            Outcome::Sent => ("delivered", None, None),
            Outcome::Permanent(why) => ("failed", None, Some(why)),
            Outcome::Retry { after, reason } => {
                let hint =
                    after.map(|d| d.clamp(Duration::from_secs(1), Duration::from_secs(24 * 3600)));
                match self.next_try(&job, now, hint) {
                    Some(at) => ("pending", Some(at), Some(reason)),
                    None => ("failed", None, Some(reason)),
                }
            }
        };
        let attempt = Attempt {
            id: Uuid::now_v7(),
            job_id: job.id,
            kind: "notification".into(),
            target_id: job.target_id,
            event_id: event.id,
            attempt: u32::try_from(job.attempts).unwrap_or(u32::MAX),
            status_code: None,
            response_body: None,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error_kind: error.map(|e| e.chars().take(500).collect()),
            next_attempt_at: next,
            created_at: now,
        };
        let finish = Finish {
            job: &job,
            token: self.token,
            attempt: &attempt,
            job_status: status,
            success: status == "delivered",
            disable: None,
            disable_after: self.cfg.disable_after,
        };
        with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::finish_job(
            p, &finish, None
        )
        .await)?;
        Ok(())
    }

    async fn deliver_webhook(&self, job: ClaimedJob) -> Result<()> {
        let hooks = self.crm.workspace(job.workspace_id).webhooks();
        let endpoint_id = EndpointId(job.target_id);
        let (ep, secrets) = match hooks.with_secrets(endpoint_id).await {
            Ok((ep, secrets)) if ep.enabled => (ep, secrets),
            Ok(_) | Err(Error::NotFound { .. }) => {
                return with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::cancel_job(
                    p, job.id, self.token
                )
                .await);
            }
            Err(e) => return Err(e),
        };
        if let Some(limit) = ep.rate_limit_per_minute.and_then(Policy::per_minute) {
            let d = self
                .crm
                .rate_limiter()
                .check_with("webhook_endpoint", limit, &ep.id.to_string())
                .await?;
            if let Some(wait) = d.retry_after {
                let at = self.crm.now() + chrono::Duration::from_std(wait).unwrap_or_default();
                return with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::release_job(
                    p, job.id, self.token, at
                )
                .await);
            }
        }
        let Some(event) = with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::event_by_id(
            p,
            job.event_id
        )
        .await)?
        else {
            return with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::cancel_job(
                p, job.id, self.token
            )
            .await);
        };
        let body =
            serde_json::to_vec(&event.payload).map_err(|_| Error::Config("payload".into()))?;
        let now = self.crm.now();
        let ts = now.timestamp();
        let msg = message_id(event.id);
        let signature = secrets
            .iter()
            .map(|s| s.signer().sign(&msg, ts, &body))
            .collect::<Vec<_>>()
            .join(" ");

        let started = Instant::now();
        let refused = match ssrf::check_url_shape(&ep.url) {
            Err(m) => Some(m),
            // Names are checked by the resolver as they are looked up; literal
            // addresses never reach it, so they are checked here.
            Ok(u) => match u.host() {
                Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
                    ssrf::resolve_checked(&u, self.crm.webhook_allow())
                        .await
                        .err()
                }
                _ => None,
            },
        };
        let sent = if body.len() > PAYLOAD_MAX {
            Sent {
                status: None,
                body: None,
                error: Some("payload_too_large"),
                retry_after: None,
            }
        } else if let Some(why) = refused {
            Sent {
                status: None,
                body: Some(why),
                error: Some("ssrf_refused"),
                retry_after: None,
            }
        } else {
            let headers = [
                ("webhook-id", msg.clone()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", signature),
            ];
            send(&self.client, &ep.url, headers, body).await
        };
        let elapsed = started.elapsed();

        let success = sent.error.is_none();
        let gone = sent.status == Some(410);
        let (status, next) = if success {
            ("delivered", None)
        } else if gone {
            ("failed", None)
        } else {
            match self.next_delay(job.attempts, sent.retry_after) {
                Some(d) => (
                    "pending",
                    Some(now + chrono::Duration::from_std(d).unwrap_or_default()),
                ),
                None => ("failed", None),
            }
        };
        let attempt = Attempt {
            id: Uuid::now_v7(),
            job_id: job.id,
            kind: "webhook".into(),
            target_id: ep.id.0,
            event_id: event.id,
            attempt: u32::try_from(job.attempts).unwrap_or(u32::MAX),
            status_code: sent.status,
            response_body: sent.body,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            error_kind: sent.error.map(str::to_owned),
            next_attempt_at: next,
            created_at: now,
        };
        let disable = gone.then(|| "the endpoint answered 410 Gone".to_string());
        let reason = disable
            .clone()
            .unwrap_or_else(|| format!("{} consecutive failed attempts", self.cfg.disable_after));
        let audit = AuditEntry::new(
            job.workspace_id,
            Some("dispatcher"),
            "webhook_endpoint.disabled",
            ("webhook_endpoint", ep.id.to_string()),
            json!({ "reason": reason, "url": ep.url }),
            now,
        );
        let finish = Finish {
            job: &job,
            token: self.token,
            attempt: &attempt,
            job_status: status,
            success,
            disable,
            disable_after: self.cfg.disable_after,
        };
        with_pool!(self.crm.pool(), |p, DB| Repo::<DB>::finish_job(
            p,
            &finish,
            Some(&audit)
        )
        .await)?;
        Ok(())
    }
}

impl Crm {
    /// Starts a dispatcher on the current tokio runtime. It runs until `shutdown` is
    /// cancelled, then stops claiming and waits for the deliveries in flight (each
    /// bounded by the timeout) before the returned handle completes.
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
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: Arc::new(self.webhook_allow().to_vec()),
            }))
            .user_agent(concat!("crm-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| Error::Config("could not build the HTTP client".into()))?;
        let worker = Arc::new(Worker {
            crm: self.clone(),
            cfg: config,
            client,
            token: Uuid::now_v7(),
            per_endpoint: PerEndpoint::default(),
        });
        Ok(tokio::spawn(run(worker, shutdown)))
    }

    /// Wakes this process's dispatchers (crm calls it after writing jobs).
    pub fn wake_dispatchers(&self) {
        self.dispatch_wake().notify_waiters();
    }
}

async fn run(w: Arc<Worker>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(w.cfg.concurrency));
    let crm = w.crm.clone();
    loop {
        // Listen before claiming, so a wake-up sent while claiming is not lost.
        let notified = crm.dispatch_wake().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let free = slots.available_permits();
        if free > 0 {
            match w.claim(free).await {
                Ok(jobs) => {
                    for job in jobs {
                        // Only this loop takes permits, and it claimed no more than were free.
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            release(&w, &job).await;
                            continue;
                        };
                        if !w.per_endpoint.try_take(job.target_id, w.cfg.per_endpoint) {
                            // Over this endpoint's cap: give it back for a moment.
                            release(&w, &job).await;
                            continue;
                        }
                        let w2 = w.clone();
                        tokio::spawn(async move {
                            let target = job.target_id;
                            if let Err(err) = w2.deliver(job).await {
                                tracing::warn!(error = %err, "webhook delivery could not be recorded");
                            }
                            w2.per_endpoint.give_back(target);
                            drop(permit);
                            w2.crm.wake_dispatchers();
                        });
                    }
                }
                Err(err) => tracing::warn!(error = %err, "could not claim webhook jobs"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = &mut notified => {}
            () = tokio::time::sleep(w.cfg.poll_interval) => {}
        }
    }
    // Wait for the deliveries in flight.
    let _ = slots
        .acquire_many(u32::try_from(w.cfg.concurrency).unwrap_or(u32::MAX))
        .await;
}

/// Gives a claimed job back untried, due now.
async fn release(w: &Worker, job: &ClaimedJob) {
    let at = w.crm.now();
    let r = with_pool!(w.crm.pool(), |p, DB| Repo::<DB>::release_job(
        p, job.id, w.token, at
    )
    .await);
    if let Err(err) = r {
        tracing::warn!(error = %err, "could not release a webhook job");
    }
}
