//! The admin web app under `/admin` (feature `ui`): server-rendered HTML from `maud`
//! (every value escaped), one stylesheet and one small script compiled into the
//! binary, and no page that needs the script: forms post and the server answers with
//! a page or a redirect (post/redirect/get). The script only asks before a
//! destructive button and copies a secret.
//!
//! The same guards as the session API: the session cookie (a page without one, or
//! with an expired one, redirects to the sign-in page, which returns to the page
//! asked for), the CSRF check on every POST (an allowed or same-host `Origin`), the
//! `session` rate limit per user, and the admin role for the admin pages (a member
//! gets a 403 page). Every change goes through the same service call as its API
//! route, so the services' own rules (roles, tenants) apply here too; a refusal is a
//! page, field errors sit next to their fields and the form keeps what was typed.
//!
//! Every page carries `Content-Security-Policy: default-src 'self'` (no inline script
//! or style runs), `frame-ancestors 'none'`, `no-store` and `nosniff`. Served under
//! whatever prefix the router is nested at: links are built from the request's
//! original URI. Not in the OpenAPI document.

use std::fmt::Write as _;

use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use crm_core::auth::SessionUser;
use crm_core::{Error, FieldError};
use maud::{html, Markup, DOCTYPE};

use crate::pages::html_response;
use crate::problem::problem_of;
use crate::{guard, AppState};

mod admin;
mod leads;

const CSS: &str = include_str!("../../assets/app.css");
const JS: &str = include_str!("../../assets/app.js");

/// The web app's routes (relative to the router's root).
pub(crate) fn router(s: &AppState) -> Router<AppState> {
    let signed_in = Router::new()
        .route("/admin", get(leads::dashboard))
        .route("/admin/leads", get(leads::list).post(leads::create))
        .route("/admin/leads/new", get(leads::new_form))
        .route("/admin/leads/parse", post(leads::parse))
        .route("/admin/leads/{id}", get(leads::detail).post(leads::edit))
        .route("/admin/leads/{id}/status", post(leads::status))
        .route("/admin/leads/{id}/activities", post(leads::add_note))
        .route("/admin/leads/{id}/messages", post(leads::send_message))
        .route("/admin/leads/{id}/delete", post(leads::delete))
        .route("/admin/leads/{id}/archive", post(leads::archive))
        .route("/admin/leads/{id}/restore", post(leads::restore))
        .merge(admin::router())
        .route_layer(from_fn_with_state(s.clone(), session));
    let sign_in = Router::new()
        .route("/admin/login", post(login_submit))
        .route("/admin/logout", post(logout))
        .route("/admin/forgot-password", post(forgot_submit))
        .route_layer(from_fn_with_state(s.clone(), guard::public_auth));
    Router::new()
        .route("/admin/login", get(login_page))
        .route("/admin/forgot-password", get(forgot_page))
        .route("/admin/assets/app.css", get(css))
        .route("/admin/assets/app.js", get(js))
        .merge(sign_in)
        .merge(signed_in)
}

// ------------------------------------------------------------------ the context

/// Where the router is mounted (`""` at the root, `/crm` when nested there), read
/// from the original URI, so that links and redirects work under any prefix.
#[derive(Clone, Debug, Default)]
pub(crate) struct Base(String);

impl Base {
    fn of(req_path: &str, original: Option<&OriginalUri>) -> Self {
        let full = original.map_or(req_path, |o| o.0.path());
        let prefix = full.strip_suffix(req_path).unwrap_or("");
        // A prefix is a path of the host app's own: never one that a browser would
        // read as another host (`//host`, `/\host`).
        let sound = prefix.starts_with('/')
            && !prefix.starts_with("//")
            && !prefix.ends_with('/')
            && prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
        Self(if sound {
            prefix.to_owned()
        } else {
            String::new()
        })
    }

    /// The address of a path of the app (`/admin/leads`) under the prefix.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(b) = parts.extensions.get::<Base>() {
            return Ok(b.clone());
        }
        Ok(Base::of(
            parts.uri.path(),
            parts.extensions.get::<OriginalUri>(),
        ))
    }
}

/// A signed-in user and where the app is mounted: what every signed-in page needs.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) base: Base,
    pub(crate) user: SessionUser,
}

impl Ctx {
    pub(crate) fn url(&self, path: &str) -> String {
        self.base.url(path)
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.user.user.role.is_admin()
    }

    /// The workspace of the signed-in user.
    pub(crate) fn ws(&self, s: &AppState) -> crm_core::Workspace {
        s.crm.workspace(self.user.user.workspace_id)
    }

    /// What the audit log and the services record as the actor.
    pub(crate) fn actor(&self) -> String {
        format!("user:{}", self.user.user.id)
    }

    /// Refuses a member: the admin pages are for admins and owners.
    pub(crate) fn require_admin(&self) -> Result<(), Error> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())
    }
}

/// The session guard of the signed-in pages: the cookie (else a redirect to the
/// sign-in page that comes back here), the CSRF check for POSTs, the `session`
/// rate limit per user.
async fn session(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let base = Base::of(req.uri().path(), req.extensions().get::<OriginalUri>());
    let token = guard::session_token(&s, req.headers()).map(str::to_owned);
    let user = match token {
        None => return to_sign_in(&base, &req),
        Some(t) => match s.crm.authenticate_session(&t).await {
            Ok(u) => u,
            Err(Error::Unauthorized { .. }) => return to_sign_in(&base, &req),
            Err(e) => return error_page(&base, None, &e),
        },
    };
    if guard::csrf(&s, &req).is_err() {
        let body = html! { p { "A form must be sent from a page of this site. Go back, reload the page and send it again." } };
        return bare(StatusCode::FORBIDDEN, "This form was refused", &base, body);
    }
    let key = user.user.id.to_string();
    if let Err(res) = guard::limit(&s, "session", Some(s.cfg.session_policy), &key).await {
        // A refusal (429), or the limiter's store failing (its problem's status).
        let (title, says) = if res.status() == StatusCode::TOO_MANY_REQUESTS {
            (
                "Slow down",
                "Too many requests. Wait a moment and try again.",
            )
        } else {
            (
                "Something went wrong",
                "The request could not be checked. Please try again in a moment.",
            )
        };
        let body = html! { p { (says) } };
        let mut page = bare(res.status(), title, &base, body);
        if let Some(v) = res.headers().get(header::RETRY_AFTER) {
            page.headers_mut().insert(header::RETRY_AFTER, v.clone());
        }
        return page;
    }
    req.extensions_mut().insert(base.clone());
    req.extensions_mut().insert(Ctx { base, user });
    next.run(req).await
}

/// The redirect to the sign-in page, with the page to come back to: this one for a
/// GET, the page the form was on (the path of its `Referer`, held to the rules of
/// any `next`) for a POST.
fn to_sign_in(base: &Base, req: &Request) -> Response {
    let here = if req.method() == Method::GET {
        let q = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        Some(format!("{}{q}", req.uri().path()))
    } else {
        req.headers()
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
            .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
            .and_then(|p| p.strip_prefix(base.0.as_str()))
            .map(str::to_owned)
    };
    let next = here
        .filter(|p| safe_next(p))
        .unwrap_or_else(|| "/admin".into());
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", &next)
        .finish();
    redirect(&base.url(&format!("/admin/login?{query}")))
}

/// Whether `next` is a page of the app to return to: under `/admin`, printable ASCII
/// (so always a valid `Location`), never another origin (`//host`, `/\host`), no
/// `.` or `..` segment and no escape in the path (`%2e%2e` is one to a browser),
/// not the sign-in or sign-out address.
fn safe_next(next: &str) -> bool {
    let path = next.split_once('?').map_or(next, |(p, _)| p);
    (path == "/admin" || path.starts_with("/admin/"))
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && !next.contains("//")
        && !path.contains('%')
        && !path.split('/').any(|seg| seg == ".." || seg == ".")
        && !path.starts_with("/admin/login")
        && !path.starts_with("/admin/logout")
}

/// A 303 to `location` (an address this app built from its own paths, ids and
/// URL-encoded queries: always a valid header; were it not, a 500, never a 303
/// without a `Location`).
pub(crate) fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut res = StatusCode::SEE_OTHER.into_response();
            res.headers_mut().insert(header::LOCATION, v);
            res
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The words of a notice named in a redirect's query (`?notice=saved`): only these,
/// so an address cannot put words of its own on a page.
pub(crate) fn notice_text(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "created" => "Created.",
        "saved" => "Saved.",
        "deleted" => "Deleted.",
        "status" => "The status was changed.",
        "note" => "Added to the timeline.",
        "sent" => "The message was sent.",
        "archived" => "Archived: the lead is left out of the lists until it is restored.",
        "restored" => "Restored to the lists.",
        "revoked" => "The key was revoked.",
        "queued" => "Queued: the delivery shows below once it is made.",
        "test_queued" => "A test notification was queued.",
        "sessions" => "Every session of the user was ended.",
        _ => return None,
    })
}

/// `?notice=` of a page (see [`notice_text`]).
#[derive(serde::Deserialize, Default)]
pub(crate) struct NoticeQuery {
    #[serde(default)]
    notice: Option<String>,
}

impl NoticeQuery {
    /// The notice's words, if it names one.
    pub(crate) fn text(&self) -> Option<&'static str> {
        notice_text(self.notice.as_deref())
    }
}

/// An id in a page's path; anything that is not a UUID is the 404 page of `entity`
/// (as an unknown id is).
pub(crate) fn uuid_of<T: From<uuid::Uuid>>(
    ctx: &Ctx,
    raw: &str,
    entity: &'static str,
) -> Result<T, PageError> {
    raw.parse::<uuid::Uuid>()
        .map(T::from)
        .map_err(|_| Error::NotFound { entity })
        .or_page(ctx)
}

/// Text trimmed; `None` when blank.
pub(crate) fn opt(v: &str) -> Option<String> {
    let t = v.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

// ------------------------------------------------------------------ the pages

fn head(base: &Base, title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="robots" content="noindex";
            title { (title) " · crm" }
            link rel="stylesheet" href=(base.url("/admin/assets/app.css"));
            script src=(base.url("/admin/assets/app.js")) defer {}
        }
    }
}

/// A page without the navigation (sign-in, errors before a session is known).
pub(crate) fn bare(status: StatusCode, title: &str, base: &Base, body: Markup) -> Response {
    html_response(
        status,
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(base, title))
                body class="bare" {
                    main id="main" {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        },
    )
}

/// Which entry of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Dashboard,
    Leads,
    NewLead,
    Keys,
    Webhooks,
    Notifications,
    Users,
    Settings,
    Audit,
    None,
}

/// A signed-in page: the navigation (the admin entries for admins only), the user
/// and the sign-out button, a notice if any, then `body`.
pub(crate) fn layout(
    ctx: &Ctx,
    status: StatusCode,
    nav: Nav,
    title: &str,
    notice: Option<&str>,
    body: Markup,
) -> Response {
    let item = |n: Nav, path: &str, label: &str| {
        html! {
            li { a href=(ctx.url(path)) aria-current=[(n == nav).then_some("page")] { (label) } }
        }
    };
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            (head(&ctx.base, title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    a class="brand" href=(ctx.url("/admin")) { "crm" }
                    nav aria-label="Main" {
                        ul {
                            (item(Nav::Dashboard, "/admin", "Dashboard"))
                            (item(Nav::Leads, "/admin/leads", "Leads"))
                            (item(Nav::NewLead, "/admin/leads/new", "New lead"))
                            @if ctx.is_admin() {
                                (item(Nav::Keys, "/admin/api-keys", "API keys"))
                                (item(Nav::Webhooks, "/admin/webhooks", "Webhooks"))
                                (item(Nav::Notifications, "/admin/notifications", "Notifications"))
                                (item(Nav::Users, "/admin/users", "Users"))
                                (item(Nav::Settings, "/admin/settings", "Settings"))
                                (item(Nav::Audit, "/admin/audit", "Audit log"))
                            }
                        }
                    }
                    form class="signout" method="post" action=(ctx.url("/admin/logout")) {
                        span class="who" { (ctx.user.user.email.as_str()) " · " (ctx.user.user.role.as_str()) }
                        button type="submit" id="sign-out" { "Sign out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    @if let Some(n) = notice {
                        p class="notice" role="status" { (n) }
                    }
                    (body)
                }
            }
        }
    };
    html_response(status, doc)
}

/// The page of a refusal or failure: 403 for a member on an admin page, 404 for
/// what is not in the workspace, the API's status and words for the rest.
pub(crate) fn error_page(base: &Base, ctx: Option<&Ctx>, e: &Error) -> Response {
    let p = problem_of(e);
    let status = problem_status(e);
    let (title, says) = match e {
        Error::Forbidden => (
            "Not allowed",
            "Your role does not allow this page. Ask an admin of the workspace.".to_owned(),
        ),
        Error::NotFound { entity } => ("Not found", format!("No such {entity} in this workspace.")),
        Error::RateLimited { .. } => (
            "Slow down",
            "Too many requests. Wait a moment and try again.".to_owned(),
        ),
        _ => ("Something went wrong", p.detail.unwrap_or_default()),
    };
    let body = html! {
        p { (says) }
        p { a href=(base.url("/admin")) { "Back to the dashboard" } }
    };
    match ctx {
        Some(c) => layout(c, status, Nav::None, title, None, body),
        None => bare(status, title, base, body),
    }
}

/// The result of a page handler: a page, or the error page of what failed.
pub(crate) type PageResult = Result<Response, PageError>;

/// A failure of a signed-in page, rendered by [`error_page`].
pub(crate) struct PageError(Box<(Ctx, Error)>);

impl PageError {
    pub(crate) fn new(ctx: Ctx, e: Error) -> Self {
        Self(Box::new((ctx, e)))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (ctx, e) = *self.0;
        error_page(&ctx.base, Some(&ctx), &e)
    }
}

/// `ctx.fail(e)`: the error page of `e` for this user.
pub(crate) trait OrPage<T> {
    fn or_page(self, ctx: &Ctx) -> Result<T, PageError>;
}

impl<T> OrPage<T> for Result<T, Error> {
    fn or_page(self, ctx: &Ctx) -> Result<T, PageError> {
        self.map_err(|e| PageError::new(ctx.clone(), e))
    }
}

// ------------------------------------------------------------------ forms

/// An `application/x-www-form-urlencoded` body as its pairs (a field may repeat:
/// checkboxes). Bounded by the router's body limit.
pub(crate) struct FormData(Vec<(String, String)>);

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = Response;

    async fn from_request(req: Request, s: &S) -> Result<Self, Response> {
        let bytes = axum::body::Bytes::from_request(req, s)
            .await
            .map_err(IntoResponse::into_response)?;
        // Browsers send every line break of a form as CRLF; stored text has LF.
        Ok(Self(
            form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.replace("\r\n", "\n")))
                .collect(),
        ))
    }
}

impl FormData {
    /// The first value of `name`, as sent (`""` when absent).
    pub(crate) fn text(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub(crate) fn opt(&self, name: &str) -> Option<String> {
        opt(&self.text(name))
    }

    /// Every value of `name` (checkboxes).
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether a checkbox `name` was checked.
    pub(crate) fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// The field errors of a refused form, by field; what matches no field of the form
/// is shown above it.
#[derive(Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    /// The errors of a service's refusal; `None` when it is not about fields (the
    /// caller shows the error page).
    pub(crate) fn of(e: &Error) -> Option<Self> {
        match e {
            Error::Validation { errors } => Some(Self(errors.clone())),
            Error::Conflict {
                field: Some(f),
                message,
                ..
            } => Some(Self(vec![FieldError::new(*f, message.clone())])),
            Error::Conflict { message, .. } | Error::InvalidState { message, .. } => {
                Some(Self(vec![FieldError::new("", message.clone())]))
            }
            Error::Provider(m) => Some(Self(vec![FieldError::new(
                "",
                format!("The provider refused: {m}"),
            )])),
            _ => None,
        }
    }

    /// One error on `field`.
    pub(crate) fn one(field: &str, message: &str) -> Self {
        Self(vec![FieldError::new(field, message)])
    }

    /// The message(s) of `field` (and of its items: `tags[2]`, `custom.score`).
    pub(crate) fn on(&self, field: &str) -> Option<String> {
        let found: Vec<&str> = self
            .0
            .iter()
            .filter(|e| belongs(&e.field, field))
            .map(|e| e.message.as_str())
            .collect();
        (!found.is_empty()).then(|| found.join("; "))
    }

    /// The errors that are not about any of `fields`, as a list above the form.
    pub(crate) fn rest(&self, fields: &[&str]) -> Markup {
        let rest: Vec<&FieldError> = self
            .0
            .iter()
            .filter(|e| !fields.iter().any(|f| belongs(&e.field, f)))
            .collect();
        html! {
            @if !rest.is_empty() {
                div class="errors" role="alert" {
                    ul {
                        @for e in rest {
                            li {
                                @if !e.field.is_empty() { code { (e.field) } ": " }
                                (e.message)
                            }
                        }
                    }
                }
            }
        }
    }
}

fn belongs(error_field: &str, field: &str) -> bool {
    error_field == field
        || error_field
            .strip_prefix(field)
            .is_some_and(|r| r.starts_with('[') || r.starts_with('.'))
}

/// The kind of input a [`field`] draws. The password kinds tell a password manager
/// what it may do: fill in the user's own password (sign-in only), or nothing (a new
/// user's first password, a provider's secret).
#[derive(Clone, Copy)]
pub(crate) enum Input {
    Text,
    Email,
    /// The sign-in email (`autocomplete="username"`).
    Username,
    Tel,
    Url,
    /// The user's own password (`autocomplete="current-password"`).
    Password,
    /// Any other secret (`autocomplete="new-password"`: never filled in).
    NewPassword,
    Area(u8),
}

/// A labelled input with its value and, when refused, its error next to it (tied to
/// it for screen readers).
pub(crate) fn field(
    name: &str,
    label: &str,
    input: Input,
    value: &str,
    errors: &Errors,
    required: bool,
) -> Markup {
    field_id(
        &format!("f-{name}"),
        name,
        label,
        input,
        value,
        errors,
        required,
    )
}

/// A [`field`] with an element id of its own (for a page with two fields of one name).
pub(crate) fn field_id(
    id: &str,
    name: &str,
    label: &str,
    input: Input,
    value: &str,
    errors: &Errors,
    required: bool,
) -> Markup {
    let error = errors.on(name);
    let error_id = format!("{id}-error");
    let invalid = error.as_ref().map(|_| "true");
    let described = error.as_ref().map(|_| error_id.as_str());
    let (kind, autocomplete) = match input {
        Input::Text | Input::Area(_) => ("text", None),
        Input::Email => ("email", None),
        Input::Username => ("email", Some("username")),
        Input::Tel => ("tel", None),
        Input::Url => ("url", None),
        Input::Password => ("password", Some("current-password")),
        Input::NewPassword => ("password", Some("new-password")),
    };
    html! {
        div class={ "field" @if error.is_some() { " invalid" } } {
            label for=(id) { (label) @if required { " " abbr title="required" { "*" } } }
            @if let Input::Area(rows) = input {
                textarea id=(id) name=(name) rows=(rows) required[required]
                    aria-invalid=[invalid] aria-describedby=[described] { (value) }
            } @else {
                input id=(id) name=(name) type=(kind) value=(value) required[required]
                    autocomplete=[autocomplete] aria-invalid=[invalid] aria-describedby=[described];
            }
            @if let Some(m) = &error {
                span class="error" id=(error_id) { (m) }
            }
        }
    }
}

/// A button that posts to `action` (with `confirm`, the script asks first).
pub(crate) fn post_button(action: &str, label: &str, confirm: Option<&str>, class: &str) -> Markup {
    html! {
        form class="inline" method="post" action=(action) data-confirm=[confirm] {
            button type="submit" class=(class) { (label) }
        }
    }
}

/// A date and time as people read it (UTC).
pub(crate) fn when(t: &DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M")) } }
}

/// An optional date and time, or a dash.
pub(crate) fn when_opt(t: Option<&DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => when(t),
        None => html! { "—" },
    }
}

/// A secret shown the one time it exists, with the words that say so.
pub(crate) fn secret_box(what: &str, secret: &str) -> Markup {
    html! {
        div class="secret" role="status" {
            p { strong { "Copy the " (what) " now." } " It is shown this once and cannot be shown again (reloading this page would make another one)." }
            p { code id="secret" { (secret) } " " button type="button" class="copy" data-copy="secret" hidden { "Copy" } }
        }
    }
}

// ------------------------------------------------------------------ sign-in

#[derive(serde::Deserialize, Default)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

async fn login_page(
    base: Base,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Response {
    let next = q
        .next
        .filter(|n| safe_next(n))
        .unwrap_or_else(|| "/admin".into());
    login_form(&base, StatusCode::OK, &next, "", &Errors::default(), None)
}

fn login_form(
    base: &Base,
    status: StatusCode,
    next: &str,
    email: &str,
    errors: &Errors,
    choose: Option<&[crm_core::auth::WorkspaceChoice]>,
) -> Response {
    let body = html! {
        (errors.rest(&["email", "password", "workspace_id"]))
        form method="post" action=(base.url("/admin/login")) class="card" {
            input type="hidden" name="next" value=(next);
            (field("email", "Email", Input::Username, email, errors, true))
            (field("password", "Password", Input::Password, "", errors, true))
            @if let Some(choices) = choose {
                fieldset {
                    legend { "This email has accounts in several workspaces: choose one and enter the password again." }
                    @for (i, c) in choices.iter().enumerate() {
                        label class="check" {
                            input type="radio" name="workspace_id" value=(c.id.to_string()) required checked[i == 0];
                            " " (c.name)
                        }
                    }
                }
            }
            label class="check" { input type="checkbox" name="remember_me" value="1"; " Keep me signed in for 30 days" }
            button type="submit" id="sign-in" { "Sign in" }
        }
        p { a href=(base.url("/admin/forgot-password")) { "Forgot your password?" } }
    };
    bare(status, "Sign in", base, body)
}

async fn login_submit(
    State(s): State<AppState>,
    base: Base,
    ip: crate::ClientIp,
    headers: axum::http::HeaderMap,
    form: FormData,
) -> Response {
    let next = form
        .opt("next")
        .filter(|n| safe_next(n))
        .unwrap_or_else(|| "/admin".into());
    let email = form.text("email");
    let login = crm_core::auth::Login {
        email: email.clone(),
        password: form.text("password"),
        remember_me: form.checked("remember_me"),
        ip: ip.0,
        user_agent: crate::routes::auth::user_agent(&headers),
    };
    let workspace = match form.opt("workspace_id").map(|w| w.parse::<uuid::Uuid>()) {
        None => None,
        Some(Ok(u)) => Some(crm_core::WorkspaceId::from(u)),
        Some(Err(_)) => {
            let errors = Errors::one("workspace_id", "choose one of the workspaces");
            return login_form(
                &base,
                StatusCode::UNPROCESSABLE_ENTITY,
                &next,
                &email,
                &errors,
                None,
            );
        }
    };
    let done = match crate::routes::auth::sign_in(&s, workspace, login).await {
        Ok(crm_core::auth::SignIn::SignedIn(done)) => Ok(*done),
        Ok(crm_core::auth::SignIn::ChooseWorkspace(choices)) => {
            let errors = Errors::default();
            return login_form(
                &base,
                StatusCode::OK,
                &next,
                &email,
                &errors,
                Some(&choices),
            );
        }
        Err(e) => Err(e),
    };
    let bad = StatusCode::UNPROCESSABLE_ENTITY;
    match done {
        Ok(done) => {
            let mut res = redirect(&base.url(&next));
            let cookie = crate::routes::auth::session_cookie(&s, &done);
            res.headers_mut().insert(header::SET_COOKIE, cookie);
            res
        }
        Err(Error::Validation { errors }) => {
            login_form(&base, bad, &next, &email, &Errors(errors), None)
        }
        Err(Error::Unauthorized { .. }) => {
            let errors = Errors::one("password", "the email or the password is wrong");
            login_form(
                &base,
                StatusCode::UNAUTHORIZED,
                &next,
                &email,
                &errors,
                None,
            )
        }
        Err(Error::RateLimited { retry_after }) => {
            let mut m = String::from("too many attempts; try again in ");
            let _ = write!(m, "{} s", crate::problem::retry_secs(retry_after));
            let errors = Errors::one("", &m);
            login_form(
                &base,
                StatusCode::TOO_MANY_REQUESTS,
                &next,
                &email,
                &errors,
                None,
            )
        }
        Err(e) => error_page(&base, None, &e),
    }
}

fn forgot_form(base: &Base, status: StatusCode, email: &str, errors: &Errors) -> Response {
    let body = html! {
        p { "Enter the email you sign in with: a link to choose a new password is mailed to it." }
        (errors.rest(&["email"]))
        form method="post" action=(base.url("/admin/forgot-password")) class="card" {
            (field("email", "Email", Input::Username, email, errors, true))
            button type="submit" id="send-reset" { "Mail me a link" }
        }
        p { a href=(base.url("/admin/login")) { "Back to sign in" } }
    };
    bare(status, "Forgot your password?", base, body)
}

async fn forgot_page(base: Base) -> Response {
    forgot_form(&base, StatusCode::OK, "", &Errors::default())
}

/// `POST /admin/forgot-password`: mails a reset link to the email's accounts (the
/// link opens `/auth/reset-password`). The answer is the same whether or not an
/// account has the email; a malformed email is said next to the field.
async fn forgot_submit(State(s): State<AppState>, base: Base, form: FormData) -> Response {
    let email = form.text("email");
    match s.crm.request_password_reset(&email).await {
        Ok(()) => bare(
            StatusCode::ACCEPTED,
            "Check your mail",
            &base,
            html! {
                p { "If an account has this email, a link to choose a new password is on its way. It works for a short while and once." }
                p { a href=(base.url("/admin/login")) { "Back to sign in" } }
            },
        ),
        Err(Error::Validation { errors }) => forgot_form(
            &base,
            StatusCode::UNPROCESSABLE_ENTITY,
            &email,
            &Errors(errors),
        ),
        Err(e) => error_page(&base, None, &e),
    }
}

/// Signs out: ends the session (an expired one is signed out already), clears the
/// cookie, back to the sign-in page. Outside the session guard, like the API's
/// sign-out: a user whose session ran out, or who is over the session rate limit,
/// can still clear the cookie.
async fn logout(State(s): State<AppState>, base: Base, headers: axum::http::HeaderMap) -> Response {
    match crate::routes::auth::sign_out(&s, &headers).await {
        Ok(clear) => {
            let mut res = redirect(&base.url("/admin/login"));
            res.headers_mut().insert(header::SET_COOKIE, clear);
            res
        }
        Err(e) => error_page(&base, None, &e),
    }
}

// ------------------------------------------------------------------ assets

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

/// The HTTP status the API answers for `e`.
pub(crate) fn problem_status(e: &Error) -> StatusCode {
    StatusCode::from_u16(problem_of(e).status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
