//! Session routes under `/api/auth`: login sets the session cookie (HttpOnly, Secure,
//! SameSite=Lax), logout clears it.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_core::auth::{LoggedIn, Login, NewUser, Session, SignIn, User, WorkspaceChoice};
use crm_core::{SessionId, WorkspaceId, WorkspaceInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{ClientIp, Json, SessionUser};
use crate::guard::session_token;
use crate::problem::ApiResult;
use crate::AppState;

/// A signed-in user and their session.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Me {
    /// The user.
    user: User,
    /// The session (the token is only in the cookie).
    session: Session,
}

/// Input of `POST /api/auth/login`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "sam@example.com", "password": "Correct-Horse-9-Battery", "remember_me": true}))]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginInput {
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(schema_with = crm_core::openapi::password)]
    password: String,
    /// A 30-day session instead of 24 hours.
    #[serde(default)]
    remember_me: bool,
    /// The user's workspace. Absent: the email's account in whichever workspace
    /// has it; when several accounts of the email have this password, the answer
    /// lists their workspaces to choose from and no one is signed in.
    #[serde(default)]
    workspace_id: Option<WorkspaceId>,
}

/// The answer of `POST /api/auth/login`: signed in, or (without a `workspace_id`)
/// the workspaces to choose from.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum SignedIn {
    /// Signed in; the session cookie is set.
    Me(Box<Me>),
    /// Several accounts of the email have this password: sign in again with one of
    /// these `workspace_id`s. No cookie is set.
    Choose {
        /// The workspaces (id and name), oldest account first.
        choose_workspace: Vec<WorkspaceChoice>,
    },
}

fn cookie(s: &AppState, value: &str, max_age: Option<i64>) -> HeaderValue {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax",
        s.cfg.cookie_name
    );
    if s.cfg.cookie_secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    // The value is base64url and the name is the configured one: always a valid header.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Sign in; sets the session cookie. Without a `workspace_id`, the email's account
/// is found in whichever workspace has it; when several of its accounts have this
/// password, the answer lists their workspaces (`choose_workspace`) and sets no
/// cookie.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginInput,
    responses((status = 200, description = "Signed in (the session cookie is set), or the workspaces to choose from", body = SignedIn)))]
pub(crate) async fn login(
    State(s): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(input): Json<LoginInput>,
) -> ApiResult<Response> {
    let login = Login {
        email: input.email,
        password: input.password,
        remember_me: input.remember_me,
        ip: ip.0,
        user_agent: user_agent(&headers),
    };
    let done = match sign_in(&s, input.workspace_id, login).await? {
        SignIn::SignedIn(done) => *done,
        SignIn::ChooseWorkspace(choose_workspace) => {
            return Ok(axum::Json(SignedIn::Choose { choose_workspace }).into_response())
        }
    };
    let set = session_cookie(&s, &done);
    let me = SignedIn::Me(Box::new(Me {
        user: done.user,
        session: done.session,
    }));
    let mut res = axum::Json(me).into_response();
    res.headers_mut().insert(header::SET_COOKIE, set);
    Ok(res)
}

/// The client's `User-Agent`, kept with its session.
pub(crate) fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Signs in to `workspace`, or to whichever workspace has the email's account
/// ([`SignIn::ChooseWorkspace`] when several do): the sign-in of the API and of the
/// admin pages.
pub(crate) async fn sign_in(
    s: &AppState,
    workspace: Option<crm_core::WorkspaceId>,
    login: Login,
) -> Result<SignIn, crm_core::Error> {
    match workspace {
        Some(ws) => {
            let done = s.crm.workspace(ws).auth().login(login).await?;
            Ok(SignIn::SignedIn(Box::new(done)))
        }
        None => s.crm.sign_in(login).await,
    }
}

/// Ends the session the cookie names (an unknown or expired one is already signed
/// out) and gives the `Set-Cookie` that clears the cookie: the sign-out of the API
/// and of the admin pages.
pub(crate) async fn sign_out(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<HeaderValue, crm_core::Error> {
    if let Some(token) = session_token(s, headers) {
        match s.crm.logout(token).await {
            Ok(()) | Err(crm_core::Error::Unauthorized { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(cookie(s, "", Some(0)))
}

/// The cookie of a new session (with a `Max-Age` for a remember-me one).
pub(crate) fn session_cookie(s: &AppState, done: &LoggedIn) -> HeaderValue {
    let max_age = done
        .session
        .remember
        .then(|| (done.session.absolute_expires_at - done.session.created_at).num_seconds());
    cookie(s, done.token.expose(), max_age)
}

/// Sign out (ends the session when the cookie names one) and clear the cookie.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 204, description = "Signed out")))]
pub(crate) async fn logout(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let clear = sign_out(&s, &headers).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(header::SET_COOKIE, clear);
    Ok(res)
}

/// Sign out everywhere: ends every session of the signed-in user (this one too) and
/// clears the cookie.
#[utoipa::path(post, path = "/api/auth/logout-everywhere", tag = "auth",
    responses((status = 204, description = "Every session of the user ended")))]
pub(crate) async fn logout_everywhere(
    State(s): State<AppState>,
    headers: HeaderMap,
    _user: SessionUser,
) -> ApiResult<Response> {
    if let Some(token) = session_token(&s, &headers) {
        s.crm.logout_everywhere(token).await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, cookie(&s, "", Some(0)));
    Ok(res)
}

/// One of the signed-in user's sessions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionInfo {
    #[serde(flatten)]
    session: Session,
    /// Whether this is the session making the request.
    current: bool,
}

/// The signed-in user's live sessions, newest first: when and where each was opened
/// and last used, never its token.
#[utoipa::path(get, path = "/api/auth/sessions", tag = "auth",
    responses((status = 200, description = "The sessions", body = Vec<SessionInfo>)))]
pub(crate) async fn sessions(
    State(s): State<AppState>,
    SessionUser(u): SessionUser,
) -> ApiResult<axum::Json<Vec<SessionInfo>>> {
    let all = s
        .crm
        .workspace(u.user.workspace_id)
        .auth()
        .sessions(u.user.id)
        .await?;
    Ok(axum::Json(
        all.into_iter()
            .map(|session| SessionInfo {
                current: session.id == u.session.id,
                session,
            })
            .collect(),
    ))
}

/// End one of the signed-in user's sessions (the cookie is cleared when it is this
/// one). 404 for a session that is not theirs.
#[utoipa::path(delete, path = "/api/auth/sessions/{id}", tag = "auth",
    params(("id" = SessionId, Path, description = "The session id")),
    responses((status = 204, description = "The session ended")))]
pub(crate) async fn end_session(
    State(s): State<AppState>,
    SessionUser(u): SessionUser,
    Path(id): Path<SessionId>,
) -> ApiResult<Response> {
    s.crm
        .workspace(u.user.workspace_id)
        .auth()
        .end_session(u.user.id, id)
        .await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    if id == u.session.id {
        res.headers_mut()
            .insert(header::SET_COOKIE, cookie(&s, "", Some(0)));
    }
    Ok(res)
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, description = "The user and session", body = Me)))]
pub(crate) async fn me(SessionUser(u): SessionUser) -> axum::Json<Me> {
    axum::Json(Me {
        user: u.user,
        session: u.session,
    })
}

/// Input of `POST /api/auth/change-password`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"current_password": "Correct-Horse-9-Battery", "new_password": "Amber-Lantern-7-Quay"}))]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangePassword {
    #[schema(schema_with = crm_core::openapi::password)]
    current_password: String,
    #[schema(schema_with = crm_core::openapi::new_password)]
    new_password: String,
}

/// Change the password; ends the user's other sessions.
#[utoipa::path(post, path = "/api/auth/change-password", tag = "auth", request_body = ChangePassword,
    responses((status = 204, description = "Changed")))]
pub(crate) async fn change_password(
    State(s): State<AppState>,
    SessionUser(u): SessionUser,
    Json(input): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    s.crm
        .workspace(u.user.workspace_id)
        .auth()
        .change_password(
            u.user.id,
            &input.current_password,
            &input.new_password,
            Some(u.session.id),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Input of `POST /api/auth/password-reset` and `POST /api/auth/verify-email/request`:
/// who the mail is for.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "sam@example.com"}))]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetRequest {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// The user's workspace. Absent: the email's accounts in every workspace (each
    /// gets its own mail).
    #[serde(default)]
    workspace_id: Option<WorkspaceId>,
}

/// Ask for a password-reset mail. Answers the same whether or not the email is known.
#[utoipa::path(post, path = "/api/auth/password-reset", tag = "auth", request_body = ResetRequest,
    responses((status = 202, description = "A mail is on its way if the email is known")))]
pub(crate) async fn password_reset(
    State(s): State<AppState>,
    Json(input): Json<ResetRequest>,
) -> ApiResult<StatusCode> {
    match input.workspace_id {
        Some(ws) => {
            s.crm
                .workspace(ws)
                .auth()
                .request_password_reset(&input.email)
                .await?
        }
        None => s.crm.request_password_reset(&input.email).await?,
    }
    Ok(StatusCode::ACCEPTED)
}

/// Input of `POST /api/auth/password-reset/confirm`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"token": "q3Zx0bM2hVfJ9wYtL4nR8sK1pD6cE5aG7uI0oWjXyZA", "new_password": "Amber-Lantern-7-Quay"}))]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetConfirm {
    /// The token from the mail.
    #[schema(schema_with = crm_core::openapi::token)]
    token: String,
    #[schema(schema_with = crm_core::openapi::new_password)]
    new_password: String,
}

/// Set a new password with the token from the mail; ends every session.
#[utoipa::path(post, path = "/api/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 200, description = "The user, with the new password set", body = User)))]
pub(crate) async fn password_reset_confirm(
    State(s): State<AppState>,
    Json(input): Json<ResetConfirm>,
) -> ApiResult<axum::Json<User>> {
    let user = s
        .crm
        .confirm_password_reset(&input.token, &input.new_password)
        .await?;
    Ok(axum::Json(user))
}

/// Input of `POST /api/auth/verify-email`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"token": "q3Zx0bM2hVfJ9wYtL4nR8sK1pD6cE5aG7uI0oWjXyZA"}))]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyEmail {
    /// The token from the mail.
    #[schema(schema_with = crm_core::openapi::token)]
    token: String,
}

/// Confirm an email address with the token from the mail.
#[utoipa::path(post, path = "/api/auth/verify-email", tag = "auth", request_body = VerifyEmail,
    responses((status = 200, description = "The user, verified", body = User)))]
pub(crate) async fn verify_email(
    State(s): State<AppState>,
    Json(input): Json<VerifyEmail>,
) -> ApiResult<axum::Json<User>> {
    Ok(axum::Json(s.crm.confirm_email(&input.token).await?))
}

/// Ask for another verification mail. Answers the same whether or not the email is
/// known (or already verified); at most 5 mails an hour per account.
#[utoipa::path(post, path = "/api/auth/verify-email/request", tag = "auth", request_body = ResetRequest,
    responses((status = 202, description = "A mail is on its way if the email has an account to verify")))]
pub(crate) async fn resend_verification(
    State(s): State<AppState>,
    Json(input): Json<ResetRequest>,
) -> ApiResult<StatusCode> {
    match input.workspace_id {
        Some(ws) => {
            s.crm
                .workspace(ws)
                .auth()
                .resend_email_verification(&input.email)
                .await?
        }
        None => s.crm.resend_email_verification(&input.email).await?,
    }
    Ok(StatusCode::ACCEPTED)
}

/// Input of `POST /api/auth/register`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"workspace_name": "Acme Studio", "email": "owner@example.com", "display_name": "Ana López", "password": "Correct-Horse-9-Battery"}))]
#[serde(deny_unknown_fields)]
pub(crate) struct Register {
    /// The new workspace's name.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    workspace_name: String,
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    display_name: String,
    #[schema(schema_with = crm_core::openapi::new_password)]
    password: String,
}

/// A new workspace and its owner.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Registered {
    /// The workspace.
    workspace: WorkspaceInfo,
    /// The owner.
    user: User,
    /// The owner's session (the token is only in the cookie): registration signs in,
    /// unless the app requires a verified email first or the sign-in failed (then
    /// absent, and no cookie: sign in next).
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<Session>,
}

/// Sign up: a new workspace and its owner (only when the app enables registration).
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = Register,
    responses((status = 201, description = "Registered and signed in (the session cookie is set); 409 `email_taken` when the email has an account and the app allows one per email", body = Registered)))]
pub(crate) async fn register(
    State(s): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Json(input): Json<Register>,
) -> ApiResult<Response> {
    let password = input.password.clone();
    let user = s
        .crm
        .register(
            &input.workspace_name,
            NewUser {
                email: input.email,
                display_name: input.display_name,
                role: None,
                password: input.password,
            },
        )
        .await?;
    let workspace = s.crm.workspace(user.workspace_id).info().await?;
    // The new owner is signed in, as a sign-in with the same password would (not
    // when the app wants the email verified first: the mail is on its way).
    let signed_in = s
        .crm
        .workspace(user.workspace_id)
        .auth()
        .login(Login {
            email: user.email.as_str().to_owned(),
            password,
            remember_me: false,
            ip: ip.0,
            user_agent: headers
                .get(header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        })
        .await;
    // The account exists whatever happens here: a sign-in that fails (the IP's
    // budget is spent, the database hiccups) leaves it to the user, not a 5xx that
    // a retry would turn into 409 email_taken.
    let done = match signed_in {
        Ok(done) => Some(done),
        Err(crm_core::Error::Unauthorized {
            reason: crm_core::AuthFailure::EmailNotVerified,
        }) => None,
        Err(e) => {
            tracing::warn!(error = %crm_core::error::Chain(&e), "a new owner was not signed in");
            None
        }
    };
    let set = done.as_ref().map(|d| session_cookie(&s, d));
    let mut res = (
        StatusCode::CREATED,
        axum::Json(Registered {
            workspace,
            user,
            session: done.map(|d| d.session),
        }),
    )
        .into_response();
    if let Some(set) = set {
        res.headers_mut().insert(header::SET_COOKIE, set);
    }
    Ok(res)
}
