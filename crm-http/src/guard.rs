//! The guards of the route families, as middleware: each authenticates (or not),
//! checks the family's rate limit and puts `X-RateLimit-*` on the response.
//!
//! | family | who | limit key | policy |
//! |---|---|---|---|
//! | public: the contact form | anyone | client IP | `anonymous_ip` |
//! | public: login, reset, verify, register | anyone | client IP (a bucket of its own) | `anonymous_ip` |
//! | inbound webhooks | a provider (signature checked by the handler) | client IP | `inbound` |
//! | API | `Authorization: Bearer <key>` | key id | `api_key` |
//! | session (`/api/auth/me`, `/api/admin/*`) | session cookie | user id | `session` |
//!
//! `GET /api/v1/health`, `GET /api/v1/ready` and the OpenAPI document are not limited
//! (probes and tools).
//! State-changing requests of the public auth routes and of session routes must pass
//! the CSRF check: an allowed (or same-host) `Origin`, or the `X-CRM-CSRF` header.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crm_core::idempotency::Claim;
use crm_core::ratelimit::{Decision, Policy};
use crm_core::Error;

use crate::extract::{ApiKey, ClientIp, SessionUser};
use crate::problem::{problem_of, retry_secs, ApiError, Problem};
use crate::{AppState, CSRF_HEADER};

fn set_rate_headers(h: &mut HeaderMap, d: &Decision) {
    h.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert(
        "x-ratelimit-reset",
        HeaderValue::from(d.reset_at.timestamp().max(0)),
    );
}

/// Checks one rate limit; the refusal is a finished 429 response.
pub(crate) async fn limit(
    s: &AppState,
    policy: &str,
    custom: Option<Policy>,
    key: &str,
) -> Result<Decision, Response> {
    let limiter = s.crm.rate_limiter();
    let decided = match custom {
        Some(p) => limiter.check_with(policy, p, key).await,
        None => limiter.check(policy, key).await,
    };
    let d = decided.map_err(|e| problem_of(&e).into_response())?;
    if d.allowed {
        return Ok(d);
    }
    let retry_after = d.retry_after.unwrap_or_default();
    let mut res = problem_of(&Error::RateLimited { retry_after }).into_response();
    set_rate_headers(res.headers_mut(), &d);
    res.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_secs(retry_after)),
    );
    Err(res)
}

async fn run_limited(d: Decision, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    set_rate_headers(res.headers_mut(), &d);
    res
}

fn client_ip(s: &AppState, req: &Request) -> ClientIp {
    ClientIp::of(req.headers(), req.extensions(), &s.cfg.trusted_proxies)
}

/// `anonymous_ip` per client IP, in the bucket of one family of public routes: the
/// contact form and the auth routes each have their own, so ten form posts from an
/// office (one address) do not lock that office out of signing in.
async fn per_ip(s: AppState, bucket: &str, req: Request, next: Next) -> Response {
    let ip = client_ip(&s, &req);
    let key = format!("{bucket}:{}", ip.key());
    match limit(&s, "anonymous_ip", None, &key).await {
        Ok(d) => run_limited(d, req, next).await,
        Err(res) => res,
    }
}

/// Public routes (the contact form): `anonymous_ip` per client IP.
pub(crate) async fn public(State(s): State<AppState>, req: Request, next: Next) -> Response {
    per_ip(s, "form", req, next).await
}

/// Public auth routes: the CSRF check, then `anonymous_ip` per client IP, in a bucket
/// apart from the contact form's.
pub(crate) async fn public_auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(p) = csrf(&s, &req) {
        return p.into_response();
    }
    per_ip(s, "auth", req, next).await
}

/// Inbound webhooks: the `inbound` policy per client IP.
#[cfg(any(feature = "whatsapp", feature = "calcom"))]
pub(crate) async fn inbound(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let ip = client_ip(&s, &req);
    match limit(&s, "inbound", Some(s.cfg.inbound_policy), &ip.key()).await {
        Ok(d) => run_limited(d, req, next).await,
        Err(res) => res,
    }
}

fn bearer(h: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || -> ApiError {
        Problem::field(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authorization",
            "must be `Bearer <API key>`",
        )
        .into()
    };
    let v = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let (scheme, key) = v.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(missing());
    }
    Ok(key.trim())
}

/// API routes: the key, then `api_key` per key, then idempotency for mutations.
pub(crate) async fn api_key(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let key = match bearer(req.headers()) {
        Ok(k) => k,
        Err(p) => return with_challenge(p.into_response()),
    };
    let verified = match s.crm.verify_api_key(key).await {
        Ok(v) => v,
        Err(e) => return with_challenge(problem_of(&e).into_response()),
    };
    let d = match limit(&s, "api_key", None, &verified.key_id.to_string()).await {
        Ok(d) => d,
        Err(res) => return res,
    };
    req.extensions_mut().insert(ApiKey(verified.clone()));
    let mut res = match idempotency_key(&req) {
        Some(idem) => {
            let scope = verified.key_id.to_string();
            idempotent(&s, verified.workspace_id, &scope, idem, req, next).await
        }
        None => next.run(req).await,
    };
    set_rate_headers(res.headers_mut(), &d);
    res
}

/// The idempotency key of a mutation (`POST`, `PUT`, `PATCH`, `DELETE`):
/// `Idempotency-Key`, or its alias `X-Idempotency-Key`. `None` for reads, for
/// requests without one, and for `POST …/imports` and `POST …/attachments` (see
/// `routes::imports`, `routes::attachments`).
fn idempotency_key(req: &Request) -> Option<String> {
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return None;
    }
    // An import's or an upload's body is a file too large to fingerprint; sending
    // an import again is safe, an upload again stores a second file.
    let path = req.uri().path();
    if path.ends_with("/imports") || path.ends_with("/attachments") {
        return None;
    }
    let h = req.headers();
    let v = h
        .get("idempotency-key")
        .or_else(|| h.get("x-idempotency-key"))?;
    // A value that is not text is checked (and refused) by the store, as an empty key.
    Some(v.to_str().unwrap_or("").to_owned())
}

fn with_challenge(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// Runs a mutation under its idempotency key, in `scope` (the API key, or the
/// signed-in user) of workspace `ws`: a replay answers the stored response, a
/// different request with the key 422, one while the first runs 409. Responses under
/// 500 (except 429, 401 and 403) are stored; anything else gives the claim up so a
/// retry runs. A
/// stored response never holds a secret: a top-level `secret` (a key or an endpoint
/// made or rotated, shown once) is stored, and replayed, as `null`.
async fn idempotent(
    s: &AppState,
    ws: crm_core::WorkspaceId,
    scope: &str,
    idem: String,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, s.cfg.json_limit).await {
        Ok(b) => b,
        Err(e) => {
            if let Some(p) = crate::extract::body_timed_out(&e) {
                return p.into_response();
            }
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body must be at most {} bytes", s.cfg.json_limit),
            )
            .into_response();
        }
    };
    let store = s.crm.workspace(ws).idempotency();
    // The query too, when there is one: a mutation's outcome may depend on it
    // (`DELETE /leads/{id}?confirm=true`), so a retry that adds it is another request.
    // Requests without one keep the fingerprint they always had.
    let mut fingerprint = vec![
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        &bytes,
    ];
    if let Some(q) = parts.uri.query() {
        fingerprint.push(q.as_bytes());
    }
    match store.claim(scope, &idem, &fingerprint).await {
        Err(e) => return problem_of(&e).into_response(),
        Ok(Claim::Mismatch) => {
            return Problem::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency-Key",
                "was used with a different request",
            )
            .into_response()
        }
        Ok(Claim::InFlight) => {
            return Problem::field(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                "Idempotency-Key",
                "a request with this key is still running",
            )
            .into_response()
        }
        Ok(Claim::Replay { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut res = (status, body).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(if status.is_success() {
                    "application/json"
                } else {
                    crate::problem::PROBLEM_JSON
                }),
            );
            res.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return res;
        }
        Ok(Claim::New) => {}
    }
    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = res.status();
    let (rparts, rbody) = res.into_parts();
    // Handlers answer small JSON; a body that cannot be buffered is not kept.
    let stored = match to_bytes(rbody, 1 << 20).await {
        Ok(b) => b,
        Err(_) => {
            let _ = store.release(scope, &idem).await;
            return Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
            .into_response();
        }
    };
    // Not kept: failures a retry may not meet (5xx, 429), and refusals of who asked
    // (401, 403) that a key given a scope or a user given a role later must not
    // keep getting.
    let keep = status.as_u16() < 500
        && !matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        );
    let text = std::str::from_utf8(&stored).ok().map(without_secret);
    let outcome = match (keep, text) {
        (true, Some(t)) => store.complete(scope, &idem, status.as_u16(), &t).await,
        _ => store.release(scope, &idem).await,
    };
    if let Err(e) = outcome {
        tracing::error!(error = %crm_core::error::Chain(&e), "could not record an idempotency key");
    }
    Response::from_parts(rparts, Body::from(stored))
}

/// The response as stored for replay: a JSON object's top-level `secret` as `null`.
fn without_secret(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut o)) if o.get("secret").is_some_and(|v| !v.is_null()) => {
            o.insert("secret".into(), serde_json::Value::Null);
            serde_json::Value::Object(o).to_string()
        }
        _ => body.to_owned(),
    }
}

/// The session cookie's value, if the request carries one.
pub(crate) fn session_token<'a>(s: &AppState, h: &'a HeaderMap) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == s.cfg.cookie_name)
        .map(|(_, v)| v)
}

/// Session routes: the cookie, the CSRF check for state-changing methods, the
/// `session` policy per user, then idempotency for mutations (scoped per user).
pub(crate) async fn session(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = session_token(&s, req.headers()) else {
        return Problem::field(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Cookie",
            "sign in first: no session cookie",
        )
        .into_response();
    };
    let user = match s.crm.authenticate_session(token).await {
        Ok(u) => u,
        Err(e) => return problem_of(&e).into_response(),
    };
    if let Err(p) = csrf(&s, &req) {
        return p.into_response();
    }
    let d = match limit(
        &s,
        "session",
        Some(s.cfg.session_policy),
        &user.user.id.to_string(),
    )
    .await
    {
        Ok(d) => d,
        Err(res) => return res,
    };
    let idem = idempotency_key(&req);
    let (ws, scope) = (user.user.workspace_id, format!("user:{}", user.user.id));
    req.extensions_mut().insert(SessionUser(user));
    let mut res = match idem {
        Some(idem) => idempotent(&s, ws, &scope, idem, req, next).await,
        None => next.run(req).await,
    };
    set_rate_headers(res.headers_mut(), &d);
    res
}

/// Refuses a state-changing request that neither comes from an allowed (or the same)
/// origin nor carries the CSRF header.
pub(crate) fn csrf(s: &AppState, req: &Request) -> Result<(), ApiError> {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let h = req.headers();
    if h.contains_key(CSRF_HEADER) {
        return Ok(());
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        if s.cfg.allowed_origins.iter().any(|o| o == origin) {
            return Ok(());
        }
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        if host.is_some() && origin_host == host {
            return Ok(());
        }
    }
    Err(Problem::field(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "Origin",
        "a state-changing request must come from an allowed origin or carry X-CRM-CSRF",
    )
    .into())
}
