//! What the mail plugins share (Resend over HTTP, SMTP): the HTML and text of a
//! notification and of an auth mail, HTML escaping, and the recipients of a
//! channel's configuration (`{"to": ["sales@example.com", …]}`, 1–50 addresses).

use crm_core::auth::AuthMail;
use crm_core::leads::Email;
use crm_core::notify::{Notification, Outcome};
use crm_core::FieldError;
use serde_json::Value;

/// The most recipients a channel may name.
const RECIPIENTS_MAX: usize = 50;

/// Where auth mails link to: templates with `{token}`, e.g.
/// `https://crm.example.com/auth/reset-password?token={token}`. Without one the mail
/// carries the token as a code to paste.
#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    pub(crate) reset: Option<String>,
    pub(crate) verify: Option<String>,
}

/// `with_links` for a mail plugin with a `links` field.
macro_rules! links_builder {
    () => {
        /// Links for auth mails; `{token}` is replaced by the token, e.g.
        /// `https://crm.example.com/auth/reset-password?token={token}`. Without them
        /// the mail carries the token as a code to paste.
        pub fn with_links(
            mut self,
            reset_url: impl Into<String>,
            verify_url: impl Into<String>,
        ) -> Self {
            self.links = $crate::mail::Links {
                reset: Some(reset_url.into()),
                verify: Some(verify_url.into()),
            };
            self
        }
    };
}
pub(crate) use links_builder;

/// An auth mail, ready for a transport.
pub(crate) struct AuthMessage {
    pub(crate) to: String,
    pub(crate) subject: &'static str,
    pub(crate) html: String,
    pub(crate) text: String,
}

/// The subject and bodies of an auth mail: a greeting, the link (or the token as a
/// code) and when it stops working.
pub(crate) fn auth_message(mail: &AuthMail, links: &Links) -> AuthMessage {
    let (user, token, expires_at, subject, link, what) = match mail {
        AuthMail::PasswordReset {
            user,
            token,
            expires_at,
        } => (
            user,
            token,
            expires_at,
            "Reset your password",
            &links.reset,
            "reset your password",
        ),
        AuthMail::EmailVerification {
            user,
            token,
            expires_at,
        } => (
            user,
            token,
            expires_at,
            "Verify your email",
            &links.verify,
            "verify your email",
        ),
    };
    let until = expires_at.format("%Y-%m-%d %H:%M UTC");
    let (html_action, text_action) = match link {
        Some(template) => {
            let url = template.replace("{token}", token.expose());
            (format!("<p><a href=\"{0}\">{0}</a></p>", escape(&url)), url)
        }
        None => (
            format!("<p><code>{}</code></p>", escape(token.expose())),
            token.expose().to_owned(),
        ),
    };
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Hello {},</p><p>To {what}, use this before {until}:</p>{html_action}<p>If you did not ask for this, ignore this mail.</p></body></html>",
        escape(&user.display_name)
    );
    let text = format!(
        "Hello {},\n\nTo {what}, use this before {until}:\n\n{text_action}\n\nIf you did not ask for this, ignore this mail.\n",
        user.display_name
    );
    AuthMessage {
        to: user.email.as_str().to_owned(),
        subject,
        html,
        text,
    }
}

/// Escapes text for HTML (`&`, `<`, `>`, `"`, `'`).
#[cfg_attr(not(feature = "email"), allow(unreachable_pub))]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML and plain-text bodies of a notification.
#[cfg_attr(not(feature = "email"), allow(unreachable_pub))]
pub fn render(n: &Notification) -> (String, String) {
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><h2>{}</h2><table>",
        escape(&n.title)
    );
    let mut text = format!("{}\n\n", n.title);
    for (label, value) in &n.fields {
        html.push_str(&format!(
            "<tr><th align=\"left\" style=\"padding-right:12px\">{}</th><td>{}</td></tr>",
            escape(label),
            escape(value).replace('\n', "<br>")
        ));
        text.push_str(&format!("{label}: {value}\n"));
    }
    html.push_str("</table></body></html>");
    (html, text)
}

pub(crate) fn recipients(config: &Value) -> Result<Vec<String>, String> {
    let list = config["to"]
        .as_array()
        .ok_or("must be a list of email addresses")?;
    if list.is_empty() || list.len() > RECIPIENTS_MAX {
        return Err(format!("must hold 1 to {RECIPIENTS_MAX} addresses"));
    }
    list.iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| Email::parse(s).ok())
                .map(|e| e.as_str().to_owned())
                .ok_or("holds an address that is not valid".to_string())
        })
        .collect()
}

/// `Notifier::check_config` of the email notifiers: the channel names 1–50 valid
/// recipients in `to`.
/// Whether `from` is a sender a provider accepts: `crm@example.com` or
/// `CRM <crm@example.com>`.
fn valid_sender(from: &str) -> bool {
    let address = match (from.rfind('<'), from.strip_suffix('>')) {
        (Some(i), Some(rest)) => rest.get(i + 1..).unwrap_or(""),
        _ => from,
    };
    crm_core::leads::Email::parse(address).is_ok()
}

/// The `from` setting of a mail integration, refused unless [`valid_sender`].
pub(crate) fn check_sender(settings: &crm_core::providers::Settings) -> crm_core::Result<&str> {
    let from = crm_core::providers::setting(settings, "from");
    if valid_sender(from) {
        Ok(from)
    } else {
        Err(crate::refused(
            "from",
            "must be an address like CRM <crm@example.com>",
        ))
    }
}

pub(crate) fn check_config(config: &Value) -> Result<(), Vec<FieldError>> {
    recipients(config)
        .map(|_| ())
        .map_err(|m| vec![FieldError::new("config.to", m)])
}

/// The recipients of a send, or the permanent outcome of a configuration that names
/// none (saved before the rule, or edited in the database).
pub(crate) fn send_to(config: &Value) -> Result<Vec<String>, Outcome> {
    recipients(config).map_err(|m| Outcome::Permanent(format!("config.to {m}")))
}
