//! The Discord plugin against a local server that records the exact request and plays
//! Discord's answers.

#[path = "../../tests/common/receiver.rs"]
mod receiver;

use std::time::Duration;

use chrono::TimeZone;
use crm_core::events::EventType;
use crm_core::leads::LeadStatus;
use crm_core::notify::{Notification, Notifier, Outcome};
use crm_core::{ChannelId, EventId};
use crm_integrations::discord::Discord;
use receiver::{Receiver, Reply};
use serde_json::{json, Value};

fn notification(fields: Vec<(String, String)>) -> Notification {
    Notification {
        event_id: EventId::new(),
        channel_id: ChannelId::new(),
        event_type: EventType::LeadCreated,
        title: "New lead: Ana López".into(),
        fields,
        status: Some(LeadStatus::Won),
        timestamp: chrono::Utc
            .with_ymd_and_hms(2026, 11, 22, 10, 30, 0)
            .single()
            .expect("date"),
        payload: json!({}),
    }
}

fn base(rx: &Receiver) -> String {
    rx.url.replace("/hook", "/api/webhooks/")
}

async fn send(rx: &Receiver, n: &Notification) -> Outcome {
    let plugin = Discord::new().with_base_url(base(rx));
    let config = json!({ "webhook_url": format!("{}123/tok-en", base(rx)) });
    plugin.send(&config, n).await
}

#[tokio::test]
async fn posts_one_embed_with_the_exact_shape() {
    let rx = Receiver::start(vec![], Reply::Status(200, vec![], "{\"id\":\"1\"}".into())).await;
    let n = notification(vec![
        ("Email".into(), "ana@example.com".into()),
        ("Company".into(), "<Acme & Co>".into()),
        ("Message".into(), "x".repeat(50)),
    ]);
    assert_eq!(send(&rx, &n).await, Outcome::Sent);
    let req = &rx.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/webhooks/123/tok-en?wait=true");
    assert_eq!(req.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(
        body,
        json!({
            "embeds": [{
                "title": "New lead: Ana López",
                "color": 0x2ecc71,
                "fields": [
                    { "name": "Email", "value": "ana@example.com", "inline": true },
                    { "name": "Company", "value": "<Acme & Co>", "inline": true },
                    { "name": "Message", "value": "x".repeat(50), "inline": false },
                ],
                "timestamp": "2026-11-22T10:30:00.000Z",
            }],
            "allowed_mentions": { "parse": [] },
        })
    );
}

#[tokio::test]
async fn limits_are_kept_by_truncating() {
    let rx = Receiver::start(vec![], Reply::Status(204, vec![], String::new())).await;
    let mut n = notification(
        (0..30)
            .map(|i| (format!("Field {i}"), "y".repeat(2000)))
            .collect(),
    );
    n.title = "t".repeat(300);
    assert_eq!(send(&rx, &n).await, Outcome::Sent);
    let body: Value = serde_json::from_slice(&rx.requests()[0].body).expect("json");
    let embed = &body["embeds"][0];
    let title = embed["title"].as_str().expect("title");
    assert_eq!(title.chars().count(), 256);
    assert!(title.ends_with('…'));
    let fields = embed["fields"].as_array().expect("fields");
    assert!(fields.len() <= 25);
    let mut total = title.chars().count();
    for f in fields {
        let v = f["value"].as_str().expect("value");
        assert!(v.chars().count() <= 1024);
        total += v.chars().count() + f["name"].as_str().expect("name").chars().count();
    }
    assert!(total <= 6000, "{total}");
}

#[tokio::test]
async fn answers_become_outcomes() {
    let n = notification(vec![("Email".into(), "a@b.co".into())]);
    let limited = Receiver::start(
        vec![],
        Reply::Status(
            429,
            vec![],
            "{\"message\":\"You are being rate limited.\",\"retry_after\":1.5,\"global\":false}"
                .into(),
        ),
    )
    .await;
    assert_eq!(
        send(&limited, &n).await,
        Outcome::Retry {
            after: Some(Duration::from_millis(1500)),
            reason: "429 rate limited".into()
        }
    );
    let garbled = Receiver::start(vec![], Reply::Status(429, vec![], "not json".into())).await;
    assert!(matches!(
        send(&garbled, &n).await,
        Outcome::Retry { after: None, .. }
    ));
    let down = Receiver::start(vec![], Reply::Status(502, vec![], "".into())).await;
    assert!(matches!(
        send(&down, &n).await,
        Outcome::Retry { after: None, .. }
    ));
    let gone = Receiver::start(
        vec![],
        Reply::Status(
            404,
            vec![],
            "{\"message\":\"Unknown Webhook\",\"code\":10015}".into(),
        ),
    )
    .await;
    assert!(
        matches!(send(&gone, &n).await, Outcome::Permanent(m) if m.contains("Unknown Webhook"))
    );
    let reset = Receiver::start(vec![], Reply::Reset).await;
    assert!(matches!(send(&reset, &n).await, Outcome::Retry { .. }));
}

#[tokio::test]
async fn configuration_is_checked() {
    let plugin = Discord::new();
    assert!(plugin
        .check_config(&json!({ "webhook_url": "https://discord.com/api/webhooks/1/abc" }))
        .is_ok());
    for bad in [
        json!({}),
        json!({ "webhook_url": "https://evil.example/api/webhooks/1/abc" }),
        json!({ "webhook_url": 5 }),
        json!({ "webhook_url": "https://discord.com/api/webhooks/" }),
    ] {
        let errs = plugin.check_config(&bad).expect_err("must fail");
        assert_eq!(errs[0].field, "config.webhook_url", "{bad}");
    }
    // A URL outside the base is never posted to, even if stored.
    let n = notification(vec![]);
    assert!(matches!(
        plugin
            .send(&json!({ "webhook_url": "http://127.0.0.1:9/x" }), &n)
            .await,
        Outcome::Permanent(_)
    ));
}
