//! Identity from outside (feature `jwt`): JSON Web Tokens issued by another sign-in
//! service (Supabase, Auth0, Clerk, an app's own), verified by
//! [`Crm::verify_jwt`] and mapped to a workspace and a role, for backends whose
//! users sign in elsewhere.
//!
//! - **Keys.** HS256 with a shared secret ([`JwtKey::Hs256`], Supabase's legacy
//!   JWT secret), or RS256 / ES256 with the public keys of a JWKS URL
//!   ([`JwtKey::Jwks`]). The algorithms a token may use follow from the key alone:
//!   `alg: none`, and an HS256 token under a JWKS configuration (the key-confusion
//!   attack: HMAC "signed" with the RSA public key) are refused before any
//!   signature is checked.
//! - **JWKS.** `https` (plain `http` only to a loopback address). Fetched on first
//!   use with a 3 s timeout (at most 1 MiB; keys of another use or algorithm are
//!   skipped), kept for 10 minutes, and fetched again at once for a `kid` it does
//!   not know; at most one fetch every 30 s, whatever the reason, so neither a flood
//!   of made-up `kid`s nor an issuer that is down makes every request ask again.
//!   When the issuer cannot be reached the keys already fetched stay in use.
//!   A header with `crit` is refused; `jwk`, `jku`, `x5u` and `x5c` are never read.
//! - **Claims.** `iss` must be [`JwtConfig::issuer`]; `aud` (a string or a list)
//!   must hold one of [`JwtConfig::audience`]; `exp` is required and `nbf`
//!   honoured, against crm's clock, with [`JwtConfig::leeway`] (at most 5 minutes)
//!   either way; `sub` is required.
//! - **Mapping.** The workspace is the UUID at [`JwtConfig::workspace_claim`] (a
//!   dotted path such as `app_metadata.crm_workspace`), else
//!   [`JwtConfig::default_workspace`] (one of the two must be configured); the role
//!   is `owner`, `admin` or `member` at [`JwtConfig::role_claim`] when the token
//!   names its workspace, else `member` (a role is granted for a workspace, never
//!   for the default one). Verifying creates nothing: the identity is what the
//!   token says, checked.
//!
//! Every refusal is [`Error::Unauthorized`] with a [`AuthFailure`] naming why
//! (`JwtMalformed`, `JwtAlgorithm`, `JwtSignature`, `JwtExpired`,
//! `JwtNotYetValid`, `JwtIssuer`, `JwtAudience`, `JwtUnknownKey`, `JwtClaims`).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::auth::Role;
use crate::ids::WorkspaceId;
use crate::{AuthFailure, Crm, Error, Result, SecretString};

/// How long fetched JWKS keys are used before they are fetched again.
pub const JWKS_TTL: Duration = Duration::from_secs(600);
/// The least time between two fetches of the JWKS for an unknown `kid`.
pub const JWKS_REFETCH_MIN: Duration = Duration::from_secs(30);
/// How long a JWKS fetch may take.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(3);
/// The most leeway a configuration may give `exp` and `nbf`.
pub const LEEWAY_MAX: Duration = Duration::from_secs(300);

/// The key tokens are signed with.
pub enum JwtKey {
    /// HS256 with this shared secret (at least 32 bytes).
    Hs256(SecretString),
    /// RS256 or ES256 with the keys published at this JWKS URL (`https://…`, or
    /// `http://` for a local issuer).
    Jwks(String),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hs256(_) => f.write_str("Hs256(********)"),
            Self::Jwks(url) => f.debug_tuple("Jwks").field(url).finish(),
        }
    }
}

/// How external tokens are verified and mapped; see the module docs.
#[derive(Debug)]
pub struct JwtConfig {
    /// The signing key.
    pub key: JwtKey,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` values accepted (at least one).
    pub audience: Vec<String>,
    /// Tolerated clock skew for `exp` and `nbf` (default 60 s, at most
    /// [`LEEWAY_MAX`]).
    pub leeway: Duration,
    /// The dotted path of the claim holding the workspace id (a UUID).
    pub workspace_claim: Option<String>,
    /// The workspace of a token without that claim (`None`: such a token is
    /// refused).
    pub default_workspace: Option<WorkspaceId>,
    /// The dotted path of the claim holding the crm role.
    pub role_claim: Option<String>,
}

impl JwtConfig {
    /// A configuration for `key`, `issuer` and `audience` with a 60 s leeway; set
    /// [`workspace_claim`](Self::workspace_claim) or
    /// [`default_workspace`](Self::default_workspace) (one is required: an open
    /// sign-up at the issuer must not put everyone in a workspace unasked).
    pub fn new(key: JwtKey, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            key,
            issuer: issuer.into(),
            audience: vec![audience.into()],
            leeway: Duration::from_secs(60),
            workspace_claim: None,
            default_workspace: None,
            role_claim: None,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(format!("JWT configuration: {m}")));
        match &self.key {
            JwtKey::Hs256(s) if s.expose().len() < 32 => {
                return bad("an HS256 secret must be at least 32 bytes")
            }
            JwtKey::Jwks(url) if !trusted_url(url) => {
                return bad("the JWKS URL must be https (http only on this machine's loopback)")
            }
            _ => {}
        }
        if self.issuer.is_empty() || self.audience.iter().all(String::is_empty) {
            return bad("an issuer and an audience are required");
        }
        if self.leeway > LEEWAY_MAX {
            return bad("the leeway must be at most 300 s");
        }
        if self.workspace_claim.is_none() && self.default_workspace.is_none() {
            return bad("give a workspace claim or a default workspace");
        }
        Ok(())
    }
}

/// Who a verified token says the caller is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExternalIdentity {
    /// The token's `sub`: the user's id at the issuer.
    pub subject: String,
    /// The token's `email`, when it has one.
    pub email: Option<String>,
    /// The workspace the token maps to.
    pub workspace_id: WorkspaceId,
    /// The role the token maps to.
    pub role: Role,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

/// The verifier a `Crm` holds: the configuration and the JWKS cache.
pub(crate) struct Verifier {
    config: JwtConfig,
    jwks: tokio::sync::Mutex<Jwks>,
    client: reqwest::Client,
}

/// The JWKS keys and when they were fetched and last asked for (crm's clock).
#[derive(Default)]
struct Jwks {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Option<DateTime<Utc>>,
    tried: Option<DateTime<Utc>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn refuse(reason: AuthFailure) -> Error {
    Error::unauthorized(reason)
}

impl Verifier {
    pub(crate) fn new(config: JwtConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| Error::Config("JWT: the HTTP client could not be built".into()))?;
        Self::with_client(config, client)
    }

    /// A verifier fetching its JWKS with `client` (OIDC's, which has the SSRF
    /// guard: the URL comes from a provider a workspace owner configured).
    pub(crate) fn with_client(config: JwtConfig, client: reqwest::Client) -> Result<Self> {
        config.check()?;
        Ok(Self {
            config,
            jwks: tokio::sync::Mutex::default(),
            client,
        })
    }

    /// The key and algorithm for a token with this header.
    async fn key(
        &self,
        header: &jsonwebtoken::Header,
        now: DateTime<Utc>,
    ) -> Result<(Algorithm, DecodingKey)> {
        match &self.config.key {
            JwtKey::Hs256(secret) => {
                if header.alg != Algorithm::HS256 {
                    return Err(refuse(AuthFailure::JwtAlgorithm));
                }
                Ok((
                    Algorithm::HS256,
                    DecodingKey::from_secret(secret.expose().as_bytes()),
                ))
            }
            JwtKey::Jwks(url) => {
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(refuse(AuthFailure::JwtAlgorithm));
                }
                let kid = header.kid.as_deref().unwrap_or_default();
                let since = |t: Option<DateTime<Utc>>, d: Duration| {
                    t.is_none_or(|t| (now - t).to_std().unwrap_or_default() >= d)
                };
                let mut jwks = self.jwks.lock().await;
                let stale = since(jwks.fetched, JWKS_TTL);
                let unknown = !jwks.keys.contains_key(kid);
                // At most one fetch every 30 s, whatever the reason: an issuer that
                // is down is not asked again by every request, and requests arriving
                // during a fetch wait for it (at most its 3 s timeout).
                if (stale || unknown) && since(jwks.tried, JWKS_REFETCH_MIN) {
                    jwks.tried = Some(now);
                    match self.fetch(url).await {
                        Ok(keys) => {
                            jwks.keys = keys;
                            jwks.fetched = Some(now);
                        }
                        // The keys fetched before stay in use.
                        Err(e) => tracing::warn!(error = %e, "JWT: the JWKS could not be fetched"),
                    }
                }
                let (alg, key) = jwks
                    .keys
                    .get(kid)
                    .ok_or_else(|| refuse(AuthFailure::JwtUnknownKey))?;
                // A key is used only with its own algorithm.
                if *alg != header.alg {
                    return Err(refuse(AuthFailure::JwtAlgorithm));
                }
                Ok((*alg, key.clone()))
            }
        }
    }

    /// The RS256 and ES256 (P-256) signing keys of the JWKS at `url`, by `kid`
    /// (at most 1 MiB; a key of another use or algorithm, or one that cannot be
    /// read, is skipped, not the whole set).
    async fn fetch(&self, url: &str) -> Result<HashMap<String, (Algorithm, DecodingKey)>> {
        const MAX: usize = 1 << 20;
        let failed = |what: &str| Error::Integration(format!("JWKS {what}"));
        let mut res = self.client.get(url).send().await.map_err(|e| {
            failed(if e.is_timeout() {
                "timed out"
            } else {
                "unreachable"
            })
        })?;
        if !res.status().is_success() {
            return Err(failed(&format!("answered {}", res.status().as_u16())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|_| failed("could not be read"))? {
            if body.len() + chunk.len() > MAX {
                return Err(failed("is larger than 1 MiB"));
            }
            body.extend_from_slice(&chunk);
        }
        let set: Value = serde_json::from_slice(&body).map_err(|_| failed("is not a key set"))?;
        let mut keys = HashMap::new();
        for raw in set["keys"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if raw["use"].as_str().is_some_and(|u| u != "sig") {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(raw.clone()) else {
                continue;
            };
            use jsonwebtoken::jwk::AlgorithmParameters as P;
            let alg = match &jwk.algorithm {
                P::RSA(_) => Algorithm::RS256,
                P::EllipticCurve(ec) if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            // A key published for another algorithm (RS512, PS256) is not used.
            if raw["alg"].as_str().is_some_and(|a| {
                a != match alg {
                    Algorithm::RS256 => "RS256",
                    _ => "ES256",
                }
            }) {
                continue;
            }
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(&jwk))
            else {
                continue;
            };
            keys.insert(kid, (alg, key));
        }
        Ok(keys)
    }

    pub(crate) async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<ExternalIdentity> {
        let claims = self.claims(token, now).await?;
        self.identity(&claims)
    }

    /// A token's claims once its header, signature, `exp`, `nbf`, `iss`, `aud` and
    /// `sub` passed (each refusal with its reason); what they name is the caller's.
    pub(crate) async fn claims(&self, token: &str, now: DateTime<Utc>) -> Result<Value> {
        if token.is_empty() || token.len() > 8192 {
            return Err(refuse(AuthFailure::JwtMalformed));
        }
        let raw_header = raw_header(token);
        // Critical extensions crm does not implement must not be ignored (RFC 7515).
        if raw_header.as_ref().is_some_and(|h| h.get("crit").is_some()) {
            return Err(refuse(AuthFailure::JwtMalformed));
        }
        // `alg: none` (and any name jsonwebtoken does not know) fails here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            if raw_header.as_ref().is_some_and(|h| h["alg"].is_string()) {
                refuse(AuthFailure::JwtAlgorithm)
            } else {
                refuse(AuthFailure::JwtMalformed)
            }
        })?;
        let (alg, key) = self.key(&header, now).await?;
        // The signature and the algorithm here; the claims below, on crm's clock.
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => refuse(AuthFailure::JwtSignature),
                K::InvalidAlgorithm => refuse(AuthFailure::JwtAlgorithm),
                _ => refuse(AuthFailure::JwtMalformed),
            }
        })?;
        self.standard_claims(&data.claims, now)?;
        Ok(data.claims)
    }

    /// The registered claims every token must pass.
    fn standard_claims(&self, claims: &Value, now: DateTime<Utc>) -> Result<()> {
        let c = &self.config;
        let leeway = i64::try_from(c.leeway.as_secs()).unwrap_or(0);
        let now = now.timestamp();
        let exp = claims["exp"]
            .as_i64()
            .ok_or_else(|| refuse(AuthFailure::JwtClaims))?;
        if now > exp.saturating_add(leeway) {
            return Err(refuse(AuthFailure::JwtExpired));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_i64().ok_or_else(|| refuse(AuthFailure::JwtClaims))?;
            if now < nbf.saturating_sub(leeway) {
                return Err(refuse(AuthFailure::JwtNotYetValid));
            }
        }
        if claims["iss"].as_str() != Some(c.issuer.as_str()) {
            return Err(refuse(AuthFailure::JwtIssuer));
        }
        let audiences: Vec<&str> = match &claims["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.iter().any(|a| c.audience.iter().any(|w| w == a)) {
            return Err(refuse(AuthFailure::JwtAudience));
        }
        subject(claims)?;
        Ok(())
    }

    /// Who the claims (already checked by [`Verifier::claims`]) name.
    fn identity(&self, claims: &Value) -> Result<ExternalIdentity> {
        let c = &self.config;
        let subject = subject(claims)?.to_owned();
        let exp = claims["exp"].as_i64().unwrap_or_default();
        let (workspace_id, claimed) = match c.workspace_claim.as_deref().map(|p| at(claims, p)) {
            Some(Some(v)) => (
                v.as_str()
                    .and_then(|s| uuid::Uuid::parse_str(s).ok())
                    .map(WorkspaceId)
                    .ok_or_else(|| refuse(AuthFailure::JwtClaims))?,
                true,
            ),
            _ => (
                c.default_workspace
                    .ok_or_else(|| refuse(AuthFailure::JwtClaims))?,
                false,
            ),
        };
        // A role is granted for the workspace the token names; in the default
        // workspace every token is a member.
        let role = match c.role_claim.as_deref().and_then(|p| at(claims, p)) {
            Some(v) if claimed => v
                .as_str()
                .and_then(|r| r.parse::<Role>().ok())
                .unwrap_or(Role::Member),
            _ => Role::Member,
        };
        let email = claims["email"]
            .as_str()
            .filter(|e| e.len() <= 320)
            .map(str::to_owned);
        Ok(ExternalIdentity {
            subject,
            email,
            workspace_id,
            role,
            expires_at: DateTime::from_timestamp(exp, 0).unwrap_or(DateTime::<Utc>::MAX_UTC),
        })
    }
}

/// The token's `sub`: 1-255 bytes.
pub(crate) fn subject(claims: &Value) -> Result<&str> {
    claims["sub"]
        .as_str()
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| refuse(AuthFailure::JwtClaims))
}

/// Whether keys may be fetched from `url`: `https`, or `http` to a loopback
/// address (a local issuer); anything else could be answered by someone on the
/// path, with keys of their own.
pub(crate) fn trusted_url(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.scheme() {
        "https" => u.host().is_some(),
        "http" => match u.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// A token's header as JSON, when it is (to tell `alg: none` from a token that is
/// not a JWT at all, and to see `crit`).
fn raw_header(token: &str) -> Option<Value> {
    use base64::Engine;
    let head = token.split('.').next()?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&raw)
        .ok()
        .filter(Value::is_object)
}

/// The value at a dotted path (`app_metadata.crm_workspace`).
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

impl Crm {
    /// Verifies a token issued by the configured outside sign-in service
    /// ([`crate::CrmBuilder::jwt`]) and answers who it names (see the module
    /// docs); `Unauthorized` with the reason otherwise, `Config` when no JWT
    /// configuration was given. Writes nothing.
    pub async fn verify_jwt(&self, token: &str) -> Result<ExternalIdentity> {
        let verifier = self.jwt_verifier()?;
        verifier.verify(token, self.now()).await
    }
}
