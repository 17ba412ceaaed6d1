//! Sign-in with an OpenID Connect provider (feature `oidc`): Google, Microsoft,
//! or any issuer with a discovery document, configured per workspace.
//!
//! **The flow** (authorization code with PKCE, state and nonce):
//! 1. [`Oidc::start`] makes a `state`, a `nonce` and a PKCE verifier (32 random
//!    bytes each), keeps them for [`LOGIN_TTL`] (the state only as its hash) and
//!    answers the provider's authorization URL to send the browser to.
//! 2. The provider sends the browser back to the `redirect_uri`, **this
//!    provider's own** callback URL, with `code` and `state`;
//!    [`Crm::oidc_finish`] takes the sign-in by its state (**once**: a replayed
//!    callback finds nothing), refuses it unless the callback's workspace and
//!    provider are the sign-in's (a code is never sent to another provider's token
//!    endpoint: the mix-up attack), exchanges the code with the PKCE verifier (and
//!    the client secret, when the client has one) at the token endpoint, and
//!    verifies the ID token: signature by the issuer's JWKS (RS256/ES256, the
//!    rules of [`crate::jwt`]), `iss`, `aud` = the client id (and `azp` when `aud`
//!    lists others, or whenever the token names one), `exp`/`nbf` with 60 s
//!    leeway, and the `nonce` of this sign-in.
//! 3. Every sign-in, linked or not, needs an email (ASCII only) the provider
//!    says is verified (`email_verified: true`, or for Microsoft `xms_edov:
//!    true`) and passes the domain rules below. Who signs in: the user this
//!    issuer's subject was linked to; else the user with the token's email, which
//!    links the subject; else, when the provider allows sign-up, a new **member** (with
//!    an unusable random password, so a password reset is how they add one). The
//!    email's domain must be one of the provider's allowed domains, when it lists
//!    any, and so must the hosted domain (`hd`) for Google and for any token that
//!    names one. Linking to an account whose email was never verified replaces
//!    its password with one nobody knows and ends its sessions (whoever made the
//!    account may know the old one). A disabled user signs in no more than with a
//!    password, and is not linked.
//! 4. A session as for a password sign-in (`remember_me` as asked at the start),
//!    and the audit entries `oidc.linked`, `user.created` (by `oidc:{provider}`),
//!    `login.succeeded` (`method: oidc`); every callback that fails after its
//!    sign-in was taken is audited `oidc.failed` with the reason (or the error's
//!    code).
//!
//! **Configuration** ([`Oidc::set_provider`]) is a rule of the service: only an
//! owner (or the app) may add, change or remove a sign-in provider, since a
//! provider that vouches for an email signs in as that email's user, owners
//! included. The client secret is sealed with crm's master key. Links to an
//! issuer no provider of the workspace names any more are deleted.
//!
//! **Network.** The issuer is a workspace owner's choice, so every request goes
//! through the webhooks' SSRF guard: public addresses only, unless the operator
//! allows a network ([`crate::CrmBuilder::webhook_allow_networks`]). Discovery
//! (`{issuer}/.well-known/openid-configuration`, whose `issuer` must be the
//! configured one, exactly), the token endpoint and the JWKS must be `https`
//! (plain `http` only on a loopback address); [`HTTP_TIMEOUT`], at most 1 MiB per
//! answer, no redirects. Discovery is kept for an hour. The client authenticates
//! with `client_secret_post` when the provider lists it, else
//! `client_secret_basic`.
//!
//! **Refusals** are [`Error::Unauthorized`] with the reason: `OidcState` (unknown,
//! used or expired state, or another provider's callback), `OidcDenied` (the
//! provider answered an error, or refused the code), the `Jwt*` reasons for the
//! ID token, `OidcNonce`, `OidcEmailUnverified`, `OidcDomain`, `OidcNoAccount`; a
//! discovery or token endpoint that cannot be reached is [`Error::Integration`]
//! (a JWKS that cannot be fetched leaves no key: `JwtUnknownKey`). A refused ID token
//! creates nothing (no user, link or session).
//!
//! Decisions where the issue was silent: Microsoft's preset is per tenant
//! (`https://login.microsoftonline.com/{tenant id}/v2.0`), since the multi-tenant
//! endpoints have no single issuer to check; the scopes asked are
//! `openid email profile`; saving a provider replaces its whole configuration
//! and does not contact the issuer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api_keys::format::{hash as sha256, hex};
use crate::audit::AuditEntry;
use crate::auth::{Actor, LoggedIn, NewUser, Role, User};
use crate::error::{AuthFailure, Errors};
use crate::ids::WorkspaceId;
use crate::jwt::{trusted_url, JwtConfig, JwtKey, Verifier};
use crate::leads::Email;
use crate::store::oidc::ProviderRow;
use crate::store::{self, Ts};
use crate::webhooks::ssrf::{self, IpNet};
use crate::{Crm, Error, Result, SecretString};

/// How long a started sign-in waits for its callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The timeout of each request to a provider (discovery, token, JWKS).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a provider's discovery document is kept.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Google's issuer.
pub const GOOGLE: &str = "https://accounts.google.com";

const MAX_BODY: usize = 1 << 20;

/// A provider's configuration, for [`Oidc::set_provider`].
#[derive(Debug, Clone)]
pub struct OidcProviderInput {
    /// The provider's name in this workspace, part of its sign-in URL: 1–32 of
    /// `a-z`, `0-9`, `-` (`google`, `microsoft`, `okta`).
    pub name: String,
    /// The issuer (`iss`), exactly as its discovery document says it; the
    /// document is read from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The client id registered at the provider (the ID token's audience).
    pub client_id: String,
    /// The client secret, sealed at rest; `None` for a public client (PKCE only).
    pub client_secret: Option<SecretString>,
    /// The email domains that may sign in (`example.com`); empty: any.
    pub allowed_domains: Vec<String>,
    /// Whether a first sign-in with an email no user has creates a member.
    pub allow_signup: bool,
}

impl OidcProviderInput {
    /// Any issuer with a discovery document, named `name`.
    pub fn issuer(
        name: impl Into<String>,
        issuer: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            allowed_domains: Vec::new(),
            allow_signup: false,
        }
    }

    /// Google (`google`), with the OAuth client's id and secret.
    pub fn google(client_id: impl Into<String>, client_secret: SecretString) -> Self {
        Self::issuer("google", GOOGLE, client_id).client_secret(client_secret)
    }

    /// Microsoft Entra ID (`microsoft`) for one tenant, by its directory (tenant)
    /// id, a UUID: the issuer Microsoft's discovery names is the id's, so a
    /// `contoso.onmicrosoft.com` domain (or `common`) would never match. With the
    /// app registration's id and secret.
    pub fn microsoft(
        tenant: &str,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        Self::issuer(
            "microsoft",
            format!("https://login.microsoftonline.com/{tenant}/v2.0"),
            client_id,
        )
        .client_secret(client_secret)
    }

    /// With a client secret.
    pub fn client_secret(mut self, secret: SecretString) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// Only these email domains may sign in.
    pub fn allowed_domains<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_domains = domains.into_iter().map(Into::into).collect();
        self
    }

    /// Whether a first sign-in without an account creates a member.
    pub fn allow_signup(mut self, yes: bool) -> Self {
        self.allow_signup = yes;
        self
    }
}

/// A workspace's sign-in provider as stored (never its secret).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OidcProvider {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Its name in the workspace.
    pub name: String,
    /// The issuer.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// Whether a client secret is configured.
    pub has_client_secret: bool,
    /// The email domains that may sign in; empty: any.
    pub allowed_domains: Vec<String>,
    /// Whether a first sign-in without an account creates a member.
    pub allow_signup: bool,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

/// A sign-in to start with [`Oidc::start`].
#[derive(Debug, Clone)]
pub struct OidcStartInput {
    /// Where the provider sends the browser back (registered at the provider):
    /// `https`, or `http` on a loopback address. It must be this workspace and
    /// provider's own URL (crm's router uses
    /// `/api/auth/oidc/{workspace_id}/{provider}/callback`), whose handler passes
    /// both to [`Crm::oidc_finish`].
    pub redirect_uri: String,
    /// Where to send the browser once signed in: a path on this site (`/leads`),
    /// never another site.
    pub return_to: Option<String>,
    /// A 30-day session instead of 24 hours.
    pub remember_me: bool,
}

/// A started sign-in: send the browser to `url`, and keep `state` (e.g. in a
/// cookie) to check the callback came back to the browser that started it.
/// `Debug` shows neither (the URL carries the state).
#[derive(Clone)]
pub struct OidcStart {
    /// The provider's authorization URL.
    pub url: String,
    /// The state the callback must bring back.
    pub state: SecretString,
    /// When the sign-in stops waiting for its callback.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for OidcStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcStart")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The provider's callback, for [`Crm::oidc_finish`]. `Debug` shows neither the
/// state nor the code.
#[derive(Clone, Default)]
pub struct OidcCallback {
    /// The workspace of the callback URL the provider sent the browser to.
    pub workspace_id: WorkspaceId,
    /// The provider named by that URL: each (workspace, provider) has its own
    /// callback URL, and a sign-in is finished only by its own provider's (a code
    /// one provider issued never goes to another's token endpoint: the mix-up
    /// attack).
    pub provider: String,
    /// The `state` parameter.
    pub state: String,
    /// The `code` parameter.
    pub code: Option<String>,
    /// The `error` parameter (the user declined, or the provider refused).
    pub error: Option<String>,
    /// The client's IP address, for the session and the audit log.
    pub ip: Option<String>,
    /// The client's `User-Agent`, for the session.
    pub user_agent: Option<String>,
}

impl std::fmt::Debug for OidcCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcCallback")
            .field("workspace_id", &self.workspace_id)
            .field("provider", &self.provider)
            .field("error", &self.error)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// A finished sign-in.
#[derive(Debug)]
pub struct OidcSignedIn {
    /// The session (its token is shown here only).
    pub logged_in: LoggedIn,
    /// Where the sign-in asked to go next, as given to [`Oidc::start`].
    pub return_to: Option<String>,
    /// Whether this sign-in created the user.
    pub created: bool,
}

/// What a provider's discovery document says (the parts crm uses).
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// The discovery documents and ID-token verifiers a `Crm` keeps, by issuer.
pub(crate) struct Cache {
    client: reqwest::Client,
    allow: Vec<IpNet>,
    discovery: std::sync::Mutex<HashMap<String, (Discovery, DateTime<Utc>)>>,
    verifiers: std::sync::Mutex<HashMap<(String, String), Arc<Verifier>>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").finish_non_exhaustive()
    }
}

/// How many discovery documents and verifiers a `Crm` keeps (all are dropped
/// when one more is needed: they are fetched again on use).
const CACHE_MAX: usize = 256;

impl Cache {
    /// Provider URLs are chosen by workspace owners: names resolve through the SSRF
    /// guard, with the operator's allow-list (`webhook_allow_networks`).
    pub(crate) fn new(allow: &[IpNet]) -> Result<Self> {
        let client = ssrf::guarded_client(
            HTTP_TIMEOUT,
            allow,
            concat!("crm-oidc/", env!("CARGO_PKG_VERSION")),
        )?;
        Ok(Self {
            client,
            allow: allow.to_vec(),
            discovery: std::sync::Mutex::default(),
            verifiers: std::sync::Mutex::default(),
        })
    }

    /// Whether crm may send a request to `url`: `https` (or `http` on loopback),
    /// and a host that is a literal address only if the guard allows it (names
    /// are checked by the client's resolver when it connects).
    fn reachable(&self, url: &str) -> bool {
        let Ok(u) = url::Url::parse(url) else {
            return false;
        };
        let literal = match u.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        trusted_url(url) && literal.is_none_or(|ip| ssrf::allowed(ip, &self.allow))
    }
}

fn refuse(reason: AuthFailure) -> Error {
    Error::unauthorized(reason)
}

/// 32 random bytes, base64url (43 characters).
fn random() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A password nobody knows (it meets the password policy).
fn unusable_password() -> String {
    format!("Oidc-{}-1a", random())
}

fn aad(ws: WorkspaceId, name: &str) -> Vec<u8> {
    format!("crm oidc {ws} {name}").into_bytes()
}

/// Who may add, change or remove a sign-in provider: an owner, or the app.
pub(crate) fn may_configure(actor: Option<&User>) -> Result<()> {
    match actor {
        Some(u) if u.role != Role::Owner => Err(Error::Forbidden),
        _ => Ok(()),
    }
}

/// A path on this site to go to after signing in: ASCII, starts with one `/`, no
/// backslash, no control character, at most 2 KiB.
fn local_path(p: &str) -> bool {
    // ASCII: it becomes a `Location` header (percent-encode anything else).
    p.is_ascii()
        && p.starts_with('/')
        && !p.starts_with("//")
        && !p.contains('\\')
        && !p.chars().any(char::is_control)
        && p.len() <= 2048
}

fn domain_ok(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl ProviderRow {
    fn public(&self) -> Result<OidcProvider> {
        Ok(OidcProvider {
            workspace_id: self.workspace_id,
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            has_client_secret: self.client_secret.is_some(),
            allowed_domains: serde_json::from_str(&self.allowed_domains)
                .map_err(|_| store::corrupt("allowed_domains"))?,
            allow_signup: self.allow_signup,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
        })
    }
}

/// A workspace's sign-in providers; from [`crate::Workspace::oidc`].
#[derive(Clone, Debug)]
pub struct Oidc {
    crm: Crm,
    ws: WorkspaceId,
}

impl Oidc {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self { crm, ws }
    }

    /// Adds or replaces the provider `input.name`. `Forbidden` unless `actor` is
    /// an owner (or the app); `Config` when a secret is given and crm has no
    /// master key to seal it with; `Validation` for a bad name, issuer (not
    /// `https`, or with a query), client id, secret or domain. The issuer is not
    /// contacted: its discovery is read at the first sign-in.
    pub async fn set_provider(
        &self,
        input: OidcProviderInput,
        actor: Actor<'_>,
    ) -> Result<OidcProvider> {
        let mut e = Errors::default();
        let name = input.name.trim().to_owned();
        if name.is_empty()
            || name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            e.add("name", "must be 1-32 of a-z, 0-9 and -");
        }
        // Exactly as the provider writes it (Auth0's ends in `/`): `iss` must equal it.
        let issuer = input.issuer.trim().to_owned();
        let issuer_ok = issuer.len() <= 512
            && trusted_url(&issuer)
            && url::Url::parse(&issuer)
                .is_ok_and(|u| u.query().is_none() && u.fragment().is_none());
        if !issuer_ok {
            e.add(
                "issuer",
                "must be an https URL without query (http only on a loopback address)",
            );
        }
        // Microsoft's discovery names the tenant's id: a domain or `common` as the
        // tenant would never match the issuer.
        if let Some(rest) = issuer.strip_prefix("https://login.microsoftonline.com/") {
            let tenant = rest.split('/').next().unwrap_or_default();
            if uuid::Uuid::parse_str(tenant).is_err() {
                e.add("issuer", "a Microsoft tenant is given by its id (a UUID)");
            }
        }
        let client_id = input.client_id.trim().to_owned();
        if client_id.is_empty() || client_id.len() > 255 || client_id.chars().any(char::is_control)
        {
            e.add("client_id", "must be 1-255 characters");
        }
        if let Some(s) = &input.client_secret {
            if s.expose().is_empty() || s.expose().len() > 1024 {
                e.add("client_secret", "must be 1-1024 bytes");
            }
        }
        let mut domains = Vec::new();
        for d in &input.allowed_domains {
            let d = d.trim().trim_start_matches('@').to_ascii_lowercase();
            if !domain_ok(&d) {
                e.add("allowed_domains", format!("{d:?} is not a domain"));
            } else if !domains.contains(&d) {
                domains.push(d);
            }
        }
        if domains.len() > 50 {
            e.add("allowed_domains", "at most 50 domains");
        }
        e.finish()?;
        let client_secret = match &input.client_secret {
            Some(s) => Some(
                self.crm
                    .sealer()?
                    .seal(s.expose().as_bytes(), &aad(self.ws, &name))?,
            ),
            None => None,
        };
        let now = Ts(self.crm.now());
        let row = ProviderRow {
            workspace_id: self.ws,
            name,
            issuer,
            client_id,
            client_secret,
            allowed_domains: json!(domains).to_string(),
            allow_signup: input.allow_signup,
            created_at: now,
            updated_at: now,
        };
        let audit = AuditEntry::new(
            self.ws,
            actor.audit_name().as_deref(),
            "oidc.provider_saved",
            ("oidc_provider", row.name.clone()),
            json!({ "issuer": row.issuer, "client_id": row.client_id,
                    "allowed_domains": domains, "allow_signup": row.allow_signup }),
            now.0,
        );
        let saved = store::oidc::save_provider(
            self.crm.pool(),
            &row,
            actor.user_id(),
            may_configure,
            &audit,
        )
        .await?;
        saved.public()
    }

    /// The workspace's providers, by name.
    pub async fn providers(&self) -> Result<Vec<OidcProvider>> {
        store::oidc::providers(self.crm.pool(), self.ws)
            .await?
            .iter()
            .map(ProviderRow::public)
            .collect()
    }

    /// Removes a provider (`NotFound` when there is none of that name; `Forbidden`
    /// unless `actor` is an owner or the app). Sign-ins under way with it stop
    /// working, and the links to its issuer go (unless another provider of the
    /// workspace names it); its users keep their accounts.
    pub async fn delete_provider(&self, name: &str, actor: Actor<'_>) -> Result<()> {
        let audit = AuditEntry::new(
            self.ws,
            actor.audit_name().as_deref(),
            "oidc.provider_deleted",
            ("oidc_provider", name.to_owned()),
            json!({}),
            self.crm.now(),
        );
        store::oidc::delete_provider(
            self.crm.pool(),
            self.ws,
            name,
            actor.user_id(),
            may_configure,
            &audit,
        )
        .await
    }

    /// Starts a sign-in with the provider `name` (`NotFound` when the workspace has
    /// none); reads the provider's discovery document (`Integration` when it cannot).
    pub async fn start(&self, name: &str, input: OidcStartInput) -> Result<OidcStart> {
        let mut e = Errors::default();
        if input.redirect_uri.len() > 2048 || !trusted_url(&input.redirect_uri) {
            e.add(
                "redirect_uri",
                "must be an https URL (http only on a loopback address)",
            );
        }
        // This provider's own callback: a URL shared by several providers would
        // let one provider's code be sent to another (the mix-up attack).
        let own = format!("/{}/{name}/callback", self.ws);
        let own_path = url::Url::parse(&input.redirect_uri)
            .is_ok_and(|u| u.path().ends_with(&own) && u.query().is_none());
        if !own_path {
            e.add(
                "redirect_uri",
                format!("must be this provider's own callback URL, ending in {own}"),
            );
        }
        if input.return_to.as_deref().is_some_and(|p| !local_path(p)) {
            e.add("return_to", "must be a path on this site, starting with /");
        }
        e.finish()?;
        let provider = store::oidc::provider(self.crm.pool(), self.ws, name)
            .await?
            .ok_or(Error::NotFound {
                entity: "sign-in provider",
            })?;
        let doc = self.crm.oidc_discovery(&provider.issuer).await?;
        let (state, nonce, verifier) = (random(), random(), random());
        let challenge = URL_SAFE_NO_PAD.encode(sha256(&verifier));
        let now = self.crm.now();
        let expires_at = now + LOGIN_TTL;
        store::oidc::insert_login(
            self.crm.pool(),
            &hex(&sha256(&state)),
            self.ws,
            (&provider.name, &provider.issuer),
            (&nonce, &verifier),
            (&input.redirect_uri, input.return_to.as_deref()),
            input.remember_me,
            (Ts(now), Ts(expires_at)),
        )
        .await?;
        let mut url = url::Url::parse(&doc.authorization_endpoint)
            .map_err(|_| Error::Integration("OIDC discovery: a bad authorization URL".into()))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", &input.redirect_uri)
            .append_pair("scope", "openid email profile")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(OidcStart {
            url: url.into(),
            state: SecretString::new(state),
            expires_at,
        })
    }
}

/// Reads a provider's answer: at most 1 MiB of JSON.
async fn json_body(mut res: reqwest::Response, what: &str) -> Result<Value> {
    let failed = || Error::Integration(format!("OIDC {what}: the answer could not be read"));
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|_| failed())? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(failed());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|_| failed())
}

fn unreachable(what: &str, e: &reqwest::Error) -> Error {
    Error::Integration(format!(
        "OIDC {what}: the provider {}",
        if e.is_timeout() {
            "timed out"
        } else {
            "could not be reached"
        }
    ))
}

impl Crm {
    /// The issuer's discovery document (kept for [`DISCOVERY_TTL`]; the cache is
    /// not held while a document is fetched, so one slow issuer delays only its
    /// own sign-ins).
    async fn oidc_discovery(&self, issuer: &str) -> Result<Discovery> {
        let cache = self.oidc_cache();
        let now = self.now();
        let lock = || {
            cache
                .discovery
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((doc, at)) = lock().get(issuer) {
            if (now - *at).to_std().unwrap_or_default() < DISCOVERY_TTL {
                return Ok(doc.clone());
            }
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        if !cache.reachable(&url) {
            return Err(Error::Integration(
                "OIDC discovery: the issuer is not an address crm may reach".into(),
            ));
        }
        let res = cache
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable("discovery", &e))?;
        if !res.status().is_success() {
            return Err(Error::Integration(format!(
                "OIDC discovery: the provider answered {}",
                res.status().as_u16()
            )));
        }
        let doc: Discovery = serde_json::from_value(json_body(res, "discovery").await?)
            .map_err(|_| Error::Integration("OIDC discovery: not a discovery document".into()))?;
        let endpoints = [
            &doc.authorization_endpoint,
            &doc.token_endpoint,
            &doc.jwks_uri,
        ];
        if doc.issuer != issuer || !endpoints.iter().all(|u| cache.reachable(u)) {
            return Err(Error::Integration(
                "OIDC discovery: the document names another issuer, or an endpoint crm may not reach"
                    .into(),
            ));
        }
        let mut docs = lock();
        if docs.len() >= CACHE_MAX {
            docs.clear();
        }
        docs.insert(issuer.to_owned(), (doc.clone(), now));
        Ok(doc)
    }

    /// The ID-token verifier of a provider's client (it keeps the JWKS).
    fn oidc_verifier(&self, doc: &Discovery, client_id: &str) -> Result<Arc<Verifier>> {
        let key = (doc.jwks_uri.clone(), format!("{}\n{client_id}", doc.issuer));
        let mut verifiers = self
            .oidc_cache()
            .verifiers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = verifiers.get(&key) {
            return Ok(v.clone());
        }
        if verifiers.len() >= CACHE_MAX {
            verifiers.clear();
        }
        let mut config = JwtConfig::new(
            JwtKey::Jwks(doc.jwks_uri.clone()),
            doc.issuer.clone(),
            client_id,
        );
        // Never read (an ID token maps to no workspace through the verifier: the
        // sign-in names it), but the configuration needs one.
        config.default_workspace = Some(WorkspaceId::DEFAULT);
        let v = Arc::new(Verifier::with_client(
            config,
            self.oidc_cache().client.clone(),
        )?);
        verifiers.insert(key, v.clone());
        Ok(v)
    }

    /// Finishes a sign-in from the provider's callback (see [the module
    /// docs](crate::oidc)): a session, or `Unauthorized` with the reason and
    /// nothing created. The state works once, whatever the outcome.
    pub async fn oidc_finish(&self, callback: OidcCallback) -> Result<OidcSignedIn> {
        if let Some(ip) = callback.ip.as_deref() {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::invalid("ip", "must be an IP address"));
            }
        }
        let state_ok = callback.state.len() == 43
            && URL_SAFE_NO_PAD
                .decode(&callback.state)
                .is_ok_and(|b| b.len() == 32);
        if !state_ok {
            return Err(refuse(AuthFailure::OidcState));
        }
        let login = store::oidc::take_login(self.pool(), &hex(&sha256(&callback.state)))
            .await?
            .ok_or_else(|| refuse(AuthFailure::OidcState))?;
        let ws = login.workspace_id;
        let provider = login.provider.clone();
        match self.oidc_finish_in(login, &callback).await {
            Ok(done) => Ok(done),
            Err(err) => {
                // Every failure after the sign-in was taken is audited: a refusal
                // with its reason, anything else (a provider down) with its code.
                let reason = match &err {
                    Error::Unauthorized { reason } => reason.to_string(),
                    other => other.code().to_owned(),
                };
                let mut audit = AuditEntry::new(
                    ws,
                    None,
                    "oidc.failed",
                    ("oidc_provider", provider),
                    json!({ "reason": reason }),
                    self.now(),
                );
                audit.ip = callback.ip.clone();
                if let Err(e) = store::audit::insert_audits(self.pool(), &[audit]).await {
                    tracing::warn!(error = %crate::error::Chain(&e), "OIDC: the failed sign-in was not audited");
                }
                Err(err)
            }
        }
    }

    async fn oidc_finish_in(
        &self,
        login: store::oidc::LoginRow,
        callback: &OidcCallback,
    ) -> Result<OidcSignedIn> {
        let ws = login.workspace_id;
        if login.expires_at.0 <= self.now() {
            return Err(refuse(AuthFailure::OidcState));
        }
        // The sign-in came back to another provider's callback: its code is not
        // this provider's to redeem (the mix-up attack), and nothing is sent.
        if ws != callback.workspace_id || login.provider != callback.provider {
            return Err(refuse(AuthFailure::OidcState));
        }
        if callback.error.is_some() {
            return Err(refuse(AuthFailure::OidcDenied));
        }
        let code = callback
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| refuse(AuthFailure::OidcDenied))?;
        // The provider may have been removed or changed since the start: it must
        // still be there with the issuer the sign-in started with (the code, the
        // verifier and the secret go to no other).
        let provider = store::oidc::provider(self.pool(), ws, &login.provider)
            .await?
            .filter(|p| p.issuer == login.issuer)
            .ok_or_else(|| refuse(AuthFailure::OidcState))?;
        let doc = self.oidc_discovery(&provider.issuer).await?;
        let secret = match &provider.client_secret {
            Some(sealed) => Some(SecretString::new(
                String::from_utf8(self.sealer()?.open(sealed, &aad(ws, &provider.name))?)
                    .map_err(|_| Error::Unseal)?,
            )),
            None => None,
        };
        let id_token = self
            .oidc_exchange(&doc, &provider, secret.as_ref(), code, &login)
            .await?;
        let claims = self
            .oidc_verifier(&doc, &provider.client_id)?
            .claims(&id_token, self.now())
            .await?;
        if claims["nonce"].as_str() != Some(login.nonce.as_str()) {
            return Err(refuse(AuthFailure::OidcNonce));
        }
        // Several audiences, or a named authorized party: the token must have been
        // issued to this client.
        let several = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
        if (several || !claims["azp"].is_null())
            && claims["azp"].as_str() != Some(provider.client_id.as_str())
        {
            return Err(refuse(AuthFailure::JwtAudience));
        }
        let subject = crate::jwt::subject(&claims)?.to_owned();
        let verified = claims["email_verified"].as_bool() == Some(true)
            || claims["email_verified"].as_str() == Some("true")
            || (doc.issuer.starts_with("https://login.microsoftonline.com/")
                && claims["xms_edov"].as_bool() == Some(true));
        let email = claims["email"]
            .as_str()
            .filter(|_| verified)
            // ASCII only: Unicode case folding could match another address.
            .filter(|e| e.is_ascii())
            .and_then(|e| Email::parse(e).ok())
            .ok_or_else(|| refuse(AuthFailure::OidcEmailUnverified))?;
        let domains: Vec<String> = serde_json::from_str(&provider.allowed_domains)
            .map_err(|_| store::corrupt("allowed_domains"))?;
        let domain = email
            .as_str()
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        if !domains.is_empty() && !domains.contains(&domain) {
            return Err(refuse(AuthFailure::OidcDomain));
        }
        // Google: an address of the domain is not enough (a personal account made
        // with a work address keeps it after the mailbox is gone); the account
        // must be the domain's own (`hd`, its Workspace domain). Any provider that
        // names a hosted domain is held to it too.
        if (doc.issuer == GOOGLE || !claims["hd"].is_null())
            && !domains.is_empty()
            && !claims["hd"]
                .as_str()
                .is_some_and(|hd| domains.iter().any(|d| d.eq_ignore_ascii_case(hd)))
        {
            return Err(refuse(AuthFailure::OidcDomain));
        }
        let name = claims["name"]
            .as_str()
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.chars().count() <= 200 && !n.contains('\0'));
        let (user, created) = self
            .oidc_user(ws, &provider, (&doc.issuer, &subject), email, name)
            .await?;
        let auth = self.workspace(ws).auth();
        let logged_in = auth
            .open_session(
                user,
                None,
                crate::auth::SessionStart {
                    remember_me: login.remember,
                    ip: callback.ip.as_deref(),
                    user_agent: callback.user_agent.as_deref(),
                    details: json!({ "method": "oidc", "provider": provider.name }),
                },
            )
            .await?;
        Ok(OidcSignedIn {
            logged_in,
            return_to: login.return_to,
            created,
        })
    }

    /// The code for the ID token, at the provider's token endpoint.
    async fn oidc_exchange(
        &self,
        doc: &Discovery,
        provider: &ProviderRow,
        secret: Option<&SecretString>,
        code: &str,
        login: &store::oidc::LoginRow,
    ) -> Result<String> {
        // client_secret_post when the provider lists it, else client_secret_basic
        // (the default of OpenID Connect Discovery when it lists nothing).
        let basic = secret.filter(|_| {
            !doc.token_endpoint_auth_methods_supported
                .as_ref()
                .is_some_and(|m| m.iter().any(|x| x == "client_secret_post"))
        });
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &login.redirect_uri)
                .append_pair("code_verifier", &login.code_verifier)
                .append_pair("client_id", &provider.client_id);
            if let (Some(secret), None) = (secret, basic) {
                form.append_pair("client_secret", secret.expose());
            }
            form.finish()
        };
        let mut req = self
            .oidc_cache()
            .client
            .post(&doc.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json");
        if let Some(secret) = basic {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&provider.client_id), enc(secret.expose()));
            req = req.header(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            );
        }
        let res = req
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable("token", &e))?;
        let status = res.status();
        if status.is_client_error() {
            // invalid_grant: a used, expired or forged code, or a wrong verifier.
            return Err(refuse(AuthFailure::OidcDenied));
        }
        if !status.is_success() {
            return Err(Error::Integration(format!(
                "OIDC token: the provider answered {}",
                status.as_u16()
            )));
        }
        json_body(res, "token")
            .await?
            .get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| refuse(AuthFailure::JwtMalformed))
    }

    /// The user a verified identity signs in as: linked before, linked now by
    /// email, or created (see [the module docs](crate::oidc)).
    async fn oidc_user(
        &self,
        ws: WorkspaceId,
        provider: &ProviderRow,
        (issuer, subject): (&str, &str),
        email: Email,
        name: Option<&str>,
    ) -> Result<(User, bool)> {
        let pool = self.pool();
        if let Some((user, _)) = store::oidc::linked_user(pool, ws, issuer, subject).await? {
            if user.disabled_at.is_some() {
                return Err(refuse(AuthFailure::InvalidCredentials));
            }
            return Ok((user, false));
        }
        let link = |user: &User, action: &str| {
            AuditEntry::new(
                ws,
                Some(&user.id.to_string()),
                action,
                ("user", user.id.to_string()),
                json!({ "provider": provider.name, "issuer": issuer, "subject": subject }),
                self.now(),
            )
        };
        let mut created = false;
        let user = match store::users::user_by_email(pool, ws, &email.key()).await? {
            Some((user, _)) => user,
            None if provider.allow_signup => {
                let auth = self.workspace(ws).auth();
                let input = NewUser {
                    email: email.as_str().to_owned(),
                    display_name: name.map_or_else(|| email.as_str().to_owned(), str::to_owned),
                    // Unusable: nobody knows it; a password reset sets one. (The
                    // fixed part meets the policy whatever the random part is.)
                    password: unusable_password(),
                    role: None,
                };
                match auth
                    .create_verified_member(input, &format!("oidc:{}", provider.name))
                    .await
                {
                    Ok(user) => {
                        created = true;
                        user
                    }
                    // Signed up at the same moment by another callback.
                    Err(Error::Conflict { .. }) => {
                        store::users::user_by_email(pool, ws, &email.key())
                            .await?
                            .map(|(u, _)| u)
                            .ok_or(Error::Conflict {
                                message: "the user was created and deleted meanwhile".into(),
                                field: None,
                                existing_id: None,
                            })?
                    }
                    Err(e) => return Err(e),
                }
            }
            None => return Err(refuse(AuthFailure::OidcNoAccount)),
        };
        // A disabled user is not linked, and signs in no more than with a password.
        if user.disabled_at.is_some() {
            return Err(refuse(AuthFailure::InvalidCredentials));
        }
        let now = self.now();
        // An account whose email was never verified was made by someone else
        // (an admin, a sign-up that never opened its mail), who may know its
        // password: it is replaced by one nobody knows, and its sessions end.
        let replace = if user.email_verified_at.is_none() && !created {
            Some(self.passwords().hash(&unusable_password()).await?)
        } else {
            None
        };
        let audit = link(&user, "oidc.linked");
        store::oidc::link(
            pool,
            &user,
            (issuer, subject),
            Ts(now),
            replace.as_deref(),
            &audit,
        )
        .await?;
        let user = User {
            email_verified_at: user.email_verified_at.or(Some(now)),
            ..user
        };
        Ok((user, created))
    }
}
