//! crm-integrations: provider plugins for crm, one cargo feature each (`discord`,
//! `telegram`, `email` (Resend), `smtp`, `whatsapp`, `calcom`, `openai`, `s3`, `full`). Each implements a
//! trait that crm-core defines and is registered on the `Crm` builder, e.g.
//! `Crm::builder().notifier(crm_integrations::discord::Discord::new())`, or is a plain
//! function over (headers, raw body) for inbound sources (WhatsApp, Cal.com), so the
//! HTTP router and the Python bindings can both call it.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The outcome of a request that got no response. reqwest's own error text is not
/// used: it carries the URL, which for some providers holds a token.
#[cfg(any(
    feature = "discord",
    feature = "telegram",
    feature = "email",
    feature = "whatsapp"
))]
fn unanswered(e: &reqwest::Error) -> crm_core::notify::Outcome {
    let reason = if e.is_timeout() {
        "timeout"
    } else {
        "network error"
    };
    crm_core::notify::Outcome::Retry {
        after: None,
        reason: reason.into(),
    }
}

/// `with_base_url` and `with_client` for a plugin with `base_url` and `client` fields.
#[cfg(any(
    feature = "telegram",
    feature = "email",
    feature = "whatsapp",
    feature = "openai"
))]
macro_rules! http_builders {
    () => {
        /// Talks to another server (tests, a proxy, a compatible gateway).
        pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
            self.base_url = base_url.into().trim_end_matches('/').to_owned();
            self
        }

        /// Uses this HTTP client.
        pub fn with_client(mut self, client: reqwest::Client) -> Self {
            self.client = client;
            self
        }
    };
}
#[cfg(any(
    feature = "telegram",
    feature = "email",
    feature = "whatsapp",
    feature = "openai"
))]
use http_builders;

/// The HTTP client every plugin starts with: a timeout, no redirects (a provider
/// that redirects is misconfigured, and following could leak a token), crm's
/// user agent.
#[cfg(any(
    feature = "discord",
    feature = "telegram",
    feature = "email",
    feature = "whatsapp",
    feature = "openai"
))]
fn http_client(timeout_secs: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("crm/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// A setting the provider refused, as a validation error naming `settings.<field>`.
#[cfg(any(
    feature = "discord",
    feature = "telegram",
    feature = "email",
    feature = "smtp",
    feature = "whatsapp",
    feature = "calcom",
    feature = "openai"
))]
fn refused(field: &str, message: impl Into<String>) -> crm_core::Error {
    crm_core::Error::Validation {
        errors: vec![crm_core::FieldError::new(
            format!("settings.{field}"),
            message,
        )],
    }
}

/// Asks a provider about credentials when they are saved: the answer's status and
/// JSON body (`null` when it is not JSON), or an `Integration` error naming
/// `provider` when it could not be asked (never the URL, which may hold a token).
#[cfg(any(
    feature = "discord",
    feature = "telegram",
    feature = "email",
    feature = "whatsapp",
    feature = "openai"
))]
async fn probe(
    request: reqwest::RequestBuilder,
    provider: &str,
) -> crm_core::Result<(u16, serde_json::Value)> {
    let resp = request.send().await.map_err(|e| {
        crm_core::Error::Integration(if e.is_timeout() {
            format!("{provider} timed out while the settings were checked")
        } else {
            format!("{provider} could not be reached to check the settings")
        })
    })?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(serde_json::Value::Null);
    Ok((status, body))
}

/// The error for an answer a check did not expect (a 5xx, a 429).
#[cfg(any(
    feature = "discord",
    feature = "telegram",
    feature = "email",
    feature = "whatsapp",
    feature = "openai"
))]
fn unexpected(provider: &str, status: u16) -> crm_core::Error {
    crm_core::Error::Integration(format!(
        "{provider} answered {status} while the settings were checked; try again"
    ))
}

#[cfg(feature = "discord")]
#[cfg_attr(docsrs, doc(cfg(feature = "discord")))]
pub mod discord;

#[cfg(feature = "telegram")]
#[cfg_attr(docsrs, doc(cfg(feature = "telegram")))]
pub mod telegram;

#[cfg(any(feature = "email", feature = "smtp"))]
mod mail;

#[cfg(feature = "email")]
#[cfg_attr(docsrs, doc(cfg(feature = "email")))]
pub mod email;

#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub mod smtp;

#[cfg(feature = "whatsapp")]
#[cfg_attr(docsrs, doc(cfg(feature = "whatsapp")))]
pub mod whatsapp;

#[cfg(feature = "calcom")]
#[cfg_attr(docsrs, doc(cfg(feature = "calcom")))]
pub mod calcom;

#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub mod openai;

#[cfg(feature = "s3")]
#[cfg_attr(docsrs, doc(cfg(feature = "s3")))]
pub mod s3;
