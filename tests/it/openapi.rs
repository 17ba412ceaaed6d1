//! Issue 15, "the OpenAPI document tells the truth": a walker reads
//! `/api/openapi.json` and, for every operation, sends
//! 1. the request the document itself describes (the schema's `example`, with the
//!    values a test must supply: fresh ids in the path, unique email addresses and
//!    phones so creates do not collide, real tokens, a reachable webhook URL) and
//!    expects a non-4xx answer;
//! 2. requests at each boundary the schemas state (`maxLength`, `minimum`,
//!    `maximum`, `maxItems`, the first `enum` value) and expects non-4xx: the document
//!    must not promise more than the server takes;
//! 3. one request per constraint that breaks it (a missing required field, a wrong
//!    type, one character too few or too many, a blank or non-matching string, a bad
//!    format, a value outside the enum or the range, too many items) and expects a
//!    4xx: the server must enforce what the document says.
//!
//! Nothing may answer 5xx. Runs on SQLite and Postgres.

use std::time::Duration;

use crate::common::{hmac_hex, Outbox, TestDb};
use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::Router;
use crm::api_keys::NewApiKey;
use crm::auth::{Actor, NewUser};
use crm::http::Config;
use crm::leads::NewLead;
use crm::notify::NewChannel;
use crm::ratelimit::Policy;
use crm::webhooks::NewEndpoint;
use crm::{Crm, Quotas, SecretString, WorkspaceId};
use serde_json::{json, Value};
use tower::ServiceExt;

const ORIGIN: &str = "https://app.example";
const WA_SECRET: &str = "wa-app-secret-for-tests";
const WA_TOKEN: &str = "wa-verify-token";
const CAL_SECRET: &str = "cal-secret-for-tests";
/// The password of the walker's own user: the one the schema examples use.
const PASSWORD: &str = "Correct-Horse-9-Battery";
/// What the examples change it to (`change-password`, `password-reset/confirm`).
const NEW_PASSWORD: &str = "Amber-Lantern-7-Quay";
/// Where webhook URLs of the walker point (allowed for this `Crm`; nothing listens).
const HOOK: &str = "http://127.0.0.1:9/hook";
/// The file of the walker's uploads and attachment fixtures.
const PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n";
/// The boundary of the walker's multipart bodies.
const BOUNDARY: &str = "walker-boundary-51c0";

conformance!(every_operation_does_what_the_document_says);

struct Walker {
    crm: Crm,
    router: Router,
    doc: Value,
    outbox: Outbox,
    key: String,
    cookie: String,
    password: String,
    unique: u64,
    checked: usize,
    /// Whether the operation being walked takes a multipart upload.
    multipart: bool,
    /// Where the walker's `Crm` keeps attached files.
    _files: tempfile::TempDir,
}

struct Answer {
    status: u16,
    text: String,
}

fn generous() -> Policy {
    Policy {
        limit: 1_000_000,
        period: Duration::from_secs(60),
    }
}

/// A `$ref` resolved against the document's components.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or("");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => s,
    }
}

/// The schema without its `null` alternative (`oneOf: [null, X]`, `type: [t, null]`).
fn non_null<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    let s = resolve(doc, s);
    if let Some(alts) = s["oneOf"].as_array() {
        if let Some(x) = alts.iter().find(|a| a["type"] != "null") {
            return non_null(doc, x);
        }
    }
    s
}

fn types(s: &Value) -> Vec<String> {
    match &s["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .filter(|t| t != "null")
            .collect(),
        _ if s["enum"].is_array() => vec!["string".into()],
        _ => Vec::new(),
    }
}

fn usize_of(s: &Value, k: &str) -> Option<usize> {
    s[k].as_u64().and_then(|n| usize::try_from(n).ok())
}

/// Values at the edges the schema states, each of which it calls valid. Strings with
/// a format or a pattern other than "not blank" have no edge the walker can build
/// without knowing the format: their examples cover them.
fn boundaries(doc: &Value, s: &Value) -> Vec<Value> {
    let s = non_null(doc, s);
    let mut out = Vec::new();
    if let Some(first) = s["enum"]
        .as_array()
        .and_then(|e| e.iter().find(|v| !v.is_null()))
    {
        out.push(first.clone());
        return out;
    }
    let t = types(s);
    if t.contains(&"string".to_owned()) {
        let plain = s["format"].is_null() && (s["pattern"].is_null() || s["pattern"] == "\\S");
        if plain {
            if let Some(min) = usize_of(s, "minLength") {
                out.push(Value::from("x".repeat(min.max(1))));
            }
            if let Some(max) = usize_of(s, "maxLength") {
                out.push(Value::from("x".repeat(max)));
            }
        }
    } else if t.contains(&"integer".to_owned()) {
        for k in ["minimum", "maximum"] {
            if let Some(v) = s[k].as_i64() {
                out.push(Value::from(v));
            }
        }
    } else if t.contains(&"array".to_owned()) {
        let item = boundaries(doc, &s["items"]).into_iter().next();
        if let (Some(max), Some(item)) = (usize_of(s, "maxItems"), item) {
            out.push(Value::from(vec![item; max]));
        }
    }
    out
}

/// A string of an allowed length that does not match `pattern`. Patterns with
/// lookarounds (the password policy) are beyond the `regex` crate: for those, a string
/// of symbols, which no such pattern here takes.
fn not_matching(pattern: &str, s: &Value) -> String {
    let min = usize_of(s, "minLength").unwrap_or(1).max(1);
    let max = usize_of(s, "maxLength").unwrap_or(64).max(min);
    let Ok(re) = regex::Regex::new(pattern) else {
        return "!".repeat(min);
    };
    let mut candidates = vec![" ".repeat(min), "!".repeat(min), ",".repeat(min)];
    candidates.push("x".repeat(max.min(60)));
    candidates.push(format!("{}!", "x".repeat(min)));
    candidates
        .into_iter()
        .find(|c| !re.is_match(c) && (min..=max).contains(&c.chars().count()))
        .unwrap_or_else(|| panic!("no string breaks {pattern}"))
}

/// Values that break one constraint each, with what they break.
fn violations(doc: &Value, s: &Value) -> Vec<(String, Value)> {
    let s = non_null(doc, s);
    let mut out = Vec::new();
    let t = types(s);
    if t.contains(&"string".to_owned()) || s["enum"].is_array() {
        out.push(("type".into(), json!(12345)));
        if s["enum"].is_array() {
            out.push(("enum".into(), json!("zz-not-allowed")));
        }
        if let Some(min) = usize_of(s, "minLength").filter(|m| *m > 0) {
            out.push(("minLength".into(), Value::from("x".repeat(min - 1))));
        }
        if let Some(max) = usize_of(s, "maxLength") {
            out.push(("maxLength".into(), Value::from("x".repeat(max + 1))));
        }
        if let Some(p) = s["pattern"].as_str() {
            out.push(("pattern".into(), Value::from(not_matching(p, s))));
        }
        match s["format"].as_str() {
            Some("email") => out.push(("format".into(), json!("not-an-email"))),
            Some("date-time") => out.push(("format".into(), json!("not-a-date"))),
            Some("uuid") => out.push(("format".into(), json!("not-a-uuid"))),
            Some("uri") => out.push(("format".into(), json!("not a url"))),
            Some("hostname") => out.push(("format".into(), json!("not a domain"))),
            Some("phone") => out.push(("format".into(), json!("12"))),
            _ => {}
        }
    } else if t.contains(&"integer".to_owned()) {
        out.push(("type".into(), json!("x")));
        if let Some(v) = s["minimum"].as_i64() {
            out.push(("minimum".into(), Value::from(v - 1)));
        }
        if let Some(v) = s["maximum"].as_i64() {
            out.push(("maximum".into(), Value::from(v + 1)));
        }
    } else if t.contains(&"boolean".to_owned()) {
        out.push(("type".into(), json!("x")));
    } else if t.contains(&"array".to_owned()) {
        out.push(("type".into(), json!("x")));
        let item = boundaries(doc, &s["items"]).into_iter().next();
        if let Some(min) = usize_of(s, "minItems").filter(|m| *m > 0) {
            let one = item.clone().unwrap_or(json!("x"));
            out.push(("minItems".into(), Value::from(vec![one; min - 1])));
        }
        if let (Some(max), Some(item)) = (usize_of(s, "maxItems"), item) {
            out.push(("maxItems".into(), Value::from(vec![item; max + 1])));
        }
        for (what, bad) in violations(doc, &s["items"]) {
            out.push((format!("items.{what}"), Value::from(vec![bad])));
        }
    } else if t.contains(&"object".to_owned()) {
        out.push(("type".into(), json!("x")));
    }
    out
}

impl Walker {
    async fn new(db: &TestDb) -> Self {
        let outbox = Outbox::default();
        let mut b = db
            .builder()
            .mailer(outbox.clone())
            .notifier(crm::integrations::email::Resend::new(
                "re_test",
                "CRM <crm@example.com>",
            ))
            .webhook_allow_networks(["127.0.0.1"])
            .quotas(Quotas {
                users: 10_000,
                api_keys: 10_000,
                webhook_endpoints: 10_000,
                notification_channels: 10_000,
                email_recipients: 10,
                attachment_bytes: 1 << 30,
            });
        for name in [
            "api_key",
            "anonymous_ip",
            "login",
            "login_ip",
            "password_reset",
            "lead_parse",
        ] {
            b = b.rate_limit_policy(name, generous());
        }
        // A stand-in of Meta's Graph API accepts the WhatsApp integration's token.
        let graph = crate::common::receiver::Receiver::start(
            vec![],
            crate::common::receiver::Reply::Status(
                200,
                vec![("content-type".into(), "application/json".into())],
                json!({"id": "1065", "messages": [{"id": "wamid.WALK"}]}).to_string(),
            ),
        )
        .await;
        let files = tempfile::tempdir().expect("files dir");
        let crm = b
            .storage(crm::storage::FsStorage::new(files.path()))
            .provider(crm::integrations::whatsapp::WhatsApp::new().with_base_url(graph.url))
            .provider(crm::integrations::calcom::CalcomIntegration)
            .connect()
            .await
            .expect("connect");
        let cfg = Config::new()
            .allow_origin(ORIGIN)
            .registration(true)
            .session_rate_limit(generous())
            .inbound_rate_limit(generous())
            .whatsapp(
                SecretString::from(WA_SECRET.to_owned()),
                SecretString::from(WA_TOKEN.to_owned()),
            )
            .calcom(SecretString::from(CAL_SECRET.to_owned()));
        let router = cfg.router(crm.clone());
        let auth = crm.workspace(WorkspaceId::DEFAULT).auth();
        // The walker signs in as the user of the examples, an owner.
        for (email, role) in [
            ("sam@example.com", "owner"),
            ("sales@example.com", "member"),
        ] {
            auth.create_user(
                NewUser {
                    email: email.into(),
                    display_name: "Fixture".into(),
                    role: Some(role.into()),
                    password: PASSWORD.into(),
                },
                Actor::App(None),
            )
            .await
            .expect("user");
        }
        // The notification channel example mails sales@: a verified user.
        db.execute("UPDATE crm_users SET email_verified_at = created_at")
            .await;
        let key = crm
            .workspace(WorkspaceId::DEFAULT)
            .api_keys()
            .create(NewApiKey {
                name: "walker".into(),
                scopes: vec!["*".into()],
                expires_at: None,
            })
            .await
            .expect("key")
            .secret
            .expose()
            .to_owned();
        let mut w = Self {
            crm,
            router,
            doc: Value::Null,
            outbox,
            key,
            cookie: String::new(),
            password: PASSWORD.into(),
            unique: 0,
            checked: 0,
            multipart: false,
            _files: files,
        };
        w.sign_in().await;
        let doc = w.raw(Method::GET, "/api/openapi.json", &[], None).await;
        assert_eq!(doc.status, 200);
        w.doc = serde_json::from_str(&doc.text).expect("document");
        w
    }

    async fn sign_in(&mut self) {
        let body = json!({"email": "sam@example.com", "password": self.password}).to_string();
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/auth/login")
            .header(header::ORIGIN, ORIGIN)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), 200, "the walker signs in");
        self.cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .expect("cookie")
            .to_owned();
    }

    async fn raw(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let req = match body {
            Some(text) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(text)),
            None if self.multipart => {
                let mut form = format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
                     filename=\"walker.pdf\"\r\nContent-Type: application/pdf\r\n\r\n"
                )
                .into_bytes();
                form.extend_from_slice(PDF);
                form.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
                b.header(
                    header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(Body::from(form))
            }
            None => b.body(Body::empty()),
        }
        .expect("request");
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
            .await
            .expect("body");
        Answer {
            status,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn next(&mut self) -> u64 {
        self.unique += 1;
        self.unique
    }

    /// Saves the default workspace's integration of `kind` with the secrets the
    /// walker signs with; returns its inbound id (empty for a kind without one).
    async fn integration(&self, kind: &str) -> String {
        let settings: crm::providers::Settings = match kind {
            "whatsapp" => [
                ("access_token", "EAAG-test"),
                ("phone_number_id", "1065"),
                ("app_secret", WA_SECRET),
                ("verify_token", WA_TOKEN),
            ]
            .as_slice(),
            _ => [("webhook_secret", CAL_SECRET)].as_slice(),
        }
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        self.crm
            .workspace(WorkspaceId::DEFAULT)
            .integrations()
            .save(Actor::App(None), kind, settings)
            .await
            .expect("integration")
            .inbound_id
            .unwrap_or_default()
    }

    /// A fresh entity for each `{id}` the path names, made through the library.
    async fn path(&mut self, template: &str) -> String {
        let ws = self.crm.workspace(WorkspaceId::DEFAULT);
        let n = self.next();
        let id = if template.contains("/leads/{id}/messages") {
            // A lead who wrote on WhatsApp just now, in a workspace with WhatsApp.
            self.integration("whatsapp").await;
            let phone = format!("+3460000{n:04}");
            ws.leads()
                .capture_message(
                    NewLead {
                        name: "Writer".into(),
                        phone: Some(phone),
                        ..Default::default()
                    },
                    crm::leads::messages::MessageInfo {
                        channel: "whatsapp".into(),
                        provider_message_id: Some(format!("wamid.IN{n}")),
                        kind: "text".into(),
                        ..Default::default()
                    },
                    Some("Hello".into()),
                )
                .await
                .expect("inbound message")
                .expect("new")
                .lead
                .id
                .to_string()
        } else if template.contains("/leads/{id}") {
            ws.leads()
                .create(NewLead {
                    name: "Fixture".into(),
                    email: Some(format!("fixture{n}@example.com")),
                    ..Default::default()
                })
                .await
                .expect("lead")
                .id
                .to_string()
        } else if template.contains("/contacts/{id}") {
            ws.contacts()
                .create(crm::contacts::NewContact {
                    first_name: "Fixture".into(),
                    emails: vec![format!("contact{n}@example.com")],
                    ..Default::default()
                })
                .await
                .expect("contact")
                .id
                .to_string()
        } else if template.contains("/organizations/{id}") {
            ws.organizations()
                .create(crm::contacts::NewOrganization {
                    name: "Fixture".into(),
                    domain: Some(format!("fixture{n}.example")),
                    ..Default::default()
                })
                .await
                .expect("organization")
                .id
                .to_string()
        } else if template.contains("/imports/{id}") {
            let mut file = tempfile::tempfile().expect("temp file");
            std::io::Write::write_all(&mut file, b"name,email\nImported,imported@example.com\n")
                .expect("write");
            ws.leads()
                .start_import(file, Default::default())
                .await
                .expect("import")
                .id
                .to_string()
        } else if template.contains("/api-keys/{id}") {
            ws.api_keys()
                .create(NewApiKey {
                    name: "fixture".into(),
                    scopes: vec!["leads:read".into()],
                    expires_at: None,
                })
                .await
                .expect("key")
                .key
                .id
                .to_string()
        } else if template.contains("/webhooks/{id}") {
            ws.webhooks()
                .create(NewEndpoint {
                    url: HOOK.into(),
                    ..Default::default()
                })
                .await
                .expect("endpoint")
                .endpoint
                .id
                .to_string()
        } else if template.contains("/notifications/{id}") {
            ws.notifications()
                .create(NewChannel {
                    kind: "email".into(),
                    name: "Fixture".into(),
                    config: json!({"to": ["sales@example.com"]}),
                    event_types: Vec::new(),
                    enabled: None,
                })
                .await
                .expect("channel")
                .id
                .to_string()
        } else if template.contains("/users/{id}") {
            ws.auth()
                .create_user(
                    NewUser {
                        email: format!("member{n}@example.com"),
                        display_name: "Member".into(),
                        role: None,
                        password: PASSWORD.into(),
                    },
                    Actor::App(None),
                )
                .await
                .expect("user")
                .id
                .to_string()
        } else if template.contains("/sessions/{id}") {
            ws.auth()
                .login(crm::auth::Login {
                    email: "sam@example.com".into(),
                    password: self.password.clone(),
                    ..Default::default()
                })
                .await
                .expect("another session")
                .session
                .id
                .to_string()
        } else if template.contains("{kind}") {
            self.integration("calcom").await;
            "calcom".to_owned()
        } else if template.contains("/whatsapp/{inbound_id}") {
            self.integration("whatsapp").await
        } else if template.contains("/cal/{inbound_id}") {
            self.integration("calcom").await
        } else {
            String::new()
        };
        let mut path = template
            .replace("{id}", &id)
            .replace("{kind}", &id)
            .replace("{inbound_id}", &id);
        if path.contains("{msg}") {
            let event = ws.events(None, 1000).await.expect("events");
            let last = event.last().expect("an event exists");
            path = path.replace("{msg}", &last.id.to_string());
        }
        if path.contains("{attachment_id}") {
            // A file on the lead or contact of the path.
            let parent: crm::attachments::Parent = if template.contains("/contacts/") {
                crm::ContactId(id.parse().expect("contact id")).into()
            } else {
                crm::LeadId(id.parse().expect("lead id")).into()
            };
            let file = ws
                .attachments()
                .add(parent, "fixture.pdf", PDF)
                .await
                .expect("attachment");
            path = path.replace("{attachment_id}", &file.id.to_string());
        }
        path
    }

    /// The token of a fresh download link to a file on a new lead.
    async fn file_token(&mut self) -> String {
        let n = self.next();
        let ws = self.crm.workspace(WorkspaceId::DEFAULT);
        let lead = ws
            .leads()
            .create(NewLead {
                name: "Fixture".into(),
                email: Some(format!("file{n}@example.com")),
                ..Default::default()
            })
            .await
            .expect("lead")
            .id;
        let files = ws.attachments();
        let file = files
            .add(lead, "fixture.pdf", PDF)
            .await
            .expect("attachment");
        let link = files.link(lead, file.id, None).await.expect("link");
        link.url
            .split_once("token=")
            .expect("crm's own link")
            .1
            .to_owned()
    }

    /// Gives every email and phone in a body a value of its own (creates must not
    /// collide with the walker's earlier creates), and points webhook URLs home.
    fn fresh(&mut self, schema: &Value, body: &mut Value) {
        let Value::Object(map) = body else { return };
        let schema = non_null(&self.doc, schema).clone();
        for (k, v) in map.iter_mut() {
            let prop = non_null(&self.doc, &schema["properties"][k]).clone();
            if v.is_null() {
                continue;
            }
            match prop["format"].as_str() {
                Some("email") if !is_login(&schema) => {
                    let n = self.next();
                    *v = Value::from(format!("walker{n}@example.com"));
                }
                Some("phone") => {
                    let n = self.next();
                    *v = Value::from(format!("+34 6{:08}", n));
                }
                Some("uri") => *v = Value::from(HOOK),
                Some("hostname") => {
                    let n = self.next();
                    *v = Value::from(format!("walker{n}.example"));
                }
                _ => {}
            }
            // A contact's emails and phones: each item its own.
            if let Value::Array(items) = v {
                let item = non_null(&self.doc, &prop["items"]).clone();
                for it in items.iter_mut() {
                    let n = self.next();
                    match item["format"].as_str() {
                        Some("email") => *it = Value::from(format!("walker{n}@example.com")),
                        Some("phone") => *it = Value::from(format!("+34 6{:08}", n)),
                        _ => {}
                    }
                }
            }
        }
    }

    async fn send(
        &mut self,
        method: &Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
        auth: Auth,
    ) -> Answer {
        let mut uri = path.to_owned();
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect();
            uri = format!("{uri}?{}", q.join("&"));
        }
        let text = body.map(Value::to_string);
        let mut headers = vec![("origin", ORIGIN.to_owned())];
        match auth {
            Auth::Key => headers.push(("authorization", format!("Bearer {}", self.key))),
            Auth::Session => headers.push(("cookie", self.cookie.clone())),
            Auth::None => {}
            Auth::WhatsApp => {
                let b = text.clone().unwrap_or_default();
                headers.push((
                    "x-hub-signature-256",
                    format!("sha256={}", hmac_hex(WA_SECRET, b.as_bytes())),
                ));
            }
            Auth::Cal => {
                let b = text.clone().unwrap_or_default();
                headers.push(("x-cal-signature-256", hmac_hex(CAL_SECRET, b.as_bytes())));
            }
        }
        self.checked += 1;
        self.raw(method.clone(), &uri, &headers, text).await
    }
}

/// A login names an existing account in its example: its email stays.
fn is_login(schema: &Value) -> bool {
    schema["properties"]["password"].is_object() && schema["properties"]["display_name"].is_null()
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Auth {
    None,
    Key,
    Session,
    WhatsApp,
    Cal,
}

/// When to run an operation: those that change the walker's password or end its
/// session go last, deletes after everything else (deeper paths first).
fn order(method: &str, path: &str) -> (u8, i64) {
    let depth = -(path.matches('/').count() as i64);
    match (method, path) {
        ("post", "/api/auth/change-password") => (2, 0),
        ("post", "/api/auth/password-reset/confirm") => (3, 0),
        ("post", "/api/auth/logout") | ("post", "/api/auth/logout-everywhere") => (4, 0),
        ("delete", _) => (5, depth),
        _ => (0, 0),
    }
}

async fn every_operation_does_what_the_document_says(db: &TestDb) {
    let mut w = Walker::new(db).await;
    let doc = w.doc.clone();

    // The document itself: where it is mounted, the cookie in use, the headers.
    assert_eq!(doc["servers"][0]["url"], "/");
    let nested = Router::new().nest(
        "/crm",
        Config::new()
            .insecure_cookie("crm_dev")
            .router(w.crm.clone()),
    );
    let res = nested
        .oneshot(
            Request::builder()
                .uri("/crm/api/openapi.json")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .expect("body");
    let mounted: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(mounted["servers"][0]["url"], "/crm");
    assert_eq!(
        mounted["components"]["securitySchemes"]["session"]["name"], "crm_dev",
        "the cookie in use, not the default"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["name"],
        "__Host-crm_session"
    );
    let create = &doc["paths"]["/api/v1/leads"]["post"];
    assert!(create["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"));
    assert!(create["responses"]["429"]["headers"]["Retry-After"].is_object());
    assert!(create["responses"]["201"]["headers"]["X-RateLimit-Remaining"].is_object());

    // With a default country code, national phone numbers are valid, and the
    // document says so.
    let national = crm::http::openapi(
        db.builder()
            .default_country_code(34)
            .connect()
            .await
            .expect("connect"),
        Config::new(),
    );
    let national = serde_json::to_value(national).expect("json");
    let pattern = national["components"]["schemas"]["NewLead"]["properties"]["phone"]["pattern"]
        .as_str()
        .expect("pattern");
    assert!(regex::Regex::new(pattern)
        .expect("regex")
        .is_match("600 123 456"));
    assert!(!regex::Regex::new(
        doc["components"]["schemas"]["NewLead"]["properties"]["phone"]["pattern"]
            .as_str()
            .expect("pattern")
    )
    .expect("regex")
    .is_match("600 123 456"));

    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    ops.sort_by_key(|(m, p, _)| order(m, p));
    let mut failures = Vec::new();
    for (method, path, op) in ops {
        let m: Method = method.to_uppercase().parse().expect("method");
        let security = op["security"].to_string();
        let auth = if path.starts_with("/api/webhooks/whatsapp") {
            Auth::WhatsApp
        } else if path.starts_with("/api/webhooks/cal") {
            Auth::Cal
        } else if security.contains("api_key") {
            Auth::Key
        } else if security.contains("session") {
            Auth::Session
        } else {
            Auth::None
        };
        let name = format!("{} {path}", method.to_uppercase());

        // Query parameters: each one's example (required ones must have one).
        let mut query = Vec::new();
        let mut params = Vec::new();
        for p in op["parameters"].as_array().cloned().unwrap_or_default() {
            if p["in"] != "query" {
                continue;
            }
            let key = p["name"].as_str().expect("name").to_owned();
            let example = p["example"].clone();
            let example = if key == "hub.verify_token" {
                Value::from(WA_TOKEN)
            } else if key == "token" && path == "/api/files" {
                Value::from(w.file_token().await)
            } else {
                example
            };
            if example.is_null() {
                assert!(
                    p["required"] != true,
                    "{name}: required {key} has no example"
                );
            } else {
                query.push((key.clone(), plain(&example)));
            }
            params.push((key, p["schema"].clone(), p["required"] == true));
        }

        w.multipart = !op["requestBody"]["content"]["multipart/form-data"].is_null();
        // The body: the schema's example.
        let body_schema = op["requestBody"]["content"]["application/json"]["schema"].clone();
        let has_body = !body_schema.is_null();
        let schema = resolve(&doc, &body_schema).clone();
        let example = if has_body {
            let media = &op["requestBody"]["content"]["application/json"];
            let e = if media["example"].is_null() {
                schema["example"].clone()
            } else {
                media["example"].clone()
            };
            if e.is_null() {
                json!({})
            } else {
                e
            }
        } else {
            Value::Null
        };

        // 1. As the document describes it.
        let mut body = example.clone();
        w.fresh(&schema, &mut body);
        w.tokens(&path, &mut body).await;
        let path_now = w.path(&path).await;
        let a = w
            .send(&m, &path_now, &query, has_body.then_some(&body), auth)
            .await;
        if a.status >= 400 {
            failures.push(format!("{name} (the example): {} {}", a.status, a.text));
        }
        if path == "/api/auth/change-password" && a.status < 400 {
            w.password = NEW_PASSWORD.into();
        }
        if path == "/api/auth/password-reset/confirm" && a.status < 400 {
            w.password = NEW_PASSWORD.into();
            w.sign_in().await;
        }
        if matches!(
            path.as_str(),
            "/api/auth/logout" | "/api/auth/logout-everywhere"
        ) {
            w.sign_in().await;
            continue;
        }
        if method == "delete" {
            // The entity is gone; what a delete takes is only its path.
            continue;
        }

        // 2. At each boundary the schemas state.
        let props = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, prop) in &props {
            for edge in boundaries(&doc, prop) {
                let mut b = example.clone();
                b[k.as_str()] = edge.clone();
                w.fresh(&schema, &mut b);
                w.tokens(&path, &mut b).await;
                let path_now = w.path(&path).await;
                let a = w.send(&m, &path_now, &query, Some(&b), auth).await;
                if a.status >= 400 {
                    failures.push(format!(
                        "{name}: {k} = {} (a boundary): {} {}",
                        short(&edge),
                        a.status,
                        a.text
                    ));
                }
            }
        }
        for (k, s, _) in &params {
            for edge in boundaries(&doc, s) {
                let mut q: Vec<(String, String)> =
                    query.iter().filter(|(n, _)| n != k).cloned().collect();
                q.push((k.clone(), plain(&edge)));
                let path_now = w.path(&path).await;
                let a = w
                    .send(&m, &path_now, &q, has_body.then_some(&body), auth)
                    .await;
                if a.status >= 400 {
                    failures.push(format!(
                        "{name}: ?{k}={} (a boundary): {} {}",
                        short(&edge),
                        a.status,
                        a.text
                    ));
                }
            }
        }

        // 3. One broken constraint at a time.
        let required: Vec<String> = schema["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let path_now = w.path(&path).await;
        for k in &required {
            let mut b = example.clone();
            if let Some(map) = b.as_object_mut() {
                map.remove(k);
            }
            let a = w.send(&m, &path_now, &query, Some(&b), auth).await;
            check_refused(&mut failures, &name, &format!("{k} missing"), &a);
        }
        for (k, prop) in &props {
            for (what, bad) in violations(&doc, prop) {
                let mut b = example.clone();
                b[k.as_str()] = bad.clone();
                let a = w.send(&m, &path_now, &query, Some(&b), auth).await;
                check_refused(
                    &mut failures,
                    &name,
                    &format!("{k} = {} ({what})", short(&bad)),
                    &a,
                );
            }
        }
        for (k, s, _) in &params {
            // Everything in a query string is a string: no "wrong type" for text.
            for (what, bad) in violations(&doc, s).into_iter().filter(|(what, _)| {
                !(what == "type" && types(non_null(&doc, s)).contains(&"string".to_owned()))
            }) {
                let mut q: Vec<(String, String)> =
                    query.iter().filter(|(n, _)| n != k).cloned().collect();
                q.push((k.clone(), plain(&bad)));
                let a = w
                    .send(&m, &path_now, &q, has_body.then_some(&body), auth)
                    .await;
                check_refused(
                    &mut failures,
                    &name,
                    &format!("?{k}={} ({what})", short(&bad)),
                    &a,
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests disagree with the document:\n{}",
        failures.len(),
        w.checked,
        failures.join("\n")
    );
    assert!(w.checked > 300, "only {} requests", w.checked);
    w.crm.close().await;
}

impl Walker {
    /// Real tokens where the example has a placeholder.
    async fn tokens(&mut self, path: &str, body: &mut Value) {
        if path.ends_with("/leads/{id}/merge") {
            // The example's leads to absorb are made up: absorb a fresh one instead.
            let n = self.next();
            let absorbed = self
                .crm
                .workspace(WorkspaceId::DEFAULT)
                .leads()
                .create(NewLead {
                    name: "Absorbed".into(),
                    email: Some(format!("absorbed{n}@example.com")),
                    phone: Some(format!("+34611{n:06}")),
                    ..Default::default()
                })
                .await
                .expect("a lead to absorb")
                .id
                .to_string();
            body["from"] = json!([absorbed]);
            body["prefer"] = json!({ "phone": absorbed });
            body["dry_run"] = json!(false);
            return;
        }
        let seen = self.outbox.0.lock().expect("lock").len();
        let auth = self.crm.workspace(WorkspaceId::DEFAULT).auth();
        let token = match path {
            "/api/auth/password-reset/confirm" => {
                auth.request_password_reset("sam@example.com")
                    .await
                    .expect("reset");
                Outbox::token(&self.outbox.nth(seen).await)
            }
            "/api/auth/verify-email" => {
                let sam = auth
                    .users()
                    .await
                    .expect("users")
                    .into_iter()
                    .find(|u| u.email.as_str() == "sam@example.com")
                    .expect("sam");
                auth.request_email_verification(sam.id)
                    .await
                    .expect("verify");
                Outbox::token(&self.outbox.nth(seen).await)
            }
            _ => return,
        };
        body["token"] = Value::from(token);
    }
}

fn check_refused(failures: &mut Vec<String>, name: &str, what: &str, a: &Answer) {
    if !(400..500).contains(&a.status) {
        failures.push(format!(
            "{name}: {what} should be refused with a 4xx: {} {}",
            a.status,
            a.text.chars().take(200).collect::<String>()
        ));
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        let head: String = s.chars().take(30).collect();
        format!("{head}… ({} chars)", s.chars().count())
    } else {
        s
    }
}
