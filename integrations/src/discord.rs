//! Discord: a channel posts each notification to a Discord webhook ("execute webhook")
//! as one embed: the title, the lead's fields, a colour by status and the event's time.
//!
//! Channel configuration: `{"webhook_url": "https://discord.com/api/webhooks/<id>/<token>"}`.
//! The URL must start with the plugin's base URL (Discord's by default; tests point it
//! at a local server), so a channel cannot be used to post anywhere else.
//!
//! Discord's limits are kept by truncating with an ellipsis: title 256, field name 256,
//! field value 1,024, 25 fields, 6,000 characters in all. 429 is retried after its
//! `retry_after` (seconds, in the body); 5xx and network errors are retried on the
//! dispatcher's schedule; any other 4xx (a deleted webhook, a bad token) is permanent.

use std::time::Duration;

use crm_core::leads::LeadStatus;
use crm_core::notify::{Notification, Notifier, Outcome, SendFuture};
use crm_core::FieldError;
use serde_json::{json, Value};

/// Discord's webhook URL prefix.
pub const DEFAULT_BASE_URL: &str = "https://discord.com/api/webhooks/";

const TITLE_MAX: usize = 256;
const FIELD_NAME_MAX: usize = 256;
const FIELD_VALUE_MAX: usize = 1024;
const FIELDS_MAX: usize = 25;
const EMBED_TOTAL_MAX: usize = 6000;

/// The Discord plugin (`kind` = `discord`).
#[derive(Debug, Clone)]
pub struct Discord {
    base_url: String,
    client: reqwest::Client,
}

impl Default for Discord {
    fn default() -> Self {
        Self::new()
    }
}

impl Discord {
    /// Posts to Discord with a client that has a 10 s timeout.
    pub fn new() -> Self {
        let client = crate::http_client(10);
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            client,
        }
    }

    /// Accepts webhook URLs under `base_url` instead of Discord's (for tests and proxies).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Uses this HTTP client.
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }
}

impl Discord {
    /// Whether `url` is a webhook URL under the base URL: the base, then a path
    /// segment boundary (so `https://proxy` does not accept `https://proxy.evil`),
    /// then more.
    fn accepts(&self, url: &str) -> bool {
        url.strip_prefix(self.base_url.as_str())
            .is_some_and(|rest| {
                !rest.is_empty() && (self.base_url.ends_with('/') || rest.starts_with('/'))
            })
    }
}

/// `s` cut to `max` characters, the last one an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The embed colour of a status.
pub fn color(status: Option<LeadStatus>) -> u32 {
    match status {
        Some(LeadStatus::New) => 0x3498db,
        Some(LeadStatus::Contacted) => 0xf1c40f,
        Some(LeadStatus::Qualified) => 0x9b59b6,
        Some(LeadStatus::Proposal) => 0xe67e22,
        Some(LeadStatus::Won) => 0x2ecc71,
        Some(LeadStatus::Lost) => 0xe74c3c,
        None => 0x95a5a6,
    }
}

/// The execute-webhook body for a notification, within Discord's limits.
pub fn body(n: &Notification) -> Value {
    let title = truncate(&n.title, TITLE_MAX);
    let mut total = title.chars().count();
    let mut fields = Vec::new();
    for (name, value) in n.fields.iter().take(FIELDS_MAX) {
        let name = truncate(name, FIELD_NAME_MAX);
        let room = EMBED_TOTAL_MAX.saturating_sub(total + name.chars().count());
        if room < 2 {
            break;
        }
        let value = truncate(
            if value.is_empty() { "-" } else { value },
            FIELD_VALUE_MAX.min(room),
        );
        total += name.chars().count() + value.chars().count();
        let inline = value.chars().count() <= 40;
        fields.push(json!({ "name": name, "value": value, "inline": inline }));
    }
    json!({
        "embeds": [{
            "title": title,
            "color": color(n.status),
            "fields": fields,
            "timestamp": n.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }],
        "allowed_mentions": { "parse": [] },
    })
}

impl Notifier for Discord {
    fn kind(&self) -> &'static str {
        "discord"
    }

    fn check_config(&self, config: &Value) -> Result<(), Vec<FieldError>> {
        match config["webhook_url"].as_str() {
            Some(u) if self.accepts(u) => Ok(()),
            Some(_) => Err(vec![FieldError::new(
                "config.webhook_url",
                format!(
                    "must be a Discord webhook URL starting with {}",
                    self.base_url
                ),
            )]),
            None => Err(vec![FieldError::new("config.webhook_url", "is required")]),
        }
    }

    fn send<'a>(&'a self, config: &'a Value, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            let Some(url) = config["webhook_url"]
                .as_str()
                .filter(|u| u.starts_with(&self.base_url))
            else {
                return Outcome::Permanent("the channel has no valid webhook_url".into());
            };
            let resp = match self
                .client
                .post(url)
                .query(&[("wait", "true")])
                .json(&body(n))
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return crate::unanswered(&e),
            };
            let status = resp.status();
            if status.is_success() {
                return Outcome::Sent;
            }
            let text = resp.text().await.unwrap_or_default();
            if status.as_u16() == 429 {
                let after = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["retry_after"].as_f64())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(86_400.0)));
                return Outcome::Retry {
                    after,
                    reason: "429 rate limited".into(),
                };
            }
            if status.is_server_error() {
                return Outcome::Retry {
                    after: None,
                    reason: format!("{status}"),
                };
            }
            Outcome::Permanent(format!("{status}: {}", truncate(&text, 200)))
        })
    }
}

/// The `discord` integration: a workspace's default Discord webhook. Settings:
/// `webhook_url` (secret: whoever has it can post). Saving reads the webhook (`GET`
/// on its URL): one Discord does not know is an error on `settings.webhook_url`.
impl crm_core::providers::Provider for Discord {
    fn kind(&self) -> &'static str {
        "discord"
    }

    fn fields(&self) -> &'static [crm_core::providers::SettingField] {
        use crm_core::providers::SettingField;
        const FIELDS: [SettingField; 1] = [SettingField::secret("webhook_url")];
        &FIELDS
    }

    fn channel_defaults(&self) -> &'static [&'static str] {
        &["webhook_url"]
    }

    fn check<'a>(
        &'a self,
        settings: &'a crm_core::providers::Settings,
    ) -> crm_core::providers::CheckFuture<'a> {
        Box::pin(async move {
            let url = crm_core::providers::setting(settings, "webhook_url");
            if !self.accepts(url) {
                return Err(crate::refused(
                    "webhook_url",
                    format!(
                        "must be a Discord webhook URL starting with {}",
                        self.base_url
                    ),
                ));
            }
            match crate::probe(self.client.get(url), "Discord").await? {
                (200..=299, _) => Ok(()),
                (401 | 403 | 404, _) => Err(crate::refused(
                    "webhook_url",
                    "is not a webhook Discord knows",
                )),
                (s, _) => Err(crate::unexpected("Discord", s)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_limits() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ñññññ", 2), "ñ…");
    }
}
