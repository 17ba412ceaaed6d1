//! Cal.com: bookings become leads.
//!
//! [`receive`] checks `X-Cal-Signature-256` (bare hex HMAC-SHA256 of the raw body
//! under the webhook secret; Cal.com's `no-secret-provided` never passes), then for
//! `BOOKING_CREATED`, `BOOKING_RESCHEDULED` and `BOOKING_CANCELLED` captures the first
//! attendee by email (source `cal_com`) with a `booking` activity carrying the title
//! and time. The same booking uid and trigger twice changes nothing. Other triggers
//! are accepted and ignored. An attendee without a name is named after their email.

use crm_core::leads::{ActivityKind, Leads, NewLead};
use crm_core::webhooks::signing::{verify_calcom, VerifyError};
use crm_core::{Error, LeadId};
use serde_json::Value;

/// What [`receive`] did with a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The attendee's lead was created (`true`) or updated.
    Captured {
        /// The lead.
        lead: LeadId,
        /// Whether it was created.
        created: bool,
    },
    /// This booking and trigger were handled before.
    Duplicate,
    /// A trigger crm does not act on.
    Ignored(String),
}

/// Handles a Cal.com webhook `POST`; see the module docs. A bad signature is a
/// `WebhookVerification` error, an unexpected shape a `Validation` error; neither
/// writes anything.
pub async fn receive(
    leads: &Leads,
    secret: &str,
    signature: Option<&str>,
    body: &[u8],
) -> crm_core::Result<Received> {
    let header = signature.ok_or(Error::WebhookVerification(VerifyError::MissingHeader(
        "x-cal-signature-256",
    )))?;
    verify_calcom(secret, body, header)?;
    let v: Value =
        serde_json::from_slice(body).map_err(|_| Error::invalid("body", "is not JSON"))?;
    let trigger = v["triggerEvent"]
        .as_str()
        .ok_or_else(|| Error::invalid("body", "has no triggerEvent"))?;
    let verb = match trigger {
        "BOOKING_CREATED" => "booked",
        "BOOKING_RESCHEDULED" => "rescheduled",
        "BOOKING_CANCELLED" => "cancelled",
        other => return Ok(Received::Ignored(other.to_owned())),
    };
    let p = &v["payload"];
    let uid = p["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::invalid("payload.uid", "is required"))?;
    let attendee = &p["attendees"][0];
    let email = attendee["email"]
        .as_str()
        .ok_or_else(|| Error::invalid("payload.attendees", "needs an attendee with an email"))?;
    let name = attendee["name"]
        .as_str()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map_or_else(
            || email.split('@').next().unwrap_or(email).to_owned(),
            str::to_owned,
        );
    let title = p["title"].as_str().unwrap_or("Booking");
    let start = p["startTime"].as_str().unwrap_or("an unknown time");
    let description = format!("{title} — {verb} for {start}");
    let input = NewLead {
        name,
        email: Some(email.to_owned()),
        source: Some("cal_com".into()),
        ..Default::default()
    };
    let key = format!("{uid}:{trigger}");
    Ok(
        match leads
            .capture_inbound(
                "cal_com",
                &key,
                input,
                ActivityKind::Booking,
                Some(description),
            )
            .await?
        {
            Some(c) => Received::Captured {
                lead: c.lead.id,
                created: c.created,
            },
            None => Received::Duplicate,
        },
    )
}

/// The `calcom` integration: a workspace's Cal.com bookings. Settings:
/// `webhook_secret` (secret: the secret set on the Cal.com webhook) and
/// `booking_link` (optional, the `https://` page people book on). It receives
/// webhooks, at `/api/webhooks/cal/{inbound_id}`. Cal.com has no API that could
/// confirm a webhook secret, so saving checks the shape only; a wrong secret shows
/// as 401s on the inbound route.
#[derive(Debug, Clone, Copy, Default)]
pub struct CalcomIntegration;

impl crm_core::providers::Provider for CalcomIntegration {
    fn kind(&self) -> &'static str {
        "calcom"
    }

    fn fields(&self) -> &'static [crm_core::providers::SettingField] {
        use crm_core::providers::SettingField;
        const FIELDS: [SettingField; 2] = [
            SettingField::secret("webhook_secret"),
            SettingField::optional("booking_link"),
        ];
        &FIELDS
    }

    fn receives_webhooks(&self) -> bool {
        true
    }

    fn check<'a>(
        &'a self,
        settings: &'a crm_core::providers::Settings,
    ) -> crm_core::providers::CheckFuture<'a> {
        Box::pin(async move {
            if settings.get("webhook_secret").map_or(0, String::len) < 8 {
                return Err(crate::refused(
                    "webhook_secret",
                    "must be at least 8 characters",
                ));
            }
            if let Some(link) = settings.get("booking_link") {
                let host = link.strip_prefix("https://").unwrap_or("");
                if host.is_empty() || host.starts_with('/') || link.contains(char::is_whitespace) {
                    return Err(crate::refused("booking_link", "must be an https:// link"));
                }
            }
            Ok(())
        })
    }
}
