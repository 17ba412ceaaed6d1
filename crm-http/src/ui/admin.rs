//! The admin pages (admins and owners; a member gets the 403 page): API keys,
//! webhook endpoints with their deliveries, notification channels, users,
//! settings and integrations, the audit log.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use crm_core::api_keys::{NewApiKey, ACTIONS, RESOURCES};
use crm_core::auth::{Actor, NewUser, Role};
use crm_core::events::EventType;
use crm_core::notify::NewChannel;
use crm_core::webhooks::NewEndpoint;
use crm_core::{ApiKeyId, AuditId, ChannelId, EndpointId, Error, EventId, UserId};
use maud::{html, Markup};
use serde::Deserialize;

use super::{
    field, field_id, layout, post_button, redirect, secret_box, uuid_of, when, when_opt, Ctx,
    Errors, FormData, Input, Nav, NoticeQuery, OrPage, PageError, PageResult,
};
use crate::AppState;

/// The admin routes.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/api-keys", get(keys).post(create_key))
        .route("/admin/api-keys/{id}/rotate", post(rotate_key))
        .route("/admin/api-keys/{id}/revoke", post(revoke_key))
        .route("/admin/webhooks", get(endpoints).post(create_endpoint))
        .route("/admin/webhooks/{id}", get(endpoint))
        .route("/admin/webhooks/{id}/test", post(test_endpoint))
        .route("/admin/webhooks/{id}/rotate", post(rotate_endpoint))
        .route("/admin/webhooks/{id}/delete", post(delete_endpoint))
        .route("/admin/webhooks/{id}/resend/{event}", post(resend))
        .route("/admin/notifications", get(channels).post(create_channel))
        .route("/admin/notifications/{id}/test", post(test_channel))
        .route("/admin/notifications/{id}/delete", post(delete_channel))
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/{id}/role", post(set_role))
        .route("/admin/users/{id}/disable", post(disable_user))
        .route("/admin/users/{id}/enable", post(enable_user))
        .route("/admin/users/{id}/sessions", post(end_sessions))
        .route("/admin/settings", get(settings).post(rename))
        .route(
            "/admin/settings/integrations/{kind}",
            post(save_integration),
        )
        .route(
            "/admin/settings/integrations/{kind}/delete",
            post(delete_integration),
        )
        .route("/admin/audit", get(audit))
}

/// The admin check, first thing in every admin handler (the services check the
/// rules of roles again where they change data).
fn admin(ctx: &Ctx) -> Result<(), PageError> {
    ctx.require_admin().or_page(ctx)
}

/// A refusal the page shows above its form, or the error page.
fn shown(ctx: &Ctx, e: Error) -> Result<(StatusCode, Errors), PageError> {
    match Errors::of(&e) {
        Some(errors) => Ok((super::problem_status(&e), errors)),
        None => Err(PageError::new(ctx.clone(), e)),
    }
}

// ------------------------------------------------------------------ API keys

fn keys_page(
    ctx: &Ctx,
    status: StatusCode,
    list: &[crm_core::api_keys::ApiKey],
    form: Option<&FormData>,
    errors: &Errors,
    top: Markup,
    notice: Option<&str>,
) -> Response {
    let name = form.map(|f| f.text("name")).unwrap_or_default();
    let chosen = form.map(|f| f.all("scopes")).unwrap_or_default();
    let scopes: Vec<String> = std::iter::once("*".to_owned())
        .chain(
            RESOURCES
                .iter()
                .flat_map(|r| ACTIONS.iter().map(move |a| format!("{r}:{a}"))),
        )
        .collect();
    let body = html! {
        (top)
        section class="card" {
            h2 { "Create a key" }
            (errors.rest(&["name", "scopes"]))
            form method="post" action=(ctx.url("/admin/api-keys")) {
                (field("name", "Name", Input::Text, &name, errors, true))
                fieldset class={ "scopes" @if errors.on("scopes").is_some() { " invalid" } } {
                    legend { "Scopes" }
                    @for sc in &scopes {
                        label class="check" {
                            input type="checkbox" name="scopes" value=(sc) checked[chosen.contains(sc)];
                            " " (sc)
                        }
                    }
                    @if let Some(m) = errors.on("scopes") { span class="error" { (m) } }
                }
                button type="submit" id="create-key" { "Create the key" }
            }
        }
        section {
            h2 { "Keys" }
            div class="scroll" {
                table id="keys" {
                    thead { tr { th { "Name" } th { "Key" } th { "Scopes" } th { "Created" } th { "Last used" } th { "Expires" } th { "" } } }
                    tbody {
                        @for k in list {
                            tr class=[k.revoked_at.is_some().then_some("revoked")] {
                                td { (k.name) }
                                td { code { (k.display_prefix) "…" } }
                                td { @for s in &k.scopes { span class="tag" { (s.as_str()) } " " } }
                                td { (when(&k.created_at)) }
                                td { (when_opt(k.last_used_at.as_ref())) }
                                td { (when_opt(k.expires_at.as_ref())) }
                                td {
                                    @if k.revoked_at.is_some() { "revoked" } @else {
                                        (post_button(&ctx.url(&format!("/admin/api-keys/{}/rotate", k.id)), "Rotate", Some("Make a new key? This one keeps working for 24 hours."), ""))
                                        (post_button(&ctx.url(&format!("/admin/api-keys/{}/revoke", k.id)), "Revoke", Some("Revoke this key now?"), "danger"))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(ctx, status, Nav::Keys, "API keys", notice, body)
}

async fn keys(State(s): State<AppState>, ctx: Ctx, Query(n): Query<NoticeQuery>) -> PageResult {
    admin(&ctx)?;
    let list = ctx.ws(&s).api_keys().list().await.or_page(&ctx)?;
    let none = Errors::default();
    Ok(keys_page(
        &ctx,
        StatusCode::OK,
        &list,
        None,
        &none,
        html! {},
        n.text(),
    ))
}

async fn create_key(State(s): State<AppState>, ctx: Ctx, form: FormData) -> PageResult {
    admin(&ctx)?;
    let api = ctx.ws(&s).api_keys().with_actor(ctx.actor());
    let input = NewApiKey {
        name: form.text("name").trim().to_owned(),
        scopes: form.all("scopes"),
        expires_at: None,
    };
    match api.create(input).await {
        Ok(created) => {
            let list = api.list().await.or_page(&ctx)?;
            let top = secret_box("key", created.secret.expose());
            Ok(keys_page(
                &ctx,
                StatusCode::CREATED,
                &list,
                None,
                &Errors::default(),
                top,
                None,
            ))
        }
        Err(e) => {
            let (status, errors) = shown(&ctx, e)?;
            let list = api.list().await.or_page(&ctx)?;
            Ok(keys_page(
                &ctx,
                status,
                &list,
                Some(&form),
                &errors,
                html! {},
                None,
            ))
        }
    }
}

async fn rotate_key(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> PageResult {
    admin(&ctx)?;
    let id: ApiKeyId = uuid_of(&ctx, &id, "API key")?;
    let api = ctx.ws(&s).api_keys().with_actor(ctx.actor());
    let created = api.rotate(id, None).await.or_page(&ctx)?;
    let list = api.list().await.or_page(&ctx)?;
    let top = secret_box("new key", created.secret.expose());
    Ok(keys_page(
        &ctx,
        StatusCode::CREATED,
        &list,
        None,
        &Errors::default(),
        top,
        None,
    ))
}

async fn revoke_key(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> PageResult {
    admin(&ctx)?;
    let id: ApiKeyId = uuid_of(&ctx, &id, "API key")?;
    ctx.ws(&s)
        .api_keys()
        .with_actor(ctx.actor())
        .revoke(id)
        .await
        .or_page(&ctx)?;
    Ok(redirect(&ctx.url("/admin/api-keys?notice=revoked")))
}

// ------------------------------------------------------------------ webhooks

fn event_checkboxes(name: &str, chosen: &[String]) -> Markup {
    html! {
        @for t in EventType::ALL {
            label class="check" {
                input type="checkbox" name=(name) value=(t.as_str()) checked[chosen.iter().any(|c| c == t.as_str())];
                " " (t.as_str())
            }
        }
    }
}

fn endpoints_page(
    ctx: &Ctx,
    status: StatusCode,
    list: &[crm_core::webhooks::Endpoint],
    form: Option<&FormData>,
    errors: &Errors,
    top: Markup,
    notice: Option<&str>,
) -> Response {
    let v = |n: &str| form.map(|f| f.text(n)).unwrap_or_default();
    let chosen = form.map(|f| f.all("event_types")).unwrap_or_default();
    let body = html! {
        (top)
        section class="card" {
            h2 { "Add an endpoint" }
            (errors.rest(&["url", "description", "event_types"]))
            form method="post" action=(ctx.url("/admin/webhooks")) {
                (field("url", "URL (https)", Input::Url, &v("url"), errors, true))
                (field("description", "Description", Input::Text, &v("description"), errors, false))
                fieldset {
                    legend { "Events (none: every event)" }
                    (event_checkboxes("event_types", &chosen))
                    @if let Some(m) = errors.on("event_types") { span class="error" { (m) } }
                }
                button type="submit" id="create-endpoint" { "Add the endpoint" }
            }
        }
        section {
            h2 { "Endpoints" }
            div class="scroll" {
                table id="endpoints" {
                    thead { tr { th { "URL" } th { "Description" } th { "Events" } th { "Enabled" } th { "Failures in a row" } } }
                    tbody {
                        @for e in list {
                            tr {
                                td { a href=(ctx.url(&format!("/admin/webhooks/{}", e.id))) { (e.url) } }
                                td { (e.description.as_deref().unwrap_or("")) }
                                td { @if e.event_types.is_empty() { "all" } @else { @for t in &e.event_types { span class="tag" { (t) } " " } } }
                                td { (if e.enabled { "yes" } else { "no" }) }
                                td { (e.consecutive_failures) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(ctx, status, Nav::Webhooks, "Webhooks", notice, body)
}

async fn endpoints(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(n): Query<NoticeQuery>,
) -> PageResult {
    admin(&ctx)?;
    let list = ctx.ws(&s).webhooks().list().await.or_page(&ctx)?;
    Ok(endpoints_page(
        &ctx,
        StatusCode::OK,
        &list,
        None,
        &Errors::default(),
        html! {},
        n.text(),
    ))
}

async fn create_endpoint(State(s): State<AppState>, ctx: Ctx, form: FormData) -> PageResult {
    admin(&ctx)?;
    let hooks = ctx.ws(&s).webhooks().with_actor(ctx.actor());
    let input = NewEndpoint {
        url: form.text("url").trim().to_owned(),
        description: form.opt("description"),
        event_types: form.all("event_types"),
        enabled: None,
        rate_limit_per_minute: None,
        secret: None,
    };
    match hooks.create(input).await {
        Ok(created) => {
            let d = created.endpoint;
            let top = html! {
                (secret_box("signing secret", created.secret.expose()))
                p { a href=(ctx.url(&format!("/admin/webhooks/{}", d.id))) id="endpoint-link" { "Open the endpoint" } }
            };
            let list = hooks.list().await.or_page(&ctx)?;
            Ok(endpoints_page(
                &ctx,
                StatusCode::CREATED,
                &list,
                None,
                &Errors::default(),
                top,
                None,
            ))
        }
        Err(e) => {
            let (status, errors) = shown(&ctx, e)?;
            let list = hooks.list().await.or_page(&ctx)?;
            Ok(endpoints_page(
                &ctx,
                status,
                &list,
                Some(&form),
                &errors,
                html! {},
                None,
            ))
        }
    }
}

/// Rows on a page of the delivery log and of the audit log.
const PAGE: u32 = 50;

/// The query of a newest-first log page: `before` (the last id of the page before)
/// and a notice.
#[derive(Deserialize, Default)]
pub(crate) struct LogQuery {
    #[serde(default)]
    before: Option<String>,
    #[serde(flatten)]
    notice: NoticeQuery,
}

impl LogQuery {
    fn before(&self, ctx: &Ctx, entity: &'static str) -> Result<Option<uuid::Uuid>, PageError> {
        match self.before.as_deref().filter(|b| !b.is_empty()) {
            Some(b) => uuid_of(ctx, b, entity).map(Some),
            None => Ok(None),
        }
    }
}

/// The links of a newest-first log: to the newest page (when on an older one) and to
/// the next, older one (when this one is full).
fn log_links(ctx: &Ctx, path: &str, on_older: bool, last: Option<String>, full: bool) -> Markup {
    html! {
        p class="pager" {
            @if on_older { a href=(ctx.url(path)) { "← Newest" } " " }
            @if full { @if let Some(last) = last {
                a href=(ctx.url(&format!("{path}?before={last}"))) rel="next" { "Older →" }
            } }
        }
    }
}

async fn endpoint_page(
    s: &AppState,
    ctx: &Ctx,
    id: EndpointId,
    status: StatusCode,
    top: Markup,
    notice: Option<&str>,
    before: Option<uuid::Uuid>,
) -> PageResult {
    let hooks = ctx.ws(s).webhooks();
    let e = hooks.get(id).await.or_page(ctx)?;
    let attempts = hooks.recent_attempts(id, before, PAGE).await.or_page(ctx)?;
    let full = attempts.len() == PAGE as usize;
    let last = attempts.last().map(|a| a.id.to_string());
    let base = format!("/admin/webhooks/{id}");
    let body = html! {
        (top)
        dl class="facts" {
            dt { "URL" } dd { (e.url) }
            dt { "Description" } dd { (e.description.as_deref().unwrap_or("—")) }
            dt { "Events" } dd { @if e.event_types.is_empty() { "all" } @else { (e.event_types.join(", ")) } }
            dt { "Enabled" } dd { (if e.enabled { "yes" } else { "no" }) }
            dt { "Last success" } dd { (when_opt(e.last_success_at.as_ref())) }
            dt { "Last failure" } dd { (when_opt(e.last_failure_at.as_ref())) }
        }
        div class="actions" {
            (post_button(&ctx.url(&format!("{base}/test")), "Send a test event", None, ""))
            (post_button(&ctx.url(&format!("{base}/rotate")), "Rotate the secret", Some("Make a new signing secret? The old one keeps signing for 24 hours."), ""))
            (post_button(&ctx.url(&format!("{base}/delete")), "Delete", Some("Delete this endpoint?"), "danger"))
        }
        section {
            h2 { "Deliveries" }
            @if attempts.is_empty() {
                p class="muted" id="no-deliveries" { "No delivery yet." }
            } @else {
                div class="scroll" {
                    table id="deliveries" {
                        thead { tr { th { "When" } th { "Event" } th { "Attempt" } th { "Status" } th { "Time" } th { "Error" } th { "" } } }
                        tbody {
                            @for a in &attempts {
                                tr {
                                    td { (when(&a.created_at)) }
                                    td { code { (a.event_id.to_string()) } }
                                    td { (a.attempt) }
                                    td { (a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())) }
                                    td { (a.duration_ms) " ms" }
                                    td { (a.error_kind.as_deref().unwrap_or("")) }
                                    td { (post_button(&ctx.url(&format!("{base}/resend/{}", a.event_id)), "Resend", None, "resend")) }
                                }
                            }
                        }
                    }
                }
            }
            (log_links(ctx, &base, before.is_some(), last, full))
        }
    };
    Ok(layout(
        ctx,
        status,
        Nav::Webhooks,
        "Webhook endpoint",
        notice,
        body,
    ))
}

async fn endpoint(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> PageResult {
    admin(&ctx)?;
    let id: EndpointId = uuid_of(&ctx, &id, "endpoint")?;
    let before = q.before(&ctx, "delivery attempt")?;
    let notice = q.notice.text();
    endpoint_page(&s, &ctx, id, StatusCode::OK, html! {}, notice, before).await
}

async fn test_endpoint(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> PageResult {
    admin(&ctx)?;
    let id: EndpointId = uuid_of(&ctx, &id, "endpoint")?;
    ctx.ws(&s).webhooks().test(id).await.or_page(&ctx)?;
    Ok(redirect(
        &ctx.url(&format!("/admin/webhooks/{id}?notice=queued")),
    ))
}

async fn rotate_endpoint(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> PageResult {
    admin(&ctx)?;
    let id: EndpointId = uuid_of(&ctx, &id, "endpoint")?;
    let secret = ctx
        .ws(&s)
        .webhooks()
        .with_actor(ctx.actor())
        .rotate_secret(id)
        .await
        .or_page(&ctx)?;
    let top = secret_box("new signing secret", secret.expose());
    endpoint_page(&s, &ctx, id, StatusCode::OK, top, None, None).await
}

async fn delete_endpoint(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> PageResult {
    admin(&ctx)?;
    let id: EndpointId = uuid_of(&ctx, &id, "endpoint")?;
    ctx.ws(&s)
        .webhooks()
        .with_actor(ctx.actor())
        .delete(id)
        .await
        .or_page(&ctx)?;
    Ok(redirect(&ctx.url("/admin/webhooks?notice=deleted")))
}

async fn resend(
    State(s): State<AppState>,
    ctx: Ctx,
    Path((id, event)): Path<(String, String)>,
) -> PageResult {
    admin(&ctx)?;
    let id: EndpointId = uuid_of(&ctx, &id, "endpoint")?;
    let event = event.strip_prefix("msg_").unwrap_or(&event);
    let event: EventId = uuid_of(&ctx, event, "event")?;
    ctx.ws(&s)
        .webhooks()
        .resend(id, event)
        .await
        .or_page(&ctx)?;
    Ok(redirect(
        &ctx.url(&format!("/admin/webhooks/{id}?notice=queued")),
    ))
}

// ------------------------------------------------------------------ notifications

fn channels_page(
    ctx: &Ctx,
    status: StatusCode,
    list: &[crm_core::notify::Channel],
    form: Option<&FormData>,
    errors: &Errors,
    notice: Option<&str>,
) -> Response {
    let v = |n: &str| form.map(|f| f.text(n)).unwrap_or_default();
    let chosen = form.map(|f| f.all("event_types")).unwrap_or_default();
    let kind = v("kind");
    let body = html! {
        section class="card" {
            h2 { "Add a channel" }
            (errors.rest(&["kind", "name", "config"]))
            form method="post" action=(ctx.url("/admin/notifications")) {
                div class="field" {
                    label for="f-kind" { "Kind" }
                    select id="f-kind" name="kind" {
                        @for k in ["email", "telegram", "discord", "whatsapp"] {
                            option value=(k) selected[kind == k] { (k) }
                        }
                    }
                    @if let Some(m) = errors.on("kind") { span class="error" { (m) } }
                }
                (field("name", "Name", Input::Text, &v("name"), errors, true))
                (field("config", "Settings (a JSON object, e.g. {\"to\": [\"sales@example.com\"]})", Input::Area(3), &v("config"), errors, false))
                fieldset {
                    legend { "Events (none: lead.created)" }
                    (event_checkboxes("event_types", &chosen))
                }
                button type="submit" id="create-channel" { "Add the channel" }
            }
        }
        section {
            h2 { "Channels" }
            table id="channels" {
                thead { tr { th { "Name" } th { "Kind" } th { "Events" } th { "Enabled" } th { "" } } }
                tbody {
                    @for c in list {
                        tr {
                            td { (c.name) }
                            td { (c.kind) }
                            td { (c.event_types.join(", ")) }
                            td { (if c.enabled { "yes" } else { "no" }) }
                            td {
                                (post_button(&ctx.url(&format!("/admin/notifications/{}/test", c.id)), "Test", None, ""))
                                (post_button(&ctx.url(&format!("/admin/notifications/{}/delete", c.id)), "Delete", Some("Delete this channel?"), "danger"))
                            }
                        }
                    }
                }
            }
        }
    };
    layout(
        ctx,
        status,
        Nav::Notifications,
        "Notifications",
        notice,
        body,
    )
}

async fn channels(State(s): State<AppState>, ctx: Ctx, Query(n): Query<NoticeQuery>) -> PageResult {
    admin(&ctx)?;
    let list = ctx.ws(&s).notifications().list().await.or_page(&ctx)?;
    Ok(channels_page(
        &ctx,
        StatusCode::OK,
        &list,
        None,
        &Errors::default(),
        n.text(),
    ))
}

async fn create_channel(State(s): State<AppState>, ctx: Ctx, form: FormData) -> PageResult {
    admin(&ctx)?;
    let n = ctx.ws(&s).notifications().with_actor(ctx.actor());
    let config = match form.opt("config") {
        None => Ok(serde_json::Value::Object(serde_json::Map::new())),
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v @ serde_json::Value::Object(_)) => Ok(v),
            _ => Err(Errors::one("config", "must be a JSON object")),
        },
    };
    let result = match config {
        Ok(config) => n
            .create(NewChannel {
                kind: form.text("kind"),
                name: form.text("name").trim().to_owned(),
                config,
                event_types: form.all("event_types"),
                enabled: None,
            })
            .await
            .map_err(|e| shown(&ctx, e)),
        Err(errors) => Err(Ok((StatusCode::UNPROCESSABLE_ENTITY, errors))),
    };
    match result {
        Ok(_) => Ok(redirect(&ctx.url("/admin/notifications?notice=created"))),
        Err(refused) => {
            let (status, errors) = refused?;
            let list = n.list().await.or_page(&ctx)?;
            Ok(channels_page(
                &ctx,
                status,
                &list,
                Some(&form),
                &errors,
                None,
            ))
        }
    }
}

async fn test_channel(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> PageResult {
    admin(&ctx)?;
    let id: ChannelId = uuid_of(&ctx, &id, "channel")?;
    ctx.ws(&s).notifications().test(id).await.or_page(&ctx)?;
    Ok(redirect(
        &ctx.url("/admin/notifications?notice=test_queued"),
    ))
}

async fn delete_channel(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> PageResult {
    admin(&ctx)?;
    let id: ChannelId = uuid_of(&ctx, &id, "channel")?;
    ctx.ws(&s)
        .notifications()
        .with_actor(ctx.actor())
        .delete(id)
        .await
        .or_page(&ctx)?;
    Ok(redirect(&ctx.url("/admin/notifications?notice=deleted")))
}

// ------------------------------------------------------------------ users

/// What the users page shows besides the list: a refused invitation (what was
/// typed and its errors) or a refused change of a listed user.
enum UsersRefused<'a> {
    None,
    Invite(&'a FormData, Errors),
    Change(Errors),
}

/// The workspace's users, each with their open sessions.
async fn users_and_sessions(
    s: &AppState,
    ctx: &Ctx,
) -> Result<Vec<(crm_core::auth::User, Vec<crm_core::auth::Session>)>, PageError> {
    let auth = ctx.ws(s).auth();
    let users = auth.users().await.or_page(ctx)?;
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let sessions = auth.sessions(u.id).await.or_page(ctx)?;
        out.push((u, sessions));
    }
    Ok(out)
}

fn users_page(
    ctx: &Ctx,
    status: StatusCode,
    list: &[(crm_core::auth::User, Vec<crm_core::auth::Session>)],
    refused: UsersRefused<'_>,
    notice: Option<&str>,
) -> Response {
    let none = Errors::default();
    let (form, errors, row_errors) = match &refused {
        UsersRefused::None => (None, &none, &none),
        UsersRefused::Invite(f, e) => (Some(*f), e, &none),
        UsersRefused::Change(e) => (None, &none, e),
    };
    let v = |n: &str| form.map(|f| f.text(n)).unwrap_or_default();
    let role = v("role");
    let body = html! {
        section class="card" {
            h2 { "Invite a user" }
            p class="muted" { "Give them the first password yourself; they can change it, or reset it by mail when a mail provider is set." }
            (errors.rest(&["email", "display_name", "role", "password"]))
            form method="post" action=(ctx.url("/admin/users")) {
                (field("email", "Email", Input::Email, &v("email"), errors, true))
                (field("display_name", "Name", Input::Text, &v("display_name"), errors, true))
                div class="field" {
                    label for="f-role" { "Role" }
                    select id="f-role" name="role" {
                        @for r in Role::ALL { option value=(r.as_str()) selected[role == r.as_str() || (role.is_empty() && *r == Role::Member)] { (r.as_str()) } }
                    }
                    @if let Some(m) = errors.on("role") { span class="error" { (m) } }
                }
                (field("password", "First password", Input::NewPassword, "", errors, true))
                button type="submit" id="invite" { "Invite" }
            }
        }
        section {
            h2 { "Users" }
            (row_errors.rest(&[]))
            div class="scroll" {
                table id="users" {
                    thead { tr { th { "Email" } th { "Name" } th { "Role" } th { "State" } th { "" } } }
                    tbody {
                        @for (u, sessions) in list {
                            tr {
                                td { (u.email.as_str()) }
                                td { (u.display_name) }
                                td {
                                    form class="inline" method="post" action=(ctx.url(&format!("/admin/users/{}/role", u.id))) {
                                        label class="visually-hidden" for=(format!("role-{}", u.id)) { "Role of " (u.email.as_str()) }
                                        select id=(format!("role-{}", u.id)) name="role" {
                                            @for r in Role::ALL { option value=(r.as_str()) selected[*r == u.role] { (r.as_str()) } }
                                        }
                                        button type="submit" { "Set" }
                                    }
                                }
                                td {
                                    (if u.disabled_at.is_some() { "disabled" } else { "active" })
                                    details class="sessions" {
                                        summary { (sessions.len()) " open session" @if sessions.len() != 1 { "s" } }
                                        ul {
                                            @for se in sessions {
                                                li {
                                                    "since " (when(&se.created_at)) ", last seen " (when(&se.last_seen_at))
                                                    @if let Some(ip) = &se.ip { ", " (ip) }
                                                    @if let Some(ua) = &se.user_agent { br; span class="muted" { (ua) } }
                                                }
                                            }
                                        }
                                    }
                                }
                                td {
                                    @if u.disabled_at.is_some() {
                                        (post_button(&ctx.url(&format!("/admin/users/{}/enable", u.id)), "Enable", None, ""))
                                    } @else {
                                        (post_button(&ctx.url(&format!("/admin/users/{}/disable", u.id)), "Disable", Some("Disable this user? Their sessions end."), "danger"))
                                    }
                                    (post_button(&ctx.url(&format!("/admin/users/{}/sessions", u.id)), "End sessions", Some("Sign this user out everywhere?"), ""))
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(ctx, status, Nav::Users, "Users", notice, body)
}

async fn users(State(s): State<AppState>, ctx: Ctx, Query(n): Query<NoticeQuery>) -> PageResult {
    admin(&ctx)?;
    let list = users_and_sessions(&s, &ctx).await?;
    Ok(users_page(
        &ctx,
        StatusCode::OK,
        &list,
        UsersRefused::None,
        n.text(),
    ))
}

/// A refused invitation (`form`) or change of a user: the page again with the
/// refusal next to the invitation's fields or above the list. A refusal by the
/// rules of roles is said in words there, not as the 403 page of someone who may
/// not see the page at all.
async fn users_refused(s: &AppState, ctx: &Ctx, form: Option<&FormData>, e: Error) -> PageResult {
    let (status, errors) = match e {
        Error::Forbidden => (
            StatusCode::FORBIDDEN,
            Errors::one(
                "",
                "Your role does not allow this: admins manage members and admins, only an owner \
                 manages owners, and nobody changes their own role or disables themselves.",
            ),
        ),
        e => shown(ctx, e)?,
    };
    let list = users_and_sessions(s, ctx).await?;
    let refused = match form {
        Some(f) => UsersRefused::Invite(f, errors),
        None => UsersRefused::Change(errors),
    };
    Ok(users_page(ctx, status, &list, refused, None))
}

async fn create_user(State(s): State<AppState>, ctx: Ctx, form: FormData) -> PageResult {
    admin(&ctx)?;
    let input = NewUser {
        email: form.text("email").trim().to_owned(),
        display_name: form.text("display_name").trim().to_owned(),
        role: form.opt("role"),
        password: form.text("password"),
    };
    let me = Actor::User(ctx.user.user.id);
    match ctx.ws(&s).auth().create_user(input, me).await {
        Ok(_) => Ok(redirect(&ctx.url("/admin/users?notice=created"))),
        Err(e) => users_refused(&s, &ctx, Some(&form), e).await,
    }
}

/// Runs one change of a user as the signed-in admin: the service applies the rules
/// of roles (admins manage members and admins, only owners manage owners, nobody
/// changes their own role).
async fn user_change<F, Fut, T>(
    s: AppState,
    ctx: Ctx,
    id: String,
    notice: &str,
    change: F,
) -> PageResult
where
    F: FnOnce(crm_core::auth::Auth, UserId, UserId) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    admin(&ctx)?;
    let id: UserId = uuid_of(&ctx, &id, "user")?;
    match change(ctx.ws(&s).auth(), id, ctx.user.user.id).await {
        Ok(_) => Ok(redirect(&ctx.url(&format!("/admin/users?notice={notice}")))),
        Err(e) => users_refused(&s, &ctx, None, e).await,
    }
}

async fn set_role(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    form: FormData,
) -> PageResult {
    let role = form.text("role");
    user_change(s, ctx, id, "saved", |a, id, me| async move {
        a.set_role(id, &role, Actor::User(me)).await
    })
    .await
}

async fn disable_user(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> PageResult {
    user_change(s, ctx, id, "saved", |a, id, me| async move {
        a.disable_user(id, Actor::User(me)).await
    })
    .await
}

async fn enable_user(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> PageResult {
    user_change(s, ctx, id, "saved", |a, id, me| async move {
        a.enable_user(id, Actor::User(me)).await
    })
    .await
}

async fn end_sessions(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> PageResult {
    user_change(s, ctx, id, "sessions", |a, id, me| async move {
        a.end_user_sessions(id, Actor::User(me)).await
    })
    .await
}

// ------------------------------------------------------------------ settings

async fn settings_page(
    s: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    name_form: Option<(&str, &Errors)>,
    refused: Option<(&str, &FormData, &Errors)>,
    notice: Option<&str>,
) -> PageResult {
    let ws = ctx.ws(s);
    let info = ws.info().await.or_page(ctx)?;
    let saved = ws.integrations().list().await.or_page(ctx)?;
    let none = Errors::default();
    let (name, name_errors) = name_form.unwrap_or((info.name.as_str(), &none));
    let body = html! {
        section class="card" {
            h2 { "Workspace" }
            (name_errors.rest(&["name"]))
            form method="post" action=(ctx.url("/admin/settings")) {
                (field("name", "Name", Input::Text, name, name_errors, true))
                button type="submit" { "Rename" }
            }
            p class="muted" { "Workspace id: " code { (info.id.to_string()) } }
        }
        section {
            h2 { "Integrations" }
            p class="muted" { "Secrets are sealed at rest and never shown again: leave a secret blank to keep the saved one." }
            @for p in s.crm.providers() {
                @let current = saved.iter().find(|i| i.kind == p.kind);
                @let here = refused.filter(|(k, _, _)| *k == p.kind);
                @let errors = here.map_or(&none, |(_, _, e)| e);
                details class="card" open[here.is_some()] {
                    summary { (p.kind) @if current.is_some() { " · configured" } }
                    (errors.rest(&p.fields.iter().map(|f| f.name).collect::<Vec<_>>()))
                    @if let Some(i) = current { @if let Some(id) = &i.inbound_id {
                        p class="muted" { "Inbound id: " code { (id) } }
                    } }
                    form method="post" action=(ctx.url(&format!("/admin/settings/integrations/{}", p.kind))) {
                        @for f in p.fields {
                            @let value = match (here, f.secret) {
                                (_, true) => String::new(),
                                (Some((_, form, _)), false) => form.text(f.name),
                                (None, false) => current.and_then(|i| i.settings.get(f.name).cloned()).unwrap_or_default(),
                            };
                            (field_id(&format!("f-{}-{}", p.kind, f.name), f.name, f.name, if f.secret { Input::NewPassword } else { Input::Text }, &value, errors, f.required && !(f.secret && current.is_some())))
                        }
                        button type="submit" { "Save " (p.kind) }
                    }
                    @if current.is_some() {
                        (post_button(&ctx.url(&format!("/admin/settings/integrations/{}/delete", p.kind)), "Remove", Some("Remove this integration and its secrets?"), "danger"))
                    }
                }
            }
        }
    };
    Ok(layout(ctx, status, Nav::Settings, "Settings", notice, body))
}

async fn settings(State(s): State<AppState>, ctx: Ctx, Query(n): Query<NoticeQuery>) -> PageResult {
    admin(&ctx)?;
    settings_page(&s, &ctx, StatusCode::OK, None, None, n.text()).await
}

async fn rename(State(s): State<AppState>, ctx: Ctx, form: FormData) -> PageResult {
    admin(&ctx)?;
    let name = form.text("name");
    match ctx.ws(&s).rename(&name).await {
        Ok(_) => Ok(redirect(&ctx.url("/admin/settings?notice=saved"))),
        Err(e) => {
            let (status, errors) = shown(&ctx, e)?;
            settings_page(&s, &ctx, status, Some((&name, &errors)), None, None).await
        }
    }
}

async fn save_integration(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(kind): Path<String>,
    form: FormData,
) -> PageResult {
    admin(&ctx)?;
    let Some(provider) = s.crm.providers().into_iter().find(|p| p.kind == kind) else {
        return Err(PageError::new(
            ctx,
            Error::NotFound {
                entity: "integration",
            },
        ));
    };
    // Only the provider's fields; a blank secret is left out (the saved one stays),
    // a blank setting too (the provider says whether it is required).
    let settings = provider
        .fields
        .iter()
        .filter_map(|f| form.opt(f.name).map(|v| (f.name.to_owned(), v)))
        .collect();
    let me = Actor::User(ctx.user.user.id);
    match ctx.ws(&s).integrations().save(me, &kind, settings).await {
        Ok(_) => Ok(redirect(&ctx.url("/admin/settings?notice=saved"))),
        Err(e) => {
            let (status, errors) = shown(&ctx, e)?;
            settings_page(&s, &ctx, status, None, Some((&kind, &form, &errors)), None).await
        }
    }
}

async fn delete_integration(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(kind): Path<String>,
) -> PageResult {
    admin(&ctx)?;
    let me = Actor::User(ctx.user.user.id);
    ctx.ws(&s)
        .integrations()
        .delete(me, &kind)
        .await
        .or_page(&ctx)?;
    Ok(redirect(&ctx.url("/admin/settings?notice=deleted")))
}

// ------------------------------------------------------------------ audit log

async fn audit(State(s): State<AppState>, ctx: Ctx, Query(q): Query<LogQuery>) -> PageResult {
    admin(&ctx)?;
    let before: Option<AuditId> = q.before(&ctx, "audit entry")?.map(AuditId::from);
    let list = ctx
        .ws(&s)
        .recent_audit_log(before, PAGE)
        .await
        .or_page(&ctx)?;
    let full = list.len() == PAGE as usize;
    let last = list.last().map(|e| e.id.to_string());
    let body = html! {
        div class="scroll" {
            table id="audit" {
                thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Target" } th { "IP" } th { "Details" } } }
                tbody {
                    @for e in &list {
                        tr {
                            td { (when(&e.created_at)) }
                            td { (e.actor.as_deref().unwrap_or("—")) }
                            td { code { (e.action) } }
                            td { (e.target_type.as_deref().unwrap_or("")) " " (e.target_id.as_deref().unwrap_or("")) }
                            td { (e.ip.as_deref().unwrap_or("")) }
                            td { code class="details" { (e.details.to_string()) } }
                        }
                    }
                }
            }
        }
        (log_links(&ctx, "/admin/audit", before.is_some(), last, full))
    };
    Ok(layout(
        &ctx,
        StatusCode::OK,
        Nav::Audit,
        "Audit log",
        None,
        body,
    ))
}
