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
    let r = r.routes(routes!(whatsapp_handshake, whatsapp));
    #[cfg(feature = "calcom")]
    let r = r.routes(routes!(calcom));
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
    /// Items accepted and ignored (statuses, other triggers).
    ignored: usize,
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

/// WhatsApp Cloud API messages (signed with `X-Hub-Signature-256`) become leads.
#[cfg(feature = "whatsapp")]
#[utoipa::path(post, path = "/api/webhooks/whatsapp", tag = "inbound",
    request_body(content = Object, description = "A WhatsApp Business Account webhook payload \
        (signed: `X-Hub-Signature-256`)",
        example = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {"messaging_product": "whatsapp",
            "contacts": [{"wa_id": "14155550199", "profile": {"name": "Wanda"}}],
            "messages": [{"id": "wamid.A1", "from": "14155550199", "timestamp": "1767225600",
                "type": "text", "text": {"body": "I need a website"}}]}}]}]})),
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
    let leads = s
        .crm
        .workspace(s.cfg.public_workspace)
        .leads()
        .with_actor("whatsapp");
    let r = crm_integrations::whatsapp::receive(
        &leads,
        secret.expose(),
        header(&headers, "x-hub-signature-256"),
        &body,
    )
    .await?;
    Ok(axum::Json(InboundResult {
        captured: r.captured.len(),
        duplicates: r.duplicates,
        ignored: r.ignored,
    }))
}

/// Cal.com bookings (signed with `X-Cal-Signature-256`) become leads with a booking activity.
#[cfg(feature = "calcom")]
#[utoipa::path(post, path = "/api/webhooks/cal", tag = "inbound",
    request_body(content = Object, description = "A Cal.com webhook payload (signed: \
        `X-Cal-Signature-256`)",
        example = json!({"triggerEvent": "BOOKING_CREATED", "payload": {"uid": "bk-1",
            "title": "Intro call", "startTime": "2026-01-02T10:00:00Z",
            "attendees": [{"name": "Cal Person", "email": "cal@example.com"}]}})),
    responses((status = 200, description = "Handled", body = InboundResult)))]
pub(crate) async fn calcom(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<axum::Json<InboundResult>> {
    use crm_integrations::calcom::Received;
    let secret = s
        .cfg
        .calcom
        .as_ref()
        .ok_or_else(|| not_configured("Cal.com"))?;
    let leads = s
        .crm
        .workspace(s.cfg.public_workspace)
        .leads()
        .with_actor("cal_com");
    let r = crm_integrations::calcom::receive(
        &leads,
        secret.expose(),
        header(&headers, "x-cal-signature-256"),
        &body,
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
        ignored,
    }))
}
