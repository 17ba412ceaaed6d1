//! The route families and their guards (see `guard.rs`). Handlers take the input,
//! call one service method and map the result.

use axum::extract::State;
use axum::middleware::from_fn_with_state;
use chrono::{DateTime, Utc};
use crm_core::api_keys::ApiKey as ApiKeyInfo;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::ApiKey;
use crate::openapi::{self, mark, Family};
use crate::problem::ApiResult;
use crate::{guard, pages, AppState};

pub(crate) mod admin;
pub(crate) mod attachments;
pub(crate) mod auth;
pub(crate) mod contacts;
pub(crate) mod imports;
#[cfg(any(feature = "whatsapp", feature = "calcom"))]
pub(crate) mod inbound;
pub(crate) mod leads;
#[cfg(feature = "oidc")]
pub(crate) mod oidc;

/// Every route, each family behind its guard.
pub(crate) fn all(root: OpenApiRouter<AppState>, s: &AppState) -> OpenApiRouter<AppState> {
    let public = OpenApiRouter::new()
        .routes(routes!(leads::contact))
        .route_layer(from_fn_with_state(s.clone(), guard::public));
    let mut public_auth = OpenApiRouter::new()
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::password_reset))
        .routes(routes!(auth::password_reset_confirm))
        .routes(routes!(auth::verify_email))
        .routes(routes!(auth::resend_verification))
        .route(
            "/auth/verify-email",
            axum::routing::get(pages::verify_email_page).post(pages::verify_email_submit),
        )
        .route(
            "/auth/reset-password",
            axum::routing::get(pages::reset_password_page).post(pages::reset_password_submit),
        );
    if s.cfg.registration {
        public_auth = public_auth.routes(routes!(auth::register));
    }
    #[cfg(feature = "oidc")]
    {
        // Browser routes (redirects and cookies), not JSON API operations: like the
        // sign-in pages, they stay out of the OpenAPI document.
        public_auth = public_auth
            .route(
                "/api/auth/oidc/{workspace_id}/{provider}",
                axum::routing::get(oidc::start),
            )
            .route(
                "/api/auth/oidc/{workspace_id}/{provider}/callback",
                axum::routing::get(oidc::callback),
            );
    }
    let public_auth = public_auth.route_layer(from_fn_with_state(s.clone(), guard::public_auth));
    let api = OpenApiRouter::new()
        .nest(
            "/api/v1",
            leads::router()
                .merge(contacts::router())
                .merge(attachments::router(s))
                .routes(routes!(me)),
        )
        .route_layer(from_fn_with_state(s.clone(), guard::api_key));
    // The lead routes are served twice: their operation ids must stay unique.
    let session_leads = openapi::prefix_ids(
        leads::router()
            .merge(contacts::router())
            .merge(attachments::router(s)),
        "session_",
    );
    let session = OpenApiRouter::new()
        .routes(routes!(auth::me))
        .routes(routes!(auth::change_password))
        .routes(routes!(auth::logout_everywhere))
        .routes(routes!(auth::sessions))
        .routes(routes!(auth::end_session))
        .nest("/api/admin", session_leads.merge(admin::router()))
        .route_layer(from_fn_with_state(s.clone(), guard::session));
    let root = root
        .merge(mark(
            OpenApiRouter::new()
                .routes(routes!(health))
                .routes(routes!(ready))
                .merge(attachments::public_router()),
            Family::Open,
        ))
        .merge(mark(public, Family::Public))
        .merge(mark(public_auth, Family::Public))
        .merge(mark(api, Family::Api))
        .merge(mark(session, Family::Session));
    #[cfg(any(feature = "whatsapp", feature = "calcom"))]
    let root = root.merge(mark(inbound::router(s), Family::Inbound));
    root
}

/// What `GET /api/v1/health` answers: the process is up.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`: an answer at all is the news.
    status: &'static str,
    /// The crm version.
    version: &'static str,
    /// The server's time (UTC).
    timestamp: DateTime<Utc>,
}

/// Liveness: the process answers. Touches no database, so a database outage does
/// not make an orchestrator restart healthy processes (use `/api/v1/ready` to take
/// traffic away). Not rate limited.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, description = "Up", body = Health)))]
pub(crate) async fn health(State(s): State<AppState>) -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        timestamp: s.crm.now(),
    })
}

/// What `GET /api/v1/ready` answers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    /// `ok`, or `unavailable` when the database does not answer.
    status: &'static str,
    /// Whether the database answered.
    database: bool,
}

/// Readiness: the database answers (one round trip). 503 when it does not, so a
/// load balancer sends traffic elsewhere. Not rate limited.
#[utoipa::path(get, path = "/api/v1/ready", tag = "health",
    responses((status = 200, description = "Ready", body = Ready),
              (status = 503, description = "The database does not answer", body = Ready)))]
pub(crate) async fn ready(
    State(s): State<AppState>,
) -> (axum::http::StatusCode, axum::Json<Ready>) {
    let database = s.crm.ping().await.is_ok();
    let status = if database {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(Ready {
            status: if database { "ok" } else { "unavailable" },
            database,
        }),
    )
}

/// The calling API key's metadata.
#[utoipa::path(get, path = "/me", tag = "leads", operation_id = "api_key_me",
    responses((status = 200, description = "The key (never its secret)", body = ApiKeyInfo)))]
pub(crate) async fn me(
    State(s): State<AppState>,
    ApiKey(k): ApiKey,
) -> ApiResult<axum::Json<ApiKeyInfo>> {
    let key = s
        .crm
        .workspace(k.workspace_id)
        .api_keys()
        .get(k.key_id)
        .await?;
    Ok(axum::Json(key))
}
