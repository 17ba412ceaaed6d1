//! The router end to end: every route family through `oneshot`, on SQLite and
//! Postgres, plus a real socket where the network matters (client IPs, request ids).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{hmac_hex, Outbox, TestDb};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use crm::api_keys::NewApiKey;
use crm::auth::NewUser;
use crm::http::Config;
use crm::leads::parser::{LeadParser, ParseFuture, ParsedLead};
use crm::leads::{AllowedValues, NewLead};
use crm::ratelimit::Policy;
use crm::{Crm, SecretString, WorkspaceId};
use serde_json::{json, Value};
use tower::ServiceExt;

pub(crate) const ORIGIN: &str = "https://app.example";
const WA_SECRET: &str = "wa-app-secret-for-tests";
const WA_TOKEN: &str = "wa-verify-token";
const CAL_SECRET: &str = "cal-secret-for-tests";
pub(crate) const PASSWORD: &str = "Correct-Horse-42!";
const NEW_PASSWORD: &str = "Another-Horse-43!";

pub(crate) fn config() -> Config {
    Config::new()
        .allow_origin(ORIGIN)
        .registration(true)
        .whatsapp(
            SecretString::from(WA_SECRET.to_owned()),
            SecretString::from(WA_TOKEN.to_owned()),
        )
        .calcom(SecretString::from(CAL_SECRET.to_owned()))
}

pub(crate) struct App {
    pub(crate) crm: Crm,
    router: Router,
}

pub(crate) struct Res {
    pub(crate) status: StatusCode,
    headers: HeaderMap,
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl Res {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem body with this status and code.
    pub(crate) fn problem(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.header("content-type"), "application/problem+json");
        assert_eq!(self.body["code"], code, "{}", self.text);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["type"].is_string());
        self
    }

    fn field(&self) -> &str {
        self.body["errors"][0]["field"].as_str().unwrap_or("")
    }
}

impl App {
    pub(crate) async fn new(db: &TestDb) -> Self {
        Self::with(db, |b| b, config()).await
    }

    pub(crate) async fn with(
        db: &TestDb,
        f: impl FnOnce(crm::CrmBuilder) -> crm::CrmBuilder,
        cfg: Config,
    ) -> Self {
        let crm = f(db.builder()).connect().await.expect("connect");
        let router = cfg.router(crm.clone());
        Self { crm, router }
    }

    pub(crate) async fn send(&self, req: Request<Body>) -> Res {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Res {
            status,
            headers,
            body,
            text,
        }
    }

    pub(crate) async fn key(&self, scopes: &[&str]) -> String {
        let k = self
            .crm
            .workspace(WorkspaceId::DEFAULT)
            .api_keys()
            .create(NewApiKey {
                name: "test".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                expires_at: None,
            })
            .await
            .expect("key");
        k.secret.expose().to_owned()
    }

    pub(crate) async fn user(&self, email: &str, role: &str) {
        self.crm
            .workspace(WorkspaceId::DEFAULT)
            .auth()
            .create_user(
                NewUser {
                    email: email.into(),
                    display_name: "Test User".into(),
                    role: Some(role.into()),
                    password: PASSWORD.into(),
                },
                crm::auth::Actor::App(None),
            )
            .await
            .expect("user");
    }

    /// Signs in and returns the `Cookie` header value.
    pub(crate) async fn login(&self, email: &str) -> String {
        let r = self
            .send(post_json(
                "/api/auth/login",
                json!({"email": email, "password": PASSWORD}),
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.header("set-cookie")
            .split(';')
            .next()
            .unwrap_or("")
            .to_owned()
    }

    pub(crate) async fn admin(&self) -> String {
        self.user("owner@example.com", "owner").await;
        self.login("owner@example.com").await
    }
}

pub(crate) fn req(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path)
}

pub(crate) fn json_body(b: axum::http::request::Builder, v: Value) -> Request<Body> {
    b.header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .expect("request")
}

pub(crate) fn get(path: &str) -> Request<Body> {
    req(Method::GET, path).body(Body::empty()).expect("request")
}

/// A browser-like JSON POST from the allowed origin.
pub(crate) fn post_json(path: &str, v: Value) -> Request<Body> {
    json_body(req(Method::POST, path).header(header::ORIGIN, ORIGIN), v)
}

pub(crate) fn bearer(b: axum::http::request::Builder, key: &str) -> axum::http::request::Builder {
    b.header(header::AUTHORIZATION, format!("Bearer {key}"))
}

pub(crate) fn with_cookie(
    b: axum::http::request::Builder,
    cookie: &str,
) -> axum::http::request::Builder {
    b.header(header::COOKIE, cookie)
        .header(header::ORIGIN, ORIGIN)
}

conformance!(
    health_and_the_openapi_document_list_every_route,
    sessions_are_listed_and_ended_and_users_disabled_over_http,
    a_body_that_is_not_one_json_object_is_refused,
    api_key_routes_enforce_keys_and_scopes,
    bad_input_gets_a_problem_and_writes_nothing,
    rate_limit_headers_and_429,
    idempotency_keys_replay_refuse_and_wait,
    every_mutation_is_idempotent_under_either_header,
    contact_form_honeypot_and_cors,
    sessions_csrf_expiry_and_lockout,
    admin_routes_manage_keys_webhooks_users_and_settings,
    an_admin_cannot_seize_the_workspace_over_http,
    parsing_kelvin_signs_answers_instead_of_panicking,
    a_body_with_bytes_after_the_document_is_refused,
    forged_forwarded_for_cannot_escape_the_per_ip_limit,
    inbound_webhooks_verify_and_capture_once,
    registration_signs_in_and_sign_in_needs_no_workspace_id,
    mailed_links_open_pages_that_act_on_a_press,
    stats_need_leads_read_and_count_the_callers_workspace,
    duplicates_and_merge_over_http,
    imports_and_exports_over_http,
    contacts_organizations_and_conversion_over_http,
);

// The tenant tests again, behind row-level security.
with_rls!(
    an_admin_cannot_seize_the_workspace_over_http,
    stats_need_leads_read_and_count_the_callers_workspace,
);

async fn health_and_the_openapi_document_list_every_route(db: &TestDb) {
    let app = App::new(db).await;
    let r = app.send(get("/api/v1/health")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "ok");
    assert!(
        r.body.get("database").is_none(),
        "liveness does not ask the database"
    );
    assert!(r.body["version"].is_string() && r.body["timestamp"].is_string());
    assert!(!r.header("x-request-id").is_empty());
    let r = app.send(get("/api/v1/ready")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["database"], true);
    // With the database gone, the process is still alive but not ready.
    app.crm.close().await;
    assert_eq!(app.send(get("/api/v1/health")).await.status, 200);
    let r = app.send(get("/api/v1/ready")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["status"], "unavailable");
    assert_eq!(r.body["database"], false);
    let app = App::new(db).await;

    let doc = app.send(get("/api/openapi.json")).await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut listed = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            listed.insert(format!("{} {path}", method.to_uppercase()));
            assert!(op["operationId"].is_string(), "{method} {path}");
            assert!(op["responses"]["500"].is_object(), "{method} {path}");
        }
    }
    // What the router serves, as the issue lists it.
    let mut expected: BTreeSet<String> = [
        "GET /api/v1/health",
        "GET /api/v1/ready",
        "POST /api/leads",
        "GET /api/v1/leads",
        "POST /api/v1/leads",
        "GET /api/v1/leads/{id}",
        "PATCH /api/v1/leads/{id}",
        "DELETE /api/v1/leads/{id}",
        "POST /api/v1/leads/{id}/activities",
        "POST /api/v1/leads/{id}/messages",
        "POST /api/v1/leads/{id}/archive",
        "POST /api/v1/leads/{id}/restore",
        "GET /api/v1/leads/duplicates",
        "POST /api/v1/leads/{id}/merge",
        "GET /api/v1/leads/export",
        "POST /api/v1/imports",
        "GET /api/v1/imports/{id}",
        "POST /api/v1/leads/parse",
        "GET /api/v1/stats",
        "POST /api/v1/leads/{id}/convert",
        "GET /api/v1/contacts",
        "POST /api/v1/contacts",
        "GET /api/v1/contacts/{id}",
        "PATCH /api/v1/contacts/{id}",
        "DELETE /api/v1/contacts/{id}",
        "GET /api/v1/organizations",
        "POST /api/v1/organizations",
        "GET /api/v1/organizations/{id}",
        "PATCH /api/v1/organizations/{id}",
        "DELETE /api/v1/organizations/{id}",
        "GET /api/v1/me",
        "POST /api/auth/login",
        "POST /api/auth/logout",
        "GET /api/auth/me",
        "POST /api/auth/change-password",
        "POST /api/auth/password-reset",
        "POST /api/auth/password-reset/confirm",
        "POST /api/auth/verify-email",
        "POST /api/auth/verify-email/request",
        "POST /api/auth/register",
        "GET /api/admin/api-keys",
        "POST /api/admin/api-keys",
        "PATCH /api/admin/api-keys/{id}",
        "DELETE /api/admin/api-keys/{id}",
        "DELETE /api/admin/integrations/{kind}",
        "POST /api/admin/api-keys/{id}/rotate",
        "GET /api/admin/webhooks",
        "POST /api/admin/webhooks",
        "PATCH /api/admin/webhooks/{id}",
        "DELETE /api/admin/webhooks/{id}",
        "POST /api/admin/webhooks/{id}/test",
        "POST /api/admin/webhooks/{id}/rotate-secret",
        "GET /api/admin/webhooks/{id}/deliveries",
        "POST /api/admin/webhooks/{id}/deliveries/{msg}/resend",
        "GET /api/admin/notifications",
        "POST /api/admin/notifications",
        "PATCH /api/admin/notifications/{id}",
        "DELETE /api/admin/notifications/{id}",
        "POST /api/admin/notifications/{id}/test",
        "GET /api/admin/settings",
        "GET /api/admin/integrations",
        "GET /api/admin/integrations/{kind}",
        "PUT /api/admin/integrations/{kind}",
        "PATCH /api/admin/settings",
        "GET /api/admin/users",
        "POST /api/admin/users",
        "PATCH /api/admin/users/{id}",
        "DELETE /api/admin/users/{id}/lockout",
        "DELETE /api/admin/users/{id}",
        "POST /api/admin/users/{id}/disable",
        "POST /api/admin/users/{id}/enable",
        "DELETE /api/admin/users/{id}/sessions",
        "POST /api/auth/logout-everywhere",
        "GET /api/auth/sessions",
        "DELETE /api/auth/sessions/{id}",
        "GET /api/admin/audit",
        "POST /api/webhooks/cal",
        "GET /api/webhooks/whatsapp",
        "POST /api/webhooks/whatsapp",
        "POST /api/webhooks/whatsapp/{inbound_id}",
        "GET /api/webhooks/whatsapp/{inbound_id}",
        "POST /api/webhooks/cal/{inbound_id}",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for lead_route in [
        "GET /leads",
        "POST /leads",
        "GET /leads/{id}",
        "PATCH /leads/{id}",
        "DELETE /leads/{id}",
        "POST /leads/{id}/activities",
        "POST /leads/{id}/messages",
        "POST /leads/{id}/archive",
        "POST /leads/{id}/restore",
        "GET /leads/duplicates",
        "POST /leads/{id}/merge",
        "GET /leads/export",
        "POST /imports",
        "GET /imports/{id}",
        "POST /leads/parse",
        "GET /stats",
        "POST /leads/{id}/convert",
        "GET /contacts",
        "POST /contacts",
        "GET /contacts/{id}",
        "PATCH /contacts/{id}",
        "DELETE /contacts/{id}",
        "GET /organizations",
        "POST /organizations",
        "GET /organizations/{id}",
        "PATCH /organizations/{id}",
        "DELETE /organizations/{id}",
    ] {
        let (m, p) = lead_route.split_once(' ').expect("route");
        expected.insert(format!("{m} /api/admin{p}"));
    }
    for parent in ["leads", "contacts"] {
        for route in [
            "GET /{parent}/{id}/attachments",
            "POST /{parent}/{id}/attachments",
            "GET /{parent}/{id}/attachments/{attachment_id}",
            "DELETE /{parent}/{id}/attachments/{attachment_id}",
            "GET /{parent}/{id}/attachments/{attachment_id}/content",
            "POST /{parent}/{id}/attachments/{attachment_id}/link",
        ] {
            let (m, p) = route.split_once(' ').expect("route");
            let p = p.replace("{parent}", parent);
            expected.insert(format!("{m} /api/v1{p}"));
            expected.insert(format!("{m} /api/admin{p}"));
        }
    }
    expected.insert("GET /api/files".into());
    assert_eq!(listed, expected);

    // Every documented operation is served (not the router's 404/405), and a path
    // the document does not list is not.
    let id = uuid::Uuid::now_v7();
    for route in &listed {
        let (m, p) = route.split_once(' ').expect("route");
        let path = p.replace("{id}", &id.to_string()).replace("{msg}", "msg_x");
        let method: Method = m.parse().expect("method");
        let r = app
            .send(req(method, &path).body(Body::empty()).expect("request"))
            .await;
        assert!(
            !matches!(
                r.body["code"].as_str(),
                Some("route_not_found" | "method_not_allowed")
            ),
            "{route}: {}",
            r.text
        );
    }
    app.send(get("/api/v2/leads"))
        .await
        .problem(404, "route_not_found");
    app.send(
        req(Method::PUT, "/api/v1/leads")
            .body(Body::empty())
            .expect("req"),
    )
    .await
    .problem(405, "method_not_allowed");

    // Every schema reference resolves.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let text = doc.to_string();
    let unresolved: BTreeSet<&str> = text
        .split("\"$ref\":\"#/components/schemas/")
        .skip(1)
        .filter_map(|piece| piece.split('"').next())
        .filter(|name| !schemas.contains_key(*name))
        .collect();
    assert!(unresolved.is_empty(), "unresolved $ref: {unresolved:?}");
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    assert_eq!(
        doc["paths"]["/api/v1/leads"]["get"]["security"][0]["api_key"],
        json!([])
    );
    assert_eq!(
        doc["paths"]["/api/admin/leads"]["get"]["security"][0]["session"],
        json!([])
    );
    assert_eq!(doc["paths"]["/api/leads"]["post"]["security"], Value::Null);
    let ids: Vec<&str> = text
        .split("\"operationId\":\"")
        .skip(1)
        .filter_map(|p| p.split('"').next())
        .collect();
    assert_eq!(ids.len(), listed.len());
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "operation ids are unique"
    );
    // The same document as `crm::http::openapi`.
    let direct = serde_json::to_value(crm::http::openapi(app.crm.clone(), config())).expect("json");
    assert_eq!(direct, doc);
}

async fn api_key_routes_enforce_keys_and_scopes(db: &TestDb) {
    let app = App::new(db).await;
    let r = app.send(get("/api/v1/leads")).await;
    r.problem(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), "Bearer");
    assert_eq!(r.field(), "Authorization");
    app.send(
        bearer(req(Method::GET, "/api/v1/leads"), "crm_nope")
            .body(Body::empty())
            .expect("r"),
    )
    .await
    .problem(401, "unauthorized");

    let reader = app.key(&["leads:read"]).await;
    let writer = app.key(&["leads:*"]).await;
    let lead = json!({"name": "Ada Lovelace", "email": "ada@example.com", "tags": ["vip"]});
    app.send(json_body(
        bearer(req(Method::POST, "/api/v1/leads"), &reader),
        lead.clone(),
    ))
    .await
    .problem(403, "forbidden");
    assert_eq!(db.count("crm_leads").await, 0);

    let r = app
        .send(json_body(
            bearer(req(Method::POST, "/api/v1/leads"), &writer),
            lead.clone(),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(r.body["email"], "ada@example.com");
    assert_eq!(r.body["status"], "new");

    let dup = app
        .send(json_body(
            bearer(req(Method::POST, "/api/v1/leads"), &writer),
            lead,
        ))
        .await;
    dup.problem(409, "conflict");
    assert_eq!(dup.body["existing_id"], id.as_str());

    let list = app
        .send(
            bearer(
                req(
                    Method::GET,
                    "/api/v1/leads?status=new,contacted&tags=vip&q=ada&limit=10&include_total=true",
                ),
                &reader,
            )
            .body(Body::empty())
            .expect("r"),
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["items"][0]["id"], id.as_str());
    assert_eq!(list.body["total"], 1);

    let path = format!("/api/v1/leads/{id}");
    let patch = app
        .send(json_body(
            bearer(req(Method::PATCH, &path), &writer),
            json!({"status": "contacted", "company": null}),
        ))
        .await;
    assert_eq!(patch.status, 200, "{}", patch.text);
    assert_eq!(patch.body["status"], "contacted");
    let act = app
        .send(json_body(
            bearer(req(Method::POST, &format!("{path}/activities")), &writer),
            json!({"kind": "call", "description": "Called back"}),
        ))
        .await;
    assert_eq!(act.status, 201, "{}", act.text);
    let detail = app
        .send(
            bearer(req(Method::GET, &path), &reader)
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    assert_eq!(detail.status, 200);
    let kinds: Vec<&str> = detail.body["activities"]
        .as_array()
        .expect("activities")
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["status_change", "call"]);
    assert_eq!(
        detail.body["activities"][1]["actor"]
            .as_str()
            .expect("actor")
            .split(':')
            .next(),
        Some("api_key")
    );

    let parsed = app
        .send(json_body(
            bearer(req(Method::POST, "/api/v1/leads/parse"), &reader),
            json!({"text": "Hi, I'm Grace Hopper, grace@example.com, budget $20k"}),
        ))
        .await;
    assert_eq!(parsed.status, 200, "{}", parsed.text);
    assert_eq!(parsed.body["lead"], Value::Null);
    // The values themselves, each with how sure the parser is, and which parser.
    assert_eq!(
        parsed.body["fields"],
        json!({"name": "Grace Hopper", "email": "grace@example.com", "budget": "15k_50k"})
    );
    assert_eq!(parsed.body["found"], json!(["name", "email", "budget"]));
    for field in ["name", "email", "budget"] {
        let c = parsed.body["field_confidence"][field]
            .as_f64()
            .expect(field);
        assert!(c > 0.0 && c <= 1.0, "{field}: {c}");
    }
    assert_eq!(parsed.body["parser"], "builtin");
    assert_eq!(parsed.body["fallback"], false);
    app.send(json_body(
        bearer(req(Method::POST, "/api/v1/leads/parse"), &reader),
        json!({"text": "grace@example.com", "auto_save": true}),
    ))
    .await
    .problem(403, "forbidden");

    let me = app
        .send(
            bearer(req(Method::GET, "/api/v1/me"), &reader)
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["scopes"], json!(["leads:read"]));
    assert!(!me.text.contains(&reader), "the key is never shown again");

    // Archive and restore: leads:write; the listing hides archived leads unless
    // `archived` asks for them.
    let post = |p: String, key: &str| {
        bearer(req(Method::POST, &p), key)
            .body(Body::empty())
            .expect("r")
    };
    app.send(post(format!("{path}/archive"), &reader))
        .await
        .problem(403, "forbidden");
    let archived = app.send(post(format!("{path}/archive"), &writer)).await;
    assert_eq!(archived.status, 200, "{}", archived.text);
    assert!(archived.body["archived_at"].is_string());
    let listed = |q: &'static str| {
        bearer(req(Method::GET, &format!("/api/v1/leads{q}")), &reader)
            .body(Body::empty())
            .expect("r")
    };
    let count = |r: &Res| r.body["items"].as_array().map_or(0, Vec::len);
    let hidden = app.send(listed("")).await;
    let only = app.send(listed("?archived=true")).await;
    let any = app.send(listed("?archived=any")).await;
    assert_eq!(count(&only), 1, "{}", only.text);
    assert_eq!(count(&any), count(&hidden) + 1);
    app.send(listed("?archived=maybe"))
        .await
        .problem(400, "invalid_query_parameter");
    let restored = app.send(post(format!("{path}/restore"), &writer)).await;
    assert_eq!(restored.status, 200);
    assert_eq!(restored.body["archived_at"], Value::Null);

    app.send(
        bearer(req(Method::DELETE, &path), &reader)
            .body(Body::empty())
            .expect("r"),
    )
    .await
    .problem(403, "forbidden");
    // The lead has a timeline: deleting it takes ?confirm=true. The query is part of
    // an Idempotency-Key's request: adding it under the same key is another request
    // (422), never the stored 409 replayed.
    let del = app
        .send(
            bearer(req(Method::DELETE, &path), &writer)
                .header("idempotency-key", "delete-once")
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    del.problem(409, "confirmation_required");
    let confirmed = format!("{path}?confirm=true");
    let delete = |key: &'static str| {
        bearer(req(Method::DELETE, &confirmed), &writer)
            .header("idempotency-key", key)
            .body(Body::empty())
            .expect("r")
    };
    app.send(delete("delete-once"))
        .await
        .problem(422, "idempotency_key_reused");
    let del = app.send(delete("delete-confirmed")).await;
    assert_eq!(del.status, 204, "{}", del.text);
    app.send(
        bearer(req(Method::GET, &path), &reader)
            .body(Body::empty())
            .expect("r"),
    )
    .await
    .problem(404, "not_found");
}

async fn bad_input_gets_a_problem_and_writes_nothing(db: &TestDb) {
    let app = App::new(db).await;
    let key = app.key(&["leads:*"]).await;
    let post = |body: Body, ct: &str| {
        bearer(req(Method::POST, "/api/v1/leads"), &key)
            .header(header::CONTENT_TYPE, ct)
            .body(body)
            .expect("request")
    };
    let json_ct = "application/json";
    app.send(post(Body::from("{\"name\": "), json_ct))
        .await
        .problem(400, "malformed_json");
    let r = app
        .send(post(
            Body::from(r#"{"name": 42, "email": "a@b.co"}"#),
            json_ct,
        ))
        .await;
    r.problem(422, "invalid_body");
    assert_eq!(r.field(), "name");
    let r = app
        .send(post(
            Body::from(r#"{"name": "A", "email": "a@b.co", "tags": ["x", 3]}"#),
            json_ct,
        ))
        .await;
    r.problem(422, "invalid_body");
    assert_eq!(r.field(), "tags[1]");
    let r = app
        .send(post(
            Body::from(r#"{"name": "A", "email": "a@b.co", "admin": true}"#),
            json_ct,
        ))
        .await;
    r.problem(422, "invalid_body");
    assert!(r.body["detail"]
        .as_str()
        .is_some_and(|d| d.contains("unknown field")));
    app.send(post(Body::from("name=A"), "text/plain"))
        .await
        .problem(415, "unsupported_media_type");
    let huge = format!(
        r#"{{"name": "A", "email": "a@b.co", "notes": "{}"}}"#,
        "x".repeat(70_000)
    );
    app.send(post(Body::from(huge), json_ct))
        .await
        .problem(413, "body_too_large");
    let r = app
        .send(post(
            Body::from(r#"{"name": "", "email": "not-an-email", "status": "bogus"}"#),
            json_ct,
        ))
        .await;
    r.problem(422, "validation_failed");
    let fields: BTreeSet<&str> = r.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(
        fields.is_superset(&BTreeSet::from(["name", "email", "status"])),
        "{fields:?}"
    );

    let get_q = |q: &str| {
        bearer(req(Method::GET, &format!("/api/v1/leads{q}")), &key)
            .body(Body::empty())
            .expect("request")
    };
    let r = app.send(get_q("/not-a-uuid")).await;
    r.problem(400, "invalid_path_parameter");
    assert_eq!(r.field(), "id");
    let r = app.send(get_q("?limit=abc")).await;
    r.problem(400, "invalid_query_parameter");
    assert_eq!(r.field(), "limit");
    app.send(get_q("?frobnicate=1"))
        .await
        .problem(400, "invalid_query_parameter");
    let r = app.send(get_q("?cursor=garbage")).await;
    r.problem(422, "validation_failed");
    assert_eq!(r.field(), "cursor");
    let r = app.send(get_q("?limit=1000")).await;
    r.problem(422, "validation_failed");
    app.send(get_q("?sort=shoe_size"))
        .await
        .problem(400, "invalid_query_parameter");
    app.send(get_q("?created_after=yesterday"))
        .await
        .problem(400, "invalid_query_parameter");
    let unknown = uuid::Uuid::now_v7();
    app.send(json_body(
        bearer(
            req(Method::PATCH, &format!("/api/v1/leads/{unknown}")),
            &key,
        ),
        json!({"name": "B"}),
    ))
    .await
    .problem(404, "not_found");
    assert_eq!(db.count("crm_leads").await, 0);
    assert_eq!(db.count("crm_events").await, 0);
}

async fn rate_limit_headers_and_429(db: &TestDb) {
    let app = App::with(
        db,
        |b| b.rate_limit_policy("api_key", Policy::per_minute(3).expect("policy")),
        config(),
    )
    .await;
    let key = app.key(&["leads:read"]).await;
    let call = || {
        bearer(req(Method::GET, "/api/v1/leads"), &key)
            .body(Body::empty())
            .expect("r")
    };
    for left in ["2", "1", "0"] {
        let r = app.send(call()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), "3");
        assert_eq!(r.header("x-ratelimit-remaining"), left);
        let reset: i64 = r.header("x-ratelimit-reset").parse().expect("reset");
        assert!(reset > db.clock_now().timestamp());
    }
    let r = app.send(call()).await;
    r.problem(429, "rate_limited");
    assert_eq!(r.header("retry-after"), "20");
    assert_eq!(r.header("x-ratelimit-remaining"), "0");
    assert_eq!(r.body["retry_after"], 20);
    // Another key has its own budget; time refills this one.
    let other = app.key(&["leads:read"]).await;
    let r = app
        .send(
            bearer(req(Method::GET, "/api/v1/leads"), &other)
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    assert_eq!(r.status, 200);
    db.clock.advance(chrono::Duration::seconds(20));
    assert_eq!(app.send(call()).await.status, 200);
}

/// A parser that waits until the test lets it go, to hold a request in flight.
struct Gate(Arc<tokio::sync::Semaphore>);

impl LeadParser for Gate {
    fn parse<'a>(&'a self, text: &'a str, _: &'a AllowedValues) -> ParseFuture<'a> {
        Box::pin(async move {
            let _permit = self.0.acquire().await;
            let fields = NewLead {
                name: "Gated".into(),
                email: Some(format!("{}@example.com", text.len())),
                ..NewLead::default()
            };
            Ok(ParsedLead::new("gate", fields, &[], 1.0))
        })
    }
}

async fn idempotency_keys_replay_refuse_and_wait(db: &TestDb) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let app = App::with(db, |b| b.lead_parser(Gate(gate.clone())), config()).await;
    let key = app.key(&["leads:*"]).await;
    let create = |idem: &str, body: Value| {
        json_body(
            bearer(req(Method::POST, "/api/v1/leads"), &key).header("idempotency-key", idem),
            body,
        )
    };
    let body = json!({"name": "Ada", "email": "ada@example.com"});
    let first = app.send(create("k-1", body.clone())).await;
    assert_eq!(first.status, 201);
    let again = app.send(create("k-1", body.clone())).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(db.count("crm_leads").await, 1);
    app.send(create(
        "k-1",
        json!({"name": "Bob", "email": "bob@example.com"}),
    ))
    .await
    .problem(422, "idempotency_key_reused");
    // A stored failure replays too; a new key runs.
    app.send(create("k-2", body.clone()))
        .await
        .problem(409, "conflict");
    app.send(create("k-2", body.clone()))
        .await
        .problem(409, "conflict");
    // Scoped per API key.
    let other = app.key(&["leads:*"]).await;
    let r = app
        .send(json_body(
            bearer(req(Method::POST, "/api/v1/leads"), &other).header("idempotency-key", "k-1"),
            json!({"name": "Eve", "email": "eve@example.com"}),
        ))
        .await;
    assert_eq!(r.status, 201);
    // While the first request with a key runs, a second one is told so.
    let parse = || {
        json_body(
            bearer(req(Method::POST, "/api/v1/leads/parse"), &key)
                .header("idempotency-key", "slow"),
            json!({"text": "hello", "auto_save": true}),
        )
    };
    let router = app.router.clone();
    let running = tokio::spawn(router.oneshot(parse()));
    // Wait until the first request holds the key (it then waits at the gate).
    for _ in 0..500 {
        let held = db
            .scalar_text("SELECT COUNT(*) || '' FROM crm_idempotency_keys WHERE idem_key = 'slow'")
            .await;
        if held == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.send(parse())
        .await
        .problem(409, "idempotency_key_in_use");
    gate.add_permits(10);
    let done = running.await.expect("task").expect("response");
    assert_eq!(done.status(), 200);
    let replay = app.send(parse()).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("idempotent-replayed"), "true");
    assert_eq!(db.count("crm_leads").await, 3);
    app.send(create(&"x".repeat(300), body))
        .await
        .problem(422, "validation_failed");
}

async fn every_mutation_is_idempotent_under_either_header(db: &TestDb) {
    let app = App::new(db).await;
    let key = app.key(&["leads:*"]).await;
    let lead = app
        .send(json_body(
            bearer(req(Method::POST, "/api/v1/leads"), &key),
            json!({"name": "Ada", "email": "ada@example.com"}),
        ))
        .await;
    let path = format!("/api/v1/leads/{}", lead.body["id"].as_str().expect("id"));
    // PATCH under the alias header: the retry is the stored answer, not a second
    // change (the lead changed in between, the replay still shows the first result).
    let patch = |idem: &str, company: &str| {
        json_body(
            bearer(req(Method::PATCH, &path), &key).header("x-idempotency-key", idem),
            json!({"company": company}),
        )
    };
    let first = app.send(patch("p-1", "Acme")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    app.send(patch("p-2", "Other")).await;
    let again = app.send(patch("p-1", "Acme")).await;
    assert_eq!(
        (again.status.as_u16(), again.header("idempotent-replayed")),
        (200, "true")
    );
    assert_eq!(again.body, first.body);
    assert_eq!(again.body["company"], "Acme");
    app.send(patch("p-1", "Changed"))
        .await
        .problem(422, "idempotency_key_reused");
    // DELETE: the retry answers the first 204, not 404.
    let delete = |idem: &str| {
        bearer(req(Method::DELETE, &path), &key)
            .header("idempotency-key", idem)
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(app.send(delete("d-1")).await.status, 204);
    let again = app.send(delete("d-1")).await;
    assert_eq!(
        (again.status.as_u16(), again.header("idempotent-replayed")),
        (204, "true")
    );
    app.send(delete("d-2")).await.problem(404, "not_found");
    // The same key on another method of the same path is another request.
    app.send(delete("p-1"))
        .await
        .problem(422, "idempotency_key_reused");
    // A refusal of who asked is not kept: the key may get the scope later.
    let reader = app.key(&["leads:read"]).await;
    app.send(json_body(
        bearer(req(Method::POST, "/api/v1/leads"), &reader).header("idempotency-key", "r-1"),
        json!({"name": "Bo", "email": "bo@example.com"}),
    ))
    .await
    .problem(403, "forbidden");
    let kept = db
        .scalar_i64("SELECT COUNT(*) FROM crm_idempotency_keys WHERE idem_key = 'r-1'")
        .await;
    assert_eq!(kept, 0);

    // Admin routes, scoped per user: a retried key creation makes one key, and the
    // replay does not show (nor does the database keep) its secret.
    let cookie = app.admin().await;
    let create = || {
        json_body(
            with_cookie(req(Method::POST, "/api/admin/api-keys"), &cookie)
                .header("idempotency-key", "new-key"),
            json!({"name": "ci", "scopes": ["leads:read"]}),
        )
    };
    let made = app.send(create()).await;
    assert_eq!(made.status, 201, "{}", made.text);
    let secret = made.body["secret"].as_str().expect("secret").to_owned();
    let again = app.send(create()).await;
    assert_eq!(
        (again.status.as_u16(), again.header("idempotent-replayed")),
        (201, "true")
    );
    assert_eq!(again.body["id"], made.body["id"]);
    assert_eq!(again.body["secret"], Value::Null);
    let stored = db
        .scalar_text("SELECT response FROM crm_idempotency_keys WHERE idem_key = 'new-key'")
        .await;
    assert!(!stored.contains(&secret), "the secret is never stored");
    let keys = app
        .send(
            with_cookie(req(Method::GET, "/api/admin/api-keys"), &cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    let named_ci = keys
        .body
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["name"] == "ci")
        .count();
    assert_eq!(named_ci, 1, "one key made");
    // Scoped per user: another admin's request under the same key is their own, never
    // a replay of the first admin's answer.
    app.user("second@example.com", "admin").await;
    let second = app.login("second@example.com").await;
    let theirs = app
        .send(json_body(
            with_cookie(req(Method::POST, "/api/admin/api-keys"), &second)
                .header("idempotency-key", "new-key"),
            json!({"name": "ci", "scopes": ["leads:read"]}),
        ))
        .await;
    assert_eq!(theirs.status, 201, "{}", theirs.text);
    assert_eq!(theirs.header("idempotent-replayed"), "");
    assert_ne!(theirs.body["id"], made.body["id"]);
    assert!(theirs.body["secret"].is_string());
    // Reads ignore the header.
    let listed = app
        .send(
            with_cookie(req(Method::GET, "/api/admin/api-keys"), &cookie)
                .header("idempotency-key", "new-key")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.header("idempotent-replayed"), "");
}

async fn contact_form_honeypot_and_cors(db: &TestDb) {
    let app = App::new(db).await;
    let form = |body: &str| {
        req(Method::POST, "/api/leads")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .expect("request")
    };
    let r = app
        .send(json_body(
            req(Method::POST, "/api/leads"),
            json!({"name": "Ada", "email": "ada@example.com", "message": "Hello"}),
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body, json!({"status": "received"}));
    let r = app
        .send(form(
            "name=Ada+L&email=ADA%40example.com&phone=%2B14155550100&company=Engines",
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        db.count("crm_leads").await,
        1,
        "recorded on the lead with that email"
    );
    // A form never fills a known lead's fields; the submission is on its timeline.
    assert_eq!(
        db.count("crm_leads WHERE company IS NULL AND phone IS NULL")
            .await,
        1
    );
    assert_eq!(
        db.count("crm_activities WHERE description LIKE '%Engines%+14155550100%'")
            .await,
        1
    );
    let honeypot = app
        .send(form(
            "name=Bot&email=bot%40spam.example&website=http%3A%2F%2Fspam",
        ))
        .await;
    assert_eq!(honeypot.status, 202);
    assert_eq!(honeypot.body, r.body);
    assert_eq!(db.count("crm_leads").await, 1);
    let bad = app.send(form("name=&email=nope")).await;
    bad.problem(422, "validation_failed");
    app.send(form("name=A&email=a%40b.co&is_admin=1"))
        .await
        .problem(422, "invalid_body");

    // CORS: the configured origin gets a preflight answer, another does not.
    let preflight = |origin: &str| {
        req(Method::OPTIONS, "/api/leads")
            .header(header::ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .body(Body::empty())
            .expect("request")
    };
    let ok = app.send(preflight(ORIGIN)).await;
    assert!(ok.status.is_success());
    assert_eq!(ok.header("access-control-allow-origin"), ORIGIN);
    assert_eq!(ok.header("access-control-allow-credentials"), "true");
    let other = app.send(preflight("https://evil.example")).await;
    assert_eq!(other.header("access-control-allow-origin"), "");

    // anonymous_ip: 10 a minute for one client (5 used above).
    let mut last = None;
    for i in 0..6 {
        last = Some(
            app.send(form(&format!("name=N&email=n{i}%40example.com")))
                .await,
        );
    }
    let last = last.expect("response");
    last.problem(429, "rate_limited");
    assert!(!last.header("retry-after").is_empty());

    // Issue 15, item 13: the form's bucket is spent, yet the same client can still
    // sign in: the auth routes count in a bucket of their own.
    app.user("office@example.com", "member").await;
    app.login("office@example.com").await;
}

async fn sessions_csrf_expiry_and_lockout(db: &TestDb) {
    let app = App::new(db).await;
    app.user("member@example.com", "member").await;
    let bad = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "member@example.com", "password": "wrong-Password-1!"}),
        ))
        .await;
    bad.problem(401, "unauthorized");
    assert_eq!(bad.body["detail"], "invalid credentials");
    let unknown = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "ghost@example.com", "password": PASSWORD}),
        ))
        .await;
    assert_eq!(
        unknown.body, bad.body,
        "the same answer for an unknown email"
    );

    let r = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "member@example.com", "password": PASSWORD, "remember_me": true}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let set = r.header("set-cookie").to_owned();
    assert!(set.starts_with("__Host-crm_session="), "{set}");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!r
        .text
        .contains(set.split(['=', ';']).nth(1).expect("token")));
    let cookie = set.split(';').next().expect("cookie").to_owned();

    let me = |cookie: &str| {
        req(Method::GET, "/api/auth/me")
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .expect("request")
    };
    let r = app.send(me(&cookie)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["user"]["email"], "member@example.com");
    assert!(r.header("x-ratelimit-limit") == "300");
    app.send(get("/api/auth/me"))
        .await
        .problem(401, "unauthorized");

    // CSRF: no Origin, a foreign Origin → 403; the custom header or the allowed origin pass.
    let change = |b: axum::http::request::Builder| {
        json_body(
            b.header(header::COOKIE, &cookie),
            json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        )
    };
    app.send(change(req(Method::POST, "/api/auth/change-password")))
        .await
        .problem(403, "csrf_failed");
    app.send(change(
        req(Method::POST, "/api/auth/change-password")
            .header(header::ORIGIN, "https://evil.example"),
    ))
    .await
    .problem(403, "csrf_failed");
    let r = app
        .send(change(
            req(Method::POST, "/api/auth/change-password").header("x-crm-csrf", "1"),
        ))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    // A member is not an admin.
    app.send(
        with_cookie(req(Method::GET, "/api/admin/api-keys"), &cookie)
            .body(Body::empty())
            .expect("r"),
    )
    .await
    .problem(403, "forbidden");
    // But works with leads.
    let r = app
        .send(json_body(
            with_cookie(req(Method::POST, "/api/admin/leads"), &cookie),
            json!({"name": "Lin", "phone": "+14155550123"}),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Logout ends the session and clears the cookie.
    let out = app
        .send(
            with_cookie(req(Method::POST, "/api/auth/logout"), &cookie)
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    app.send(me(&cookie)).await.problem(401, "unauthorized");

    // Issue 15, item 2 (in part): sign out everywhere ends the user's other sessions.
    let sign_in = || async {
        let r = app
            .send(post_json(
                "/api/auth/login",
                json!({"email": "member@example.com", "password": NEW_PASSWORD}),
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.header("set-cookie")
            .split(';')
            .next()
            .unwrap_or("")
            .to_owned()
    };
    let phone = sign_in().await;
    let laptop = sign_in().await;
    assert_eq!(app.send(me(&phone)).await.status, 200);
    let out = app
        .send(
            with_cookie(req(Method::POST, "/api/auth/logout-everywhere"), &laptop)
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    assert_eq!(out.status, 204, "{}", out.text);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    app.send(me(&phone)).await.problem(401, "unauthorized");
    app.send(me(&laptop)).await.problem(401, "unauthorized");

    // Expiry: a 24-hour session is gone after a day without use.
    let r = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "member@example.com", "password": NEW_PASSWORD}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let cookie = r
        .header("set-cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    assert_eq!(app.send(me(&cookie)).await.status, 200);
    db.clock.advance(chrono::Duration::hours(25));
    app.send(me(&cookie)).await.problem(401, "unauthorized");

    // Lockout: after 5 failures even the right password is refused for a while.
    for _ in 0..5 {
        app.send(post_json(
            "/api/auth/login",
            json!({"email": "member@example.com", "password": "Wrong-password-9!"}),
        ))
        .await
        .problem(401, "unauthorized");
    }
    let locked = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "member@example.com", "password": NEW_PASSWORD}),
        ))
        .await;
    locked.problem(429, "rate_limited");
    assert!(locked.header("retry-after").parse::<u64>().expect("retry") > 0);

    // Issue 15, item 8: an admin lifts the lock; the member signs in at once.
    let admin = app.admin().await;
    let users = app
        .send(
            with_cookie(req(Method::GET, "/api/admin/users"), &admin)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    let member_id = users
        .body
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["email"] == "member@example.com")
        .and_then(|u| u["id"].as_str())
        .expect("member")
        .to_owned();
    let r = app
        .send(
            with_cookie(
                req(
                    Method::DELETE,
                    &format!("/api/admin/users/{member_id}/lockout"),
                ),
                &admin,
            )
            .body(Body::empty())
            .expect("request"),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "member@example.com", "password": NEW_PASSWORD}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn admin_routes_manage_keys_webhooks_users_and_settings(db: &TestDb) {
    let app = App::with(db, |b| b.webhook_allow_networks(["127.0.0.1/32"]), config()).await;
    let cookie = app.admin().await;
    let send = |m: Method, path: &str, body: Option<Value>| {
        let b = with_cookie(req(m, path), &cookie);
        match body {
            Some(v) => json_body(b, v),
            None => b.body(Body::empty()).expect("request"),
        }
    };

    // API keys: the secret once, then never.
    let r = app
        .send(send(
            Method::POST,
            "/api/admin/api-keys",
            Some(json!({"name": "zapier", "scopes": ["leads:read"]})),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let secret = r.body["secret"].as_str().expect("secret").to_owned();
    let id = r.body["id"].as_str().expect("id").to_owned();
    let list = app
        .send(send(Method::GET, "/api/admin/api-keys", None))
        .await;
    assert_eq!(list.body.as_array().map(Vec::len), Some(1));
    assert!(!list.text.contains(&secret));
    let r = app
        .send(send(
            Method::PATCH,
            &format!("/api/admin/api-keys/{id}"),
            Some(json!({"scopes": ["leads:*"]})),
        ))
        .await;
    assert_eq!(r.body["scopes"], json!(["leads:*"]));
    let rotated = app
        .send(send(
            Method::POST,
            &format!("/api/admin/api-keys/{id}/rotate"),
            Some(json!({"grace_seconds": 0})),
        ))
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    let new_secret = rotated.body["secret"].as_str().expect("secret").to_owned();
    let me = |k: &str| {
        bearer(req(Method::GET, "/api/v1/me"), k)
            .body(Body::empty())
            .expect("r")
    };
    assert_eq!(app.send(me(&secret)).await.status, 401);
    assert_eq!(app.send(me(&new_secret)).await.status, 200);
    let new_id = rotated.body["id"].as_str().expect("id").to_owned();
    let r = app
        .send(send(
            Method::DELETE,
            &format!("/api/admin/api-keys/{new_id}"),
            None,
        ))
        .await;
    assert!(r.body["revoked_at"].is_string());
    assert_eq!(app.send(me(&new_secret)).await.status, 401);
    // Issue 24: a revoked key is frozen; `{"scopes":["*"]}` answered 200 and
    // rewrote its record.
    app.send(send(
        Method::PATCH,
        &format!("/api/admin/api-keys/{new_id}"),
        Some(json!({"scopes": ["*"]})),
    ))
    .await
    .problem(409, "key_revoked");
    let keys = app
        .send(send(Method::GET, "/api/admin/api-keys", None))
        .await;
    assert!(keys
        .body
        .as_array()
        .expect("keys")
        .iter()
        .all(|k| k["scopes"] != json!(["*"])));
    app.send(send(
        Method::POST,
        "/api/admin/api-keys",
        Some(json!({"name": "x", "scopes": ["root"]})),
    ))
    .await
    .problem(422, "validation_failed");

    // Webhooks.
    let r = app
        .send(send(
            Method::POST,
            "/api/admin/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_")));
    let wh = r.body["id"].as_str().expect("id").to_owned();
    app.send(send(
        Method::POST,
        "/api/admin/webhooks",
        Some(json!({"url": "http://10.0.0.1/hook"})),
    ))
    .await
    .problem(422, "validation_failed");
    let t = app
        .send(send(
            Method::POST,
            &format!("/api/admin/webhooks/{wh}/test"),
            None,
        ))
        .await;
    assert_eq!(t.status, 202, "{}", t.text);
    let event = t.body["event_id"].as_str().expect("event").to_owned();
    let r = app
        .send(send(
            Method::POST,
            &format!(
                "/api/admin/webhooks/{wh}/deliveries/msg_{}/resend",
                event.replace('-', "")
            ),
            None,
        ))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    app.send(send(
        Method::POST,
        &format!("/api/admin/webhooks/{wh}/deliveries/nonsense/resend"),
        None,
    ))
    .await
    .problem(400, "invalid_path_parameter");
    let d = app
        .send(send(
            Method::GET,
            &format!("/api/admin/webhooks/{wh}/deliveries?limit=10"),
            None,
        ))
        .await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body, json!([]), "nothing delivered without a dispatcher");
    let r = app
        .send(send(
            Method::POST,
            &format!("/api/admin/webhooks/{wh}/rotate-secret"),
            None,
        ))
        .await;
    assert!(r.body["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_")));
    let r = app
        .send(send(
            Method::PATCH,
            &format!("/api/admin/webhooks/{wh}"),
            Some(json!({"enabled": false})),
        ))
        .await;
    assert_eq!(r.body["enabled"], false);
    assert!(!app
        .send(send(Method::GET, "/api/admin/webhooks", None))
        .await
        .text
        .contains("whsec_"));
    assert_eq!(
        app.send(send(
            Method::DELETE,
            &format!("/api/admin/webhooks/{wh}"),
            None
        ))
        .await
        .status,
        204
    );

    // Notification channels need a registered plugin kind.
    app.send(send(
        Method::POST,
        "/api/admin/notifications",
        Some(json!({"kind": "pigeon", "name": "x", "config": {}})),
    ))
    .await
    .problem(422, "validation_failed");
    assert_eq!(
        app.send(send(Method::GET, "/api/admin/notifications", None))
            .await
            .body,
        json!([])
    );
    let missing = uuid::Uuid::now_v7();
    app.send(send(
        Method::POST,
        &format!("/api/admin/notifications/{missing}/test"),
        None,
    ))
    .await
    .problem(404, "not_found");

    // Settings: secrets masked; the workspace name can change.
    let s = app
        .send(send(Method::GET, "/api/admin/settings", None))
        .await;
    assert_eq!(s.status, 200);
    assert!(!s.text.contains(WA_SECRET) && !s.text.contains(CAL_SECRET));
    assert_eq!(s.body["whatsapp"]["configured"], true);
    // Issue 15, item 21: no part of the operator's secret (it showed "••••ests").
    assert_eq!(s.body["whatsapp"]["secret"], "••••");
    assert_eq!(s.body["calcom"]["secret"], "••••");
    assert_eq!(s.body["allowed_origins"], json!([ORIGIN]));
    let s = app
        .send(send(
            Method::PATCH,
            "/api/admin/settings",
            Some(json!({"workspace_name": "Acme"})),
        ))
        .await;
    assert_eq!(s.body["workspace"]["name"], "Acme");
    app.send(send(
        Method::PATCH,
        "/api/admin/settings",
        Some(json!({"workspace_name": " "})),
    ))
    .await
    .problem(422, "validation_failed");

    // Users.
    let u = app
        .send(send(
            Method::POST,
            "/api/admin/users",
            Some(json!({"email": "new@example.com", "display_name": "New", "password": PASSWORD})),
        ))
        .await;
    assert_eq!(u.status, 201, "{}", u.text);
    assert_eq!(u.body["role"], "member");
    assert!(!u.text.contains("argon2"));
    let uid = u.body["id"].as_str().expect("id").to_owned();
    let u = app
        .send(send(
            Method::PATCH,
            &format!("/api/admin/users/{uid}"),
            Some(json!({"role": "admin"})),
        ))
        .await;
    assert_eq!(u.body["role"], "admin");
    let users = app.send(send(Method::GET, "/api/admin/users", None)).await;
    assert_eq!(users.body.as_array().map(Vec::len), Some(2));

    // Audit log.
    let a = app
        .send(send(Method::GET, "/api/admin/audit?limit=500", None))
        .await;
    let actions: BTreeSet<&str> = a
        .body
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["api_key.created", "api_key.revoked", "user.created"] {
        assert!(actions.contains(action), "{actions:?}");
    }
    assert!(!a.text.contains(&secret));
    app.send(send(Method::GET, "/api/admin/audit?limit=0", None))
        .await
        .problem(422, "validation_failed");
}

async fn inbound_webhooks_verify_and_capture_once(db: &TestDb) {
    let app = App::new(db).await;
    let hs = |token: &str| {
        get(&format!(
            "/api/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        ))
    };
    let r = app.send(hs(WA_TOKEN)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, "1158201444");
    app.send(hs("wrong")).await.problem(401, "unauthorized");

    let payload = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "contacts": [{"wa_id": "14155550199", "profile": {"name": "Wanda"}}],
            "messages": [{"id": "wamid.A1", "from": "14155550199", "timestamp": "1767225600",
                          "type": "text", "text": {"body": "I need a website"}}]
        }}]}]
    })
    .to_string();
    let wa = |sig: &str| {
        req(Method::POST, "/api/webhooks/whatsapp")
            .header("x-hub-signature-256", sig)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(payload.clone()))
            .expect("request")
    };
    let good = format!("sha256={}", hmac_hex(WA_SECRET, payload.as_bytes()));
    app.send(wa("sha256=00"))
        .await
        .problem(401, "webhook_verification_failed");
    app.send(wa("nonsense"))
        .await
        .problem(401, "webhook_verification_failed");
    assert_eq!(db.count("crm_leads").await, 0);
    let r = app.send(wa(&good)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["captured"], 1);
    let r = app.send(wa(&good)).await;
    assert_eq!(r.body["duplicates"], 1);
    assert_eq!(db.count("crm_leads").await, 1);
    assert_eq!(
        db.scalar_text("SELECT phone FROM crm_leads").await,
        "+14155550199"
    );

    let booking = json!({
        "triggerEvent": "BOOKING_CREATED",
        "payload": {"uid": "bk-1", "title": "Intro call", "startTime": "2026-01-02T10:00:00Z",
                    "attendees": [{"name": "Cal Person", "email": "cal@example.com"}]}
    })
    .to_string();
    let cal = |sig: &str| {
        req(Method::POST, "/api/webhooks/cal")
            .header("x-cal-signature-256", sig)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(booking.clone()))
            .expect("request")
    };
    app.send(cal(&hmac_hex("other", booking.as_bytes())))
        .await
        .problem(401, "webhook_verification_failed");
    let r = app
        .send(cal(&hmac_hex(CAL_SECRET, booking.as_bytes())))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["captured"], 1);
    assert_eq!(db.count("crm_leads").await, 2);
    let big = "x".repeat(300 * 1024);
    app.send(
        req(Method::POST, "/api/webhooks/cal")
            .header("x-cal-signature-256", hmac_hex(CAL_SECRET, big.as_bytes()))
            .body(Body::from(big))
            .expect("request"),
    )
    .await
    .problem(413, "body_too_large");

    // Not configured: 503, nothing written.
    let bare = App::with(db, |b| b, Config::new()).await;
    bare.send(wa(&good))
        .await
        .problem(503, "configuration_error");
}

async fn registration_signs_in_and_sign_in_needs_no_workspace_id(db: &TestDb) {
    let app = App::new(db).await;
    let r = app
        .send(post_json(
            "/api/auth/register",
            json!({"workspace_name": "Acme", "email": "founder@acme.example", "display_name": "Founder", "password": PASSWORD}),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["user"]["role"], "owner");
    let ws = r.body["workspace"]["id"].as_str().expect("ws").to_owned();
    assert_eq!(r.body["session"]["workspace_id"], ws.as_str());
    // Registration signed the owner in: the cookie works.
    let cookie = r
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap_or("")
        .to_owned();
    assert!(cookie.starts_with("__Host-crm_session="), "{cookie}");
    let me = app
        .send(
            with_cookie(req(Method::GET, "/api/auth/me"), &cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["user"]["email"], "founder@acme.example");

    app.send(post_json(
        "/api/auth/register",
        json!({"workspace_name": "Acme", "email": "x@acme.example", "display_name": "X", "password": "short"}),
    ))
    .await
    .problem(422, "validation_failed");
    // The same email again: 409 email_taken, no workspace made.
    let workspaces = db.count("crm_workspaces").await;
    app.send(post_json(
        "/api/auth/register",
        json!({"workspace_name": "Copy", "email": "Founder@ACME.example", "display_name": "F", "password": PASSWORD}),
    ))
    .await
    .problem(409, "email_taken");
    assert_eq!(db.count("crm_workspaces").await, workspaces);

    // Signing in needs no workspace id: the email's one account is found.
    let r = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "founder@acme.example", "password": PASSWORD}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["session"]["workspace_id"], ws.as_str());
    assert!(!r.header("set-cookie").is_empty());
    // A wrong password and an unknown email: the same answer.
    let wrong = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "founder@acme.example", "password": "Wrong-Password-9!"}),
        ))
        .await;
    let unknown = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "nobody@acme.example", "password": PASSWORD}),
        ))
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["code"], "unauthorized");
    assert_eq!(wrong.body["detail"], unknown.body["detail"]);
    assert_eq!(wrong.status, unknown.status);

    // The founder joins the default workspace too, with the same password: the
    // answer lists both workspaces and sets no cookie; the chosen one signs in.
    app.crm
        .workspace(WorkspaceId::DEFAULT)
        .auth()
        .create_user(
            NewUser {
                email: "founder@acme.example".into(),
                display_name: "Founder".into(),
                role: None,
                password: PASSWORD.into(),
            },
            crm::auth::Actor::App(None),
        )
        .await
        .expect("user");
    let r = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "founder@acme.example", "password": PASSWORD}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("set-cookie").is_empty());
    let ids: Vec<&str> = r.body["choose_workspace"]
        .as_array()
        .expect("choices")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, vec![ws.as_str(), &WorkspaceId::DEFAULT.to_string()]);
    assert_eq!(r.body["choose_workspace"][0]["name"], "Acme");
    let r = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "founder@acme.example", "password": PASSWORD, "workspace_id": ws}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["session"]["workspace_id"], ws.as_str());
    // Without registration enabled the route is not served.
    let closed = App::with(db, |b| b, Config::new()).await;
    closed
        .send(post_json("/api/auth/register", json!({})))
        .await
        .problem(404, "route_not_found");
}

fn form(path: &str, fields: &[(&str, &str)], origin: bool) -> Request<Body> {
    // The values here need no escaping (letters, digits, `-`, `_`, `!`).
    let body = fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let b =
        req(Method::POST, path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    let b = if origin {
        b.header(header::ORIGIN, ORIGIN)
    } else {
        b
    };
    b.body(Body::from(body)).expect("request")
}

/// Issue 18, item 2: registration mails a verification link; with
/// `require_verified_email` sign-in waits for it; the link's page confirms only on
/// a press (a GET consumes nothing), under the CSRF rule; reset links open a page
/// that asks for the new password and says what is wrong next to the field; a
/// token that does not work gets one neutral page.
async fn mailed_links_open_pages_that_act_on_a_press(db: &TestDb) {
    let outbox = Outbox::default();
    let mail = outbox.clone();
    let app = App::with(
        db,
        move |b| {
            b.mailer(mail)
                .auth_config(crm::auth::AuthConfig {
                    require_verified_email: true,
                    ..Default::default()
                })
                // The pages share the auth routes' per-IP budget; this test is one IP.
                .rate_limit_policy(
                    "anonymous_ip",
                    Policy::new(1000, Duration::from_secs(60)).expect("policy"),
                )
        },
        config(),
    )
    .await;
    let r = app
        .send(post_json(
            "/api/auth/register",
            json!({"workspace_name": "Acme", "email": "vera@acme.example", "display_name": "Vera", "password": PASSWORD}),
        ))
        .await;
    // Registered, but not signed in: the email is to be verified first.
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body.get("session").is_none(), "{}", r.text);
    assert!(r.header("set-cookie").is_empty());
    let token = Outbox::token(&outbox.nth(0).await);
    assert!(matches!(
        outbox.nth(0).await,
        crm::auth::AuthMail::EmailVerification { .. }
    ));
    let signin = || {
        post_json(
            "/api/auth/login",
            json!({"email": "vera@acme.example", "password": PASSWORD}),
        )
    };
    // Right passwords do not count towards a lockout while the mail is unopened.
    for _ in 0..7 {
        let r = app.send(signin()).await;
        r.problem(401, "unauthorized");
        assert_eq!(r.body["detail"], "email not verified");
    }
    // A wrong password says nothing about verification.
    let r = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "vera@acme.example", "password": "Wrong-Password-9!"}),
        ))
        .await;
    assert_eq!(r.body["detail"], "invalid credentials");

    // Opening the link (twice, as a scanner would) shows a button and consumes nothing.
    let page_path = format!("/auth/verify-email?token={token}");
    for _ in 0..2 {
        let page = app.send(get(&page_path)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(page.header("content-type").starts_with("text/html"));
        assert!(page
            .header("content-security-policy")
            .contains("default-src 'self'"));
        // Not no-referrer: the form's POST must carry the page's Origin.
        assert_eq!(page.header("referrer-policy"), "same-origin");
        assert_eq!(page.header("cache-control"), "no-store");
        assert!(page
            .text
            .contains("<form method=\"post\" action=\"verify-email\">"));
        assert!(page.text.contains(&format!("value=\"{token}\"")));
    }
    app.send(signin()).await.problem(401, "unauthorized");
    // A press without the CSRF rule (another site's form) is refused.
    app.send(form("/auth/verify-email", &[("token", &token)], false))
        .await
        .problem(403, "csrf_failed");
    app.send(signin()).await.problem(401, "unauthorized");
    // The press confirms; the token works once.
    let done = app
        .send(form("/auth/verify-email", &[("token", &token)], true))
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert!(done.text.contains("Your email is confirmed"));
    let again = app
        .send(form("/auth/verify-email", &[("token", &token)], true))
        .await;
    assert_eq!(again.status, 400);
    assert!(again.text.contains("This link does not work"));
    let r = app.send(signin()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(
        r.body["session"]["workspace_id"],
        WorkspaceId::DEFAULT.to_string()
    );

    // Unknown, malformed and HTML-bearing tokens: the same neutral page, nothing echoed.
    let neutral = app.send(get("/auth/verify-email?token=%3Cscript%3E")).await;
    assert_eq!(neutral.status, 400);
    assert!(!neutral.text.contains("<script"));
    let unknown = "A".repeat(43);
    let r = app
        .send(form("/auth/verify-email", &[("token", &unknown)], true))
        .await;
    assert_eq!(
        (r.status, r.text.clone()),
        (neutral.status, neutral.text.clone())
    );

    // Another verification mail on request: the same answer for an unknown email.
    for email in ["vera@acme.example", "nobody@acme.example"] {
        let r = app
            .send(post_json(
                "/api/auth/verify-email/request",
                json!({"email": email}),
            ))
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    // Vera is verified (and in another workspace than the public one): no new mail.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(outbox.0.lock().expect("lock").len(), 1);

    // A user the app adds to the public workspace gets a mail; asking again sends
    // another, up to 5 an hour.
    app.user("ned@example.com", "member").await;
    outbox.nth(1).await;
    for _ in 0..7 {
        app.send(post_json(
            "/api/auth/verify-email/request",
            json!({"email": "ned@example.com"}),
        ))
        .await;
    }
    outbox.nth(6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        outbox.0.lock().expect("lock").len(),
        7,
        "5 an hour on request"
    );

    // A reset link (asked for without a workspace id: Vera's account is found in
    // hers): the page asks for the new password twice, with labels.
    app.send(post_json(
        "/api/auth/password-reset",
        json!({"email": "vera@acme.example"}),
    ))
    .await;
    let reset = Outbox::token(&outbox.nth(7).await);
    assert!(matches!(
        outbox.nth(7).await,
        crm::auth::AuthMail::PasswordReset { .. }
    ));
    let page = app
        .send(get(&format!("/auth/reset-password?token={reset}")))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("<label for=\"new_password\">"));
    assert!(page.text.contains("<label for=\"confirm_password\">"));
    // Two different passwords: said next to the second field; nothing changed.
    let r = app
        .send(form(
            "/auth/reset-password",
            &[
                ("token", &reset),
                ("new_password", NEW_PASSWORD),
                ("confirm_password", "Other-Password-8!"),
            ],
            true,
        ))
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.text.contains("id=\"confirm_password_error\""),
        "{}",
        r.text
    );
    // A weak password: the policy's words next to the first field.
    let r = app
        .send(form(
            "/auth/reset-password",
            &[
                ("token", &reset),
                ("new_password", "short"),
                ("confirm_password", "short"),
            ],
            true,
        ))
        .await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("id=\"new_password_error\""), "{}", r.text);
    assert!(r.text.contains("at least 12"), "{}", r.text);
    let r = app.send(signin()).await;
    assert_eq!(r.status, 200, "the old password still works: {}", r.text);
    // The right press sets it; the link then stops working.
    let fields = [
        ("token", reset.as_str()),
        ("new_password", NEW_PASSWORD),
        ("confirm_password", NEW_PASSWORD),
    ];
    app.send(form("/auth/reset-password", &fields, false))
        .await
        .problem(403, "csrf_failed");
    let r = app.send(form("/auth/reset-password", &fields, true)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("Your password is changed"));
    let r = app.send(form("/auth/reset-password", &fields, true)).await;
    assert_eq!(r.status, 400);
    app.send(signin()).await.problem(401, "unauthorized");
    let r = app
        .send(post_json(
            "/api/auth/login",
            json!({"email": "vera@acme.example", "password": NEW_PASSWORD}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Over a real socket: the peer address is the rate-limit key, and every response
/// carries a request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_socket_clients_are_limited_by_their_address() {
    let db = TestDb::sqlite().await;
    let crm = db.crm().await;
    let app: Router = Router::new()
        .route("/", axum::routing::get(|| async { "host" }))
        .nest("/crm", Config::new().router(crm.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { s.cancelled().await })
        .await
    });
    let client = reqwest::Client::new();
    let host = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .expect("get");
    assert_eq!(host.text().await.expect("text"), "host");
    let mut statuses = Vec::new();
    for i in 0..11 {
        let r = client
            .post(format!("http://{addr}/crm/api/leads"))
            .json(&json!({"name": "Sock", "email": format!("s{i}@example.com")}))
            .send()
            .await
            .expect("post");
        assert!(r.headers().contains_key("x-request-id"));
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[..10], [202; 10]);
    assert_eq!(statuses[10], 429);
    let limited = db.count("crm_leads").await;
    assert_eq!(limited, 10);
    let health = client
        .get(format!("http://{addr}/crm/api/v1/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    stop.cancel();
    server.await.expect("join").expect("serve");
    crm.close().await;
}

/// The takeover reproduced against the release server: as an admin, demote the owner,
/// promote oneself, create an owner. Every step now answers 403 and changes nothing;
/// the owner keeps every admin route.
async fn an_admin_cannot_seize_the_workspace_over_http(db: &TestDb) {
    let app = App::new(db).await;
    let owner_cookie = app.admin().await;
    app.user("admin@example.com", "admin").await;
    let cookie = app.login("admin@example.com").await;
    let users = app
        .send(
            with_cookie(req(Method::GET, "/api/admin/users"), &cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    let id_of = |email: &str| {
        users
            .body
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["email"] == email)
            .and_then(|u| u["id"].as_str())
            .expect("user")
            .to_owned()
    };
    let (owner_id, admin_id) = (id_of("owner@example.com"), id_of("admin@example.com"));
    let patch = |id: &str, role: &str| {
        json_body(
            with_cookie(
                req(Method::PATCH, &format!("/api/admin/users/{id}")),
                &cookie,
            ),
            json!({ "role": role }),
        )
    };
    app.send(patch(&owner_id, "member"))
        .await
        .problem(403, "forbidden");
    app.send(patch(&admin_id, "owner"))
        .await
        .problem(403, "forbidden");
    app.send(json_body(
        with_cookie(req(Method::POST, "/api/admin/users"), &cookie),
        json!({"email": "mole@example.com", "display_name": "Mole", "role": "owner", "password": PASSWORD}),
    ))
    .await
    .problem(403, "forbidden");
    // The owner is still the owner, and still reaches the admin routes.
    let r = app
        .send(
            with_cookie(req(Method::GET, "/api/admin/users"), &owner_cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let roles: Vec<(&str, &str)> = r
        .body
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["email"].as_str().unwrap_or(""),
                u["role"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("owner@example.com", "owner"),
            ("admin@example.com", "admin")
        ]
    );
}

/// The reported remote panic: the builtin parser sliced the original line at an offset
/// found in its lower-cased copy. `K` (U+212A) shrinks from 3 bytes to 1 when
/// lower-cased, so the offset fell inside a character and the handler panicked (500).
async fn parsing_kelvin_signs_answers_instead_of_panicking(db: &TestDb) {
    let app = App::new(db).await;
    let key = app.key(&["leads:read"]).await;
    let r = app
        .send(json_body(
            bearer(req(Method::POST, "/api/v1/leads/parse"), &key),
            json!({ "text": "\u{212A}\u{212A}\u{212A}\u{212A} name: Ana" }),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.body["found"]
            .as_array()
            .expect("found")
            .iter()
            .any(|f| f == "name"),
        "{}",
        r.text
    );
}

/// Issue 15, item 19: `{"name":"a","email":"t@example.org"} xx` created the lead (the
/// bytes after the document were never looked at). Now 400, and nothing is written.
async fn a_body_with_bytes_after_the_document_is_refused(db: &TestDb) {
    let app = App::new(db).await;
    let key = app.key(&["leads:write"]).await;
    for body in [
        r#"{"name":"a","email":"t@example.org"} xx"#,
        r#"{"name":"a","email":"t@example.org"}{"name":"b"}"#,
        r#"{"name":"a","email":"t@example.org"}]"#,
    ] {
        let r = app
            .send(
                bearer(req(Method::POST, "/api/v1/leads"), &key)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .expect("request"),
            )
            .await;
        r.problem(400, "malformed_json");
    }
    assert_eq!(db.count("crm_leads").await, 0);
    // Whitespace after the document is still fine.
    let r = app
        .send(
            bearer(req(Method::POST, "/api/v1/leads"), &key)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    "{\"name\":\"a\",\"email\":\"t@example.org\"}\n \t",
                ))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Issue 24: serde takes a positional array for a struct, so `["Array lead",
/// "arr@example.org"]` created a lead and an array logged in. Every body is one JSON
/// object now: other JSON is 422, non-JSON 400, and nothing is written.
async fn a_body_that_is_not_one_json_object_is_refused(db: &TestDb) {
    let app = App::new(db).await;
    app.user("ana@example.com", "member").await;
    let key = app.key(&["leads:write"]).await;
    let post = |path: &str, body: &str| {
        bearer(req(Method::POST, path), &key)
            .header(header::ORIGIN, ORIGIN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request")
    };
    for body in [
        r#"["Array lead","arr@example.org"]"#,
        r#" ["Array lead","arr@example.org"]"#,
        r#""a string""#,
        "42",
        "null",
    ] {
        app.send(post("/api/v1/leads", body))
            .await
            .problem(422, "invalid_body");
    }
    for body in ["", "   ", "[1,", "nul"] {
        app.send(post("/api/v1/leads", body))
            .await
            .problem(400, "malformed_json");
    }
    let r = app
        .send(post(
            "/api/auth/login",
            &format!(r#"["ana@example.com","{PASSWORD}"]"#),
        ))
        .await;
    r.problem(422, "invalid_body");
    assert!(r.header("set-cookie").is_empty());
    assert_eq!(db.count("crm_leads").await, 0);
    assert_eq!(db.count("crm_sessions").await, 0);
}

/// Issue 15, item 10, end to end: behind a trusted proxy, a client that writes a new
/// `X-Forwarded-For` entry on every request still spends one bucket (its own address,
/// as the proxy appended it).
async fn forged_forwarded_for_cannot_escape_the_per_ip_limit(db: &TestDb) {
    let cfg = config().trusted_proxies(["127.0.0.0/8".parse().expect("net")]);
    let app = App::with(db, |b| b, cfg).await;
    let proxy: std::net::SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let mut statuses = Vec::new();
    for i in 0..11 {
        let mut r = req(Method::POST, "/api/leads")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("x-forwarded-for", format!("198.51.100.{i}, 203.0.113.9"))
            .body(Body::from(format!("name=N&email=f{i}%40example.com")))
            .expect("request");
        r.extensions_mut().insert(axum::extract::ConnectInfo(proxy));
        statuses.push(app.send(r).await.status.as_u16());
    }
    assert!(statuses[..10].iter().all(|s| *s < 300), "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");
    // Another client behind the same proxy has a budget of its own.
    let mut r = req(Method::POST, "/api/leads")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-forwarded-for", "203.0.113.10")
        .body(Body::from("name=N&email=other%40example.com"))
        .expect("request");
    r.extensions_mut().insert(axum::extract::ConnectInfo(proxy));
    assert!(app.send(r).await.status.is_success());
}

/// Item 2 over HTTP: a user lists their sessions (user agent, IP, which is this one,
/// never a token) and ends one; an admin disables, enables and deletes a member and
/// ends their sessions; an admin acting on an owner gets 403.
async fn sessions_are_listed_and_ended_and_users_disabled_over_http(db: &TestDb) {
    let app = App::new(db).await;
    let owner = app.admin().await;
    app.user("admin@example.com", "admin").await;
    app.user("member@example.com", "member").await;
    let admin = app.login("admin@example.com").await;
    let signin = || {
        json_body(
            req(Method::POST, "/api/auth/login")
                .header(header::ORIGIN, ORIGIN)
                .header(header::USER_AGENT, "TestPhone/2.0"),
            json!({"email": "member@example.com", "password": PASSWORD}),
        )
    };
    let r = app.send(signin()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let phone = r
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap_or("")
        .to_owned();
    let token = phone
        .split_once('=')
        .map(|(_, t)| t.to_owned())
        .unwrap_or_default();
    let laptop = app.login("member@example.com").await;

    let list = app
        .send(
            with_cookie(req(Method::GET, "/api/auth/sessions"), &laptop)
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    let items = list.body.as_array().expect("list");
    assert_eq!(items.len(), 2);
    assert!(!list.text.contains(&token), "never a token");
    let phone_row = items
        .iter()
        .find(|s| s["user_agent"] == "TestPhone/2.0")
        .expect("the phone session");
    assert_eq!(phone_row["current"], false);
    assert!(items.iter().any(|s| s["current"] == true));
    let phone_id = phone_row["id"].as_str().expect("id").to_owned();

    // End the phone's session from the laptop; the laptop stays signed in.
    let r = app
        .send(
            with_cookie(
                req(Method::DELETE, &format!("/api/auth/sessions/{phone_id}")),
                &laptop,
            )
            .body(Body::empty())
            .expect("r"),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let me = |c: &str| {
        with_cookie(req(Method::GET, "/api/auth/me"), c)
            .body(Body::empty())
            .expect("r")
    };
    app.send(me(&phone)).await.problem(401, "unauthorized");
    assert_eq!(app.send(me(&laptop)).await.status, 200);
    // Someone else's session id is not found through one's own list.
    let owner_me = app.send(me(&owner)).await;
    let owner_session = owner_me.body["session"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.send(
        with_cookie(
            req(
                Method::DELETE,
                &format!("/api/auth/sessions/{owner_session}"),
            ),
            &laptop,
        )
        .body(Body::empty())
        .expect("r"),
    )
    .await
    .problem(404, "not_found");
    assert_eq!(app.send(me(&owner)).await.status, 200);

    let users = app
        .send(
            with_cookie(req(Method::GET, "/api/admin/users"), &owner)
                .body(Body::empty())
                .expect("r"),
        )
        .await
        .body;
    let id_of = |email: &str| {
        users
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["email"] == email)
            .and_then(|u| u["id"].as_str())
            .expect("user")
            .to_owned()
    };
    let (owner_id, member_id) = (id_of("owner@example.com"), id_of("member@example.com"));
    let post = |path: String, c: &str| {
        with_cookie(req(Method::POST, &path), c)
            .body(Body::empty())
            .expect("r")
    };
    let delete = |path: String, c: &str| {
        with_cookie(req(Method::DELETE, &path), c)
            .body(Body::empty())
            .expect("r")
    };

    // An admin acts on no owner.
    for r in [
        app.send(post(format!("/api/admin/users/{owner_id}/disable"), &admin))
            .await,
        app.send(delete(format!("/api/admin/users/{owner_id}"), &admin))
            .await,
        app.send(delete(
            format!("/api/admin/users/{owner_id}/sessions"),
            &admin,
        ))
        .await,
    ] {
        r.problem(403, "forbidden");
    }
    assert_eq!(app.send(me(&owner)).await.status, 200);
    // The last owner cannot disable themselves (oneself: 403).
    app.send(post(format!("/api/admin/users/{owner_id}/disable"), &owner))
        .await
        .problem(403, "forbidden");

    // An admin disables the member: the laptop session ends, login answers 401.
    let r = app
        .send(post(
            format!("/api/admin/users/{member_id}/disable"),
            &admin,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["disabled_at"].is_string());
    app.send(me(&laptop)).await.problem(401, "unauthorized");
    app.send(post_json(
        "/api/auth/login",
        json!({"email": "member@example.com", "password": PASSWORD}),
    ))
    .await
    .problem(401, "unauthorized");
    let r = app
        .send(post(format!("/api/admin/users/{member_id}/enable"), &admin))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["disabled_at"].is_null());
    let again = app.login("member@example.com").await;
    let r = app
        .send(delete(
            format!("/api/admin/users/{member_id}/sessions"),
            &admin,
        ))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    app.send(me(&again)).await.problem(401, "unauthorized");
    let r = app
        .send(delete(format!("/api/admin/users/{member_id}"), &admin))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    app.send(delete(format!("/api/admin/users/{member_id}"), &admin))
        .await
        .problem(404, "not_found");
}

/// Issue 24: 65 connections that trickled a partial request head stayed open for
/// good (`axum::serve` sets no timer, so hyper's header timeout never fired). With
/// `crm::http::serve` they are closed after the head timeout, an idle keep-alive
/// connection too, a body that is too slow gets a 408 problem, and health answers
/// all the while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_timed_out_and_health_keeps_answering() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::sqlite().await;
    let crm = db.crm().await;
    let key = crm
        .workspace(WorkspaceId::DEFAULT)
        .api_keys()
        .create(NewApiKey {
            name: "t".into(),
            scopes: vec!["leads:write".into()],
            expires_at: None,
        })
        .await
        .expect("key");
    let limits = crm::http::Limits {
        header_read_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        max_connections: 200,
        ..crm::http::Limits::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let router = config().router(crm.clone());
    let server = tokio::spawn(crm::http::serve(listener, router, limits, async move {
        s.cancelled().await
    }));

    let test = async {
        // 65 slowloris connections: a partial head, then a byte every 200 ms.
        let mut slow = Vec::new();
        for _ in 0..65 {
            let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
            c.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .expect("write");
            slow.push(tokio::spawn(async move {
                let started = std::time::Instant::now();
                let mut buf = [0u8; 256];
                loop {
                    if c.write_all(b"a").await.is_err() {
                        return started.elapsed();
                    }
                    let read = tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf));
                    if let Ok(Ok(0) | Err(_)) = read.await {
                        return started.elapsed();
                    }
                }
            }));
        }
        // Health answers while they hold.
        let client = reqwest::Client::new();
        let health = client
            .get(format!("http://{addr}/api/v1/health"))
            .send()
            .await
            .expect("health");
        assert_eq!(health.status(), 200);
        for h in slow {
            let open_for = h.await.expect("join");
            assert!(open_for < Duration::from_secs(5), "open for {open_for:?}");
        }

        // An idle keep-alive connection is closed too.
        let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 4096];
        let n = idle.read(&mut buf).await.expect("response");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match idle.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an idle keep-alive connection stayed open");

        // A body that does not arrive in time: 408, a problem, nothing written.
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /api/v1/leads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
            key.secret.expose()
        );
        c.write_all(head.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                            break;
                        }
                    }
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("application/problem+json") && text.contains("request_timeout"));
        assert_eq!(db.count("crm_leads").await, 0);
    };
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("the slow-client test is bounded");
    // What hyper answers itself, before the router (documented in crm-http's README):
    // a bare 400 for a request line that is not HTTP.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"NOT HTTP AT ALL\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        assert!(
            got.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    stop.cancel();
    server.await.expect("join").expect("serve");
    crm.close().await;
}

async fn stats_need_leads_read_and_count_the_callers_workspace(db: &TestDb) {
    let app = App::new(db).await;
    let writer = app.key(&["leads:write"]).await;
    let reader = app.key(&["leads:read"]).await;
    let r = app
        .send(json_body(
            bearer(req(Method::POST, "/api/v1/leads"), &writer),
            json!({"name": "Ana", "email": "ana@example.com", "source": "website"}),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // The series ends before now (exclusive): let the clock move past the create.
    db.clock.advance(chrono::Duration::seconds(1));
    // Another workspace's lead is not counted.
    let other = app.crm.create_workspace("Other").await.expect("workspace");
    app.crm
        .workspace(other)
        .leads()
        .create(crm::leads::NewLead {
            name: "Eve".into(),
            email: Some("eve@example.com".into()),
            ..Default::default()
        })
        .await
        .expect("create");

    app.send(get("/api/v1/stats"))
        .await
        .problem(401, "unauthorized");
    let r = app
        .send(
            bearer(req(Method::GET, "/api/v1/stats"), &writer)
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    r.problem(403, "forbidden");
    let r = app
        .send(
            bearer(req(Method::GET, "/api/v1/stats?bucket=week"), &reader)
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["total"], 1);
    assert_eq!(
        r.body["by_source"],
        json!([{"source": "website", "count": 1}])
    );
    assert_eq!(r.body["series"]["bucket"], "week");
    let points = r.body["series"]["points"].as_array().expect("points");
    assert_eq!(
        points
            .iter()
            .map(|p| p["count"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        1
    );
    // A query that does not parse is a 400; a range the service refuses a 422.
    for (query, status, field) in [
        ("bucket=year", 400, "bucket"),
        ("colour=red", 400, "colour"),
        ("start=2020-01-01T00:00:00Z", 422, "start"),
        (
            "start=2026-02-01T00:00:00Z&end=2026-01-01T00:00:00Z",
            422,
            "start",
        ),
    ] {
        let r = app
            .send(
                bearer(req(Method::GET, &format!("/api/v1/stats?{query}")), &reader)
                    .body(Body::empty())
                    .expect("r"),
            )
            .await;
        assert_eq!(r.status, status, "{query}: {}", r.text);
        assert_eq!(r.field(), field, "{query}: {}", r.text);
    }
    // The admin twin: a signed-in user sees the same figures.
    let cookie = app.admin().await;
    let r = app
        .send(
            with_cookie(req(Method::GET, "/api/admin/stats"), &cookie)
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["total"], 1);
}

async fn duplicates_and_merge_over_http(db: &TestDb) {
    let app = App::new(db).await;
    let reader = app.key(&["leads:read"]).await;
    let writer = app.key(&["leads:read", "leads:write"]).await;
    let all = app.key(&["leads:*"]).await;
    let mut ids = Vec::new();
    for email in ["ana.lopez@gmail.com", "analopez+web@gmail.com"] {
        let r = app
            .send(json_body(
                bearer(req(Method::POST, "/api/v1/leads"), &writer),
                json!({"name": "Ana", "email": email}),
            ))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_str().expect("id").to_owned());
    }
    let get = |path: &str, key: &str| {
        bearer(req(Method::GET, path), key)
            .body(Body::empty())
            .expect("r")
    };
    let groups = app.send(get("/api/v1/leads/duplicates", &reader)).await;
    assert_eq!(groups.status, 200, "{}", groups.text);
    assert_eq!(groups.body[0]["reason"], "email");
    assert_eq!(groups.body[0]["leads"][1]["id"], ids[1]);
    app.send(get("/api/v1/leads/duplicates?limit=0", &reader))
        .await
        .problem(422, "validation_failed");
    let merge = |key: &str, body: Value| {
        json_body(
            bearer(
                req(Method::POST, &format!("/api/v1/leads/{}/merge", ids[0])),
                key,
            ),
            body,
        )
    };
    app.send(merge(&reader, json!({"from": [ids[1]], "dry_run": true})))
        .await
        .problem(403, "forbidden");
    // A dry run needs leads:write; the merge (it deletes) leads:delete too.
    let dry = app
        .send(merge(&writer, json!({"from": [ids[1]], "dry_run": true})))
        .await;
    assert_eq!(dry.status, 200, "{}", dry.text);
    assert_eq!(dry.body["dry_run"], true);
    app.send(merge(&writer, json!({"from": [ids[1]]})))
        .await
        .problem(403, "forbidden");
    app.send(merge(&all, json!({"from": [ids[0]]})))
        .await
        .problem(422, "validation_failed");
    app.send(merge(
        &all,
        json!({"from": [ids[1]], "prefer": {"colour": ids[1]}}),
    ))
    .await
    .problem(422, "validation_failed");
    let done = app.send(merge(&all, json!({"from": [ids[1]]}))).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.body["absorbed"], json!([ids[1]]));
    let gone = app
        .send(get(&format!("/api/v1/leads/{}", ids[1]), &reader))
        .await;
    gone.problem(404, "not_found");
}

async fn imports_and_exports_over_http(db: &TestDb) {
    let app = App::with(db, |b| b, config().import_limit(4096)).await;
    let reader = app.key(&["leads:read"]).await;
    let writer = app.key(&["leads:read", "leads:write"]).await;
    let csv_post = |path: &str, key: &str, csv: &str| {
        bearer(req(Method::POST, path), key)
            .header(header::CONTENT_TYPE, "text/csv")
            .header("idempotency-key", "ignored-for-imports")
            .body(Body::from(csv.to_owned()))
            .expect("request")
    };
    let get = |path: &str, key: &str| {
        bearer(req(Method::GET, path), key)
            .body(Body::empty())
            .expect("request")
    };
    let csv =
        "Nombre;Correo;Plan\nAna;ana@example.com;gold\nBad;not-an-email;\nBea;bea@example.com;\n";
    let mapping = "%7B%22Nombre%22%3A%22name%22%2C%22Correo%22%3A%22email%22%2C%22Plan%22%3A%22custom.plan%22%7D";
    app.send(csv_post(
        &format!("/api/v1/imports?mapping={mapping}"),
        &reader,
        csv,
    ))
    .await
    .problem(403, "forbidden");
    app.send(csv_post("/api/v1/imports?mapping=nope", &writer, csv))
        .await
        .problem(422, "validation_failed");
    app.send(csv_post("/api/v1/imports", &writer, &"x".repeat(5000)))
        .await
        .problem(413, "body_too_large");

    let poll = |id: String| {
        let app = &app;
        let reader = reader.clone();
        async move {
            for _ in 0..400 {
                let r = app
                    .send(get(&format!("/api/v1/imports/{id}"), &reader))
                    .await;
                assert_eq!(r.status, 200, "{}", r.text);
                if r.body["status"] != "running" {
                    return r.body;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            panic!("the import did not end");
        }
    };
    let dry = app
        .send(csv_post(
            &format!("/api/v1/imports?dry_run=true&mapping={mapping}"),
            &writer,
            csv,
        ))
        .await;
    assert_eq!(dry.status, 202, "{}", dry.text);
    assert_eq!(dry.body["status"], "running");
    let report = poll(dry.body["id"].as_str().expect("id").to_owned()).await;
    assert_eq!(
        (report["created"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(1)),
        "{report}"
    );
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["total_rows"], 3);
    assert_eq!(report["errors"][0]["row"], 2);
    assert_eq!(report["errors"][0]["field"], "email");
    let listed = app.send(get("/api/v1/leads", &reader)).await;
    assert_eq!(
        listed.body["items"].as_array().map(Vec::len),
        Some(0),
        "a dry run writes nothing"
    );

    let started = app
        .send(csv_post(
            &format!("/api/v1/imports?mapping={mapping}"),
            &writer,
            csv,
        ))
        .await;
    assert_eq!(started.status, 202, "{}", started.text);
    let id = started.body["id"].as_str().expect("id").to_owned();
    assert_eq!(started.header("x-import-id"), id);
    let report = poll(id.clone()).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["created"], 2);
    // The admin twin reads it for a signed-in user of the workspace.
    let cookie = app.admin().await;
    let r = app
        .send(
            with_cookie(
                req(Method::GET, &format!("/api/admin/imports/{id}")),
                &cookie,
            )
            .body(Body::empty())
            .expect("request"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A file without an email or phone column fails with the reason.
    let bad = app
        .send(csv_post("/api/v1/imports", &writer, "name,company\nA,B\n"))
        .await;
    assert_eq!(bad.status, 202);
    let report = poll(bad.body["id"].as_str().expect("id").to_owned()).await;
    assert_eq!(report["status"], "failed");
    assert!(
        report["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("email or a phone column")),
        "{report}"
    );
    app.send(get(
        &format!("/api/v1/imports/{}", uuid::Uuid::now_v7()),
        &reader,
    ))
    .await
    .problem(404, "not_found");

    // Export: CSV, streamed, filtered, formula-safe.
    let r = app.send(get("/api/v1/leads/export?q=ana", &reader)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), "text/csv; charset=utf-8");
    assert!(r.header("content-disposition").contains("leads.csv"));
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.text);
    assert!(
        lines[0].starts_with(r#""id","name","email","#),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(r#","custom.plan""#));
    assert!(lines[1].contains("ana@example.com") && lines[1].ends_with(r#","gold""#));
    app.send(get("/api/v1/leads/export?status=nope", &reader))
        .await
        .problem(422, "validation_failed");
    // Reading an import or exporting needs leads:read; a write-only key gets neither.
    let write_only = app.key(&["leads:write"]).await;
    app.send(get("/api/v1/leads/export", &write_only))
        .await
        .problem(403, "forbidden");
    app.send(get(&format!("/api/v1/imports/{id}"), &write_only))
        .await
        .problem(403, "forbidden");
    let nokey = app
        .send(
            req(Method::GET, "/api/v1/leads/export")
                .body(Body::empty())
                .expect("r"),
        )
        .await;
    assert_eq!(nokey.status, 401);
}

async fn contacts_organizations_and_conversion_over_http(db: &TestDb) {
    let app = App::new(db).await;
    let reader = app.key(&["contacts:read"]).await;
    let writer = app.key(&["contacts:read", "contacts:write"]).await;
    let leads_only = app.key(&["leads:read", "leads:write"]).await;
    let both = app
        .key(&["leads:write", "contacts:write", "contacts:read"])
        .await;
    let send = |m: Method, path: &str, key: &str, body: Option<Value>| {
        let b = bearer(req(m, path), key);
        match body {
            Some(v) => json_body(b, v),
            None => b.body(Body::empty()).expect("request"),
        }
    };

    // Scopes: reading is not writing, leads are not contacts.
    let ana = json!({"first_name": "Ana", "last_name": "López", "emails": ["ana@acme.example"]});
    app.send(send(
        Method::POST,
        "/api/v1/contacts",
        &reader,
        Some(ana.clone()),
    ))
    .await
    .problem(403, "forbidden");
    app.send(send(Method::GET, "/api/v1/contacts", &leads_only, None))
        .await
        .problem(403, "forbidden");
    app.send(send(Method::GET, "/api/v1/contacts", "", None))
        .await
        .problem(401, "unauthorized");
    let r = app
        .send(send(
            Method::POST,
            "/api/v1/contacts",
            &writer,
            Some(ana.clone()),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["name"], "Ana López");
    let ana_id = r.body["id"].as_str().expect("id").to_owned();
    let r = app
        .send(send(Method::POST, "/api/v1/contacts", &writer, Some(ana)))
        .await;
    r.problem(409, "conflict");
    assert_eq!(r.body["existing_id"], ana_id.as_str());
    app.send(send(
        Method::POST,
        "/api/v1/contacts",
        &writer,
        Some(json!({"first_name": "Bo", "owner_id": uuid::Uuid::now_v7()})),
    ))
    .await
    .problem(422, "validation_failed");
    app.send(send(
        Method::DELETE,
        &format!("/api/v1/contacts/{ana_id}"),
        &writer,
        None,
    ))
    .await
    .problem(403, "forbidden");
    let r = app
        .send(send(
            Method::PATCH,
            &format!("/api/v1/contacts/{ana_id}"),
            &writer,
            Some(json!({"title": "CTO", "last_name": null})),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["name"], "Ana");
    let r = app
        .send(send(
            Method::GET,
            "/api/v1/contacts?q=cto&include_total=true",
            &reader,
            None,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["total"], 1);
    app.send(send(
        Method::GET,
        "/api/v1/contacts?sort=status",
        &reader,
        None,
    ))
    .await
    .problem(422, "validation_failed");

    let r = app
        .send(send(
            Method::POST,
            "/api/v1/organizations",
            &writer,
            Some(json!({"name": "Acme SL", "domain": "acme.example"})),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let org_id = r.body["id"].as_str().expect("id").to_owned();
    let r = app
        .send(send(
            Method::GET,
            "/api/v1/organizations?q=acme",
            &reader,
            None,
        ))
        .await;
    assert_eq!(r.body["items"][0]["id"], org_id.as_str());

    // Convert: both scopes needed; an empty body converts with an organization.
    let lead = app
        .crm
        .leads()
        .create(NewLead {
            name: "Bo Ruiz".into(),
            email: Some("bo@acme.example".into()),
            company: Some("Acme SL".into()),
            ..NewLead::default()
        })
        .await
        .expect("lead");
    let path = format!("/api/v1/leads/{}/convert", lead.id);
    app.send(send(Method::POST, &path, &leads_only, None))
        .await
        .problem(403, "forbidden");
    app.send(send(Method::POST, &path, &writer, None))
        .await
        .problem(403, "forbidden");
    let r = app.send(send(Method::POST, &path, &both, None)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["contact_created"], true);
    assert_eq!(r.body["organization_created"], false);
    assert_eq!(r.body["organization"]["id"], org_id.as_str());
    assert_eq!(r.body["lead"]["contact_id"], r.body["contact"]["id"]);
    let contact_id = r.body["contact"]["id"].clone();
    let again = app
        .send(send(Method::POST, &path, &both, Some(json!({}))))
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["contact"]["id"], contact_id);
    assert_eq!(again.body["contact_created"], false);
    app.send(send(
        Method::POST,
        &path,
        &both,
        Some(json!({"organization": "yes"})),
    ))
    .await
    .problem(422, "invalid_body");
    let r = app
        .send(send(
            Method::GET,
            &format!("/api/v1/contacts?organization_id={org_id}"),
            &reader,
            None,
        ))
        .await;
    assert_eq!(r.body["items"][0]["id"], contact_id);

    // Another workspace's contact, organization and lead are not found.
    let other = app.crm.create_workspace("Other").await.expect("workspace");
    let theirs = app
        .crm
        .workspace(other)
        .contacts()
        .create(crm::contacts::NewContact {
            first_name: "Eve".into(),
            ..Default::default()
        })
        .await
        .expect("contact");
    for (m, p) in [
        (Method::GET, format!("/api/v1/contacts/{}", theirs.id)),
        (Method::PATCH, format!("/api/v1/contacts/{}", theirs.id)),
    ] {
        let body = (m == Method::PATCH).then(|| json!({"title": "x"}));
        app.send(send(m, &p, &writer, body))
            .await
            .problem(404, "not_found");
    }
    let their_lead = app
        .crm
        .workspace(other)
        .leads()
        .create(NewLead {
            name: "Eve".into(),
            email: Some("eve@x.example".into()),
            ..NewLead::default()
        })
        .await
        .expect("lead");
    app.send(send(
        Method::POST,
        &format!("/api/v1/leads/{}/convert", their_lead.id),
        &both,
        None,
    ))
    .await
    .problem(404, "not_found");

    // The admin routes serve the same to a signed-in user.
    let cookie = app.admin().await;
    let r = app
        .send(
            with_cookie(req(Method::GET, "/api/admin/contacts"), &cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    let r = app
        .send(json_body(
            with_cookie(req(Method::POST, "/api/admin/organizations"), &cookie),
            json!({"name": "Globex"}),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}
