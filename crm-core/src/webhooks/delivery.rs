//! Sending one webhook over HTTP (feature `webhooks`, on by default): the reqwest
//! client with the SSRF-guarded resolver, no proxy and no redirects, and the reading
//! of one response. Without the feature crm-core does not compile reqwest, and its
//! dispatchers leave webhook jobs to a process built with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use super::dispatcher::{
    message_id, Prefetched, Slot, Target, Worker, PAYLOAD_MAX, RESPONSE_BODY_MAX,
};
use super::model::{Attempt, JobKind, JobStatus};
use super::ssrf::{self, IpNet};
use crate::audit::AuditEntry;
use crate::ids::EndpointId;
use crate::ratelimit::Policy;
use crate::store::{
    self,
    jobs::{ClaimedJob, Finish},
};
use crate::{Error, Result};

/// The HTTP client of one dispatcher: `timeout` per delivery, names resolved through
/// the SSRF guard (with `allow` as its allow-list).
pub(super) fn client(timeout: Duration, allow: &[IpNet]) -> Result<reqwest::Client> {
    ssrf::guarded_client(
        timeout,
        allow,
        concat!("crm-webhooks/", env!("CARGO_PKG_VERSION")),
    )
}

pub(super) struct Sent {
    pub(super) status: Option<u16>,
    pub(super) body: Option<String>,
    pub(super) error: Option<&'static str>,
    pub(super) retry_after: Option<Duration>,
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

pub(super) async fn send(
    client: &reqwest::Client,
    url: url::Url,
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
                refused |= err.downcast_ref::<ssrf::Refused>().is_some();
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

impl Worker {
    /// The job's endpoint ready to send to, or `None` when it is gone.
    pub(super) async fn target(&self, job: &ClaimedJob) -> Result<Option<Target>> {
        let hooks = self.crm.workspace(job.workspace_id).webhooks();
        let (endpoint, secrets) = match hooks.with_secrets(EndpointId(job.target_id)).await {
            Ok(found) => found,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let url = match ssrf::check_url_shape(&endpoint.url) {
            Err(m) => Err(m),
            // Names are checked by the resolver as they are looked up; literal
            // addresses never reach it, so they are checked here.
            Ok(u) => match u.host() {
                Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
                    ssrf::resolve_checked(&u, self.crm.webhook_allow())
                        .await
                        .map(|_| u)
                }
                _ => Ok(u),
            },
        };
        Ok(Some(Target {
            endpoint,
            secrets,
            url,
        }))
    }

    /// Delivers one webhook job: signs the event for the endpoint, sends it, and
    /// records the attempt (and the next try, or the endpoint's disabling).
    pub(super) async fn deliver_webhook(
        &self,
        job: ClaimedJob,
        ahead: &Prefetched,
        slot: Slot,
    ) -> Result<()> {
        let found = match ahead.endpoints.get(&job.target_id) {
            Some(found) => found.clone(),
            None => self.target(&job).await?.map(Arc::new),
        };
        let Some(found) = found.filter(|f| f.endpoint.enabled) else {
            return store::jobs::cancel_job(self.crm.pool(), job.id, job.lease_token).await;
        };
        let (ep, secrets) = (&found.endpoint, &found.secrets);
        if let Some(limit) = ep.rate_limit_per_minute.and_then(Policy::per_minute) {
            let d = self
                .crm
                .rate_limiter()
                .check_with("webhook_endpoint", limit, &ep.id.to_string())
                .await?;
            if let Some(wait) = d.retry_after {
                let at = self.crm.now() + chrono::Duration::from_std(wait).unwrap_or_default();
                return store::jobs::release_job(self.crm.pool(), job.id, job.lease_token, at)
                    .await;
            }
        }
        let Some(event) = ahead.event(&self.crm, job.event_id).await? else {
            return store::jobs::cancel_job(self.crm.pool(), job.id, job.lease_token).await;
        };
        let body = event.payload().as_bytes().to_vec();
        let now = self.crm.now();
        let ts = now.timestamp();
        let msg = message_id(event.id());
        let signature = secrets
            .iter()
            .map(|s| s.signer().sign(&msg, ts, &body))
            .collect::<Vec<_>>()
            .join(" ");

        let started = Instant::now();
        let sent = if body.len() > PAYLOAD_MAX {
            Sent {
                status: None,
                body: None,
                error: Some("payload_too_large"),
                retry_after: None,
            }
        } else {
            match &found.url {
                Err(why) => Sent {
                    status: None,
                    body: Some(why.clone()),
                    error: Some("ssrf_refused"),
                    retry_after: None,
                },
                Ok(url) => {
                    let headers = [
                        ("webhook-id", msg.clone()),
                        ("webhook-timestamp", ts.to_string()),
                        ("webhook-signature", signature),
                    ];
                    send(&self.client, url.clone(), headers, body).await
                }
            }
        };
        let elapsed = started.elapsed();

        let success = sent.error.is_none();
        let gone = sent.status == Some(410);
        let (status, next) = if success {
            (JobStatus::Delivered, None)
        } else if gone {
            (JobStatus::Failed, None)
        } else {
            match self.next_delay(job.attempts, sent.retry_after) {
                Some(d) => (
                    JobStatus::Pending,
                    Some(now + chrono::Duration::from_std(d).unwrap_or_default()),
                ),
                None => (JobStatus::Failed, None),
            }
        };
        let attempt = Attempt {
            id: Uuid::now_v7(),
            job_id: job.id.0,
            kind: JobKind::Webhook.as_str().into(),
            target_id: ep.id.0,
            event_id: event.id(),
            attempt: u32::try_from(job.attempts).unwrap_or(u32::MAX),
            status_code: sent.status,
            response_body: sent.body,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            error_kind: sent.error.map(str::to_owned),
            next_attempt_at: next,
            created_at: now,
        };
        let disable = gone.then(|| "the endpoint answered 410 Gone".to_string());
        // Only a failed attempt can disable its endpoint, so only its audit entry (kept
        // for that case) is built: not a JSON object and three strings per delivery.
        let audit = (!success).then(|| {
            let reason = disable.clone().unwrap_or_else(|| {
                format!("{} consecutive failed attempts", self.cfg.disable_after)
            });
            AuditEntry::new(
                job.workspace_id,
                Some("dispatcher"),
                "webhook_endpoint.disabled",
                ("webhook_endpoint", ep.id.to_string()),
                json!({ "reason": reason, "url": ep.url }),
                now,
            )
        });
        self.finish(
            Finish {
                job,
                attempt,
                job_status: status,
                success,
                disable,
                disable_after: self.cfg.disable_after,
                audit,
            },
            slot,
        )
        .await
    }
}
