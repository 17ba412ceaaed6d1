//! Conversations on the lead timeline: messages sent to a lead and received from
//! one through a provider (WhatsApp), each a `message` activity carrying a
//! [`MessageInfo`].
//!
//! - **Sending** ([`Leads::send_message`]) uses the workspace's integration of the
//!   channel (its `whatsapp` settings: token and number) through the registered
//!   [`crate::providers::Provider`]. Free text only reaches a lead who wrote on that
//!   channel in the last 24 hours (the provider's customer-service window); outside
//!   it only a template goes (`InvalidState` with code `window_closed`, 409). A lead
//!   without a phone is a validation error on `phone`; a message the provider
//!   refuses (an unknown template) is [`crate::Error::Provider`] with its words
//!   (422, `provider_error`), and nothing is recorded. A message the provider
//!   accepted is recorded at once with status `accepted`. Each send spends the
//!   workspace's `messages` rate-limit budget (1,000 a day by default). The window
//!   runs from the time the provider says the lead wrote.
//! - **Statuses** the provider reports later (`sent`, `delivered`, `read`,
//!   `failed`) update that activity ([`Leads::message_status`]), only forward
//!   (a late `delivered` after `read` changes nothing; `failed` is final), so a
//!   redelivered status webhook changes nothing. They emit no event.
//! - **Receiving** ([`Leads::capture_message`]): each inbound message, text or
//!   media (image, document, audio, video, sticker, location), becomes a `message`
//!   activity with its type, caption, MIME type and media id, once per provider
//!   message id.

use chrono::{DateTime, Duration, Utc};

pub use super::model::{MessageDirection, MessageInfo, MessageStatus, MessageTemplate, NewMessage};
use super::{Activity, ActivityKind, Captured, Leads, NewLead};
use crate::error::Errors;
use crate::ids::LeadId;
use crate::{store, Error, Result};

/// Longest text message (WhatsApp's limit), in characters.
pub const TEXT_MAX: usize = 4096;

impl NewMessage {
    /// Checks the shape: exactly one of text and template, within the limits.
    pub(crate) fn check(&self) -> Result<()> {
        let mut e = Errors::default();
        match (&self.text, &self.template) {
            (Some(t), None) => {
                if t.trim().is_empty() || t.chars().count() > TEXT_MAX || t.contains('\0') {
                    e.add("text", format!("must be 1-{TEXT_MAX} characters"));
                }
            }
            (None, Some(t)) => {
                let name_ok = !t.name.is_empty()
                    && t.name.len() <= 512
                    && t.name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !name_ok {
                    e.add(
                        "template.name",
                        "must be 1-512 lower-case letters, digits and _",
                    );
                }
                let lang_ok = (2..=15).contains(&t.language.len())
                    && t.language
                        .bytes()
                        .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-');
                if !lang_ok {
                    e.add("template.language", "must be a language code like en_US");
                }
                if t.parameters.len() > 20 {
                    e.add("template.parameters", "may hold at most 20 values");
                }
                for (i, p) in t.parameters.iter().enumerate() {
                    if p.trim().is_empty() || p.chars().count() > 1024 || p.contains('\0') {
                        e.add(
                            format!("template.parameters[{i}]"),
                            "must be 1-1024 characters",
                        );
                    }
                }
            }
            _ => e.add("text", "give exactly one of text and template"),
        }
        e.finish()
    }

    /// What the timeline shows for it.
    fn description(&self) -> String {
        match (&self.text, &self.template) {
            (Some(t), _) => t.clone(),
            (None, Some(t)) if t.parameters.is_empty() => format!("Template {}", t.name),
            (None, Some(t)) => format!("Template {}: {}", t.name, t.parameters.join(", ")),
            (None, None) => String::new(),
        }
    }
}

/// How long after a lead's last message free text may still reach them.
const WINDOW_HOURS: i64 = 24;

impl Leads {
    /// Sends `message` to lead `id` on `channel` (e.g. `whatsapp`) with the
    /// workspace's integration of that channel, and records it on the timeline (see
    /// the module docs for the rules and errors). Returns the `message` activity.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id, channel))]
    pub async fn send_message(
        &self,
        id: LeadId,
        channel: &str,
        message: NewMessage,
    ) -> Result<Activity> {
        message.check()?;
        let detail = self.get(id).await?;
        let Some(phone) = detail.lead.phone.clone() else {
            return Err(Error::invalid(
                "phone",
                "the lead has no phone number to message",
            ));
        };
        let provider = self
            .crm
            .provider(channel)
            .filter(|p| p.sends_messages())
            .ok_or_else(|| Error::Config(format!("no provider sends messages on {channel:?}")))?;
        if message.text.is_some() {
            let now = self.crm.now();
            let last_heard = detail
                .activities
                .iter()
                .filter(|a| {
                    a.message.as_ref().is_some_and(|m| {
                        m.channel == channel && m.direction == Some(MessageDirection::Inbound)
                    })
                })
                .map(|a| {
                    a.message
                        .as_ref()
                        .and_then(|m| m.sent_at)
                        .unwrap_or(a.created_at)
                })
                .max();
            if last_heard.is_none_or(|at| now - at >= Duration::hours(WINDOW_HOURS)) {
                return Err(Error::InvalidState {
                    code: "window_closed",
                    message: format!(
                        "the lead has not written on {channel} in the last {WINDOW_HOURS} hours: \
                         only a template can reach them"
                    ),
                });
            }
        }
        let settings = self
            .crm
            .workspace(self.ws)
            .integrations()
            .settings(channel)
            .await?
            .ok_or_else(|| Error::Config(format!("the workspace has no {channel} integration")))?;
        // The workspace's budget of messages: each one may cost the operator money,
        // and a number that sends too much is banned by the provider.
        self.crm
            .rate_limiter()
            .enforce("messages", &self.ws.to_string())
            .await?;
        let provider_id = provider
            .send_message(&settings, phone.as_str(), &message)
            .await?;
        let now = self.crm.now();
        let info = MessageInfo {
            channel: channel.to_owned(),
            direction: Some(MessageDirection::Outbound),
            provider_message_id: Some(provider_id),
            kind: if message.text.is_some() {
                "text"
            } else {
                "template"
            }
            .into(),
            status: Some(MessageStatus::Accepted),
            status_at: Some(now),
            ..MessageInfo::default()
        };
        let description: String = message
            .description()
            .chars()
            .take(super::MESSAGE_MAX)
            .collect();
        let ctx = self.ctx()?;
        let r = store::leads::add_message(self.crm.pool(), &ctx, id, info, description).await;
        self.written(r)
    }

    /// Records a message received from a provider (WhatsApp): the lead of
    /// `input` is found or created as [`Leads::capture_inbound`] does (source =
    /// the message's channel), and the `message` activity carries `message` with
    /// `text` (the text or caption) as its description. The provider's message id
    /// makes it idempotent: `None` when it was recorded before.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn capture_message(
        &self,
        input: NewLead,
        message: MessageInfo,
        text: Option<String>,
    ) -> Result<Option<Captured>> {
        let mut e = Errors::default();
        let id = message.provider_message_id.clone().unwrap_or_default();
        for (field, v) in [
            ("channel", message.channel.as_str()),
            ("provider_message_id", id.as_str()),
        ] {
            if v.is_empty() || v.len() > 200 || v.contains('\0') {
                e.add(field, "must be 1-200 bytes");
            }
        }
        e.finish()?;
        let channel = message.channel.clone();
        let message = MessageInfo {
            direction: Some(MessageDirection::Inbound),
            ..message
        };
        self.capture_with(
            input,
            ActivityKind::Message,
            text,
            true,
            Some((&channel, &id)),
            Some(message),
        )
        .await
    }

    /// Applies a status the provider reported for message `provider_message_id`
    /// sent on `channel` at `at` (now when `None`): only forward (see the module
    /// docs). Returns the updated
    /// activity, or `None` when it changed nothing or the message is not one this
    /// workspace sent.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, channel))]
    pub async fn message_status(
        &self,
        channel: &str,
        provider_message_id: &str,
        status: MessageStatus,
        at: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<Option<Activity>> {
        let at = at.unwrap_or_else(|| self.crm.now());
        if provider_message_id.is_empty() || provider_message_id.len() > 200 {
            return Ok(None);
        }
        let error = error.map(|e| e.chars().take(1000).collect());
        store::leads::message_status(
            self.crm.pool(),
            self.ws,
            channel,
            provider_message_id,
            |m| {
                if m.direction != Some(MessageDirection::Outbound) {
                    return false;
                }
                let current = m.status.unwrap_or(MessageStatus::Accepted);
                if current == MessageStatus::Failed || status <= current {
                    return false;
                }
                m.status = Some(status);
                m.status_at = Some(at);
                if status == MessageStatus::Failed {
                    m.error = error;
                }
                true
            },
        )
        .await
    }
}
