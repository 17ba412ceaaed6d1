//! The admin web app's rules over HTTP, without a browser (`tests/browser.rs` drives
//! one): the sign-in redirect and its `next`, CSRF on every form, the admin role on
//! the admin pages and actions, tenants, escaping, and the headers every page has.
//! Each refusal is checked to have written nothing.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use crm::auth::NewUser;
use crm::leads::NewLead;
use crm::WorkspaceId;

use crate::common::TestDb;
use crate::http::{get, req, App, Res, ORIGIN, PASSWORD};

/// A form POST with the session `cookie` (if any) from `origin` (if any).
fn form(path: &str, cookie: Option<&str>, origin: Option<&str>, body: &str) -> Request<Body> {
    let mut b =
        req(Method::POST, path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(body.to_owned())).expect("request")
}

fn page(path: &str, cookie: &str) -> Request<Body> {
    req(Method::GET, path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .expect("request")
}

fn location(r: &Res) -> &str {
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    r.header("location")
}

async fn lead(app: &App, ws: WorkspaceId, name: &str) -> crm::LeadId {
    app.crm
        .workspace(ws)
        .leads()
        .create(NewLead {
            name: name.into(),
            email: Some(format!("{}@example.com", uuid::Uuid::now_v7().simple())),
            ..NewLead::default()
        })
        .await
        .expect("lead")
        .id
}

async fn signed_out_pages_send_to_sign_in_and_back(db: &TestDb) {
    let app = App::new(db).await;
    app.user("owner@example.com", "owner").await;
    // A page without a session: the sign-in page, which knows where to come back.
    let r = app.send(get("/admin/leads?q=ana")).await;
    assert_eq!(location(&r), "/admin/login?next=%2Fadmin%2Fleads%3Fq%3Dana");
    let r = app.send(get("/admin/login?next=%2Fadmin%2Fleads")).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("value=\"/admin/leads\""), "{}", r.text);
    // A wrong password: 401, the email kept, the error next to the password, no cookie.
    let body = "email=owner%40example.com&password=nope&next=%2Fadmin";
    let r = app
        .send(form("/admin/login", None, Some(ORIGIN), body))
        .await;
    assert_eq!(r.status, 401);
    assert!(r.text.contains("value=\"owner@example.com\""));
    assert!(r.text.contains("id=\"f-password-error\""));
    assert_eq!(r.header("set-cookie"), "");
    // The sign-in form is a state change: refused from another origin.
    let right = format!("email=owner%40example.com&password={PASSWORD}&next=%2Fadmin%2Fleads");
    let r = app
        .send(form(
            "/admin/login",
            None,
            Some("https://evil.example"),
            &right,
        ))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.header("set-cookie"), "");
    // Signed in: the cookie, and back to the page asked for.
    let r = app
        .send(form("/admin/login", None, Some(ORIGIN), &right))
        .await;
    assert_eq!(location(&r), "/admin/leads");
    assert!(r.header("set-cookie").contains("HttpOnly"));
    // `next` never leaves the app: another host, a scheme-relative or backslashed
    // path, or the sign-in page itself go to the dashboard instead.
    for next in [
        "https%3A%2F%2Fevil.example%2F",
        "%2F%2Fevil.example%2Fadmin",
        "%2Fadmin%2F..%2F%2Fevil.example",
        "%2Fadmin%5C%40evil.example",
        "%2Fadminx",
        "%2Fadmin%2Flogin",
    ] {
        let body = format!("email=owner%40example.com&password={PASSWORD}&next={next}");
        let r = app
            .send(form("/admin/login", None, Some(ORIGIN), &body))
            .await;
        assert_eq!(location(&r), "/admin", "next={next}");
    }
}

async fn every_form_needs_the_same_origin_and_a_session(db: &TestDb) {
    let app = App::new(db).await;
    let cookie = app.admin().await;
    let body = "name=Ana&email=ana%40example.com";
    // From another origin, or with no origin at all: the 403 page, nothing written.
    for origin in [Some("https://evil.example"), None] {
        let r = app
            .send(form("/admin/leads", Some(&cookie), origin, body))
            .await;
        assert_eq!(r.status, 403, "{}", r.text);
        assert!(r.text.contains("This form was refused"));
    }
    // Without a session: to the sign-in page, nothing written.
    let r = app
        .send(form("/admin/leads", None, Some(ORIGIN), body))
        .await;
    assert!(location(&r).starts_with("/admin/login"));
    assert_eq!(db.count("crm_leads").await, 0);
    // The same form from the app's origin is taken.
    let r = app
        .send(form("/admin/leads", Some(&cookie), Some(ORIGIN), body))
        .await;
    assert!(location(&r).starts_with("/admin/leads/"));
    assert_eq!(db.count("crm_leads").await, 1);
    // A refused lead keeps what was typed, with the error next to its field.
    let bad = "name=Bo&phone=600+123&company=Bakery";
    let r = app
        .send(form("/admin/leads", Some(&cookie), Some(ORIGIN), bad))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("id=\"f-phone-error\""));
    assert!(r.text.contains("value=\"600 123\"") && r.text.contains("value=\"Bakery\""));
    assert_eq!(db.count("crm_leads").await, 1);
}

async fn members_get_the_403_page_on_admin_pages_and_actions(db: &TestDb) {
    let app = App::new(db).await;
    app.user("member@example.com", "member").await;
    let cookie = app.login("member@example.com").await;
    for path in [
        "/admin/api-keys",
        "/admin/webhooks",
        "/admin/notifications",
        "/admin/users",
        "/admin/settings",
        "/admin/audit",
    ] {
        let r = app.send(page(path, &cookie)).await;
        assert_eq!(r.status, 403, "{path}");
        assert!(r.text.contains("Not allowed"), "{path}");
        assert!(
            !r.text.contains("href=\"/admin/api-keys\""),
            "no admin entries"
        );
    }
    let actions = [
        ("/admin/api-keys", "name=mine&scopes=*"),
        ("/admin/webhooks", "url=https%3A%2F%2Fexample.com%2Fhook"),
        (
            "/admin/users",
            "email=x%40example.com&display_name=X&role=owner&password=Correct-Horse-42%21",
        ),
        ("/admin/settings", "name=Taken"),
    ];
    for (path, body) in actions {
        let r = app
            .send(form(path, Some(&cookie), Some(ORIGIN), body))
            .await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
    }
    // The actions on a listed user refuse a member with the 403 page too (not the
    // users page with a refusal on it).
    let me = app
        .crm
        .workspace(WorkspaceId::DEFAULT)
        .auth()
        .users()
        .await
        .expect("users")[0]
        .id;
    for action in ["role", "disable", "enable", "sessions"] {
        let path = format!("/admin/users/{me}/{action}");
        let r = app
            .send(form(&path, Some(&cookie), Some(ORIGIN), "role=owner"))
            .await;
        assert_eq!(r.status, 403, "{path}");
        assert!(
            r.text.contains("Not allowed") && !r.text.contains("id=\"users\""),
            "{path}"
        );
    }
    assert_eq!(db.count("crm_api_keys").await, 0);
    assert_eq!(db.count("crm_webhook_endpoints").await, 0);
    assert_eq!(db.count("crm_users").await, 1);
    // The lead pages are every user's.
    assert_eq!(app.send(page("/admin/leads", &cookie)).await.status, 200);
    assert_eq!(app.send(page("/admin", &cookie)).await.status, 200);
}

async fn another_workspace_is_out_of_reach(db: &TestDb) {
    let app = App::new(db).await;
    let mine = lead(&app, WorkspaceId::DEFAULT, "Mine").await;
    app.crm
        .register(
            "Other",
            NewUser {
                email: "other@example.com".into(),
                display_name: "Other".into(),
                role: None,
                password: PASSWORD.into(),
            },
        )
        .await
        .expect("register");
    let cookie = app.login("other@example.com").await;
    let r = app
        .send(page(&format!("/admin/leads/{mine}"), &cookie))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(!r.text.contains("Mine"));
    let path = format!("/admin/leads/{mine}/status");
    let r = app
        .send(form(&path, Some(&cookie), Some(ORIGIN), "status=won"))
        .await;
    assert_eq!(r.status, 404);
    let list = app.send(page("/admin/leads", &cookie)).await;
    assert!(!list.text.contains("Mine"));
    let got = app
        .crm
        .workspace(WorkspaceId::DEFAULT)
        .leads()
        .get(mine)
        .await
        .expect("lead");
    assert_eq!(got.lead.status.as_str(), "new", "unchanged");
    // A malformed id is the same 404 page, not a crash.
    let r = app.send(page("/admin/leads/not-a-uuid", &cookie)).await;
    assert_eq!(r.status, 404);
}

async fn text_is_escaped_and_pages_carry_their_headers(db: &TestDb) {
    let app = App::new(db).await;
    let cookie = app.admin().await;
    let id = lead(&app, WorkspaceId::DEFAULT, "<script>alert(1)</script>").await;
    let r = app.send(page(&format!("/admin/leads/{id}"), &cookie)).await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains("<script>alert(1)"), "{}", r.text);
    assert!(r.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let csp = r.header("content-security-policy");
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    // A notice is one of the app's own sentences, never text from the address.
    let r = app
        .send(page(
            &format!("/admin/leads/{id}?notice=%3Cb%3Ehi"),
            &cookie,
        ))
        .await;
    assert!(!r.text.contains("hi</b>") && !r.text.contains("&lt;b&gt;hi"));
    // The assets are served, typed, without a session.
    let css = app.send(get("/admin/assets/app.css")).await;
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");
    let js = app.send(get("/admin/assets/app.js")).await;
    assert_eq!(js.header("content-type"), "text/javascript; charset=utf-8");
}

async fn the_rules_of_roles_hold_on_the_users_page(db: &TestDb) {
    let app = App::new(db).await;
    app.user("admin@example.com", "admin").await;
    app.user("owner@example.com", "owner").await;
    let cookie = app.login("admin@example.com").await;
    let users = app
        .crm
        .workspace(WorkspaceId::DEFAULT)
        .auth()
        .users()
        .await
        .expect("users");
    let id_of = |email: &str| {
        users
            .iter()
            .find(|u| u.email.as_str() == email)
            .map(|u| u.id)
            .expect("user")
    };
    // An admin can neither raise themselves nor touch an owner.
    let me = id_of("admin@example.com");
    let owner = id_of("owner@example.com");
    for (path, body) in [
        (format!("/admin/users/{me}/role"), "role=owner"),
        (format!("/admin/users/{owner}/role"), "role=member"),
        (format!("/admin/users/{owner}/disable"), ""),
    ] {
        let r = app
            .send(form(&path, Some(&cookie), Some(ORIGIN), body))
            .await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
        assert!(
            r.text.contains("Your role does not allow this"),
            "said above the list"
        );
        assert!(
            r.text.contains("id=\"users\""),
            "the page, not the 403 page"
        );
    }
    let after = app
        .crm
        .workspace(WorkspaceId::DEFAULT)
        .auth()
        .users()
        .await
        .expect("users");
    for u in after {
        assert!(u.disabled_at.is_none());
        let want = if u.id == owner { "owner" } else { "admin" };
        assert_eq!(u.role.as_str(), want);
    }
    // An admin may invite a member; a refused invitation keeps what was typed.
    let bad = "email=bo%40example.com&display_name=Bo&role=member&password=short";
    let r = app
        .send(form("/admin/users", Some(&cookie), Some(ORIGIN), bad))
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.text.contains("id=\"f-password-error\"") && r.text.contains("value=\"bo@example.com\"")
    );
    let good = format!("email=bo%40example.com&display_name=Bo&role=member&password={PASSWORD}");
    let r = app
        .send(form("/admin/users", Some(&cookie), Some(ORIGIN), &good))
        .await;
    assert_eq!(location(&r), "/admin/users?notice=created");
    // Each user's open sessions: the admin's one, none for the others.
    let users_page = app.send(page("/admin/users", &cookie)).await.text;
    assert_eq!(
        users_page.matches("1 open session<").count(),
        1,
        "{users_page}"
    );
    assert_eq!(users_page.matches("0 open sessions<").count(), 2);
}

/// The value of the hidden input `name` on a page.
fn hidden(page: &str, name: &str) -> String {
    let at = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&at)
        .map(|i| i + at.len())
        .expect("the hidden input");
    let len = page[start..].find('"').expect("its end");
    page[start..start + len].to_owned()
}

async fn an_edit_changes_only_what_was_changed(db: &TestDb) {
    let app = App::new(db).await;
    let cookie = app.admin().await;
    let leads = app.crm.workspace(WorkspaceId::DEFAULT).leads();
    let id = leads
        .create(NewLead {
            name: "Ana".into(),
            email: Some("ana@example.com".into()),
            budget: Some("5k_15k".into()),
            message: Some("line one\nline two".into()),
            notes: Some("first\nsecond".into()),
            tags: vec!["vip".into()],
            custom: Some(serde_json::from_str(r#"{"score": 5}"#).expect("json")),
            ..NewLead::default()
        })
        .await
        .expect("lead")
        .id;
    let drawn = app
        .send(page(&format!("/admin/leads/{id}"), &cookie))
        .await
        .text;
    // Someone else sets the company after the page was drawn.
    let patch = crm::leads::LeadPatch {
        company: Some(Some("Theirs SL".into())),
        ..Default::default()
    };
    leads.update(id, patch).await.expect("update");
    // The form comes back as a browser sends it: every field as drawn (line breaks
    // as CRLF, the custom fields pretty-printed), the name changed, the budget
    // cleared on purpose.
    let mut body = form_urlencoded_pairs(&[
        ("name", "Ana María"),
        ("email", "ana@example.com"),
        ("phone", ""),
        ("company", ""),
        ("budget", ""),
        ("project_type", ""),
        ("source", ""),
        ("tags", "vip"),
        ("message", "line one\r\nline two"),
        ("notes", "first\r\nsecond"),
        ("custom", "{\r\n  \"score\": 5\r\n}"),
    ]);
    for f in [
        "name",
        "email",
        "phone",
        "company",
        "budget",
        "project_type",
        "source",
        "tags",
        "message",
        "notes",
        "custom",
    ] {
        body.push_str(&format!("&was.{f}={}", hidden(&drawn, &format!("was.{f}"))));
    }
    let r = app
        .send(form(
            &format!("/admin/leads/{id}"),
            Some(&cookie),
            Some(ORIGIN),
            &body,
        ))
        .await;
    assert!(location(&r).ends_with("?notice=saved"), "{}", r.text);
    let got = leads.get(id).await.expect("lead").lead;
    assert_eq!(got.name, "Ana María");
    assert_eq!(
        got.company.as_deref(),
        Some("Theirs SL"),
        "their change is kept"
    );
    assert_eq!(got.budget, None, "the clear is saved");
    assert_eq!(got.message.as_deref(), Some("line one\nline two"));
    assert_eq!(got.notes.as_deref(), Some("first\nsecond"));
    assert_eq!(got.tags, ["vip"]);
    assert_eq!(got.custom.get("score"), Some(&serde_json::json!(5)));
    // A form without what it was drawn with changes nothing.
    let r = app
        .send(form(
            &format!("/admin/leads/{id}"),
            Some(&cookie),
            Some(ORIGIN),
            "name=Bo",
        ))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(leads.get(id).await.expect("lead").lead.name, "Ana María");
}

/// `key=value&…`, percent-encoded as a browser's form is.
fn form_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                            (b as char).to_string()
                        }
                        b' ' => "+".to_owned(),
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn the_logs_read_newest_first_and_page_backwards(db: &TestDb) {
    let app = App::new(db).await;
    let cookie = app.admin().await;
    let keys = app.crm.workspace(WorkspaceId::DEFAULT).api_keys();
    // 52 entries at least: each key's creation and revocation (a workspace holds 50
    // keys at most).
    for i in 0..26 {
        let k = keys
            .create(crm::api_keys::NewApiKey {
                name: format!("key {i:02}"),
                scopes: vec!["leads:read".into()],
                expires_at: None,
            })
            .await
            .expect("key");
        keys.revoke(k.key.id).await.expect("revoke");
    }
    let log = app
        .crm
        .workspace(WorkspaceId::DEFAULT)
        .recent_audit_log(None, 1000)
        .await
        .expect("log");
    let first = app.send(page("/admin/audit", &cookie)).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.text.matches("<tr>").count(),
        51,
        "a header and 50 rows"
    );
    let older = format!("/admin/audit?before={}", log[49].id);
    assert!(
        first.text.contains(&format!("href=\"{older}\"")),
        "the Older link"
    );
    let second = app.send(page(&older, &cookie)).await;
    assert_eq!(
        second.text.matches("<tr>").count() - 1,
        log.len() - 50,
        "the rest"
    );
    assert!(second.text.contains("← Newest"));
    let bad = app.send(page("/admin/audit?before=nope", &cookie)).await;
    assert_eq!(bad.status, 404);
}

async fn sign_out_clears_the_cookie_even_when_the_session_is_gone(db: &TestDb) {
    let app = App::new(db).await;
    let cookie = app.admin().await;
    // Ended elsewhere (expired, or every session ended): sign-out still clears it.
    let token = cookie.split_once('=').map(|(_, t)| t).unwrap_or_default();
    app.crm.logout(token).await.expect("logout");
    let r = app
        .send(form("/admin/logout", Some(&cookie), Some(ORIGIN), ""))
        .await;
    assert_eq!(location(&r), "/admin/login");
    assert!(r.header("set-cookie").contains("Max-Age=0"));
    // Not from another origin.
    let r = app
        .send(form(
            "/admin/logout",
            Some(&cookie),
            Some("https://evil.example"),
            "",
        ))
        .await;
    assert_eq!(r.status, 403);
    // A `next` with a control character or a dot segment is not followed.
    let r = app
        .send(get("/admin/login?next=%2Fadmin%2F%0D%0ALocation:x"))
        .await;
    assert!(r.text.contains("value=\"/admin\""), "{}", r.text);
    let r = app.send(get("/admin/login?next=%2Fadmin%2F..%2Fapi")).await;
    assert!(r.text.contains("value=\"/admin\""));
}

async fn a_forgotten_password_is_mailed_a_link(db: &TestDb) {
    let outbox = crate::common::Outbox::default();
    let app = App::with(db, |b| b.mailer(outbox.clone()), crate::http::config()).await;
    app.user("owner@example.com", "owner").await;
    outbox.settle(1).await;
    let r = app.send(get("/admin/forgot-password")).await;
    assert_eq!(r.status, 200);
    // A malformed email is said next to the field, kept, and nothing is sent.
    let r = app
        .send(form(
            "/admin/forgot-password",
            None,
            Some(ORIGIN),
            "email=not+an+email",
        ))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("id=\"f-email-error\"") && r.text.contains("value=\"not an email\""));
    // Known or unknown, the same answer; only the known one gets a mail.
    let mut answers = Vec::new();
    for email in ["owner%40example.com", "nobody%40example.com"] {
        let body = format!("email={email}");
        let r = app
            .send(form("/admin/forgot-password", None, Some(ORIGIN), &body))
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert!(r.text.contains("Check your mail"));
        answers.push(r.text);
    }
    assert_eq!(answers[0], answers[1], "the same answer, known or not");
    match outbox.nth(0).await {
        crm::auth::AuthMail::PasswordReset { user, .. } => {
            assert_eq!(user.email.as_str(), "owner@example.com");
        }
        other => panic!("a reset mail, not {other:?}"),
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        outbox.0.lock().expect("outbox").len(),
        1,
        "none for the unknown email"
    );
    // Not from another origin.
    let r = app
        .send(form(
            "/admin/forgot-password",
            None,
            Some("https://evil.example"),
            "email=owner%40example.com",
        ))
        .await;
    assert_eq!(r.status, 403);
}

async fn archived_leads_leave_the_list_page_and_come_back(db: &TestDb) {
    let app = App::new(db).await;
    let cookie = app.admin().await;
    let id = lead(&app, WorkspaceId::DEFAULT, "Archie Goodwin").await;
    let path = format!("/admin/leads/{id}/archive");
    let r = app.send(form(&path, Some(&cookie), Some(ORIGIN), "")).await;
    assert!(location(&r).ends_with("?notice=archived"));
    let page_html = app
        .send(page(&format!("/admin/leads/{id}"), &cookie))
        .await
        .text;
    assert!(page_html.contains("id=\"archived\"") && page_html.contains("Restore to the lists"));
    let list = app.send(page("/admin/leads", &cookie)).await;
    assert_eq!(list.status, 200);
    assert!(!list.text.contains("Archie Goodwin") && list.text.contains("No leads."));
    let list = app.send(page("/admin/leads?archived=true", &cookie)).await;
    assert_eq!(list.status, 200);
    assert!(list.text.contains("Archie Goodwin") && list.text.contains(">archived<"));
    let path = format!("/admin/leads/{id}/restore");
    let r = app.send(form(&path, Some(&cookie), Some(ORIGIN), "")).await;
    assert!(location(&r).ends_with("?notice=restored"));
    let list = app.send(page("/admin/leads", &cookie)).await.text;
    assert!(list.contains("Archie Goodwin"));
}

conformance!(
    signed_out_pages_send_to_sign_in_and_back,
    every_form_needs_the_same_origin_and_a_session,
    members_get_the_403_page_on_admin_pages_and_actions,
    another_workspace_is_out_of_reach,
    text_is_escaped_and_pages_carry_their_headers,
    the_rules_of_roles_hold_on_the_users_page,
    an_edit_changes_only_what_was_changed,
    sign_out_clears_the_cookie_even_when_the_session_is_gone,
    a_forgotten_password_is_mailed_a_link,
    the_logs_read_newest_first_and_page_backwards,
    archived_leads_leave_the_list_page_and_come_back,
);
