//! Sign-in with an OpenID Connect provider (feature `oidc`), two browser routes
//! under `/api/auth/oidc/{workspace_id}/{provider}`:
//! - `GET …` starts a sign-in: a 303 to the provider, and a short-lived cookie
//!   holding the sign-in's `state`, so that the callback is only taken from the
//!   browser that started it (a link to the callback with someone else's code
//!   signs nobody in). Only from this site's own pages or a typed address
//!   (`Sec-Fetch-Site` `same-origin` or `none`, when the browser sends it): another
//!   site cannot sign a visitor in to an account of its choosing.
//! - `GET …/callback` finishes it: the session cookie and a 303 to the `return_to`
//!   path asked at the start (`/` without one), or a problem (401 with the reason)
//!   and no session. Each provider has its own callback URL, and a sign-in is only
//!   finished by its own (a code one provider issued is never sent to another).
//!
//! They are browser routes (redirects and cookies), like the sign-in pages, so
//! they are not operations of the JSON API's OpenAPI document.
//!
//! The callback URLs start with [`crate::Config::oidc_base_url`] (register
//! `{base}/api/auth/oidc/{workspace_id}/{provider}/callback` at the provider);
//! without it both routes answer 503.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_core::oidc::{OidcCallback, OidcStartInput};
use crm_core::{AuthFailure, Error, WorkspaceId};
use serde::Deserialize;

use super::auth::{session_cookie, user_agent};
use crate::extract::{ClientIp, Query};
use crate::problem::{ApiResult, Problem};
use crate::AppState;

/// How long the state cookie lives: the sign-in's own lifetime.
const STATE_COOKIE_AGE: u64 = crm_core::oidc::LOGIN_TTL.as_secs();

/// Query of the start route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartParams {
    /// Where to go once signed in: a path on this site (`/leads`).
    #[serde(default)]
    return_to: Option<String>,
    /// A 30-day session instead of 24 hours.
    #[serde(default)]
    remember_me: bool,
}

/// Query of the callback, as the provider sends it.
#[derive(Deserialize)]
pub(crate) struct CallbackParams {
    /// The sign-in's state.
    #[serde(default)]
    state: String,
    /// The authorization code.
    #[serde(default)]
    code: Option<String>,
    /// The provider's error (`access_denied` when the user declined).
    #[serde(default)]
    error: Option<String>,
}

fn state_cookie_name(s: &AppState) -> String {
    format!("{}_oidc", s.cfg.cookie_name)
}

fn state_cookie(s: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}",
        state_cookie_name(s)
    );
    if s.cfg.cookie_secure {
        c.push_str("; Secure");
    }
    // The value is base64url and the name the configured one: a valid header.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The provider's callback URL, registered at the provider.
fn callback_url(s: &AppState, ws: WorkspaceId, provider: &str) -> Result<String, Error> {
    let base = s.cfg.oidc_base.as_deref().ok_or_else(|| {
        Error::Config("OIDC sign-in needs Config::oidc_base_url (CRM_PUBLIC_URL)".into())
    })?;
    // Provider names are 1-32 of a-z, 0-9 and -: anything else names none.
    let named = !provider.is_empty()
        && provider.len() <= 32
        && provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !named {
        return Err(Error::NotFound {
            entity: "sign-in provider",
        });
    }
    Ok(format!("{base}/api/auth/oidc/{ws}/{provider}/callback"))
}

fn see_other(location: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Start a sign-in with one of the workspace's OpenID Connect providers: a 303
/// to the provider, with a cookie holding the sign-in's state (10 minutes).
pub(crate) async fn start(
    State(s): State<AppState>,
    Path((ws, provider)): Path<(WorkspaceId, String)>,
    headers: HeaderMap,
    Query(q): Query<StartParams>,
) -> ApiResult<Response> {
    let redirect_uri = callback_url(&s, ws, &provider)?;
    // A sign-in another site starts would sign the visitor in to whatever
    // account that site chose at a provider it runs (login CSRF).
    let site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if site.is_some_and(|v| v != b"same-origin" && v != b"none") {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "a sign-in starts from this site's own pages",
        )
        .into());
    }
    let started = s
        .crm
        .workspace(ws)
        .oidc()
        .start(
            &provider,
            OidcStartInput {
                redirect_uri,
                return_to: q.return_to,
                remember_me: q.remember_me,
            },
        )
        .await?;
    let mut res = see_other(&started.url);
    res.headers_mut().insert(
        header::SET_COOKIE,
        state_cookie(&s, started.state.expose(), STATE_COOKIE_AGE),
    );
    Ok(res)
}

/// The provider's callback: checks the state against the browser's cookie,
/// signs in (the session cookie is set) and answers a 303 to the `return_to`
/// path of the start (`/` without one); 401 with the reason otherwise.
pub(crate) async fn callback(
    State(s): State<AppState>,
    Path((ws, provider)): Path<(WorkspaceId, String)>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<CallbackParams>,
) -> ApiResult<Response> {
    callback_url(&s, ws, &provider)?;
    let name = state_cookie_name(&s);
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v);
    // Another browser's callback (a link with someone else's code) is refused
    // before the state is used up.
    if q.state.is_empty() || from_cookie != Some(q.state.as_str()) {
        return Err(Error::Unauthorized {
            reason: AuthFailure::OidcState,
        }
        .into());
    }
    let done = s
        .crm
        .oidc_finish(OidcCallback {
            workspace_id: ws,
            provider,
            state: q.state,
            code: q.code,
            error: q.error,
            ip: ip.0,
            user_agent: user_agent(&headers),
        })
        .await?;
    let mut res = see_other(done.return_to.as_deref().unwrap_or("/"));
    let h = res.headers_mut();
    h.append(header::SET_COOKIE, session_cookie(&s, &done.logged_in));
    h.append(header::SET_COOKIE, state_cookie(&s, "", 0));
    Ok(res)
}
