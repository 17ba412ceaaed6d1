//! Email over SMTP (lettre, TLS by rustls): notifications to a channel's recipients
//! and the auth service's mails, as the Resend plugin ([`crate::email`] with feature
//! `email`) sends them (the same `email` channel kind and configuration, the same
//! bodies), through any mail server: a relay of the company, a local Postfix, a provider's SMTP endpoint.
//!
//! The server is named by a URL: `smtps://user:password@mail.example.com` (TLS from
//! the first byte, port 465), `smtp://user:password@mail.example.com:587?tls=required`
//! (STARTTLS, refused without it), `smtp://mail.example.com?tls=opportunistic`
//! (STARTTLS when offered) or `smtp://localhost:25` (no TLS: a relay on the same
//! machine; a password without TLS is refused for any other host). Each mail opens a
//! connection of its own (no pool), with a 20 s timeout. A 5xx answer (an unknown
//! mailbox, a refused sender) is permanent, except those about the credentials (530,
//! 534, 535, 538: the operator fixes them, then the queue can go); a 4xx answer or a
//! network error is retried on the dispatcher's schedule.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crm_core::auth::{AuthMail, Mailer};
use crm_core::notify::{Notification, Notifier, Outcome, SendFuture};
use crm_core::webhooks::ssrf::{resolve_checked, IpNet};
use crm_core::{Error, FieldError, SecretString};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use crate::mail::{self, recipients, render};

/// The SMTP mail plugin (`kind` = `email`) and auth mailer.
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    links: mail::Links,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only the sender is shown.
        f.debug_struct("Smtp")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Smtp {
    /// Sends as `from` (e.g. `CRM <crm@example.com>`) through the server of `url`
    /// (see the module). `Config` error for a URL or sender that does not parse
    /// (the message never repeats the URL, which may hold a password).
    pub fn new(url: &SecretString, from: &str) -> crm_core::Result<Self> {
        if sends_password_in_clear(url.expose()) {
            return Err(Error::Config(
                "the SMTP URL has a password but no TLS: use smtps:// or ?tls=required (only a server on this machine may go without)".into(),
            ));
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|_| {
                Error::Config(
                    "the SMTP URL must be smtp://[user:password@]host[:port][?tls=required|opportunistic] or smtps://…".into(),
                )
            })?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        let from = from.parse::<Mailbox>().map_err(|_| {
            Error::Config("the SMTP sender must be an address like CRM <crm@example.com>".into())
        })?;
        Ok(Self {
            transport,
            from,
            links: mail::Links::default(),
        })
    }

    mail::links_builder!();

    /// Sends one mail with an HTML body and its plain-text alternative.
    async fn deliver(&self, to: &[String], subject: &str, html: String, text: String) -> Outcome {
        let mut message = Message::builder().from(self.from.clone()).subject(subject);
        for address in to {
            match address.parse::<Mailbox>() {
                Ok(m) => message = message.to(m),
                Err(_) => return Outcome::Permanent(format!("not a mailbox: {address}")),
            }
        }
        let message = match message.multipart(MultiPart::alternative_plain_html(text, html)) {
            Ok(m) => m,
            Err(e) => return Outcome::Permanent(format!("the mail could not be built: {e}")),
        };
        match self.transport.send(message).await {
            Ok(_) => Outcome::Sent,
            Err(e) if e.is_permanent() && !about_credentials(&e) => Outcome::Permanent(answer(&e)),
            Err(e) => Outcome::Retry {
                after: None,
                reason: answer(&e),
            },
        }
    }
}

/// Whether the URL would send its password over a connection that may stay
/// unencrypted (`smtp://` without `tls=required`) to a host other than this machine.
fn sends_password_in_clear(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false; // lettre refuses it next, with the same neutral message
    };
    let has_password = u.password().is_some() || !u.username().is_empty();
    let tls_required =
        u.scheme() == "smtps" || u.query_pairs().any(|(k, v)| k == "tls" && v == "required");
    // `smtp` is no special scheme to the url crate: an IPv4 host comes as a name.
    let local = match u.host() {
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    has_password && !tls_required && !local
}

/// Whether an SMTP answer is about the credentials or the connection's security
/// (530 authentication or STARTTLS required, 534 and 538 mechanism, 535 bad
/// credentials): fixed by the operator, then every queued mail can go, so these are
/// retried, not permanent.
fn about_credentials(e: &lettre::transport::smtp::Error) -> bool {
    e.status()
        .is_some_and(|c| matches!(c.to_string().as_str(), "530" | "534" | "535" | "538"))
}

/// What went wrong, as the server said it (its code and text) or the kind of
/// failure; never the URL.
fn answer(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("the SMTP server answered {code}: {e}"),
        None if e.is_timeout() => "timeout".into(),
        None => "the SMTP server could not be reached or spoke no SMTP".into(),
    }
}

impl Notifier for Smtp {
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
            self.deliver(&to, &n.title, html, text).await
        })
    }
}

impl Mailer for Smtp {
    fn send(
        &self,
        mail: AuthMail,
    ) -> Pin<Box<dyn Future<Output = crm_core::Result<()>> + Send + '_>> {
        Box::pin(async move {
            let m = mail::auth_message(&mail, &self.links);
            match self
                .deliver(std::slice::from_ref(&m.to), m.subject, m.html, m.text)
                .await
            {
                Outcome::Sent => Ok(()),
                Outcome::Retry { reason, .. } | Outcome::Permanent(reason) => {
                    Err(Error::Integration(reason))
                }
            }
        })
    }
}

/// The `smtp` integration provider: a workspace sends its auth mails through its
/// own SMTP server. Settings: `url` (secret: it holds the password; the forms of
/// [`Smtp::new`]) and `from`. Saving connects and signs in (`EHLO`, `STARTTLS` or
/// TLS as the URL says, `AUTH`): a URL that does not parse, a host that is not at a
/// public address (unless allowed), a password over a connection that may stay
/// plain, a server that cannot be reached or refuses the credentials are errors on
/// `settings.url`, a bad sender one on `settings.from`. Only owners save it (it
/// sends the workspace's password-reset mails).
#[derive(Debug, Clone, Default)]
pub struct SmtpIntegration {
    links: mail::Links,
    allow: Vec<IpNet>,
}

impl SmtpIntegration {
    /// The provider. A workspace's SMTP server must be at a public address (a
    /// tenant must not make the server talk to the operator's internal hosts or its
    /// local mail relay); see [`with_allowed_networks`](Self::with_allowed_networks).
    pub fn new() -> Self {
        Self::default()
    }

    /// Networks a workspace's SMTP server may be in although they are not public
    /// (tests, an internal relay the operator trusts every tenant with), as the
    /// `Crm` builder's `webhook_allow_networks`.
    pub fn with_allowed_networks(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.allow.extend(networks);
        self
    }

    mail::links_builder!();

    fn smtp(&self, settings: &crm_core::providers::Settings) -> crm_core::Result<Smtp> {
        let url = SecretString::from(settings.get("url").cloned().unwrap_or_default());
        let from = mail::check_sender(settings)?;
        let mut smtp = Smtp::new(&url, from).map_err(|e| match e {
            Error::Config(message) => crate::refused("url", message),
            e => e,
        })?;
        smtp.links = self.links.clone();
        Ok(smtp)
    }
}

impl crm_core::providers::Provider for SmtpIntegration {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    fn fields(&self) -> &'static [crm_core::providers::SettingField] {
        use crm_core::providers::SettingField;
        const FIELDS: [SettingField; 2] =
            [SettingField::secret("url"), SettingField::required("from")];
        &FIELDS
    }

    fn check<'a>(
        &'a self,
        settings: &'a crm_core::providers::Settings,
    ) -> crm_core::providers::CheckFuture<'a> {
        Box::pin(async move {
            let smtp = self.smtp(settings)?;
            // Where the server is, before any connection: a public address, or one
            // the operator allowed. (Each send connects by name again: a name that
            // later resolves elsewhere is the operator's DNS, not this check.)
            let url = url::Url::parse(crm_core::providers::setting(settings, "url"))
                .map_err(|_| crate::refused("url", "is not an SMTP URL"))?;
            resolve_checked(&url, &self.allow)
                .await
                .map_err(|m| crate::refused("url", format!("the server {m}")))?;
            match smtp.transport.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err(crate::refused(
                    "url",
                    "the SMTP server did not answer as one",
                )),
                Err(e) => Err(crate::refused("url", answer(&e))),
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
        self.smtp(settings)
            .ok()
            .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn Mailer>)
    }
}
