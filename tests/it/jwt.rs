//! External JWTs: HS256 with a shared secret and RS256 / ES256 from a local JWKS
//! server, every claim rule, and the attacks (`alg: none`, key confusion, forged
//! signatures, clock skew past the leeway, a JWKS that is down or slow), each
//! refused with its reason. Verifying writes nothing, so one backend is enough.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use chrono::{TimeZone, Utc};
use crm::auth::Role;
use crm::jwt::{JwtConfig, JwtKey};
use crm::{AuthFailure, Crm, Error, ManualClock, SecretString, WorkspaceId};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::common::receiver::{Receiver, Reply};

const SECRET: &str = "a-supabase-jwt-secret-of-32-bytes-or-more";
const ISSUER: &str = "https://project.supabase.co/auth/v1";
const RSA: &[u8] = include_bytes!("../vectors/jwt/rsa-private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../vectors/jwt/rsa-public.pem");
const EC: &[u8] = include_bytes!("../vectors/jwt/ec-private.pem");
const JWKS: &str = include_str!("../vectors/jwt/jwks.json");

fn clock() -> ManualClock {
    ManualClock::new(
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
            .single()
            .expect("date"),
    )
}

fn now(c: &ManualClock) -> i64 {
    use crm::Clock;
    c.now().timestamp()
}

async fn crm(key: JwtKey, clock: &ManualClock) -> Crm {
    let mut config = JwtConfig::new(key, ISSUER, "authenticated");
    config.workspace_claim = Some("app_metadata.crm_workspace".into());
    config.default_workspace = None;
    config.role_claim = Some("app_metadata.crm_role".into());
    Crm::builder()
        .database_url("sqlite::memory:")
        .clock(clock.clone())
        .jwt(config)
        .connect()
        .await
        .expect("connect")
}

fn claims(clock: &ManualClock, ws: WorkspaceId) -> Value {
    json!({
        "sub": "3f6c1a52-user", "email": "ana@example.com", "iss": ISSUER,
        "aud": "authenticated", "exp": now(clock) + 3600, "iat": now(clock),
        "role": "authenticated",
        "app_metadata": {"crm_workspace": ws.to_string(), "crm_role": "admin"},
    })
}

fn hs(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn signed(alg: Algorithm, kid: &str, pem: &[u8], claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
        _ => EncodingKey::from_ec_pem(pem),
    }
    .expect("key");
    encode(&header, claims, &key).expect("sign")
}

fn reason(r: Result<crm::jwt::ExternalIdentity, Error>) -> AuthFailure {
    match r {
        Err(Error::Unauthorized { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn hs256_tokens_map_to_a_workspace_and_a_role() {
    let c = clock();
    let ws = WorkspaceId::new();
    let crm = crm(JwtKey::Hs256(SecretString::from(SECRET.to_owned())), &c).await;
    let who = crm
        .verify_jwt(&hs(&claims(&c, ws)))
        .await
        .expect("verified");
    assert_eq!(
        (
            who.subject.as_str(),
            who.email.as_deref(),
            who.workspace_id,
            who.role
        ),
        ("3f6c1a52-user", Some("ana@example.com"), ws, Role::Admin)
    );

    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = claims(&c, ws);
        f(&mut v);
        hs(&v)
    };
    // A role crm does not have is a member; an audience among several counts.
    let t = with(&|v| v["app_metadata"]["crm_role"] = json!("superuser"));
    assert_eq!(crm.verify_jwt(&t).await.expect("ok").role, Role::Member);
    let t = with(&|v| v["aud"] = json!(["other", "authenticated"]));
    assert!(crm.verify_jwt(&t).await.is_ok());
    // Clock skew: within the 60 s leeway, and past it.
    let t = with(&|v| v["exp"] = json!(now(&c) - 59));
    assert!(crm.verify_jwt(&t).await.is_ok());
    let t = with(&|v| v["exp"] = json!(now(&c) - 61));
    assert_eq!(reason(crm.verify_jwt(&t).await), AuthFailure::JwtExpired);
    let t = with(&|v| v["nbf"] = json!(now(&c) + 61));
    assert_eq!(
        reason(crm.verify_jwt(&t).await),
        AuthFailure::JwtNotYetValid
    );
    let t = with(&|v| v["nbf"] = json!(now(&c) + 59));
    assert!(crm.verify_jwt(&t).await.is_ok());
    // The token ages with crm's clock.
    let t = hs(&claims(&c, ws));
    c.advance(chrono::Duration::seconds(3661));
    assert_eq!(reason(crm.verify_jwt(&t).await), AuthFailure::JwtExpired);
    c.advance(chrono::Duration::seconds(-3661));

    for (f, why) in [
        (
            &(|v: &mut Value| v["iss"] = json!("https://evil.example")) as &dyn Fn(&mut Value),
            AuthFailure::JwtIssuer,
        ),
        (
            &|v: &mut Value| v["aud"] = json!("anon"),
            AuthFailure::JwtAudience,
        ),
        (
            &|v: &mut Value| v["aud"] = Value::Null,
            AuthFailure::JwtAudience,
        ),
        (
            &|v: &mut Value| v["exp"] = Value::Null,
            AuthFailure::JwtClaims,
        ),
        (
            &|v: &mut Value| v["sub"] = Value::Null,
            AuthFailure::JwtClaims,
        ),
        (
            &|v: &mut Value| v["app_metadata"]["crm_workspace"] = json!("not-a-uuid"),
            AuthFailure::JwtClaims,
        ),
        (
            &|v: &mut Value| v["app_metadata"] = json!({}),
            AuthFailure::JwtClaims,
        ),
    ] {
        assert_eq!(reason(crm.verify_jwt(&with(f)).await), why);
    }

    // A forged signature, another secret, and tokens that are not JWTs.
    let good = hs(&claims(&c, ws));
    let (head, _) = good.rsplit_once('.').expect("jwt");
    let forged = format!("{head}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(
        reason(crm.verify_jwt(&forged).await),
        AuthFailure::JwtSignature
    );
    let other = encode(
        &Header::new(Algorithm::HS256),
        &claims(&c, ws),
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
    )
    .expect("sign");
    assert_eq!(
        reason(crm.verify_jwt(&other).await),
        AuthFailure::JwtSignature
    );
    for junk in ["", "x", "a.b.c", &"a".repeat(10_000)] {
        assert_eq!(
            reason(crm.verify_jwt(junk).await),
            AuthFailure::JwtMalformed,
            "{junk:.20}"
        );
    }
    // `alg: none`, and an RS256 token where the key is a shared secret.
    assert_eq!(
        reason(crm.verify_jwt(&unsigned(&claims(&c, ws))).await),
        AuthFailure::JwtAlgorithm
    );
    let rs = signed(Algorithm::RS256, "rsa-1", RSA, &claims(&c, ws));
    assert_eq!(reason(crm.verify_jwt(&rs).await), AuthFailure::JwtAlgorithm);
    // A critical extension crm does not know.
    let crit = {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let head = b64(&json!({"alg": "HS256", "crit": ["exp"], "exp": 1}));
        let body = b64(&claims(&c, ws));
        let mac = {
            use hmac::Mac;
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
            m.update(format!("{head}.{body}").as_bytes());
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        };
        format!("{head}.{body}.{mac}")
    };
    assert_eq!(
        reason(crm.verify_jwt(&crit).await),
        AuthFailure::JwtMalformed
    );
    crm.close().await;
}

#[tokio::test]
async fn a_role_counts_only_in_the_workspace_the_token_names() {
    let c = clock();
    let mut config = JwtConfig::new(
        JwtKey::Hs256(SecretString::from(SECRET.to_owned())),
        ISSUER,
        "authenticated",
    );
    config.workspace_claim = Some("app_metadata.crm_workspace".into());
    config.default_workspace = Some(WorkspaceId::DEFAULT);
    config.role_claim = Some("app_metadata.crm_role".into());
    let crm = Crm::builder()
        .database_url("sqlite::memory:")
        .clock(c.clone())
        .jwt(config)
        .connect()
        .await
        .expect("connect");
    let ws = WorkspaceId::new();
    let named = crm.verify_jwt(&hs(&claims(&c, ws))).await.expect("ok");
    assert_eq!((named.workspace_id, named.role), (ws, Role::Admin));
    let mut v = claims(&c, ws);
    v["app_metadata"] = json!({"crm_role": "owner"});
    let fallback = crm.verify_jwt(&hs(&v)).await.expect("ok");
    assert_eq!(
        (fallback.workspace_id, fallback.role),
        (WorkspaceId::DEFAULT, Role::Member)
    );
    crm.close().await;
}

/// An `alg: none` token: header and claims, no signature.
fn unsigned(claims: &Value) -> String {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

fn jwks_reply() -> Reply {
    Reply::Status(
        200,
        vec![("content-type".into(), "application/json".into())],
        JWKS.into(),
    )
}

#[tokio::test]
async fn jwks_keys_verify_rs256_and_es256_and_refuse_key_confusion() {
    let c = clock();
    let ws = WorkspaceId::new();
    // One good answer; then the issuer is down.
    let jwks = Receiver::start(
        vec![jwks_reply()],
        Reply::Status(503, vec![], String::new()),
    )
    .await;
    let crm = crm(JwtKey::Jwks(jwks.url.clone()), &c).await;
    let rs = signed(Algorithm::RS256, "rsa-1", RSA, &claims(&c, ws));
    let es = signed(Algorithm::ES256, "ec-1", EC, &claims(&c, ws));
    assert_eq!(crm.verify_jwt(&rs).await.expect("RS256").workspace_id, ws);
    assert_eq!(crm.verify_jwt(&es).await.expect("ES256").role, Role::Admin);
    assert_eq!(jwks.requests().len(), 1, "the keys are fetched once");

    // Key confusion: HS256 "signed" with the RSA public key, naming its kid.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = encode(
        &header,
        &claims(&c, ws),
        &EncodingKey::from_secret(RSA_PUBLIC),
    )
    .expect("sign");
    assert_eq!(
        reason(crm.verify_jwt(&confused).await),
        AuthFailure::JwtAlgorithm
    );
    // A key used with another key's algorithm, an unknown kid, `alg: none`.
    let swapped = signed(Algorithm::ES256, "rsa-1", EC, &claims(&c, ws));
    assert_eq!(
        reason(crm.verify_jwt(&swapped).await),
        AuthFailure::JwtAlgorithm
    );
    let unknown = signed(Algorithm::RS256, "rsa-9", RSA, &claims(&c, ws));
    assert_eq!(
        reason(crm.verify_jwt(&unknown).await),
        AuthFailure::JwtUnknownKey
    );
    assert_eq!(
        reason(crm.verify_jwt(&unsigned(&claims(&c, ws))).await),
        AuthFailure::JwtAlgorithm
    );
    // A flood of unknown kids asks the issuer at most every 30 s.
    assert_eq!(jwks.requests().len(), 1);
    c.advance(chrono::Duration::seconds(31));
    assert_eq!(
        reason(crm.verify_jwt(&unknown).await),
        AuthFailure::JwtUnknownKey
    );
    assert_eq!(jwks.requests().len(), 2, "one more try, which failed (503)");

    // Ten minutes on, the keys are stale; the issuer is down: the keys fetched
    // before stay in use.
    c.advance(chrono::Duration::minutes(11));
    let fresh = signed(Algorithm::RS256, "rsa-1", RSA, &claims(&c, ws));
    assert!(crm.verify_jwt(&fresh).await.is_ok());
    assert_eq!(jwks.requests().len(), 3);
    // While it stays down, the next requests do not ask it again (30 s apart).
    for _ in 0..5 {
        assert!(crm.verify_jwt(&fresh).await.is_ok());
    }
    assert_eq!(jwks.requests().len(), 3);
    crm.close().await;
}

#[tokio::test]
async fn a_slow_jwks_is_given_up_within_its_timeout() {
    let c = clock();
    let ws = WorkspaceId::new();
    let jwks = Receiver::start(vec![], Reply::Hang(Duration::from_secs(30))).await;
    let crm = crm(JwtKey::Jwks(jwks.url.clone()), &c).await;
    let rs = signed(Algorithm::RS256, "rsa-1", RSA, &claims(&c, ws));
    let started = Instant::now();
    assert_eq!(
        reason(crm.verify_jwt(&rs).await),
        AuthFailure::JwtUnknownKey
    );
    // The fetch timeout is 3 s; far below the 30 s the server would take.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    crm.close().await;
}

#[tokio::test]
async fn configurations_that_cannot_work_are_refused_at_connect() {
    let mut weak = JwtConfig::new(
        JwtKey::Hs256(SecretString::from("short".to_owned())),
        ISSUER,
        "a",
    );
    weak.default_workspace = Some(WorkspaceId::DEFAULT);
    let mut no_workspace = JwtConfig::new(JwtKey::Jwks("https://x/jwks".into()), ISSUER, "a");
    no_workspace.default_workspace = None;
    let mut loose = JwtConfig::new(JwtKey::Jwks("https://x/jwks".into()), ISSUER, "a");
    loose.leeway = Duration::from_secs(3600);
    loose.default_workspace = Some(WorkspaceId::DEFAULT);
    let mut plain = JwtConfig::new(
        JwtKey::Jwks("http://issuer.example/jwks".into()),
        ISSUER,
        "a",
    );
    plain.default_workspace = Some(WorkspaceId::DEFAULT);
    for config in [weak, no_workspace, loose, plain] {
        let r = Crm::builder()
            .database_url("sqlite::memory:")
            .jwt(config)
            .connect()
            .await;
        assert!(matches!(r, Err(Error::Config(_))));
    }
    // A local issuer over plain http is fine.
    let mut local = JwtConfig::new(JwtKey::Jwks("http://127.0.0.1:9/jwks".into()), ISSUER, "a");
    local.default_workspace = Some(WorkspaceId::DEFAULT);
    {
        let r = Crm::builder()
            .database_url("sqlite::memory:")
            .jwt(local)
            .connect()
            .await;
        assert!(r.is_ok());
    }
    let crm = Crm::connect("sqlite::memory:").await.expect("connect");
    assert!(matches!(crm.verify_jwt("x").await, Err(Error::Config(_))));
}

#[cfg(feature = "http")]
#[tokio::test]
async fn the_axum_extractor_answers_who_or_401() {
    use crm::http::ExternalUser;
    let c = clock();
    let ws = WorkspaceId::new();
    let crm = crm(JwtKey::Hs256(SecretString::from(SECRET.to_owned())), &c).await;
    let app = axum::Router::new()
        .route(
            "/me",
            axum::routing::get(|ExternalUser(who): ExternalUser| async move { who.subject }),
        )
        .with_state(crm.clone());
    let call = |auth: Option<String>| {
        let mut b = Request::builder().uri("/me");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        app.clone().oneshot(b.body(Body::empty()).expect("request"))
    };
    let ok = call(Some(format!("Bearer {}", hs(&claims(&c, ws)))))
        .await
        .expect("infallible");
    assert_eq!(ok.status(), 200);
    let body = axum::body::to_bytes(ok.into_body(), 1 << 16)
        .await
        .expect("body");
    assert_eq!(&body[..], b"3f6c1a52-user");
    let lower = call(Some(format!("bearer {}", hs(&claims(&c, ws)))))
        .await
        .expect("infallible");
    assert_eq!(lower.status(), 200, "the scheme is case-insensitive");
    for auth in [
        None,
        Some("Basic x".to_owned()),
        Some(format!("Bearer {}", unsigned(&claims(&c, ws)))),
    ] {
        let res = call(auth).await.expect("infallible");
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
    }
}
