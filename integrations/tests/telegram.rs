//! The Telegram plugin against a local Bot API stand-in that records the exact request.

#[path = "../../tests/common/receiver.rs"]
mod receiver;

use std::time::Duration;

use chrono::TimeZone;
use crm_core::events::EventType;
use crm_core::leads::LeadStatus;
use crm_core::notify::{Notification, Notifier, Outcome};
use crm_core::{ChannelId, EventId};
use crm_integrations::telegram::{text, Telegram, MESSAGE_MAX};
use receiver::{Receiver, Reply};
use serde_json::{json, Value};

fn notification(fields: Vec<(String, String)>) -> Notification {
    Notification {
        event_id: EventId::new(),
        channel_id: ChannelId::new(),
        event_type: EventType::LeadCreated,
        title: "New lead: Ana <López>".into(),
        fields,
        status: Some(LeadStatus::New),
        timestamp: chrono::Utc
            .with_ymd_and_hms(2026, 11, 22, 10, 30, 0)
            .single()
            .expect("date"),
        payload: json!({}),
    }
}

const TOKEN: &str = "123456:ABC-def_GHI";

async fn send(rx: &Receiver, n: &Notification) -> Outcome {
    let plugin = Telegram::new().with_base_url(rx.url.replace("/hook", ""));
    plugin
        .send(&json!({ "bot_token": TOKEN, "chat_id": "-1001234" }), n)
        .await
}

#[tokio::test]
async fn sends_escaped_html_to_send_message() {
    let rx = Receiver::start(
        vec![],
        Reply::Status(
            200,
            vec![],
            "{\"ok\":true,\"result\":{\"message_id\":7}}".into(),
        ),
    )
    .await;
    let n = notification(vec![
        ("Company".into(), "<b>Acme</b> & Co".into()),
        ("Email".into(), "ana@example.com".into()),
    ]);
    assert_eq!(send(&rx, &n).await, Outcome::Sent);
    let req = &rx.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, format!("/bot{TOKEN}/sendMessage"));
    assert_eq!(req.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(
        body,
        json!({
            "chat_id": "-1001234",
            "text": "<b>New lead: Ana &lt;López&gt;</b>\n<b>Company:</b> &lt;b&gt;Acme&lt;/b&gt; &amp; Co\n<b>Email:</b> ana@example.com",
            "parse_mode": "HTML",
            "disable_web_page_preview": true,
        })
    );
}

#[test]
fn long_messages_stay_under_the_limit_without_cutting_markup() {
    let n = notification(
        (0..20)
            .map(|i| (format!("F{i}"), "<&>".repeat(400)))
            .collect(),
    );
    let t = text(&n);
    assert!(t.chars().count() <= MESSAGE_MAX, "{}", t.chars().count());
    assert!(t.ends_with("\n…"));
    assert_eq!(t.matches("<b>").count(), t.matches("</b>").count());
    assert!(!t.contains("&am\n") && !t.contains("&l\n"));
}

#[tokio::test]
async fn answers_become_outcomes() {
    let n = notification(vec![]);
    let limited = Receiver::start(vec![], Reply::Status(429, vec![], "{\"ok\":false,\"error_code\":429,\"description\":\"Too Many Requests: retry after 5\",\"parameters\":{\"retry_after\":5}}".into())).await;
    assert!(
        matches!(send(&limited, &n).await, Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(5))
    );
    let missing = Receiver::start(
        vec![],
        Reply::Status(
            400,
            vec![],
            "{\"ok\":false,\"error_code\":400,\"description\":\"Bad Request: chat not found\"}"
                .into(),
        ),
    )
    .await;
    assert!(
        matches!(send(&missing, &n).await, Outcome::Permanent(m) if m.contains("chat not found"))
    );
    let down = Receiver::start(
        vec![],
        Reply::Status(500, vec![], "<html>oops</html>".into()),
    )
    .await;
    assert!(matches!(
        send(&down, &n).await,
        Outcome::Retry { after: None, .. }
    ));
    let reset = Receiver::start(vec![], Reply::Reset).await;
    match send(&reset, &n).await {
        Outcome::Retry { reason, .. } => assert!(
            !reason.contains(TOKEN),
            "the token never reaches the attempt log"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn configuration_is_checked() {
    let p = Telegram::new();
    assert!(p
        .check_config(&json!({ "bot_token": TOKEN, "chat_id": -100123 }))
        .is_ok());
    assert!(p
        .check_config(&json!({ "bot_token": TOKEN, "chat_id": "@sales" }))
        .is_ok());
    let errs = p
        .check_config(&json!({ "bot_token": "nope" }))
        .expect_err("must fail");
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["config.bot_token", "config.chat_id"]);
    assert!(
        p.check_config(&json!({ "bot_token": "123:abc/../x", "chat_id": "1" }))
            .is_err(),
        "no path tricks in the token"
    );
}
