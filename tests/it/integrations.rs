//! Per-workspace integrations over HTTP, on SQLite and Postgres, against local
//! stand-ins of the providers that record the exact request: saved only when the
//! provider accepts the credentials, sealed at rest, never shown again, admins only,
//! audited; a workspace's own OpenAI key and mail sender are used before the
//! server's; inbound routes per workspace by an unguessable id.

use std::time::Duration;

use crate::common::receiver::{Receiver, Reply};
use crate::common::{hmac_hex, Outbox, TestDb};
use crate::http::{config, get, json_body, req, with_cookie, App, PASSWORD};
use axum::body::Body;
use axum::http::{Method, Request};
use crm::auth::Actor;
use crm::integrations::calcom::CalcomIntegration;
use crm::integrations::email::ResendIntegration;
use crm::integrations::openai::OpenAiIntegration;
use crm::integrations::telegram::Telegram;
use crm::integrations::whatsapp::WhatsApp;
use crm::providers::Settings;
use crm::{Error, WorkspaceId};
use serde_json::{json, Value};

conformance!(
    integrations_are_checked_sealed_masked_and_audited,
    only_admins_change_integrations,
    a_workspace_parses_and_mails_with_its_own_credentials,
    inbound_routes_belong_to_one_workspace,
    channels_take_what_they_leave_out_from_the_integration,
    whatsapp_conversations_live_on_the_timeline,
    a_save_that_overlaps_a_change_writes_nothing,
);

const KEY: &str = "sk-workspace-key-0123456789";

fn put(path: &str, cookie: &str, v: Value) -> Request<Body> {
    json_body(with_cookie(req(Method::PUT, path), cookie), v)
}

fn admin_get(path: &str, cookie: &str) -> Request<Body> {
    with_cookie(req(Method::GET, path), cookie)
        .body(Body::empty())
        .expect("request")
}

fn settings(pairs: &[(&str, &str)]) -> Settings {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A stand-in of a provider's API: the base URL of the receiver (its `/hook`).
async fn stand_in(script: Vec<Reply>) -> Receiver {
    Receiver::start(script, Reply::Status(200, vec![], "{}".into())).await
}

fn ok(body: Value) -> Reply {
    Reply::Status(
        200,
        vec![("content-type".into(), "application/json".into())],
        body.to_string(),
    )
}

async fn integrations_are_checked_sealed_masked_and_audited(db: &TestDb) {
    let openai = stand_in(vec![
        Reply::Status(
            401,
            vec![],
            r#"{"error":{"code":"invalid_api_key"}}"#.into(),
        ),
        Reply::Status(503, vec![], String::new()),
    ])
    .await;
    let base = openai.url.clone();
    let app = App::with(
        db,
        move |b| b.provider(OpenAiIntegration::new().with_base_url(base)),
        config(),
    )
    .await;
    let cookie = app.admin().await;
    let path = "/api/admin/integrations/openai";

    // The provider refuses the key: 422 naming it, nothing saved.
    let r = app
        .send(put(path, &cookie, json!({"settings": {"api_key": KEY}})))
        .await;
    r.problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["field"], "settings.api_key");
    let seen = openai.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/hook/models");
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {KEY}"));
    // The provider is down: 502, nothing saved.
    let r = app
        .send(put(path, &cookie, json!({"settings": {"api_key": KEY}})))
        .await;
    r.problem(502, "integration_failed");
    app.send(admin_get(path, &cookie))
        .await
        .problem(404, "not_found");
    assert_eq!(db.count("crm_integrations").await, 0);

    // Shape errors never reach the provider.
    let before = openai.requests().len();
    for (body, field) in [
        (
            json!({"settings": {"api_key": KEY, "colour": "red"}}),
            "settings.colour",
        ),
        (json!({"settings": {"model": "gpt-4o"}}), "settings.api_key"),
        (json!({"settings": {"api_key": " "}}), "settings.api_key"),
        (json!({"settings": {"api_key": "a\nb"}}), "settings.api_key"),
    ] {
        let r = app.send(put(path, &cookie, body)).await;
        r.problem(422, "validation_failed");
        assert_eq!(r.body["errors"][0]["field"], field, "{}", r.text);
    }
    let r = app
        .send(put(
            "/api/admin/integrations/fax",
            &cookie,
            json!({"settings": {}}),
        ))
        .await;
    r.problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["field"], "kind");
    assert_eq!(openai.requests().len(), before);

    // Accepted: saved sealed, shown without the key.
    let r = app
        .send(put(
            path,
            &cookie,
            json!({"settings": {"api_key": KEY, "model": "gpt-4o-mini"}}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["kind"], "openai");
    assert_eq!(r.body["settings"], json!({"model": "gpt-4o-mini"}));
    assert_eq!(r.body["secrets"], json!(["api_key"]));
    assert!(r.body["inbound_id"].is_null());
    assert!(!r.text.contains(KEY));
    assert_eq!(
        openai.requests().last().expect("asked").path,
        "/hook/models/gpt-4o-mini"
    );
    let sealed = db
        .scalar_text("SELECT settings FROM crm_integrations WHERE kind = 'openai'")
        .await;
    assert!(!sealed.contains(KEY) && !sealed.contains("gpt-4o-mini"));
    let list = app
        .send(admin_get("/api/admin/integrations", &cookie))
        .await;
    assert_eq!(list.status, 200);
    assert!(!list.text.contains(KEY));
    assert_eq!(list.body["integrations"][0]["kind"], "openai");
    assert_eq!(list.body["providers"][0]["kind"], "openai");
    assert_eq!(
        list.body["providers"][0]["fields"][0],
        json!({"name": "api_key", "secret": true, "required": true})
    );

    // A save without the secret keeps it; the other values are what was sent.
    let r = app.send(put(path, &cookie, json!({"settings": {}}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["settings"], json!({}));
    assert_eq!(r.body["secrets"], json!(["api_key"]));
    let ws = app.crm.workspace(WorkspaceId::DEFAULT).integrations();
    assert_eq!(
        ws.settings("openai").await.expect("settings"),
        Some(settings(&[("api_key", KEY)]))
    );
    assert_eq!(
        openai.requests().last().expect("asked").headers["authorization"],
        format!("Bearer {KEY}"),
        "the kept key was the one checked"
    );

    // Audited, never with a value.
    let audit = app
        .crm
        .workspace(WorkspaceId::DEFAULT)
        .audit_log(None, 100)
        .await
        .expect("audit");
    let saved: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "integration.saved")
        .collect();
    assert_eq!(saved.len(), 2);
    assert!(saved[0]
        .actor
        .as_deref()
        .is_some_and(|a| a.starts_with("user:")));
    assert!(!json!(audit).to_string().contains(KEY));

    // Deleted: gone, and again is 404.
    let del = |c: &str| {
        with_cookie(req(Method::DELETE, path), c)
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(app.send(del(&cookie)).await.status, 204);
    app.send(del(&cookie)).await.problem(404, "not_found");
    assert_eq!(db.count("crm_integrations").await, 0);
}

async fn only_admins_change_integrations(db: &TestDb) {
    let openai = stand_in(vec![]).await;
    let base = openai.url.clone();
    let app = App::with(
        db,
        move |b| {
            b.provider(OpenAiIntegration::new().with_base_url(base.clone()))
                .provider(ResendIntegration::new().with_base_url(base))
        },
        config(),
    )
    .await;
    let owner = app.admin().await;
    app.user("member@example.com", "member").await;
    let member = app.login("member@example.com").await;
    let path = "/api/admin/integrations/openai";
    let body = json!({"settings": {"api_key": KEY}});
    app.send(put(path, &member, body.clone()))
        .await
        .problem(403, "forbidden");
    assert!(
        openai.requests().is_empty(),
        "a member makes no provider call"
    );

    // The rule is the service's, whoever calls it.
    let auth = app.crm.workspace(WorkspaceId::DEFAULT).auth();
    let member_id = auth
        .users()
        .await
        .expect("users")
        .into_iter()
        .find(|u| u.email.as_str() == "member@example.com")
        .expect("member")
        .id;
    let integrations = app.crm.workspace(WorkspaceId::DEFAULT).integrations();
    let err = integrations
        .save(
            Actor::User(member_id),
            "openai",
            settings(&[("api_key", KEY)]),
        )
        .await
        .expect_err("a member may not");
    assert!(matches!(err, Error::Forbidden), "{err:?}");
    assert_eq!(db.count("crm_integrations").await, 0);

    // An admin may save the OpenAI key, not a mail sender (it would read an
    // owner's password-reset mail); an owner may.
    app.user("admin@example.com", "admin").await;
    let admin = app.login("admin@example.com").await;
    let resend = json!({"settings": {"api_key": "re_x", "from": "CRM <crm@example.com>"}});
    let before = openai.requests().len();
    app.send(put(
        "/api/admin/integrations/resend",
        &admin,
        resend.clone(),
    ))
    .await
    .problem(403, "forbidden");
    assert_eq!(
        openai.requests().len(),
        before,
        "no provider call for a refused actor"
    );
    assert_eq!(app.send(put(path, &admin, body.clone())).await.status, 200);
    let r = app
        .send(put("/api/admin/integrations/resend", &owner, resend))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let admin_id = auth
        .users()
        .await
        .expect("users")
        .into_iter()
        .find(|u| u.email.as_str() == "admin@example.com")
        .expect("admin")
        .id;
    let err = integrations
        .delete(Actor::User(admin_id), "resend")
        .await
        .expect_err("an admin may not remove the owners' mail sender");
    assert!(matches!(err, Error::Forbidden), "{err:?}");
    integrations
        .delete(Actor::User(admin_id), "openai")
        .await
        .expect("an admin may remove the OpenAI key");
    // The owner saves it again; a member may then neither delete it nor read it.
    assert_eq!(app.send(put(path, &owner, body)).await.status, 200);
    let err = integrations
        .delete(Actor::User(member_id), "openai")
        .await
        .expect_err("a member may not");
    assert!(matches!(err, Error::Forbidden), "{err:?}");
    app.send(admin_get(path, &member))
        .await
        .problem(403, "forbidden");
    // A user of another workspace is no actor here.
    let other = app.crm.create_workspace("Other").await.expect("workspace");
    let outsider = app
        .crm
        .workspace(other)
        .auth()
        .create_user(
            crm::auth::NewUser {
                email: "owner@other.example".into(),
                display_name: "Other Owner".into(),
                role: Some("owner".into()),
                password: PASSWORD.into(),
            },
            Actor::App(None),
        )
        .await
        .expect("owner");
    let err = integrations
        .delete(Actor::User(outsider.id), "openai")
        .await
        .expect_err("not of this workspace");
    assert!(matches!(err, Error::Forbidden), "{err:?}");
    assert_eq!(db.count("crm_integrations").await, 2);
}

fn completion(name: &str) -> Value {
    let content = json!({ "name": name, "email": "ana@bakery.es", "phone": null, "company": null,
        "budget": null, "project_type": null, "message": "A shop", "confidence": 0.9 });
    json!({ "id": "chatcmpl-1", "object": "chat.completion", "choices": [{ "index": 0,
        "finish_reason": "stop", "message": { "role": "assistant", "content": content.to_string(), "refusal": null } }] })
}

async fn a_workspace_parses_and_mails_with_its_own_credentials(db: &TestDb) {
    let openai = stand_in(vec![ok(json!({"data": []})), ok(completion("Ana López"))]).await;
    let resend = stand_in(vec![ok(json!({"data": []})), ok(json!({"id": "m1"}))]).await;
    let outbox = Outbox::default();
    let (oa, rs, server_mail) = (openai.url.clone(), resend.url.clone(), outbox.clone());
    let app = App::with(
        db,
        move |b| {
            b.provider(OpenAiIntegration::new().with_base_url(oa))
                .provider(ResendIntegration::new().with_base_url(rs))
                .mailer(server_mail)
        },
        config(),
    )
    .await;
    let acme = app.crm.create_workspace("Acme").await.expect("workspace");
    let integrations = app.crm.workspace(acme).integrations();
    integrations
        .save(
            Actor::App(Some("setup")),
            "openai",
            settings(&[("api_key", KEY)]),
        )
        .await
        .expect("openai");
    integrations
        .save(
            Actor::App(Some("setup")),
            "resend",
            settings(&[
                ("api_key", "re_acme_key"),
                ("from", "Acme <crm@acme.example>"),
            ]),
        )
        .await
        .expect("resend");

    // Acme parses with its own key…
    let parsed = app
        .crm
        .workspace(acme)
        .leads()
        .parse("Ana López from the bakery, ana@bakery.es", false)
        .await
        .expect("parse");
    assert_eq!(parsed.parsed.parser, "openai");
    assert_eq!(parsed.parsed.fields.name, "Ana López");
    let call = openai.requests().pop().expect("a completion");
    assert_eq!(call.path, "/hook/chat/completions");
    assert_eq!(call.headers["authorization"], format!("Bearer {KEY}"));
    // …and the default workspace, which has none, with the server's (builtin) parser.
    let key = app.key(&["leads:read"]).await;
    let r = app
        .send(json_body(
            crate::http::bearer(req(Method::POST, "/api/v1/leads/parse"), &key),
            json!({"text": "Bob, bob@example.com"}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["parser"], "builtin");
    assert_eq!(
        openai.requests().len(),
        2,
        "no call for the default workspace"
    );

    // Acme's auth mail goes through its own Resend account, the default
    // workspace's through the server's mailer.
    let acme_auth = app.crm.workspace(acme).auth();
    let user = acme_auth
        .create_user(
            crm::auth::NewUser {
                email: "ana@acme.example".into(),
                display_name: "Ana".into(),
                role: Some("owner".into()),
                password: PASSWORD.into(),
            },
            Actor::App(None),
        )
        .await
        .expect("user");
    let sent = resend.wait_for(2).await;
    assert_eq!(sent[1].method, "POST");
    assert_eq!(sent[1].path, "/hook/emails");
    assert_eq!(sent[1].headers["authorization"], "Bearer re_acme_key");
    let mail: Value = serde_json::from_slice(&sent[1].body).expect("json");
    assert_eq!(mail["from"], "Acme <crm@acme.example>");
    assert_eq!(mail["to"], json!([user.email.as_str()]));
    app.user("bob@example.com", "member").await;
    outbox.settle(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        resend.requests().len(),
        2,
        "the default workspace's mail went elsewhere"
    );
}

async fn inbound_routes_belong_to_one_workspace(db: &TestDb) {
    let graph = stand_in(vec![]).await;
    let base = graph.url.clone();
    let app = App::with(
        db,
        move |b| {
            b.provider(WhatsApp::new().with_base_url(base))
                .provider(CalcomIntegration)
        },
        config(),
    )
    .await;
    let mut ids = Vec::new();
    for (name, secret, number) in [
        ("A", "app-secret-of-a", "1065"),
        ("B", "app-secret-of-b", "2065"),
    ] {
        let ws = app.crm.create_workspace(name).await.expect("workspace");
        let i = app.crm.workspace(ws).integrations();
        let wa = i
            .save(
                Actor::App(None),
                "whatsapp",
                settings(&[
                    ("access_token", "EAAG-token"),
                    ("phone_number_id", number),
                    ("app_secret", secret),
                    ("verify_token", &format!("verify-{name}")),
                ]),
            )
            .await
            .expect("whatsapp");
        let cal = i
            .save(
                Actor::App(None),
                "calcom",
                settings(&[("webhook_secret", &format!("cal-secret-{name}"))]),
            )
            .await
            .expect("calcom");
        let (wa_id, cal_id) = (wa.inbound_id.expect("id"), cal.inbound_id.expect("id"));
        assert_eq!(wa_id.len(), 32);
        assert_ne!(wa_id, cal_id);
        ids.push((ws, wa_id, cal_id, secret));
    }
    let checked = graph.requests();
    assert_eq!(checked[0].path, "/hook/1065?fields=id");
    assert_eq!(checked[0].headers["authorization"], "Bearer EAAG-token");
    // A save keeps the inbound id.
    let (a, a_wa, a_cal, a_secret) = ids[0].clone();
    let (b, b_wa, _, b_secret) = ids[1].clone();
    let again = app
        .crm
        .workspace(a)
        .integrations()
        .save(
            Actor::App(None),
            "whatsapp",
            settings(&[("phone_number_id", "1065")]),
        )
        .await
        .expect("saved again");
    assert_eq!(again.inbound_id.as_deref(), Some(a_wa.as_str()));

    let body_for = |number: &str| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001065", "phone_number_id": number},
            "contacts": [{"wa_id": "14155550199", "profile": {"name": "Wanda"}}],
            "messages": [{"id": "wamid.A1", "from": "14155550199", "timestamp": "1767225600",
                "type": "text", "text": {"body": "I need a website"}}]}}]}]})
    };
    let to_number = |id: &str, secret: &str, number: &str| {
        signed(
            &format!("/api/webhooks/whatsapp/{id}"),
            secret,
            &body_for(number),
        )
    };
    let wa = |id: &str, secret: &str| {
        let number = if secret == a_secret { "1065" } else { "2065" };
        to_number(id, secret, number)
    };
    let leads_in = |ws: WorkspaceId| {
        let crm = app.crm.clone();
        async move {
            crm.workspace(ws)
                .leads()
                .list(&crm::leads::LeadQuery::default())
                .await
                .expect("list")
                .items
                .len()
        }
    };
    // B's signature on A's route: refused, nothing written anywhere.
    app.send(wa(&a_wa, b_secret))
        .await
        .problem(401, "webhook_verification_failed");
    // Ids that are not one: 404.
    for id in ["0123456789abcdef0123456789abcdef", "../../etc", "A"] {
        let r = app.send(wa(id, a_secret)).await;
        assert_eq!(r.status, 404, "{id}: {}", r.text);
    }
    assert_eq!((leads_in(a).await, leads_in(b).await), (0, 0));
    // Another number of the same Meta app, posted to A's route: not A's.
    let r = app.send(to_number(&a_wa, a_secret, "2065")).await;
    assert_eq!(
        (r.body["captured"].as_u64(), r.body["ignored"].as_u64()),
        (Some(0), Some(1)),
        "{}",
        r.text
    );
    assert_eq!((leads_in(a).await, leads_in(b).await), (0, 0));
    // A's own signature: captured in A only, once.
    let r = app.send(wa(&a_wa, a_secret)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["captured"], 1);
    assert_eq!(app.send(wa(&a_wa, a_secret)).await.body["duplicates"], 1);
    assert_eq!((leads_in(a).await, leads_in(b).await), (1, 0));
    assert_eq!(
        leads_in(WorkspaceId::DEFAULT).await,
        0,
        "the public workspace got nothing"
    );
    // B's message on B's route lands in B.
    let r = app.send(wa(&b_wa, b_secret)).await;
    assert_eq!(r.body["captured"], 1, "{}", r.text);
    assert_eq!(leads_in(b).await, 1);

    // The handshake answers with the workspace's own verify token only.
    let shake = |id: &str, token: &str| {
        get(&format!(
            "/api/webhooks/whatsapp/{id}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=42"
        ))
    };
    let r = app.send(shake(&a_wa, "verify-A")).await;
    assert_eq!((r.status.as_u16(), r.text.as_str()), (200, "42"));
    assert_eq!(app.send(shake(&a_wa, "verify-B")).await.status, 401);

    // Cal.com: the workspace's secret, the workspace's lead.
    let booking = json!({"triggerEvent": "BOOKING_CREATED", "payload": {"uid": "bk-1",
        "title": "Intro call", "startTime": "2026-01-02T10:00:00Z",
        "attendees": [{"name": "Cal Person", "email": "cal@example.com"}]}})
    .to_string();
    let cal = |secret: &str| {
        req(Method::POST, &format!("/api/webhooks/cal/{a_cal}"))
            .header("content-type", "application/json")
            .header("x-cal-signature-256", hmac_hex(secret, booking.as_bytes()))
            .body(Body::from(booking.clone()))
            .expect("request")
    };
    assert_eq!(app.send(cal("cal-secret-B")).await.status, 401);
    let r = app.send(cal("cal-secret-A")).await;
    assert_eq!(r.body["captured"], 1, "{}", r.text);
    assert_eq!((leads_in(a).await, leads_in(b).await), (2, 1));
    // The WhatsApp route does not take Cal.com's id.
    assert_eq!(app.send(wa(&a_cal, a_secret)).await.status, 404);

    // Deleted: the route stops answering.
    app.crm
        .workspace(a)
        .integrations()
        .delete(Actor::App(None), "whatsapp")
        .await
        .expect("delete");
    assert_eq!(app.send(wa(&a_wa, a_secret)).await.status, 404);
}

async fn channels_take_what_they_leave_out_from_the_integration(db: &TestDb) {
    let bot = stand_in(vec![]).await;
    let base = bot.url.clone();
    let app = App::with(
        db,
        move |b| {
            let telegram = Telegram::new().with_base_url(base);
            b.provider(telegram.clone()).notifier(telegram)
        },
        config(),
    )
    .await;
    let notifications = app.crm.workspace(WorkspaceId::DEFAULT).notifications();
    let channel = || crm::notify::NewChannel {
        kind: "telegram".into(),
        name: "Sales chat".into(),
        config: json!({"chat_id": "-10042"}),
        event_types: Vec::new(),
        enabled: None,
    };
    // No token in the channel and none in the workspace: refused.
    let err = notifications.create(channel()).await.expect_err("no token");
    assert!(
        matches!(&err, Error::Validation { errors } if errors[0].field == "config.bot_token"),
        "{err:?}"
    );
    app.crm
        .workspace(WorkspaceId::DEFAULT)
        .integrations()
        .save(
            Actor::App(None),
            "telegram",
            settings(&[("bot_token", "123456:ABC-workspace")]),
        )
        .await
        .expect("integration");
    assert_eq!(
        bot.requests()[0].path,
        "/hook/bot123456:ABC-workspace/getMe"
    );
    let c = notifications.create(channel()).await.expect("channel");
    assert_eq!(
        notifications.config(c.id).await.expect("config"),
        json!({"chat_id": "-10042"}),
        "the channel does not copy the token"
    );
    let stop = crm::webhooks::CancellationToken::new();
    let cfg = crm::webhooks::DispatcherConfig {
        poll_interval: Duration::from_millis(20),
        jitter: 0.0,
        ..Default::default()
    };
    let handle = app.crm.start_dispatcher(cfg, stop.clone()).expect("start");
    app.crm
        .leads()
        .create(crm::leads::NewLead {
            name: "Ana".into(),
            email: Some("ana@example.com".into()),
            ..Default::default()
        })
        .await
        .expect("lead");
    let sent = bot.wait_for(2).await;
    assert_eq!(sent[1].path, "/hook/bot123456:ABC-workspace/sendMessage");
    let body: Value = serde_json::from_slice(&sent[1].body).expect("json");
    assert_eq!(body["chat_id"], "-10042");
    stop.cancel();
    let _ = handle.await;
}

fn signed(path: &str, secret: &str, body: &Value) -> Request<Body> {
    let body = body.to_string();
    req(Method::POST, path)
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            format!("sha256={}", hmac_hex(secret, body.as_bytes())),
        )
        .body(Body::from(body))
        .expect("request")
}

/// A webhook payload for business number `1065` (as Meta sends: every change names
/// its number).
fn wa_payload(mut value: Value) -> Value {
    value["metadata"] = json!({"display_phone_number": "15550001065", "phone_number_id": "1065"});
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": value}]}]})
}

async fn whatsapp_conversations_live_on_the_timeline(db: &TestDb) {
    let sent = |id: &str| {
        ok(json!({"messaging_product": "whatsapp",
        "contacts": [{"input": "34600111222", "wa_id": "34600111222"}], "messages": [{"id": id}]}))
    };
    let graph = stand_in(vec![
        ok(json!({"id": "1065"})),
        sent("wamid.OUT1"),
        Reply::Status(
            400,
            vec![("content-type".into(), "application/json".into())],
            json!({"error": {"message": "(#132001) Template name does not exist in the translation",
                "type": "OAuthException", "code": 132001,
                "error_data": {"messaging_product": "whatsapp", "details": "template name (nope) does not exist in en_US"}}})
            .to_string(),
        ),
        sent("wamid.OUT2"),
    ])
    .await;
    let base = graph.url.clone();
    let app = App::with(
        db,
        move |b| b.provider(WhatsApp::new().with_base_url(base)),
        config(),
    )
    .await;
    const SECRET: &str = "app-secret-of-default";
    let inbound_id = app
        .crm
        .workspace(WorkspaceId::DEFAULT)
        .integrations()
        .save(
            Actor::App(None),
            "whatsapp",
            settings(&[
                ("access_token", "EAAG-default"),
                ("phone_number_id", "1065"),
                ("app_secret", SECRET),
                ("verify_token", "verify"),
            ]),
        )
        .await
        .expect("integration")
        .inbound_id
        .expect("inbound id");
    let key = app.key(&["leads:*", "messages:write"]).await;
    let reader = app.key(&["leads:*"]).await;
    let post = |key: &str, path: &str, v: Value| {
        json_body(crate::http::bearer(req(Method::POST, path), key), v)
    };
    let lead = |r: crate::http::Res| r.body["id"].as_str().expect("id").to_owned();
    let no_phone = lead(
        app.send(post(
            &key,
            "/api/v1/leads",
            json!({"name": "Mail Only", "email": "m@example.com"}),
        ))
        .await,
    );
    let ana = lead(
        app.send(post(
            &key,
            "/api/v1/leads",
            json!({"name": "Ana", "phone": "+34600111222"}),
        ))
        .await,
    );
    let messages = |id: &str| format!("/api/v1/leads/{id}/messages");
    let hello = json!({"text": "Hi Ana, when suits you for a call?"});

    // Refusals that never reach WhatsApp.
    app.send(post(&reader, &messages(&ana), hello.clone()))
        .await
        .problem(403, "forbidden");
    let r = app
        .send(post(&key, &messages(&no_phone), hello.clone()))
        .await;
    r.problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["field"], "phone");
    let r = app
        .send(post(
            &key,
            &messages(&ana),
            json!({"text": "x", "template": {"name": "a", "language": "en"}}),
        ))
        .await;
    r.problem(422, "validation_failed");
    // Ana never wrote: free text is outside the 24-hour window.
    app.send(post(&key, &messages(&ana), hello.clone()))
        .await
        .problem(409, "window_closed");
    assert_eq!(
        graph.requests().len(),
        1,
        "only the integration check so far"
    );

    // Ana writes: text, an image with a caption, a location, a reaction.
    let inbound = wa_payload(json!({"messaging_product": "whatsapp",
    "contacts": [{"wa_id": "34600111222", "profile": {"name": "Ana"}}],
    "messages": [
        {"id": "wamid.IN1", "from": "34600111222", "timestamp": "1767258000", "type": "text",
         "text": {"body": "Hello, I need a shop"}},
        {"id": "wamid.IN2", "from": "34600111222", "timestamp": "1767258001", "type": "image",
         "image": {"id": "media-77", "mime_type": "image/jpeg", "sha256": "abc", "caption": "My logo"}},
        {"id": "wamid.IN3", "from": "34600111222", "timestamp": "1767258002", "type": "location",
         "location": {"latitude": 40.4168, "longitude": -3.7038, "name": "Shop", "address": "Gran Via 1"}},
        {"id": "wamid.IN4", "from": "34600111222", "timestamp": "1767258003", "type": "reaction",
         "reaction": {"message_id": "wamid.OUT0", "emoji": "👍"}}
    ]}));
    let hook = format!("/api/webhooks/whatsapp/{inbound_id}");
    let r = app.send(signed(&hook, SECRET, &inbound)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["captured"].as_u64(), r.body["ignored"].as_u64()),
        (Some(3), Some(1))
    );
    let r = app.send(signed(&hook, SECRET, &inbound)).await;
    assert_eq!(r.body["duplicates"], 3, "a redelivery writes nothing");
    let timeline = |id: String| {
        let crm = app.crm.clone();
        async move {
            crm.leads()
                .activities(id.parse().expect("id"))
                .await
                .expect("activities")
        }
    };
    let acts = timeline(ana.clone()).await;
    let got: Vec<_> = acts
        .iter()
        .filter_map(|a| a.message.clone().map(|m| (m, a.description.clone())))
        .collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].0.kind, "text");
    assert_eq!(got[0].1.as_deref(), Some("Hello, I need a shop"));
    assert_eq!(got[1].0.kind, "image");
    assert_eq!(got[1].0.media_id.as_deref(), Some("media-77"));
    assert_eq!(got[1].0.mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(got[1].1.as_deref(), Some("My logo"));
    assert_eq!(got[2].0.kind, "location");
    assert_eq!(
        (got[2].0.latitude, got[2].0.longitude),
        (Some(40.4168), Some(-3.7038))
    );
    assert_eq!(got[2].1.as_deref(), Some("[location] Shop, Gran Via 1"));
    assert!(got
        .iter()
        .all(|(m, _)| m.direction == Some(crm::leads::messages::MessageDirection::Inbound)));

    // Within the window: the text goes, exactly as the Graph API wants it.
    let r = app.send(post(&key, &messages(&ana), hello.clone())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["kind"], "message");
    assert_eq!(r.body["message"]["direction"], "outbound");
    assert_eq!(r.body["message"]["status"], "accepted");
    assert_eq!(r.body["message"]["provider_message_id"], "wamid.OUT1");
    let call = graph.requests().pop().expect("a send");
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/hook/1065/messages")
    );
    assert_eq!(call.headers["authorization"], "Bearer EAAG-default");
    let body: Value = serde_json::from_slice(&call.body).expect("json");
    assert_eq!(
        body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual",
        "to": "34600111222", "type": "text",
        "text": {"preview_url": false, "body": "Hi Ana, when suits you for a call?"}})
    );

    // A template WhatsApp does not know: its words, nothing recorded.
    let before = timeline(ana.clone()).await.len();
    let r = app
        .send(post(
            &key,
            &messages(&ana),
            json!({"template": {"name": "nope", "language": "en_US"}}),
        ))
        .await;
    r.problem(422, "provider_error");
    assert!(r.text.contains("does not exist"), "{}", r.text);
    assert_eq!(timeline(ana.clone()).await.len(), before);
    // A template goes at any time.
    db.clock.advance(chrono::Duration::hours(30));
    app.send(post(&key, &messages(&ana), hello.clone()))
        .await
        .problem(409, "window_closed");
    let r = app
        .send(post(
            &key,
            &messages(&ana),
            json!({"template": {"name": "follow_up", "language": "es",
            "parameters": ["Ana"]}}),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["description"], "Template follow_up: Ana");
    let body: Value =
        serde_json::from_slice(&graph.requests().pop().expect("send").body).expect("json");
    assert_eq!(
        body["template"],
        json!({"name": "follow_up", "language": {"code": "es"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}]})
    );

    // Statuses move a sent message forward only, once.
    let statuses = wa_payload(json!({"messaging_product": "whatsapp", "statuses": [
        {"id": "wamid.OUT1", "status": "delivered", "timestamp": "1767259000", "recipient_id": "34600111222"},
        {"id": "wamid.OUT1", "status": "read", "timestamp": "1767259060", "recipient_id": "34600111222"},
        {"id": "wamid.OUT1", "status": "delivered", "timestamp": "1767259001", "recipient_id": "34600111222"},
        {"id": "wamid.IN1", "status": "read", "timestamp": "1767259001", "recipient_id": "34600111222"},
        {"id": "wamid.OUT2", "status": "failed", "timestamp": "1767259100", "recipient_id": "34600111222",
         "errors": [{"code": 131026, "title": "Message undeliverable"}]}
    ]}));
    let r = app.send(signed(&hook, SECRET, &statuses)).await;
    assert_eq!(
        (r.body["statuses"].as_u64(), r.body["ignored"].as_u64()),
        (Some(3), Some(2)),
        "{}",
        r.text
    );
    let r = app.send(signed(&hook, SECRET, &statuses)).await;
    assert_eq!(
        (r.body["statuses"].as_u64(), r.body["ignored"].as_u64()),
        (Some(0), Some(5))
    );
    let acts = timeline(ana.clone()).await;
    let out = |id: &str| {
        acts.iter()
            .filter_map(|a| a.message.clone())
            .find(|m| m.provider_message_id.as_deref() == Some(id))
            .expect("the sent message")
    };
    assert_eq!(
        out("wamid.OUT1").status,
        Some(crm::leads::messages::MessageStatus::Read)
    );
    assert_eq!(
        out("wamid.OUT1").status_at,
        chrono::DateTime::from_timestamp(1767259060, 0)
    );
    assert_eq!(
        out("wamid.OUT2").status,
        Some(crm::leads::messages::MessageStatus::Failed)
    );
    assert_eq!(
        out("wamid.OUT2").error.as_deref(),
        Some("131026: Message undeliverable")
    );
    assert!(
        out("wamid.IN1").status.is_none(),
        "an inbound message has no delivery status"
    );
}

async fn a_save_that_overlaps_a_change_writes_nothing(db: &TestDb) {
    // The provider takes its time over the second check.
    let openai = stand_in(vec![
        ok(json!({"data": []})),
        Reply::Late(Duration::from_millis(500)),
    ])
    .await;
    let base = openai.url.clone();
    let app = App::with(
        db,
        move |b| b.provider(OpenAiIntegration::new().with_base_url(base)),
        config(),
    )
    .await;
    let integrations = app.crm.workspace(WorkspaceId::DEFAULT).integrations();
    integrations
        .save(
            Actor::App(None),
            "openai",
            settings(&[("api_key", "sk-old")]),
        )
        .await
        .expect("saved");
    // A save that keeps the key is checking it while the key is deleted (revoked).
    let slow = {
        let i = integrations.clone();
        tokio::spawn(async move {
            i.save(Actor::App(None), "openai", settings(&[("model", "gpt-4o")]))
                .await
        })
    };
    openai.wait_for(2).await;
    integrations
        .delete(Actor::App(None), "openai")
        .await
        .expect("deleted");
    let err = slow
        .await
        .expect("join")
        .expect_err("the row changed under it");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(
        db.count("crm_integrations").await,
        0,
        "the old key did not come back"
    );
}
