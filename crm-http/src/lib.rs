#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::Router;
use crm_core::ratelimit::Policy;
use crm_core::{Crm, SecretString, WorkspaceId};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

pub mod extract;
mod guard;
mod openapi;
mod pages;
pub mod problem;
mod routes;
mod serve;
#[cfg(feature = "ui")]
mod ui;

pub use crm_core::webhooks::ssrf::IpNet;
#[cfg(feature = "jwt")]
pub use extract::ExternalUser;
pub use extract::{Admin, ApiKey, Caller, ClientIp, SessionUser};
pub use problem::{ApiError, Problem};
pub use serve::{serve, Limits};

/// The default session cookie name. The `__Host-` prefix makes browsers insist on
/// `Secure`, `Path=/` and no `Domain`, so only HTTPS origins can set it.
pub const SESSION_COOKIE: &str = "__Host-crm_session";

/// The request header that, like an allowed `Origin`, lets a state-changing session
/// request through the CSRF check (a browser sends it cross-origin only after a CORS
/// preflight that only allowed origins pass).
pub const CSRF_HEADER: &str = "x-crm-csrf";

/// How the router behaves; [`Config::default`] is safe for production behind HTTPS.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) allowed_origins: Vec<HeaderValue>,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) registration: bool,
    pub(crate) secret_tails: bool,
    pub(crate) cookie_name: String,
    pub(crate) cookie_secure: bool,
    pub(crate) public_workspace: WorkspaceId,
    pub(crate) session_policy: Policy,
    pub(crate) inbound_policy: Policy,
    pub(crate) json_limit: usize,
    pub(crate) import_limit: usize,
    #[cfg_attr(not(any(feature = "whatsapp", feature = "calcom")), allow(dead_code))]
    pub(crate) inbound_limit: usize,
    pub(crate) whatsapp: Option<(SecretString, SecretString)>,
    pub(crate) calcom: Option<SecretString>,
    #[cfg_attr(not(feature = "oidc"), allow(dead_code))]
    pub(crate) oidc_base: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            registration: false,
            secret_tails: false,
            cookie_name: SESSION_COOKIE.into(),
            cookie_secure: true,
            public_workspace: WorkspaceId::DEFAULT,
            session_policy: Policy {
                limit: 300,
                period: Duration::from_secs(60),
            },
            inbound_policy: Policy {
                limit: 600,
                period: Duration::from_secs(60),
            },
            json_limit: 64 * 1024,
            import_limit: 256 * 1024 * 1024,
            inbound_limit: 256 * 1024,
            whatsapp: None,
            calcom: None,
            oidc_base: None,
        }
    }
}

impl Config {
    /// The defaults: no CORS origins, no registration, `__Host-crm_session` cookie
    /// (Secure), the default workspace for public routes, 64 KiB JSON bodies.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows a browser origin (`https://app.example.com`): CORS answers it (with
    /// credentials), and state-changing session requests from it pass the CSRF check.
    /// An origin that is not a valid header value is ignored, and so is `*`: with
    /// credentials allowed, CORS cannot answer "any origin".
    pub fn allow_origin(mut self, origin: &str) -> Self {
        let origin = origin.trim().trim_end_matches('/');
        if origin == "*" {
            return self;
        }
        if let Ok(v) = HeaderValue::from_str(origin) {
            self.allowed_origins.push(v);
        }
        self
    }

    /// The networks of the reverse proxies in front of the router (e.g.
    /// `"10.0.0.0/8".parse()?`). When the socket peer is one of them, the client is the
    /// right-most `X-Forwarded-For` entry that is not: a client can write entries of
    /// its own to the left, never to the right of what its proxy appends. Without
    /// trusted proxies `X-Forwarded-For` is ignored.
    pub fn trusted_proxies(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted_proxies.extend(networks);
        self
    }

    /// Serves `POST /api/auth/register` (self-service sign-up: a new workspace and its owner).
    pub fn registration(mut self, yes: bool) -> Self {
        self.registration = yes;
        self
    }

    /// Lets the admin settings show the last four characters of the inbound secrets
    /// (`••••abcd`), to tell which secret is configured. Off by default: a tenant
    /// admin sees `••••` only, no part of a secret that belongs to the operator.
    pub fn secret_tails_in_settings(mut self, yes: bool) -> Self {
        self.secret_tails = yes;
        self
    }

    /// For development over plain HTTP: the session cookie is named `name` and sent
    /// without `Secure` (browsers refuse `__Host-` cookies that are not Secure).
    pub fn insecure_cookie(mut self, name: &str) -> Self {
        self.cookie_name = name.into();
        self.cookie_secure = false;
        self
    }

    /// The workspace the public routes (contact form, inbound webhooks) write to; the
    /// default workspace unless set. Sign-in, password reset and verification mails
    /// without a `workspace_id` find the email's accounts in every workspace instead
    /// (see `Crm::sign_in`).
    pub fn public_workspace(mut self, ws: WorkspaceId) -> Self {
        self.public_workspace = ws;
        self
    }

    /// Requests per signed-in user (default 300 per minute).
    pub fn session_rate_limit(mut self, policy: Policy) -> Self {
        self.session_policy = policy;
        self
    }

    /// Inbound webhook requests per client IP (default 600 per minute).
    pub fn inbound_rate_limit(mut self, policy: Policy) -> Self {
        self.inbound_policy = policy;
        self
    }

    /// Largest CSV file `POST /imports` takes (default 256 MiB, about a million
    /// rows of a typical export). It is spooled to a temporary file, never held
    /// in memory.
    pub fn import_limit(mut self, bytes: usize) -> Self {
        self.import_limit = bytes;
        self
    }

    /// Largest JSON or form body (default 64 KiB).
    pub fn json_limit(mut self, bytes: usize) -> Self {
        self.json_limit = bytes;
        self
    }

    /// WhatsApp inbound: the app secret that signs `X-Hub-Signature-256` and the token
    /// Meta's verification handshake must present. Without it the route answers 503.
    #[cfg(feature = "whatsapp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "whatsapp")))]
    pub fn whatsapp(mut self, app_secret: SecretString, verify_token: SecretString) -> Self {
        self.whatsapp = Some((app_secret, verify_token));
        self
    }

    /// Cal.com inbound: the webhook secret behind `X-Cal-Signature-256`. Without it the
    /// route answers 503.
    #[cfg(feature = "calcom")]
    #[cfg_attr(docsrs, doc(cfg(feature = "calcom")))]
    pub fn calcom(mut self, secret: SecretString) -> Self {
        self.calcom = Some(secret);
        self
    }

    /// OpenID Connect sign-in: the URL browsers reach this router at
    /// (`https://crm.example.com`, or `https://example.com/crm` when it is nested
    /// there). Each workspace's provider sends browsers back to
    /// `{base}/api/auth/oidc/{workspace_id}/{provider}/callback`, the redirect URI to
    /// register at that provider. Without it the sign-in routes answer 503.
    #[cfg(feature = "oidc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
    pub fn oidc_base_url(mut self, url: &str) -> Self {
        self.oidc_base = Some(url.trim().trim_end_matches('/').to_owned());
        self
    }

    /// The router with this configuration; see [`router`].
    pub fn router<S>(self, crm: Crm) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        build(crm, self).0
    }
}

/// What every handler and guard gets: the `Crm` and the configuration. The router
/// supplies it itself, so the host app's state type does not matter.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The crm handle.
    pub crm: Crm,
    pub(crate) cfg: Arc<Config>,
}

impl axum::extract::FromRef<AppState> for Crm {
    fn from_ref(s: &AppState) -> Self {
        s.crm.clone()
    }
}

/// The whole CRM API as a router to mount: `.nest("/crm", crm_http::router(crm))`.
/// Generic over the host's state; installs no global subscriber. Uses
/// [`Config::default`]; see [`Config::router`] to change it.
pub fn router<S>(crm: Crm) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Config::default().router(crm)
}

/// The OpenAPI 3.1 document of the router with `config`: the one it serves at
/// `GET /api/openapi.json` when mounted at the root (served under a prefix, its
/// `servers` entry names the prefix).
pub fn openapi(crm: Crm, config: Config) -> utoipa::openapi::OpenApi {
    let mut doc = build::<()>(crm, config).1;
    doc.servers = Some(vec![utoipa::openapi::server::Server::new("/")]);
    doc
}

fn build<S>(crm: Crm, cfg: Config) -> (Router<S>, utoipa::openapi::OpenApi)
where
    S: Clone + Send + Sync + 'static,
{
    let state = AppState {
        crm,
        cfg: Arc::new(cfg),
    };
    let api: OpenApiRouter<AppState> = OpenApiRouter::with_openapi(openapi::base());
    let (router, doc) = routes::all(api, &state).split_for_parts();
    #[cfg(feature = "ui")]
    let router = router.merge(ui::router(&state));
    let doc = openapi::finish(doc, &state.cfg, &state.crm);
    let served = Arc::new(doc.clone());
    let cors = cors(&state.cfg);
    let request_id = HeaderName::from_static("x-request-id");
    let router = router
        .route(
            "/api/openapi.json",
            axum::routing::get(move |req: axum::extract::Request| {
                let doc = served.clone();
                async move { axum::Json(openapi::with_server(&doc, &req)) }
            }),
        )
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.cfg.json_limit))
        .with_state(state)
        .layer(CatchPanicLayer::custom(problem::panicked))
        .layer(cors)
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // Method, path (never the query, which may carry a token) and request id.
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("crm_http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));
    (router, doc)
}

fn cors(cfg: &Config) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(cfg.allowed_origins.clone()))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-idempotency-key"),
            HeaderName::from_static(CSRF_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn a_star_origin_is_ignored_not_a_panic() {
        // tower-http panics on `*` among credentialed origins; it never gets there.
        let cfg = Config::new()
            .allow_origin("*")
            .allow_origin(" https://app.example.com/ ");
        assert_eq!(cfg.allowed_origins, ["https://app.example.com"]);
    }
}
