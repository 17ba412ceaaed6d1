//! The async half: `crm._native.Client`, one connected `Crm`.
//!
//! The typed Python API (`crm.Crm`, `crm.Leads`, …, in `python/crm/client.py`) is
//! written in Python; it calls [`Client::call`] with an operation name, an optional
//! id and the input as JSON, and gets the result back as JSON, which it turns into
//! dataclasses. JSON is the crossing because crm-core's models already speak it (the
//! same shapes the HTTP API serves, so `to_dict()` equals the HTTP body), it needs no
//! second set of conversions, and input errors come back with the field's path.
//! Each arm of [`dispatch`] does what a handler does: parse the input, call one
//! service method, map the result.
//!
//! Every awaitable is a future on the module's one tokio runtime (pyo3-async-runtimes)
//! that owns its data. The future runs in a task of its own, so even a panic
//! becomes a `crm.CrmError` and never reaches Python as a panic.

use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use crm_core::api_keys::{ApiKeyPatch, NewApiKey};
use crm_core::auth::{Actor, Login, NewUser};
use crm_core::leads::{LeadPatch, LeadQuery, NewActivity, NewLead, SortField, SortOrder};
use crm_core::notify::{ChannelPatch, NewChannel};
use crm_core::webhooks::{DispatcherConfig, EndpointPatch, NewEndpoint};
use crm_core::{Crm, Error, MasterKey, Result, WorkspaceId};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::errors;

/// A connected crm (`crm._native.Client`); `crm.Crm` wraps it.
#[pyclass(module = "crm._native", frozen)]
pub struct Client {
    crm: Crm,
    stop: CancellationToken,
    dispatcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Client {
    /// The crm and the workspace id a native method was called for (`ValidationError`
    /// on `workspace_id` unless it is a UUID).
    fn in_workspace(&self, py: Python<'_>, workspace: &str) -> PyResult<(Crm, WorkspaceId)> {
        let ws = parse_id(workspace, "workspace_id").map_err(|e| errors::to_py(py, &e))?;
        Ok((self.crm.clone(), ws))
    }
}

/// Runs `fut` on the module's runtime and hands Python an awaitable of its result.
fn spawn<'py, T>(
    py: Python<'py>,
    fut: impl Future<Output = Result<T>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        match tokio::spawn(fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Python::attach(|py| errors::to_py(py, &e))),
            Err(_) => Err(Python::attach(errors::internal)),
        }
    })
}

#[pymethods]
impl Client {
    /// Connects (and migrates) the database at `url`; an awaitable of a `Client`.
    #[staticmethod]
    #[pyo3(signature = (url, *, master_key = None, master_key_id = None, max_connections = None, rate_limits = None, webhook_allow_networks = None))]
    fn connect(
        py: Python<'_>,
        url: String,
        master_key: Option<PyBackedStr>,
        master_key_id: Option<String>,
        max_connections: Option<u32>,
        rate_limits: Option<std::collections::BTreeMap<String, (u32, f64)>>,
        webhook_allow_networks: Option<Vec<String>>,
    ) -> PyResult<Bound<'_, PyAny>> {
        let mut b = Crm::builder()
            .database_url(url)
            .notifier(crm_integrations::discord::Discord::new())
            .notifier(crm_integrations::telegram::Telegram::new())
            .notifier(crm_integrations::whatsapp::WhatsApp::new())
            .provider(crm_integrations::openai::OpenAiIntegration::new())
            .provider(crm_integrations::email::ResendIntegration::new())
            .provider(crm_integrations::smtp::SmtpIntegration::new())
            .provider(crm_integrations::whatsapp::WhatsApp::new())
            .provider(crm_integrations::calcom::CalcomIntegration)
            .provider(crm_integrations::telegram::Telegram::new())
            .provider(crm_integrations::discord::Discord::new());
        if let Some(key) = master_key {
            let id = master_key_id.as_deref().unwrap_or("k1");
            let key = MasterKey::from_base64(id, &key).map_err(|_| {
                errors::invalid(
                    py,
                    "master_key",
                    "must be the base64 of 32 bytes, with an id of 1 to 32 characters",
                )
            })?;
            b = b.master_key(key);
        }
        if let Some(n) = max_connections {
            b = b.max_connections(n);
        }
        // Checked before anything connects: a period of up to a year (a longer one
        // would put `reset_at` past what a datetime holds), a name as the limiter
        // takes it, and at least one microsecond per request.
        const PERIOD_MAX: f64 = 366.0 * 24.0 * 3600.0;
        for (name, (limit, seconds)) in rate_limits.unwrap_or_default() {
            let named = !name.is_empty() && name.len() <= 64 && !name.contains(':');
            let policy = std::time::Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|_| named && seconds <= PERIOD_MAX)
                .and_then(|period| crm_core::ratelimit::Policy::new(limit, period))
                .ok_or_else(|| {
                    errors::invalid(
                        py,
                        &format!("rate_limits.{name}"),
                        "must be (limit, period in seconds): a limit of at least 1 over a period of up \
                         to a year and at least a microsecond per request, named by 1-64 characters \
                         without ':'",
                    )
                })?;
            b = b.rate_limit_policy(name, policy);
        }
        b = b.webhook_allow_networks(webhook_allow_networks.unwrap_or_default());
        spawn(py, async move {
            let crm = b.connect().await?;
            Ok(Client {
                crm,
                stop: CancellationToken::new(),
                dispatcher: Mutex::new(None),
            })
        })
    }

    /// Runs operation `op` in `workspace` with an optional `id` and the input `payload`
    /// (a JSON object); an awaitable of the result as JSON.
    #[pyo3(signature = (workspace, op, id, payload))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        op: String,
        id: Option<String>,
        payload: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (crm, ws) = self.in_workspace(py, workspace)?;
        spawn(py, async move {
            let out = dispatch(&crm, ws, &op, id.as_deref(), &payload).await?;
            serde_json::to_string(&out).map_err(|e| Error::Config(e.to_string()))
        })
    }

    /// Handles an inbound WhatsApp `POST` for `workspace`: verifies `signature`
    /// (`X-Hub-Signature-256`) over `body` with `app_secret`, then captures each text
    /// message as a lead by phone. An awaitable of what happened, as JSON.
    #[pyo3(signature = (workspace, app_secret, signature, body))]
    fn whatsapp_receive<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        app_secret: String,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (crm, ws) = self.in_workspace(py, workspace)?;
        spawn(py, async move {
            let leads = crm.workspace(ws).leads().with_actor("whatsapp");
            let r = crm_integrations::whatsapp::receive(
                &leads,
                &app_secret,
                signature.as_deref(),
                &body,
            )
            .await?;
            Ok(json!({
                "captured": r.captured,
                "statuses": r.statuses,
                "duplicates": r.duplicates,
                "ignored": r.ignored,
            })
            .to_string())
        })
    }

    /// Handles an inbound Cal.com `POST` for `workspace`: verifies `signature`
    /// (`X-Cal-Signature-256`) over `body` with `secret`, then captures the booking's
    /// attendee as a lead. An awaitable of what happened, as JSON.
    #[pyo3(signature = (workspace, secret, signature, body))]
    fn calcom_receive<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        secret: String,
        signature: Option<String>,
        body: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        use crm_integrations::calcom::Received;
        let (crm, ws) = self.in_workspace(py, workspace)?;
        spawn(py, async move {
            let leads = crm.workspace(ws).leads().with_actor("cal_com");
            let r = crm_integrations::calcom::receive(&leads, &secret, signature.as_deref(), &body)
                .await?;
            let (outcome, lead, created, trigger) = match r {
                Received::Captured { lead, created } => ("captured", Some(lead), created, None),
                Received::Duplicate => ("duplicate", None, false, None),
                Received::Ignored(t) => ("ignored", None, false, Some(t)),
            };
            Ok(json!({
                "outcome": outcome,
                "lead_id": lead,
                "created": created,
                "trigger": trigger,
            })
            .to_string())
        })
    }

    /// Claims an idempotency `key` within `scope` in `workspace` for a request made of
    /// the byte strings `request`; an awaitable of `(outcome, status, body)`, the
    /// outcome one of `new`, `replay` (with the stored status and body), `in_flight`
    /// and `mismatch`.
    #[pyo3(signature = (workspace, scope, key, request))]
    fn idempotency_claim<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        scope: String,
        key: String,
        request: Vec<Vec<u8>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        use crm_core::idempotency::Claim;
        let (crm, ws) = self.in_workspace(py, workspace)?;
        spawn(py, async move {
            let parts: Vec<&[u8]> = request.iter().map(Vec::as_slice).collect();
            let claim = crm
                .workspace(ws)
                .idempotency()
                .claim(&scope, &key, &parts)
                .await?;
            Ok(match claim {
                Claim::New => ("new", None, None),
                Claim::Replay { status, body } => ("replay", Some(status), Some(body)),
                Claim::InFlight => ("in_flight", None, None),
                Claim::Mismatch => ("mismatch", None, None),
            })
        })
    }

    /// Stores the response (`status` 100–599, `body`) of a claimed key for replay.
    #[pyo3(signature = (workspace, scope, key, status, body))]
    fn idempotency_complete<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        scope: String,
        key: String,
        status: i64,
        body: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (crm, ws) = self.in_workspace(py, workspace)?;
        let status = u16::try_from(status)
            .ok()
            .filter(|s| (100..=599).contains(s))
            .ok_or_else(|| errors::invalid(py, "status", "must be an HTTP status (100-599)"))?;
        spawn(py, async move {
            crm.workspace(ws)
                .idempotency()
                .complete(&scope, &key, status, &body)
                .await
        })
    }

    /// Gives a claim up without a response, so the next request with the key runs.
    #[pyo3(signature = (workspace, scope, key))]
    fn idempotency_release<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        scope: String,
        key: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (crm, ws) = self.in_workspace(py, workspace)?;
        spawn(py, async move {
            crm.workspace(ws).idempotency().release(&scope, &key).await
        })
    }

    /// Starts delivering webhooks and notifications from this process (until
    /// [`Client::close`]); a second call does nothing.
    fn start_dispatcher(&self, py: Python<'_>) -> PyResult<()> {
        let mut slot = self.dispatcher.lock().map_err(|_| errors::internal(py))?;
        if slot.is_none() {
            let _guard = pyo3_async_runtimes::tokio::get_runtime().enter();
            let handle = self
                .crm
                .start_dispatcher(DispatcherConfig::default(), self.stop.clone())
                .map_err(|e| errors::to_py(py, &e))?;
            *slot = Some(handle);
        }
        Ok(())
    }

    /// Stops the dispatcher (waiting for deliveries in flight) and closes the pool.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.stop.cancel();
        let handle = self
            .dispatcher
            .lock()
            .map_err(|_| errors::internal(py))?
            .take();
        let crm = self.crm.clone();
        spawn(py, async move {
            if let Some(h) = handle {
                let _ = h.await;
            }
            crm.close().await;
            Ok(())
        })
    }
}

fn parse_id<T: From<Uuid>>(s: &str, field: &str) -> Result<T> {
    Uuid::parse_str(s)
        .map(T::from)
        .map_err(|_| Error::invalid(field, "must be a UUID"))
}

/// The operation's input, with a bad field named by its path.
fn input<T: DeserializeOwned>(payload: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(payload);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "input".to_owned()
        } else {
            path
        };
        Error::invalid(field, crm_core::error::json_message(&e.into_inner()))
    })
}

fn to_value(v: impl Serialize) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Config(e.to_string()))
}

/// No input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Nothing {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveIntegration {
    settings: crm_core::providers::Settings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundLookup {
    kind: String,
    inbound_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Token {
    token: String,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ListArgs {
    status: Vec<String>,
    source: Option<String>,
    tags: Vec<String>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    q: Option<String>,
    sort: Option<SortField>,
    order: Option<SortOrder>,
    limit: Option<u32>,
    cursor: Option<String>,
    include_total: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParseArgs {
    text: String,
    #[serde(default)]
    auto_save: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginArgs {
    email: String,
    password: String,
    #[serde(default)]
    remember_me: bool,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
}

impl From<LoginArgs> for Login {
    fn from(a: LoginArgs) -> Self {
        Login {
            email: a.email,
            password: a.password,
            remember_me: a.remember_me,
            ip: a.ip,
            user_agent: a.user_agent,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    current: String,
    new: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Role {
    role: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Email {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    workspace_name: String,
    email: String,
    display_name: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetConfirm {
    token: String,
    new_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyKey {
    key: String,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Rotate {
    grace_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resend {
    event_id: String,
}

/// A page after a cursor (an id), for attempt and audit-log listings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    after: Option<String>,
    #[serde(default = "default_page")]
    limit: u32,
}

fn default_page() -> u32 {
    100
}

impl Page {
    fn after<T: From<Uuid>>(&self) -> Result<Option<T>> {
        self.after
            .as_deref()
            .map(|a| parse_id(a, "after"))
            .transpose()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Housekeep {
    retention_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateCheck {
    policy: String,
    key: String,
}

/// A rate-limit decision as Python sees it: times as RFC 3339 and seconds.
fn decision(d: crm_core::ratelimit::Decision) -> Value {
    json!({
        "allowed": d.allowed,
        "limit": d.limit,
        "remaining": d.remaining,
        "reset_at": d.reset_at,
        "retry_after": d.retry_after.map(|r| r.as_secs_f64()),
    })
}

/// One operation: parse, call one service method, map the result to JSON.
async fn dispatch(
    crm: &Crm,
    ws: WorkspaceId,
    op: &str,
    id: Option<&str>,
    payload: &str,
) -> Result<Value> {
    let w = crm.workspace(ws);
    let id = || id.ok_or_else(|| Error::invalid("id", "is required"));
    let secret = |s: crm_core::SecretString| s.expose().to_owned();
    match op {
        // Crm, across workspaces.
        "crm.create_workspace" => {
            let a: Name = input(payload)?;
            to_value(crm.create_workspace(&a.name).await?)
        }
        "crm.register" => {
            let a: Register = input(payload)?;
            let owner = NewUser {
                email: a.email,
                display_name: a.display_name,
                role: None,
                password: a.password,
            };
            to_value(crm.register(&a.workspace_name, owner).await?)
        }
        "crm.sign_in" => {
            let a: LoginArgs = input(payload)?;
            let found = crm.sign_in(Login::from(a)).await?;
            Ok(match found {
                crm_core::auth::SignIn::SignedIn(l) => {
                    let l = *l;
                    json!({ "signed_in": { "token": secret(l.token), "session": l.session, "user": l.user } })
                }
                crm_core::auth::SignIn::ChooseWorkspace(list) => {
                    json!({ "choose_workspace": list })
                }
            })
        }
        "crm.authenticate_session" => {
            let a: Token = input(payload)?;
            let s = crm.authenticate_session(&a.token).await?;
            Ok(json!({ "session": s.session, "user": s.user }))
        }
        "crm.logout" => {
            let a: Token = input(payload)?;
            crm.logout(&a.token).await?;
            Ok(Value::Null)
        }
        "crm.confirm_password_reset" => {
            let a: ResetConfirm = input(payload)?;
            to_value(
                crm.confirm_password_reset(&a.token, &a.new_password)
                    .await?,
            )
        }
        "crm.confirm_email" => {
            let a: Token = input(payload)?;
            to_value(crm.confirm_email(&a.token).await?)
        }
        "crm.providers" => to_value(crm.providers()),
        "crm.inbound_integration" => {
            let a: InboundLookup = input(payload)?;
            let (workspace_id, settings) = crm.inbound_integration(&a.kind, &a.inbound_id).await?;
            Ok(json!({ "workspace_id": workspace_id, "settings": settings }))
        }
        "crm.ping" => {
            let _: Nothing = input(payload)?;
            crm.ping().await?;
            Ok(Value::Null)
        }
        "workspace.info" => {
            let _: Nothing = input(payload)?;
            to_value(w.info().await?)
        }
        "workspace.rename" => {
            let a: Name = input(payload)?;
            to_value(w.rename(&a.name).await?)
        }
        "workspace.audit_log" => {
            let p: Page = input(payload)?;
            to_value(w.audit_log(p.after()?, p.limit).await?)
        }
        "crm.housekeep" => {
            let a: Housekeep = input(payload)?;
            let retention = match a.retention_seconds {
                None => None,
                Some(secs) => Some(
                    chrono::Duration::try_seconds(secs)
                        .filter(|d| *d >= chrono::Duration::zero())
                        .ok_or_else(|| {
                            Error::invalid("retention", "must be a duration of 0 or more")
                        })?,
                ),
            };
            let config = crm_core::housekeeping::Housekeeping { retention };
            to_value(crm.housekeep(config).await?)
        }
        "crm.rate_limit_check" => {
            let a: RateCheck = input(payload)?;
            Ok(decision(crm.rate_limiter().check(&a.policy, &a.key).await?))
        }
        "crm.rate_limit_enforce" => {
            let a: RateCheck = input(payload)?;
            Ok(decision(
                crm.rate_limiter().enforce(&a.policy, &a.key).await?,
            ))
        }

        // Leads.
        "leads.create" => to_value(w.leads().create(input::<NewLead>(payload)?).await?),
        "leads.capture" => to_value(w.leads().capture(input::<NewLead>(payload)?).await?),
        "leads.get" => to_value(w.leads().get(parse_id(id()?, "id")?).await?),
        "leads.list" => {
            let a: ListArgs = input(payload)?;
            let q = LeadQuery {
                status: a.status,
                source: a.source,
                tags: a.tags,
                created_after: a.created_after,
                created_before: a.created_before,
                q: a.q,
                sort: a.sort.unwrap_or_default(),
                order: a.order.unwrap_or_default(),
                limit: a.limit,
                cursor: a.cursor,
                include_total: a.include_total,
            };
            to_value(w.leads().list(&q).await?)
        }
        "leads.update" => {
            let lead = parse_id(id()?, "id")?;
            to_value(w.leads().update(lead, input::<LeadPatch>(payload)?).await?)
        }
        "leads.delete" => {
            w.leads().delete(parse_id(id()?, "id")?).await?;
            Ok(Value::Null)
        }
        "leads.add_activity" => {
            let lead = parse_id(id()?, "id")?;
            let a: NewActivity = input(payload)?;
            to_value(w.leads().add_activity(lead, a).await?)
        }
        "leads.activities" => to_value(w.leads().activities(parse_id(id()?, "id")?).await?),
        "leads.send_message" => {
            let lead = parse_id(id()?, "id")?;
            let m: crm_core::leads::messages::NewMessage = input(payload)?;
            to_value(w.leads().send_message(lead, "whatsapp", m).await?)
        }
        "leads.parse" => {
            let a: ParseArgs = input(payload)?;
            to_value(w.leads().parse(&a.text, a.auto_save).await?)
        }

        // Auth.
        "auth.create_user" => to_value(
            w.auth()
                .create_user(input(payload)?, Actor::App(None))
                .await?,
        ),
        "auth.users" => to_value(w.auth().users().await?),
        "auth.user" => to_value(w.auth().user(parse_id(id()?, "id")?).await?),
        "auth.set_role" => {
            let user = parse_id(id()?, "id")?;
            let a: Role = input(payload)?;
            to_value(w.auth().set_role(user, &a.role, Actor::App(None)).await?)
        }
        "auth.disable_user" => to_value(
            w.auth()
                .disable_user(parse_id(id()?, "id")?, Actor::App(None))
                .await?,
        ),
        "auth.enable_user" => to_value(
            w.auth()
                .enable_user(parse_id(id()?, "id")?, Actor::App(None))
                .await?,
        ),
        "auth.delete_user" => {
            w.auth()
                .delete_user(parse_id(id()?, "id")?, Actor::App(None))
                .await?;
            Ok(Value::Null)
        }
        "auth.sessions" => to_value(w.auth().sessions(parse_id(id()?, "id")?).await?),
        "auth.end_user_sessions" => to_value(
            w.auth()
                .end_user_sessions(parse_id(id()?, "id")?, Actor::App(None))
                .await?,
        ),
        "auth.login" => {
            let a: LoginArgs = input(payload)?;
            let l = w.auth().login(Login::from(a)).await?;
            Ok(json!({ "token": secret(l.token), "session": l.session, "user": l.user }))
        }
        "auth.change_password" => {
            let user = parse_id(id()?, "id")?;
            let a: ChangePassword = input(payload)?;
            w.auth()
                .change_password(user, &a.current, &a.new, None)
                .await?;
            Ok(Value::Null)
        }
        "auth.request_password_reset" => {
            let a: Email = input(payload)?;
            w.auth().request_password_reset(&a.email).await?;
            Ok(Value::Null)
        }
        "auth.request_email_verification" => {
            w.auth()
                .request_email_verification(parse_id(id()?, "id")?)
                .await?;
            Ok(Value::Null)
        }

        // API keys.
        "api_keys.create" => {
            let c = w.api_keys().create(input::<NewApiKey>(payload)?).await?;
            Ok(json!({ "key": c.key, "secret": secret(c.secret) }))
        }
        "api_keys.list" => to_value(w.api_keys().list().await?),
        "api_keys.get" => to_value(w.api_keys().get(parse_id(id()?, "id")?).await?),
        "api_keys.update" => {
            let key = parse_id(id()?, "id")?;
            to_value(
                w.api_keys()
                    .update(key, input::<ApiKeyPatch>(payload)?)
                    .await?,
            )
        }
        "api_keys.revoke" => to_value(w.api_keys().revoke(parse_id(id()?, "id")?).await?),
        "api_keys.rotate" => {
            let key = parse_id(id()?, "id")?;
            let a: Rotate = input(payload)?;
            let grace = a
                .grace_seconds
                .map(|s| {
                    i64::try_from(s)
                        .ok()
                        .and_then(chrono::TimeDelta::try_seconds)
                        .ok_or_else(|| Error::invalid("grace_seconds", "is too large"))
                })
                .transpose()?;
            let c = w.api_keys().rotate(key, grace).await?;
            Ok(json!({ "key": c.key, "secret": secret(c.secret) }))
        }
        "api_keys.verify" => {
            let a: VerifyKey = input(payload)?;
            let v = crm.verify_api_key(&a.key).await?;
            // A key of another workspace does not exist for this one.
            if v.workspace_id != ws {
                return Err(Error::Unauthorized {
                    reason: crm_core::AuthFailure::UnknownKey,
                });
            }
            if let Some(scope) = &a.scope {
                v.require(scope)?;
            }
            Ok(json!({
                "key_id": v.key_id,
                "workspace_id": v.workspace_id,
                "scopes": &*v.scopes,
                "expires_at": v.expires_at,
            }))
        }

        // Webhook endpoints.
        "webhooks.create_endpoint" => {
            let c = w.webhooks().create(input::<NewEndpoint>(payload)?).await?;
            Ok(json!({ "endpoint": c.endpoint, "secret": secret(c.secret) }))
        }
        "webhooks.list_endpoints" => to_value(w.webhooks().list().await?),
        "webhooks.get_endpoint" => to_value(w.webhooks().get(parse_id(id()?, "id")?).await?),
        "webhooks.update_endpoint" => {
            let ep = parse_id(id()?, "id")?;
            to_value(
                w.webhooks()
                    .update(ep, input::<EndpointPatch>(payload)?)
                    .await?,
            )
        }
        "webhooks.delete_endpoint" => {
            w.webhooks().delete(parse_id(id()?, "id")?).await?;
            Ok(Value::Null)
        }
        "webhooks.endpoint_secret" => {
            let s = w.webhooks().secret(parse_id(id()?, "id")?).await?;
            Ok(Value::String(secret(s)))
        }
        "webhooks.rotate_secret" => {
            let s = w.webhooks().rotate_secret(parse_id(id()?, "id")?).await?;
            Ok(Value::String(secret(s)))
        }
        "webhooks.test" => to_value(w.webhooks().test(parse_id(id()?, "id")?).await?),
        "webhooks.attempts" => {
            let ep = parse_id(id()?, "id")?;
            let p: Page = input(payload)?;
            to_value(w.webhooks().attempts(ep, p.after()?, p.limit).await?)
        }
        "webhooks.resend" => {
            let ep = parse_id(id()?, "id")?;
            let a: Resend = input(payload)?;
            w.webhooks()
                .resend(ep, parse_id(&a.event_id, "event_id")?)
                .await?;
            Ok(Value::Null)
        }

        // Notification channels.
        "notifications.create_channel" => to_value(
            w.notifications()
                .create(input::<NewChannel>(payload)?)
                .await?,
        ),
        "notifications.list_channels" => to_value(w.notifications().list().await?),
        "notifications.get_channel" => {
            to_value(w.notifications().get(parse_id(id()?, "id")?).await?)
        }
        "notifications.update_channel" => {
            let ch = parse_id(id()?, "id")?;
            to_value(
                w.notifications()
                    .update(ch, input::<ChannelPatch>(payload)?)
                    .await?,
            )
        }
        "notifications.attempts" => {
            let ch = parse_id(id()?, "id")?;
            let p: Page = input(payload)?;
            to_value(w.notifications().attempts(ch, p.after()?, p.limit).await?)
        }
        "notifications.delete_channel" => {
            w.notifications().delete(parse_id(id()?, "id")?).await?;
            Ok(Value::Null)
        }
        "notifications.test_channel" => {
            to_value(w.notifications().test(parse_id(id()?, "id")?).await?)
        }

        // Integrations (the id is the provider kind).
        "integrations.list" => to_value(w.integrations().list().await?),
        "integrations.get" => to_value(w.integrations().get(id()?).await?),
        "integrations.settings" => to_value(w.integrations().settings(id()?).await?),
        "integrations.save" => {
            let a: SaveIntegration = input(payload)?;
            to_value(
                w.integrations()
                    .save(Actor::App(None), id()?, a.settings)
                    .await?,
            )
        }
        "integrations.delete" => {
            w.integrations().delete(Actor::App(None), id()?).await?;
            Ok(Value::Null)
        }
        _ => Err(Error::invalid("op", format!("unknown operation {op:?}"))),
    }
}
