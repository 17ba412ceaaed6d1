//! Email through Resend: notifications to a channel's recipients, and the auth
//! service's mails (password reset, email verification) as its [`Mailer`].
//!
//! Each mail is `POST /emails` with the API key as a Bearer token, a `User-Agent`, an
//! HTML body and a plain-text alternative (every value HTML-escaped in the HTML), and
//! an `Idempotency-Key`: for a notification it is derived from the event and the
//! channel, so a retry after a timeout never sends twice; for an auth mail from a hash
//! of the token. 429 is retried after `Retry-After`; 5xx and network errors on the
//! dispatcher's schedule; other 4xx are permanent (Resend's message is kept).
//!
//! Channel configuration: `{"to": ["sales@example.com", …]}` (1–50 addresses). The API
//! key and the sender are the plugin's: `Resend::new(api_key, "CRM <crm@example.com>")`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crm_core::auth::{AuthMail, Mailer};
use crm_core::notify::{Notification, Notifier, Outcome, SendFuture};
use crm_core::{Error, FieldError, SecretString};

use crate::mail::{self, recipients};
pub use crate::mail::{escape, render};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Resend's API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.resend.com";

/// The email plugin (`kind` = `email`) and auth mailer.
#[derive(Clone)]
pub struct Resend {
    base_url: String,
    client: reqwest::Client,
    api_key: SecretString,
    from: String,
    links: mail::Links,
}

impl std::fmt::Debug for Resend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resend")
            .field("base_url", &self.base_url)
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Resend {
    /// Sends as `from` (e.g. `CRM <crm@example.com>`) with this API key.
    pub fn new(api_key: impl Into<String>, from: impl Into<String>) -> Self {
        let client = crate::http_client(10);
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            client,
            api_key: SecretString::from(api_key.into()),
            from: from.into(),
            links: mail::Links::default(),
        }
    }

    crate::http_builders!();

    mail::links_builder!();

    async fn post(&self, body: Value, idempotency_key: &str) -> Outcome {
        let resp = self
            .client
            .post(format!("{}/emails", self.base_url))
            .bearer_auth(self.api_key.expose())
            .header("Idempotency-Key", idempotency_key)
            .json(&body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return crate::unanswered(&e),
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Sent;
        }
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(86_400)));
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        let message = answer["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        if status.as_u16() == 429 {
            return Outcome::Retry {
                after,
                reason: format!("429: {message}"),
            };
        }
        if status.is_server_error() {
            return Outcome::Retry {
                after: None,
                reason: format!("{status}: {message}"),
            };
        }
        Outcome::Permanent(format!("{status}: {message}"))
    }
}

impl Notifier for Resend {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn check_config(&self, config: &Value) -> Result<(), Vec<FieldError>> {
        mail::check_config(config)
    }

    fn email_recipients(&self, config: &Value) -> Vec<String> {
        recipients(config).unwrap_or_default()
    }

    fn send<'a>(&'a self, config: &'a Value, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            let to = match mail::send_to(config) {
                Ok(to) => to,
                Err(outcome) => return outcome,
            };
            let (html, text) = render(n);
            let body = json!({ "from": self.from, "to": to, "subject": n.title, "html": html, "text": text });
            let key = format!("crm-notification/{}/{}", n.event_id, n.channel_id);
            self.post(body, &key).await
        })
    }
}

impl Mailer for Resend {
    fn send(
        &self,
        mail: AuthMail,
    ) -> Pin<Box<dyn Future<Output = crm_core::Result<()>> + Send + '_>> {
        Box::pin(async move {
            let m = mail::auth_message(&mail, &self.links);
            let body = json!({ "from": self.from, "to": [m.to], "subject": m.subject, "html": m.html, "text": m.text });
            let (AuthMail::PasswordReset { token, .. } | AuthMail::EmailVerification { token, .. }) =
                &mail;
            let digest = Sha256::digest(token.expose().as_bytes());
            let key: String = format!("crm-auth/{:x}", digest).chars().take(64).collect();
            match self.post(body, &key).await {
                Outcome::Sent => Ok(()),
                Outcome::Retry { reason, .. } | Outcome::Permanent(reason) => {
                    Err(Error::Integration(reason))
                }
            }
        })
    }
}

/// The `resend` integration provider: a workspace sends its auth mails through its
/// own Resend account. Settings: `api_key` (secret) and `from` (`CRM
/// <crm@example.com>`). Saving asks Resend with the key (`GET /domains`): a key it
/// refuses is an error on `settings.api_key`; a sending-only key (Resend answers
/// `restricted_api_key`) is accepted, as it can send.
#[derive(Debug, Clone)]
pub struct ResendIntegration {
    base_url: String,
    client: reqwest::Client,
    links: mail::Links,
}

impl Default for ResendIntegration {
    fn default() -> Self {
        Self::new()
    }
}

impl ResendIntegration {
    /// Talks to Resend with a client that has a 10 s timeout.
    pub fn new() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            client: crate::http_client(10),
            links: mail::Links::default(),
        }
    }

    crate::http_builders!();

    mail::links_builder!();
}

impl crm_core::providers::Provider for ResendIntegration {
    fn kind(&self) -> &'static str {
        "resend"
    }

    fn fields(&self) -> &'static [crm_core::providers::SettingField] {
        use crm_core::providers::SettingField;
        const FIELDS: [SettingField; 2] = [
            SettingField::secret("api_key"),
            SettingField::required("from"),
        ];
        &FIELDS
    }

    fn check<'a>(
        &'a self,
        settings: &'a crm_core::providers::Settings,
    ) -> crm_core::providers::CheckFuture<'a> {
        Box::pin(async move {
            mail::check_sender(settings)?;
            let key = crm_core::providers::setting(settings, "api_key");
            let request = self
                .client
                .get(format!("{}/domains", self.base_url))
                .bearer_auth(key);
            match crate::probe(request, "Resend").await? {
                (200..=299, _) => Ok(()),
                (401 | 403, answer) if answer["name"] == "restricted_api_key" => Ok(()),
                (400 | 401 | 403, _) => Err(crate::refused("api_key", "was refused by Resend")),
                (s, _) => Err(crate::unexpected("Resend", s)),
            }
        })
    }

    fn sends_mail(&self) -> bool {
        true
    }

    fn mailer(
        &self,
        settings: &crm_core::providers::Settings,
    ) -> Option<std::sync::Arc<dyn Mailer>> {
        let mut resend = Resend::new(
            settings.get("api_key")?.clone(),
            settings.get("from")?.clone(),
        )
        .with_base_url(self.base_url.clone())
        .with_client(self.client.clone());
        resend.links = self.links.clone();
        Some(std::sync::Arc::new(resend))
    }
}
