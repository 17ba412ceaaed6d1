//! Admin routes under `/api/admin` (session with role admin or owner): API keys,
//! webhooks, notification channels, settings, users, audit log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use crm_core::api_keys::{ApiKey, ApiKeyPatch, CreatedApiKey, NewApiKey};
use crm_core::audit::AuditEntry;
use crm_core::auth::{Actor, NewUser, User};
use crm_core::leads::AllowedValues;
use crm_core::notify::{Channel, ChannelPatch, NewChannel};
use crm_core::providers::{self, Integration, ProviderInfo};
use crm_core::webhooks::{Attempt, CreatedEndpoint, Endpoint, EndpointPatch, NewEndpoint};
use crm_core::{
    ApiKeyId, AuditId, ChannelId, EndpointId, Error, EventId, UserId, Workspace, WorkspaceInfo,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Admin, Json, Path, Query};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::AppState;

/// The admin routes, relative to `/api/admin`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(update_key, revoke_key))
        .routes(routes!(rotate_key))
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(update_endpoint, delete_endpoint))
        .routes(routes!(test_endpoint))
        .routes(routes!(rotate_endpoint_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(resend_delivery))
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(update_channel, delete_channel))
        .routes(routes!(test_channel))
        .routes(routes!(get_settings, update_settings))
        .routes(routes!(list_integrations))
        .routes(routes!(
            get_integration,
            save_integration,
            delete_integration
        ))
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user, delete_user))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(end_user_sessions))
        .routes(routes!(lift_lockout))
        .routes(routes!(audit_log))
}

fn ws(s: &AppState, a: &Admin) -> Workspace {
    s.crm.workspace(a.0.user.workspace_id)
}

fn actor(a: &Admin) -> String {
    format!("user:{}", a.0.user.id)
}

// ---- API keys ----

/// A key just made: its metadata and the full key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NewKeyResponse {
    /// The key's metadata.
    #[serde(flatten)]
    key: ApiKey,
    /// The full key. It is not stored and cannot be shown again: `null` in the
    /// replay of an idempotent retry.
    #[schema(value_type = Option<String>)]
    secret: String,
}

impl From<CreatedApiKey> for NewKeyResponse {
    fn from(c: CreatedApiKey) -> Self {
        Self {
            secret: c.secret.expose().to_owned(),
            key: c.key,
        }
    }
}

/// List the workspace's API keys (never their secrets).
#[utoipa::path(get, path = "/api-keys", tag = "admin",
    responses((status = 200, description = "The keys", body = Vec<ApiKey>)))]
pub(crate) async fn list_keys(
    State(s): State<AppState>,
    a: Admin,
) -> ApiResult<axum::Json<Vec<ApiKey>>> {
    Ok(axum::Json(ws(&s, &a).api_keys().list().await?))
}

/// Create an API key; the response holds the full key, shown this once.
#[utoipa::path(post, path = "/api-keys", tag = "admin", request_body = NewApiKey,
    responses((status = 201, description = "The key and its secret", body = NewKeyResponse)))]
pub(crate) async fn create_key(
    State(s): State<AppState>,
    a: Admin,
    Json(input): Json<NewApiKey>,
) -> ApiResult<impl IntoResponse> {
    let created = ws(&s, &a)
        .api_keys()
        .with_actor(actor(&a))
        .create(input)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(NewKeyResponse::from(created)),
    ))
}

/// Rename a key or change its scopes.
#[utoipa::path(patch, path = "/api-keys/{id}", tag = "admin", request_body = ApiKeyPatch,
    params(("id" = ApiKeyId, Path, description = "The key id")),
    responses((status = 200, description = "The key", body = ApiKey)))]
pub(crate) async fn update_key(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<ApiKeyId>,
    Json(patch): Json<ApiKeyPatch>,
) -> ApiResult<axum::Json<ApiKey>> {
    let k = ws(&s, &a)
        .api_keys()
        .with_actor(actor(&a))
        .update(id, patch)
        .await?;
    Ok(axum::Json(k))
}

/// Revoke a key (it stops working at once).
#[utoipa::path(delete, path = "/api-keys/{id}", tag = "admin",
    params(("id" = ApiKeyId, Path, description = "The key id")),
    responses((status = 200, description = "The revoked key", body = ApiKey)))]
pub(crate) async fn revoke_key(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<ApiKeyId>,
) -> ApiResult<axum::Json<ApiKey>> {
    let k = ws(&s, &a)
        .api_keys()
        .with_actor(actor(&a))
        .revoke(id)
        .await?;
    Ok(axum::Json(k))
}

/// Input of a key rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"grace_seconds": 3600}))]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Rotate {
    /// How long the old key keeps working, in seconds (default 86,400; at most 30 days).
    #[schema(minimum = 0, maximum = 2592000)]
    grace_seconds: Option<i64>,
}

/// Issue a new key with the same name and scopes; the old one works for the grace period.
#[utoipa::path(post, path = "/api-keys/{id}/rotate", tag = "admin", request_body = Rotate,
    params(("id" = ApiKeyId, Path, description = "The key id")),
    responses((status = 201, description = "The new key and its secret", body = NewKeyResponse)))]
pub(crate) async fn rotate_key(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<ApiKeyId>,
    Json(input): Json<Rotate>,
) -> ApiResult<impl IntoResponse> {
    // The service checks the range (0–30 days); this only keeps the conversion total.
    let grace = input
        .grace_seconds
        .map(|secs| {
            chrono::Duration::try_seconds(secs)
                .ok_or_else(|| Error::invalid("grace_seconds", "is out of range"))
        })
        .transpose()?;
    let created = ws(&s, &a)
        .api_keys()
        .with_actor(actor(&a))
        .rotate(id, grace)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(NewKeyResponse::from(created)),
    ))
}

// ---- Webhooks ----

/// An endpoint just made, with its signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NewEndpointResponse {
    /// The endpoint.
    #[serde(flatten)]
    endpoint: Endpoint,
    /// Its signing secret, `whsec_…`: `null` in the replay of an idempotent retry.
    #[schema(value_type = Option<String>)]
    secret: String,
}

impl From<CreatedEndpoint> for NewEndpointResponse {
    fn from(c: CreatedEndpoint) -> Self {
        Self {
            secret: c.secret.expose().to_owned(),
            endpoint: c.endpoint,
        }
    }
}

/// List webhook endpoints.
#[utoipa::path(get, path = "/webhooks", tag = "admin",
    responses((status = 200, description = "The endpoints", body = Vec<Endpoint>)))]
pub(crate) async fn list_endpoints(
    State(s): State<AppState>,
    a: Admin,
) -> ApiResult<axum::Json<Vec<Endpoint>>> {
    Ok(axum::Json(ws(&s, &a).webhooks().list().await?))
}

/// Create a webhook endpoint (its URL must resolve to public addresses).
#[utoipa::path(post, path = "/webhooks", tag = "admin", request_body = NewEndpoint,
    responses((status = 201, description = "The endpoint and its signing secret", body = NewEndpointResponse)))]
pub(crate) async fn create_endpoint(
    State(s): State<AppState>,
    a: Admin,
    Json(input): Json<NewEndpoint>,
) -> ApiResult<impl IntoResponse> {
    let created = ws(&s, &a)
        .webhooks()
        .with_actor(actor(&a))
        .create(input)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(NewEndpointResponse::from(created)),
    ))
}

/// Change an endpoint.
#[utoipa::path(patch, path = "/webhooks/{id}", tag = "admin", request_body = EndpointPatch,
    params(("id" = EndpointId, Path, description = "The endpoint id")),
    responses((status = 200, description = "The endpoint", body = Endpoint)))]
pub(crate) async fn update_endpoint(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<EndpointId>,
    Json(patch): Json<EndpointPatch>,
) -> ApiResult<axum::Json<Endpoint>> {
    let e = ws(&s, &a)
        .webhooks()
        .with_actor(actor(&a))
        .update(id, patch)
        .await?;
    Ok(axum::Json(e))
}

/// Delete an endpoint (its queued deliveries are dropped).
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "admin",
    params(("id" = EndpointId, Path, description = "The endpoint id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_endpoint(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<EndpointId>,
) -> ApiResult<StatusCode> {
    ws(&s, &a)
        .webhooks()
        .with_actor(actor(&a))
        .delete(id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A queued test message.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Queued {
    /// The event id (for a webhook, `webhook-id` is `msg_` + its hex).
    event_id: EventId,
}

/// Send a `webhook.test` message to the endpoint.
#[utoipa::path(post, path = "/webhooks/{id}/test", tag = "admin",
    params(("id" = EndpointId, Path, description = "The endpoint id")),
    responses((status = 202, description = "Queued", body = Queued)))]
pub(crate) async fn test_endpoint(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<EndpointId>,
) -> ApiResult<impl IntoResponse> {
    let event_id = ws(&s, &a).webhooks().test(id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Queued { event_id })))
}

/// The new secret of a rotation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RotatedSecret {
    /// The new signing secret; the old one also signs for 24 hours. `null` in the
    /// replay of an idempotent retry.
    #[schema(value_type = Option<String>)]
    secret: String,
}

/// Rotate the signing secret (both sign for 24 hours).
#[utoipa::path(post, path = "/webhooks/{id}/rotate-secret", tag = "admin",
    params(("id" = EndpointId, Path, description = "The endpoint id")),
    responses((status = 200, description = "The new secret", body = RotatedSecret)))]
pub(crate) async fn rotate_endpoint_secret(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<EndpointId>,
) -> ApiResult<axum::Json<RotatedSecret>> {
    let secret = ws(&s, &a)
        .webhooks()
        .with_actor(actor(&a))
        .rotate_secret(id)
        .await?;
    Ok(axum::Json(RotatedSecret {
        secret: secret.expose().to_owned(),
    }))
}

/// A page of an attempt log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Page {
    /// The id of the last item of the previous page.
    after: Option<uuid::Uuid>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    limit: Option<u32>,
}

/// Delivery attempts to the endpoint, oldest first.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "admin",
    params(("id" = EndpointId, Path, description = "The endpoint id"), Page),
    responses((status = 200, description = "Attempts", body = Vec<Attempt>)))]
pub(crate) async fn list_deliveries(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<EndpointId>,
    Query(p): Query<Page>,
) -> ApiResult<axum::Json<Vec<Attempt>>> {
    let list = ws(&s, &a)
        .webhooks()
        .attempts(id, p.after, p.limit.unwrap_or(100))
        .await?;
    Ok(axum::Json(list))
}

/// A message id: the `webhook-id` (`msg_` + 32 hex digits) or the event's UUID.
fn message(msg: &str) -> Result<EventId, ApiError> {
    msg.strip_prefix("msg_")
        .unwrap_or(msg)
        .parse::<uuid::Uuid>()
        .map(EventId)
        .map_err(|_| {
            Problem::field(
                StatusCode::BAD_REQUEST,
                "invalid_path_parameter",
                "msg",
                "must be a webhook-id (msg_…) or an event UUID",
            )
            .into()
        })
}

/// Send one message to the endpoint again (same `webhook-id`).
#[utoipa::path(post, path = "/webhooks/{id}/deliveries/{msg}/resend", tag = "admin",
    params(("id" = EndpointId, Path, description = "The endpoint id"),
           ("msg" = String, Path, description = "The webhook-id (`msg_…`) or event id")),
    responses((status = 202, description = "Queued", body = Queued)))]
pub(crate) async fn resend_delivery(
    State(s): State<AppState>,
    a: Admin,
    Path((id, msg)): Path<(EndpointId, String)>,
) -> ApiResult<impl IntoResponse> {
    let event_id = message(&msg)?;
    ws(&s, &a).webhooks().resend(id, event_id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Queued { event_id })))
}

// ---- Notification channels ----

/// List notification channels (their configuration is never shown).
#[utoipa::path(get, path = "/notifications", tag = "admin",
    responses((status = 200, description = "The channels", body = Vec<Channel>)))]
pub(crate) async fn list_channels(
    State(s): State<AppState>,
    a: Admin,
) -> ApiResult<axum::Json<Vec<Channel>>> {
    Ok(axum::Json(ws(&s, &a).notifications().list().await?))
}

/// Create a notification channel (its plugin checks the configuration).
#[utoipa::path(post, path = "/notifications", tag = "admin", request_body = NewChannel,
    responses((status = 201, description = "The channel", body = Channel)))]
pub(crate) async fn create_channel(
    State(s): State<AppState>,
    a: Admin,
    Json(input): Json<NewChannel>,
) -> ApiResult<impl IntoResponse> {
    let c = ws(&s, &a)
        .notifications()
        .with_actor(actor(&a))
        .create(input)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(c)))
}

/// Change a channel.
#[utoipa::path(patch, path = "/notifications/{id}", tag = "admin", request_body = ChannelPatch,
    params(("id" = ChannelId, Path, description = "The channel id")),
    responses((status = 200, description = "The channel", body = Channel)))]
pub(crate) async fn update_channel(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<ChannelId>,
    Json(patch): Json<ChannelPatch>,
) -> ApiResult<axum::Json<Channel>> {
    Ok(axum::Json(
        ws(&s, &a)
            .notifications()
            .with_actor(actor(&a))
            .update(id, patch)
            .await?,
    ))
}

/// Delete a channel.
#[utoipa::path(delete, path = "/notifications/{id}", tag = "admin",
    params(("id" = ChannelId, Path, description = "The channel id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_channel(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<ChannelId>,
) -> ApiResult<StatusCode> {
    ws(&s, &a)
        .notifications()
        .with_actor(actor(&a))
        .delete(id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a test notification through the channel.
#[utoipa::path(post, path = "/notifications/{id}/test", tag = "admin",
    params(("id" = ChannelId, Path, description = "The channel id")),
    responses((status = 202, description = "Queued", body = Queued)))]
pub(crate) async fn test_channel(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<ChannelId>,
) -> ApiResult<impl IntoResponse> {
    let event_id = ws(&s, &a).notifications().test(id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Queued { event_id })))
}

// ---- Integrations ----

/// The providers a workspace can configure, and the ones it did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IntegrationList {
    /// The providers this server has, with their settings.
    providers: Vec<ProviderInfo>,
    /// The workspace's integrations (secrets never shown).
    integrations: Vec<Integration>,
}

/// What `PUT /integrations/{kind}` saves.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"settings": {"webhook_secret": "a-long-random-secret",
    "booking_link": "https://cal.com/acme/intro"}}))]
#[serde(deny_unknown_fields)]
pub(crate) struct IntegrationInput {
    /// Every non-secret setting (those left out are cleared); secrets left out keep
    /// their saved value.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    settings: providers::Settings,
}

/// The providers and the workspace's integrations (secrets never shown: only the
/// names of those set).
#[utoipa::path(get, path = "/integrations", tag = "admin",
    responses((status = 200, description = "Providers and integrations", body = IntegrationList)))]
pub(crate) async fn list_integrations(
    State(s): State<AppState>,
    a: Admin,
) -> ApiResult<axum::Json<IntegrationList>> {
    Ok(axum::Json(IntegrationList {
        providers: s.crm.providers(),
        integrations: ws(&s, &a).integrations().list().await?,
    }))
}

/// One integration of the workspace (secrets never shown).
#[utoipa::path(get, path = "/integrations/{kind}", tag = "admin",
    params(("kind" = String, Path, description = "The provider kind, e.g. `openai`")),
    responses((status = 200, description = "The integration", body = Integration)))]
pub(crate) async fn get_integration(
    State(s): State<AppState>,
    a: Admin,
    Path(kind): Path<String>,
) -> ApiResult<axum::Json<Integration>> {
    Ok(axum::Json(ws(&s, &a).integrations().get(&kind).await?))
}

/// Save the workspace's settings for a provider, after the provider accepted them
/// (credentials it refuses: 422 naming the field, nothing saved; a provider that
/// cannot be asked: 502). Audited; secrets are never shown again.
#[utoipa::path(put, path = "/integrations/{kind}", tag = "admin", request_body = IntegrationInput,
    params(("kind" = String, Path, description = "The provider kind, e.g. `openai`")),
    responses((status = 200, description = "The integration", body = Integration)))]
pub(crate) async fn save_integration(
    State(s): State<AppState>,
    a: Admin,
    Path(kind): Path<String>,
    Json(input): Json<IntegrationInput>,
) -> ApiResult<axum::Json<Integration>> {
    let saved = ws(&s, &a)
        .integrations()
        .save(Actor::User(a.0.user.id), &kind, input.settings)
        .await?;
    Ok(axum::Json(saved))
}

/// Delete an integration: the server's defaults apply again, and its inbound route
/// stops answering.
#[utoipa::path(delete, path = "/integrations/{kind}", tag = "admin",
    params(("kind" = String, Path, description = "The provider kind")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_integration(
    State(s): State<AppState>,
    a: Admin,
    Path(kind): Path<String>,
) -> ApiResult<StatusCode> {
    ws(&s, &a)
        .integrations()
        .delete(Actor::User(a.0.user.id), &kind)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- Settings ----

/// An inbound integration's settings, secrets masked.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InboundSettings {
    /// Whether the route accepts requests.
    configured: bool,
    /// The signing secret, masked: `••••` (with its last 4 characters only when the
    /// operator allowed it, `Config::secret_tails_in_settings`).
    secret: Option<String>,
}

/// What the workspace and the server are set to.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Settings {
    /// The workspace.
    workspace: WorkspaceInfo,
    /// Whether self-service registration is open.
    registration: bool,
    /// Browser origins allowed by CORS and the CSRF check.
    allowed_origins: Vec<String>,
    /// What lead budgets, project types and sources may be.
    allowed_values: AllowedValues,
    /// WhatsApp inbound.
    whatsapp: InboundSettings,
    /// Cal.com inbound.
    calcom: InboundSettings,
}

/// `••••`, and with `tail` its last 4 characters (all masked when the secret is short).
fn mask(secret: &str, tail: bool) -> String {
    let n = secret.chars().count();
    if !tail || n <= 8 {
        return "••••".into();
    }
    let tail: String = secret.chars().skip(n - 4).collect();
    format!("••••{tail}")
}

async fn settings(s: &AppState, a: &Admin) -> ApiResult<Settings> {
    let inbound = |secret: Option<&crm_core::SecretString>| InboundSettings {
        configured: secret.is_some(),
        secret: secret.map(|x| mask(x.expose(), s.cfg.secret_tails)),
    };
    Ok(Settings {
        workspace: ws(s, a).info().await?,
        registration: s.cfg.registration,
        allowed_origins: s
            .cfg
            .allowed_origins
            .iter()
            .filter_map(|o| o.to_str().ok().map(str::to_owned))
            .collect(),
        allowed_values: s.crm.allowed_values().clone(),
        whatsapp: inbound(s.cfg.whatsapp.as_ref().map(|w| &w.0)),
        calcom: inbound(s.cfg.calcom.as_ref()),
    })
}

/// The workspace's settings and the server's (secrets masked).
#[utoipa::path(get, path = "/settings", tag = "admin",
    responses((status = 200, description = "Settings", body = Settings)))]
pub(crate) async fn get_settings(
    State(s): State<AppState>,
    a: Admin,
) -> ApiResult<axum::Json<Settings>> {
    Ok(axum::Json(settings(&s, &a).await?))
}

/// What `PATCH /settings` may change (the rest is the server's configuration).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"workspace_name": "Acme Studio"}))]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SettingsPatch {
    /// A new workspace name.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    workspace_name: Option<String>,
}

/// Change the workspace's settings.
#[utoipa::path(patch, path = "/settings", tag = "admin", request_body = SettingsPatch,
    responses((status = 200, description = "Settings", body = Settings)))]
pub(crate) async fn update_settings(
    State(s): State<AppState>,
    a: Admin,
    Json(patch): Json<SettingsPatch>,
) -> ApiResult<axum::Json<Settings>> {
    if let Some(name) = &patch.workspace_name {
        ws(&s, &a).rename(name).await?;
    }
    Ok(axum::Json(settings(&s, &a).await?))
}

// ---- Users and audit ----

/// List the workspace's users.
#[utoipa::path(get, path = "/users", tag = "admin",
    responses((status = 200, description = "Users", body = Vec<User>)))]
pub(crate) async fn list_users(
    State(s): State<AppState>,
    a: Admin,
) -> ApiResult<axum::Json<Vec<User>>> {
    Ok(axum::Json(ws(&s, &a).auth().users().await?))
}

/// Add a user (role `member` unless given).
#[utoipa::path(post, path = "/users", tag = "admin", request_body = NewUser,
    responses((status = 201, description = "The user", body = User)))]
pub(crate) async fn create_user(
    State(s): State<AppState>,
    a: Admin,
    Json(input): Json<NewUser>,
) -> ApiResult<impl IntoResponse> {
    let u = ws(&s, &a)
        .auth()
        .create_user(input, Actor::User(a.0.user.id))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(u)))
}

/// Input of `PATCH /users/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"role": "member"}))]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatch {
    /// `owner`, `admin` or `member`.
    #[schema(value_type = crm_core::auth::Role)]
    role: String,
}

/// Change a user's role.
#[utoipa::path(patch, path = "/users/{id}", tag = "admin", request_body = UserPatch,
    params(("id" = UserId, Path, description = "The user id")),
    responses((status = 200, description = "The user", body = User)))]
pub(crate) async fn update_user(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<UserId>,
    Json(patch): Json<UserPatch>,
) -> ApiResult<axum::Json<User>> {
    let u = ws(&s, &a)
        .auth()
        .set_role(id, &patch.role, Actor::User(a.0.user.id))
        .await?;
    Ok(axum::Json(u))
}

/// Delete a user with their sessions and tokens (never oneself, never the last
/// active owner; an owner only by an owner).
#[utoipa::path(delete, path = "/users/{id}", tag = "admin",
    params(("id" = UserId, Path, description = "The user id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_user(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<UserId>,
) -> ApiResult<StatusCode> {
    ws(&s, &a)
        .auth()
        .delete_user(id, Actor::User(a.0.user.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disable a user: their sessions and mailed links end at once, and they cannot sign
/// in or reset their password until enabled (never oneself, never the last active
/// owner; an owner only by an owner).
#[utoipa::path(post, path = "/users/{id}/disable", tag = "admin",
    params(("id" = UserId, Path, description = "The user id")),
    responses((status = 200, description = "The user, disabled", body = User)))]
pub(crate) async fn disable_user(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<UserId>,
) -> ApiResult<axum::Json<User>> {
    let u = ws(&s, &a)
        .auth()
        .disable_user(id, Actor::User(a.0.user.id))
        .await?;
    Ok(axum::Json(u))
}

/// Enable a disabled user again.
#[utoipa::path(post, path = "/users/{id}/enable", tag = "admin",
    params(("id" = UserId, Path, description = "The user id")),
    responses((status = 200, description = "The user, enabled", body = User)))]
pub(crate) async fn enable_user(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<UserId>,
) -> ApiResult<axum::Json<User>> {
    let u = ws(&s, &a)
        .auth()
        .enable_user(id, Actor::User(a.0.user.id))
        .await?;
    Ok(axum::Json(u))
}

/// Sign a user out everywhere: end every session of theirs.
#[utoipa::path(delete, path = "/users/{id}/sessions", tag = "admin",
    params(("id" = UserId, Path, description = "The user id")),
    responses((status = 204, description = "Their sessions ended")))]
pub(crate) async fn end_user_sessions(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<UserId>,
) -> ApiResult<StatusCode> {
    ws(&s, &a)
        .auth()
        .end_user_sessions(id, Actor::User(a.0.user.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lift a user's login lockout (and forget their failed attempts).
#[utoipa::path(delete, path = "/users/{id}/lockout", tag = "admin",
    params(("id" = UserId, Path, description = "The user id")),
    responses((status = 204, description = "The lockout is lifted")))]
pub(crate) async fn lift_lockout(
    State(s): State<AppState>,
    a: Admin,
    Path(id): Path<UserId>,
) -> ApiResult<StatusCode> {
    ws(&s, &a)
        .auth()
        .lift_lockout(id, Actor::User(a.0.user.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditPage {
    /// The id of the last entry of the previous page.
    after: Option<AuditId>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000, example = 100)]
    limit: Option<u32>,
}

/// The audit log, oldest first.
#[utoipa::path(get, path = "/audit", tag = "admin", params(AuditPage),
    responses((status = 200, description = "Entries", body = Vec<AuditEntry>)))]
pub(crate) async fn audit_log(
    State(s): State<AppState>,
    a: Admin,
    Query(p): Query<AuditPage>,
) -> ApiResult<axum::Json<Vec<AuditEntry>>> {
    let list = ws(&s, &a)
        .audit_log(p.after, p.limit.unwrap_or(100))
        .await?;
    Ok(axum::Json(list))
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn secrets_show_no_part_unless_the_operator_opts_in() {
        assert_eq!(mask("wa-secret-for-tests", false), "••••");
        assert_eq!(mask("wa-secret-for-tests", true), "••••ests");
        assert_eq!(mask("short", true), "••••");
    }
}
