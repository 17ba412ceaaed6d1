//! The types of webhook endpoints and of the delivery queue (jobs and their
//! attempts), shared by the endpoint service, the dispatcher and storage.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{EndpointId, EventId, WorkspaceId};
use crate::secret::SecretString;

crate::macros::string_enum!(
    /// What a job does: deliver a webhook message to an endpoint or a notification
    /// through a channel, or fetch the media of a message received (its target the
    /// `message` activity) and store it as an attachment.
    pub(crate) JobKind, "job kind" {
        Webhook => "webhook",
        Notification => "notification",
        Media => "media",
    }
);

crate::macros::string_enum!(
    /// Where a job stands.
    pub(crate) JobStatus, "job status" {
        /// Due at its `run_at` (a retry, or not tried yet).
        Pending => "pending",
        Delivered => "delivered",
        /// Out of retries, or refused for good.
        Failed => "failed",
        /// Ended without an attempt (its endpoint or channel is gone or disabled,
        /// or its kind unknown to this build).
        Cancelled => "cancelled",
    }
);

/// A job's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobId(pub(crate) Uuid);

impl From<Uuid> for JobId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

/// One recorded delivery attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// Its id.
    pub id: Uuid,
    /// The job (one message to one endpoint or channel).
    pub job_id: Uuid,
    /// `webhook` or `notification`.
    pub kind: String,
    /// The webhook endpoint or notification channel.
    pub target_id: Uuid,
    /// The event (its id is the `webhook-id`).
    pub event_id: EventId,
    /// 1 for the first attempt of the job.
    pub attempt: u32,
    /// The HTTP status, when a response came.
    pub status_code: Option<u16>,
    /// The response body, cut at 4 KiB.
    pub response_body: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
    /// Why it failed: for webhooks `http_status`, `redirect`, `timeout`, `connect`,
    /// `network`, `ssrf_refused` or `payload_too_large`; for notifications the plugin's
    /// reason. `None` on success.
    pub error_kind: Option<String>,
    /// When the next attempt is due, when there is one.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A webhook endpoint (without its secret).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// Its id.
    pub id: EndpointId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Where deliveries are POSTed.
    pub url: String,
    /// For people.
    pub description: Option<String>,
    /// Event types it receives: names, `lead.*`, or `*`.
    pub event_types: Vec<String>,
    /// Whether it receives deliveries.
    pub enabled: bool,
    /// Most deliveries per minute, when limited.
    pub rate_limit_per_minute: Option<u32>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Last successful delivery (to within a second: a healthy endpoint's row is
    /// written at most once a second).
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last failed attempt.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Why crm disabled it (410 Gone, too many failures), when it did.
    pub disabled_reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Input of [`Webhooks::create`](super::Webhooks::create).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"url": "https://example.com/webhooks/crm", "description": "Sync to the ERP", "event_types": ["lead.*"], "rate_limit_per_minute": 120})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewEndpoint {
    /// An `http(s)` URL whose host resolves to public addresses only.
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            format = "uri",
            min_length = 1,
            max_length = 2048,
            pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
        )
    )]
    pub url: String,
    /// Up to 500 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub description: Option<String>,
    /// Event filter; `["*"]` when empty.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::event_filter))]
    pub event_types: Vec<String>,
    /// `true` when absent.
    pub enabled: Option<bool>,
    /// 1–10,000 deliveries per minute, or no limit.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub rate_limit_per_minute: Option<u32>,
    /// Bring your own `whsec_…` secret (24–64 bytes); one is generated otherwise.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")
    )]
    pub secret: Option<String>,
}

/// Input of [`Webhooks::update`](super::Webhooks::update); fields left `None` stay.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"description": "Sync to the ERP (EU)", "event_types": ["lead.created", "lead.status_changed"], "enabled": true})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointPatch {
    /// A new URL.
    #[cfg_attr(
        feature = "openapi",
        schema(
            format = "uri",
            min_length = 1,
            max_length = 2048,
            pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
        )
    )]
    pub url: Option<String>,
    /// A new description (`Some(None)`, JSON `null`, clears it).
    #[serde(deserialize_with = "crate::leads::nullable")]
    #[cfg_attr(feature = "openapi", schema(max_length = 500))]
    pub description: Option<Option<String>>,
    /// A new event filter.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::endpoint_filter_patch))]
    pub event_types: Option<Vec<String>>,
    /// Enable or disable; enabling clears the failure count and `disabled_reason`.
    pub enabled: Option<bool>,
    /// A new limit (`Some(None)`, JSON `null`, removes it).
    #[serde(deserialize_with = "crate::leads::nullable")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub rate_limit_per_minute: Option<Option<u32>>,
}

/// An endpoint just made, with its secret (also readable later with [`Webhooks::secret`](super::Webhooks::secret)).
#[derive(Debug, Clone)]
pub struct CreatedEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its signing secret, `whsec_…`.
    pub secret: SecretString,
}

/// The sealed secrets of an endpoint as stored.
pub(crate) struct SealedSecrets {
    pub current: String,
    pub previous: Option<String>,
    pub previous_until: Option<DateTime<Utc>>,
}

/// The job queue (webhook deliveries and notifications) at a glance, from
/// [`Crm::job_queue`](crate::Crm::job_queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs waiting for a (first or next) attempt.
    pub pending: u64,
    /// When the earliest of them is due; a time long past means the queue is behind.
    pub oldest_due_at: Option<DateTime<Utc>>,
}
