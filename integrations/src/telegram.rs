//! Telegram: a channel sends each notification with the Bot API's `sendMessage`, as
//! HTML (`parse_mode: HTML`): the title in bold, then one `<b>Label:</b> value` line per
//! field. Every user-supplied value is escaped (`&`, `<`, `>`), and the message is kept
//! under Telegram's 4,096 characters by dropping whole lines (never cutting a tag or an
//! entity in half) and ending with an ellipsis.
//!
//! Channel configuration: `{"bot_token": "123456:ABC…", "chat_id": "-1001234567890"}`
//! (`chat_id` may also be a number or an `@channelusername`). 429 is retried after
//! `parameters.retry_after`; 5xx and network errors on the dispatcher's schedule; any
//! other 4xx (chat not found, bot blocked) is permanent.

use std::time::Duration;

use crm_core::notify::{Notification, Notifier, Outcome, SendFuture};
use crm_core::FieldError;
use serde_json::{json, Value};

/// The Bot API's base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.telegram.org";
/// Longest message Telegram accepts, in characters.
pub const MESSAGE_MAX: usize = 4096;
const VALUE_MAX: usize = 1000;

/// The Telegram plugin (`kind` = `telegram`).
#[derive(Debug, Clone)]
pub struct Telegram {
    base_url: String,
    client: reqwest::Client,
}

impl Default for Telegram {
    fn default() -> Self {
        Self::new()
    }
}

impl Telegram {
    /// Sends through Telegram's Bot API with a client that has a 10 s timeout.
    pub fn new() -> Self {
        let client = crate::http_client(10);
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            client,
        }
    }

    crate::http_builders!();
}

/// Escapes `&`, `<` and `>` for Telegram's HTML mode.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// The HTML text of a notification, at most 4,096 characters.
pub fn text(n: &Notification) -> String {
    let mut out = format!("<b>{}</b>", escape(&clip(&n.title, 200)));
    for (label, value) in &n.fields {
        let line = format!(
            "\n<b>{}:</b> {}",
            escape(label),
            escape(&clip(value, VALUE_MAX))
        );
        if out.chars().count() + line.chars().count() > MESSAGE_MAX - 2 {
            out.push_str("\n…");
            break;
        }
        out.push_str(&line);
    }
    out
}

fn chat_id(config: &Value) -> Option<Value> {
    match &config["chat_id"] {
        Value::String(s) if !s.trim().is_empty() => Some(Value::String(s.trim().to_owned())),
        Value::Number(n) => Some(Value::Number(n.clone())),
        _ => None,
    }
}

fn token(config: &Value) -> Option<&str> {
    config["bot_token"]
        .as_str()
        .filter(|t| {
            t.split_once(':').is_some_and(|(id, rest)| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
            })
        })
        .filter(|t| {
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_:-".contains(&b))
        })
}

impl Notifier for Telegram {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    fn check_config(&self, config: &Value) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if token(config).is_none() {
            errors.push(FieldError::new(
                "config.bot_token",
                "must be a bot token like 123456:ABC-DEF",
            ));
        }
        if chat_id(config).is_none() {
            errors.push(FieldError::new(
                "config.chat_id",
                "is required (a chat id or @channelusername)",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn send<'a>(&'a self, config: &'a Value, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            let (Some(token), Some(chat)) = (token(config), chat_id(config)) else {
                return Outcome::Permanent("the channel has no valid bot_token and chat_id".into());
            };
            let url = format!("{}/bot{token}/sendMessage", self.base_url);
            let body = json!({
                "chat_id": chat,
                "text": text(n),
                "parse_mode": "HTML",
                "disable_web_page_preview": true,
            });
            let resp = match self.client.post(&url).json(&body).send().await {
                Ok(r) => r,
                Err(e) => return crate::unanswered(&e),
            };
            let status = resp.status();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            if status.is_success() && answer["ok"] == true {
                return Outcome::Sent;
            }
            let description = answer["description"]
                .as_str()
                .unwrap_or("no description")
                .to_owned();
            if status.as_u16() == 429 {
                let after = answer["parameters"]["retry_after"]
                    .as_u64()
                    .map(|s| Duration::from_secs(s.min(86_400)));
                return Outcome::Retry {
                    after,
                    reason: format!("429: {description}"),
                };
            }
            if status.is_server_error() || status.is_success() {
                return Outcome::Retry {
                    after: None,
                    reason: format!("{status}: {description}"),
                };
            }
            Outcome::Permanent(format!("{status}: {description}"))
        })
    }
}

/// The `telegram` integration: a workspace's bot. Settings: `bot_token` (secret)
/// and `chat_id` (optional, a default chat). Saving asks the Bot API who the bot is
/// (`getMe`): a token Telegram refuses is an error on `settings.bot_token`.
impl crm_core::providers::Provider for Telegram {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    fn fields(&self) -> &'static [crm_core::providers::SettingField] {
        use crm_core::providers::SettingField;
        const FIELDS: [SettingField; 2] = [
            SettingField::secret("bot_token"),
            SettingField::optional("chat_id"),
        ];
        &FIELDS
    }

    fn channel_defaults(&self) -> &'static [&'static str] {
        &["bot_token", "chat_id"]
    }

    fn check<'a>(
        &'a self,
        settings: &'a crm_core::providers::Settings,
    ) -> crm_core::providers::CheckFuture<'a> {
        Box::pin(async move {
            let config = serde_json::json!({ "bot_token": settings.get("bot_token") });
            // The notifier's rule: digits, a colon, URL-safe characters; nothing
            // else may reach the path.
            let Some(token) = token(&config) else {
                return Err(crate::refused("bot_token", "is not a bot token"));
            };
            let request = self
                .client
                .get(format!("{}/bot{token}/getMe", self.base_url));
            match crate::probe(request, "Telegram").await? {
                (200..=299, _) => Ok(()),
                (401 | 404, _) => Err(crate::refused("bot_token", "was refused by Telegram")),
                (s, _) => Err(crate::unexpected("Telegram", s)),
            }
        })
    }
}
