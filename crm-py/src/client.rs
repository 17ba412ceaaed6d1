//! The async half: `crm._native.Client`, one connected `Crm`.
//!
//! The typed Python API (`crm.Crm`, `crm.Leads`, …, in `python/crm/client.py`) is
//! written in Python over one native method per operation (`leads_create`,
//! `webhooks_attempts`, …; every one is in `crm/_native.pyi`, which stubtest checks
//! against this module). A method takes the workspace id, the entity id where there
//! is one ([`Id`]) and the input as a Python mapping ([`Input`]), read into a JSON
//! value held to the HTTP API's rules and then into crm-core's input type (no JSON
//! text in between; a bad field is a `ValidationError` naming its path). The result
//! crosses as Python objects built from its `Serialize` shape by pythonize
//! ([`Out`]): the shapes the HTTP API serves, so `to_dict()` of a dataclass equals
//! the HTTP body. Arguments are read before anything is spawned, so nothing runs on
//! bad input.
//!
//! Every awaitable is a future on the module's one tokio runtime that owns its data
//! (see `bridge`).

use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use crm_core::api_keys::{ApiKeyPatch, NewApiKey};
use crm_core::auth::{Actor, Login, NewUser};
use crm_core::leads::messages::NewMessage;
use crm_core::leads::{Archived, LeadPatch, LeadQuery, NewActivity, NewLead, SortField, SortOrder};
use crm_core::notify::{ChannelPatch, NewChannel};
use crm_core::webhooks::{DispatcherConfig, EndpointPatch, NewEndpoint};
use crm_core::{
    ApiKeyId, ChannelId, Crm, EndpointId, Error, LeadId, MasterKey, Result, UserId, Workspace,
    WorkspaceId,
};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bridge::spawn;
use crate::errors;

/// A connected crm (`crm._native.Client`); `crm.Crm` wraps it.
#[pyclass(module = "crm._native", frozen)]
pub struct Client {
    crm: Crm,
    stop: CancellationToken,
    dispatcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The process it was connected in: after a fork, the child's copy shares the
    /// parent's connections and has no runtime threads, so it refuses calls.
    pid: u32,
}

impl Client {
    /// `CrmError` (`client_closed`) once [`Client::close`] was called, or in a
    /// process forked after it connected.
    fn open(&self, py: Python<'_>) -> PyResult<()> {
        if self.stop.is_cancelled() || self.pid != crate::bridge::pid() {
            return Err(errors::closed(py));
        }
        Ok(())
    }

    /// The crm and the workspace id a native method was called for (`ValidationError`
    /// on `workspace_id` unless it is a UUID).
    fn in_workspace(&self, py: Python<'_>, workspace: &str) -> PyResult<(Crm, WorkspaceId)> {
        self.open(py)?;
        let ws = parse_id(workspace, "workspace_id").map_err(|e| errors::to_py(py, &e))?;
        Ok((self.crm.clone(), ws))
    }
}

/// `files=` of `connect`: where attached files go and what is taken.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesArgs {
    dir: std::path::PathBuf,
    max_file_size: Option<u64>,
    quota: Option<u64>,
    link_base: Option<String>,
}

impl FilesArgs {
    fn install(self, b: crm_core::CrmBuilder) -> crm_core::CrmBuilder {
        let rules = crm_core::attachments::AttachmentRules::default();
        b.storage(crm_core::storage::FsStorage::new(self.dir))
            .attachment_rules(crm_core::attachments::AttachmentRules {
                max_file_size: self.max_file_size.unwrap_or(rules.max_file_size),
                link_base: self.link_base,
                ..rules
            })
            .quotas(crm_core::Quotas {
                attachment_bytes: self
                    .quota
                    .unwrap_or(crm_core::Quotas::default().attachment_bytes),
                ..crm_core::Quotas::default()
            })
    }
}

/// `jwt=` of `connect`: how tokens of an outside sign-in service are verified.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtArgs {
    secret: Option<String>,
    jwks_url: Option<String>,
    issuer: String,
    audience: Audience,
    leeway: Option<u64>,
    workspace_claim: Option<String>,
    default_workspace: Option<Uuid>,
    role_claim: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl JwtArgs {
    fn config(self, py: Python<'_>) -> PyResult<crm_core::jwt::JwtConfig> {
        use crm_core::jwt::{JwtConfig, JwtKey};
        let key = match (self.secret, self.jwks_url) {
            (Some(s), None) => JwtKey::Hs256(crm_core::SecretString::from(s)),
            (None, Some(url)) => JwtKey::Jwks(url),
            _ => {
                return Err(errors::invalid(
                    py,
                    "jwt.secret",
                    "give exactly one of secret (HS256) and jwks_url (RS256/ES256)",
                ))
            }
        };
        let mut c = JwtConfig::new(key, self.issuer, String::new());
        c.audience = match self.audience {
            Audience::One(a) => vec![a],
            Audience::Many(a) => a,
        };
        if let Some(s) = self.leeway {
            c.leeway = std::time::Duration::from_secs(s);
        }
        c.workspace_claim = self.workspace_claim;
        c.default_workspace = self.default_workspace.map(WorkspaceId);
        c.role_claim = self.role_claim;
        Ok(c)
    }
}

/// The attachment service, recording `actor` (when given) as the uploader.
fn files(w: &Workspace, actor: Option<String>) -> crm_core::Attachments {
    let files = w.attachments();
    match actor {
        Some(a) => files.with_actor(a),
        None => files,
    }
}

/// A file's parent from Python: (`lead` or `contact`, its id).
fn attachment_parent(
    py: Python<'_>,
    kind: &str,
    id: &str,
) -> PyResult<crm_core::attachments::Parent> {
    use crm_core::attachments::Parent;
    let r = match kind {
        "lead" => parse_id::<LeadId>(id, "lead_id").map(Parent::Lead),
        "contact" => parse_id::<crm_core::ContactId>(id, "contact_id").map(Parent::Contact),
        _ => Err(Error::invalid("parent", "must be lead or contact")),
    };
    r.map_err(|e| errors::to_py(py, &e))
}

fn parse_id<T: From<Uuid>>(s: &str, field: &str) -> Result<T> {
    Uuid::parse_str(s)
        .map(T::from)
        .map_err(|_| Error::invalid(field, "must be a UUID"))
}

/// The input of an operation: a Python mapping read into `T` by [`read`]; a bad
/// field is a `ValidationError` naming its path (`tags[1]`, `custom.score`).
/// Extracted before the operation is spawned, so nothing runs on bad input.
struct Input<T>(T);

impl<'a, 'py, T: DeserializeOwned> FromPyObject<'a, 'py> for Input<T> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        read(&obj, "").map(Input)
    }
}

/// Reads `obj` into `T`; a bad field is a `ValidationError` on its path under
/// `at` (`mailer.kind`), or on `at` itself (`input` when `at` is empty).
///
/// The input becomes a JSON value first ([`json_of`]), so it is held to exactly
/// what the HTTP API accepts: a bool is not a number, a string is not a list, a
/// float must be finite, and nesting is bounded (a cycle or a deep value is
/// refused instead of overflowing the stack, and a stored value stays readable).
fn read<T: DeserializeOwned>(obj: &Bound<'_, PyAny>, at: &str) -> PyResult<T> {
    let field = |path: &str| match (at, path) {
        ("", "" | ".") => "input".to_owned(),
        ("", _) => path.to_owned(),
        (_, "" | ".") => at.to_owned(),
        _ => format!("{at}.{path}"),
    };
    let value = json_of(obj, 0)
        .map_err(|(path, msg)| errors::to_py(obj.py(), &Error::invalid(field(&path), msg)))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let err = Error::invalid(field(&e.path().to_string()), e.into_inner().to_string());
        errors::to_py(obj.py(), &err)
    })
}

/// How deep an input may nest (crm-core stores `custom` values as JSON, which
/// serde_json reads back to a depth of 128).
const DEPTH_MAX: usize = 32;

/// A Python input as a JSON value: `None`, `bool`, `int` (64-bit), finite `float`,
/// `str`, `dict` with `str` keys, `list` or `tuple`; anything else is refused with
/// the path of the bad value.
fn json_of(
    obj: &Bound<'_, PyAny>,
    depth: usize,
) -> std::result::Result<Value, (String, &'static str)> {
    use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
    let here = |msg| (String::new(), msg);
    if depth > DEPTH_MAX {
        return Err(here("is nested too deeply"));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::from(v));
        }
        return i
            .extract::<u64>()
            .map(Value::from)
            .map_err(|_| here("is too large"));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return serde_json::Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| here("must be a finite number"));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s
            .to_cow()
            .map(|s| Value::String(s.into_owned()))
            .map_err(|_| here("must be valid UTF-8 text"));
    }
    let nested = |path: String, r: std::result::Result<Value, (String, &'static str)>| {
        r.map_err(|(p, m)| {
            (
                if p.is_empty() {
                    path
                } else {
                    format!("{path}.{p}")
                },
                m,
            )
        })
    };
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut out = serde_json::Map::new();
        for (k, v) in d.iter() {
            let k = k
                .cast::<PyString>()
                .ok()
                .and_then(|k| k.to_cow().ok().map(|k| k.into_owned()));
            let k = k.ok_or_else(|| here("must have text keys"))?;
            let v = nested(k.clone(), json_of(&v, depth + 1))?;
            out.insert(k, v);
        }
        return Ok(Value::Object(out));
    }
    let items = if let Ok(l) = obj.cast::<PyList>() {
        l.iter().collect::<Vec<_>>()
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        t.iter().collect()
    } else {
        return Err(here(
            "must be None, a bool, a number, text, a list or a dict",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| nested(format!("[{i}]"), json_of(v, depth + 1)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// An entity id argument (`id`): a UUID, or a `ValidationError` on `id`.
struct Id<T>(T);

impl<'a, 'py, T: From<Uuid>> FromPyObject<'a, 'py> for Id<T> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let text = obj
            .cast::<pyo3::types::PyString>()
            .ok()
            .and_then(|s| s.to_cow().ok().map(|s| s.into_owned()))
            .unwrap_or_default();
        parse_id(&text, "id")
            .map(Id)
            .map_err(|e| errors::to_py(obj.py(), &e))
    }
}

/// A result on its way to Python: built as Python objects (dicts, lists, strings,
/// numbers) straight from its `Serialize` shape, the same shape the HTTP API
/// serves.
struct Out<T>(T);

impl<'py, T: Serialize> IntoPyObject<'py> for Out<T> {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pythonize::pythonize(py, &self.0).map_err(PyErr::from)
    }
}

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
    archived: Archived,
    owner_id: Option<crm_core::UserId>,
}

impl ListArgs {
    fn query(self) -> LeadQuery {
        LeadQuery {
            status: self.status,
            source: self.source,
            tags: self.tags,
            created_after: self.created_after,
            created_before: self.created_before,
            q: self.q,
            sort: self.sort.unwrap_or_default(),
            order: self.order.unwrap_or_default(),
            limit: self.limit,
            cursor: self.cursor,
            include_total: self.include_total,
            archived: self.archived,
            owner_id: self.owner_id,
        }
    }
}

/// The arguments of `contacts.list`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ContactListArgs {
    q: Option<String>,
    owner_id: Option<crm_core::UserId>,
    organization_id: Option<crm_core::OrganizationId>,
    tags: Vec<String>,
    sort: Option<SortField>,
    order: Option<SortOrder>,
    limit: Option<u32>,
    cursor: Option<String>,
    include_total: bool,
}

impl ContactListArgs {
    fn query(self) -> crm_core::contacts::ContactQuery {
        crm_core::contacts::ContactQuery {
            q: self.q,
            owner_id: self.owner_id,
            organization_id: self.organization_id,
            tags: self.tags,
            sort: self.sort.unwrap_or_default(),
            order: self.order.unwrap_or_default(),
            limit: self.limit,
            cursor: self.cursor,
            include_total: self.include_total,
        }
    }
}

/// The arguments of `organizations.list`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct OrganizationListArgs {
    q: Option<String>,
    owner_id: Option<crm_core::UserId>,
    sort: Option<SortField>,
    order: Option<SortOrder>,
    limit: Option<u32>,
    cursor: Option<String>,
    include_total: bool,
}

impl OrganizationListArgs {
    fn query(self) -> crm_core::contacts::OrganizationQuery {
        crm_core::contacts::OrganizationQuery {
            q: self.q,
            owner_id: self.owner_id,
            sort: self.sort.unwrap_or_default(),
            order: self.order.unwrap_or_default(),
            limit: self.limit,
            cursor: self.cursor,
            include_total: self.include_total,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DuplicatesArgs {
    limit: u32,
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
struct SessionArg {
    session_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resend {
    event_id: String,
}

/// The mailer of password-reset and verification mails, given at connect
/// (`{"kind": "resend", "api_key": …, "from": …}` or `{"kind": "smtp", "url": …,
/// "from": …}`; `reset_url` and `verify_url` together, `{token}` in each).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum MailerArgs {
    Resend {
        api_key: String,
        from: String,
        #[serde(default)]
        base_url: Option<String>,
        #[serde(default)]
        reset_url: Option<String>,
        #[serde(default)]
        verify_url: Option<String>,
    },
    Smtp {
        url: String,
        from: String,
        #[serde(default)]
        reset_url: Option<String>,
        #[serde(default)]
        verify_url: Option<String>,
    },
}

impl MailerArgs {
    fn install(self, b: crm_core::CrmBuilder) -> Result<crm_core::CrmBuilder> {
        let links = |reset: Option<String>, verify: Option<String>| match (reset, verify) {
            (None, None) => Ok(None),
            (Some(r), Some(v)) => Ok(Some((r, v))),
            (None, Some(_)) => Err(Error::invalid(
                "mailer.reset_url",
                "is required with verify_url",
            )),
            (Some(_), None) => Err(Error::invalid(
                "mailer.verify_url",
                "is required with reset_url",
            )),
        };
        Ok(match self {
            MailerArgs::Resend {
                api_key,
                from,
                base_url,
                reset_url,
                verify_url,
            } => {
                let mut m = crm_integrations::email::Resend::new(api_key, from);
                if let Some(u) = base_url {
                    m = m.with_base_url(u);
                }
                if let Some((r, v)) = links(reset_url, verify_url)? {
                    m = m.with_links(r, v);
                }
                b.mailer(m)
            }
            MailerArgs::Smtp {
                url,
                from,
                reset_url,
                verify_url,
            } => {
                let mut m =
                    crm_integrations::smtp::Smtp::new(&crm_core::SecretString::from(url), &from)?;
                if let Some((r, v)) = links(reset_url, verify_url)? {
                    m = m.with_links(r, v);
                }
                b.mailer(m)
            }
        })
    }
}

/// The lead parser, given at connect: `{"kind": "openai", "api_key": …}` (with
/// the builtin parser standing in when OpenAI fails) or `{"kind": "builtin"}`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum ParserArgs {
    Openai {
        api_key: String,
        #[serde(default)]
        model: Option<String>,
        #[serde(default)]
        base_url: Option<String>,
    },
    Builtin {},
}

/// The values budget, project type and source may take; a list not given keeps
/// its default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowedArgs {
    #[serde(default)]
    budgets: Option<Vec<String>>,
    #[serde(default)]
    project_types: Option<Vec<String>>,
    #[serde(default)]
    sources: Option<Vec<String>>,
}

/// A page of an attempt or audit-log listing: after a cursor (an id) oldest first,
/// or before one newest first (the `recent_…` operations).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default = "default_page")]
    limit: u32,
}

fn default_page() -> u32 {
    100
}

impl Page {
    /// The `after` cursor of an oldest-first listing (which takes no `before`).
    fn after<T: From<Uuid>>(&self) -> Result<Option<T>> {
        if self.before.is_some() {
            return Err(Error::invalid(
                "before",
                "this listing reads forwards: use after",
            ));
        }
        self.after
            .as_deref()
            .map(|a| parse_id(a, "after"))
            .transpose()
    }

    /// The `before` cursor of a newest-first listing (which takes no `after`).
    fn before<T: From<Uuid>>(&self) -> Result<Option<T>> {
        if self.after.is_some() {
            return Err(Error::invalid(
                "after",
                "this listing reads backwards: use before",
            ));
        }
        self.before
            .as_deref()
            .map(|b| parse_id(b, "before"))
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

/// A rate-limit decision as Python sees it: seconds for `retry_after`.
fn decision(d: crm_core::ratelimit::Decision) -> RateLimitDecision {
    RateLimitDecision {
        allowed: d.allowed,
        limit: d.limit,
        remaining: d.remaining,
        reset_at: d.reset_at,
        retry_after: d.retry_after.map(|r| r.as_secs_f64()),
    }
}

fn verified(v: crm_core::api_keys::VerifiedKey) -> VerifiedKey {
    VerifiedKey {
        key_id: v.key_id,
        workspace_id: v.workspace_id,
        scopes: v.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        expires_at: v.expires_at,
    }
}

/// Results the bridge composes from more than one crm-core value (a secret beside
/// its entity, a session beside its user). With crm-core's own models they make up
/// every result type; [`model_schemas`] hands their schemas to the tests that hold
/// the Python dataclasses to them.
mod shapes {
    use chrono::{DateTime, Utc};
    use crm_core::api_keys::ApiKey;
    use crm_core::auth::{Session, User};
    use crm_core::webhooks::Endpoint;
    use crm_core::{ApiKeyId, LeadId, WorkspaceId};
    use serde::Serialize;
    use utoipa::ToSchema;

    #[derive(Serialize, ToSchema)]
    pub(super) struct LoggedIn {
        pub token: String,
        pub session: Session,
        pub user: User,
    }

    #[derive(Serialize, ToSchema)]
    pub(super) struct SessionUser {
        pub session: Session,
        pub user: User,
    }

    #[derive(Serialize, ToSchema)]
    pub(super) struct CreatedApiKey {
        pub key: ApiKey,
        pub secret: String,
    }

    #[derive(Serialize, ToSchema)]
    pub(super) struct VerifiedKey {
        pub key_id: ApiKeyId,
        pub workspace_id: WorkspaceId,
        pub scopes: Vec<String>,
        pub expires_at: Option<DateTime<Utc>>,
    }

    #[derive(Serialize, ToSchema)]
    pub(super) struct CreatedEndpoint {
        pub endpoint: Endpoint,
        pub secret: String,
    }

    #[derive(Serialize, ToSchema)]
    pub(super) struct RateLimitDecision {
        pub allowed: bool,
        pub limit: u32,
        pub remaining: u32,
        pub reset_at: DateTime<Utc>,
        /// Seconds.
        pub retry_after: Option<f64>,
    }

    #[derive(Serialize, ToSchema)]
    pub(super) struct Received {
        pub captured: Vec<LeadId>,
        pub statuses: usize,
        pub duplicates: usize,
        pub ignored: usize,
    }

    #[derive(Serialize, ToSchema)]
    pub(super) struct Booking {
        pub outcome: &'static str,
        pub lead_id: Option<LeadId>,
        pub created: bool,
        pub trigger: Option<String>,
    }
}

use shapes::{
    Booking, CreatedApiKey, CreatedEndpoint, LoggedIn, RateLimitDecision, Received, SessionUser,
    VerifiedKey,
};

/// The schema of every result type, as JSON: `{"models": {dataclass name: schema},
/// "components": {Rust type name: schema}}`, OpenAPI schema objects whose `$ref`s
/// (`#/components/schemas/Lead`) name entries of `components`. `crm-py/tests`
/// compares each dataclass's fields with its schema's properties, so a field
/// renamed or added on the Rust side fails a test.
#[pyfunction]
pub(crate) fn model_schemas() -> PyResult<String> {
    use utoipa::ToSchema;
    let mut models = serde_json::Map::new();
    let mut components = serde_json::Map::new();
    let mut add = |python: Option<&str>, name: std::borrow::Cow<'static, str>, schema| {
        let schema = serde_json::to_value(schema)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        if let Some(python) = python {
            let to = json!({ "$ref": format!("#/components/schemas/{name}") });
            models.insert(python.to_owned(), to);
        }
        components.insert(name.into_owned(), schema);
        PyResult::Ok(())
    };
    macro_rules! schemas {
        ($($python:expr => $t:ty),* $(,)?) => {
            $(add($python, <$t>::name(), <$t as utoipa::PartialSchema>::schema())?;)*
        };
    }
    schemas! {
        Some("Lead") => crm_core::leads::Lead,
        Some("Activity") => crm_core::leads::Activity,
        Some("LeadDetail") => crm_core::leads::LeadDetail,
        Some("LeadPage") => crm_core::leads::LeadPage,
        Some("Captured") => crm_core::leads::Captured,
        // `Parsed` flattens the parser's `ParsedLead` and adds the saved lead.
        Some("ParsedLead") => crm_core::leads::Parsed,
        None => crm_core::leads::parser::ParsedLead,
        Some("User") => crm_core::auth::User,
        Some("Session") => crm_core::auth::Session,
        Some("WorkspaceChoice") => crm_core::auth::WorkspaceChoice,
        Some("ApiKey") => crm_core::api_keys::ApiKey,
        Some("Endpoint") => crm_core::webhooks::Endpoint,
        Some("Attempt") => crm_core::webhooks::Attempt,
        Some("Channel") => crm_core::notify::Channel,
        Some("Integration") => crm_core::providers::Integration,
        Some("WorkspaceInfo") => crm_core::WorkspaceInfo,
        Some("AuditEntry") => crm_core::audit::AuditEntry,
        Some("Purged") => crm_core::housekeeping::Purged,
        Some("LeadStats") => crm_core::leads::LeadStats,
        Some("StatusCount") => crm_core::leads::stats::StatusCount,
        Some("SourceCount") => crm_core::leads::stats::SourceCount,
        Some("Series") => crm_core::leads::stats::Series,
        Some("Point") => crm_core::leads::stats::Point,
        Some("DuplicateGroup") => crm_core::leads::merge::DuplicateGroup,
        Some("Merged") => crm_core::leads::merge::Merged,
        Some("Contact") => crm_core::contacts::Contact,
        Some("ContactPage") => crm_core::contacts::ContactPage,
        Some("Organization") => crm_core::contacts::Organization,
        Some("OrganizationPage") => crm_core::contacts::OrganizationPage,
        Some("Converted") => crm_core::contacts::Converted,
        Some("Attachment") => crm_core::attachments::Attachment,
        Some("SignedLink") => crm_core::attachments::SignedLink,
        Some("ExternalIdentity") => crm_core::jwt::ExternalIdentity,
        Some("ImportReport") => crm_core::leads::ImportReport,
        Some("RowError") => crm_core::leads::RowError,
        None => crm_core::leads::ImportStatus,
        Some("ImportProgress") => crm_core::leads::Progress,
        Some("LoggedIn") => LoggedIn,
        Some("SessionUser") => SessionUser,
        Some("CreatedApiKey") => CreatedApiKey,
        Some("VerifiedKey") => VerifiedKey,
        Some("CreatedEndpoint") => CreatedEndpoint,
        Some("RateLimitDecision") => RateLimitDecision,
        Some("Received") => Received,
        Some("Booking") => Booking,
    }
    Ok(json!({ "models": models, "components": components }).to_string())
}

impl Client {
    /// Spawns `f` with the crm and workspace `workspace`, and hands Python an
    /// awaitable of its result as Python objects.
    fn run<'py, F, O>(
        &self,
        py: Python<'py>,
        workspace: &str,
        f: impl FnOnce(Crm, Workspace) -> F,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = Result<O>> + Send + 'static,
        O: Serialize + Send + 'static,
    {
        let (crm, ws) = self.in_workspace(py, workspace)?;
        let w = crm.workspace(ws);
        let fut = f(crm, w);
        spawn(py, async move { fut.await.map(Out) })
    }

    /// As [`Client::run`], for an operation across workspaces.
    fn run_crm<'py, F, O>(
        &self,
        py: Python<'py>,
        f: impl FnOnce(Crm) -> F,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = Result<O>> + Send + 'static,
        O: Serialize + Send + 'static,
    {
        self.open(py)?;
        let fut = f(self.crm.clone());
        spawn(py, async move { fut.await.map(Out) })
    }
}

fn secret(s: crm_core::SecretString) -> String {
    s.expose().to_owned()
}

/// One native method per operation. Each takes the workspace id (except those of
/// the whole crm), the entity id where there is one, and the input as a mapping
/// that is read straight into crm-core's input type; each returns an awaitable of
/// the result in the HTTP API's shape, which `crm.client` turns into dataclasses.
#[pymethods]
impl Client {
    /// Connects (and migrates) the database at `url`; an awaitable of a `Client`.
    #[staticmethod]
    #[pyo3(signature = (url, *, master_key = None, master_key_id = None, max_connections = None, rate_limits = None, webhook_allow_networks = None, mailer = None, parser = None, allowed_values = None, default_country_code = None, files = None, jwt = None, row_level_security = false))]
    #[allow(clippy::too_many_arguments)]
    fn connect<'py>(
        py: Python<'py>,
        url: String,
        master_key: Option<PyBackedStr>,
        master_key_id: Option<String>,
        max_connections: Option<u32>,
        rate_limits: Option<std::collections::BTreeMap<String, (u32, f64)>>,
        webhook_allow_networks: Option<Vec<String>>,
        mailer: Option<Bound<'py, PyAny>>,
        parser: Option<Bound<'py, PyAny>>,
        allowed_values: Option<Bound<'py, PyAny>>,
        default_country_code: Option<u16>,
        files: Option<Bound<'py, PyAny>>,
        jwt: Option<Bound<'py, PyAny>>,
        row_level_security: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
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
        let mailer: Option<MailerArgs> = mailer.map(|m| read(&m, "mailer")).transpose()?;
        let parser: Option<ParserArgs> = parser.map(|p| read(&p, "parser")).transpose()?;
        let allowed: Option<AllowedArgs> = allowed_values
            .map(|a| read(&a, "allowed_values"))
            .transpose()?;
        if let Some(m) = mailer {
            b = m.install(b).map_err(|e| errors::to_py(py, &e))?;
        }
        match parser {
            None | Some(ParserArgs::Builtin {}) => {}
            Some(ParserArgs::Openai {
                api_key,
                model,
                base_url,
            }) => {
                let mut p = crm_integrations::openai::OpenAi::new(api_key);
                if let Some(m) = model {
                    p = p.with_model(m);
                }
                if let Some(u) = base_url {
                    p = p.with_base_url(u);
                }
                b = b.lead_parser(p);
            }
        }
        if let Some(a) = allowed {
            let d = crm_core::leads::AllowedValues::default();
            b = b.allowed_values(crm_core::leads::AllowedValues {
                budgets: a.budgets.unwrap_or(d.budgets),
                project_types: a.project_types.unwrap_or(d.project_types),
                sources: a.sources.unwrap_or(d.sources),
            });
        }
        if let Some(code) = default_country_code {
            b = b.default_country_code(code);
        }
        if let Some(f) = files {
            b = read::<FilesArgs>(&f, "files")?.install(b);
        }
        if row_level_security {
            // The app role cannot change the schema: the owner migrates.
            b = b.row_level_security(true).migrate(false);
        }
        if let Some(j) = jwt {
            b = b.jwt(read::<JwtArgs>(&j, "jwt")?.config(py)?);
        }
        spawn(py, async move {
            let crm = b.connect().await?;
            Ok(Client {
                crm,
                stop: CancellationToken::new(),
                dispatcher: Mutex::new(None),
                pid: crate::bridge::pid(),
            })
        })
    }

    /// Handles an inbound WhatsApp `POST` for `workspace`: verifies `signature`
    /// (`X-Hub-Signature-256`) over `body` with `app_secret`, then captures each text
    /// message (to `phone_number_id` only, when given) as a lead by phone. An awaitable of what happened.
    #[pyo3(signature = (workspace, app_secret, signature, body, phone_number_id = None))]
    fn whatsapp_receive<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        app_secret: String,
        signature: Option<String>,
        body: Vec<u8>,
        phone_number_id: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (crm, ws) = self.in_workspace(py, workspace)?;
        spawn(py, async move {
            let leads = crm.workspace(ws).leads().with_actor("whatsapp");
            let r = crm_integrations::whatsapp::receive_for(
                &leads,
                &app_secret,
                phone_number_id.as_deref(),
                signature.as_deref(),
                &body,
            )
            .await?;
            Ok(Out(Received {
                captured: r.captured,
                statuses: r.statuses,
                duplicates: r.duplicates,
                ignored: r.ignored,
            }))
        })
    }

    /// Handles an inbound Cal.com `POST` for `workspace`: verifies `signature`
    /// (`X-Cal-Signature-256`) over `body` with `secret`, then captures the booking's
    /// attendee as a lead. An awaitable of what happened.
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
            Ok(Out(Booking {
                outcome,
                lead_id: lead,
                created,
                trigger,
            }))
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
        self.open(py)?;
        let mut slot = self.dispatcher.lock().map_err(|_| errors::internal(py))?;
        if slot.is_none() {
            let _guard = crate::bridge::runtime().enter();
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
        if self.pid != crate::bridge::pid() {
            // A forked child's copy: the connections are the parent's to close.
            return spawn(py, async { Ok(()) });
        }
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

    // The crm, across workspaces.

    fn crm_create_workspace<'py>(
        &self,
        py: Python<'py>,
        input: Input<Name>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, |crm| async move {
            crm.create_workspace(&input.0.name).await
        })
    }

    fn crm_register<'py>(
        &self,
        py: Python<'py>,
        input: Input<Register>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = input.0;
        let owner = NewUser {
            email: a.email,
            display_name: a.display_name,
            role: None,
            password: a.password,
        };
        self.run_crm(py, |crm| async move {
            crm.register(&a.workspace_name, owner).await
        })
    }

    fn crm_sign_in<'py>(
        &self,
        py: Python<'py>,
        input: Input<LoginArgs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, |crm| async move {
            Ok(match crm.sign_in(Login::from(input.0)).await? {
                crm_core::auth::SignIn::SignedIn(l) => {
                    let l = *l;
                    json!({ "signed_in": LoggedIn { token: secret(l.token), session: l.session, user: l.user } })
                }
                crm_core::auth::SignIn::ChooseWorkspace(list) => json!({ "choose_workspace": list }),
            })
        })
    }

    fn crm_authenticate_session<'py>(
        &self,
        py: Python<'py>,
        input: Input<Token>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, |crm| async move {
            let s = crm.authenticate_session(&input.0.token).await?;
            Ok(SessionUser {
                session: s.session,
                user: s.user,
            })
        })
    }

    fn crm_logout<'py>(&self, py: Python<'py>, input: Input<Token>) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, |crm| async move { crm.logout(&input.0.token).await })
    }

    fn crm_confirm_password_reset<'py>(
        &self,
        py: Python<'py>,
        input: Input<ResetConfirm>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = input.0;
        self.run_crm(py, |crm| async move {
            crm.confirm_password_reset(&a.token, &a.new_password).await
        })
    }

    fn crm_confirm_email<'py>(
        &self,
        py: Python<'py>,
        input: Input<Token>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(
            py,
            |crm| async move { crm.confirm_email(&input.0.token).await },
        )
    }

    fn crm_providers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, |crm| async move { Ok(crm.providers()) })
    }

    fn crm_inbound_integration<'py>(
        &self,
        py: Python<'py>,
        input: Input<InboundLookup>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = input.0;
        self.run_crm(py, |crm| async move {
            let (workspace_id, settings) = crm.inbound_integration(&a.kind, &a.inbound_id).await?;
            Ok(json!({ "workspace_id": workspace_id, "settings": settings }))
        })
    }

    fn crm_ping<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, |crm| async move { crm.ping().await })
    }

    fn crm_housekeep<'py>(
        &self,
        py: Python<'py>,
        input: Input<Housekeep>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let retention = match input.0.retention_seconds {
            None => None,
            Some(secs) => Some(
                chrono::Duration::try_seconds(secs)
                    .filter(|d| *d >= chrono::Duration::zero())
                    .ok_or_else(|| {
                        errors::invalid(py, "retention", "must be a duration of 0 or more")
                    })?,
            ),
        };
        let config = crm_core::housekeeping::Housekeeping { retention };
        self.run_crm(py, |crm| async move { crm.housekeep(config).await })
    }

    fn crm_rate_limit_check<'py>(
        &self,
        py: Python<'py>,
        input: Input<RateCheck>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = input.0;
        self.run_crm(py, |crm| async move {
            crm.rate_limiter()
                .check(&a.policy, &a.key)
                .await
                .map(decision)
        })
    }

    fn crm_rate_limit_enforce<'py>(
        &self,
        py: Python<'py>,
        input: Input<RateCheck>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = input.0;
        self.run_crm(py, |crm| async move {
            crm.rate_limiter()
                .enforce(&a.policy, &a.key)
                .await
                .map(decision)
        })
    }

    fn crm_verify_api_key<'py>(
        &self,
        py: Python<'py>,
        input: Input<VerifyKey>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = input.0;
        self.run_crm(py, |crm| async move {
            let v = crm.verify_api_key(&a.key).await?;
            if let Some(scope) = &a.scope {
                v.require(scope)?;
            }
            Ok(verified(v))
        })
    }

    fn crm_api_key_me<'py>(
        &self,
        py: Python<'py>,
        input: Input<Token>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(
            py,
            |crm| async move { crm.api_key_me(&input.0.token).await },
        )
    }

    fn crm_request_password_reset<'py>(
        &self,
        py: Python<'py>,
        input: Input<Email>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, |crm| async move {
            crm.request_password_reset(&input.0.email).await
        })
    }

    fn crm_resend_email_verification<'py>(
        &self,
        py: Python<'py>,
        input: Input<Email>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, |crm| async move {
            crm.resend_email_verification(&input.0.email).await
        })
    }

    fn crm_logout_everywhere<'py>(
        &self,
        py: Python<'py>,
        input: Input<Token>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, |crm| async move {
            crm.logout_everywhere(&input.0.token).await
        })
    }

    // A workspace.

    fn workspace_info<'py>(&self, py: Python<'py>, workspace: &str) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move { w.info().await })
    }

    fn workspace_rename<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<Name>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.rename(&input.0.name).await
        })
    }

    fn workspace_audit_log<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<Page>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = input.0;
        self.run(py, workspace, |_, w| async move {
            w.audit_log(p.after()?, p.limit).await
        })
    }

    fn workspace_recent_audit_log<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<Page>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = input.0;
        self.run(py, workspace, |_, w| async move {
            w.recent_audit_log(p.before()?, p.limit).await
        })
    }

    // Leads.

    fn leads_create<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<NewLead>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().create(input.0).await
        })
    }

    fn leads_capture<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<NewLead>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().capture(input.0).await
        })
    }

    fn leads_get<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(
            py,
            workspace,
            |_, w| async move { w.leads().get(id.0).await },
        )
    }

    fn leads_list<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<ListArgs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = input.0.query();
        self.run(
            py,
            workspace,
            |_, w| async move { w.leads().list(&q).await },
        )
    }

    fn leads_update<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
        input: Input<LeadPatch>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().update(id.0, input.0).await
        })
    }

    fn leads_delete<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(
            py,
            workspace,
            |_, w| async move { w.leads().delete(id.0).await },
        )
    }

    fn leads_duplicates<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<DuplicatesArgs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = input.0.limit;
        self.run(py, workspace, move |_, w| async move {
            w.leads().duplicates(limit).await
        })
    }

    fn leads_merge<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
        input: Input<crm_core::leads::merge::MergeInput>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().merge(id.0, input.0).await
        })
    }

    fn leads_archive<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().archive(id.0).await
        })
    }

    fn leads_convert<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
        input: Input<crm_core::contacts::ConvertInput>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().convert(id.0, input.0).await
        })
    }

    // Contacts and organizations.

    fn contacts_create<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<crm_core::contacts::NewContact>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.contacts().create(input.0).await
        })
    }

    fn contacts_get<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<crm_core::ContactId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(
            py,
            workspace,
            |_, w| async move { w.contacts().get(id.0).await },
        )
    }

    fn contacts_list<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<ContactListArgs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = input.0.query();
        self.run(
            py,
            workspace,
            |_, w| async move { w.contacts().list(&q).await },
        )
    }

    fn contacts_update<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<crm_core::ContactId>,
        input: Input<crm_core::contacts::ContactPatch>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.contacts().update(id.0, input.0).await
        })
    }

    fn contacts_delete<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<crm_core::ContactId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.contacts().delete(id.0).await
        })
    }

    // Attachments: the parent is (`lead` or `contact`, its id).

    #[pyo3(signature = (workspace, parent, parent_id, name, data, actor = None))]
    #[allow(clippy::too_many_arguments)]
    fn attachments_add<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        parent: &str,
        parent_id: &str,
        name: String,
        data: pyo3::pybacked::PyBackedBytes,
        actor: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let to = attachment_parent(py, parent, parent_id)?;
        // One copy, into the bytes crm stores; the Python object is let go at once.
        let bytes = bytes::Bytes::copy_from_slice(&data);
        self.run(py, workspace, move |_, w| async move {
            files(&w, actor).add(to, &name, bytes).await
        })
    }

    #[pyo3(signature = (workspace, parent, parent_id, path, name = None, actor = None))]
    #[allow(clippy::too_many_arguments)]
    fn attachments_add_file<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        parent: &str,
        parent_id: &str,
        path: std::path::PathBuf,
        name: Option<String>,
        actor: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let to = attachment_parent(py, parent, parent_id)?;
        self.run(py, workspace, move |_, w| async move {
            files(&w, actor).add_file(to, &path, name.as_deref()).await
        })
    }

    fn attachments_list<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        parent: &str,
        parent_id: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let of = attachment_parent(py, parent, parent_id)?;
        self.run(py, workspace, move |_, w| async move {
            w.attachments().list(of).await
        })
    }

    fn attachments_get<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        parent: &str,
        parent_id: &str,
        id: Id<crm_core::AttachmentId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let of = attachment_parent(py, parent, parent_id)?;
        self.run(py, workspace, move |_, w| async move {
            w.attachments().get(of, id.0).await
        })
    }

    /// An awaitable of the file's bytes (`bytes`).
    fn attachments_read<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        parent: &str,
        parent_id: &str,
        id: Id<crm_core::AttachmentId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let of = attachment_parent(py, parent, parent_id)?;
        let (crm, ws) = self.in_workspace(py, workspace)?;
        spawn(py, async move {
            let bytes = crm.workspace(ws).attachments().read(of, id.0).await?;
            Ok(bytes.to_vec())
        })
    }

    #[pyo3(signature = (workspace, parent, parent_id, id, actor = None))]
    fn attachments_delete<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        parent: &str,
        parent_id: &str,
        id: Id<crm_core::AttachmentId>,
        actor: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let of = attachment_parent(py, parent, parent_id)?;
        self.run(py, workspace, move |_, w| async move {
            files(&w, actor).delete(of, id.0).await
        })
    }

    #[pyo3(signature = (workspace, parent, parent_id, id, expires_in = None))]
    fn attachments_link<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        parent: &str,
        parent_id: &str,
        id: Id<crm_core::AttachmentId>,
        expires_in: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let of = attachment_parent(py, parent, parent_id)?;
        let ttl = expires_in.map(std::time::Duration::from_secs);
        self.run(py, workspace, move |_, w| async move {
            w.attachments().link(of, id.0, ttl).await
        })
    }

    fn attachments_usage<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.attachments().usage().await
        })
    }

    /// An awaitable of who an outside sign-in service's token names (see
    /// `crm_core::jwt`); `UnauthorizedError` with the reason when it is refused.
    fn verify_jwt<'py>(&self, py: Python<'py>, token: String) -> PyResult<Bound<'py, PyAny>> {
        self.run_crm(py, move |crm| async move { crm.verify_jwt(&token).await })
    }

    /// An awaitable of the bytes a signed link's file holds, with its metadata:
    /// `(attachment, bytes)`; `AuthError` when the link is not valid.
    fn attachments_open_link<'py>(
        &self,
        py: Python<'py>,
        token: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.open(py)?;
        let crm = self.crm.clone();
        spawn(py, async move {
            let download = crm.open_link(&token).await?;
            let attachment = download.attachment.clone();
            let bytes = download.bytes().await?;
            Ok((Out(attachment), bytes.to_vec()))
        })
    }

    fn organizations_create<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<crm_core::contacts::NewOrganization>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.organizations().create(input.0).await
        })
    }

    fn organizations_get<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<crm_core::OrganizationId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.organizations().get(id.0).await
        })
    }

    fn organizations_list<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<OrganizationListArgs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = input.0.query();
        self.run(py, workspace, |_, w| async move {
            w.organizations().list(&q).await
        })
    }

    fn organizations_update<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<crm_core::OrganizationId>,
        input: Input<crm_core::contacts::OrganizationPatch>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.organizations().update(id.0, input.0).await
        })
    }

    fn organizations_delete<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<crm_core::OrganizationId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.organizations().delete(id.0).await
        })
    }

    fn leads_restore<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().restore(id.0).await
        })
    }

    #[pyo3(signature = (workspace, path, data, options, on_progress))]
    fn leads_import<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        path: Option<std::path::PathBuf>,
        data: Option<pyo3::pybacked::PyBackedBytes>,
        options: Input<crm_core::leads::ImportOptions>,
        on_progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let source = crate::transfer::source(path, data)?;
        self.run(py, workspace, move |_, w| {
            crate::transfer::import(w, source, options.0, on_progress)
        })
    }

    fn leads_start_import<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        path: Option<std::path::PathBuf>,
        data: Option<pyo3::pybacked::PyBackedBytes>,
        options: Input<crm_core::leads::ImportOptions>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let file = crate::transfer::file(py, path, data)?;
        self.run(py, workspace, move |_, w| async move {
            w.leads().start_import(file, options.0).await
        })
    }

    fn leads_import_report<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<crm_core::ImportId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, move |_, w| async move {
            w.leads().import_report(id.0).await
        })
    }

    fn leads_export<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<ListArgs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = input.0.query();
        let (crm, ws) = self.in_workspace(py, workspace)?;
        spawn(py, async move {
            let export = crm.workspace(ws).leads().export(&q).await?;
            Ok(crate::transfer::ExportStream::new(export))
        })
    }

    fn leads_add_activity<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
        input: Input<NewActivity>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().add_activity(id.0, input.0).await
        })
    }

    fn leads_activities<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().activities(id.0).await
        })
    }

    fn leads_send_message<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<LeadId>,
        input: Input<NewMessage>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().send_message(id.0, "whatsapp", input.0).await
        })
    }

    fn leads_parse<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<ParseArgs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = input.0;
        self.run(py, workspace, |_, w| async move {
            w.leads().parse(&a.text, a.auto_save).await
        })
    }

    fn leads_stats<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<crm_core::leads::StatsQuery>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.leads().stats(&input.0).await
        })
    }

    // Users and sessions.

    fn auth_create_user<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<NewUser>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().create_user(input.0, Actor::App(None)).await
        })
    }

    fn auth_users<'py>(&self, py: Python<'py>, workspace: &str) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move { w.auth().users().await })
    }

    fn auth_user<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(
            py,
            workspace,
            |_, w| async move { w.auth().user(id.0).await },
        )
    }

    fn auth_set_role<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
        input: Input<Role>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth()
                .set_role(id.0, &input.0.role, Actor::App(None))
                .await
        })
    }

    fn auth_disable_user<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().disable_user(id.0, Actor::App(None)).await
        })
    }

    fn auth_enable_user<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().enable_user(id.0, Actor::App(None)).await
        })
    }

    fn auth_delete_user<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().delete_user(id.0, Actor::App(None)).await
        })
    }

    fn auth_sessions<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().sessions(id.0).await
        })
    }

    fn auth_end_user_sessions<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().end_user_sessions(id.0, Actor::App(None)).await
        })
    }

    fn auth_login<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<LoginArgs>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            let l = w.auth().login(Login::from(input.0)).await?;
            Ok(LoggedIn {
                token: secret(l.token),
                session: l.session,
                user: l.user,
            })
        })
    }

    fn auth_change_password<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
        input: Input<ChangePassword>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = input.0;
        self.run(py, workspace, |_, w| async move {
            w.auth()
                .change_password(id.0, &a.current, &a.new, None)
                .await
        })
    }

    fn auth_request_password_reset<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<Email>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().request_password_reset(&input.0.email).await
        })
    }

    fn auth_request_email_verification<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().request_email_verification(id.0).await
        })
    }

    fn auth_end_session<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
        input: Input<SessionArg>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let session =
            parse_id(&input.0.session_id, "session_id").map_err(|e| errors::to_py(py, &e))?;
        self.run(py, workspace, |_, w| async move {
            w.auth().end_session(id.0, session).await
        })
    }

    fn auth_lift_lockout<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<UserId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().lift_lockout(id.0, Actor::App(None)).await
        })
    }

    fn auth_resend_email_verification<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<Email>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.auth().resend_email_verification(&input.0.email).await
        })
    }

    // API keys.

    fn api_keys_create<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<NewApiKey>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            let c = w.api_keys().create(input.0).await?;
            Ok(CreatedApiKey {
                key: c.key,
                secret: secret(c.secret),
            })
        })
    }

    fn api_keys_list<'py>(&self, py: Python<'py>, workspace: &str) -> PyResult<Bound<'py, PyAny>> {
        self.run(
            py,
            workspace,
            |_, w| async move { w.api_keys().list().await },
        )
    }

    fn api_keys_get<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ApiKeyId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(
            py,
            workspace,
            |_, w| async move { w.api_keys().get(id.0).await },
        )
    }

    fn api_keys_update<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ApiKeyId>,
        input: Input<ApiKeyPatch>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.api_keys().update(id.0, input.0).await
        })
    }

    fn api_keys_revoke<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ApiKeyId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.api_keys().revoke(id.0).await
        })
    }

    fn api_keys_rotate<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ApiKeyId>,
        input: Input<Rotate>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let grace = input
            .0
            .grace_seconds
            .map(|s| {
                i64::try_from(s)
                    .ok()
                    .and_then(chrono::TimeDelta::try_seconds)
                    .ok_or_else(|| errors::invalid(py, "grace_seconds", "is too large"))
            })
            .transpose()?;
        self.run(py, workspace, |_, w| async move {
            let c = w.api_keys().rotate(id.0, grace).await?;
            Ok(CreatedApiKey {
                key: c.key,
                secret: secret(c.secret),
            })
        })
    }

    fn api_keys_verify<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<VerifyKey>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let a = input.0;
        self.run(py, workspace, |crm, w| async move {
            let v = crm.verify_api_key(&a.key).await?;
            // A key of another workspace does not exist for this one.
            if v.workspace_id != w.id() {
                return Err(Error::Unauthorized {
                    reason: crm_core::AuthFailure::UnknownKey,
                });
            }
            if let Some(scope) = &a.scope {
                v.require(scope)?;
            }
            Ok(verified(v))
        })
    }

    // Webhook endpoints.

    fn webhooks_create_endpoint<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<NewEndpoint>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            let c = w.webhooks().create(input.0).await?;
            Ok(CreatedEndpoint {
                endpoint: c.endpoint,
                secret: secret(c.secret),
            })
        })
    }

    fn webhooks_list_endpoints<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(
            py,
            workspace,
            |_, w| async move { w.webhooks().list().await },
        )
    }

    fn webhooks_get_endpoint<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(
            py,
            workspace,
            |_, w| async move { w.webhooks().get(id.0).await },
        )
    }

    fn webhooks_update_endpoint<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
        input: Input<EndpointPatch>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.webhooks().update(id.0, input.0).await
        })
    }

    fn webhooks_delete_endpoint<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.webhooks().delete(id.0).await
        })
    }

    fn webhooks_endpoint_secret<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.webhooks().secret(id.0).await.map(secret)
        })
    }

    fn webhooks_rotate_secret<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.webhooks().rotate_secret(id.0).await.map(secret)
        })
    }

    fn webhooks_test<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.webhooks().test(id.0).await
        })
    }

    fn webhooks_attempts<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
        input: Input<Page>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = input.0;
        self.run(py, workspace, |_, w| async move {
            w.webhooks().attempts(id.0, p.after()?, p.limit).await
        })
    }

    fn webhooks_recent_attempts<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
        input: Input<Page>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = input.0;
        self.run(py, workspace, |_, w| async move {
            w.webhooks()
                .recent_attempts(id.0, p.before()?, p.limit)
                .await
        })
    }

    fn webhooks_resend<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
        input: Input<Resend>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let event = parse_id(&input.0.event_id, "event_id").map_err(|e| errors::to_py(py, &e))?;
        self.run(py, workspace, |_, w| async move {
            w.webhooks().resend(id.0, event).await
        })
    }

    fn webhooks_message_attempts<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<EndpointId>,
        input: Input<Resend>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let event = parse_id(&input.0.event_id, "event_id").map_err(|e| errors::to_py(py, &e))?;
        self.run(py, workspace, |_, w| async move {
            w.webhooks().message_attempts(id.0, event).await
        })
    }

    // Notification channels.

    fn notifications_create_channel<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        input: Input<NewChannel>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.notifications().create(input.0).await
        })
    }

    fn notifications_list_channels<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.notifications().list().await
        })
    }

    fn notifications_get_channel<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ChannelId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.notifications().get(id.0).await
        })
    }

    fn notifications_update_channel<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ChannelId>,
        input: Input<ChannelPatch>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.notifications().update(id.0, input.0).await
        })
    }

    fn notifications_attempts<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ChannelId>,
        input: Input<Page>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = input.0;
        self.run(py, workspace, |_, w| async move {
            w.notifications().attempts(id.0, p.after()?, p.limit).await
        })
    }

    fn notifications_delete_channel<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ChannelId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.notifications().delete(id.0).await
        })
    }

    fn notifications_test_channel<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ChannelId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.notifications().test(id.0).await
        })
    }

    fn notifications_config<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        id: Id<ChannelId>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.notifications().config(id.0).await
        })
    }

    // Integrations (by provider kind).

    fn integrations_list<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.integrations().list().await
        })
    }

    fn integrations_get<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        kind: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.integrations().get(&kind).await
        })
    }

    fn integrations_settings<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        kind: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.integrations().settings(&kind).await
        })
    }

    fn integrations_save<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        kind: String,
        input: Input<SaveIntegration>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.integrations()
                .save(Actor::App(None), &kind, input.0.settings)
                .await
        })
    }

    fn integrations_delete<'py>(
        &self,
        py: Python<'py>,
        workspace: &str,
        kind: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.run(py, workspace, |_, w| async move {
            w.integrations().delete(Actor::App(None), &kind).await
        })
    }
}
