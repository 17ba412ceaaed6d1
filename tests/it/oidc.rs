//! Sign-in with an OpenID Connect provider, against a local provider the test
//! starts (discovery, JWKS, an authorization endpoint that hands out codes, and a
//! token endpoint that checks the client, the redirect URI, the PKCE verifier and
//! that a code is used once, then issues RS256 ID tokens). The flow end to end,
//! linking and sign-up, every refusal (wrong state, replayed callback, replayed
//! code, expired token, wrong audience, wrong nonce, unverified email, a domain not
//! allowed, a declined sign-in), who may configure providers, and the browser
//! routes with their state cookie.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Duration;
use crm::auth::{Actor, NewUser, Role};
use crm::oidc::{OidcCallback, OidcProviderInput, OidcStartInput};
use crm::{AuthFailure, Clock, Crm, Error, SecretString, WorkspaceId};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use crate::common::TestDb;

conformance!(
    signing_in_links_a_verified_email_and_keeps_the_link,
    a_first_sign_in_creates_a_member_only_when_allowed,
    refused_callbacks_create_nothing_and_say_why,
    only_owners_configure_sign_in_providers,
    disabled_users_do_not_sign_in,
    the_browser_routes_check_the_state_cookie,
    a_code_goes_only_to_the_provider_that_issued_it,
    providers_on_private_addresses_need_the_operators_allow_list,
);

// The tenant tests again, behind row-level security.
with_rls!(
    signing_in_links_a_verified_email_and_keeps_the_link,
    a_first_sign_in_creates_a_member_only_when_allowed,
    refused_callbacks_create_nothing_and_say_why,
    only_owners_configure_sign_in_providers,
    disabled_users_do_not_sign_in,
    the_browser_routes_check_the_state_cookie,
    a_code_goes_only_to_the_provider_that_issued_it,
);

const RSA: &[u8] = include_bytes!("../vectors/jwt/rsa-private.pem");
const JWKS: &str = include_str!("../vectors/jwt/jwks.json");
const CLIENT_ID: &str = "crm-test-client";
const CLIENT_SECRET: &str = "idp-client-secret-for-tests";
/// The callback URL of a workspace's provider (each has its own).
fn redirect(ws: WorkspaceId, name: &str) -> String {
    format!("http://127.0.0.1:9/api/auth/oidc/{ws}/{name}/callback")
}
const PASSWORD: &str = "Correct-Horse-42!";

/// A code the provider handed out, and what it checks and issues for it.
#[derive(Clone)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
    claims: Value,
}

#[derive(Default)]
struct IdpState {
    issuer: String,
    now: i64,
    /// Changes to the claims of the next code handed out.
    next: Option<Value>,
    codes: HashMap<String, Grant>,
    token_requests: Vec<HashMap<String, String>>,
    /// What discovery lists as `token_endpoint_auth_methods_supported` (`None`:
    /// the key is left out, and clients must use `client_secret_basic`).
    auth_methods: Option<Vec<&'static str>>,
}

#[derive(Clone)]
struct Idp {
    issuer: String,
    state: Arc<Mutex<IdpState>>,
}

fn pairs(q: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{q}"))
        .expect("query")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn discovery(State(idp): State<Idp>) -> Response {
    let i = &idp.issuer;
    let methods = idp.state.lock().expect("lock").auth_methods.clone();
    let mut doc = json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
    });
    if let Some(m) = methods {
        doc["token_endpoint_auth_methods_supported"] = json!(m);
    }
    axum::Json(doc).into_response()
}

async fn jwks() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        JWKS.to_owned(),
    )
        .into_response()
}

/// The user "signs in" at once: a code for the client, back to the redirect URI.
async fn authorize(State(idp): State<Idp>, RawQuery(q): RawQuery) -> Response {
    let q = pairs(&q.unwrap_or_default());
    let ok = q.get("response_type").map(String::as_str) == Some("code")
        && q.get("scope")
            .is_some_and(|s| s.split(' ').any(|s| s == "openid"))
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && [
            "client_id",
            "redirect_uri",
            "state",
            "nonce",
            "code_challenge",
        ]
        .iter()
        .all(|k| q.get(*k).is_some_and(|v| !v.is_empty()));
    if !ok {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let mut st = idp.state.lock().expect("lock");
    let mut claims = json!({
        "iss": st.issuer, "sub": "idp-user-1", "aud": q["client_id"],
        "iat": st.now, "exp": st.now + 300, "nonce": q["nonce"],
        "email": "ana@example.com", "email_verified": true, "name": "Ana Lima",
    });
    if let Some(Value::Object(patch)) = st.next.take() {
        for (k, v) in patch {
            claims[k] = v;
        }
    }
    let code = format!("code-{}", uuid::Uuid::now_v7().simple());
    st.codes.insert(
        code.clone(),
        Grant {
            client_id: q["client_id"].clone(),
            redirect_uri: q["redirect_uri"].clone(),
            challenge: q["code_challenge"].clone(),
            nonce: q["nonce"].clone(),
            claims,
        },
    );
    let mut back = reqwest::Url::parse(&q["redirect_uri"]).expect("redirect uri");
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"]);
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

/// Checks everything a real provider checks, and uses the code up.
async fn token(State(idp): State<Idp>, headers: axum::http::HeaderMap, body: String) -> Response {
    let mut f = pairs(&body);
    // client_secret_basic: the credentials from the header, form-encoded.
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .expect("base64");
        let raw = String::from_utf8(raw).expect("utf-8");
        let (id, secret) = raw.split_once(':').expect("id:secret");
        let dec = |v: &str| pairs(&format!("v={v}"))["v"].clone();
        f.insert("basic_client_id".into(), dec(id));
        f.insert("client_secret".into(), dec(secret));
        f.entry("client_id".into()).or_insert_with(|| dec(id));
    }
    let mut st = idp.state.lock().expect("lock");
    st.token_requests.push(f.clone());
    let refuse = || {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response()
    };
    let Some(grant) = f.get("code").and_then(|c| st.codes.remove(c)) else {
        return refuse();
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let ok = f.get("grant_type").map(String::as_str) == Some("authorization_code")
        && f.get("client_id") == Some(&grant.client_id)
        && f.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        && f.get("redirect_uri") == Some(&grant.redirect_uri)
        && challenge == grant.challenge;
    if !ok {
        return refuse();
    }
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    let key = EncodingKey::from_rsa_pem(RSA).expect("key");
    let id_token = encode(&h, &grant.claims, &key).expect("sign");
    let _ = grant.nonce;
    axum::Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token}))
        .into_response()
}

impl Idp {
    async fn start(db: &TestDb) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let idp = Idp {
            issuer: issuer.clone(),
            state: Arc::new(Mutex::new(IdpState {
                issuer,
                now: db.clock.now().timestamp(),
                auth_methods: Some(vec!["client_secret_post", "client_secret_basic"]),
                ..IdpState::default()
            })),
        };
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(idp.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        idp
    }

    /// The claims of the next code differ by `patch`.
    fn next(&self, patch: Value) {
        self.state.lock().expect("lock").next = Some(patch);
    }

    fn token_requests(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().expect("lock").token_requests.clone()
    }

    /// Follows the authorization URL as a browser would: the code and state the
    /// provider sends back.
    async fn authorize(&self, url: &str) -> (String, String) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let res = client.get(url).send().await.expect("authorize");
        assert_eq!(
            res.status(),
            302,
            "{}",
            res.text().await.unwrap_or_default()
        );
        let back = res.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let q = pairs(back.split_once('?').map_or("", |(_, q)| q));
        (q["code"].clone(), q["state"].clone())
    }
}

fn provider(idp: &Idp) -> OidcProviderInput {
    OidcProviderInput::issuer("acme", idp.issuer.as_str(), CLIENT_ID)
        .client_secret(SecretString::from(CLIENT_SECRET.to_owned()))
        .allowed_domains(["example.com"])
}

fn start_input(ws: WorkspaceId, name: &str) -> OidcStartInput {
    OidcStartInput {
        redirect_uri: redirect(ws, name),
        return_to: Some("/leads?view=mine".into()),
        remember_me: false,
    }
}

fn callback(ws: WorkspaceId, code: &str, state: &str) -> OidcCallback {
    OidcCallback {
        workspace_id: ws,
        provider: "acme".into(),
        state: state.into(),
        code: Some(code.into()),
        ip: Some("203.0.113.9".into()),
        user_agent: Some("test-browser".into()),
        ..OidcCallback::default()
    }
}

/// A workspace with its owner `ana@example.com` (a password account), and a `Crm`.
async fn setup(db: &TestDb) -> (Crm, WorkspaceId, Idp) {
    // The stand-in provider listens on 127.0.0.1, which the SSRF guard refuses
    // unless the operator allows it.
    let crm = db
        .builder()
        .webhook_allow_networks(["127.0.0.0/8"])
        .connect()
        .await
        .expect("connect");
    let owner = crm
        .register(
            "Acme",
            NewUser {
                email: "ana@example.com".into(),
                display_name: "Ana".into(),
                role: None,
                password: PASSWORD.into(),
            },
        )
        .await
        .expect("register");
    let idp = Idp::start(db).await;
    (crm, owner.workspace_id, idp)
}

/// One sign-in through the provider: start, authorize, finish.
async fn sign_in(crm: &Crm, ws: WorkspaceId, idp: &Idp) -> Result<crm::oidc::OidcSignedIn, Error> {
    let started = crm
        .workspace(ws)
        .oidc()
        .start("acme", start_input(ws, "acme"))
        .await
        .expect("start");
    let (code, state) = idp.authorize(&started.url).await;
    assert_eq!(state, started.state.expose());
    crm.oidc_finish(callback(ws, &code, &state)).await
}

/// A member with the test password.
fn member(email: &str, name: &str) -> NewUser {
    NewUser {
        email: email.into(),
        display_name: name.into(),
        role: None,
        password: PASSWORD.into(),
    }
}

fn login(email: &str) -> crm::auth::Login {
    crm::auth::Login {
        email: email.into(),
        password: PASSWORD.into(),
        remember_me: false,
        ip: None,
        user_agent: None,
    }
}

fn reason<T: std::fmt::Debug>(r: Result<T, Error>) -> AuthFailure {
    match r {
        Err(Error::Unauthorized { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn audits(db: &TestDb, action: &str) -> i64 {
    db.scalar_i64(&format!(
        "SELECT COUNT(*) FROM crm_audit_log WHERE action = '{action}'"
    ))
    .await
}

async fn signing_in_links_a_verified_email_and_keeps_the_link(db: &TestDb) {
    let (crm, ws, idp) = setup(db).await;
    let saved = crm
        .workspace(ws)
        .oidc()
        .set_provider(provider(&idp), Actor::App(Some("test")))
        .await
        .expect("provider");
    assert!(saved.has_client_secret);
    assert_eq!(saved.allowed_domains, vec!["example.com".to_owned()]);
    // The secret is sealed at rest.
    let stored = db
        .scalar_text("SELECT client_secret FROM crm_oidc_providers")
        .await;
    assert!(!stored.contains(CLIENT_SECRET));

    let started = crm
        .workspace(ws)
        .oidc()
        .start("acme", start_input(ws, "acme"))
        .await
        .expect("start");
    let url = reqwest::Url::parse(&started.url).expect("url");
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], redirect(ws, "acme"));
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["state"].len(), 43);
    assert_eq!(q["nonce"].len(), 43);
    assert_ne!(q["state"], q["nonce"]);
    // Only the state's hash is stored.
    let stored = db
        .scalar_text("SELECT state_hash FROM crm_oidc_logins")
        .await;
    assert_ne!(stored, q["state"]);

    // The owner has a password session; their email was never verified.
    let by_password = crm
        .workspace(ws)
        .auth()
        .login(login("ana@example.com"))
        .await
        .expect("password");
    let (code, state) = idp.authorize(&started.url).await;
    let done = crm
        .oidc_finish(callback(ws, &code, &state))
        .await
        .expect("signed in");
    assert_eq!(done.logged_in.user.email.as_str(), "ana@example.com");
    assert_eq!(done.logged_in.user.role, Role::Owner);
    assert!(!done.created);
    assert_eq!(done.return_to.as_deref(), Some("/leads?view=mine"));
    assert!(done.logged_in.user.email_verified_at.is_some());
    let who = crm
        .authenticate_session(done.logged_in.token.expose())
        .await
        .expect("session");
    assert_eq!(who.user.id, done.logged_in.user.id);
    assert_eq!(
        db.count("crm_users WHERE email_verified_at IS NOT NULL")
            .await,
        1
    );
    // An account whose email was never verified was made by someone who may know
    // its password: linking replaced it and ended its other sessions.
    let old = crm.authenticate_session(by_password.token.expose()).await;
    assert!(matches!(old, Err(Error::Unauthorized { .. })), "{old:?}");
    let pw = crm
        .workspace(ws)
        .auth()
        .login(login("ana@example.com"))
        .await;
    assert_eq!(reason(pw), AuthFailure::InvalidCredentials);
    // The provider saw the secret and the PKCE verifier (it checked both).
    let sent = idp.token_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["client_secret"], CLIENT_SECRET);
    assert_eq!(sent[0]["code_verifier"].len(), 43);
    assert_eq!(audits(db, "oidc.linked").await, 1);
    // Audited as a sign-in with the provider (the password one before says nothing).
    let by_oidc = db
        .count(
            "crm_audit_log WHERE action = 'login.succeeded' \
             AND CAST(details AS TEXT) LIKE '%oidc%acme%'",
        )
        .await;
    assert_eq!(by_oidc, 1);

    // The link holds when the provider's email changes: the subject signs in.
    idp.next(json!({"email": "ana.lima@example.com"}));
    let again = sign_in(&crm, ws, &idp).await.expect("again");
    assert_eq!(again.logged_in.user.id, done.logged_in.user.id);
    // An audience list of this client alone needs no `azp`.
    idp.next(json!({"aud": [CLIENT_ID]}));
    sign_in(&crm, ws, &idp)
        .await
        .expect("one audience in a list");
    assert_eq!(audits(db, "oidc.linked").await, 1);
    assert_eq!(db.count("crm_oidc_identities").await, 1);
    assert_eq!(db.count("crm_users").await, 1);
    // Each callback used its sign-in up.
    assert_eq!(db.count("crm_oidc_logins").await, 0);

    // A user whose email was verified keeps their password and sessions.
    let carla = crm
        .workspace(ws)
        .auth()
        .create_user(
            NewUser {
                email: "carla@example.com".into(),
                display_name: "Carla".into(),
                role: None,
                password: PASSWORD.into(),
            },
            Actor::App(None),
        )
        .await
        .expect("carla");
    db.execute(
        "UPDATE crm_users SET email_verified_at = created_at WHERE email_key = 'carla@example.com'",
    )
    .await;
    let session = crm
        .workspace(ws)
        .auth()
        .login(login("carla@example.com"))
        .await
        .expect("password");
    // A provider that lists no client authentication gets client_secret_basic
    // (once crm reads its discovery again, an hour on).
    {
        let mut st = idp.state.lock().expect("lock");
        st.auth_methods = None;
        db.clock.advance(Duration::minutes(61));
        st.now = db.clock.now().timestamp();
    }
    idp.next(json!({"sub": "carla-sub", "email": "carla@example.com"}));
    let linked = sign_in(&crm, ws, &idp).await.expect("carla links");
    assert_eq!(linked.logged_in.user.id, carla.id);
    let sent = idp.token_requests();
    let last = sent.last().expect("request");
    assert_eq!(
        last.get("basic_client_id").map(String::as_str),
        Some(CLIENT_ID)
    );
    assert!(!sent[0].contains_key("basic_client_id"));
    crm.authenticate_session(session.token.expose())
        .await
        .expect("still signed in");
    crm.workspace(ws)
        .auth()
        .login(login("carla@example.com"))
        .await
        .expect("password kept");
    assert_eq!(db.count("crm_oidc_identities").await, 2);
    // A Workspace account of another domain (`hd`) is not one of the allowed
    // domains, whatever its address says.
    idp.next(json!({"sub": "carla-sub", "email": "carla@example.com", "hd": "other.example"}));
    assert_eq!(
        reason(sign_in(&crm, ws, &idp).await),
        AuthFailure::OidcDomain
    );
    // Removing the provider forgets its links: should its issuer come back, its
    // subjects are strangers again.
    crm.workspace(ws)
        .oidc()
        .delete_provider("acme", Actor::App(None))
        .await
        .expect("delete");
    assert_eq!(db.count("crm_oidc_identities").await, 0);
}

async fn a_first_sign_in_creates_a_member_only_when_allowed(db: &TestDb) {
    let (crm, ws, idp) = setup(db).await;
    let oidc = crm.workspace(ws).oidc();
    oidc.set_provider(provider(&idp), Actor::App(None))
        .await
        .expect("provider");
    idp.next(json!({"sub": "idp-user-2", "email": "bruno@example.com", "name": "Bruno"}));
    assert_eq!(
        reason(sign_in(&crm, ws, &idp).await),
        AuthFailure::OidcNoAccount
    );
    assert_eq!(db.count("crm_users").await, 1);

    oidc.set_provider(provider(&idp).allow_signup(true), Actor::App(None))
        .await
        .expect("provider");
    idp.next(json!({"sub": "idp-user-2", "email": "bruno@example.com", "name": "Bruno"}));
    let done = sign_in(&crm, ws, &idp).await.expect("signed up");
    assert!(done.created);
    let u = &done.logged_in.user;
    assert_eq!(
        (u.email.as_str(), u.display_name.as_str(), u.role),
        ("bruno@example.com", "Bruno", Role::Member)
    );
    assert!(u.email_verified_at.is_some());
    assert_eq!(db.count("crm_users").await, 2);
    assert_eq!(
        db.scalar_text("SELECT actor FROM crm_audit_log WHERE action = 'user.created'")
            .await,
        "oidc:acme"
    );
    // Nobody knows the new member's password.
    let pw = crm
        .workspace(ws)
        .auth()
        .login(crm::auth::Login {
            email: "bruno@example.com".into(),
            password: PASSWORD.into(),
            remember_me: false,
            ip: None,
            user_agent: None,
        })
        .await;
    assert_eq!(reason(pw), AuthFailure::InvalidCredentials);
    // The next sign-in finds the link and creates nobody.
    idp.next(json!({"sub": "idp-user-2", "email": "bruno@example.com"}));
    let again = sign_in(&crm, ws, &idp).await.expect("again");
    assert!(!again.created);
    assert_eq!(again.logged_in.user.id, u.id);
    assert_eq!(db.count("crm_users").await, 2);
}

async fn refused_callbacks_create_nothing_and_say_why(db: &TestDb) {
    let (crm, ws, idp) = setup(db).await;
    let oidc = crm.workspace(ws).oidc();
    oidc.set_provider(provider(&idp).allow_signup(true), Actor::App(None))
        .await
        .expect("provider");
    let start = || async {
        oidc.start("acme", start_input(ws, "acme"))
            .await
            .expect("start")
    };

    // A state this server never made, and one that is not a state at all.
    let s = start().await;
    let (code, _) = idp.authorize(&s.url).await;
    let forged = URL_SAFE_NO_PAD.encode([7u8; 32]);
    assert_eq!(
        reason(crm.oidc_finish(callback(ws, &code, &forged)).await),
        AuthFailure::OidcState
    );
    assert_eq!(
        reason(crm.oidc_finish(callback(ws, &code, "../x")).await),
        AuthFailure::OidcState
    );

    // A callback replayed: the state works once.
    let (code, state) = idp.authorize(&s.url).await;
    crm.oidc_finish(callback(ws, &code, &state))
        .await
        .expect("first use");
    assert_eq!(
        reason(crm.oidc_finish(callback(ws, &code, &state)).await),
        AuthFailure::OidcState
    );
    let sessions = db.count("crm_sessions").await;
    assert_eq!(sessions, 1);

    // A code replayed under a fresh state: the provider refuses it.
    let s2 = start().await;
    let (_, state2) = idp.authorize(&s2.url).await;
    assert_eq!(
        reason(crm.oidc_finish(callback(ws, &code, &state2)).await),
        AuthFailure::OidcDenied
    );

    // The user declined at the provider.
    let s3 = start().await;
    let declined = OidcCallback {
        state: s3.state.expose().to_owned(),
        error: Some("access_denied".into()),
        ..callback(ws, "", "")
    };
    assert_eq!(
        reason(crm.oidc_finish(declined).await),
        AuthFailure::OidcDenied
    );

    // ID tokens: expired past the leeway, another audience, another sign-in's
    // nonce, an email the provider did not verify (or none), a domain not allowed.
    let now = db.clock.now().timestamp();
    let cases = [
        (
            json!({"exp": now - 61, "sub": "x1", "email": "x1@example.com"}),
            AuthFailure::JwtExpired,
        ),
        (
            json!({"aud": "someone-else", "sub": "x2", "email": "x2@example.com"}),
            AuthFailure::JwtAudience,
        ),
        (
            json!({"aud": ["someone-else", CLIENT_ID], "azp": "someone-else", "sub": "x3", "email": "x3@example.com"}),
            AuthFailure::JwtAudience,
        ),
        (
            json!({"azp": "someone-else", "sub": "x3b", "email": "x3b@example.com"}),
            AuthFailure::JwtAudience,
        ),
        (
            json!({"nonce": "another-sign-in", "sub": "x4", "email": "x4@example.com"}),
            AuthFailure::OidcNonce,
        ),
        (
            json!({"email_verified": false, "sub": "x5", "email": "x5@example.com"}),
            AuthFailure::OidcEmailUnverified,
        ),
        (
            json!({"email_verified": null, "sub": "x6", "email": "x6@example.com"}),
            AuthFailure::OidcEmailUnverified,
        ),
        (
            json!({"email": null, "sub": "x7"}),
            AuthFailure::OidcEmailUnverified,
        ),
        (
            json!({"email": "eve@evil.example", "sub": "x8"}),
            AuthFailure::OidcDomain,
        ),
        (
            json!({"iss": "https://other.example", "sub": "x9", "email": "x9@example.com"}),
            AuthFailure::JwtIssuer,
        ),
    ];
    for (patch, want) in cases {
        idp.next(patch.clone());
        assert_eq!(reason(sign_in(&crm, ws, &idp).await), want, "{patch}");
    }
    // The unverified email of the owner links nothing either.
    idp.next(json!({"email_verified": false, "sub": "attacker"}));
    assert_eq!(
        reason(sign_in(&crm, ws, &idp).await),
        AuthFailure::OidcEmailUnverified
    );

    // The provider moved to another issuer between the start and the callback:
    // the code, the verifier and the secret go to neither.
    let moved = start().await;
    let (code_m, state_m) = idp.authorize(&moved.url).await;
    let other = Idp::start(db).await;
    oidc.set_provider(
        OidcProviderInput::issuer("acme", other.issuer.as_str(), CLIENT_ID)
            .client_secret(SecretString::from(CLIENT_SECRET.to_owned()))
            .allowed_domains(["example.com"])
            .allow_signup(true),
        Actor::App(None),
    )
    .await
    .expect("moved");
    let before = idp.token_requests().len();
    assert_eq!(
        reason(crm.oidc_finish(callback(ws, &code_m, &state_m)).await),
        AuthFailure::OidcState
    );
    assert!(other.token_requests().is_empty());
    assert_eq!(idp.token_requests().len(), before);
    oidc.set_provider(provider(&idp).allow_signup(true), Actor::App(None))
        .await
        .expect("back");

    // A sign-in that waited too long.
    let s4 = start().await;
    let (code4, state4) = idp.authorize(&s4.url).await;
    db.clock.advance(Duration::minutes(11));
    assert_eq!(
        reason(crm.oidc_finish(callback(ws, &code4, &state4)).await),
        AuthFailure::OidcState
    );

    // Nothing was created by any of them: the one user and session of the
    // sign-in that worked (its link went when the provider moved to another
    // issuer); each refusal is audited.
    assert_eq!(db.count("crm_users").await, 1);
    assert_eq!(db.count("crm_oidc_identities").await, 0);
    assert_eq!(db.count("crm_sessions").await, sessions);
    assert!(audits(db, "oidc.failed").await >= 12);
    // Sign-ins started and never finished go with housekeeping.
    start().await;
    db.clock.advance(Duration::minutes(11));
    crm.housekeep(crm::housekeeping::Housekeeping::default())
        .await
        .expect("housekeep");
    assert_eq!(db.count("crm_oidc_logins").await, 0);
}

async fn only_owners_configure_sign_in_providers(db: &TestDb) {
    let (crm, ws, idp) = setup(db).await;
    let auth = crm.workspace(ws).auth();
    let mut ids = HashMap::new();
    for (email, role) in [("adm@example.com", "admin"), ("mem@example.com", "member")] {
        let u = auth
            .create_user(
                NewUser {
                    email: email.into(),
                    display_name: "U".into(),
                    role: Some(role.into()),
                    password: PASSWORD.into(),
                },
                Actor::App(None),
            )
            .await
            .expect("user");
        ids.insert(role, u.id);
    }
    let owner = auth
        .users()
        .await
        .expect("users")
        .into_iter()
        .find(|u| u.role == Role::Owner)
        .expect("owner");
    let oidc = crm.workspace(ws).oidc();
    // An admin who could add a provider of their own could vouch for the owner's
    // email and sign in as the owner: only owners (and the app) configure them.
    for role in ["admin", "member"] {
        let r = oidc
            .set_provider(provider(&idp), Actor::User(ids[role]))
            .await;
        assert!(matches!(r, Err(Error::Forbidden)), "{role}: {r:?}");
    }
    assert_eq!(db.count("crm_oidc_providers").await, 0);
    oidc.set_provider(provider(&idp), Actor::User(owner.id))
        .await
        .expect("owner");
    for role in ["admin", "member"] {
        let r = oidc.delete_provider("acme", Actor::User(ids[role])).await;
        assert!(matches!(r, Err(Error::Forbidden)), "{role}: {r:?}");
    }
    // Another workspace's owner neither.
    let other = crm
        .register(
            "Other",
            NewUser {
                email: "zed@other.example".into(),
                display_name: "Zed".into(),
                role: None,
                password: PASSWORD.into(),
            },
        )
        .await
        .expect("other");
    let r = oidc.delete_provider("acme", Actor::User(other.id)).await;
    assert!(matches!(r, Err(Error::Forbidden)), "{r:?}");
    assert_eq!(db.count("crm_oidc_providers").await, 1);
    assert!(audits(db, "oidc.provider_saved").await == 1);

    // Bad configurations are refused with the field, and write nothing.
    let bad = [
        (
            OidcProviderInput::issuer("Bad Name", idp.issuer.as_str(), CLIENT_ID),
            "name",
        ),
        (
            OidcProviderInput::issuer("x", "http://idp.example.com", CLIENT_ID),
            "issuer",
        ),
        (
            OidcProviderInput::issuer("x", "https://idp.example.com/?a=b", CLIENT_ID),
            "issuer",
        ),
        (
            OidcProviderInput::issuer("x", "ftp://idp.example.com", CLIENT_ID),
            "issuer",
        ),
        (
            OidcProviderInput::issuer("x", idp.issuer.as_str(), ""),
            "client_id",
        ),
        (
            OidcProviderInput::issuer("x", idp.issuer.as_str(), CLIENT_ID)
                .allowed_domains(["not a domain"]),
            "allowed_domains",
        ),
    ];
    for (input, field) in bad {
        let r = oidc.set_provider(input, Actor::App(None)).await;
        match r {
            Err(Error::Validation { errors }) => assert_eq!(errors[0].field, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(db.count("crm_oidc_providers").await, 1);
    // A start to somewhere that is not this site, or to an unknown provider.
    let r = oidc
        .start(
            "acme",
            OidcStartInput {
                return_to: Some("//evil.example/x".into()),
                ..start_input(ws, "acme")
            },
        )
        .await;
    assert!(matches!(r, Err(Error::Validation { .. })), "{r:?}");
    let r = oidc.start("nope", start_input(ws, "nope")).await;
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    // One callback URL for several providers (the mix-up attack's way in), or
    // another provider's: refused before anything is stored.
    for shared in [
        "http://127.0.0.1:9/api/auth/oidc/callback".to_owned(),
        redirect(ws, "other"),
        format!("{}?provider=acme", redirect(ws, "acme")),
    ] {
        let r = oidc
            .start(
                "acme",
                OidcStartInput {
                    redirect_uri: shared.clone(),
                    ..start_input(ws, "acme")
                },
            )
            .await;
        match r {
            Err(Error::Validation { errors }) => assert_eq!(errors[0].field, "redirect_uri"),
            other => panic!("{shared}: {other:?}"),
        }
    }
    assert_eq!(db.count("crm_oidc_logins").await, 0);
    // A Microsoft tenant by its domain would never match Microsoft's issuer.
    let by_domain = OidcProviderInput::microsoft(
        "contoso.onmicrosoft.com",
        "m-id",
        SecretString::from("m".to_owned()),
    );
    match oidc.set_provider(by_domain, Actor::App(None)).await {
        Err(Error::Validation { errors }) => assert_eq!(errors[0].field, "issuer"),
        other => panic!("{other:?}"),
    }
    // The presets.
    let g = OidcProviderInput::google("g-id", SecretString::from("g".to_owned()));
    assert_eq!(
        (g.name.as_str(), g.issuer.as_str()),
        ("google", "https://accounts.google.com")
    );
    let m = OidcProviderInput::microsoft(
        "9188040d-6c67-4c5b-b112-36a304b66dad",
        "m-id",
        SecretString::from("m".to_owned()),
    );
    assert_eq!(
        m.issuer,
        "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
    );
    oidc.delete_provider("acme", Actor::User(owner.id))
        .await
        .expect("delete");
    assert_eq!(db.count("crm_oidc_providers").await, 0);
}

async fn disabled_users_do_not_sign_in(db: &TestDb) {
    let (crm, ws, idp) = setup(db).await;
    let auth = crm.workspace(ws).auth();
    let u = auth
        .create_user(member("carla@example.com", "Carla"), Actor::App(None))
        .await
        .expect("user");
    crm.workspace(ws)
        .oidc()
        .set_provider(provider(&idp), Actor::App(None))
        .await
        .expect("provider");
    auth.disable_user(u.id, Actor::App(None))
        .await
        .expect("disable");
    idp.next(json!({"sub": "carla", "email": "carla@example.com"}));
    assert_eq!(
        reason(sign_in(&crm, ws, &idp).await),
        AuthFailure::InvalidCredentials
    );
    assert_eq!(db.count("crm_oidc_identities").await, 0);
    // Linked before being disabled: refused as well.
    auth.enable_user(u.id, Actor::App(None))
        .await
        .expect("enable");
    idp.next(json!({"sub": "carla", "email": "carla@example.com"}));
    sign_in(&crm, ws, &idp).await.expect("linked");
    auth.disable_user(u.id, Actor::App(None))
        .await
        .expect("disable");
    idp.next(json!({"sub": "carla", "email": "carla@example.com"}));
    assert_eq!(
        reason(sign_in(&crm, ws, &idp).await),
        AuthFailure::InvalidCredentials
    );
    assert_eq!(db.count("crm_sessions").await, 0);
}

async fn send(router: &axum::Router, uri: &str, cookie: Option<&str>) -> Response {
    send_from(router, uri, cookie, None).await
}

/// A GET as a browser sends it, with `Sec-Fetch-Site` when given.
async fn send_from(
    router: &axum::Router,
    uri: &str,
    cookie: Option<&str>,
    site: Option<&str>,
) -> Response {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if let Some(s) = site {
        req = req.header("sec-fetch-site", s);
    }
    router
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible")
}

fn cookies(res: &Response) -> Vec<String> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("cookie").to_owned())
        .collect()
}

async fn the_browser_routes_check_the_state_cookie(db: &TestDb) {
    let (crm, ws, idp) = setup(db).await;
    crm.workspace(ws)
        .oidc()
        .set_provider(provider(&idp), Actor::App(None))
        .await
        .expect("provider");
    // Without a callback URL the routes answer 503.
    let bare = crm::http::Config::new().router(crm.clone());
    let res = send(&bare, &format!("/api/auth/oidc/{ws}/acme"), None).await;
    assert_eq!(res.status(), 503);

    let router = crm::http::Config::new()
        .insecure_cookie("crm_session")
        .oidc_base_url("http://127.0.0.1:9/")
        .router(crm.clone());
    // Another site cannot start a sign-in (it would choose whose account the
    // visitor ends up in); this site's pages and a typed address can.
    let start = format!("/api/auth/oidc/{ws}/acme?return_to=%2Fleads");
    for site in ["cross-site", "same-site"] {
        let res = send_from(&router, &start, None, Some(site)).await;
        assert_eq!(res.status(), 403, "{site}");
    }
    assert_eq!(db.count("crm_oidc_logins").await, 0);
    let res = send_from(&router, &start, None, Some("none")).await;
    assert_eq!(res.status(), 303);
    let res = send_from(&router, &start, None, Some("same-origin")).await;
    assert_eq!(res.status(), 303);
    let to_idp = res.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(to_idp.starts_with(&format!("{}/authorize?", idp.issuer)));
    let q = pairs(to_idp.split_once('?').map_or("", |(_, q)| q));
    assert_eq!(
        q["redirect_uri"],
        format!("http://127.0.0.1:9/api/auth/oidc/{ws}/acme/callback")
    );
    let set = cookies(&res);
    let state_cookie = set[0].split(';').next().expect("cookie").to_owned();
    assert!(state_cookie.starts_with("crm_session_oidc="), "{set:?}");
    assert!(set[0].contains("HttpOnly") && set[0].contains("SameSite=Lax"));
    let (code, state) = idp.authorize(&to_idp).await;
    let back = format!("/api/auth/oidc/{ws}/acme/callback?code={code}&state={state}");

    // Another browser (no cookie, or another sign-in's) is refused, and the state
    // is not used up by it.
    let res = send(&router, &back, None).await;
    assert_eq!(res.status(), 401);
    let res = send(
        &router,
        &back,
        Some("crm_session_oidc=somebody-elses-state"),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(db.count("crm_sessions").await, 0);

    let res = send(&router, &back, Some(&state_cookie)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/leads");
    let set = cookies(&res);
    let session = set
        .iter()
        .find(|c| c.starts_with("crm_session="))
        .expect("session cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_owned();
    assert!(set.iter().any(|c| c.starts_with("crm_session_oidc=;")));
    let me = send(&router, "/api/auth/me", Some(&session)).await;
    assert_eq!(me.status(), 200);

    // The provider's error comes back as a 401 with the reason.
    let res = send(&router, &format!("/api/auth/oidc/{ws}/acme"), None).await;
    let set = cookies(&res);
    let state_cookie = set[0].split(';').next().expect("cookie").to_owned();
    let state = state_cookie.split_once('=').expect("value").1.to_owned();
    let res = send(
        &router,
        &format!("/api/auth/oidc/{ws}/acme/callback?error=access_denied&state={state}"),
        Some(&state_cookie),
    )
    .await;
    assert_eq!(res.status(), 401);
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["detail"], "the identity provider refused the sign-in");
    // An unknown provider is a 404, and so is a name no provider can have (a
    // minute on: the sign-in routes have a budget per client address).
    db.clock.advance(Duration::minutes(1));
    let res = send(&router, &format!("/api/auth/oidc/{ws}/nope"), None).await;
    assert_eq!(res.status(), 404);
    let res = send(&router, &format!("/api/auth/oidc/{ws}/N%C3%B6pe"), None).await;
    assert_eq!(res.status(), 404);
}

/// Two workspaces, each with its provider; B's owner runs a provider of their
/// own. A sign-in started for B's provider must never have its code redeemed by
/// A's, nor a code meant for A's provider sent to B's (the mix-up attack): each
/// callback URL finishes only the sign-ins of its own provider.
async fn a_code_goes_only_to_the_provider_that_issued_it(db: &TestDb) {
    let (crm, a, idp_a) = setup(db).await;
    crm.workspace(a)
        .oidc()
        .set_provider(provider(&idp_a), Actor::App(None))
        .await
        .expect("provider a");
    let owner_b = crm
        .register(
            "B",
            NewUser {
                email: "mallory@example.com".into(),
                display_name: "Mallory".into(),
                role: None,
                password: PASSWORD.into(),
            },
        )
        .await
        .expect("b");
    let b = owner_b.workspace_id;
    let idp_b = Idp::start(db).await;
    crm.workspace(b)
        .oidc()
        .set_provider(
            OidcProviderInput::issuer("evil", idp_b.issuer.as_str(), CLIENT_ID)
                .client_secret(SecretString::from(CLIENT_SECRET.to_owned())),
            Actor::User(owner_b.id),
        )
        .await
        .expect("provider b");
    // B's sign-in comes back (state S_B) to A's callback, carrying a code that
    // A's provider issued: refused, and nothing goes to B's token endpoint.
    let s_b = crm
        .workspace(b)
        .oidc()
        .start("evil", start_input(b, "evil"))
        .await
        .expect("start b");
    let s_a = crm
        .workspace(a)
        .oidc()
        .start("acme", start_input(a, "acme"))
        .await
        .expect("start a");
    let (code_a, _) = idp_a.authorize(&s_a.url).await;
    let mixed = OidcCallback {
        workspace_id: a,
        provider: "acme".into(),
        ..callback(a, &code_a, s_b.state.expose())
    };
    assert_eq!(reason(crm.oidc_finish(mixed).await), AuthFailure::OidcState);
    assert!(idp_b.token_requests().is_empty());
    assert!(idp_a.token_requests().is_empty());
    // The same the other way round: A's state at B's callback.
    let wrong_way = OidcCallback {
        workspace_id: b,
        provider: "evil".into(),
        ..callback(a, &code_a, s_a.state.expose())
    };
    assert_eq!(
        reason(crm.oidc_finish(wrong_way).await),
        AuthFailure::OidcState
    );
    assert!(idp_b.token_requests().is_empty() && idp_a.token_requests().is_empty());
    assert_eq!(db.count("crm_sessions").await, 0);
    // B's owner is no owner in A, and configures nothing there.
    let r = crm
        .workspace(a)
        .oidc()
        .set_provider(provider(&idp_b), Actor::User(owner_b.id))
        .await;
    assert!(matches!(r, Err(Error::Forbidden)), "{r:?}");
}

/// The issuer is a workspace owner's choice: crm reaches a provider on a
/// loopback or private address only when the operator allows that network
/// (the webhooks' allow-list), so a provider cannot be a way into the host's
/// own network.
async fn providers_on_private_addresses_need_the_operators_allow_list(db: &TestDb) {
    let crm = db.crm().await;
    let idp = Idp::start(db).await;
    let oidc = crm.workspace(WorkspaceId::DEFAULT).oidc();
    oidc.set_provider(provider(&idp), Actor::App(None))
        .await
        .expect("saved");
    let r = oidc
        .start("acme", start_input(WorkspaceId::DEFAULT, "acme"))
        .await;
    assert!(matches!(r, Err(Error::Integration(_))), "{r:?}");
    // A name that resolves to loopback is refused by the guarded resolver.
    let port = idp.issuer.rsplit(':').next().expect("port");
    oidc.set_provider(
        OidcProviderInput::issuer("local", format!("http://localhost:{port}"), CLIENT_ID),
        Actor::App(None),
    )
    .await
    .expect("saved");
    let r = oidc
        .start("local", start_input(WorkspaceId::DEFAULT, "local"))
        .await;
    assert!(matches!(r, Err(Error::Integration(_))), "{r:?}");
    assert_eq!(db.count("crm_oidc_logins").await, 0);
}
