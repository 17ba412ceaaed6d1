//! Per-workspace integrations: each workspace keeps its own provider credentials and
//! settings (an OpenAI key, a Resend or SMTP sender, WhatsApp and Cal.com inbound
//! secrets, Telegram and Discord defaults).
//!
//! crm-core names no provider. A provider is a [`Provider`] plugin registered on the
//! builder ([`crate::CrmBuilder::provider`]; `crm-integrations` has one per feature):
//! it lists its setting fields (which are secret, which required), checks settings
//! with the provider itself when they are saved, and builds the mailer or lead
//! parser they configure. An integration is a workspace's settings for one
//! provider ([`Integrations`]):
//!
//! - **Sealed at rest** with the master key (bound to the workspace and kind), and
//!   **never shown again**: reads list the non-secret values and only the *names* of
//!   the secrets that are set.
//! - **Saved whole, secrets kept**: a save replaces the non-secret values with the
//!   ones sent; a secret left out keeps its saved value (so changing a sender
//!   address does not mean pasting the API key again). The provider checks the
//!   result before anything is written: credentials it refuses are a validation
//!   error naming the field (422 over HTTP), a provider that cannot be asked is an
//!   [`Error::Integration`]; either way nothing is saved.
//! - **Admins and owners only**: the actor's role is checked in the transaction
//!   that writes, and every save and delete is audited (kind, the fields set; never
//!   a value).
//! - **Resolution**: the workspace's own settings, else the server's default: auth
//!   mails of a workspace go through its `resend` or `smtp` integration when it has
//!   one, else the builder's mailer; its lead parsing through its `openai`
//!   integration, else the builder's parser.
//! - **Inbound**: a provider that receives webhooks (WhatsApp, Cal.com) gets an
//!   unguessable inbound id per workspace (32 hex characters, 128 random bits,
//!   stable across saves), the last segment of the workspace's inbound route;
//!   [`Crm::inbound_integration`] finds the workspace and settings of an id.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use serde_json::json;

use crate::audit::AuditEntry;
use crate::auth::{Actor, Mailer};
use crate::error::Errors;
use crate::ids::WorkspaceId;
use crate::leads::parser::LeadParser;
use crate::store::{self, integrations::IntegrationRow, Ts};
use crate::{Crm, Error, Result};

/// An integration's settings: field name → value.
pub type Settings = BTreeMap<String, String>;

/// The value of setting `name`, or `""` when it is not set (the required ones
/// always are once crm has checked the shape).
pub fn setting<'a>(settings: &'a Settings, name: &str) -> &'a str {
    settings.get(name).map_or("", String::as_str)
}

/// A boxed future, so providers can sit behind `dyn Provider`.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// A boxed future of a sent message's provider id.
pub type MessageFuture<'a> = Pin<Box<dyn Future<Output = Result<String>> + Send + 'a>>;

/// A media file a provider holds for a message (an image or a voice note a lead
/// sent), downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMedia {
    /// Its bytes.
    pub bytes: bytes::Bytes,
    /// The type the provider gave (crm sniffs the bytes anyway).
    pub mime_type: Option<String>,
}

/// A boxed future of a downloaded media file.
pub type MediaFuture<'a> = Pin<Box<dyn Future<Output = Result<FetchedMedia>> + Send + 'a>>;

/// One setting a provider takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingField {
    /// Its name, e.g. `api_key`.
    pub name: &'static str,
    /// Whether it is a credential: sealed like the rest, but never shown again.
    pub secret: bool,
    /// Whether a save without it is refused.
    pub required: bool,
}

impl SettingField {
    /// A required secret.
    pub const fn secret(name: &'static str) -> Self {
        Self {
            name,
            secret: true,
            required: true,
        }
    }

    /// A required value that is not secret.
    pub const fn required(name: &'static str) -> Self {
        Self {
            name,
            secret: false,
            required: true,
        }
    }

    /// An optional value that is not secret.
    pub const fn optional(name: &'static str) -> Self {
        Self {
            name,
            secret: false,
            required: false,
        }
    }
}

/// A provider a workspace can configure.
pub trait Provider: Send + Sync + 'static {
    /// Its kind (`openai`, `resend`, `whatsapp`, …): 1–32 lower-case characters.
    fn kind(&self) -> &'static str;

    /// The settings it takes. crm refuses other keys, missing required ones, and
    /// values that are empty, longer than 2,048 characters or hold control
    /// characters, before [`check`](Self::check) runs.
    fn fields(&self) -> &'static [SettingField];

    /// Whether it receives webhooks: its integrations get an inbound id.
    fn receives_webhooks(&self) -> bool {
        false
    }

    /// Checks settings whose shape crm checked, asking the provider where it can
    /// (a token it refuses, a phone number id it does not know): an
    /// [`Error::Validation`] naming `settings.<field>` for what the provider refused,
    /// an [`Error::Integration`] when it could not be asked. Called before a save
    /// writes anything; never logs a value.
    fn check<'a>(&'a self, settings: &'a Settings) -> CheckFuture<'a>;

    /// Whether [`mailer`](Self::mailer) builds a mailer (so a workspace's
    /// integration can send its auth mails).
    fn sends_mail(&self) -> bool {
        false
    }

    /// The mailer these settings configure, for a provider that sends mail.
    fn mailer(&self, settings: &Settings) -> Option<Arc<dyn Mailer>> {
        let _ = settings;
        None
    }

    /// Whether [`send_message`](Self::send_message) sends messages to leads.
    fn sends_messages(&self) -> bool {
        false
    }

    /// Sends `message` (checked: exactly one of text and template) to the phone
    /// number `to` (E.164) with these settings; the provider's message id. A message
    /// the provider refuses is [`Error::Provider`] with its words; one outside the
    /// provider's messaging window `InvalidState` with code `window_closed`; a
    /// provider that failed or could not be reached [`Error::Integration`].
    fn send_message<'a>(
        &'a self,
        settings: &'a Settings,
        to: &'a str,
        message: &'a crate::leads::messages::NewMessage,
    ) -> MessageFuture<'a> {
        let _ = (settings, to, message);
        Box::pin(async { Err(Error::Config("this provider sends no messages".into())) })
    }

    /// Whether [`fetch_media`](Self::fetch_media) downloads the media of messages
    /// received (crm then stores them as attachments of the lead).
    fn fetches_media(&self) -> bool {
        false
    }

    /// Downloads the media `media_id` of a message received, with these settings,
    /// reading at most `max_size` bytes: [`Error::TooLarge`] past it. Media the
    /// provider no longer has, or refuses for good, is [`Error::Provider`] (crm
    /// gives up); a provider that failed or could not be reached
    /// [`Error::Integration`] (crm tries again later, through the job queue).
    fn fetch_media<'a>(
        &'a self,
        settings: &'a Settings,
        media_id: &'a str,
        max_size: u64,
    ) -> MediaFuture<'a> {
        let _ = (settings, media_id, max_size);
        Box::pin(async { Err(Error::Config("this provider fetches no media".into())) })
    }

    /// The settings a notification channel of the same kind may leave out and
    /// take from the workspace's integration (Telegram's `bot_token`, Discord's
    /// `webhook_url`); none by default. Only these are handed to the channel.
    fn channel_defaults(&self) -> &'static [&'static str] {
        &[]
    }

    /// The lead parser these settings configure, for a provider that parses.
    fn lead_parser(&self, settings: &Settings) -> Option<Arc<dyn LeadParser>> {
        let _ = settings;
        None
    }
}

/// A workspace's integration, as reads show it: never a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Integration {
    /// The provider kind.
    pub kind: String,
    /// The settings that are not secret.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub settings: Settings,
    /// The names of the secret settings that are set (their values are never shown).
    pub secrets: Vec<String>,
    /// For a provider that receives webhooks: the last segment of this workspace's
    /// inbound route (e.g. `/api/webhooks/whatsapp/{inbound_id}`).
    pub inbound_id: Option<String>,
    /// When it was first saved.
    pub created_at: DateTime<Utc>,
    /// When it was last saved.
    pub updated_at: DateTime<Utc>,
}

const VALUE_MAX: usize = 2048;

fn aad(ws: WorkspaceId, kind: &str) -> Vec<u8> {
    format!("integration:{ws}:{kind}").into_bytes()
}

/// 128 random bits as 32 lower-case hex characters.
fn new_inbound_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_inbound_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The integrations of one workspace; from [`crate::Workspace::integrations`].
#[derive(Clone, Debug)]
pub struct Integrations {
    crm: Crm,
    ws: WorkspaceId,
}

impl Integrations {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self { crm, ws }
    }

    fn provider(&self, kind: &str) -> Result<&dyn Provider> {
        self.crm.provider(kind).ok_or_else(|| {
            Error::invalid(
                "kind",
                format!("no integration provider of kind {kind:?} is registered"),
            )
        })
    }

    fn open(&self, row: &IntegrationRow) -> Result<Settings> {
        let bytes = self
            .crm
            .sealer()?
            .open(&row.settings, &aad(row.workspace_id, &row.kind))?;
        serde_json::from_slice(&bytes).map_err(|_| Error::Unseal)
    }

    fn view(&self, row: IntegrationRow) -> Result<Integration> {
        let settings = self.open(&row)?;
        let secret = |name: &str| {
            self.crm.provider(&row.kind).is_none_or(|p| {
                p.fields()
                    .iter()
                    .find(|f| f.name == name)
                    .is_none_or(|f| f.secret)
            })
        };
        let (secrets, settings): (Settings, Settings) =
            settings.into_iter().partition(|(k, _)| secret(k));
        Ok(Integration {
            kind: row.kind,
            settings,
            secrets: secrets.into_keys().collect(),
            inbound_id: row.inbound_id,
            created_at: row.created_at.0,
            updated_at: row.updated_at.0,
        })
    }

    /// The workspace's integrations, by kind (secrets never shown).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn list(&self) -> Result<Vec<Integration>> {
        store::integrations::list(self.crm.pool(), self.ws)
            .await?
            .into_iter()
            .map(|r| self.view(r))
            .collect()
    }

    /// The workspace's integration of `kind` (secrets never shown); `NotFound` when
    /// it has none.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, kind))]
    pub async fn get(&self, kind: &str) -> Result<Integration> {
        let row = store::integrations::get(self.crm.pool(), self.ws, kind)
            .await?
            .ok_or(Error::NotFound {
                entity: "integration",
            })?;
        self.view(row)
    }

    /// The opened settings of `kind`, secrets included (for the host's own calls to
    /// the provider; never show them to a person); `None` when the workspace has
    /// none.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, kind))]
    pub async fn settings(&self, kind: &str) -> Result<Option<Settings>> {
        match store::integrations::get(self.crm.pool(), self.ws, kind).await? {
            Some(row) => self.open(&row).map(Some),
            None => Ok(None),
        }
    }

    /// Saves the workspace's settings for provider `kind` (see the module docs: a
    /// secret left out keeps its saved value; the provider checks the result first)
    /// when `actor` may (an admin or owner of the workspace, or the app). Needs the
    /// master key.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, kind))]
    pub async fn save(
        &self,
        actor: Actor<'_>,
        kind: &str,
        settings: Settings,
    ) -> Result<Integration> {
        let sealer = self.crm.sealer()?;
        let provider = self.provider(kind)?;
        // Who asks is checked before the provider is called (a member must not make
        // the server try credentials), and again where the row is written.
        if let Some(id) = actor.user_id() {
            let (user, _) = match store::users::get_user(self.crm.pool(), self.ws, id).await {
                Err(Error::NotFound { .. }) => return Err(Error::Forbidden),
                found => found?,
            };
            if user.disabled_at.is_some() {
                return Err(Error::Forbidden);
            }
            crate::auth::rules::may_manage_integration(Some(&user), provider.sends_mail())?;
        }
        let saved = store::integrations::get(self.crm.pool(), self.ws, kind).await?;
        // What the save replaces: the sealed text, which every save makes anew (a
        // fresh nonce), so any change in between is seen, even within a microsecond.
        let expected = saved.as_ref().map(|r| r.settings.clone());
        let mut merged = settings;
        let mut e = Errors::default();
        let fields = provider.fields();
        for (name, value) in &merged {
            if !fields.iter().any(|f| f.name == name) {
                e.add(
                    format!("settings.{name}"),
                    format!("is not a setting of {kind}"),
                );
            } else if value.trim().is_empty()
                || value.chars().count() > VALUE_MAX
                || value.chars().any(char::is_control)
            {
                e.add(
                    format!("settings.{name}"),
                    format!("must be 1-{VALUE_MAX} characters without control characters"),
                );
            }
        }
        if let Some(row) = &saved {
            for (name, value) in self.open(row)? {
                let secret = fields.iter().any(|f| f.name == name && f.secret);
                if secret && !merged.contains_key(&name) {
                    merged.insert(name, value);
                }
            }
        }
        for f in fields.iter().filter(|f| f.required) {
            if !merged.contains_key(f.name) {
                e.add(format!("settings.{}", f.name), "is required");
            }
        }
        e.finish()?;
        provider.check(&merged).await?;
        let now = Ts(self.crm.now());
        let row = IntegrationRow {
            workspace_id: self.ws,
            kind: kind.to_owned(),
            settings: sealer.seal(json!(merged).to_string().as_bytes(), &aad(self.ws, kind))?,
            inbound_id: provider.receives_webhooks().then(new_inbound_id),
            created_at: now,
            updated_at: now,
        };
        let audit = self.audit(
            actor,
            "integration.saved",
            kind,
            json!({ "kind": kind, "fields": merged.keys().collect::<Vec<_>>() }),
        );
        let sends_mail = provider.sends_mail();
        let row = store::integrations::save(
            self.crm.pool(),
            &row,
            expected,
            actor.user_id(),
            |a| crate::auth::rules::may_manage_integration(a, sends_mail),
            &audit,
        )
        .await?;
        self.view(row)
    }

    /// Deletes the workspace's integration of `kind` when `actor` may (as for
    /// [`save`](Self::save)); its inbound route stops answering, and the server's
    /// default applies again. `NotFound` when there is none.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, kind))]
    pub async fn delete(&self, actor: Actor<'_>, kind: &str) -> Result<()> {
        let audit = self.audit(actor, "integration.deleted", kind, json!({ "kind": kind }));
        // A provider no longer registered: treated as sending mail (owners only).
        let sends_mail = self.crm.provider(kind).is_none_or(|p| p.sends_mail());
        store::integrations::delete(
            self.crm.pool(),
            self.ws,
            kind,
            actor.user_id(),
            |a| crate::auth::rules::may_manage_integration(a, sends_mail),
            &audit,
        )
        .await
    }

    fn audit(
        &self,
        actor: Actor<'_>,
        action: &str,
        kind: &str,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry::new(
            self.ws,
            actor.audit_name().as_deref(),
            action,
            ("integration", kind.to_owned()),
            details,
            self.crm.now(),
        )
    }

    /// The mailer of the workspace's first integration that configures one, in
    /// the order the providers were registered.
    async fn own_mailer(&self) -> Result<Option<Arc<dyn Mailer>>> {
        self.own(|p, s| p.mailer(s)).await
    }

    async fn own<T>(
        &self,
        build: impl Fn(&dyn Provider, &Settings) -> Option<T>,
    ) -> Result<Option<T>> {
        if self.crm.sealer().is_err() {
            // Without a master key nothing can have been saved.
            return Ok(None);
        }
        let rows = store::integrations::list(self.crm.pool(), self.ws).await?;
        for p in self.crm.providers_registered() {
            if let Some(row) = rows.iter().find(|r| r.kind == p.kind()) {
                if let Some(t) = build(p.as_ref(), &self.open(row)?) {
                    return Ok(Some(t));
                }
            }
        }
        Ok(None)
    }
}

/// A registered provider: what a workspace can configure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderInfo {
    /// Its kind.
    pub kind: &'static str,
    /// The settings it takes.
    pub fields: &'static [SettingField],
    /// Whether its integrations get an inbound id (it receives webhooks).
    pub receives_webhooks: bool,
}

impl Crm {
    /// The registered integration providers, in registration order.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.providers_registered()
            .iter()
            .map(|p| ProviderInfo {
                kind: p.kind(),
                fields: p.fields(),
                receives_webhooks: p.receives_webhooks(),
            })
            .collect()
    }

    /// The workspace and opened settings of the integration of `kind` whose inbound
    /// id is `inbound_id` (for an inbound route); `NotFound` for an id that is not
    /// one, without a database read when it is not even shaped like one.
    pub async fn inbound_integration(
        &self,
        kind: &str,
        inbound_id: &str,
    ) -> Result<(WorkspaceId, Settings)> {
        let not_found = Error::NotFound {
            entity: "integration",
        };
        if !is_inbound_id(inbound_id) {
            return Err(not_found);
        }
        let row = store::integrations::by_inbound_id(self.pool(), kind, inbound_id)
            .await?
            .ok_or(not_found)?;
        let settings = Integrations::new(self.clone(), row.workspace_id).open(&row)?;
        Ok((row.workspace_id, settings))
    }

    /// The mailer of workspace `ws`: its own (a `resend` or `smtp` integration),
    /// else the builder's; `Config` error when there is neither.
    pub(crate) async fn mailer_for(&self, ws: WorkspaceId) -> Result<Arc<dyn Mailer>> {
        if let Some(m) = Integrations::new(self.clone(), ws).own_mailer().await? {
            return Ok(m);
        }
        self.default_mailer()
    }

    /// The lead parser of workspace `ws`: its own (an `openai` integration), else the
    /// builder's.
    pub(crate) async fn lead_parser_for(&self, ws: WorkspaceId) -> Result<Arc<dyn LeadParser>> {
        let own = Integrations::new(self.clone(), ws)
            .own(|p, s| p.lead_parser(s))
            .await?;
        Ok(own.unwrap_or_else(|| self.default_lead_parser()))
    }

    /// Whether any mail can be sent: a mailer on the builder, or a provider that
    /// builds one from a workspace's settings.
    pub(crate) fn can_mail(&self) -> bool {
        self.default_mailer().is_ok() || self.providers_registered().iter().any(|p| p.sends_mail())
    }
}
