//! Extractors. Input becomes typed values here, and every refusal is a problem body
//! that names what was wrong: the body field (by its path, `tags[2]`), the query or
//! path parameter, or the header.
//!
//! Authentication is extractors too: [`ApiKey`], [`SessionUser`], [`Admin`] and
//! [`Caller`] (either of the first two) read what the route family's guard found (see
//! `guard.rs`), so a handler cannot forget to authenticate.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use bytes::Bytes;
use crm_core::api_keys::VerifiedKey;
use crm_core::webhooks::ssrf::IpNet;
use crm_core::{Error, WorkspaceId};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::problem::{ApiError, Problem};
use crate::AppState;

/// `408 request_timeout` when reading the body hit [`crate::Limits::body_timeout`].
pub(crate) fn body_timed_out(e: &(dyn std::error::Error + 'static)) -> Option<Problem> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<crate::serve::BodyTimeout>() {
            return Some(Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                err.to_string(),
            ));
        }
        cur = err.source();
    }
    None
}

fn body_rejection(r: axum::extract::rejection::BytesRejection) -> Problem {
    if let Some(p) = body_timed_out(&r) {
        return p;
    }
    let status = r.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_request"
    };
    Problem::new(status, code, r.body_text())
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is one JSON object: serde would take a positional array for a
    // struct (`["Ana","ana@example.org"]` as a lead), so anything else is refused
    // here, 400 when it is not even JSON and 422 when it is JSON of the wrong kind.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let is_json = serde::de::IgnoredAny::deserialize(&mut de).is_ok() && de.end().is_ok();
        return Err(if is_json {
            Problem::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "body",
                "must be a JSON object",
            )
        } else {
            Problem::field(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "body",
                "must be one JSON object",
            )
        }
        .into());
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        // One JSON document and nothing after it (whitespace aside): `{…} xx` is
        // malformed, not a lead.
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(Problem::field(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "body",
                crm_core::error::json_message(&e),
            )
            .into()),
        },
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_data() {
                let field = if path == "." { "body".to_owned() } else { path };
                Err(Problem::field(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    &field,
                    crm_core::error::json_message(&inner),
                )
                .into())
            } else {
                Err(Problem::field(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    "body",
                    crm_core::error::json_message(&inner),
                )
                .into())
            }
        }
    }
}

fn content_type(parts: &Request) -> Option<&str> {
    parts
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
}

fn is_json(ct: &str) -> bool {
    ct.eq_ignore_ascii_case("application/json")
        || (ct.starts_with("application/") && ct.ends_with("+json"))
}

/// A JSON body (`Content-Type: application/json`), deserialised with the path of any
/// bad field in the error.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !content_type(&req).is_some_and(is_json) {
            return Err(Problem::field(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type",
                "must be application/json",
            )
            .into());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        Ok(Self(parse_json(&bytes)?))
    }
}

/// A JSON body as [`Json`] reads it, or, when the body is empty (a `POST` with
/// nothing to say), the default value.
#[derive(Debug, Clone)]
pub struct JsonOrEmpty<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for JsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = content_type(&req).is_some_and(is_json);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.is_empty() {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(Problem::field(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type",
                "must be application/json",
            )
            .into());
        }
        Ok(Self(parse_json(&bytes)?))
    }
}

/// The raw body bytes (an inbound webhook's, whose signature covers them exactly).
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Ok(Self(
            Bytes::from_request(req, state)
                .await
                .map_err(body_rejection)?,
        ))
    }
}

/// A body as JSON or as `application/x-www-form-urlencoded` (an HTML form).
#[derive(Debug, Clone)]
pub struct JsonOrForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let form = match content_type(&req) {
            Some(ct) if is_json(ct) => false,
            Some(ct) if ct.eq_ignore_ascii_case("application/x-www-form-urlencoded") => true,
            _ => {
                return Err(Problem::field(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Content-Type",
                    "must be application/json or application/x-www-form-urlencoded",
                )
                .into())
            }
        };
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if !form {
            return Ok(Self(parse_json(&bytes)?));
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(&bytes));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            Problem::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                &field,
                e.into_inner().to_string(),
            )
            .into()
        })
    }
}

/// Path parameters; a bad one (say, an id that is not a UUID) is a 400 naming it.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let kind = e.into_kind();
                let field = match &kind {
                    axum::extract::path::ErrorKind::ParseErrorAtKey { key, .. }
                    | axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key } => key.clone(),
                    // A single parameter is parsed without its name; the route knows it.
                    _ => match axum::extract::RawPathParams::from_request_parts(parts, state).await
                    {
                        Ok(p) if p.iter().count() == 1 => {
                            p.iter().next().map_or("path", |(k, _)| k).to_owned()
                        }
                        _ => "path".to_owned(),
                    },
                };
                Err(Problem::field(
                    StatusCode::BAD_REQUEST,
                    "invalid_path_parameter",
                    &field,
                    kind.to_string(),
                )
                .into())
            }
            Err(other) => {
                Err(Problem::new(other.status(), "bad_request", other.body_text()).into())
            }
        }
    }
}

/// Query parameters; an unknown or malformed one is a 400 naming it.
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "query".to_owned()
            } else {
                path
            };
            Problem::field(
                StatusCode::BAD_REQUEST,
                "invalid_query_parameter",
                &field,
                e.into_inner().to_string(),
            )
            .into()
        })
    }
}

/// The client's IP: the socket peer (when the server was started with
/// `into_make_service_with_connect_info`), or, when that peer is a trusted proxy
/// ([`crate::Config::trusted_proxies`]), the right-most `X-Forwarded-For` entry that is
/// not a trusted proxy: entries to its left were written by the client and prove
/// nothing. `None` when the peer is unknown.
#[derive(Debug, Clone)]
pub struct ClientIp(pub Option<String>);

/// One `X-Forwarded-For` entry: an address, or an address with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Whether the router already said that it runs without the peer address.
static NO_PEER_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl ClientIp {
    pub(crate) fn of(
        headers: &axum::http::HeaderMap,
        extensions: &axum::http::Extensions,
        trusted: &[IpNet],
    ) -> Self {
        let Some(peer) = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
        else {
            if !NO_PEER_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(
                    "crm's router runs without the client's address (serve it with \
                     into_make_service_with_connect_info::<SocketAddr>()): every client \
                     shares one per-IP rate-limit bucket"
                );
            }
            return Self(None);
        };
        Self(Some(Self::client(peer, headers, trusted).to_string()))
    }

    /// Walks `X-Forwarded-For` from the right past trusted proxies, starting at the
    /// socket peer. An entry that is not an IP address ends the walk at the proxy
    /// that wrote it.
    fn client(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[IpNet]) -> IpAddr {
        let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
        if !is_trusted(peer) {
            return peer;
        }
        // Split the raw bytes: a client's non-ASCII junk on the left must not make the
        // whole line unreadable (nginx appends the real address to the same line).
        let entries: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = std::str::from_utf8(entry).ok().and_then(parse_hop) else {
                break;
            };
            client = ip;
            if !is_trusted(ip) {
                break;
            }
        }
        client
    }

    /// The rate-limit key: the IPv4 address, the /64 network of an IPv6 address (one
    /// host gets a whole /64 and could otherwise use a new address per request), or
    /// `unknown` for every client without one.
    pub(crate) fn key(&self) -> String {
        self.0
            .as_deref()
            .map_or_else(|| "unknown".into(), crm_core::ratelimit::ip_key)
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self::of(
            &parts.headers,
            &parts.extensions,
            &s.cfg.trusted_proxies,
        ))
    }
}

/// An API key that checked out (`Authorization: Bearer <key>`), rate limited per key.
#[derive(Debug, Clone)]
pub struct ApiKey(pub VerifiedKey);

/// A signed-in user (session cookie), rate limited per user.
#[derive(Debug, Clone)]
pub struct SessionUser(pub crm_core::auth::SessionUser);

/// A signed-in user whose role is `admin` or `owner`; 403 for anyone else.
#[derive(Debug, Clone)]
pub struct Admin(pub crm_core::auth::SessionUser);

fn unauthenticated() -> ApiError {
    Problem::field(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "credentials",
        "this route needs credentials its guard did not find",
    )
    .into()
}

impl<S: Send + Sync> FromRequestParts<S> for ApiKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(unauthenticated)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SessionUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(unauthenticated)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let SessionUser(u) = SessionUser::from_request_parts(parts, s).await?;
        if !u.user.role.is_admin() {
            return Err(Error::Forbidden.into());
        }
        Ok(Self(u))
    }
}

/// Whoever called a lead route: an API key (its scopes apply) or a signed-in user of
/// any role (who may do everything with leads).
#[derive(Debug, Clone)]
pub enum Caller {
    /// An API key.
    Key(VerifiedKey),
    /// A signed-in user (boxed: a session and a user are large beside a key).
    User(Box<crm_core::auth::SessionUser>),
}

impl Caller {
    /// The caller's workspace.
    pub fn workspace_id(&self) -> WorkspaceId {
        match self {
            Self::Key(k) => k.workspace_id,
            Self::User(u) => u.user.workspace_id,
        }
    }

    /// How the caller appears in activities and the audit log.
    pub fn actor(&self) -> String {
        match self {
            Self::Key(k) => format!("api_key:{}", k.key_id),
            Self::User(u) => format!("user:{}", u.user.id),
        }
    }

    /// `Forbidden` unless the caller may do `scope`.
    pub fn require(&self, scope: &str) -> Result<(), Error> {
        match self {
            Self::Key(k) => k.require(scope),
            Self::User(_) => Ok(()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if let Some(ApiKey(k)) = parts.extensions.get::<ApiKey>() {
            return Ok(Self::Key(k.clone()));
        }
        if let Some(SessionUser(u)) = parts.extensions.get::<SessionUser>() {
            return Ok(Self::User(Box::new(u.clone())));
        }
        Err(unauthenticated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    /// Issue 15, item 10: the first, client-written entry was taken, so a client chose
    /// its own rate-limit bucket (and the IP in sessions and the audit log).
    #[test]
    fn forged_forwarded_for_entries_are_not_believed() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let client = |peer: &str, h: &[&str]| ClientIp::client(ip(peer), &xff(h), &proxies);
        // The proxy appended the real client; the client wrote the rest.
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6, 203.0.113.9"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6", "203.0.113.9, 10.0.0.2"]),
            ip("203.0.113.9"),
            "two headers, a chain of proxies"
        );
        // A peer that is not a trusted proxy: its header is ignored.
        assert_eq!(client("198.51.100.7", &["6.6.6.6"]), ip("198.51.100.7"));
        // Junk ends the walk at the proxy that passed it on.
        assert_eq!(client("10.0.0.1", &["203.0.113.9, junk"]), ip("10.0.0.1"));
        // Non-ASCII junk on the left does not hide the address the proxy appended,
        // and entries with ports are addresses too.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes("\u{e9}t\u{e9}, 203.0.113.9".as_bytes()).expect("value"),
        );
        assert_eq!(
            ClientIp::client(ip("10.0.0.1"), &h, &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(client("10.0.0.1", &["203.0.113.9:4711"]), ip("203.0.113.9"));
        assert_eq!(
            client("10.0.0.1", &["[2001:db8::7]:4711"]),
            ip("2001:db8::7")
        );
        // Nothing but proxies: the left-most.
        assert_eq!(client("10.0.0.1", &["10.1.1.1, 10.2.2.2"]), ip("10.1.1.1"));
        assert_eq!(client("10.0.0.1", &[]), ip("10.0.0.1"));
        // Without trusted proxies, never.
        assert_eq!(
            ClientIp::client(ip("10.0.0.1"), &xff(&["6.6.6.6"]), &[]),
            ip("10.0.0.1")
        );
    }

    /// Issue 15, item 11: one IPv6 host owns a /64 and could take a new address (and a
    /// fresh bucket) for every request.
    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let key = |s: &str| ClientIp(Some(s.into())).key();
        assert_eq!(
            key("2001:db8:1:2:aaaa::1"),
            key("2001:db8:1:2:bbbb:cccc:dddd:2")
        );
        assert_eq!(key("2001:db8:1:2::9"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(key("192.0.2.1"), "192.0.2.1");
        assert_eq!(ClientIp(None).key(), "unknown");
    }

    /// Every body and query the routes parse, fed arbitrary bytes through the real
    /// extractors: a typed rejection or a value, never a panic (issue 15, fuzzing).
    mod props {
        use axum::body::Body;
        use axum::extract::{FromRequest, FromRequestParts, Request};
        use proptest::prelude::*;

        use super::super::{Json, JsonOrForm, Query};
        use crate::routes::{admin, auth, leads};

        fn body(ct: &str, bytes: Vec<u8>) -> Request {
            Request::builder()
                .method("POST")
                .uri("/")
                .header("content-type", ct)
                .body(Body::from(bytes))
                .unwrap_or_else(|e| panic!("request: {e}"))
        }

        fn run<F: std::future::Future>(f: F) -> F::Output {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"))
                .block_on(f)
        }

        proptest! {
            #[test]
            fn bodies_parse_or_are_refused(bytes in prop_oneof![
                any::<Vec<u8>>(),
                "[\\[\\]{}\",:0-9a-z \\\\u.\\-]{0,200}".prop_map(String::into_bytes),
            ]) {
                run(async {
                    let j = "application/json";
                    let _ = Json::<auth::LoginInput>::from_request(body(j, bytes.clone()), &()).await;
                    let _ = Json::<auth::Register>::from_request(body(j, bytes.clone()), &()).await;
                    let _ = Json::<auth::ChangePassword>::from_request(body(j, bytes.clone()), &()).await;
                    let _ = Json::<auth::ResetRequest>::from_request(body(j, bytes.clone()), &()).await;
                    let _ = Json::<auth::ResetConfirm>::from_request(body(j, bytes.clone()), &()).await;
                    let _ = Json::<auth::VerifyEmail>::from_request(body(j, bytes.clone()), &()).await;
                    let _ = Json::<admin::UserPatch>::from_request(body(j, bytes.clone()), &()).await;
                    let _ = Json::<admin::SettingsPatch>::from_request(body(j, bytes.clone()), &()).await;
                    let _ = Json::<admin::Rotate>::from_request(body(j, bytes.clone()), &()).await;
                    let _ = Json::<leads::ParseInput>::from_request(body(j, bytes.clone()), &()).await;
                    for ct in [j, "application/x-www-form-urlencoded"] {
                        let _ = JsonOrForm::<leads::ContactForm>::from_request(body(ct, bytes.clone()), &()).await;
                    }
                });
            }

            #[test]
            fn queries_parse_or_are_refused(q in "[a-z_=&%0-9\\[\\]+.,:\\-]{0,120}") {
                let Ok(req) = Request::builder().uri(format!("/?{q}")).body(Body::empty()) else {
                    return Ok(());
                };
                let (mut parts, _) = req.into_parts();
                run(async {
                    let _ = Query::<leads::ListParams>::from_request_parts(&mut parts, &()).await;
                    let _ = Query::<admin::Page>::from_request_parts(&mut parts, &()).await;
                    let _ = Query::<admin::AuditPage>::from_request_parts(&mut parts, &()).await;
                });
            }
        }
    }
}

/// Who a request's `Authorization: Bearer <JWT>` names, the token issued by the
/// outside sign-in service configured with `CrmBuilder::jwt` (Supabase, Auth0, …)
/// and verified by [`crm_core::Crm::verify_jwt`]: for a host's own routes,
/// `async fn me(ExternalUser(who): ExternalUser) -> …` (feature `jwt`). The
/// state must give the `Crm` (`Crm: FromRef<S>`; crm's own state does). A missing
/// header is 401 naming `Authorization`; a refused token 401 saying why (expired,
/// another audience, …); both with `WWW-Authenticate: Bearer`. Nothing is written.
#[cfg(feature = "jwt")]
#[derive(Debug, Clone)]
pub struct ExternalUser(pub crm_core::jwt::ExternalIdentity);

#[cfg(feature = "jwt")]
impl<S> FromRequestParts<S> for ExternalUser
where
    S: Send + Sync,
    crm_core::Crm: axum::extract::FromRef<S>,
{
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Self, axum::response::Response> {
        use axum::extract::FromRef;
        use axum::response::IntoResponse;
        // 401 with the `Bearer` challenge.
        let refused = |e: ApiError| {
            let mut res = e.into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            res
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                refused(ApiError::from(Problem::field(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Authorization",
                    "must be `Bearer <JWT>`",
                )))
            })?;
        let crm = crm_core::Crm::from_ref(state);
        match crm.verify_jwt(token).await {
            Ok(who) => Ok(Self(who)),
            Err(e) => Err(refused(e.into())),
        }
    }
}
