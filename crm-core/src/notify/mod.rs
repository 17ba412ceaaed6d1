//! Notifications: lead events sent to people through channels (chat, email, …).
//!
//! crm-core names no provider. A provider is a [`Notifier`] plugin registered on the
//! `Crm` builder; a channel is a configured instance of one (its configuration —
//! tokens, chat ids — sealed at rest), subscribed to event types. Writing an event
//! queues one job per matching enabled channel in the event's transaction, in the same
//! queue as webhooks (`crm_jobs`, kind `notification`); the dispatcher sends them, so a
//! slow or failing provider never slows or fails the lead write. The plugin's
//! [`Outcome`] decides what happens next: done, retry (after the provider's hint when
//! it gave one, else on the dispatcher's schedule), or a permanent failure. Every
//! attempt is recorded.

pub(crate) mod model;

pub use model::{Channel, ChannelPatch, NewChannel};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::audit::AuditEntry;
use crate::error::{Errors, FieldError};
use crate::events::{Event, EventType};
use crate::ids::{ChannelId, EventId, WorkspaceId};
use crate::leads::LeadStatus;
use crate::store::{self, channels::ChannelChange};
use crate::webhooks::endpoints::check_filter;
use crate::{Crm, Error, Result};

/// What a plugin sends: one event, rendered into provider-neutral parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// The event (stable across retries: a plugin can derive an idempotency key from
    /// it and the channel).
    pub event_id: EventId,
    /// The channel it is sent through.
    pub channel_id: ChannelId,
    /// What happened.
    pub event_type: EventType,
    /// A one-line title, e.g. "New lead: Ana López".
    pub title: String,
    /// Labelled values (Name, Email, Phone, Company, …), user-supplied and unescaped.
    pub fields: Vec<(String, String)>,
    /// The lead's status, when the event concerns a lead.
    pub status: Option<LeadStatus>,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The full event payload, as webhooks receive it.
    pub payload: Value,
}

impl Notification {
    /// Renders an event for a channel.
    pub fn from_event(event: &Event, channel_id: ChannelId) -> Self {
        let data = &event.payload["data"];
        let lead = &data["lead"];
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let name = text(&lead["name"]).unwrap_or_else(|| "a lead".into());
        let title = match event.event_type {
            EventType::LeadCreated => format!("New lead: {name}"),
            EventType::LeadUpdated => format!("Lead updated: {name}"),
            EventType::LeadStatusChanged => format!(
                "{name}: {} → {}",
                data["old_status"].as_str().unwrap_or("?"),
                data["new_status"].as_str().unwrap_or("?")
            ),
            EventType::LeadDeleted => format!("Lead deleted: {name}"),
            EventType::LeadArchived => format!("Lead archived: {name}"),
            EventType::LeadRestored => format!("Lead restored: {name}"),
            EventType::LeadMerged => format!("Leads merged into {name}"),
            EventType::LeadActivityAdded => {
                format!(
                    "New {} on a lead",
                    data["activity"]["kind"].as_str().unwrap_or("activity")
                )
            }
            EventType::LeadsImported => format!(
                "Leads imported: {} created, {} updated",
                data["created"].as_u64().unwrap_or(0),
                data["updated"].as_u64().unwrap_or(0)
            ),
            EventType::LeadConverted => format!("Lead converted into a contact: {name}"),
            EventType::ContactCreated | EventType::ContactUpdated | EventType::ContactDeleted => {
                let name = text(&data["contact"]["name"]).unwrap_or_else(|| "a contact".into());
                let what = match event.event_type {
                    EventType::ContactCreated => "New contact",
                    EventType::ContactUpdated => "Contact updated",
                    _ => "Contact deleted",
                };
                format!("{what}: {name}")
            }
            EventType::OrganizationCreated
            | EventType::OrganizationUpdated
            | EventType::OrganizationDeleted => {
                let name =
                    text(&data["organization"]["name"]).unwrap_or_else(|| "an organization".into());
                let what = match event.event_type {
                    EventType::OrganizationCreated => "New organization",
                    EventType::OrganizationUpdated => "Organization updated",
                    _ => "Organization deleted",
                };
                format!("{what}: {name}")
            }
            EventType::AttachmentAdded | EventType::AttachmentRemoved => {
                let file = text(&data["attachment"]["name"]).unwrap_or_else(|| "a file".into());
                let what = match event.event_type {
                    EventType::AttachmentAdded => "File attached",
                    _ => "File removed",
                };
                format!("{what}: {file}")
            }
            EventType::WebhookTest => "Test notification from crm".into(),
        };
        let mut fields = Vec::new();
        for (label, key) in [
            ("Name", "name"),
            ("Email", "email"),
            ("Phone", "phone"),
            ("Company", "company"),
            ("Budget", "budget"),
            ("Project type", "project_type"),
            ("Source", "source"),
            ("Status", "status"),
            ("Message", "message"),
        ] {
            if let Some(v) = text(&lead[key]) {
                fields.push((label.to_owned(), v));
            }
        }
        if let Some(d) = text(&data["activity"]["description"]) {
            fields.push(("Activity".to_owned(), d));
        }
        Self {
            event_id: event.id,
            channel_id,
            event_type: event.event_type,
            title,
            fields,
            status: lead["status"].as_str().and_then(|s| s.parse().ok()),
            timestamp: event.created_at,
            payload: event.payload.clone(),
        }
    }
}

/// What a plugin reports after one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Sent,
    /// Not delivered, worth retrying: after `after` when the provider said so
    /// (`Retry-After`, `retry_after`), else on the dispatcher's schedule.
    Retry {
        /// The provider's hint.
        after: Option<Duration>,
        /// What went wrong, for the attempt log (no secrets).
        reason: String,
    },
    /// Not delivered and never will be as configured (a 4xx other than 429).
    Permanent(String),
}

/// A boxed future, so plugins can sit behind `dyn Notifier`.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A provider plugin.
pub trait Notifier: Send + Sync + 'static {
    /// The channel kind it serves (`discord`, …), 1–32 lower-case characters.
    fn kind(&self) -> &'static str;

    /// Checks a channel's configuration when the channel is created or changed, so a
    /// missing chat id is refused then and not at the first lead. Errors name
    /// `config.<field>`.
    fn check_config(&self, config: &Value) -> std::result::Result<(), Vec<FieldError>>;

    /// The email addresses a channel with this (checked) configuration sends to;
    /// empty, the default, for plugins that send no mail. crm refuses a channel with
    /// more than [`crate::Quotas::email_recipients`] of them, or with one that is
    /// not the verified address of a user of the channel's workspace: a tenant must
    /// not turn the operator's mail sender against strangers.
    fn email_recipients(&self, config: &Value) -> Vec<String> {
        let _ = config;
        Vec::new()
    }

    /// Sends one notification with a channel's configuration.
    fn send<'a>(&'a self, config: &'a Value, notification: &'a Notification) -> SendFuture<'a>;
}

fn aad(id: ChannelId) -> Vec<u8> {
    format!("notification_channel:{id}").into_bytes()
}

/// The notification service of one workspace; from [`crate::Workspace::notifications`].
#[derive(Clone, Debug)]
pub struct Notifications {
    crm: Crm,
    ws: WorkspaceId,
    actor: Option<String>,
}

impl Notifications {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self {
            crm,
            ws,
            actor: None,
        }
    }

    /// The same service, recording `actor` in the audit log (like
    /// [`crate::webhooks::Webhooks::with_actor`]).
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    fn audit(&self, action: &str, c: &Channel) -> AuditEntry {
        let details = json!({ "kind": c.kind, "name": c.name, "event_types": c.event_types, "enabled": c.enabled });
        AuditEntry::new(
            self.ws,
            self.actor.as_deref(),
            action,
            ("notification_channel", c.id.to_string()),
            details,
            self.crm.now(),
        )
    }

    fn check_config(&self, e: &mut Errors, kind: &str, config: &Value) {
        let Some(plugin) = self.crm.notifier(kind) else {
            e.add(
                "kind",
                format!("no notification plugin of kind {kind:?} is registered"),
            );
            return;
        };
        if !config.is_object() {
            e.add("config", "must be a JSON object");
        } else if let Err(errors) = plugin.check_config(config) {
            for f in errors {
                e.add(f.field, f.message);
            }
        }
    }

    /// The rules on mail recipients (see [`Notifier::email_recipients`]), for a
    /// configuration its plugin accepted.
    async fn check_recipients(&self, e: &mut Errors, kind: &str, config: &Value) -> Result<()> {
        let quota = self.crm.quotas().email_recipients;
        let count = self
            .crm
            .notifier(kind)
            .map_or(0, |p| p.email_recipients(config).len());
        if count > usize::try_from(quota).unwrap_or(usize::MAX) {
            e.add(
                "config.to",
                format!("may hold at most {quota} addresses (the workspace's quota)"),
            );
            return Ok(());
        }
        for address in self.refused_recipients(kind, config).await? {
            e.add(
                "config.to",
                format!(
                    "{address} is not the verified email of a user of this workspace; \
                     mail goes only to the workspace's own users"
                ),
            );
        }
        Ok(())
    }

    /// The addresses a channel of `kind` with `config` would mail that are not the
    /// verified address of an active user of the workspace (checked when the channel
    /// is saved and again before each send).
    pub(crate) async fn refused_recipients(
        &self,
        kind: &str,
        config: &Value,
    ) -> Result<Vec<String>> {
        let Some(plugin) = self.crm.notifier(kind) else {
            return Ok(Vec::new());
        };
        let to = plugin.email_recipients(config);
        if to.is_empty() {
            return Ok(Vec::new());
        }
        let users = self.crm.workspace(self.ws).auth().users().await?;
        Ok(to
            .into_iter()
            .filter(|address| {
                !crate::leads::Email::parse(address).is_ok_and(|a| {
                    users.iter().any(|u| {
                        u.email.key() == a.key()
                            && u.email_verified_at.is_some()
                            && u.disabled_at.is_none()
                    })
                })
            })
            .collect())
    }

    fn check_name(e: &mut Errors, name: &str) -> String {
        let n = name.trim();
        if n.is_empty() || n.chars().count() > 100 || n.contains('\0') {
            e.add("name", "must be 1-100 characters");
        }
        n.to_owned()
    }

    /// Creates a channel after its plugin checked the configuration.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn create(&self, input: NewChannel) -> Result<Channel> {
        let sealer = self.crm.sealer()?;
        let mut e = Errors::default();
        let effective = self.with_defaults(&input.kind, &input.config).await?;
        self.check_config(&mut e, &input.kind, &effective);
        if e.is_empty() {
            self.check_recipients(&mut e, &input.kind, &effective)
                .await?;
        }
        let name = Self::check_name(&mut e, &input.name);
        let event_types = if input.event_types.is_empty() {
            vec![EventType::LeadCreated.as_str().to_owned()]
        } else {
            check_filter(&mut e, &input.event_types)
        };
        e.finish()?;
        let now = self.crm.now();
        let c = Channel {
            id: ChannelId::new(),
            workspace_id: self.ws,
            kind: input.kind,
            name,
            event_types,
            enabled: input.enabled.unwrap_or(true),
            created_at: now,
            updated_at: now,
        };
        let sealed = sealer.seal(input.config.to_string().as_bytes(), &aad(c.id))?;
        let audit = self.audit("notification_channel.created", &c);
        store::channels::create_channel(
            self.crm.pool(),
            &c,
            &sealed,
            self.crm.quotas().notification_channels,
            &audit,
        )
        .await?;
        Ok(c)
    }

    /// The workspace's channels, oldest first.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn list(&self) -> Result<Vec<Channel>> {
        store::channels::list_channels(self.crm.pool(), self.ws).await
    }

    /// One channel.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, channel_id = %id))]
    pub async fn get(&self, id: ChannelId) -> Result<Channel> {
        store::channels::get_channel(self.crm.pool(), self.ws, id)
            .await
            .map(|(c, _)| c)
    }

    /// `config` with what it leaves out taken from the workspace's integration of
    /// the same kind (see [`crate::providers`]): a Telegram channel may give only its
    /// `chat_id` and use the workspace's `bot_token`, a Discord channel nothing but
    /// its name. The channel's own values win. Used when a channel is checked and
    /// at each send, so a changed integration applies to its channels at once.
    pub(crate) async fn with_defaults(&self, kind: &str, config: &Value) -> Result<Value> {
        let mut merged = config.clone();
        let Some(own) = merged.as_object_mut() else {
            return Ok(merged);
        };
        let Some(keys) = self.crm.provider(kind).map(|p| p.channel_defaults()) else {
            return Ok(merged);
        };
        if keys.is_empty() || self.crm.sealer().is_err() {
            return Ok(merged);
        }
        let integration = self
            .crm
            .workspace(self.ws)
            .integrations()
            .settings(kind)
            .await?;
        for (k, v) in integration.into_iter().flatten() {
            if keys.contains(&k.as_str()) {
                own.entry(k).or_insert(Value::String(v));
            }
        }
        Ok(merged)
    }

    /// A channel's configuration, opened (as saved: without the integration's
    /// defaults).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, channel_id = %id))]
    pub async fn config(&self, id: ChannelId) -> Result<Value> {
        let (_, sealed) = store::channels::get_channel(self.crm.pool(), self.ws, id).await?;
        let bytes = self.crm.sealer()?.open(&sealed, &aad(id))?;
        serde_json::from_slice(&bytes).map_err(|_| Error::Unseal)
    }

    /// Changes a channel. The checks run first (a plugin's kind never changes); the
    /// patch then applies to the row as it is under the lock, so two changes at once
    /// both keep their fields.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, channel_id = %id))]
    pub async fn update(&self, id: ChannelId, patch: ChannelPatch) -> Result<Channel> {
        let kind = self.get(id).await?.kind;
        let mut e = Errors::default();
        if let Some(config) = &patch.config {
            let effective = self.with_defaults(&kind, config).await?;
            self.check_config(&mut e, &kind, &effective);
            if e.is_empty() {
                self.check_recipients(&mut e, &kind, &effective).await?;
            }
        }
        let name = patch.name.as_deref().map(|n| Self::check_name(&mut e, n));
        let event_types = patch
            .event_types
            .as_deref()
            .map(|t| check_filter(&mut e, t));
        e.finish()?;
        let sealed_config = match &patch.config {
            Some(config) => Some(
                self.crm
                    .sealer()?
                    .seal(config.to_string().as_bytes(), &aad(id))?,
            ),
            None => None,
        };
        let now = self.crm.now();
        let apply = |mut c: Channel| {
            if let Some(n) = name {
                c.name = n;
            }
            if let Some(t) = event_types {
                c.event_types = t;
            }
            if let Some(en) = patch.enabled {
                c.enabled = en;
            }
            c.updated_at = now;
            let audit = self.audit("notification_channel.updated", &c);
            Ok(ChannelChange {
                channel: c,
                sealed_config,
                audit,
            })
        };
        store::channels::change_channel(self.crm.pool(), self.ws, id, apply).await
    }

    /// Deletes a channel and its pending jobs.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, channel_id = %id))]
    pub async fn delete(&self, id: ChannelId) -> Result<()> {
        let c = self.get(id).await?;
        let audit = self.audit("notification_channel.deleted", &c);
        store::channels::delete_channel(self.crm.pool(), self.ws, id, &audit).await
    }

    /// Queues a test notification for one channel; returns its event id.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, channel_id = %id))]
    pub async fn test(&self, id: ChannelId) -> Result<EventId> {
        self.get(id).await?;
        let now = self.crm.now();
        let event = Event::new(
            self.ws,
            EventType::WebhookTest,
            None,
            json!({ "channel_id": id }),
            now,
        );
        store::jobs::enqueue(
            self.crm.pool(),
            self.ws,
            crate::webhooks::model::JobKind::Notification,
            id.0,
            event.id,
            Some(&event),
            now,
        )
        .await?;
        self.crm.wake_dispatchers();
        Ok(event.id)
    }

    /// Attempts to send to a channel, oldest first: at most `limit` (1–1000) after `after`.
    pub async fn attempts(
        &self,
        id: ChannelId,
        after: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<crate::webhooks::Attempt>> {
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 1000"));
        }
        self.get(id).await?;
        store::jobs::list_attempts(
            self.crm.pool(),
            self.ws,
            crate::webhooks::model::JobKind::Notification,
            id.0,
            None,
            store::Seek::After(after),
            limit,
        )
        .await
    }
}
