//! The Resend plugin against a local stand-in that records the exact request.

#[path = "../../tests/common/receiver.rs"]
mod receiver;

use std::time::Duration;

use chrono::TimeZone;
use crm_core::auth::{AuthMail, Mailer, User};
use crm_core::events::EventType;
use crm_core::leads::{Email, LeadStatus};
use crm_core::notify::{Notification, Notifier, Outcome};
use crm_core::{ChannelId, EventId, SecretString, UserId, WorkspaceId};
use crm_integrations::email::Resend;
use receiver::{Receiver, Reply};
use serde_json::{json, Value};

fn notification() -> Notification {
    Notification {
        event_id: EventId::new(),
        channel_id: ChannelId::new(),
        event_type: EventType::LeadCreated,
        title: "New lead: Ana <López>".into(),
        fields: vec![("Company".into(), "<script>x</script> & Co".into())],
        status: Some(LeadStatus::New),
        timestamp: chrono::Utc
            .with_ymd_and_hms(2026, 11, 22, 10, 30, 0)
            .single()
            .expect("date"),
        payload: json!({}),
    }
}

fn plugin(rx: &Receiver) -> Resend {
    Resend::new("re_test_key", "CRM <crm@example.com>").with_base_url(rx.url.replace("/hook", ""))
}

#[tokio::test]
async fn notifications_are_escaped_and_idempotent() {
    let rx = Receiver::start(
        vec![],
        Reply::Status(200, vec![], "{\"id\":\"49a3999c\"}".into()),
    )
    .await;
    let n = notification();
    let config = json!({ "to": ["sales@example.com"] });
    assert_eq!(
        Notifier::send(&plugin(&rx), &config, &n).await,
        Outcome::Sent
    );
    assert_eq!(
        Notifier::send(&plugin(&rx), &config, &n).await,
        Outcome::Sent
    );
    let reqs = rx.requests();
    let req = &reqs[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/emails");
    assert_eq!(req.headers["authorization"], "Bearer re_test_key");
    assert!(req.headers["user-agent"].starts_with("crm/"));
    let key = format!("crm-notification/{}/{}", n.event_id, n.channel_id);
    assert_eq!(req.headers["idempotency-key"], key);
    assert_eq!(
        reqs[1].headers["idempotency-key"], key,
        "a retry carries the same key"
    );
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(body["from"], "CRM <crm@example.com>");
    assert_eq!(body["to"], json!(["sales@example.com"]));
    assert_eq!(body["subject"], "New lead: Ana <López>");
    let html = body["html"].as_str().expect("html");
    assert!(
        html.contains("New lead: Ana &lt;López&gt;")
            && html.contains("&lt;script&gt;x&lt;/script&gt; &amp; Co")
    );
    assert!(!html.contains("<script>"));
    assert_eq!(
        body["text"],
        "New lead: Ana <López>\n\nCompany: <script>x</script> & Co\n"
    );
}

#[tokio::test]
async fn answers_become_outcomes() {
    let n = notification();
    let config = json!({ "to": ["a@example.com"] });
    let limited = Receiver::start(vec![], Reply::Status(429, vec![("retry-after".into(), "7".into())], "{\"statusCode\":429,\"message\":\"Too many requests\",\"name\":\"rate_limit_exceeded\"}".into())).await;
    assert!(
        matches!(Notifier::send(&plugin(&limited), &config, &n).await, Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
    );
    let invalid = Receiver::start(vec![], Reply::Status(422, vec![], "{\"statusCode\":422,\"message\":\"Invalid `from` field.\",\"name\":\"validation_error\"}".into())).await;
    assert!(
        matches!(Notifier::send(&plugin(&invalid), &config, &n).await, Outcome::Permanent(m) if m.contains("Invalid `from` field"))
    );
    let down = Receiver::start(vec![], Reply::Status(503, vec![], "not json".into())).await;
    assert!(matches!(
        Notifier::send(&plugin(&down), &config, &n).await,
        Outcome::Retry { after: None, .. }
    ));
    let p = Resend::new("k", "f@example.com");
    assert!(p.check_config(&json!({ "to": ["ok@example.com"] })).is_ok());
    for bad in [
        json!({}),
        json!({ "to": [] }),
        json!({ "to": ["nope"] }),
        json!({ "to": "a@example.com" }),
    ] {
        assert_eq!(
            p.check_config(&bad).expect_err("must fail")[0].field,
            "config.to",
            "{bad}"
        );
    }
    assert!(!format!("{p:?}").contains("re_"), "Debug hides the key");
}

#[tokio::test]
async fn auth_mails_carry_the_link_and_hide_nothing_else() {
    let rx = Receiver::ok().await;
    let mailer = plugin(&rx).with_links(
        "https://app.example.com/reset?token={token}",
        "https://app.example.com/verify?token={token}",
    );
    let user = User {
        id: UserId::new(),
        workspace_id: WorkspaceId::DEFAULT,
        email: Email::parse("ana@example.com").expect("email"),
        display_name: "Ana <3".into(),
        role: crm_core::auth::Role::Member,
        email_verified_at: None,
        disabled_at: None,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    let token = "tok_abcdefghijklmnopqrstuvwxyz0123456789ABCDE";
    let expires_at = chrono::Utc
        .with_ymd_and_hms(2026, 11, 22, 11, 0, 0)
        .single()
        .expect("date");
    Mailer::send(
        &mailer,
        AuthMail::PasswordReset {
            user,
            token: SecretString::from(token.to_string()),
            expires_at,
        },
    )
    .await
    .expect("sent");
    let req = &rx.requests()[0];
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(body["to"], json!(["ana@example.com"]));
    assert_eq!(body["subject"], "Reset your password");
    assert!(body["html"]
        .as_str()
        .expect("html")
        .contains(&format!("https://app.example.com/reset?token={token}")));
    assert!(body["html"]
        .as_str()
        .expect("html")
        .contains("Hello Ana &lt;3"));
    assert!(body["text"]
        .as_str()
        .expect("text")
        .contains("before 2026-11-22 11:00 UTC"));
    assert!(
        !req.headers["idempotency-key"].contains(token),
        "the key is a hash, not the token"
    );
}
