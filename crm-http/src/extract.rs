//! Extractors. Input becomes typed values here, and every refusal is a problem body
//! that names what was wrong: the body field (by its path, `tags[2]`), the query or
//! path parameter, or the header.
//!
//! Authentication is extractors too: [`ApiKey`], [`SessionUser`], [`Admin`] and
//! [`Caller`] (either of the first two) read what the route family's guard found (see
//! `guard.rs`), so a handler cannot forget to authenticate.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use bytes::Bytes;
use crm_core::api_keys::VerifiedKey;
use crm_core::{Error, WorkspaceId};
use serde::de::DeserializeOwned;

use crate::problem::{ApiError, Problem};
use crate::AppState;

fn body_rejection(r: axum::extract::rejection::BytesRejection) -> Problem {
    let status = r.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_request"
    };
    Problem::new(status, code, r.body_text())
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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
/// `into_make_service_with_connect_info`), or the first `X-Forwarded-For` entry when
/// the router was told to trust a proxy. `None` when neither is known.
#[derive(Debug, Clone)]
pub struct ClientIp(pub Option<String>);

impl ClientIp {
    pub(crate) fn of(
        headers: &axum::http::HeaderMap,
        extensions: &axum::http::Extensions,
        trust_proxy: bool,
    ) -> Self {
        if trust_proxy {
            let forwarded = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .and_then(|v| v.parse::<std::net::IpAddr>().ok());
            if let Some(ip) = forwarded {
                return Self(Some(ip.to_string()));
            }
        }
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Self(peer)
    }

    /// The rate-limit key: the IP, or `unknown` for every client without one.
    pub(crate) fn key(&self) -> &str {
        self.0.as_deref().unwrap_or("unknown")
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self::of(
            &parts.headers,
            &parts.extensions,
            s.cfg.trust_proxy_headers,
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
    /// A signed-in user.
    User(crm_core::auth::SessionUser),
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
            return Ok(Self::User(u.clone()));
        }
        Err(unauthenticated())
    }
}
