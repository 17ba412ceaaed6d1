//! The pages a mailed link opens: `GET /auth/verify-email?token=…` and
//! `GET /auth/reset-password?token=…`. Opening a link consumes nothing (mail
//! scanners fetch links); the page asks for a button press (and, for a reset, the
//! new password), whose POST goes through the same CSRF check and per-IP budget as
//! the JSON auth routes. An unknown, used or expired token gets one neutral page.
//! HTML from `maud` (every value escaped), no script, no style from elsewhere:
//! `Content-Security-Policy: default-src 'self'`; never cached, never framed, a
//! referrer only to the same origin (the token is in the address). Not in the
//! OpenAPI document.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use crate::AppState;

/// The token in a link's query (absent or malformed: the neutral page).
#[derive(Deserialize)]
pub(crate) struct Link {
    #[serde(default)]
    token: String,
}

/// The confirmation form of an email verification.
#[derive(Deserialize)]
pub(crate) struct VerifyForm {
    #[serde(default)]
    token: String,
}

/// The form of a password reset.
#[derive(Deserialize)]
pub(crate) struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

/// A page with the security headers every one of them carries.
fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) }
            }
            body {
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    html_response(status, doc)
}

/// An HTML page with the headers every page of the router carries (these link
/// pages and the admin app's): `Content-Security-Policy: default-src 'self'` (no
/// inline script or style, nothing from elsewhere), never framed, never cached, a
/// referrer to the same origin only.
pub(crate) fn html_response(status: StatusCode, doc: Markup) -> Response {
    let mut res = (status, doc.into_string()).into_response();
    let h = res.headers_mut();
    let set = |v: &'static str| HeaderValue::from_static(v);
    h.insert(header::CONTENT_TYPE, set("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        set("default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"),
    );
    // Not `no-referrer`: under it a browser sends `Origin: null` with a form's POST,
    // which the CSRF check refuses. No page links to or loads from another origin, so
    // a token in a link page's address goes nowhere else either way.
    h.insert(header::REFERRER_POLICY, set("same-origin"));
    h.insert(header::CACHE_CONTROL, set("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, set("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, set("DENY"));
    res
}

/// The one answer for a token that is malformed, unknown, used or expired.
fn invalid_link() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This link does not work",
        html! {
            p { "The link is invalid, already used or expired. Ask for a new one from the sign-in page." }
        },
    )
}

/// Whether a token has the shape of one crm mails (43 base64url characters); the
/// service checks it again, this only keeps junk out of the page.
fn well_formed(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET /auth/verify-email?token=…`: the button that confirms.
pub(crate) async fn verify_email_page(Query(link): Query<Link>) -> Response {
    if !well_formed(&link.token) {
        return invalid_link();
    }
    page(
        StatusCode::OK,
        "Confirm your email",
        html! {
            form method="post" action="verify-email" {
                input type="hidden" name="token" value=(link.token);
                p { "Press the button to confirm that this address is yours." }
                button type="submit" { "Confirm my email" }
            }
        },
    )
}

/// `POST /auth/verify-email`: confirms, or the neutral page.
pub(crate) async fn verify_email_submit(
    State(s): State<AppState>,
    Form(form): Form<VerifyForm>,
) -> Response {
    match s.crm.confirm_email(&form.token).await {
        Ok(_) => page(
            StatusCode::OK,
            "Your email is confirmed",
            html! { p { "Thank you. You can close this page and sign in." } },
        ),
        Err(crm_core::Error::Unauthorized { .. }) => invalid_link(),
        Err(e) => failed(&e),
    }
}

/// The reset form, with `error` next to the field it is about.
fn reset_form(status: StatusCode, token: &str, error: Option<(&str, &str)>) -> Response {
    let says = |field: &str| {
        error
            .filter(|(f, _)| *f == field)
            .map(|(_, m)| m.to_owned())
    };
    let (new_error, confirm_error) = (says("new_password"), says("confirm_password"));
    page(
        status,
        "Choose a new password",
        html! {
            form method="post" action="reset-password" {
                input type="hidden" name="token" value=(token);
                p { "At least 12 characters, with upper and lower case letters, a digit and a symbol." }
                (password_field("new_password", "New password", new_error))
                (password_field("confirm_password", "The same again", confirm_error))
                button type="submit" { "Set the new password" }
            }
        },
    )
}

/// A labelled new-password field, with its error (if any) next to it and tied to it
/// for screen readers.
fn password_field(id: &str, label: &str, error: Option<String>) -> Markup {
    let error_id = format!("{id}_error");
    html! {
        p {
            label for=(id) { (label) }
            br;
            input type="password" id=(id) name=(id) autocomplete="new-password" required
                aria-invalid=[error.as_ref().map(|_| "true")]
                aria-describedby=[error.as_ref().map(|_| error_id.as_str())];
            @if let Some(m) = &error {
                br;
                span id=(error_id) role="alert" { (m) }
            }
        }
    }
}

/// `GET /auth/reset-password?token=…`: the form for the new password.
pub(crate) async fn reset_password_page(Query(link): Query<Link>) -> Response {
    if !well_formed(&link.token) {
        return invalid_link();
    }
    reset_form(StatusCode::OK, &link.token, None)
}

/// `POST /auth/reset-password`: sets the password, or says what is wrong next to
/// the field, or the neutral page for a token that does not work.
pub(crate) async fn reset_password_submit(
    State(s): State<AppState>,
    Form(form): Form<ResetForm>,
) -> Response {
    if !well_formed(&form.token) {
        return invalid_link();
    }
    let bad = StatusCode::UNPROCESSABLE_ENTITY;
    if form.new_password != form.confirm_password {
        let error = ("confirm_password", "must be the same as the new password");
        return reset_form(bad, &form.token, Some(error));
    }
    match s
        .crm
        .confirm_password_reset(&form.token, &form.new_password)
        .await
    {
        Ok(_) => page(
            StatusCode::OK,
            "Your password is changed",
            html! { p { "Every session was signed out. Sign in with the new password." } },
        ),
        Err(crm_core::Error::Unauthorized { .. }) => invalid_link(),
        Err(crm_core::Error::Validation { errors }) => {
            let message = errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            reset_form(bad, &form.token, Some(("new_password", &message)))
        }
        Err(e) => failed(&e),
    }
}

/// Anything else (the database is down, the budget is spent): a page with the
/// status and words the API would answer (logged as the API logs it).
fn failed(e: &crm_core::Error) -> Response {
    let p = crate::problem::problem_of(e);
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    page(
        status,
        "Something went wrong",
        html! { p { (p.detail.unwrap_or_default()) ". Please try again in a moment." } },
    )
}
