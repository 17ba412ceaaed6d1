//! The `Crm` handle: one per app, cheap to clone, holding the pool, the master key,
//! the lead rules and the clock. Services hang off a workspace:
//! `crm.workspace(id).leads()`; `crm.leads()` is the default workspace's.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::api_keys::{format::valid_prefix, ApiKeys, KeyCache};
use crate::attachments::{AttachmentRules, Attachments};
use crate::audit::AuditEntry;
use crate::auth::password::Passwords;
use crate::auth::{Auth, AuthConfig, Mailer};
use crate::clock::{micros, Clock, SystemClock};
use crate::events::Event;
use crate::ids::{AuditId, EventId, WorkspaceId};
use crate::leads::parse::LeadRules;
use crate::leads::parser::{BuiltinParser, LeadParser};
use crate::leads::{AllowedValues, Leads};
use crate::notify::{Notifications, Notifier};
use crate::providers::Provider;
use crate::ratelimit::{Policy, RateLimiter};
use crate::seal::{MasterKey, Sealer};
use crate::storage::Storage;
use crate::store::{self, Pool, Ts};
use crate::webhooks::ssrf::IpNet;
use crate::webhooks::Webhooks;
use crate::{Error, Result};

/// The crm handle. Clone it freely: clones share one pool.
#[derive(Clone)]
pub struct Crm {
    inner: Arc<Inner>,
    /// Under row-level security, the pool scoped to one workspace's tenant (the
    /// services of [`Crm::workspace`]); `None`: the shared pool.
    scoped: Option<Pool>,
}

struct Inner {
    pool: Pool,
    schema: Option<String>,
    cursor_key: [u8; 32],
    /// The key idempotency fingerprints are an HMAC under (derived from the master key).
    fingerprint_key: [u8; 32],
    sealer: Option<Sealer>,
    clock: Arc<dyn Clock>,
    rules: LeadRules,
    api_key_prefix: String,
    key_cache: KeyCache,
    limiter: RateLimiter,
    passwords: Passwords,
    auth: AuthConfig,
    mailer: Option<Arc<dyn Mailer>>,
    webhook_allow: Vec<IpNet>,
    dispatch_wake: tokio::sync::Notify,
    /// SQLite's group commit of lead creates, started by the first create.
    lead_writer: std::sync::OnceLock<crate::leads::batch::Batcher>,
    notifiers: Vec<Arc<dyn Notifier>>,
    lead_parser: Arc<dyn LeadParser>,
    providers: Vec<Arc<dyn Provider>>,
    quotas: Quotas,
    storage: Option<Arc<dyn Storage>>,
    attachment_rules: AttachmentRules,
    /// The key crm's download links are signed with (derived from the master key).
    link_key: Option<[u8; 32]>,
    #[cfg(feature = "jwt")]
    jwt: Option<crate::jwt::Verifier>,
    #[cfg(feature = "oidc")]
    oidc: crate::oidc::Cache,
}

impl fmt::Debug for Crm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crm")
            .field("backend", &self.inner.pool.dialect().name())
            .field("sealer", &self.inner.sealer)
            .finish_non_exhaustive()
    }
}

impl Crm {
    /// A builder; see [`CrmBuilder`].
    pub fn builder() -> CrmBuilder {
        CrmBuilder::default()
    }

    /// Connects to `url` with every other setting at its default (no master key).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::builder().database_url(url).connect().await
    }

    /// The services of workspace `id`. Reads in a workspace that does not exist find
    /// nothing; writes fail with `NotFound { entity: "workspace" }`.
    pub fn workspace(&self, id: WorkspaceId) -> Workspace {
        Workspace {
            crm: self.scoped(id),
            id,
        }
    }

    /// This `Crm` with its statements scoped to workspace `id` under row-level
    /// security (the same `Crm` without it).
    pub(crate) fn scoped(&self, id: WorkspaceId) -> Crm {
        Crm {
            inner: self.inner.clone(),
            scoped: self.inner.pool.scoped(id),
        }
    }

    /// The lead service of the default workspace.
    pub fn leads(&self) -> Leads {
        self.workspace(WorkspaceId::DEFAULT).leads()
    }

    /// The contact service of the default workspace.
    pub fn contacts(&self) -> crate::Contacts {
        self.workspace(WorkspaceId::DEFAULT).contacts()
    }

    /// The organization service of the default workspace.
    pub fn organizations(&self) -> crate::Organizations {
        self.workspace(WorkspaceId::DEFAULT).organizations()
    }

    /// Creates a workspace (tenant) named `name` (1–200 characters).
    pub async fn create_workspace(&self, name: &str) -> Result<WorkspaceId> {
        let name = workspace_name(name)?;
        let id = WorkspaceId::new();
        let now = Ts(self.now());
        store::workspaces::create_workspace(self.pool(), id, name, now).await?;
        Ok(id)
    }

    /// Runs a trivial query: `Ok` when the database answers (for health checks).
    pub async fn ping(&self) -> Result<()> {
        store::workspaces::ping(self.pool()).await
    }

    /// The connection pool: connections open, and how many of them are idle.
    pub fn pool_usage(&self) -> (u32, usize) {
        self.pool().usage()
    }

    /// The budgets, project types and sources leads are checked against.
    pub fn allowed_values(&self) -> &AllowedValues {
        &self.rules().allowed
    }

    /// The country code a phone number without one gets (see
    /// [`CrmBuilder::default_country_code`]); `None`: numbers need their own.
    pub fn default_country_code(&self) -> Option<u16> {
        self.rules().default_country_code
    }

    /// The sealer built from the master key; `Config` error when none was given.
    pub fn sealer(&self) -> Result<&Sealer> {
        self.inner
            .sealer
            .as_ref()
            .ok_or_else(|| Error::Config("no master key was given to the Crm builder".into()))
    }

    /// The current time from the configured clock, truncated to microseconds.
    pub fn now(&self) -> DateTime<Utc> {
        micros(self.inner.clock.now())
    }

    /// Brings crm's tables to this library's version and returns the migration
    /// versions it applied (empty when there was nothing to do). [`CrmBuilder::connect`]
    /// does this unless [`CrmBuilder::migrate`] turned it off, for a host that runs
    /// migrations at a moment of its choosing (a deploy step, before its own).
    ///
    /// crm's migration history lives in its own table, `_crm_migrations`, never in
    /// sqlx's `_sqlx_migrations`, so a host's `sqlx::migrate!` and crm's can run on one
    /// database in either order. Pending migrations run in one transaction under a
    /// lock (instances starting together apply each once). A database whose crm
    /// schema is newer than this library fails with [`Error::Migration`] naming both
    /// versions, and nothing is changed.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        crate::migrate::run(self.pool(), self.inner.schema.as_deref(), false).await
    }

    /// The migration versions [`Crm::migrate`] would apply now (empty: the schema is
    /// current), with the same errors (a database ahead of this library, an applied
    /// migration that differs); nothing is changed. It takes the migration lock for a
    /// moment, so it suits a deploy check, not a frequent probe.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
        crate::migrate::run(self.pool(), self.inner.schema.as_deref(), true).await
    }

    /// Whether the database's crm schema is exactly this library's version: one read,
    /// no lock, so it suits a readiness probe (`false` when migrations are pending or
    /// a newer version of crm migrated the database since).
    pub async fn schema_is_current(&self) -> Result<bool> {
        crate::migrate::is_current(self.pool()).await
    }

    /// Closes the pool; pending work finishes first. On a pool the host handed over
    /// ([`CrmBuilder::pool`]) this closes the host's pool too.
    pub async fn close(&self) {
        self.pool().close().await
    }

    pub(crate) fn pool(&self) -> &Pool {
        self.scoped.as_ref().unwrap_or(&self.inner.pool)
    }

    /// The pool of crm's own cross-workspace work (under row-level security, every
    /// workspace in reach), even from a workspace's services.
    pub(crate) fn root_pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Turns Postgres row-level security on or off for crm's tables (the policies
    /// of migration `0022` then bind, or stop binding, every role that neither owns
    /// the tables nor has `BYPASSRLS`). Run it connected as the tables' owner, once
    /// per database, before the app connects with
    /// [`CrmBuilder::row_level_security`]; `Config` on SQLite. Turning it off
    /// makes an app that connects with RLS on fail at connect, never see nothing.
    pub async fn set_row_level_security(&self, on: bool) -> Result<()> {
        store::rls::set_enabled(self.root_pool(), on).await
    }

    /// The key lead cursors are signed with (derived from the master key).
    pub(crate) fn cursor_key(&self) -> &[u8; 32] {
        &self.inner.cursor_key
    }

    /// The key idempotency fingerprints are made with.
    pub(crate) fn fingerprint_key(&self) -> &[u8; 32] {
        &self.inner.fingerprint_key
    }

    pub(crate) fn rules(&self) -> &LeadRules {
        &self.inner.rules
    }

    pub(crate) fn api_key_prefix(&self) -> &str {
        &self.inner.api_key_prefix
    }

    pub(crate) fn key_cache(&self) -> &KeyCache {
        &self.inner.key_cache
    }

    pub(crate) fn passwords(&self) -> &Passwords {
        &self.inner.passwords
    }

    pub(crate) fn auth_config(&self) -> &AuthConfig {
        &self.inner.auth
    }

    /// The builder's lead parser (a workspace's own comes first: `lead_parser_for`).
    pub(crate) fn default_lead_parser(&self) -> Arc<dyn LeadParser> {
        self.inner.lead_parser.clone()
    }

    /// The registered integration provider of `kind`.
    pub(crate) fn provider(&self, kind: &str) -> Option<&dyn Provider> {
        self.inner
            .providers
            .iter()
            .find(|p| p.kind() == kind)
            .map(|p| p.as_ref())
    }

    pub(crate) fn providers_registered(&self) -> &[Arc<dyn Provider>] {
        &self.inner.providers
    }

    /// The per-workspace quotas.
    pub fn quotas(&self) -> &Quotas {
        &self.inner.quotas
    }

    /// What files are taken ([`CrmBuilder::attachment_rules`]).
    pub fn attachment_rules(&self) -> &AttachmentRules {
        &self.inner.attachment_rules
    }

    /// The file storage; `Config` error when none was given
    /// ([`CrmBuilder::storage`]).
    pub fn storage(&self) -> Result<&Arc<dyn Storage>> {
        self.inner
            .storage
            .as_ref()
            .ok_or_else(|| Error::Config("no file storage was given to the Crm builder".into()))
    }

    /// Who and when for one call of a service in workspace `ws`, on behalf of
    /// `actor` (checked: 1–200 characters, no control characters).
    pub(crate) fn ctx<'a>(
        &self,
        ws: WorkspaceId,
        actor: Option<&'a str>,
    ) -> Result<store::Ctx<'a>> {
        if actor.is_some() {
            crate::leads::parse::actor(actor)?;
        }
        Ok(store::Ctx {
            ws,
            now: self.now(),
            actor,
        })
    }

    /// The JWT verifier; `Config` error when no JWT configuration was given.
    #[cfg(feature = "jwt")]
    pub(crate) fn jwt_verifier(&self) -> Result<&crate::jwt::Verifier> {
        self.inner.jwt.as_ref().ok_or_else(|| {
            Error::Config("no JWT configuration was given to the Crm builder".into())
        })
    }

    /// The OpenID Connect discovery documents and ID-token verifiers.
    #[cfg(feature = "oidc")]
    pub(crate) fn oidc_cache(&self) -> &crate::oidc::Cache {
        &self.inner.oidc
    }

    /// The key download links are signed with; `Config` error without a master key.
    pub(crate) fn link_key(&self) -> Result<&[u8; 32]> {
        self.inner.link_key.as_ref().ok_or_else(|| {
            Error::Config("download links need a master key given to the Crm builder".into())
        })
    }

    /// The kinds of the registered notification plugins (`email`, `discord`, …): the
    /// kinds a channel can have.
    pub fn notifier_kinds(&self) -> Vec<&'static str> {
        self.inner.notifiers.iter().map(|n| n.kind()).collect()
    }

    /// The registered plugin of `kind`.
    pub(crate) fn notifier(&self, kind: &str) -> Option<&dyn Notifier> {
        self.inner
            .notifiers
            .iter()
            .find(|n| n.kind() == kind)
            .map(|n| n.as_ref())
    }

    /// The lead writer (group commit of lead creates), started on first use on the
    /// caller's runtime: one writer on SQLite (one writer at a time anyway), four
    /// on Postgres (batches commit side by side).
    pub(crate) fn lead_writer(&self) -> &crate::leads::batch::Batcher {
        self.inner.lead_writer.get_or_init(|| {
            let writers = match self.inner.pool.dialect() {
                crate::store::Dialect::Sqlite => 1,
                crate::store::Dialect::Postgres => 4,
            };
            crate::leads::batch::Batcher::start(self.inner.pool.clone(), writers)
        })
    }

    pub(crate) fn dispatch_wake(&self) -> &tokio::sync::Notify {
        &self.inner.dispatch_wake
    }

    pub(crate) fn webhook_allow(&self) -> &[IpNet] {
        &self.inner.webhook_allow
    }

    /// The builder's mailer (a workspace's own comes first: `mailer_for`).
    pub(crate) fn default_mailer(&self) -> Result<Arc<dyn Mailer>> {
        self.inner
            .mailer
            .clone()
            .ok_or_else(|| Error::Config("no mailer was given to the Crm builder".into()))
    }

    /// The rate limiter: shared through the database on Postgres (every instance on
    /// one budget), in this process's memory on SQLite.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }
}

/// The services of one workspace; from [`Crm::workspace`].
#[derive(Clone, Debug)]
pub struct Workspace {
    crm: Crm,
    id: WorkspaceId,
}

impl Workspace {
    /// The workspace id.
    pub fn id(&self) -> WorkspaceId {
        self.id
    }

    /// Its lead service.
    pub fn leads(&self) -> Leads {
        Leads::new(self.crm.clone(), self.id)
    }

    /// Its contact service (people).
    pub fn contacts(&self) -> crate::Contacts {
        crate::Contacts::new(self.crm.clone(), self.id)
    }

    /// Its organization service (the companies contacts belong to).
    pub fn organizations(&self) -> crate::Organizations {
        crate::Organizations::new(self.crm.clone(), self.id)
    }

    /// Its attachment service (files on leads and contacts).
    pub fn attachments(&self) -> Attachments {
        Attachments::new(self.crm.clone(), self.id)
    }

    /// Its auth service.
    pub fn auth(&self) -> Auth {
        Auth::new(self.crm.clone(), self.id)
    }

    /// Its sign-in providers (OpenID Connect: Google, Microsoft, any issuer).
    #[cfg(feature = "oidc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
    pub fn oidc(&self) -> crate::oidc::Oidc {
        crate::oidc::Oidc::new(self.crm.clone(), self.id)
    }

    /// Its notification service.
    pub fn notifications(&self) -> Notifications {
        Notifications::new(self.crm.clone(), self.id)
    }

    /// Its webhook service.
    pub fn webhooks(&self) -> Webhooks {
        Webhooks::new(self.crm.clone(), self.id)
    }

    /// Its API-key service.
    pub fn api_keys(&self) -> ApiKeys {
        ApiKeys::new(self.crm.clone(), self.id)
    }

    /// Its integrations (provider credentials and settings).
    pub fn integrations(&self) -> crate::providers::Integrations {
        crate::providers::Integrations::new(self.crm.clone(), self.id)
    }

    /// Its idempotency-key store.
    pub fn idempotency(&self) -> crate::idempotency::Idempotency {
        crate::idempotency::Idempotency::new(self.crm.clone(), self.id)
    }

    /// Its name and creation time; `NotFound` when the workspace does not exist.
    pub async fn info(&self) -> Result<WorkspaceInfo> {
        let row = store::workspaces::get_workspace(self.crm.pool(), self.id).await?;
        Ok(WorkspaceInfo {
            id: self.id,
            name: row.name,
            created_at: row.created_at.0,
        })
    }

    /// Renames it (1–200 characters).
    pub async fn rename(&self, name: &str) -> Result<WorkspaceInfo> {
        let name = workspace_name(name)?;
        store::workspaces::rename_workspace(self.crm.pool(), self.id, name).await?;
        self.info().await
    }

    /// Its audit log, oldest first: at most `limit` (1–1000) entries after `after`.
    pub async fn audit_log(&self, after: Option<AuditId>, limit: u32) -> Result<Vec<AuditEntry>> {
        self.audit_by(store::Seek::After(after.map(|a| a.0)), limit)
            .await
    }

    /// Its audit log, newest first: at most `limit` (1–1000) entries before the entry
    /// `before` (pass the last id of a page for the next, older one). What an admin
    /// page shows; [`Workspace::audit_log`] reads it forwards.
    pub async fn recent_audit_log(
        &self,
        before: Option<AuditId>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        self.audit_by(store::Seek::Before(before.map(|a| a.0)), limit)
            .await
    }

    async fn audit_by(&self, seek: store::Seek, limit: u32) -> Result<Vec<AuditEntry>> {
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 1000"));
        }
        store::audit::list_audit(self.crm.pool(), self.id, seek, limit).await
    }

    /// Its events (the outbox), oldest first: at most `limit` (1–1000) after `after`.
    pub async fn events(&self, after: Option<EventId>, limit: u32) -> Result<Vec<Event>> {
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit", "must be between 1 and 1000"));
        }
        store::outbox::events(self.crm.pool(), self.id, after, limit).await
    }
}

/// A workspace's name and creation time.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkspaceInfo {
    /// Its id.
    pub id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

fn workspace_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
        return Err(Error::invalid("name", "must be 1-200 characters"));
    }
    Ok(name)
}

/// What one workspace may hold of what the operator pays for or others could be
/// spammed with. A create past a quota is `InvalidState` with code
/// `quota_exceeded` (409 over HTTP) and writes nothing; the count is taken in the
/// transaction that inserts, with the workspace locked, so concurrent creates cannot
/// overshoot. Rotating an API key is not a create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Users (default 100).
    pub users: u32,
    /// API keys that are not revoked (default 50).
    pub api_keys: u32,
    /// Webhook endpoints (default 20).
    pub webhook_endpoints: u32,
    /// Notification channels (default 20).
    pub notification_channels: u32,
    /// Email addresses one notification channel sends to (default 10).
    pub email_recipients: u32,
    /// Bytes of attached files (default 1 GiB). A file that would pass it is
    /// `InvalidState` with code `storage_quota_exceeded`.
    pub attachment_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            users: 100,
            api_keys: 50,
            webhook_endpoints: 20,
            notification_channels: 20,
            email_recipients: 10,
            attachment_bytes: 1 << 30,
        }
    }
}

/// Settings of a [`Crm`]; finish with [`CrmBuilder::connect`].
pub struct CrmBuilder {
    url: String,
    host_pool: Option<Result<Pool>>,
    migrate: bool,
    schema: Option<String>,
    max_connections: u32,
    master_key: Option<MasterKey>,
    retired_keys: Vec<MasterKey>,
    clock: Arc<dyn Clock>,
    rules: LeadRules,
    api_key_prefix: String,
    api_key_cache_ttl: std::time::Duration,
    policies: Vec<(String, Policy)>,
    auth: AuthConfig,
    mailer: Option<Arc<dyn Mailer>>,
    webhook_allow: Vec<String>,
    notifiers: Vec<Arc<dyn Notifier>>,
    lead_parser: Arc<dyn LeadParser>,
    providers: Vec<Arc<dyn Provider>>,
    quotas: Quotas,
    storage: Option<Arc<dyn Storage>>,
    attachment_rules: AttachmentRules,
    #[cfg(feature = "jwt")]
    jwt: Option<crate::jwt::JwtConfig>,
    row_level_security: bool,
}

impl Default for CrmBuilder {
    fn default() -> Self {
        Self {
            url: "sqlite://crm.db".into(),
            host_pool: None,
            migrate: true,
            schema: None,
            max_connections: 10,
            master_key: None,
            retired_keys: Vec::new(),
            clock: Arc::new(SystemClock),
            rules: LeadRules::default(),
            api_key_prefix: "crm".into(),
            api_key_cache_ttl: std::time::Duration::from_secs(10),
            policies: Vec::new(),
            auth: AuthConfig::default(),
            mailer: None,
            webhook_allow: Vec::new(),
            notifiers: Vec::new(),
            lead_parser: Arc::new(BuiltinParser),
            providers: Vec::new(),
            quotas: Quotas::default(),
            storage: None,
            attachment_rules: AttachmentRules::default(),
            #[cfg(feature = "jwt")]
            jwt: None,
            row_level_security: false,
        }
    }
}

impl fmt::Debug for CrmBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a database password.
        f.debug_struct("CrmBuilder")
            .field("max_connections", &self.max_connections)
            .field("host_pool", &self.host_pool.is_some())
            .field("migrate", &self.migrate)
            .field("schema", &self.schema)
            .field("master_key", &self.master_key)
            .finish_non_exhaustive()
    }
}

impl CrmBuilder {
    /// The database: `sqlite://path/to/file.db` (created when missing),
    /// `sqlite::memory:`, or `postgres://user:pass@host/db`. Default `sqlite://crm.db`.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Runs on the host app's own pool instead of opening one from
    /// [`database_url`](Self::database_url): a `sqlx::SqlitePool` or `sqlx::PgPool`
    /// (sqlx 0.8, the version crm uses). crm's tables (prefixed `crm_`) and its
    /// migration history (`_crm_migrations`) then live beside the host's; on Postgres
    /// they go to the first schema of the pool's `search_path`. A pool of a backend this
    /// build of crm lacks (a `PgPool` without the `postgres` feature, a MySQL pool)
    /// makes [`connect`](Self::connect) fail with [`Error::Config`].
    ///
    /// [`database_url`](Self::database_url) and [`max_connections`](Self::max_connections)
    /// are then unused, and [`Crm::close`] closes the host's pool. crm's own SQLite
    /// pools use WAL, `synchronous = NORMAL`, foreign keys and a 5 s busy timeout: give
    /// a host pool the same settings (foreign keys are required). They also roll back
    /// a connection that a cancelled write handed back inside a transaction, a hook a
    /// host pool does not get.
    pub fn pool<DB: sqlx::Database>(mut self, pool: sqlx::Pool<DB>) -> Self {
        self.host_pool = Some(store::from_host(pool));
        self
    }

    /// Whether [`connect`](Self::connect) runs crm's migrations (default `true`). With
    /// `false` the host runs them when it chooses, through [`Crm::migrate`].
    pub fn migrate(mut self, run: bool) -> Self {
        self.migrate = run;
        self
    }

    /// Postgres only: keeps crm's tables in this schema (created by the migrations
    /// when missing) by making it the `search_path` of crm's connections. 1–63
    /// lower-case ASCII letters, digits and `_`, starting with a letter or `_` (not
    /// `pg_`). Connecting fails with [`Error::Config`] when the server (or a pooler in
    /// front of it) does not keep that `search_path`. For a host pool
    /// ([`pool`](Self::pool)) set the `search_path` on the pool instead.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Pool size (default 10; an in-memory SQLite database always uses one connection).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// The master key that seals secrets at rest. Needed by the services that store
    /// secrets to read back (webhooks, notification channels); keep it outside the
    /// database, e.g. in an environment variable.
    pub fn master_key(mut self, key: MasterKey) -> Self {
        self.master_key = Some(key);
        self
    }

    /// A former master key, still used to open values sealed before a rotation.
    pub fn retired_master_key(mut self, key: MasterKey) -> Self {
        self.retired_keys.push(key);
        self
    }

    /// The clock (default: the system clock). Tests pass a [`crate::ManualClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The values budget, project type and source may take (defaults:
    /// [`AllowedValues::default`]).
    pub fn allowed_values(mut self, allowed: AllowedValues) -> Self {
        self.rules.allowed = allowed;
        self
    }

    /// Reads phone numbers written without `+` or `00` as national numbers of this
    /// country calling code (e.g. 34). Without it such numbers are refused.
    pub fn default_country_code(mut self, code: u16) -> Self {
        self.rules.default_country_code = Some(code);
        self
    }

    /// The prefix of new API keys (default `crm`): 2–16 lower-case letters and
    /// digits, starting with a letter. Keys with another prefix do not verify.
    pub fn api_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.api_key_prefix = prefix.into();
        self
    }

    /// How long a verified API key is trusted without asking the database (default and
    /// maximum 10 s; zero turns the cache off). Bounds how late another process sees
    /// a revoke.
    pub fn api_key_cache_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.api_key_cache_ttl = ttl;
        self
    }

    /// Sets (or replaces) a named rate-limit policy. The defaults are `api_key`
    /// 100/min, `anonymous_ip` 10/min and `login` 5 per 15 min.
    pub fn rate_limit_policy(mut self, name: impl Into<String>, policy: Policy) -> Self {
        self.policies.push((name.into(), policy));
        self
    }

    /// What one workspace may create of the operator's shared resources (see
    /// [`Quotas`]); the defaults suit a server with registration open.
    pub fn quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Where attached files' bytes are kept: [`crate::storage::FsStorage`] (a
    /// directory), an S3 bucket (`crm-integrations`, feature `s3`), or a plugin of
    /// the app's. Without it the attachment service answers `Config` errors.
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// The size limit and the allowed types of attached files, and the base of
    /// download links (see [`AttachmentRules`]).
    pub fn attachment_rules(mut self, rules: AttachmentRules) -> Self {
        self.attachment_rules = rules;
        self
    }

    /// Postgres row-level security as a second wall between tenants: the
    /// policies of migration `0022` let a workspace's services see that
    /// workspace's rows only, even from a query that forgot its filter. Every
    /// statement then runs in a transaction that sets `crm.workspace_id` for it
    /// alone (a statement outside a write transaction costs three more round
    /// trips: `BEGIN`, the setting, `COMMIT`). The tables' owner first migrates and
    /// turns RLS on (`crm migrate --row-level-security on`, or
    /// [`Crm::set_row_level_security`] on a `Crm` connected as the owner); this
    /// `Crm` connects as a role that is not the tables' owner and has no
    /// `BYPASSRLS`, granted `SELECT, INSERT, UPDATE, DELETE` on crm's tables, and
    /// **migrates nothing** (whatever [`CrmBuilder::migrate`] says: the app role
    /// must not own tables). Checked at connect: a `Config` error names the
    /// missing step, and a role RLS binds is refused when this is off.
    /// The services of [`Crm::workspace`] see their workspace only; crm's own
    /// cross-workspace work (sign-in, sessions, API keys, jobs, housekeeping, the
    /// lead writer) runs with every workspace in reach. Postgres only.
    pub fn row_level_security(mut self, on: bool) -> Self {
        self.row_level_security = on;
        self
    }

    /// Trusts JWTs of an outside sign-in service (see [`crate::jwt`]); checked at
    /// [`connect`](Self::connect) (a `Config` error for an unusable one).
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn jwt(mut self, config: crate::jwt::JwtConfig) -> Self {
        self.jwt = Some(config);
        self
    }

    /// Lifetimes, lockouts and Argon2 parameters of the auth service.
    pub fn auth_config(mut self, config: AuthConfig) -> Self {
        self.auth = config;
        self
    }

    /// The mailer for password-reset and verification mails.
    pub fn mailer(mut self, mailer: impl Mailer) -> Self {
        self.mailer = Some(Arc::new(mailer));
        self
    }

    /// Networks webhooks (and the OpenID Connect providers workspaces configure)
    /// may reach although they are not public (`127.0.0.1`, `10.0.0.0/8`, …): for
    /// tests and internal deployments. The SSRF guard refuses
    /// every other non-public address.
    pub fn webhook_allow_networks<I, S>(mut self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.webhook_allow
            .extend(networks.into_iter().map(Into::into));
        self
    }

    /// The lead parser behind `Leads::parse` (default: the offline `BuiltinParser`).
    pub fn lead_parser(mut self, parser: impl LeadParser) -> Self {
        self.lead_parser = Arc::new(parser);
        self
    }

    /// Registers an integration provider (see [`crate::providers`]): workspaces can
    /// then save their own settings for it. A later provider of the same kind
    /// replaces it; where several could serve (a `resend` and an `smtp` mailer),
    /// the first registered wins.
    pub fn provider(mut self, provider: impl Provider) -> Self {
        let kind = provider.kind();
        if let Some(slot) = self.providers.iter_mut().find(|p| p.kind() == kind) {
            *slot = Arc::new(provider);
        } else {
            self.providers.push(Arc::new(provider));
        }
        self
    }

    /// Registers a notification plugin; a later plugin of the same kind replaces it.
    pub fn notifier(mut self, plugin: impl Notifier) -> Self {
        let kind = plugin.kind();
        self.notifiers.retain(|n| n.kind() != kind);
        self.notifiers.push(Arc::new(plugin));
        self
    }

    /// Checks the settings, connects (or takes the host's pool), and runs crm's
    /// embedded migrations unless [`migrate(false)`](Self::migrate) was set.
    pub async fn connect(self) -> Result<Crm> {
        if !valid_prefix(&self.api_key_prefix) {
            return Err(Error::Config(
                "API key prefix must be 2-16 lower-case letters and digits, starting with a letter"
                    .into(),
            ));
        }
        if self.api_key_cache_ttl > std::time::Duration::from_secs(10) {
            return Err(Error::Config(
                "API key cache TTL must be at most 10 s".into(),
            ));
        }
        let cache_ttl = chrono::Duration::from_std(self.api_key_cache_ttl)
            .map_err(|_| Error::Config("API key cache TTL out of range".into()))?;
        let a = &self.rules.allowed;
        for (name, list) in [
            ("budgets", &a.budgets),
            ("project_types", &a.project_types),
            ("sources", &a.sources),
        ] {
            if list.is_empty()
                || list
                    .iter()
                    .any(|v| v.trim() != v || v.is_empty() || v.chars().count() > 64)
            {
                return Err(Error::Config(format!(
                    "allowed {name} must be a non-empty list of trimmed values of 1-64 characters"
                )));
            }
        }
        if let Some(cc) = self.rules.default_country_code {
            if !(1..=999).contains(&cc) {
                return Err(Error::Config("default country code must be 1-999".into()));
            }
        }
        if self.attachment_rules.max_file_size == 0
            || self.attachment_rules.allowed_types.is_empty()
        {
            return Err(Error::Config(
                "attachment rules need a size limit above 0 and at least one allowed type".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        let passwords = Passwords::new(self.auth.password)?;
        let webhook_allow = self
            .webhook_allow
            .iter()
            .map(|n| n.parse::<IpNet>().map_err(Error::Config))
            .collect::<Result<Vec<_>>>()?;
        if let Some(schema) = &self.schema {
            let valid = schema.len() <= 63
                && !schema.starts_with("pg_")
                && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(Error::Config(
                    "schema must be 1-63 lower-case letters, digits and _, not starting with a digit or pg_"
                        .into(),
                ));
            }
        }
        let pool = match self.host_pool {
            Some(_) if self.schema.is_some() => {
                return Err(Error::Config(
                    "a schema cannot be set on the host's pool: set its search_path instead".into(),
                ))
            }
            Some(pool) => pool?,
            None => store::connect(&self.url, self.max_connections, self.schema.as_deref()).await?,
        };
        // Under row-level security the app role must not own tables: the owner
        // migrates.
        if self.migrate && !self.row_level_security {
            crate::migrate::run(&pool, self.schema.as_deref(), false).await?;
        }
        let pool = crate::store::rls::check(pool, self.row_level_security).await?;
        let cursor_key = self
            .master_key
            .as_ref()
            .map_or(crate::leads::cursor::PUBLIC_KEY, |k| {
                k.derive("crm lead cursor")
            });
        let fingerprint_key = self
            .master_key
            .as_ref()
            .map_or(crate::idempotency::PUBLIC_FINGERPRINT_KEY, |k| {
                k.derive("crm idempotency fingerprint")
            });
        let link_key = self
            .master_key
            .as_ref()
            .map(|k| k.derive("crm attachment link"));
        let sealer = self.master_key.map(|k| Sealer::new(k, self.retired_keys));
        let limiter = RateLimiter::new(&pool, self.clock.clone(), self.policies)?;
        #[cfg(feature = "jwt")]
        let jwt = self.jwt.map(crate::jwt::Verifier::new).transpose()?;
        #[cfg(feature = "oidc")]
        let oidc = crate::oidc::Cache::new(&webhook_allow)?;
        Ok(Crm {
            scoped: None,
            inner: Arc::new(Inner {
                pool,
                schema: self.schema,
                cursor_key,
                fingerprint_key,
                sealer,
                clock: self.clock,
                rules: self.rules,
                api_key_prefix: self.api_key_prefix,
                key_cache: KeyCache::new(cache_ttl),
                limiter,
                passwords,
                auth: self.auth,
                mailer: self.mailer,
                webhook_allow,
                dispatch_wake: tokio::sync::Notify::new(),
                lead_writer: std::sync::OnceLock::new(),
                notifiers: self.notifiers,
                lead_parser: self.lead_parser,
                providers: self.providers,
                quotas: self.quotas,
                storage: self.storage,
                attachment_rules: self.attachment_rules,
                link_key,
                #[cfg(feature = "jwt")]
                jwt,
                #[cfg(feature = "oidc")]
                oidc,
            }),
        })
    }
}
