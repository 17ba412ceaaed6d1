//! WhatsApp Cloud API: outbound notifications, and inbound messages as leads.
//!
//! **Outbound** (`kind` = `whatsapp`): a text message to the channel's recipient, or a
//! template message when the channel names one — free text only reaches a person who
//! wrote to the business in the last 24 hours; Meta's error 131047 says so and is
//! reported as a permanent, explained failure. Configuration:
//! `{"access_token", "phone_number_id", "to": "+34600000000", "template": {"name", "language"}?}`.
//!
//! **Inbound**: [`handshake`] answers Meta's `GET` verification (`hub.mode`,
//! `hub.verify_token`, `hub.challenge`); [`receive`] checks `X-Hub-Signature-256` over
//! the raw body, then turns each text message into a lead captured by phone (created
//! if new, source `whatsapp`) with a `message` activity. A redelivered message (same
//! `wamid`) changes nothing; status updates are accepted and ignored.

use crm_core::leads::messages::{MessageInfo, MessageStatus, NewMessage};
use crm_core::leads::{Leads, NewLead};
use crm_core::notify::{Notification, Notifier, Outcome, SendFuture};
use crm_core::webhooks::signing::{verify_whatsapp, VerifyError};
use crm_core::{Error, FieldError, LeadId};
use serde_json::{json, Value};

/// The Graph API base URL.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com/v21.0";
const TEXT_MAX: usize = 4096;

/// The WhatsApp plugin.
#[derive(Debug, Clone)]
pub struct WhatsApp {
    base_url: String,
    client: reqwest::Client,
}

impl Default for WhatsApp {
    fn default() -> Self {
        Self::new()
    }
}

impl WhatsApp {
    /// Sends through the Graph API with a client that has a 10 s timeout.
    pub fn new() -> Self {
        let client = crate::http_client(10);
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            client,
        }
    }

    crate::http_builders!();

    /// Whether a media URL Graph gave may receive the access token: `https` to
    /// one of Meta's media hosts, or the host (and scheme) of the Graph API this
    /// plugin talks to (a test stand-in, a proxy).
    fn is_media_host(&self, url: &reqwest::Url) -> bool {
        let graph = reqwest::Url::parse(&self.base_url).ok();
        let same_as_graph = graph.is_some_and(|g| {
            g.scheme() == url.scheme()
                && g.host_str() == url.host_str()
                && g.port_or_known_default() == url.port_or_known_default()
        });
        let meta = url.scheme() == "https"
            && url.host_str().is_some_and(|h| {
                [".fbsbx.com", ".facebook.com", ".whatsapp.net", ".fbcdn.net"]
                    .iter()
                    .any(|d| h.ends_with(d))
            });
        same_as_graph || meta
    }
}

fn text_body(n: &Notification) -> String {
    let mut out = n.title.clone();
    for (label, value) in &n.fields {
        out.push_str(&format!("\n{label}: {value}"));
    }
    if out.chars().count() > TEXT_MAX {
        out = out.chars().take(TEXT_MAX - 1).collect::<String>() + "…";
    }
    out
}

/// Whether `id` is a phone number id: digits only (it goes into the URL path).
fn is_number_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
}

fn str_field<'a>(config: &'a Value, key: &str) -> Option<&'a str> {
    config[key].as_str().filter(|s| !s.trim().is_empty())
}

impl Notifier for WhatsApp {
    fn kind(&self) -> &'static str {
        "whatsapp"
    }

    fn check_config(&self, config: &Value) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if str_field(config, "access_token").is_none() {
            errors.push(FieldError::new("config.access_token", "is required"));
        }
        if !str_field(config, "phone_number_id").is_some_and(is_number_id) {
            errors.push(FieldError::new(
                "config.phone_number_id",
                "must be the numeric phone number id",
            ));
        }
        if str_field(config, "to")
            .and_then(|t| crm_core::leads::Phone::parse(t).ok())
            .is_none()
        {
            errors.push(FieldError::new(
                "config.to",
                "must be a phone number with country code",
            ));
        }
        if !config["template"].is_null()
            && (str_field(&config["template"], "name").is_none()
                || str_field(&config["template"], "language").is_none())
        {
            errors.push(FieldError::new(
                "config.template",
                "needs a name and a language",
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
            let (Some(token), Some(number_id), Some(to)) = (
                str_field(config, "access_token"),
                str_field(config, "phone_number_id"),
                str_field(config, "to"),
            ) else {
                return Outcome::Permanent("the channel's configuration is incomplete".into());
            };
            let Ok(to) = crm_core::leads::Phone::parse(to) else {
                return Outcome::Permanent("config.to is not a phone number".into());
            };
            let to = to.as_str().trim_start_matches('+');
            let body = if config["template"].is_object() {
                json!({
                    "messaging_product": "whatsapp",
                    "to": to,
                    "type": "template",
                    "template": {
                        "name": config["template"]["name"],
                        "language": { "code": config["template"]["language"] },
                        "components": [{ "type": "body", "parameters": [{ "type": "text", "text": n.title }] }],
                    },
                })
            } else {
                json!({ "messaging_product": "whatsapp", "to": to, "type": "text", "text": { "preview_url": false, "body": text_body(n) } })
            };
            let url = format!("{}/{number_id}/messages", self.base_url);
            let resp = match self
                .client
                .post(url)
                .bearer_auth(token)
                .json(&body)
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
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            let code = answer["error"]["code"].as_i64();
            let message = answer["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_owned();
            if code == Some(131047) {
                return Outcome::Permanent(
                    "131047: more than 24 hours since the recipient last wrote; free text cannot be sent, configure a template".into(),
                );
            }
            if status.as_u16() == 429
                || code == Some(130429)
                || code == Some(131056)
                || status.is_server_error()
            {
                return Outcome::Retry {
                    after: None,
                    reason: format!("{status}: {message}"),
                };
            }
            Outcome::Permanent(format!("{status}: {message}"))
        })
    }
}

/// The Graph API body of `message` to `to` (digits of an E.164 number).
fn message_body(to: &str, message: &NewMessage) -> Value {
    match (&message.text, &message.template) {
        (Some(text), _) => json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": { "preview_url": false, "body": text },
        }),
        (None, Some(t)) => {
            let mut template = json!({ "name": t.name, "language": { "code": t.language } });
            if !t.parameters.is_empty() {
                let parameters: Vec<Value> = t
                    .parameters
                    .iter()
                    .map(|p| json!({ "type": "text", "text": p }))
                    .collect();
                template["components"] = json!([{ "type": "body", "parameters": parameters }]);
            }
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "template",
                "template": template,
            })
        }
        (None, None) => Value::Null,
    }
}

/// Answers Meta's verification `GET`: the challenge when the mode is `subscribe` and
/// the token matches, else `Unauthorized`.
pub fn handshake(
    mode: Option<&str>,
    token: Option<&str>,
    challenge: Option<&str>,
    verify_token: &str,
) -> crm_core::Result<String> {
    match (mode, token, challenge) {
        (Some("subscribe"), Some(t), Some(c))
            if !verify_token.trim().is_empty()
                && same_secret(t, verify_token)
                && c.len() <= 256 =>
        {
            Ok(c.to_owned())
        }
        _ => Err(Error::Unauthorized {
            reason: crm_core::AuthFailure::InvalidCredentials,
        }),
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ:
/// their SHA-256 digests are compared, so a timing difference can only tell an
/// attacker about a digest, which they cannot steer.
fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// What [`receive`] did with a payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// Leads created or updated, one per new message.
    pub captured: Vec<LeadId>,
    /// Messages seen before (same `wamid`), skipped.
    pub duplicates: usize,
    /// Delivery statuses (sent, delivered, read, failed) that moved a sent
    /// message's status forward.
    pub statuses: usize,
    /// Statuses that changed nothing (seen before, or of a message this workspace
    /// did not send), message types crm does not keep (reactions, contacts,
    /// buttons) and messages crm refuses (a sender that is not a phone number):
    /// accepted and ignored, so one bad item does not make the provider redeliver
    /// the whole batch for ever.
    pub ignored: usize,
}

/// A WhatsApp timestamp (Unix seconds as a string).
fn unix_time(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    v.as_str()
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
}

/// The media types kept as activities, with what their payload object holds.
const MEDIA: [&str; 5] = ["image", "document", "audio", "video", "sticker"];

/// What one inbound message is: its [`MessageInfo`] and the text the timeline
/// shows (the text, the caption, or the kind in brackets); `None` for a type crm
/// does not keep.
fn inbound_message(m: &Value, id: &str) -> Option<(MessageInfo, String)> {
    let kind = m["type"].as_str()?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let mut info = MessageInfo {
        channel: "whatsapp".into(),
        provider_message_id: Some(id.to_owned()),
        kind: kind.to_owned(),
        sent_at: unix_time(&m["timestamp"]),
        ..MessageInfo::default()
    };
    let shown = match kind {
        "text" => text(&m["text"]["body"])?,
        k if MEDIA.contains(&k) => {
            let media = &m[k];
            info.media_id = text(&media["id"]);
            info.mime_type = text(&media["mime_type"]);
            info.filename = text(&media["filename"]);
            text(&media["caption"])
                .or_else(|| info.filename.clone())
                .unwrap_or_else(|| format!("[{k}]"))
        }
        "location" => {
            let at = &m["location"];
            info.latitude = at["latitude"].as_f64();
            info.longitude = at["longitude"].as_f64();
            let place: Vec<String> = [&at["name"], &at["address"]]
                .into_iter()
                .filter_map(text)
                .collect();
            if place.is_empty() {
                format!("[location] {}, {}", info.latitude?, info.longitude?)
            } else {
                format!("[location] {}", place.join(", "))
            }
        }
        _ => return None,
    };
    Some((
        info,
        shown.chars().take(crm_core::leads::MESSAGE_MAX).collect(),
    ))
}

/// Handles an inbound `POST`: verifies `X-Hub-Signature-256` (`signature`) over the raw
/// `body` with the app secret, then captures each message (text and media) and
/// applies each delivery status. A bad signature is a `WebhookVerification` error, a
/// body that is not a WhatsApp payload a `Validation` error; neither writes
/// anything. Every number the app serves posts here; [`receive_for`] keeps one.
pub async fn receive(
    leads: &Leads,
    app_secret: &str,
    signature: Option<&str>,
    body: &[u8],
) -> crm_core::Result<Received> {
    receive_for(leads, app_secret, None, signature, body).await
}

/// [`receive`] for one business number: changes whose `metadata.phone_number_id`
/// is not `phone_number_id` (when given) are counted as ignored. One Meta app often
/// serves several numbers (an agency's clients), and posts every number's messages
/// to its one callback URL: a workspace keeps only its own.
pub async fn receive_for(
    leads: &Leads,
    app_secret: &str,
    phone_number_id: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> crm_core::Result<Received> {
    let header = signature.ok_or(Error::WebhookVerification(VerifyError::MissingHeader(
        "x-hub-signature-256",
    )))?;
    verify_whatsapp(app_secret, body, header)?;
    let payload: Value =
        serde_json::from_slice(body).map_err(|_| Error::invalid("body", "is not JSON"))?;
    if payload["object"] != "whatsapp_business_account" || !payload["entry"].is_array() {
        return Err(Error::invalid(
            "body",
            "is not a WhatsApp Business Account payload",
        ));
    }
    let mut out = Received::default();
    let values = payload["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["changes"].as_array().into_iter().flatten())
        .map(|c| &c["value"]);
    for value in values {
        let number = value["metadata"]["phone_number_id"].as_str();
        if phone_number_id.is_some_and(|want| number != Some(want)) {
            out.ignored += value["statuses"].as_array().map_or(0, Vec::len)
                + value["messages"].as_array().map_or(0, Vec::len);
            continue;
        }
        for st in value["statuses"].as_array().into_iter().flatten() {
            let (Some(id), Some(status)) = (
                st["id"].as_str(),
                st["status"].as_str().and_then(MessageStatus::parse),
            ) else {
                out.ignored += 1;
                continue;
            };
            let at = unix_time(&st["timestamp"]);
            let error = st["errors"][0]["title"]
                .as_str()
                .or(st["errors"][0]["message"].as_str())
                .map(|t| match st["errors"][0]["code"].as_i64() {
                    Some(c) => format!("{c}: {t}"),
                    None => t.to_owned(),
                });
            match leads
                .message_status("whatsapp", id, status, at, error)
                .await?
            {
                Some(_) => out.statuses += 1,
                None => out.ignored += 1,
            }
        }
        let names: Vec<(&str, &str)> = value["contacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["wa_id"].as_str()?, c["profile"]["name"].as_str()?)))
            .collect();
        for m in value["messages"].as_array().into_iter().flatten() {
            let (Some(id), Some(from)) = (m["id"].as_str(), m["from"].as_str()) else {
                return Err(Error::invalid("body", "a message lacks its id or sender"));
            };
            let Some((info, shown)) = inbound_message(m, id) else {
                out.ignored += 1;
                continue;
            };
            let phone = format!("+{from}");
            let name = names
                .iter()
                .find(|(wa, _)| *wa == from)
                .map_or(phone.clone(), |(_, n)| (*n).to_owned());
            let input = NewLead {
                name,
                phone: Some(phone),
                source: Some("whatsapp".into()),
                message: Some(shown.clone()),
                ..Default::default()
            };
            // Each message is one transaction (lead, activity, receipt): written whole
            // or not at all. A message crm refuses is skipped, not the batch; a database
            // failure stops here, and the provider's redelivery finds the messages
            // already written by their receipts.
            match leads.capture_message(input, info, Some(shown)).await {
                Ok(Some(c)) => out.captured.push(c.lead.id),
                Ok(None) => out.duplicates += 1,
                Err(Error::Validation { errors }) => {
                    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                    tracing::warn!(?fields, "a WhatsApp message was refused and skipped");
                    out.ignored += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// The `whatsapp` integration: a workspace's own WhatsApp Business number.
/// Settings: `access_token` (secret), `phone_number_id`, `app_secret` (secret: it
/// signs Meta's webhooks) and `verify_token` (secret: Meta's subscription
/// handshake). It receives webhooks, at `/api/webhooks/whatsapp/{inbound_id}`.
/// Saving reads the phone number with the token (`GET /{phone_number_id}`): a token
/// Meta refuses is an error on `settings.access_token`, a number it does not know
/// for that token one on `settings.phone_number_id`.
impl crm_core::providers::Provider for WhatsApp {
    fn kind(&self) -> &'static str {
        "whatsapp"
    }

    fn fields(&self) -> &'static [crm_core::providers::SettingField] {
        use crm_core::providers::SettingField;
        const FIELDS: [SettingField; 4] = [
            SettingField::secret("access_token"),
            SettingField::required("phone_number_id"),
            SettingField::secret("app_secret"),
            SettingField::secret("verify_token"),
        ];
        &FIELDS
    }

    fn receives_webhooks(&self) -> bool {
        true
    }

    fn channel_defaults(&self) -> &'static [&'static str] {
        &["access_token", "phone_number_id"]
    }

    fn sends_messages(&self) -> bool {
        true
    }

    fn send_message<'a>(
        &'a self,
        settings: &'a crm_core::providers::Settings,
        to: &'a str,
        message: &'a NewMessage,
    ) -> crm_core::providers::MessageFuture<'a> {
        Box::pin(async move {
            let setting = |k: &str| crm_core::providers::setting(settings, k);
            let body = message_body(to.trim_start_matches('+'), message);
            let url = format!("{}/{}/messages", self.base_url, setting("phone_number_id"));
            let resp = self
                .client
                .post(url)
                .bearer_auth(setting("access_token"))
                .json(&body)
                .send()
                .await
                .map_err(|e| {
                    Error::Integration(if e.is_timeout() {
                        "WhatsApp timed out".into()
                    } else {
                        "WhatsApp could not be reached".into()
                    })
                })?;
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                return answer["messages"][0]["id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Error::Integration("WhatsApp answered without a message id".into())
                    });
            }
            let code = answer["error"]["code"].as_i64();
            let words = answer["error"]["error_data"]["details"]
                .as_str()
                .or(answer["error"]["message"].as_str())
                .unwrap_or("no message");
            let words: String = words.chars().take(300).collect();
            Err(match code {
                Some(131047) => Error::InvalidState {
                    code: "window_closed",
                    message: "WhatsApp: more than 24 hours since the lead last wrote; only a template can reach them".into(),
                },
                Some(190) => Error::Integration("WhatsApp refused the workspace's access token".into()),
                Some(130429 | 131056) => Error::Integration(format!("WhatsApp is limiting this number: {words}")),
                _ if status == 401 || status == 429 || status >= 500 => {
                    Error::Integration(format!("WhatsApp answered {status}: {words}"))
                }
                Some(c) => Error::Provider(format!("WhatsApp {c}: {words}")),
                None => Error::Provider(format!("WhatsApp answered {status}: {words}")),
            })
        })
    }

    fn fetches_media(&self) -> bool {
        true
    }

    /// `GET /{media_id}` with the access token gives the file's URL (Meta keeps
    /// media for 30 days), then the file is read from it with the same token, at
    /// most `max_size` bytes.
    fn fetch_media<'a>(
        &'a self,
        settings: &'a crm_core::providers::Settings,
        media_id: &'a str,
        max_size: u64,
    ) -> crm_core::providers::MediaFuture<'a> {
        Box::pin(async move {
            let token = crm_core::providers::setting(settings, "access_token");
            let valid_id = !media_id.is_empty()
                && media_id.len() <= 128
                && media_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_id {
                return Err(Error::Provider(
                    "WhatsApp media id is not one Meta gives".into(),
                ));
            }
            let unreachable = |e: reqwest::Error| {
                Error::Integration(if e.is_timeout() {
                    "WhatsApp timed out".into()
                } else {
                    "WhatsApp could not be reached".into()
                })
            };
            let refused = |status: u16, what: &str| {
                if status == 401 || status == 403 || status == 429 || status >= 500 {
                    Error::Integration(format!("WhatsApp answered {status} for the {what}"))
                } else {
                    Error::Provider(format!("WhatsApp answered {status} for the {what}"))
                }
            };
            let resp = self
                .client
                .get(format!("{}/{media_id}", self.base_url))
                .bearer_auth(token)
                .send()
                .await
                .map_err(unreachable)?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(refused(status, "media"));
            }
            let answer: Value = resp
                .json()
                .await
                .map_err(|_| Error::Integration("WhatsApp answered without JSON".into()))?;
            let size = answer["file_size"]
                .as_u64()
                .or_else(|| answer["file_size"].as_str().and_then(|s| s.parse().ok()));
            if size.is_some_and(|n| n > max_size) {
                return Err(Error::TooLarge { limit: max_size });
            }
            // The token goes only to Meta's media hosts (or the Graph host itself).
            let url = answer["url"]
                .as_str()
                .and_then(|u| reqwest::Url::parse(u).ok())
                .filter(|u| self.is_media_host(u))
                .ok_or_else(|| {
                    Error::Provider("WhatsApp gave a media URL off Meta's hosts".into())
                })?;
            let mut resp = self
                .client
                .get(url)
                .bearer_auth(token)
                // A file of up to the limit over a slow link: longer than the API's
                // 10 s, and within the dispatcher's default 60 s lease of the job.
                .timeout(std::time::Duration::from_secs(45))
                .send()
                .await
                .map_err(unreachable)?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(refused(status, "media file"));
            }
            if resp.content_length().is_some_and(|n| n > max_size) {
                return Err(Error::TooLarge { limit: max_size });
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
                if (bytes.len() + chunk.len()) as u64 > max_size {
                    return Err(Error::TooLarge { limit: max_size });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(crm_core::providers::FetchedMedia {
                bytes: bytes.into(),
                mime_type: answer["mime_type"].as_str().map(str::to_owned),
            })
        })
    }

    fn check<'a>(
        &'a self,
        settings: &'a crm_core::providers::Settings,
    ) -> crm_core::providers::CheckFuture<'a> {
        Box::pin(async move {
            let number_id = crm_core::providers::setting(settings, "phone_number_id");
            if !is_number_id(number_id) {
                return Err(crate::refused(
                    "phone_number_id",
                    "must be the numeric phone number id",
                ));
            }
            let token = crm_core::providers::setting(settings, "access_token");
            let request = self
                .client
                .get(format!("{}/{number_id}", self.base_url))
                .query(&[("fields", "id")])
                .bearer_auth(token);
            match crate::probe(request, "WhatsApp").await? {
                (200..=299, _) => Ok(()),
                (_, answer) if answer["error"]["code"] == 190 => {
                    Err(crate::refused("access_token", "was refused by Meta"))
                }
                (401 | 403, _) => Err(crate::refused("access_token", "was refused by Meta")),
                (400 | 404, _) => Err(crate::refused(
                    "phone_number_id",
                    "is not a phone number this token can use",
                )),
                (s, _) => Err(crate::unexpected("WhatsApp", s)),
            }
        })
    }
}
