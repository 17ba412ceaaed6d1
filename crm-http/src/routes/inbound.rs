//! Inbound webhooks: the provider logic (signature check, payload reading, capture)
//! lives in `crm-integrations`; these handlers take the raw body and the signature
//! header, call it, and map the result. Bodies up to 256 KiB; an unverifiable request
//! gets 401 and writes nothing. Without its secret configured a route answers 503.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::middleware::from_fn_with_state;
use crm_core::Error;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::RawBody;
use crate::problem::ApiResult;
use crate::{guard, AppState};

pub(crate) fn router(s: &AppState) -> OpenApiRouter<AppState> {
    let r = OpenApiRouter::new();
    #[cfg(feature = "whatsapp")]
    let r = r
        .routes(routes!(whatsapp_handshake, whatsapp))
        .routes(routes!(workspace_whatsapp_handshake, workspace_whatsapp));
    #[cfg(feature = "calcom")]
    let r = r.routes(routes!(calcom)).routes(routes!(workspace_calcom));
    r.route_layer(from_fn_with_state(s.clone(), guard::inbound))
        .route_layer(DefaultBodyLimit::max(s.cfg.inbound_limit))
}

fn not_configured(what: &str) -> Error {
    Error::Config(format!("{what} inbound is not configured"))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// What an inbound webhook did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InboundResult {
    /// Leads created or updated.
    captured: usize,
    /// Messages seen before, skipped.
    duplicates: usize,
    /// Delivery statuses that moved a sent message forward.
    statuses: usize,
    /// Items accepted and ignored (statuses that changed nothing, message types crm
    /// does not keep, other triggers).
    ignored: usize,
}

/// The example body of the WhatsApp routes.
#[cfg(feature = "whatsapp")]
fn whatsapp_example() -> serde_json::Value {
    serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001065", "phone_number_id": "1065"},
        "contacts": [{"wa_id": "14155550199", "profile": {"name": "Wanda"}}],
        "messages": [{"id": "wamid.A1", "from": "14155550199", "timestamp": "1767225600",
            "type": "text", "text": {"body": "I need a website"}}]}}]}]})
}

/// The example body of the Cal.com routes.
#[cfg(feature = "calcom")]
fn calcom_example() -> serde_json::Value {
    serde_json::json!({"triggerEvent": "BOOKING_CREATED", "payload": {"uid": "bk-1",
        "title": "Intro call", "startTime": "2026-01-02T10:00:00Z",
        "attendees": [{"name": "Cal Person", "email": "cal@example.com"}]}})
}

/// Meta's verification query.
#[cfg(feature = "whatsapp")]
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Handshake {
    #[serde(rename = "hub.mode")]
    #[param(
        rename = "hub.mode",
        required = true,
        pattern = "^subscribe$",
        example = "subscribe"
    )]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    #[param(rename = "hub.verify_token", required = true, format = Password, min_length = 1)]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    #[param(
        rename = "hub.challenge",
        required = true,
        max_length = 256,
        example = "1158201444"
    )]
    challenge: Option<String>,
}

/// Meta's verification handshake: answers `hub.challenge` when the token matches.
#[cfg(feature = "whatsapp")]
#[utoipa::path(get, path = "/api/webhooks/whatsapp", tag = "inbound", params(Handshake),
    responses((status = 200, description = "The challenge", body = String, content_type = "text/plain")))]
pub(crate) async fn whatsapp_handshake(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<Handshake>,
) -> ApiResult<String> {
    let (_, token) = s
        .cfg
        .whatsapp
        .as_ref()
        .ok_or_else(|| not_configured("WhatsApp"))?;
    Ok(crm_integrations::whatsapp::handshake(
        q.mode.as_deref(),
        q.verify_token.as_deref(),
        q.challenge.as_deref(),
        token.expose(),
    )?)
}

/// WhatsApp Cloud API messages (signed with `X-Hub-Signature-256`) become leads of
/// the router's public workspace, under the server's app secret.
#[cfg(feature = "whatsapp")]
#[utoipa::path(post, path = "/api/webhooks/whatsapp", tag = "inbound",
    request_body(content = Object, description = "A WhatsApp Business Account webhook payload \
        (signed: `X-Hub-Signature-256`)",
        example = whatsapp_example),
    responses((status = 200, description = "Handled", body = InboundResult)))]
pub(crate) async fn whatsapp(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<axum::Json<InboundResult>> {
    let (secret, _) = s
        .cfg
        .whatsapp
        .as_ref()
        .ok_or_else(|| not_configured("WhatsApp"))?;
    receive_whatsapp(
        &s,
        s.cfg.public_workspace,
        secret.expose(),
        None,
        &headers,
        &body,
    )
    .await
}

/// The settings of a workspace's inbound integration, by its inbound id (404 for
/// an id that is not one: nothing is written).
#[cfg(any(feature = "whatsapp", feature = "calcom"))]
async fn workspace_inbound(
    s: &AppState,
    kind: &str,
    inbound_id: &str,
) -> ApiResult<(crm_core::WorkspaceId, crm_core::providers::Settings)> {
    Ok(s.crm.inbound_integration(kind, inbound_id).await?)
}

/// Meta's verification handshake for a workspace's WhatsApp integration (its verify
/// token).
#[cfg(feature = "whatsapp")]
#[utoipa::path(get, path = "/api/webhooks/whatsapp/{inbound_id}", tag = "inbound",
    params(Handshake, ("inbound_id" = String, Path, description = "The workspace's inbound id (`GET /api/admin/integrations/whatsapp`)")),
    responses((status = 200, description = "The challenge", body = String, content_type = "text/plain")))]
pub(crate) async fn workspace_whatsapp_handshake(
    State(s): State<AppState>,
    axum::extract::Path(inbound_id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<Handshake>,
) -> ApiResult<String> {
    let (_, settings) = workspace_inbound(&s, "whatsapp", &inbound_id).await?;
    Ok(crm_integrations::whatsapp::handshake(
        q.mode.as_deref(),
        q.verify_token.as_deref(),
        q.challenge.as_deref(),
        crm_core::providers::setting(&settings, "verify_token"),
    )?)
}

/// WhatsApp messages to a workspace's own number (signed with its app secret)
/// become leads of that workspace.
#[cfg(feature = "whatsapp")]
#[utoipa::path(post, path = "/api/webhooks/whatsapp/{inbound_id}", tag = "inbound",
    params(("inbound_id" = String, Path, description = "The workspace's inbound id")),
    request_body(content = Object, description = "A WhatsApp Business Account webhook payload \
        (signed: `X-Hub-Signature-256`)", example = whatsapp_example),
    responses((status = 200, description = "Handled", body = InboundResult)))]
pub(crate) async fn workspace_whatsapp(
    State(s): State<AppState>,
    axum::extract::Path(inbound_id): axum::extract::Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<axum::Json<InboundResult>> {
    let (workspace, settings) = workspace_inbound(&s, "whatsapp", &inbound_id).await?;
    receive_whatsapp(
        &s,
        workspace,
        crm_core::providers::setting(&settings, "app_secret"),
        Some(crm_core::providers::setting(&settings, "phone_number_id")),
        &headers,
        &body,
    )
    .await
}

#[cfg(feature = "whatsapp")]
async fn receive_whatsapp(
    s: &AppState,
    workspace: crm_core::WorkspaceId,
    app_secret: &str,
    phone_number_id: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<axum::Json<InboundResult>> {
    let leads = s.crm.workspace(workspace).leads().with_actor("whatsapp");
    let r = crm_integrations::whatsapp::receive_for(
        &leads,
        app_secret,
        phone_number_id,
        header(headers, "x-hub-signature-256"),
        body,
    )
    .await?;
    Ok(axum::Json(InboundResult {
        captured: r.captured.len(),
        duplicates: r.duplicates,
        statuses: r.statuses,
        ignored: r.ignored,
    }))
}

/// Cal.com bookings (signed with `X-Cal-Signature-256`) become leads of the
/// router's public workspace with a booking activity, under the server's secret.
#[cfg(feature = "calcom")]
#[utoipa::path(post, path = "/api/webhooks/cal", tag = "inbound",
    request_body(content = Object, description = "A Cal.com webhook payload (signed: \
        `X-Cal-Signature-256`)",
        example = calcom_example),
    responses((status = 200, description = "Handled", body = InboundResult)))]
pub(crate) async fn calcom(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<axum::Json<InboundResult>> {
    let secret = s
        .cfg
        .calcom
        .as_ref()
        .ok_or_else(|| not_configured("Cal.com"))?;
    receive_calcom(&s, s.cfg.public_workspace, secret.expose(), &headers, &body).await
}

/// Bookings of a workspace's Cal.com (signed with its webhook secret) become leads
/// of that workspace.
#[cfg(feature = "calcom")]
#[utoipa::path(post, path = "/api/webhooks/cal/{inbound_id}", tag = "inbound",
    params(("inbound_id" = String, Path, description = "The workspace's inbound id (`GET /api/admin/integrations/calcom`)")),
    request_body(content = Object, description = "A Cal.com webhook payload (signed: \
        `X-Cal-Signature-256`)", example = calcom_example),
    responses((status = 200, description = "Handled", body = InboundResult)))]
pub(crate) async fn workspace_calcom(
    State(s): State<AppState>,
    axum::extract::Path(inbound_id): axum::extract::Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<axum::Json<InboundResult>> {
    let (workspace, settings) = workspace_inbound(&s, "calcom", &inbound_id).await?;
    receive_calcom(
        &s,
        workspace,
        crm_core::providers::setting(&settings, "webhook_secret"),
        &headers,
        &body,
    )
    .await
}

#[cfg(feature = "calcom")]
async fn receive_calcom(
    s: &AppState,
    workspace: crm_core::WorkspaceId,
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<axum::Json<InboundResult>> {
    use crm_integrations::calcom::Received;
    let leads = s.crm.workspace(workspace).leads().with_actor("cal_com");
    let r = crm_integrations::calcom::receive(
        &leads,
        secret,
        header(headers, "x-cal-signature-256"),
        body,
    )
    .await?;
    let (captured, duplicates, ignored) = match r {
        Received::Captured { .. } => (1, 0, 0),
        Received::Duplicate => (0, 1, 0),
        Received::Ignored(_) => (0, 0, 1),
    };
    Ok(axum::Json(InboundResult {
        captured,
        duplicates,
        statuses: 0,
        ignored,
    }))
}
