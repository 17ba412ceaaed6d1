//! Webhook endpoints: where events go. Each has a URL (SSRF-checked when it is set
//! and again at delivery), an event filter, a signing secret sealed at rest, and its
//! delivery health. Every change goes to the audit log.
//!
//! Writing an event creates, in the same transaction, one job per enabled endpoint of
//! the workspace whose filter matches (`crm_jobs`, the queue that the dispatcher
//! drains; notification channels will use the same queue).

use super::model::SealedSecrets;
pub use super::model::{CreatedEndpoint, Endpoint, EndpointPatch, NewEndpoint};
use chrono::Duration;
use serde_json::json;

use super::signing::WebhookSecret;
use super::ssrf;
use crate::audit::AuditEntry;
use crate::error::Errors;
use crate::events::EventType;
use crate::ids::{EndpointId, EventId, WorkspaceId};
use crate::secret::SecretString;
use crate::store::{self, endpoints::EndpointChange};
use crate::{Crm, Error, Result};

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: Duration = Duration::hours(24);
/// Most entries in an event filter.
pub const FILTER_MAX: usize = 32;

/// Checks an event filter: event type names, `lead.*`, or `*`.
pub(crate) fn check_filter(e: &mut Errors, types: &[String]) -> Vec<String> {
    if types.len() > FILTER_MAX {
        e.add("event_types", format!("at most {FILTER_MAX} entries"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let t = t.trim();
        let known = t == "*"
            || EventType::ALL
                .iter()
                .any(|k| k.as_str() == t || k.matches(t) && t.ends_with(".*"));
        if !known {
            let names: Vec<&str> = EventType::ALL.iter().map(|k| k.as_str()).collect();
            e.add(
                format!("event_types[{i}]"),
                format!(
                    "unknown event type; expected *, a prefix such as lead.* or one of {}",
                    names.join(", ")
                ),
            );
        } else if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    if out.is_empty() && types.is_empty() {
        out.push("*".into());
    }
    out
}

fn check_limit(e: &mut Errors, limit: Option<u32>) -> Option<u32> {
    if let Some(l) = limit {
        if !(1..=10_000).contains(&l) {
            e.add("rate_limit_per_minute", "must be between 1 and 10000");
        }
    }
    limit
}

fn check_description(e: &mut Errors, d: Option<&str>) -> Option<String> {
    let d = d.map(str::trim).filter(|d| !d.is_empty())?;
    if d.chars().count() > 500 || d.contains('\0') {
        e.add("description", "must be at most 500 characters");
    }
    Some(d.to_owned())
}

/// The webhook service of one workspace; from [`crate::Workspace::webhooks`].
#[derive(Clone, Debug)]
pub struct Webhooks {
    crm: Crm,
    ws: WorkspaceId,
    actor: Option<String>,
}

impl Webhooks {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self {
            crm,
            ws,
            actor: None,
        }
    }

    /// The same service, recording `actor` in the audit log.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    fn audit(&self, action: &str, ep: &Endpoint) -> AuditEntry {
        let details =
            json!({ "url": ep.url, "event_types": ep.event_types, "enabled": ep.enabled });
        AuditEntry::new(
            self.ws,
            self.actor.as_deref(),
            action,
            ("webhook_endpoint", ep.id.to_string()),
            details,
            self.crm.now(),
        )
    }

    fn aad(id: EndpointId) -> Vec<u8> {
        format!("webhook_endpoint:{id}").into_bytes()
    }

    async fn check_url(&self, e: &mut Errors, raw: &str) -> String {
        match ssrf::check_url_shape(raw) {
            Ok(u) => {
                if let Err(m) = ssrf::resolve_checked(&u, self.crm.webhook_allow()).await {
                    e.add("url", m);
                }
                u.to_string()
            }
            Err(m) => {
                e.add("url", m);
                String::new()
            }
        }
    }

    /// Creates an endpoint. Its secret is returned here (and by [`Webhooks::secret`]).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn create(&self, input: NewEndpoint) -> Result<CreatedEndpoint> {
        let sealer = self.crm.sealer()?;
        let mut e = Errors::default();
        let url = self.check_url(&mut e, &input.url).await;
        let description = check_description(&mut e, input.description.as_deref());
        let event_types = check_filter(&mut e, &input.event_types);
        let limit = check_limit(&mut e, input.rate_limit_per_minute);
        let secret = match input.secret.as_deref() {
            Some(s) => e.take("secret", WebhookSecret::parse(s)),
            None => Some(WebhookSecret::generate()),
        };
        e.finish()?;
        let secret = secret.ok_or_else(|| Error::invalid("secret", "is required"))?;
        let now = self.crm.now();
        let ep = Endpoint {
            id: EndpointId::new(),
            workspace_id: self.ws,
            url,
            description,
            event_types,
            enabled: input.enabled.unwrap_or(true),
            rate_limit_per_minute: limit,
            consecutive_failures: 0,
            last_success_at: None,
            last_failure_at: None,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        };
        let sealed = sealer.seal(secret.expose().expose().as_bytes(), &Self::aad(ep.id))?;
        let audit = self.audit("webhook_endpoint.created", &ep);
        store::endpoints::create_endpoint(
            self.crm.pool(),
            &ep,
            &sealed,
            &audit,
            self.crm.quotas().webhook_endpoints,
        )
        .await?;
        Ok(CreatedEndpoint {
            endpoint: ep,
            secret: secret.expose(),
        })
    }

    /// The workspace's endpoints, oldest first.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn list(&self) -> Result<Vec<Endpoint>> {
        store::endpoints::list_endpoints(self.crm.pool(), self.ws).await
    }

    /// One endpoint.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, endpoint_id = %id))]
    pub async fn get(&self, id: EndpointId) -> Result<Endpoint> {
        store::endpoints::get_endpoint(self.crm.pool(), self.ws, id)
            .await
            .map(|(e, _)| e)
    }

    /// The endpoint's current signing secret.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, endpoint_id = %id))]
    pub async fn secret(&self, id: EndpointId) -> Result<SecretString> {
        let (_, sealed) = store::endpoints::get_endpoint(self.crm.pool(), self.ws, id).await?;
        let bytes = self.crm.sealer()?.open(&sealed.current, &Self::aad(id))?;
        Ok(SecretString::new(
            String::from_utf8(bytes).map_err(|_| Error::Unseal)?,
        ))
    }

    /// Changes an endpoint.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, endpoint_id = %id))]
    pub async fn update(&self, id: EndpointId, patch: EndpointPatch) -> Result<Endpoint> {
        let mut e = Errors::default();
        let url = match patch.url.as_deref() {
            Some(u) => Some(self.check_url(&mut e, u).await),
            None => None,
        };
        let description = patch
            .description
            .as_ref()
            .map(|d| check_description(&mut e, d.as_deref()));
        let event_types = patch
            .event_types
            .as_deref()
            .map(|t| check_filter(&mut e, t));
        if patch.event_types.as_ref().is_some_and(Vec::is_empty) {
            e.add("event_types", "must not be empty");
        }
        let limit = patch.rate_limit_per_minute.map(|l| check_limit(&mut e, l));
        e.finish()?;
        let now = self.crm.now();
        // The patch applies to the row as it is under the lock: a delivery that just
        // disabled the endpoint is not undone by a description change.
        let apply = |mut ep: Endpoint, _: SealedSecrets| {
            if let Some(u) = url {
                ep.url = u;
            }
            if let Some(d) = description {
                ep.description = d;
            }
            if let Some(t) = event_types {
                ep.event_types = t;
            }
            if let Some(l) = limit {
                ep.rate_limit_per_minute = l;
            }
            if let Some(enabled) = patch.enabled {
                if enabled && !ep.enabled {
                    ep.consecutive_failures = 0;
                    ep.disabled_reason = None;
                }
                ep.enabled = enabled;
            }
            ep.updated_at = now;
            let audit = self.audit("webhook_endpoint.updated", &ep);
            Ok(EndpointChange {
                endpoint: ep,
                rotation: None,
                audit,
            })
        };
        store::endpoints::change_endpoint(self.crm.pool(), self.ws, id, apply).await
    }

    /// Deletes an endpoint and its pending jobs.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, endpoint_id = %id))]
    pub async fn delete(&self, id: EndpointId) -> Result<()> {
        let ep = self.get(id).await?;
        let audit = self.audit("webhook_endpoint.deleted", &ep);
        store::endpoints::delete_endpoint(self.crm.pool(), self.ws, id, &audit).await
    }

    /// A new signing secret; the old one keeps signing beside it for 24 h, so receivers
    /// can switch without losing a delivery. Returns the new secret.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, endpoint_id = %id))]
    pub async fn rotate_secret(&self, id: EndpointId) -> Result<SecretString> {
        let sealer = self.crm.sealer()?;
        let secret = WebhookSecret::generate();
        let new_sealed = sealer.seal(secret.expose().expose().as_bytes(), &Self::aad(id))?;
        let now = self.crm.now();
        // The previous secret is the one under the lock: two rotations at once keep
        // a chain, never a secret nobody holds.
        let rotate = |mut ep: Endpoint, sealed: SealedSecrets| {
            ep.updated_at = now;
            let audit = self.audit("webhook_endpoint.secret_rotated", &ep);
            Ok(EndpointChange {
                endpoint: ep,
                rotation: Some((new_sealed, sealed.current, now + ROTATION_OVERLAP)),
                audit,
            })
        };
        store::endpoints::change_endpoint(self.crm.pool(), self.ws, id, rotate).await?;
        Ok(secret.expose())
    }

    /// Delivery attempts to an endpoint, oldest first: at most `limit` (1–1000) after
    /// the attempt id `after` (cursor).
    pub async fn attempts(
        &self,
        id: EndpointId,
        after: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<super::Attempt>> {
        self.attempts_by(id, store::Seek::After(after), limit).await
    }

    /// Delivery attempts to an endpoint, newest first: at most `limit` (1–1000)
    /// before the attempt id `before` (pass the last id of a page for the next,
    /// older one). A delivery log's view; [`Webhooks::attempts`] reads forwards.
    pub async fn recent_attempts(
        &self,
        id: EndpointId,
        before: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<super::Attempt>> {
        self.attempts_by(id, store::Seek::Before(before), limit)
            .await
    }

    async fn attempts_by(
        &self,
        id: EndpointId,
        seek: store::Seek,
        limit: u32,
    ) -> Result<Vec<super::Attempt>> {
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 1000"));
        }
        self.get(id).await?;
        let kind = crate::webhooks::model::JobKind::Webhook;
        store::jobs::list_attempts(self.crm.pool(), self.ws, kind, id.0, None, seek, limit).await
    }

    /// Every attempt to deliver one message (event) to an endpoint.
    pub async fn message_attempts(
        &self,
        id: EndpointId,
        event: EventId,
    ) -> Result<Vec<super::Attempt>> {
        self.get(id).await?;
        store::jobs::list_attempts(
            self.crm.pool(),
            self.ws,
            crate::webhooks::model::JobKind::Webhook,
            id.0,
            Some(event),
            store::Seek::After(None),
            1000,
        )
        .await
    }

    /// Sends a message again to an endpoint (a new job; the `webhook-id` stays the
    /// event's, so the receiver can tell it is the same message).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, endpoint_id = %id))]
    pub async fn resend(&self, id: EndpointId, event: EventId) -> Result<()> {
        self.get(id).await?;
        let found = store::outbox::event_by_id(self.crm.pool(), event.0).await?;
        if found.is_none_or(|e| e.workspace_id != self.ws) {
            return Err(Error::NotFound { entity: "event" });
        }
        let now = self.crm.now();
        store::jobs::enqueue(
            self.crm.pool(),
            self.ws,
            crate::webhooks::model::JobKind::Webhook,
            id.0,
            event,
            None,
            now,
        )
        .await?;
        self.crm.wake_dispatchers();
        Ok(())
    }

    /// Queues a sample `webhook.test` event for one endpoint (even a disabled one is
    /// not sent to: enable it first). Returns the event id, which is its `webhook-id`.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, endpoint_id = %id))]
    pub async fn test(&self, id: EndpointId) -> Result<EventId> {
        self.get(id).await?;
        let now = self.crm.now();
        let event = crate::events::Event::new(
            self.ws,
            EventType::WebhookTest,
            None,
            json!({ "message": "This is a test event from crm.", "endpoint_id": id }),
            now,
        );
        store::jobs::enqueue(
            self.crm.pool(),
            self.ws,
            crate::webhooks::model::JobKind::Webhook,
            id.0,
            event.id,
            Some(&event),
            now,
        )
        .await?;
        self.crm.wake_dispatchers();
        Ok(event.id)
    }

    /// The secrets that sign a delivery now: the current one, and the previous one
    /// while its overlap lasts.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, endpoint_id = %id))]
    pub async fn signing_secrets(&self, id: EndpointId) -> Result<Vec<WebhookSecret>> {
        self.with_secrets(id).await.map(|(_, secrets)| secrets)
    }

    /// An endpoint and its signing secrets, from one read.
    pub(crate) async fn with_secrets(
        &self,
        id: EndpointId,
    ) -> Result<(Endpoint, Vec<WebhookSecret>)> {
        let (ep, sealed) = store::endpoints::get_endpoint(self.crm.pool(), self.ws, id).await?;
        let sealer = self.crm.sealer()?;
        let open = |s: &str| -> Result<WebhookSecret> {
            let bytes = sealer.open(s, &Self::aad(id))?;
            WebhookSecret::parse(std::str::from_utf8(&bytes).map_err(|_| Error::Unseal)?)
                .map_err(|_| Error::Unseal)
        };
        let mut secrets = vec![open(&sealed.current)?];
        if let (Some(prev), Some(until)) = (&sealed.previous, sealed.previous_until) {
            if until > self.crm.now() {
                secrets.push(open(prev)?);
            }
        }
        Ok((ep, secrets))
    }
}

#[cfg(test)]
mod tests {
    use super::EndpointPatch;

    #[test]
    fn null_clears_and_absent_keeps() -> serde_json::Result<()> {
        let p: EndpointPatch =
            serde_json::from_str(r#"{"description": null, "rate_limit_per_minute": null}"#)?;
        assert_eq!(
            (p.description, p.rate_limit_per_minute),
            (Some(None), Some(None))
        );
        let p: EndpointPatch = serde_json::from_str(r#"{"enabled": true}"#)?;
        assert_eq!((p.description, p.rate_limit_per_minute), (None, None));
        Ok(())
    }
}
