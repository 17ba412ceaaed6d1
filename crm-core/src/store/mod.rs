//! The SQL of the lead service and the outbox, written once for both backends.
//!
//! Each write is one transaction: the lead row, its activities and its event rows
//! commit together or not at all. Reads are plain queries. Every statement filters by
//! `workspace_id`, which is how a workspace handle never sees another's rows.

mod pool;
mod sql;

pub(crate) use pool::{connect, from_host, Pool, Ts};
use sql::{query, query_as, Dialect, Exec, Row, Sql, Tx};

use serde_json::{json, Map, Value};
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use crate::api_keys::{ApiKey, Scope};
use crate::audit::AuditEntry;
use crate::auth::{Role, Session, Throttle, User, UserAccess, RESET, VERIFY};
use crate::events::{Event, EventType};
use crate::ids::{
    ActivityId, ApiKeyId, AuditId, ChannelId, EndpointId, EventId, LeadId, SessionId, UserId,
    WorkspaceId,
};
use crate::leads::cursor::{Cursor, Key};
use crate::leads::parse::{Fields, Patch, Query as LeadQuery};
use crate::leads::rules;
use crate::leads::{Activity, ActivityKind, Email, Lead, LeadStatus, Phone, SortField, SortOrder};
use crate::notify::Channel;
use crate::webhooks::dispatcher::{JobId, JobKind, JobStatus};
use crate::webhooks::endpoints::SealedSecrets;
use crate::webhooks::Endpoint;
use crate::{Error, Result};

const LEAD_COLUMNS: &str = "l.id, l.workspace_id, l.name, l.email, l.phone, l.company, l.budget, \
    l.project_type, l.message, l.source, l.status, l.notes, l.tags, l.custom, l.raw_input, \
    l.ai_parsed, l.created_at, l.updated_at";

const ACTIVITY_COLUMNS: &str =
    "id, lead_id, kind, description, old_status, new_status, actor, created_at";

#[derive(FromRow)]
pub(crate) struct IdempotencyRow {
    pub fingerprint: String,
    pub status_code: Option<i64>,
    pub response: Option<String>,
}

#[derive(FromRow)]
pub(crate) struct WorkspaceRow {
    pub name: String,
    pub created_at: Ts,
}

#[derive(FromRow)]
pub(crate) struct LeadRow {
    id: LeadId,
    workspace_id: WorkspaceId,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    budget: Option<String>,
    project_type: Option<String>,
    message: Option<String>,
    source: Option<String>,
    status: String,
    notes: Option<String>,
    tags: Json<Vec<String>>,
    custom: Json<Map<String, Value>>,
    raw_input: Option<String>,
    ai_parsed: bool,
    created_at: Ts,
    updated_at: Ts,
}

#[derive(FromRow)]
pub(crate) struct ActivityRow {
    id: ActivityId,
    lead_id: LeadId,
    kind: String,
    description: Option<String>,
    old_status: Option<String>,
    new_status: Option<String>,
    actor: Option<String>,
    created_at: Ts,
}

#[derive(FromRow)]
pub(crate) struct EventRow {
    id: EventId,
    workspace_id: WorkspaceId,
    event_type: String,
    lead_id: Option<LeadId>,
    payload: Json<Value>,
    created_at: Ts,
}

const API_KEY_COLUMNS: &str =
    "id, workspace_id, name, display_prefix, scopes, created_by, created_at, \
    updated_at, expires_at, revoked_at, last_used_at, replaced_by";

#[derive(FromRow)]
pub(crate) struct ApiKeyRow {
    id: ApiKeyId,
    workspace_id: WorkspaceId,
    name: String,
    display_prefix: String,
    scopes: Json<Vec<String>>,
    created_by: Option<String>,
    created_at: Ts,
    updated_at: Ts,
    expires_at: Option<Ts>,
    revoked_at: Option<Ts>,
    last_used_at: Option<Ts>,
    replaced_by: Option<ApiKeyId>,
}

impl ApiKeyRow {
    fn into_key(self) -> Result<ApiKey> {
        Ok(ApiKey {
            id: self.id,
            workspace_id: self.workspace_id,
            name: self.name,
            display_prefix: self.display_prefix,
            scopes: self
                .scopes
                .0
                .iter()
                .map(|s| Scope::parse(s).map_err(|_| corrupt("scope")))
                .collect::<Result<_>>()?,
            created_by: self.created_by,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
            expires_at: self.expires_at.map(|t| t.0),
            revoked_at: self.revoked_at.map(|t| t.0),
            last_used_at: self.last_used_at.map(|t| t.0),
            replaced_by: self.replaced_by,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct AuditRow {
    id: AuditId,
    workspace_id: WorkspaceId,
    actor: Option<String>,
    action: String,
    target_type: Option<String>,
    target_id: Option<String>,
    ip: Option<String>,
    details: Json<Value>,
    created_at: Ts,
}

impl AuditRow {
    fn into_entry(self) -> AuditEntry {
        AuditEntry {
            id: self.id,
            workspace_id: self.workspace_id,
            actor: self.actor,
            action: self.action,
            target_type: self.target_type,
            target_id: self.target_id,
            ip: self.ip,
            details: self.details.0,
            created_at: self.created_at.0,
        }
    }
}

const USER_COLUMNS: &str =
    "id, workspace_id, email, display_name, role, password_hash, email_verified_at, disabled_at, \
    created_at, updated_at";
const SESSION_COLUMNS: &str =
    "id, workspace_id, user_id, remember, ip, user_agent, created_at, last_seen_at, expires_at, \
    absolute_expires_at";

#[derive(FromRow)]
pub(crate) struct UserRow {
    id: UserId,
    workspace_id: WorkspaceId,
    email: String,
    display_name: String,
    role: String,
    password_hash: String,
    email_verified_at: Option<Ts>,
    disabled_at: Option<Ts>,
    created_at: Ts,
    updated_at: Ts,
}

impl UserRow {
    fn into_user(self) -> Result<(User, String)> {
        let user = User {
            id: self.id,
            workspace_id: self.workspace_id,
            email: Email::parse(&self.email).map_err(|_| corrupt("email"))?,
            display_name: self.display_name,
            role: self.role.parse().map_err(|_| corrupt("role"))?,
            email_verified_at: self.email_verified_at.map(|t| t.0),
            disabled_at: self.disabled_at.map(|t| t.0),
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        };
        Ok((user, self.password_hash))
    }
}

#[derive(FromRow)]
pub(crate) struct SessionRow {
    id: SessionId,
    workspace_id: WorkspaceId,
    user_id: UserId,
    remember: bool,
    ip: Option<String>,
    user_agent: Option<String>,
    created_at: Ts,
    last_seen_at: Ts,
    expires_at: Ts,
    absolute_expires_at: Ts,
}

impl SessionRow {
    fn into_session(self) -> Session {
        Session {
            id: self.id,
            workspace_id: self.workspace_id,
            user_id: self.user_id,
            remember: self.remember,
            ip: self.ip,
            user_agent: self.user_agent,
            created_at: self.created_at.0,
            last_seen_at: self.last_seen_at.0,
            expires_at: self.expires_at.0,
            absolute_expires_at: self.absolute_expires_at.0,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct ThrottleRow {
    failures: i64,
    window_start: Ts,
    lockouts: i64,
    locked_until: Option<Ts>,
}

#[derive(FromRow)]
pub(crate) struct TokenOwner {
    workspace_id: WorkspaceId,
    user_id: UserId,
}

const ENDPOINT_COLUMNS: &str = "id, workspace_id, url, description, event_types, enabled, secret, \
    previous_secret, previous_secret_until, rate_limit_per_minute, consecutive_failures, last_success_at, \
    last_failure_at, disabled_reason, created_at, updated_at";

#[derive(FromRow)]
pub(crate) struct EndpointRow {
    id: EndpointId,
    workspace_id: WorkspaceId,
    url: String,
    description: Option<String>,
    event_types: Json<Vec<String>>,
    enabled: bool,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_until: Option<Ts>,
    rate_limit_per_minute: Option<i64>,
    consecutive_failures: i64,
    last_success_at: Option<Ts>,
    last_failure_at: Option<Ts>,
    disabled_reason: Option<String>,
    created_at: Ts,
    updated_at: Ts,
}

impl EndpointRow {
    fn into_endpoint(self) -> (Endpoint, SealedSecrets) {
        let ep = Endpoint {
            id: self.id,
            workspace_id: self.workspace_id,
            url: self.url,
            description: self.description,
            event_types: self.event_types.0,
            enabled: self.enabled,
            rate_limit_per_minute: self
                .rate_limit_per_minute
                .and_then(|l| u32::try_from(l).ok()),
            consecutive_failures: u32::try_from(self.consecutive_failures).unwrap_or(u32::MAX),
            last_success_at: self.last_success_at.map(|t| t.0),
            last_failure_at: self.last_failure_at.map(|t| t.0),
            disabled_reason: self.disabled_reason,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        };
        let sealed = SealedSecrets {
            current: self.secret,
            previous: self.previous_secret,
            previous_until: self.previous_secret_until.map(|t| t.0),
        };
        (ep, sealed)
    }
}

const CHANNEL_COLUMNS: &str =
    "id, workspace_id, kind, name, config, event_types, enabled, created_at, updated_at";

#[derive(FromRow)]
pub(crate) struct ChannelRow {
    id: ChannelId,
    workspace_id: WorkspaceId,
    kind: String,
    name: String,
    config: String,
    event_types: Json<Vec<String>>,
    enabled: bool,
    created_at: Ts,
    updated_at: Ts,
}

impl ChannelRow {
    fn into_channel(self) -> (Channel, String) {
        let c = Channel {
            id: self.id,
            workspace_id: self.workspace_id,
            kind: self.kind,
            name: self.name,
            event_types: self.event_types.0,
            enabled: self.enabled,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        };
        (c, self.config)
    }
}

/// A job a dispatcher holds the lease of.
#[derive(Debug, Clone, FromRow)]
pub(crate) struct ClaimedJob {
    #[sqlx(try_from = "Uuid")]
    pub id: JobId,
    /// As stored: a kind this build does not know (written by a newer version) must
    /// not stop the whole claim from decoding.
    pub kind: String,
    pub workspace_id: WorkspaceId,
    pub target_id: Uuid,
    pub event_id: Uuid,
    pub attempts: i64,
}

/// A recorded delivery attempt.
#[derive(FromRow)]
pub(crate) struct AttemptRow {
    id: Uuid,
    job_id: Uuid,
    kind: String,
    target_id: Uuid,
    event_id: EventId,
    attempt: i64,
    status_code: Option<i64>,
    response_body: Option<String>,
    duration_ms: i64,
    error_kind: Option<String>,
    next_attempt_at: Option<Ts>,
    created_at: Ts,
}

impl AttemptRow {
    fn into_attempt(self) -> crate::webhooks::Attempt {
        crate::webhooks::Attempt {
            id: self.id,
            job_id: self.job_id,
            kind: self.kind,
            target_id: self.target_id,
            event_id: self.event_id,
            attempt: u32::try_from(self.attempt).unwrap_or(u32::MAX),
            status_code: self.status_code.and_then(|c| u16::try_from(c).ok()),
            response_body: self.response_body,
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            error_kind: self.error_kind,
            next_attempt_at: self.next_attempt_at.map(|t| t.0),
            created_at: self.created_at.0,
        }
    }
}

/// What a finished attempt writes.
pub(crate) struct Finish<'a> {
    pub job: &'a ClaimedJob,
    pub token: Uuid,
    pub attempt: &'a crate::webhooks::Attempt,
    /// Pending (retry at `next_attempt_at`), delivered or failed.
    pub job_status: JobStatus,
    pub success: bool,
    /// Disable the endpoint, with this reason.
    pub disable: Option<String>,
    pub disable_after: u32,
}

/// What a change to an API key writes: the key's new state, maybe a new key (with
/// its hash), and the audit entry.
pub(crate) struct KeyChange {
    pub key: ApiKey,
    pub new_key: Option<(ApiKey, String)>,
    pub audit: AuditEntry,
}

/// What a capture does to a lead that already has the input's email or phone.
#[derive(Debug, Clone)]
pub(crate) enum OnKnown {
    /// Fills the lead's blank fields (inbound messages verified by their provider).
    Fill,
    /// Changes nothing of the lead; the activity gets this description instead
    /// (anonymous submissions, which must not attach anything to a known lead).
    Record(Option<String>),
}

/// The acting user's row: one that is not in the workspace may do nothing there.
/// A disabled user may do nothing either, even with a session checked a moment
/// before they were disabled: the rule runs on the row as it is now.
fn actor_row(found: Result<(User, String)>) -> Result<User> {
    match found {
        Ok((u, _)) if u.disabled_at.is_some() => Err(Error::Forbidden),
        Ok((u, _)) => Ok(u),
        Err(Error::NotFound { .. }) => Err(Error::Forbidden),
        Err(e) => Err(e),
    }
}

/// A stored value that no longer parses: the database was changed behind crm's back.
fn corrupt(what: &str) -> Error {
    Error::Database(crate::error::DatabaseError::new(sqlx::Error::Decode(
        format!("stored {what} is not valid").into(),
    )))
}

impl LeadRow {
    fn into_lead(self) -> Result<Lead> {
        Ok(Lead {
            id: self.id,
            workspace_id: self.workspace_id,
            name: self.name,
            email: self
                .email
                .map(|e| Email::parse(&e).map_err(|_| corrupt("email")))
                .transpose()?,
            phone: self
                .phone
                .map(|p| Phone::parse(&p).map_err(|_| corrupt("phone")))
                .transpose()?,
            company: self.company,
            budget: self.budget,
            project_type: self.project_type,
            message: self.message,
            source: self.source,
            status: self.status.parse().map_err(|_| corrupt("status"))?,
            notes: self.notes,
            tags: self.tags.0,
            custom: self.custom.0,
            raw_input: self.raw_input,
            ai_parsed: self.ai_parsed,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        })
    }
}

impl ActivityRow {
    fn into_activity(self) -> Result<Activity> {
        let status = |s: Option<String>| -> Result<Option<LeadStatus>> {
            s.map(|s| s.parse().map_err(|_| corrupt("status")))
                .transpose()
        };
        Ok(Activity {
            id: self.id,
            lead_id: self.lead_id,
            kind: self.kind.parse().map_err(|_| corrupt("activity kind"))?,
            description: self.description,
            old_status: status(self.old_status)?,
            new_status: status(self.new_status)?,
            actor: self.actor,
            created_at: self.created_at.0,
        })
    }
}

impl EventRow {
    fn into_event(self) -> Result<Event> {
        Ok(Event {
            id: self.id,
            workspace_id: self.workspace_id,
            event_type: self.event_type.parse().map_err(|_| corrupt("event type"))?,
            lead_id: self.lead_id,
            payload: self.payload.0,
            created_at: self.created_at.0,
        })
    }
}

fn conflict(field: &'static str, existing: LeadId) -> Error {
    Error::Conflict {
        message: format!("a lead with this {field} already exists"),
        field: Some(field),
        existing_id: Some(existing.0),
    }
}

fn no_contact() -> Error {
    Error::invalid("email", "a lead needs an email or a phone")
}

/// Who and when, for one call.
pub(crate) struct Ctx<'a> {
    pub ws: WorkspaceId,
    pub now: chrono::DateTime<chrono::Utc>,
    pub actor: Option<&'a str>,
}

impl Ctx<'_> {
    fn activity(
        &self,
        lead_id: LeadId,
        kind: ActivityKind,
        description: Option<String>,
    ) -> Activity {
        Activity {
            id: ActivityId::new(),
            lead_id,
            kind,
            description,
            old_status: None,
            new_status: None,
            actor: self.actor.map(str::to_owned),
            created_at: self.now,
        }
    }

    fn event(&self, t: EventType, lead_id: LeadId, data: Value) -> Event {
        Event::new(self.ws, t, Some(lead_id), data, self.now)
    }
}

/// What a change to an endpoint writes: the endpoint as it is to be, a secret
/// rotation (new sealed secret, previous sealed secret, end of their overlap) and
/// the audit entry.
pub(crate) struct EndpointChange {
    pub(crate) endpoint: Endpoint,
    pub(crate) rotation: Option<(String, String, chrono::DateTime<chrono::Utc>)>,
    pub(crate) audit: AuditEntry,
}

/// What a change to a channel writes: the channel as it is to be, its new sealed
/// configuration (if it changes) and the audit entry.
pub(crate) struct ChannelChange {
    pub(crate) channel: Channel,
    pub(crate) sealed_config: Option<String>,
    pub(crate) audit: AuditEntry,
}

/// What a quota counts (see [`crate::Quotas`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum QuotaKind {
    Users,
    ApiKeys,
    Endpoints,
    Channels,
}

/// A per-workspace limit on rows of one kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    kind: QuotaKind,
    limit: u32,
    /// What "expired" is measured against.
    now: Ts,
}

impl Quota {
    pub(crate) fn new(kind: QuotaKind, limit: u32, now: Ts) -> Self {
        Self { kind, limit, now }
    }
}

async fn fetch_lead(conn: impl Exec<'_>, ws: WorkspaceId, id: LeadId, lock: bool) -> Result<Lead> {
    let on = conn.on();
    let sql = format!(
        "SELECT {LEAD_COLUMNS} FROM crm_leads l WHERE l.workspace_id = $1 AND l.id = $2{}",
        if lock { on.dialect().for_update() } else { "" }
    );
    query_as::<LeadRow>(&sql)
        .bind(ws)
        .bind(id)
        .fetch_optional(on)
        .await?
        .ok_or(Error::NotFound { entity: "lead" })?
        .into_lead()
}

/// Leads of the workspace holding this email (case-insensitively) or phone.
async fn find_by_contact(
    conn: &mut Tx,
    ws: WorkspaceId,
    email: Option<&Email>,
    phone: Option<&Phone>,
) -> Result<Vec<Lead>> {
    if email.is_none() && phone.is_none() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {LEAD_COLUMNS} FROM crm_leads l \
         WHERE l.workspace_id = $1 AND (l.email_key = $2 OR l.phone = $3){}",
        conn.dialect().for_update()
    );
    let rows = query_as::<LeadRow>(&sql)
        .bind(ws)
        .bind(email.map(Email::key))
        .bind(phone.map(|p| p.as_str().to_owned()))
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter().map(LeadRow::into_lead).collect()
}

/// Fails with `Conflict` when another lead (not `except`) holds the lead's email or phone.
async fn check_unique(conn: &mut Tx, lead: &Lead, except: Option<LeadId>) -> Result<()> {
    let others = find_by_contact(
        conn,
        lead.workspace_id,
        lead.email.as_ref(),
        lead.phone.as_ref(),
    )
    .await?;
    let key = lead.email.as_ref().map(Email::key);
    match others.iter().find(|o| Some(o.id) != except) {
        Some(o) if key.is_some() && o.email.as_ref().map(Email::key) == key => {
            Err(conflict("email", o.id))
        }
        Some(o) => Err(conflict("phone", o.id)),
        None => Ok(()),
    }
}

async fn insert_lead(conn: &mut Tx, l: &Lead) -> Result<()> {
    query(
        "INSERT INTO crm_leads (id, workspace_id, name, email, email_key, phone, company, budget, \
         project_type, message, source, status, notes, tags, custom, raw_input, ai_parsed, \
         created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(l.id)
    .bind(l.workspace_id)
    .bind(l.name.as_str())
    .bind(l.email.as_ref().map(Email::as_str))
    .bind(l.email.as_ref().map(Email::key))
    .bind(l.phone.as_ref().map(Phone::as_str))
    .bind(l.company.as_deref())
    .bind(l.budget.as_deref())
    .bind(l.project_type.as_deref())
    .bind(l.message.as_deref())
    .bind(l.source.as_deref())
    .bind(l.status.as_str())
    .bind(l.notes.as_deref())
    .bind(Json(json!(l.tags)))
    .bind(Json(Value::Object(l.custom.clone())))
    .bind(l.raw_input.as_deref())
    .bind(l.ai_parsed)
    .bind(Ts(l.created_at))
    .bind(Ts(l.updated_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn write_lead(conn: &mut Tx, l: &Lead) -> Result<()> {
    query(
        "UPDATE crm_leads SET name = $3, email = $4, email_key = $5, phone = $6, company = $7, \
         budget = $8, project_type = $9, message = $10, source = $11, status = $12, notes = $13, \
         tags = $14, custom = $15, raw_input = $16, updated_at = $17 \
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(l.workspace_id)
    .bind(l.id)
    .bind(l.name.as_str())
    .bind(l.email.as_ref().map(Email::as_str))
    .bind(l.email.as_ref().map(Email::key))
    .bind(l.phone.as_ref().map(Phone::as_str))
    .bind(l.company.as_deref())
    .bind(l.budget.as_deref())
    .bind(l.project_type.as_deref())
    .bind(l.message.as_deref())
    .bind(l.source.as_deref())
    .bind(l.status.as_str())
    .bind(l.notes.as_deref())
    .bind(Json(json!(l.tags)))
    .bind(Json(Value::Object(l.custom.clone())))
    .bind(l.raw_input.as_deref())
    .bind(Ts(l.updated_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_activity(conn: &mut Tx, ws: WorkspaceId, a: &Activity) -> Result<()> {
    query(
        "INSERT INTO crm_activities (id, workspace_id, lead_id, kind, description, old_status, \
         new_status, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.id)
    .bind(ws)
    .bind(a.lead_id)
    .bind(a.kind.as_str())
    .bind(a.description.as_deref())
    .bind(a.old_status.map(LeadStatus::as_str))
    .bind(a.new_status.map(LeadStatus::as_str))
    .bind(a.actor.as_deref())
    .bind(Ts(a.created_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes an event into the outbox, inside the caller's transaction, with one
/// pending job per enabled webhook endpoint and notification channel of the
/// workspace whose filter matches.
async fn insert_event(conn: &mut Tx, e: &Event) -> Result<()> {
    insert_event_row(conn, e).await?;
    let endpoints = query_as::<(Uuid, Json<Vec<String>>)>(
        "SELECT id, event_types FROM crm_webhook_endpoints WHERE workspace_id = $1 AND enabled",
    )
    .bind(e.workspace_id)
    .fetch_all(&mut *conn)
    .await?;
    let channels = query_as::<(Uuid, Json<Vec<String>>)>(
        "SELECT id, event_types FROM crm_notification_channels WHERE workspace_id = $1 AND enabled",
    )
    .bind(e.workspace_id)
    .fetch_all(&mut *conn)
    .await?;
    let targets = endpoints
        .into_iter()
        .map(|t| (JobKind::Webhook, t))
        .chain(channels.into_iter().map(|t| (JobKind::Notification, t)));
    for (kind, (target, filter)) in targets {
        if e.event_type.subscribed(&filter.0) {
            query(
                "INSERT INTO crm_jobs (id, workspace_id, kind, target_id, event_id, status, attempts, run_at, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)",
            )
            .bind(Uuid::now_v7())
            .bind(e.workspace_id)
            .bind(kind.as_str())
            .bind(target)
            .bind(e.id.0)
            .bind(Ts(e.created_at))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

async fn insert_event_row(conn: &mut Tx, e: &Event) -> Result<()> {
    query(
        "INSERT INTO crm_events (id, workspace_id, event_type, lead_id, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.id)
    .bind(e.workspace_id)
    .bind(e.event_type.as_str())
    .bind(e.lead_id.map(Uuid::from))
    .bind(Json(e.payload.clone()))
    .bind(Ts(e.created_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds an activity and its `lead.activity_added` event.
async fn record_activity(conn: &mut Tx, ctx: &Ctx<'_>, a: &Activity) -> Result<()> {
    insert_activity(conn, ctx.ws, a).await?;
    let event = ctx.event(
        EventType::LeadActivityAdded,
        a.lead_id,
        json!({ "lead_id": a.lead_id, "activity": a }),
    );
    insert_event(conn, &event).await
}

pub(crate) async fn create(pool: &Pool, ctx: &Ctx<'_>, fields: Fields) -> Result<Lead> {
    let mut tx = pool.begin_write().await?;
    let lead = fields.into_lead(ctx.ws, ctx.now);
    check_unique(&mut tx, &lead, None).await?;
    insert_lead(&mut tx, &lead).await?;
    insert_event(
        &mut tx,
        &ctx.event(EventType::LeadCreated, lead.id, json!({ "lead": lead })),
    )
    .await?;
    tx.commit().await?;
    Ok(lead)
}

/// Creates the lead, or finds the lead that already has its email (first) or phone
/// and, as `on_known` says, fills its blanks or leaves it as it is; either way
/// records the activity (and the inbound receipt, when there is one).
pub(crate) async fn capture(
    pool: &Pool,
    ctx: &Ctx<'_>,
    fields: Fields,
    activity: (ActivityKind, Option<String>),
    on_known: OnKnown,
    receipt: Option<(&str, &str)>,
) -> Result<Option<(Lead, bool)>> {
    let mut activity = activity;
    let mut tx = pool.begin_write().await?;
    if let Some((source, external_id)) = receipt {
        let seen = query_as::<(i64,)>(
            "SELECT COUNT(*) FROM crm_inbound_receipts WHERE workspace_id = $1 AND source = $2 AND external_id = $3",
        )
        .bind(ctx.ws)
        .bind(source)
        .bind(external_id)
        .fetch_one(&mut tx)
        .await?;
        if seen.0 > 0 {
            return Ok(None);
        }
    }
    let matches = find_by_contact(
        &mut tx,
        ctx.ws,
        fields.email.as_ref(),
        fields.phone.as_ref(),
    )
    .await?;
    let existing = rules::known(&matches, fields.email.as_ref(), fields.phone.as_ref());
    let (lead, created) = match existing {
        None => {
            let lead = fields.into_lead(ctx.ws, ctx.now);
            insert_lead(&mut tx, &lead).await?;
            insert_event(
                &mut tx,
                &ctx.event(EventType::LeadCreated, lead.id, json!({ "lead": lead })),
            )
            .await?;
            (lead, true)
        }
        Some(old) if matches!(on_known, OnKnown::Record(_)) => {
            if let OnKnown::Record(description) = on_known {
                activity.1 = description;
            }
            (old.clone(), false)
        }
        Some(old) => {
            let mut new = rules::merge(old, fields, &matches);
            let changed = rules::diff(old, &new);
            if !changed.is_empty() {
                new.updated_at = ctx.now;
                write_lead(&mut tx, &new).await?;
                let data = json!({ "lead": new, "changed": changed });
                insert_event(&mut tx, &ctx.event(EventType::LeadUpdated, new.id, data)).await?;
            }
            (new, false)
        }
    };
    let activity = ctx.activity(lead.id, activity.0, activity.1);
    record_activity(&mut tx, ctx, &activity).await?;
    if let Some((source, external_id)) = receipt {
        query(
            "INSERT INTO crm_inbound_receipts (workspace_id, source, external_id, lead_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(ctx.ws)
        .bind(source)
        .bind(external_id)
        .bind(lead.id)
        .bind(Ts(ctx.now))
        .execute(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some((lead, created)))
}

pub(crate) async fn get(pool: &Pool, ws: WorkspaceId, id: LeadId) -> Result<(Lead, Vec<Activity>)> {
    let mut conn = pool.acquire().await?;
    let lead = fetch_lead(&mut conn, ws, id, false).await?;
    let activities = activities_of(&mut conn, ws, id).await?;
    Ok((lead, activities))
}

pub(crate) async fn update(pool: &Pool, ctx: &Ctx<'_>, id: LeadId, patch: Patch) -> Result<Lead> {
    let mut tx = pool.begin_write().await?;
    let old = fetch_lead(&mut tx, ctx.ws, id, true).await?;
    let mut new = patch.apply(&old);
    if new.email.is_none() && new.phone.is_none() {
        return Err(no_contact());
    }
    let changed = rules::diff(&old, &new);
    if changed.is_empty() {
        return Ok(old);
    }
    if changed.contains(&"email") || changed.contains(&"phone") {
        check_unique(&mut tx, &new, Some(id)).await?;
    }
    new.updated_at = ctx.now;
    write_lead(&mut tx, &new).await?;
    if old.status != new.status {
        let activity = Activity {
            old_status: Some(old.status),
            new_status: Some(new.status),
            ..ctx.activity(id, ActivityKind::StatusChange, None)
        };
        insert_activity(&mut tx, ctx.ws, &activity).await?;
        let data = json!({ "lead": new, "old_status": old.status, "new_status": new.status });
        insert_event(&mut tx, &ctx.event(EventType::LeadStatusChanged, id, data)).await?;
    }
    let data = json!({ "lead": new, "changed": changed });
    insert_event(&mut tx, &ctx.event(EventType::LeadUpdated, id, data)).await?;
    tx.commit().await?;
    Ok(new)
}

pub(crate) async fn delete(pool: &Pool, ctx: &Ctx<'_>, id: LeadId) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let old = fetch_lead(&mut tx, ctx.ws, id, true).await?;
    query("DELETE FROM crm_leads WHERE workspace_id = $1 AND id = $2")
        .bind(ctx.ws)
        .bind(id)
        .execute(&mut tx)
        .await?;
    insert_event(
        &mut tx,
        &ctx.event(EventType::LeadDeleted, id, json!({ "lead": old })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn add_activity(
    pool: &Pool,
    ctx: &Ctx<'_>,
    id: LeadId,
    kind: ActivityKind,
    description: Option<String>,
) -> Result<Activity> {
    let mut tx = pool.begin_write().await?;
    fetch_lead(&mut tx, ctx.ws, id, true).await?;
    let activity = ctx.activity(id, kind, description);
    record_activity(&mut tx, ctx, &activity).await?;
    tx.commit().await?;
    Ok(activity)
}

async fn activities_of(conn: impl Exec<'_>, ws: WorkspaceId, id: LeadId) -> Result<Vec<Activity>> {
    let sql = format!(
        "SELECT {ACTIVITY_COLUMNS} FROM crm_activities WHERE workspace_id = $1 AND lead_id = $2 \
         ORDER BY created_at, id"
    );
    let rows = query_as::<ActivityRow>(&sql)
        .bind(ws)
        .bind(id)
        .fetch_all(conn)
        .await?;
    rows.into_iter().map(ActivityRow::into_activity).collect()
}

pub(crate) async fn activities(pool: &Pool, ws: WorkspaceId, id: LeadId) -> Result<Vec<Activity>> {
    let mut conn = pool.acquire().await?;
    fetch_lead(&mut conn, ws, id, false).await?;
    activities_of(&mut conn, ws, id).await
}

fn push_filters(d: Dialect, sql: &mut Sql<'_>, ws: WorkspaceId, q: &LeadQuery) {
    sql.push(" WHERE l.workspace_id = ").push_bind(ws.0);
    for (i, s) in q.statuses.iter().enumerate() {
        sql.push(if i == 0 { " AND l.status IN (" } else { ", " })
            .push_bind(s.as_str().to_owned());
    }
    if !q.statuses.is_empty() {
        sql.push(")");
    }
    if let Some(source) = &q.source {
        sql.push(" AND l.source = ").push_bind(source.clone());
    }
    for tag in &q.tags {
        sql.push(" AND ");
        d.push_has_tag(sql, tag.clone());
    }
    if let Some(t) = q.created_after {
        sql.push(" AND l.created_at >= ").push_bind(Ts(t));
    }
    if let Some(t) = q.created_before {
        sql.push(" AND l.created_at < ").push_bind(Ts(t));
    }
    if !q.terms.is_empty() {
        sql.push(" AND ");
        d.push_search(sql, &q.terms);
    }
}

/// Rows of a workspace-owned `table` (`id` narrows to one), oldest first.
async fn owned_rows<R>(
    pool: &Pool,
    columns: &str,
    table: &str,
    ws: WorkspaceId,
    id: Option<Uuid>,
) -> Result<Vec<R>>
where
    R: Row,
{
    let mut sql = query(format!(
        "SELECT {columns} FROM {table} WHERE workspace_id = "
    ));
    sql.push_bind(ws.0);
    if let Some(id) = id {
        sql.push(" AND id = ").push_bind(id);
    }
    sql.push(" ORDER BY id");
    sql.fetch_all(pool).await
}

/// One page (`limit + 1` rows are read to know whether another page follows) and,
/// when asked, the total.
pub(crate) async fn list(
    pool: &Pool,
    ws: WorkspaceId,
    q: &LeadQuery,
    sort: SortField,
    order: SortOrder,
    after: Option<Cursor>,
    include_total: bool,
) -> Result<(Vec<Lead>, Option<u64>)> {
    let col = sort.column();
    let (dir, op) = match order {
        SortOrder::Asc => ("ASC", ">"),
        SortOrder::Desc => ("DESC", "<"),
    };
    let mut sql = query(format!("SELECT {LEAD_COLUMNS} FROM crm_leads l"));
    push_filters(pool.dialect(), &mut sql, ws, q);
    if let Some(c) = after {
        let key = match c.key {
            Key::Time(micros) => chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| sql::Arg::from(Ts(t)))
                .ok_or_else(|| Error::invalid("cursor", "is not a cursor of this listing"))?,
            Key::Text(s) => sql::Arg::from(s),
        };
        sql.push(&format!(" AND (l.{col}, l.id) {op} ("))
            .push_bind(key)
            .push(", ")
            .push_bind(c.id.0)
            .push(")");
    }
    sql.push(&format!(
        " ORDER BY l.{col} {dir}, l.id {dir} LIMIT {}",
        q.limit + 1
    ));
    let rows: Vec<LeadRow> = sql.fetch_all(pool).await?;
    let leads = rows
        .into_iter()
        .map(LeadRow::into_lead)
        .collect::<Result<Vec<_>>>()?;

    let total = if include_total {
        let mut sql = query("SELECT COUNT(*) FROM crm_leads l");
        push_filters(pool.dialect(), &mut sql, ws, q);
        let rows: Vec<(i64,)> = sql.fetch_all(pool).await?;
        Some(
            rows.first()
                .map_or(0, |(n,)| u64::try_from(*n).unwrap_or(0)),
        )
    } else {
        None
    };
    Ok((leads, total))
}

/// Events of the workspace after `after` (by id, so in the order they were written
/// within one process), at most `limit`.
pub(crate) async fn events(
    pool: &Pool,
    ws: WorkspaceId,
    after: Option<EventId>,
    limit: u32,
) -> Result<Vec<Event>> {
    let mut sql = query(
        "SELECT id, workspace_id, event_type, lead_id, payload, created_at FROM crm_events \
         WHERE workspace_id = ",
    );
    sql.push_bind(ws.0);
    if let Some(after) = after {
        sql.push(" AND id > ").push_bind(after.0);
    }
    sql.push(&format!(" ORDER BY id LIMIT {limit}"));
    let rows: Vec<EventRow> = sql.fetch_all(pool).await?;
    rows.into_iter().map(EventRow::into_event).collect()
}

async fn insert_audit(conn: &mut Tx, a: &AuditEntry) -> Result<()> {
    query(
        "INSERT INTO crm_audit_log (id, workspace_id, actor, action, target_type, target_id, ip, \
         details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.id.0)
    .bind(a.workspace_id)
    .bind(a.actor.as_deref())
    .bind(a.action.as_str())
    .bind(a.target_type.as_deref())
    .bind(a.target_id.as_deref())
    .bind(a.ip.as_deref())
    .bind(Json(a.details.clone()))
    .bind(Ts(a.created_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Audit entries of the workspace after `after`, oldest first, at most `limit`.
pub(crate) async fn list_audit(
    pool: &Pool,
    ws: WorkspaceId,
    after: Option<AuditId>,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let mut sql = query(
        "SELECT id, workspace_id, actor, action, target_type, target_id, ip, details, created_at \
         FROM crm_audit_log WHERE workspace_id = ",
    );
    sql.push_bind(ws.0);
    if let Some(after) = after {
        sql.push(" AND id > ").push_bind(after.0);
    }
    sql.push(&format!(" ORDER BY id LIMIT {limit}"));
    let rows: Vec<AuditRow> = sql.fetch_all(pool).await?;
    Ok(rows.into_iter().map(AuditRow::into_entry).collect())
}

async fn insert_api_key(conn: &mut Tx, k: &ApiKey, hash: &str) -> Result<()> {
    query(
        "INSERT INTO crm_api_keys (id, workspace_id, name, key_hash, display_prefix, scopes, \
         created_by, created_at, updated_at, expires_at, revoked_at, last_used_at, replaced_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, NULL)",
    )
    .bind(k.id.0)
    .bind(k.workspace_id)
    .bind(k.name.as_str())
    .bind(hash)
    .bind(k.display_prefix.as_str())
    .bind(Json(json!(k.scopes)))
    .bind(k.created_by.as_deref())
    .bind(Ts(k.created_at))
    .bind(Ts(k.updated_at))
    .bind(k.expires_at.map(Ts))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Refuses an insert that would take workspace `ws` past `quota` rows of
/// `table` (those matching `filter`, an SQL condition). The workspace row is
/// locked first, so two creates cannot both see room for one.
async fn check_quota(conn: &mut Tx, ws: WorkspaceId, quota: Quota) -> Result<()> {
    let lock = format!(
        "SELECT id FROM crm_workspaces WHERE id = $1{}",
        conn.dialect().for_no_key_update()
    );
    query_as::<(Uuid,)>(&lock)
        .bind(ws)
        .fetch_optional(&mut *conn)
        .await?;
    let (table, filter, what) = match quota.kind {
        QuotaKind::Users => ("crm_users", "", "users"),
        // Live keys: neither revoked nor expired (a rotated key counts until its
        // grace period ends).
        QuotaKind::ApiKeys => (
            "crm_api_keys",
            " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            "API keys",
        ),
        QuotaKind::Endpoints => ("crm_webhook_endpoints", "", "webhook endpoints"),
        QuotaKind::Channels => ("crm_notification_channels", "", "notification channels"),
    };
    let count = format!("SELECT COUNT(*) FROM {table} WHERE workspace_id = $1{filter}");
    let mut q = query_as::<(i64,)>(&count).bind(ws);
    if matches!(quota.kind, QuotaKind::ApiKeys) {
        q = q.bind(quota.now);
    }
    let (n,) = q.fetch_one(&mut *conn).await?;
    if n >= i64::from(quota.limit) {
        return Err(Error::InvalidState {
            code: "quota_exceeded",
            message: format!(
                "the workspace has reached its quota of {} {what}",
                quota.limit
            ),
        });
    }
    Ok(())
}

pub(crate) async fn create_api_key(
    pool: &Pool,
    k: &ApiKey,
    hash: &str,
    audit: &AuditEntry,
    limit: u32,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    check_quota(
        &mut tx,
        k.workspace_id,
        Quota::new(QuotaKind::ApiKeys, limit, Ts(k.created_at)),
    )
    .await?;
    insert_api_key(&mut tx, k, hash).await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

async fn fetch_api_key(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    id: ApiKeyId,
    lock: bool,
) -> Result<ApiKey> {
    let on = conn.on();
    let sql = format!(
        "SELECT {API_KEY_COLUMNS} FROM crm_api_keys WHERE workspace_id = $1 AND id = $2{}",
        if lock { on.dialect().for_update() } else { "" }
    );
    query_as::<ApiKeyRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .fetch_optional(on)
        .await?
        .ok_or(Error::NotFound { entity: "api key" })?
        .into_key()
}

pub(crate) async fn get_api_key(pool: &Pool, ws: WorkspaceId, id: ApiKeyId) -> Result<ApiKey> {
    let mut conn = pool.acquire().await?;
    fetch_api_key(&mut conn, ws, id, false).await
}

pub(crate) async fn list_api_keys(pool: &Pool, ws: WorkspaceId) -> Result<Vec<ApiKey>> {
    let rows: Vec<ApiKeyRow> = owned_rows(pool, API_KEY_COLUMNS, "crm_api_keys", ws, None).await?;
    rows.into_iter().map(ApiKeyRow::into_key).collect()
}

/// Looks a key up by the hex SHA-256 of the whole key, in any workspace.
pub(crate) async fn find_api_key(pool: &Pool, hash: &str) -> Result<Option<ApiKey>> {
    let mut sql = query(format!(
        "SELECT {API_KEY_COLUMNS} FROM crm_api_keys WHERE key_hash = "
    ));
    sql.push_bind(hash.to_owned());
    let rows: Vec<ApiKeyRow> = sql.fetch_all(pool).await?;
    rows.into_iter().next().map(ApiKeyRow::into_key).transpose()
}

/// Reads the key under a lock, lets `f` decide the change, and writes it with its
/// audit entry (and the new key of a rotation) in one transaction.
pub(crate) async fn change_api_key<F>(
    pool: &Pool,
    ws: WorkspaceId,
    id: ApiKeyId,
    f: F,
) -> Result<(ApiKey, Option<ApiKey>)>
where
    F: FnOnce(ApiKey) -> Result<KeyChange> + Send,
{
    let mut tx = pool.begin_write().await?;
    let old = fetch_api_key(&mut tx, ws, id, true).await?;
    let change = f(old)?;
    let k = &change.key;
    if let Some((new, hash)) = &change.new_key {
        insert_api_key(&mut tx, new, hash).await?;
    }
    query(
        "UPDATE crm_api_keys SET name = $3, scopes = $4, updated_at = $5, expires_at = $6, \
         revoked_at = $7, replaced_by = $8 WHERE workspace_id = $1 AND id = $2",
    )
    .bind(ws)
    .bind(id.0)
    .bind(k.name.as_str())
    .bind(Json(json!(k.scopes)))
    .bind(Ts(k.updated_at))
    .bind(k.expires_at.map(Ts))
    .bind(k.revoked_at.map(Ts))
    .bind(k.replaced_by.map(|r| r.0))
    .execute(&mut tx)
    .await?;
    insert_audit(&mut tx, &change.audit).await?;
    tx.commit().await?;
    Ok((change.key, change.new_key.map(|(k, _)| k)))
}

/// Records a use; never moves `last_used_at` backwards.
pub(crate) async fn touch_api_key(
    pool: &Pool,
    id: ApiKeyId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    query(
        "UPDATE crm_api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
    )
    .bind(id.0)
    .bind(Ts(now))
    .execute(pool)
    .await?;
    Ok(())
}

async fn insert_user(conn: &mut Tx, u: &User, hash: &str) -> Result<()> {
    query(
        "INSERT INTO crm_users (id, workspace_id, email, email_key, display_name, role, password_hash, \
         email_verified_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(u.id.0)
    .bind(u.workspace_id)
    .bind(u.email.as_str())
    .bind(u.email.key())
    .bind(u.display_name.as_str())
    .bind(u.role.as_str())
    .bind(hash)
    .bind(u.email_verified_at.map(Ts))
    .bind(Ts(u.created_at))
    .bind(Ts(u.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| match Error::from(e) {
        Error::Conflict { .. } => Error::Conflict {
            message: "a user with this email already exists".into(),
            field: Some("email"),
            existing_id: None,
        },
        other => other,
    })?;
    Ok(())
}

/// Inserts a user (and first its new workspace, for a registration) with its audit entry.
pub(crate) async fn create_user(
    pool: &Pool,
    new_workspace: Option<&str>,
    u: &User,
    hash: &str,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    if let Some(name) = new_workspace {
        query("INSERT INTO crm_workspaces (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(u.workspace_id)
            .bind(name)
            .bind(Ts(u.created_at))
            .execute(&mut tx)
            .await?;
    }
    insert_user(&mut tx, u, hash).await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Creates a user on behalf of `by` (a user of the workspace, read and locked in
/// the same transaction; `None`: the app), when `check` allows it.
pub(crate) async fn create_user_by(
    pool: &Pool,
    u: &User,
    hash: &str,
    audit: &AuditEntry,
    by: Option<UserId>,
    check: impl FnOnce(Option<&User>) -> Result<()>,
    users_quota: u32,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let actor = match by {
        Some(a) => Some(actor_row(fetch_user(&mut tx, u.workspace_id, a).await)?),
        None => None,
    };
    check(actor.as_ref())?;
    check_quota(
        &mut tx,
        u.workspace_id,
        Quota::new(QuotaKind::Users, users_quota, Ts(u.created_at)),
    )
    .await?;
    insert_user(&mut tx, u, hash).await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// The users a change by `by` to user `id` involves, read and locked in one
/// statement in id order (so two such changes cannot deadlock): the target, the
/// actor (`Forbidden` when they are not a user of the workspace) and the number of
/// the workspace's owners.
async fn lock_parties(
    conn: &mut Tx,
    ws: WorkspaceId,
    id: UserId,
    by: Option<UserId>,
) -> Result<(User, Option<User>, usize)> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM crm_users WHERE workspace_id = $1 \
         AND (id = $2 OR id = $3 OR role = 'owner') ORDER BY id{}",
        conn.dialect().for_update()
    );
    let rows = query_as::<UserRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .bind(by.map_or(id.0, |a| a.0))
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| r.into_user().map(|(u, _)| u))
        .collect::<Result<Vec<User>>>()?;
    let find = |want: UserId| rows.iter().find(|u| u.id == want).cloned();
    let target = find(id).ok_or(Error::NotFound { entity: "user" })?;
    let actor = match by {
        Some(a) => Some(
            find(a)
                .filter(|u| u.disabled_at.is_none())
                .ok_or(Error::Forbidden)?,
        ),
        None => None,
    };
    // Owners who can still sign in: a disabled owner keeps no workspace running.
    let owners = rows
        .iter()
        .filter(|u| u.role == Role::Owner && u.disabled_at.is_none())
        .count();
    Ok((target, actor, owners))
}

/// Changes one user's role when `check(actor, target, owners)` allows it: the
/// target, the actor and every owner of the workspace are read and locked in one
/// statement (in id order, so two such changes cannot deadlock), the role column
/// alone is written, and the audit entry goes in the same transaction. Returns
/// the user as it is now.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn set_role(
    pool: &Pool,
    ws: WorkspaceId,
    id: UserId,
    role: Role,
    by: Option<UserId>,
    now: Ts,
    check: impl FnOnce(Option<&User>, &User, usize) -> Result<()>,
    audit: impl FnOnce(&User) -> AuditEntry,
) -> Result<User> {
    let mut tx = pool.begin_write().await?;
    let (mut target, actor, owners) = lock_parties(&mut tx, ws, id, by).await?;
    check(actor.as_ref(), &target, owners)?;
    if target.role == role {
        return Ok(target);
    }
    let entry = audit(&target);
    query("UPDATE crm_users SET role = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2")
        .bind(ws)
        .bind(id.0)
        .bind(role.as_str())
        .bind(now)
        .execute(&mut tx)
        .await?;
    insert_audit(&mut tx, &entry).await?;
    tx.commit().await?;
    target.role = role;
    target.updated_at = now.0;
    Ok(target)
}

/// Disables, enables or deletes user `id`, or ends their sessions, on behalf of
/// `by` when `check(actor, target, active_owners)` allows it: the parties are
/// locked as for [`set_role`]. Disabling and deleting end the user's
/// sessions and reset/verification tokens, with the audit entry, in the same
/// transaction (deleting also forgets their failed attempts). A change that
/// changes nothing writes nothing, audit entry included. Returns the user as it
/// is now and how many sessions ended.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn user_access(
    pool: &Pool,
    ws: WorkspaceId,
    id: UserId,
    by: Option<UserId>,
    access: UserAccess,
    now: Ts,
    check: impl FnOnce(Option<&User>, &User, usize) -> Result<()>,
    audit: impl FnOnce(&User) -> AuditEntry,
) -> Result<(User, u64)> {
    let mut tx = pool.begin_write().await?;
    let (mut target, actor, owners) = lock_parties(&mut tx, ws, id, by).await?;
    check(actor.as_ref(), &target, owners)?;
    let ended = match access {
        UserAccess::EndSessions => {
            let n = delete_sessions(&mut tx, &target, None, None).await?;
            if n == 0 {
                // Nothing ended: nothing to audit.
                return Ok((target, 0));
            }
            n
        }
        UserAccess::Enable => {
            if target.disabled_at.is_none() {
                return Ok((target, 0));
            }
            target.disabled_at = None;
            0
        }
        UserAccess::Disable if target.disabled_at.is_some() => {
            // Already disabled: nothing changes (its sessions and links ended then).
            return Ok((target, 0));
        }
        UserAccess::Disable => {
            let n = delete_sessions(&mut tx, &target, None, None).await?;
            end_tokens(&mut tx, &target).await?;
            target.disabled_at = Some(now.0);
            n
        }
        UserAccess::Delete => {
            let n = delete_sessions(&mut tx, &target, None, None).await?;
            end_tokens(&mut tx, &target).await?;
            // The address may come back as a new user: no lockout carries over.
            clear_throttle(&mut tx, ws, &target.email.key()).await?;
            n
        }
    };
    let entry = audit(&target);
    if access == UserAccess::Delete {
        query("DELETE FROM crm_users WHERE workspace_id = $1 AND id = $2")
            .bind(ws)
            .bind(id.0)
            .execute(&mut tx)
            .await?;
    } else if access != UserAccess::EndSessions {
        target.updated_at = now.0;
        query(
            "UPDATE crm_users SET disabled_at = $3, updated_at = $4 \
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(ws)
        .bind(id.0)
        .bind(target.disabled_at.map(Ts))
        .bind(now)
        .execute(&mut tx)
        .await?;
    }
    insert_audit(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok((target, ended))
}

/// A user's live sessions, newest first.
pub(crate) async fn list_sessions(pool: &Pool, u: &User, now: Ts) -> Result<Vec<Session>> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM crm_sessions WHERE workspace_id = $1 AND user_id = $2 \
         AND expires_at > $3 AND absolute_expires_at > $3 ORDER BY created_at DESC, id DESC"
    );
    Ok(query_as::<SessionRow>(&sql)
        .bind(u.workspace_id)
        .bind(u.id.0)
        .bind(now)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(SessionRow::into_session)
        .collect())
}

async fn fetch_user(conn: impl Exec<'_>, ws: WorkspaceId, id: UserId) -> Result<(User, String)> {
    let on = conn.on();
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM crm_users WHERE workspace_id = $1 AND id = $2{}",
        on.dialect().for_update()
    );
    query_as::<UserRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .fetch_optional(on)
        .await?
        .ok_or(Error::NotFound { entity: "user" })?
        .into_user()
}

pub(crate) async fn get_user(pool: &Pool, ws: WorkspaceId, id: UserId) -> Result<(User, String)> {
    let rows: Vec<UserRow> = owned_rows(pool, USER_COLUMNS, "crm_users", ws, Some(id.0)).await?;
    rows.into_iter()
        .next()
        .ok_or(Error::NotFound { entity: "user" })?
        .into_user()
}

pub(crate) async fn list_users(pool: &Pool, ws: WorkspaceId) -> Result<Vec<User>> {
    let rows: Vec<UserRow> = owned_rows(pool, USER_COLUMNS, "crm_users", ws, None).await?;
    rows.into_iter()
        .map(|r| r.into_user().map(|(u, _)| u))
        .collect()
}

/// Writes a new password hash (and `updated_at`), nothing else of the row. With
/// `only_if` it is one conditional UPDATE: it writes only while the stored hash is
/// still that one, and says whether it did.
async fn write_password(
    conn: &mut Tx,
    u: &User,
    hash: &str,
    only_if: Option<&str>,
    now: Ts,
) -> Result<bool> {
    let sql = if only_if.is_some() {
        "UPDATE crm_users SET password_hash = $3, updated_at = $4 \
         WHERE workspace_id = $1 AND id = $2 AND password_hash = $5"
    } else {
        "UPDATE crm_users SET password_hash = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2"
    };
    let mut q = query(sql)
        .bind(u.workspace_id)
        .bind(u.id.0)
        .bind(hash)
        .bind(now);
    if let Some(old) = only_if {
        q = q.bind(old);
    }
    Ok(q.execute(&mut *conn).await? == 1)
}

/// Ends every reset and verification token of the user (a new password makes the
/// links mailed before it worthless).
async fn end_tokens(conn: &mut Tx, u: &User) -> Result<()> {
    query("DELETE FROM crm_auth_tokens WHERE workspace_id = $1 AND user_id = $2")
        .bind(u.workspace_id)
        .bind(u.id.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn delete_sessions(
    conn: &mut Tx,
    u: &User,
    only: Option<SessionId>,
    except: Option<SessionId>,
) -> Result<u64> {
    let mut sql = query("DELETE FROM crm_sessions WHERE workspace_id = ");
    sql.push_bind(u.workspace_id.0)
        .push(" AND user_id = ")
        .push_bind(u.id.0);
    if let Some(id) = only {
        sql.push(" AND id = ").push_bind(id.0);
    }
    if let Some(id) = except {
        sql.push(" AND id <> ").push_bind(id.0);
    }
    sql.execute(&mut *conn).await
}

/// Changes a password the caller verified against `old_hash`: one conditional
/// UPDATE of the hash alone (`false` when the password changed meanwhile, and
/// nothing is written), then every session but `keep` and every reset and
/// verification token end and the failed attempts are forgotten, with the audit
/// entry, in the same transaction.
pub(crate) async fn change_password(
    pool: &Pool,
    u: &User,
    old_hash: &str,
    new_hash: &str,
    keep: Option<SessionId>,
    now: Ts,
    audit: &AuditEntry,
) -> Result<bool> {
    let mut tx = pool.begin_write().await?;
    if !write_password(&mut tx, u, new_hash, Some(old_hash), now).await? {
        return Ok(false);
    }
    delete_sessions(&mut tx, u, None, keep).await?;
    end_tokens(&mut tx, u).await?;
    clear_throttle(&mut tx, u.workspace_id, &u.email.key()).await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(true)
}

async fn fetch_throttle(
    conn: impl Exec<'_>,
    ws: WorkspaceId,
    email_key: &str,
    lock: bool,
) -> Result<Option<Throttle>> {
    let on = conn.on();
    let sql = format!(
        "SELECT failures, window_start, lockouts, locked_until FROM crm_login_throttle \
         WHERE workspace_id = $1 AND email_key = $2{}",
        if lock { on.dialect().for_update() } else { "" }
    );
    let row = query_as::<ThrottleRow>(&sql)
        .bind(ws)
        .bind(email_key)
        .fetch_optional(on)
        .await?;
    Ok(row.map(|r| Throttle {
        failures: r.failures,
        window_start: r.window_start.0,
        lockouts: r.lockouts,
        locked_until: r.locked_until.map(|t| t.0),
    }))
}

/// The throttle state of an email and its user, if any.
pub(crate) async fn login_lookup(
    pool: &Pool,
    ws: WorkspaceId,
    email_key: &str,
) -> Result<(Option<Throttle>, Option<(User, String)>)> {
    let mut conn = pool.acquire().await?;
    let t = fetch_throttle(&mut conn, ws, email_key, false).await?;
    let sql =
        format!("SELECT {USER_COLUMNS} FROM crm_users WHERE workspace_id = $1 AND email_key = $2");
    let user = query_as::<UserRow>(&sql)
        .bind(ws)
        .bind(email_key)
        .fetch_optional(&mut conn)
        .await?
        .map(UserRow::into_user)
        .transpose()?;
    Ok((t, user))
}

/// Counts one password attempt on `email_key` before the password is checked:
/// `f` gets the locked throttle row and returns its next state, or an error (the
/// account is locked) that writes nothing. N attempts at once are counted one
/// after the other, so no more than the policy allows reach the password check.
pub(crate) async fn count_attempt<F>(
    pool: &Pool,
    ws: WorkspaceId,
    email_key: &str,
    now: chrono::DateTime<chrono::Utc>,
    f: F,
) -> Result<()>
where
    F: FnOnce(Option<Throttle>) -> Result<Throttle> + Send,
{
    let mut tx = pool.begin_write().await?;
    // Make sure the row exists, so the locking read below serialises even the
    // first attempts of an email (two inserts racing would each count one).
    query(
        "INSERT INTO crm_login_throttle (workspace_id, email_key, failures, window_start, lockouts, locked_until) \
         VALUES ($1, $2, 0, $3, 0, NULL) ON CONFLICT (workspace_id, email_key) DO NOTHING",
    )
    .bind(ws)
    .bind(email_key)
    .bind(Ts(now))
    .execute(&mut tx)
    .await?;
    let current = fetch_throttle(&mut tx, ws, email_key, true).await?;
    let t = f(current)?;
    // An upsert, not an UPDATE: a success clearing the row since the read above
    // must not make this attempt go uncounted.
    query(
        "INSERT INTO crm_login_throttle (workspace_id, email_key, failures, window_start, lockouts, locked_until) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace_id, email_key) DO UPDATE SET \
         failures = $3, window_start = $4, lockouts = $5, locked_until = $6",
    )
    .bind(ws)
    .bind(email_key)
    .bind(t.failures)
    .bind(Ts(t.window_start))
    .bind(t.lockouts)
    .bind(t.locked_until.map(Ts))
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Writes audit entries on their own (in one transaction).
pub(crate) async fn insert_audits(pool: &Pool, entries: &[AuditEntry]) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    for a in entries {
        insert_audit(&mut tx, a).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn clear_throttle(conn: &mut Tx, ws: WorkspaceId, email_key: &str) -> Result<()> {
    query("DELETE FROM crm_login_throttle WHERE workspace_id = $1 AND email_key = $2")
        .bind(ws)
        .bind(email_key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets the counted attempts and any lockout of `u`, when `check(actor, target)`
/// allows `by` (the rows read and locked as for `set_role`).
pub(crate) async fn lift_lockout(
    pool: &Pool,
    u: &User,
    by: Option<UserId>,
    check: impl FnOnce(Option<&User>, &User) -> Result<()>,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    let (target, actor, _) = lock_parties(&mut tx, u.workspace_id, u.id, by).await?;
    check(actor.as_ref(), &target)?;
    clear_throttle(&mut tx, u.workspace_id, &u.email.key()).await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn login_succeeded(
    pool: &Pool,
    u: &User,
    email_key: &str,
    (verified_hash, rehash): (&str, Option<&str>),
    s: &Session,
    token_hash: &str,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    // The password verified outside this transaction (Argon2 is slow) must still
    // be the user's: a change or reset meanwhile ended every session, and a login
    // with the old password must not start a new one.
    let (now_user, current) = fetch_user(&mut tx, u.workspace_id, u.id).await?;
    if current != verified_hash || now_user.disabled_at.is_some() {
        return Err(Error::unauthorized(crate::AuthFailure::InvalidCredentials));
    }
    clear_throttle(&mut tx, u.workspace_id, email_key).await?;
    if let Some(hash) = rehash {
        query("UPDATE crm_users SET password_hash = $3 WHERE workspace_id = $1 AND id = $2")
            .bind(u.workspace_id)
            .bind(u.id.0)
            .bind(hash)
            .execute(&mut tx)
            .await?;
    }
    query(
        "INSERT INTO crm_sessions (id, workspace_id, user_id, token_hash, remember, ip, user_agent, \
         created_at, last_seen_at, expires_at, absolute_expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(s.id.0)
    .bind(s.workspace_id)
    .bind(s.user_id.0)
    .bind(token_hash)
    .bind(s.remember)
    .bind(s.ip.as_deref())
    .bind(s.user_agent.as_deref())
    .bind(Ts(s.created_at))
    .bind(Ts(s.last_seen_at))
    .bind(Ts(s.expires_at))
    .bind(Ts(s.absolute_expires_at))
    .execute(&mut tx)
    .await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn find_session(pool: &Pool, token_hash: &str) -> Result<Option<Session>> {
    let mut sql = query(format!(
        "SELECT {SESSION_COLUMNS} FROM crm_sessions WHERE token_hash = "
    ));
    sql.push_bind(token_hash.to_owned());
    let rows: Vec<SessionRow> = sql.fetch_all(pool).await?;
    Ok(rows.into_iter().next().map(SessionRow::into_session))
}

pub(crate) async fn refresh_session(pool: &Pool, s: &Session) -> Result<()> {
    query("UPDATE crm_sessions SET last_seen_at = $2, expires_at = $3 WHERE id = $1")
        .bind(s.id.0)
        .bind(Ts(s.last_seen_at))
        .bind(Ts(s.expires_at))
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends one session (`only`) or all of the user's (but `except`), with an audit
/// entry when any ended.
pub(crate) async fn end_sessions(
    pool: &Pool,
    u: &User,
    only: Option<SessionId>,
    except: Option<SessionId>,
    audit: &AuditEntry,
) -> Result<u64> {
    let mut tx = pool.begin_write().await?;
    let n = delete_sessions(&mut tx, u, only, except).await?;
    if n == 0 {
        // Nothing ended: nothing to audit either.
        return Ok(0);
    }
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(n)
}

pub(crate) async fn cleanup_auth(pool: &Pool, now: chrono::DateTime<chrono::Utc>) -> Result<u64> {
    let a = query("DELETE FROM crm_sessions WHERE expires_at <= $1 OR absolute_expires_at <= $1")
        .bind(Ts(now))
        .execute(pool)
        .await?;
    let b = query("DELETE FROM crm_auth_tokens WHERE used_at IS NOT NULL OR expires_at <= $1")
        .bind(Ts(now))
        .execute(pool)
        .await?;
    Ok(a + b)
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_token(
    pool: &Pool,
    u: &User,
    purpose: &str,
    token_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query(
        "INSERT INTO crm_auth_tokens (id, workspace_id, user_id, purpose, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(u.workspace_id)
    .bind(u.id.0)
    .bind(purpose)
    .bind(token_hash)
    .bind(Ts(now))
    .bind(Ts(expires_at))
    .execute(&mut tx)
    .await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Marks an unused, unexpired token of `purpose` used and returns its user, locked.
async fn consume_token(
    conn: &mut Tx,
    token_hash: &str,
    purpose: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(User, String)> {
    let invalid = || Error::unauthorized(crate::AuthFailure::InvalidToken);
    // The user row first, then the token: the order a password change takes
    // (user, then its tokens), so the two cannot deadlock on Postgres.
    let owner = query_as::<TokenOwner>(
        "SELECT workspace_id, user_id FROM crm_auth_tokens WHERE token_hash = $1 AND purpose = $2",
    )
    .bind(token_hash)
    .bind(purpose)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(invalid)?;
    let user = fetch_user(&mut *conn, owner.workspace_id, owner.user_id).await?;
    // A disabled user's links end with the disabling; one mailed in the moment
    // before it still finds the user disabled here.
    if user.0.disabled_at.is_some() {
        return Err(invalid());
    }
    let used = query(
        "UPDATE crm_auth_tokens SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 \
         AND used_at IS NULL AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(purpose)
    .bind(Ts(now))
    .execute(&mut *conn)
    .await?;
    if used != 1 {
        return Err(invalid());
    }
    Ok(user)
}

/// Whether an unused, unexpired token of `purpose` has this hash (a read only).
pub(crate) async fn token_is_live(
    pool: &Pool,
    token_hash: &str,
    purpose: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool> {
    let n = query_as::<(i64,)>(
        "SELECT COUNT(*) FROM crm_auth_tokens WHERE token_hash = $1 AND purpose = $2 \
         AND used_at IS NULL AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(purpose)
    .bind(Ts(now))
    .fetch_one(pool)
    .await?;
    Ok(n.0 > 0)
}

pub(crate) async fn reset_password(
    pool: &Pool,
    token_hash: &str,
    new_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<User> {
    let mut tx = pool.begin_write().await?;
    let (mut u, _) = consume_token(&mut tx, token_hash, RESET, now).await?;
    u.updated_at = now;
    write_password(&mut tx, &u, new_hash, None, Ts(now)).await?;
    delete_sessions(&mut tx, &u, None, None).await?;
    end_tokens(&mut tx, &u).await?;
    clear_throttle(&mut tx, u.workspace_id, &u.email.key()).await?;
    let audit = AuditEntry::new(
        u.workspace_id,
        None,
        "password.reset",
        ("user", u.id.to_string()),
        json!({}),
        now,
    );
    insert_audit(&mut tx, &audit).await?;
    tx.commit().await?;
    Ok(u)
}

pub(crate) async fn verify_email(
    pool: &Pool,
    token_hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<User> {
    let mut tx = pool.begin_write().await?;
    let (mut u, _) = consume_token(&mut tx, token_hash, VERIFY, now).await?;
    u.email_verified_at.get_or_insert(now);
    u.updated_at = now;
    query(
        "UPDATE crm_users SET email_verified_at = $3, updated_at = $4 \
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(u.workspace_id)
    .bind(u.id.0)
    .bind(u.email_verified_at.map(Ts))
    .bind(Ts(now))
    .execute(&mut tx)
    .await?;
    let audit = AuditEntry::new(
        u.workspace_id,
        None,
        "email.verified",
        ("user", u.id.to_string()),
        json!({}),
        now,
    );
    insert_audit(&mut tx, &audit).await?;
    tx.commit().await?;
    Ok(u)
}

async fn write_endpoint(conn: &mut Tx, ep: &Endpoint) -> Result<()> {
    query(
        "UPDATE crm_webhook_endpoints SET url = $3, description = $4, event_types = $5, enabled = $6, \
         rate_limit_per_minute = $7, consecutive_failures = $8, disabled_reason = $9, updated_at = $10 \
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(ep.workspace_id)
    .bind(ep.id.0)
    .bind(ep.url.as_str())
    .bind(ep.description.as_deref())
    .bind(Json(json!(ep.event_types)))
    .bind(ep.enabled)
    .bind(ep.rate_limit_per_minute.map(i64::from))
    .bind(i64::from(ep.consecutive_failures))
    .bind(ep.disabled_reason.as_deref())
    .bind(Ts(ep.updated_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn create_endpoint(
    pool: &Pool,
    ep: &Endpoint,
    sealed: &str,
    audit: &AuditEntry,
    limit: u32,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    check_quota(
        &mut tx,
        ep.workspace_id,
        Quota::new(QuotaKind::Endpoints, limit, Ts(ep.created_at)),
    )
    .await?;
    query(
        "INSERT INTO crm_webhook_endpoints (id, workspace_id, url, description, event_types, enabled, secret, \
         rate_limit_per_minute, consecutive_failures, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10)",
    )
    .bind(ep.id.0)
    .bind(ep.workspace_id)
    .bind(ep.url.as_str())
    .bind(ep.description.as_deref())
    .bind(Json(json!(ep.event_types)))
    .bind(ep.enabled)
    .bind(sealed)
    .bind(ep.rate_limit_per_minute.map(i64::from))
    .bind(Ts(ep.created_at))
    .bind(Ts(ep.updated_at))
    .execute(&mut tx)
    .await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn list_endpoints(pool: &Pool, ws: WorkspaceId) -> Result<Vec<Endpoint>> {
    let rows: Vec<EndpointRow> =
        owned_rows(pool, ENDPOINT_COLUMNS, "crm_webhook_endpoints", ws, None).await?;
    Ok(rows.into_iter().map(|r| r.into_endpoint().0).collect())
}

pub(crate) async fn get_endpoint(
    pool: &Pool,
    ws: WorkspaceId,
    id: EndpointId,
) -> Result<(Endpoint, SealedSecrets)> {
    let rows: Vec<EndpointRow> = owned_rows(
        pool,
        ENDPOINT_COLUMNS,
        "crm_webhook_endpoints",
        ws,
        Some(id.0),
    )
    .await?;
    let row = rows.into_iter().next().ok_or(Error::NotFound {
        entity: "webhook endpoint",
    })?;
    Ok(row.into_endpoint())
}

/// The one way to change an endpoint: it is read and locked in a write
/// transaction, `f` decides the change from the row as it is now, and the change
/// is written with its audit entry before the lock goes. A delivery that disables
/// the endpoint meanwhile waits for the lock or is seen by `f`: never undone.
pub(crate) async fn change_endpoint<F>(
    pool: &Pool,
    ws: WorkspaceId,
    id: EndpointId,
    f: F,
) -> Result<Endpoint>
where
    F: FnOnce(Endpoint, SealedSecrets) -> Result<EndpointChange>,
{
    let mut tx = pool.begin_write().await?;
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM crm_webhook_endpoints WHERE workspace_id = $1 AND id = $2{}",
        tx.dialect().for_update()
    );
    let (ep, sealed) = query_as::<EndpointRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .fetch_optional(&mut tx)
        .await?
        .ok_or(Error::NotFound {
            entity: "webhook endpoint",
        })?
        .into_endpoint();
    let change = f(ep, sealed)?;
    let ep = &change.endpoint;
    write_endpoint(&mut tx, ep).await?;
    if let Some((new, previous, until)) = &change.rotation {
        query(
            "UPDATE crm_webhook_endpoints SET secret = $3, previous_secret = $4, previous_secret_until = $5 \
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(ep.workspace_id)
        .bind(ep.id.0)
        .bind(new.as_str())
        .bind(previous.as_str())
        .bind(Ts(*until))
        .execute(&mut tx)
        .await?;
    }
    insert_audit(&mut tx, &change.audit).await?;
    tx.commit().await?;
    Ok(change.endpoint)
}

pub(crate) async fn delete_endpoint(
    pool: &Pool,
    ws: WorkspaceId,
    id: EndpointId,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query("DELETE FROM crm_jobs WHERE workspace_id = $1 AND target_id = $2")
        .bind(ws)
        .bind(id.0)
        .execute(&mut tx)
        .await?;
    query("DELETE FROM crm_webhook_endpoints WHERE workspace_id = $1 AND id = $2")
        .bind(ws)
        .bind(id.0)
        .execute(&mut tx)
        .await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Takes the lease of up to `n` due jobs: pending, due, and not leased (or leased
/// by a worker whose lease ran out); Postgres skips rows another worker is
/// claiming, SQLite's write lock serialises claims. Claims up to `n` due jobs, fairly: no target (webhook endpoint or channel) gets
/// more than `per_target` jobs in flight across every process (jobs leased and
/// not yet finished count), and the first due job of every target comes before
/// the second of any, so a slow endpoint with a long queue holds at most
/// `per_target` slots and the jobs of other endpoints and workspaces still flow.
pub(crate) async fn claim_jobs(
    pool: &Pool,
    now: chrono::DateTime<chrono::Utc>,
    lease_until: chrono::DateTime<chrono::Utc>,
    token: Uuid,
    (n, per_target): (usize, usize),
    only_kind: Option<JobKind>,
) -> Result<Vec<ClaimedJob>> {
    let kind = if only_kind.is_some() {
        " AND j.kind = $4"
    } else {
        ""
    };
    // The ranking reads without locks (Postgres allows no FOR UPDATE beside a
    // window function); the rows are then locked, skipping those another worker
    // is claiming, and checked again.
    let sql = format!(
        "WITH busy AS (SELECT target_id, COUNT(*) AS n FROM crm_jobs \
           WHERE status = 'pending' AND lease_until >= $3 GROUP BY target_id), \
         ranked AS (SELECT j.id, j.run_at, COALESCE(b.n, 0) AS busy, \
           ROW_NUMBER() OVER (PARTITION BY j.target_id ORDER BY j.run_at, j.id) AS rn \
           FROM crm_jobs j LEFT JOIN busy b ON b.target_id = j.target_id \
           WHERE j.status = 'pending' AND j.run_at <= $3 \
           AND (j.lease_until IS NULL OR j.lease_until < $3){kind}), \
         picked AS (SELECT id FROM ranked WHERE rn + busy <= {per_target} \
           ORDER BY rn, run_at, id LIMIT {n}) \
         UPDATE crm_jobs SET lease_until = $1, lease_token = $2, attempts = attempts + 1, updated_at = $3 \
         WHERE id IN (SELECT id FROM crm_jobs WHERE id IN (SELECT id FROM picked) \
           AND status = 'pending' AND (lease_until IS NULL OR lease_until < $3){}) \
         RETURNING id, kind, workspace_id, target_id, event_id, attempts",
        pool.dialect().skip_locked()
    );
    let mut tx = pool.begin_write().await?;
    let mut query = query_as::<ClaimedJob>(&sql)
        .bind(Ts(lease_until))
        .bind(token)
        .bind(Ts(now));
    if let Some(k) = only_kind {
        query = query.bind(k.as_str());
    }
    let jobs = query.fetch_all(&mut tx).await?;
    tx.commit().await?;
    Ok(jobs)
}

/// Gives a claimed job back untried (its attempt is not counted), to run at `run_at`.
pub(crate) async fn release_job(
    pool: &Pool,
    id: JobId,
    token: Uuid,
    run_at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    query(
        "UPDATE crm_jobs SET lease_until = NULL, lease_token = NULL, attempts = attempts - 1, run_at = $3 \
         WHERE id = $1 AND lease_token = $2",
    )
    .bind(id.0)
    .bind(token)
    .bind(Ts(run_at))
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends a job without an attempt (its endpoint is gone or disabled).
pub(crate) async fn cancel_job(pool: &Pool, id: JobId, token: Uuid) -> Result<()> {
    query(
        "UPDATE crm_jobs SET status = $3, lease_until = NULL, lease_token = NULL WHERE id = $1 AND lease_token = $2",
    )
    .bind(id.0)
    .bind(token)
    .bind(JobStatus::Cancelled.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn event_by_id(pool: &Pool, id: Uuid) -> Result<Option<Event>> {
    let mut sql = query("SELECT id, workspace_id, event_type, lead_id, payload, created_at FROM crm_events WHERE id = ");
    sql.push_bind(id);
    let rows: Vec<EventRow> = sql.fetch_all(pool).await?;
    rows.into_iter()
        .next()
        .map(EventRow::into_event)
        .transpose()
}

/// Records an attempt and moves the job and the endpoint's health on, in one
/// transaction. The job only moves if this worker still holds its lease.
pub(crate) async fn finish_job(
    pool: &Pool,
    f: &Finish<'_>,
    audit: Option<&AuditEntry>,
) -> Result<bool> {
    let a = f.attempt;
    let now = a.created_at;
    let mut tx = pool.begin_write().await?;
    query(
        "INSERT INTO crm_delivery_attempts (id, workspace_id, job_id, kind, target_id, event_id, attempt, status_code, \
         response_body, duration_ms, error_kind, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(a.id)
    .bind(f.job.workspace_id)
    .bind(a.job_id)
    .bind(a.kind.as_str())
    .bind(a.target_id)
    .bind(a.event_id.0)
    .bind(i64::from(a.attempt))
    .bind(a.status_code.map(i64::from))
    .bind(a.response_body.as_deref())
    .bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
    .bind(a.error_kind.as_deref())
    .bind(a.next_attempt_at.map(Ts))
    .bind(Ts(now))
    .execute(&mut tx)
    .await?;
    let moved = query(
        "UPDATE crm_jobs SET status = $3, run_at = COALESCE($4, run_at), lease_until = NULL, lease_token = NULL, \
         updated_at = $5 WHERE id = $1 AND lease_token = $2",
    )
    .bind(a.job_id)
    .bind(f.token)
    .bind(f.job_status.as_str())
    .bind(a.next_attempt_at.map(Ts))
    .bind(Ts(now))
    .execute(&mut tx)
    .await?;
    if a.kind != "webhook" {
        // Channels keep no delivery health; their attempts are in the log.
    } else if f.success {
        query(
            "UPDATE crm_webhook_endpoints SET consecutive_failures = 0, last_success_at = $2 WHERE id = $1",
        )
        .bind(a.target_id)
        .bind(Ts(now))
        .execute(&mut tx)
        .await?;
    } else {
        query(
            "UPDATE crm_webhook_endpoints SET consecutive_failures = consecutive_failures + 1, last_failure_at = $2 \
             WHERE id = $1",
        )
        .bind(a.target_id)
        .bind(Ts(now))
        .execute(&mut tx)
        .await?;
        // Disabled for a 410, or once the failures reach the limit.
        let disabled = query(
            "UPDATE crm_webhook_endpoints SET enabled = $2, disabled_reason = $3, updated_at = $4 \
             WHERE id = $1 AND enabled AND ($5 OR consecutive_failures >= $6)",
        )
        .bind(a.target_id)
        .bind(false)
        .bind(
            f.disable
                .clone()
                .unwrap_or_else(|| format!("{} consecutive failed attempts", f.disable_after)),
        )
        .bind(Ts(now))
        .bind(f.disable.is_some())
        .bind(i64::from(f.disable_after))
        .execute(&mut tx)
        .await?;
        if disabled == 1 {
            if let Some(audit) = audit {
                insert_audit(&mut tx, audit).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(moved == 1)
}

/// Attempts of an endpoint (`event` narrows to one message), oldest first, after `after`.
pub(crate) async fn list_attempts(
    pool: &Pool,
    ws: WorkspaceId,
    kind: JobKind,
    target: Uuid,
    event: Option<EventId>,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<crate::webhooks::Attempt>> {
    let mut sql = query(
        "SELECT id, job_id, kind, target_id, event_id, attempt, status_code, response_body, duration_ms, error_kind, \
         next_attempt_at, created_at FROM crm_delivery_attempts WHERE workspace_id = ",
    );
    sql.push_bind(ws.0)
        .push(" AND kind = ")
        .push_bind(kind.as_str().to_owned())
        .push(" AND target_id = ")
        .push_bind(target);
    if let Some(e) = event {
        sql.push(" AND event_id = ").push_bind(e.0);
    }
    if let Some(a) = after {
        sql.push(" AND id > ").push_bind(a);
    }
    sql.push(&format!(" ORDER BY id LIMIT {limit}"));
    let rows: Vec<AttemptRow> = sql.fetch_all(pool).await?;
    Ok(rows.into_iter().map(AttemptRow::into_attempt).collect())
}

/// Queues one job for `endpoint` and `event` (resend, test-send); `test_event`
/// is written first when given (a sample event that no filter fans out).
pub(crate) async fn enqueue(
    pool: &Pool,
    ws: WorkspaceId,
    kind: JobKind,
    target: Uuid,
    event: EventId,
    test_event: Option<&Event>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    if let Some(e) = test_event {
        insert_event_row(&mut tx, e).await?;
    }
    query(
        "INSERT INTO crm_jobs (id, workspace_id, kind, target_id, event_id, status, attempts, run_at, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(ws)
    .bind(kind.as_str())
    .bind(target)
    .bind(event.0)
    .bind(Ts(now))
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Inserts a channel with its audit entry, within the workspace's quota of
/// channels (checked in the same transaction).
pub(crate) async fn create_channel(
    pool: &Pool,
    c: &Channel,
    sealed: &str,
    quota: u32,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    check_quota(
        &mut tx,
        c.workspace_id,
        Quota::new(QuotaKind::Channels, quota, Ts(c.created_at)),
    )
    .await?;
    query(
        "INSERT INTO crm_notification_channels (id, workspace_id, kind, name, config, event_types, enabled, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(c.id.0)
    .bind(c.workspace_id)
    .bind(c.kind.as_str())
    .bind(c.name.as_str())
    .bind(sealed)
    .bind(Json(json!(c.event_types)))
    .bind(c.enabled)
    .bind(Ts(c.created_at))
    .bind(Ts(c.updated_at))
    .execute(&mut tx)
    .await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// The one way to change a channel: read and locked in a write transaction, `f`
/// decides the change from the row as it is now (the channel as it is to be, a
/// new sealed configuration, the audit entry), written before the lock goes.
pub(crate) async fn change_channel<F>(
    pool: &Pool,
    ws: WorkspaceId,
    id: ChannelId,
    f: F,
) -> Result<Channel>
where
    F: FnOnce(Channel) -> Result<ChannelChange>,
{
    let mut tx = pool.begin_write().await?;
    let sql = format!(
        "SELECT {CHANNEL_COLUMNS} FROM crm_notification_channels WHERE workspace_id = $1 AND id = $2{}",
        tx.dialect().for_update()
    );
    let (c, _) = query_as::<ChannelRow>(&sql)
        .bind(ws)
        .bind(id.0)
        .fetch_optional(&mut tx)
        .await?
        .ok_or(Error::NotFound {
            entity: "notification channel",
        })?
        .into_channel();
    let change = f(c)?;
    let c = &change.channel;
    query(
        "UPDATE crm_notification_channels SET name = $3, config = COALESCE($4, config), event_types = $5, \
         enabled = $6, updated_at = $7 WHERE workspace_id = $1 AND id = $2",
    )
    .bind(c.workspace_id)
    .bind(c.id.0)
    .bind(c.name.as_str())
    .bind(change.sealed_config.as_deref())
    .bind(Json(json!(c.event_types)))
    .bind(c.enabled)
    .bind(Ts(c.updated_at))
    .execute(&mut tx)
    .await?;
    insert_audit(&mut tx, &change.audit).await?;
    tx.commit().await?;
    Ok(change.channel)
}

pub(crate) async fn list_channels(pool: &Pool, ws: WorkspaceId) -> Result<Vec<Channel>> {
    let rows: Vec<ChannelRow> =
        owned_rows(pool, CHANNEL_COLUMNS, "crm_notification_channels", ws, None).await?;
    Ok(rows.into_iter().map(|r| r.into_channel().0).collect())
}

/// A channel and its sealed configuration.
pub(crate) async fn get_channel(
    pool: &Pool,
    ws: WorkspaceId,
    id: ChannelId,
) -> Result<(Channel, String)> {
    let rows: Vec<ChannelRow> = owned_rows(
        pool,
        CHANNEL_COLUMNS,
        "crm_notification_channels",
        ws,
        Some(id.0),
    )
    .await?;
    let row = rows.into_iter().next().ok_or(Error::NotFound {
        entity: "notification channel",
    })?;
    Ok(row.into_channel())
}

pub(crate) async fn delete_channel(
    pool: &Pool,
    ws: WorkspaceId,
    id: ChannelId,
    audit: &AuditEntry,
) -> Result<()> {
    let mut tx = pool.begin_write().await?;
    query("DELETE FROM crm_jobs WHERE workspace_id = $1 AND target_id = $2 AND status = 'pending'")
        .bind(ws)
        .bind(id.0)
        .execute(&mut tx)
        .await?;
    query("DELETE FROM crm_notification_channels WHERE workspace_id = $1 AND id = $2")
        .bind(ws)
        .bind(id.0)
        .execute(&mut tx)
        .await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Claims `key`: a row older than `expired_before` (or still running and older
/// than `stale_before`) is dropped first. Returns `None` when the claim is new,
/// else the existing row's fingerprint, status and response.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn claim_idempotency(
    pool: &Pool,
    ws: WorkspaceId,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: Ts,
    expired_before: Ts,
    stale_before: Ts,
) -> Result<Option<IdempotencyRow>> {
    let mut tx = pool.begin_write().await?;
    query(
        "DELETE FROM crm_idempotency_keys WHERE workspace_id = $1 AND scope = $2 AND idem_key = $3 \
         AND (created_at < $4 OR (status_code IS NULL AND created_at < $5))",
    )
    .bind(ws)
    .bind(scope)
    .bind(key)
    .bind(expired_before)
    .bind(stale_before)
    .execute(&mut tx)
    .await?;
    let inserted = query(
        "INSERT INTO crm_idempotency_keys (workspace_id, scope, idem_key, fingerprint, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(ws)
    .bind(scope)
    .bind(key)
    .bind(fingerprint)
    .bind(now)
    .execute(&mut tx)
    .await?;
    let existing = if inserted == 1 {
        None
    } else {
        let row: IdempotencyRow = query_as::<IdempotencyRow>(
            "SELECT fingerprint, status_code, response FROM crm_idempotency_keys \
             WHERE workspace_id = $1 AND scope = $2 AND idem_key = $3",
        )
        .bind(ws)
        .bind(scope)
        .bind(key)
        .fetch_one(&mut tx)
        .await?;
        Some(row)
    };
    tx.commit().await?;
    Ok(existing)
}

/// Stores the response of a claimed key (`Some`), or gives the claim up (`None`).
pub(crate) async fn finish_idempotency(
    pool: &Pool,
    ws: WorkspaceId,
    scope: &str,
    key: &str,
    response: Option<(i64, &str)>,
) -> Result<()> {
    let q = match response {
        Some((status, body)) => query(
            "UPDATE crm_idempotency_keys SET status_code = $4, response = $5 \
             WHERE workspace_id = $1 AND scope = $2 AND idem_key = $3 AND status_code IS NULL",
        )
        .bind(ws)
        .bind(scope)
        .bind(key)
        .bind(status)
        .bind(body),
        None => query(
            "DELETE FROM crm_idempotency_keys \
             WHERE workspace_id = $1 AND scope = $2 AND idem_key = $3 AND status_code IS NULL",
        )
        .bind(ws)
        .bind(scope)
        .bind(key),
    };
    q.execute(pool).await?;
    Ok(())
}

/// Deletes idempotency rows created before `before`.
pub(crate) async fn purge_idempotency(pool: &Pool, before: Ts) -> Result<u64> {
    let r = query("DELETE FROM crm_idempotency_keys WHERE created_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(r)
}

pub(crate) async fn ping(pool: &Pool) -> Result<()> {
    query("SELECT 1").execute(pool).await?;
    Ok(())
}

pub(crate) async fn get_workspace(pool: &Pool, ws: WorkspaceId) -> Result<WorkspaceRow> {
    query_as::<WorkspaceRow>("SELECT name, created_at FROM crm_workspaces WHERE id = $1")
        .bind(ws)
        .fetch_optional(pool)
        .await?
        .ok_or(Error::NotFound {
            entity: "workspace",
        })
}

pub(crate) async fn rename_workspace(pool: &Pool, ws: WorkspaceId, name: &str) -> Result<()> {
    let r = query("UPDATE crm_workspaces SET name = $2 WHERE id = $1")
        .bind(ws)
        .bind(name)
        .execute(pool)
        .await?;
    if r == 0 {
        return Err(Error::NotFound {
            entity: "workspace",
        });
    }
    Ok(())
}

pub(crate) async fn create_workspace(
    pool: &Pool,
    id: WorkspaceId,
    name: &str,
    now: Ts,
) -> Result<()> {
    query("INSERT INTO crm_workspaces (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}
