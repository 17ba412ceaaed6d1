//! Each integration provider's check when a workspace saves its settings, against a
//! local stand-in of the provider that records the exact request: what it accepts,
//! the field it names when it refuses, and an `Integration` error when it cannot be
//! asked. (SMTP's check is in `smtp.rs`, against a local SMTP server.)

#[path = "../../tests/common/receiver.rs"]
mod receiver;

use crm_core::providers::{Provider, Settings};
use crm_core::Error;
use receiver::{Receiver, Reply};

fn settings(pairs: &[(&str, &str)]) -> Settings {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn json(status: u16, body: &str) -> Reply {
    Reply::Status(
        status,
        vec![("content-type".into(), "application/json".into())],
        body.into(),
    )
}

/// The field a refusal names; panics on anything else.
fn refused(r: crm_core::Result<()>) -> String {
    match r {
        Err(Error::Validation { errors }) => errors[0].field.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn unreachable(r: crm_core::Result<()>) {
    assert!(matches!(r, Err(Error::Integration(_))), "{r:?}");
}

#[tokio::test]
async fn openai_lists_models_with_the_key() {
    let rx = Receiver::start(
        vec![
            json(200, r#"{"data":[]}"#),
            json(401, r#"{"error":{"code":"invalid_api_key"}}"#),
            json(404, r#"{"error":{"code":"model_not_found"}}"#),
            json(500, "{}"),
        ],
        Reply::Reset,
    )
    .await;
    let p = crm_integrations::openai::OpenAiIntegration::new().with_base_url(rx.url.clone());
    let key = settings(&[("api_key", "sk-1")]);
    p.check(&key).await.expect("accepted");
    let seen = rx.requests();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/hook/models")
    );
    assert_eq!(seen[0].headers["authorization"], "Bearer sk-1");
    assert_eq!(refused(p.check(&key).await), "settings.api_key");
    let with_model = settings(&[("api_key", "sk-1"), ("model", "gpt-9")]);
    assert_eq!(refused(p.check(&with_model).await), "settings.model");
    assert_eq!(rx.requests()[2].path, "/hook/models/gpt-9");
    unreachable(p.check(&key).await);
    unreachable(p.check(&key).await); // the connection is reset
    let odd = settings(&[("api_key", "sk-1"), ("model", "../admin")]);
    assert_eq!(refused(p.check(&odd).await), "settings.model");
    assert_eq!(
        rx.requests().len(),
        5,
        "a model that is no name is never sent"
    );
}

#[tokio::test]
async fn resend_reads_domains_and_takes_sending_only_keys() {
    let rx = Receiver::start(
        vec![
            json(200, r#"{"data":[]}"#),
            json(401, r#"{"statusCode":401,"name":"restricted_api_key","message":"This API key is restricted to only send emails"}"#),
            json(401, r#"{"statusCode":401,"name":"validation_error","message":"API key is invalid"}"#),
        ],
        json(503, "{}"),
    )
    .await;
    let p = crm_integrations::email::ResendIntegration::new().with_base_url(rx.url.clone());
    let s = settings(&[("api_key", "re_1"), ("from", "Acme <crm@acme.example>")]);
    p.check(&s).await.expect("accepted");
    p.check(&s).await.expect("a sending-only key can send");
    assert_eq!(refused(p.check(&s).await), "settings.api_key");
    unreachable(p.check(&s).await);
    let seen = rx.requests();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/hook/domains")
    );
    assert_eq!(seen[0].headers["authorization"], "Bearer re_1");
    let bad_from = settings(&[("api_key", "re_1"), ("from", "Acme")]);
    assert_eq!(refused(p.check(&bad_from).await), "settings.from");
    assert_eq!(rx.requests().len(), 4);
}

#[tokio::test]
async fn whatsapp_reads_the_number_with_the_token() {
    let rx = Receiver::start(
        vec![
            json(200, r#"{"id":"1065"}"#),
            json(401, r#"{"error":{"message":"Invalid OAuth access token.","type":"OAuthException","code":190}}"#),
            json(400, r#"{"error":{"message":"Unsupported get request.","type":"GraphMethodException","code":100}}"#),
        ],
        json(500, "{}"),
    )
    .await;
    let p = crm_integrations::whatsapp::WhatsApp::new().with_base_url(rx.url.clone());
    let s = settings(&[
        ("access_token", "EAAG"),
        ("phone_number_id", "1065"),
        ("app_secret", "a"),
        ("verify_token", "v"),
    ]);
    p.check(&s).await.expect("accepted");
    let seen = rx.requests();
    assert_eq!(seen[0].path, "/hook/1065?fields=id");
    assert_eq!(seen[0].headers["authorization"], "Bearer EAAG");
    assert_eq!(refused(p.check(&s).await), "settings.access_token");
    assert_eq!(refused(p.check(&s).await), "settings.phone_number_id");
    unreachable(p.check(&s).await);
    let mut bad = s.clone();
    bad.insert("phone_number_id".into(), "1065/../me".into());
    assert_eq!(refused(p.check(&bad).await), "settings.phone_number_id");
    assert_eq!(rx.requests().len(), 4);
}

#[tokio::test]
async fn telegram_asks_who_the_bot_is() {
    let rx = Receiver::start(
        vec![
            json(200, r#"{"ok":true,"result":{"id":1,"is_bot":true}}"#),
            json(
                401,
                r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
            ),
        ],
        json(502, "{}"),
    )
    .await;
    let p = crm_integrations::telegram::Telegram::new().with_base_url(rx.url.clone());
    let s = settings(&[("bot_token", "123456:ABC-def")]);
    p.check(&s).await.expect("accepted");
    assert_eq!(rx.requests()[0].path, "/hook/bot123456:ABC-def/getMe");
    assert_eq!(refused(p.check(&s).await), "settings.bot_token");
    unreachable(p.check(&s).await);
    let odd = settings(&[("bot_token", "123/../../x:y")]);
    assert_eq!(refused(p.check(&odd).await), "settings.bot_token");
    assert_eq!(rx.requests().len(), 3, "a token that is none is never sent");
}

#[tokio::test]
async fn discord_reads_the_webhook() {
    let rx = Receiver::start(
        vec![
            json(200, r#"{"type":1,"id":"1"}"#),
            json(404, r#"{"message":"Unknown Webhook","code":10015}"#),
        ],
        json(500, "{}"),
    )
    .await;
    let base = rx.url.clone();
    let p = crm_integrations::discord::Discord::new().with_base_url(base.clone());
    let s = settings(&[("webhook_url", &format!("{base}/1/abc"))]);
    p.check(&s).await.expect("accepted");
    assert_eq!(rx.requests()[0].path, "/hook/1/abc");
    assert_eq!(refused(p.check(&s).await), "settings.webhook_url");
    unreachable(p.check(&s).await);
    let elsewhere = settings(&[("webhook_url", "http://169.254.169.254/latest")]);
    assert_eq!(refused(p.check(&elsewhere).await), "settings.webhook_url");
    assert_eq!(rx.requests().len(), 3, "no request leaves for another host");
}

#[tokio::test]
async fn calcom_checks_the_shape_only() {
    let p = crm_integrations::calcom::CalcomIntegration;
    p.check(&settings(&[
        ("webhook_secret", "a-long-secret"),
        ("booking_link", "https://cal.com/acme"),
    ]))
    .await
    .expect("accepted");
    assert_eq!(
        refused(p.check(&settings(&[("webhook_secret", "short")])).await),
        "settings.webhook_secret"
    );
    assert_eq!(
        refused(
            p.check(&settings(&[
                ("webhook_secret", "a-long-secret"),
                ("booking_link", "javascript:alert(1)")
            ]))
            .await
        ),
        "settings.booking_link"
    );
}
