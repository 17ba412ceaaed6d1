//! WhatsApp: inbound payloads (the shared vector, redeliveries, bad signatures, odd
//! shapes) into a real SQLite store, and outbound messages against a local Graph API
//! stand-in that records the exact request.

#[path = "../../tests/common/receiver.rs"]
mod receiver;

use chrono::TimeZone;
use crm_core::events::EventType;
use crm_core::leads::{ActivityKind, LeadQuery, LeadStatus};
use crm_core::notify::{Notification, Notifier, Outcome};
use crm_core::{ChannelId, Crm, Error, EventId};
use crm_integrations::whatsapp::{handshake, receive, WhatsApp};
use hmac::{Hmac, Mac};
use receiver::{Receiver, Reply};
use serde_json::{json, Value};

fn vector() -> (String, String, String) {
    let path = format!(
        "{}/../tests/vectors/whatsapp.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("vectors")).expect("json");
    let c = &doc["cases"][0];
    let s = |k: &str| c[k].as_str().expect("field").to_owned();
    (s("app_secret"), s("body"), s("header"))
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
    m.update(body);
    let hex: String = m
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn crm() -> (Crm, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("wa.db").display());
    (Crm::connect(&url).await.expect("connect"), dir)
}

#[tokio::test]
async fn inbound_messages_become_leads_once() {
    let (crm, _dir) = crm().await;
    let (secret, body, header) = vector();
    let got = receive(&crm.leads(), &secret, Some(&header), body.as_bytes())
        .await
        .expect("receive");
    assert_eq!(got.captured.len(), 1);
    let lead = crm.leads().get(got.captured[0]).await.expect("lead");
    assert_eq!(lead.lead.name, "Ana Souza");
    assert_eq!(
        lead.lead.phone.as_ref().map(|p| p.as_str()),
        Some("+5511999990000")
    );
    assert_eq!(lead.lead.source.as_deref(), Some("whatsapp"));
    assert_eq!(lead.lead.status, LeadStatus::New);
    assert_eq!(lead.activities.len(), 1);
    assert_eq!(lead.activities[0].kind, ActivityKind::Message);

    // Meta redelivers: nothing changes.
    let again = receive(&crm.leads(), &secret, Some(&header), body.as_bytes())
        .await
        .expect("receive");
    assert_eq!((again.captured.len(), again.duplicates), (0, 1));
    assert_eq!(
        crm.leads()
            .get(got.captured[0])
            .await
            .expect("lead")
            .activities
            .len(),
        1
    );

    // A new message from the same number: the same lead, one more activity.
    let second = body
        .replace("wamid.TEST1", "wamid.TEST2")
        .replace("budget around 30k", "any news?");
    let r = receive(
        &crm.leads(),
        &secret,
        Some(&sign(&secret, second.as_bytes())),
        second.as_bytes(),
    )
    .await
    .expect("receive");
    assert_eq!(r.captured, got.captured);
    assert_eq!(
        crm.leads()
            .get(got.captured[0])
            .await
            .expect("lead")
            .activities
            .len(),
        2
    );

    // Status updates are accepted and ignored.
    let statuses = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"statuses":[{"id":"wamid.X","status":"delivered"}]}}]}]}).to_string();
    let r = receive(
        &crm.leads(),
        &secret,
        Some(&sign(&secret, statuses.as_bytes())),
        statuses.as_bytes(),
    )
    .await
    .expect("receive");
    assert_eq!((r.captured.len(), r.ignored), (0, 1));
}

#[tokio::test]
async fn bad_payloads_write_nothing() {
    let (crm, _dir) = crm().await;
    let (secret, body, header) = vector();
    for (sig, body) in [
        (Some(header.as_str()), body.replace("quote", "QUOTE")),
        (None, body.clone()),
        (Some("sha256=00"), body.clone()),
    ] {
        let err = receive(&crm.leads(), &secret, sig, body.as_bytes())
            .await
            .expect_err("must fail");
        assert!(matches!(err, Error::WebhookVerification(_)), "{err:?}");
    }
    for odd in ["not json", "{\"object\":\"page\",\"entry\":[]}", "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[{\"value\":{\"messages\":[{\"type\":\"text\"}]}}]}]}"] {
        let err = receive(&crm.leads(), &secret, Some(&sign(&secret, odd.as_bytes())), odd.as_bytes()).await.expect_err("must fail");
        assert!(matches!(err, Error::Validation { .. }), "{odd}: {err:?}");
    }
    assert!(crm
        .leads()
        .list(&LeadQuery::default())
        .await
        .expect("list")
        .items
        .is_empty());
}

#[test]
fn handshake_answers_only_the_right_token() {
    assert_eq!(
        handshake(Some("subscribe"), Some("tok"), Some("1158201444"), "tok").expect("ok"),
        "1158201444"
    );
    assert!(handshake(Some("subscribe"), Some("nope"), Some("1"), "tok").is_err());
    assert!(handshake(Some("unsubscribe"), Some("tok"), Some("1"), "tok").is_err());
    assert!(
        handshake(Some("subscribe"), Some(""), Some("1"), "").is_err(),
        "an empty verify token never matches"
    );
    assert!(
        handshake(Some("subscribe"), Some("  "), Some("1"), "  ").is_err(),
        "nor does a blank one"
    );
    assert!(handshake(Some("subscribe"), Some("tok "), Some("1"), "tok").is_err());
    assert!(handshake(Some("subscribe"), Some("to"), Some("1"), "tok").is_err());
}

fn notification() -> Notification {
    Notification {
        event_id: EventId::new(),
        channel_id: ChannelId::new(),
        event_type: EventType::LeadCreated,
        title: "New lead: Ana".into(),
        fields: vec![("Phone".into(), "+34600000000".into())],
        status: Some(LeadStatus::New),
        timestamp: chrono::Utc
            .with_ymd_and_hms(2026, 11, 22, 10, 30, 0)
            .single()
            .expect("date"),
        payload: json!({}),
    }
}

#[tokio::test]
async fn outbound_text_template_and_the_24_hour_window() {
    let rx = Receiver::start(
        vec![],
        Reply::Status(
            200,
            vec![],
            "{\"messages\":[{\"id\":\"wamid.OUT\"}]}".into(),
        ),
    )
    .await;
    let plugin = WhatsApp::new().with_base_url(rx.url.replace("/hook", ""));
    let config = json!({ "access_token": "EAAG-token", "phone_number_id": "1234567890", "to": "+34 600 000 000" });
    assert!(plugin.check_config(&config).is_ok());
    assert_eq!(plugin.send(&config, &notification()).await, Outcome::Sent);
    let req = &rx.requests()[0];
    assert_eq!(req.path, "/1234567890/messages");
    assert_eq!(req.headers["authorization"], "Bearer EAAG-token");
    let body: Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(
        body,
        json!({ "messaging_product": "whatsapp", "to": "34600000000", "type": "text", "text": { "preview_url": false, "body": "New lead: Ana\nPhone: +34600000000" } })
    );

    let with_template = json!({ "access_token": "t", "phone_number_id": "1", "to": "+34600000000", "template": { "name": "new_lead", "language": "en_US" } });
    assert_eq!(
        plugin.send(&with_template, &notification()).await,
        Outcome::Sent
    );
    let body: Value = serde_json::from_slice(&rx.requests()[1].body).expect("json");
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "new_lead");

    let window = Receiver::start(vec![], Reply::Status(400, vec![], "{\"error\":{\"message\":\"Re-engagement message\",\"type\":\"OAuthException\",\"code\":131047}}".into())).await;
    let p = WhatsApp::new().with_base_url(window.url.replace("/hook", ""));
    assert!(
        matches!(p.send(&config, &notification()).await, Outcome::Permanent(m) if m.contains("24 hours"))
    );
    let errs = plugin
        .check_config(&json!({ "phone_number_id": "abc", "to": "nope" }))
        .expect_err("must fail");
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["config.access_token", "config.phone_number_id", "config.to"]
    );
}

/// Issue 15, item 17: a batch whose second message crm refuses (a sender that is not a
/// phone number) failed after the first was written, so Meta redelivered the batch
/// for ever and the third message was never read. Each message is now written whole
/// or skipped, and a redelivery changes nothing.
#[tokio::test]
async fn a_batch_is_all_or_nothing_per_message() {
    let (crm, _dir) = crm().await;
    let secret = "batch-secret";
    let msg = |id: &str, from: &str, text: &str| json!({"from": from, "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": text}});
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "contacts": [{"wa_id": "5511999990001", "profile": {"name": "Bia"}}],
            "messages": [
                msg("wamid.1", "5511999990001", "first"),
                msg("wamid.2", "not-a-phone", "second"),
                msg("wamid.3", "5511999990003", "third"),
            ]
        }}]}]
    })
    .to_string();
    let header = sign(secret, body.as_bytes());
    let got = receive(&crm.leads(), secret, Some(&header), body.as_bytes())
        .await
        .expect("the batch is accepted");
    assert_eq!((got.captured.len(), got.duplicates, got.ignored), (2, 0, 1));
    let page = crm.leads().list(&Default::default()).await.expect("list");
    assert_eq!(page.items.len(), 2);
    for id in &got.captured {
        let d = crm.leads().get(*id).await.expect("lead");
        assert_eq!(d.activities.len(), 1, "lead and activity together");
    }

    let again = receive(&crm.leads(), secret, Some(&header), body.as_bytes())
        .await
        .expect("redelivery");
    assert_eq!(
        (again.captured.len(), again.duplicates, again.ignored),
        (0, 2, 1)
    );
    assert_eq!(
        crm.leads()
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );
}

#[tokio::test]
async fn media_is_fetched_with_the_token_only_from_meta_and_within_the_limit() {
    use crm_core::providers::Provider;
    let rx = Receiver::start(vec![], Reply::Status(404, vec![], String::new())).await;
    let base = rx.url.replace("/hook", "");
    let plugin = WhatsApp::new().with_base_url(base.clone());
    let settings: crm_core::providers::Settings = [("access_token", "EAAG-token")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let media = |url: &str, size: u64| {
        Reply::Status(
            200,
            vec![("content-type".into(), "application/json".into())],
            json!({"url": url, "mime_type": "application/pdf", "file_size": size}).to_string(),
        )
    };
    // Meta's answer names its own host: the file is read with the token.
    rx.then(media(&format!("{base}/file/7"), 8));
    rx.then(Reply::Status(200, vec![], "%PDF-1.7".into()));
    let got = plugin
        .fetch_media(&settings, "7", 100)
        .await
        .expect("fetched");
    assert_eq!(
        (&got.bytes[..], got.mime_type.as_deref()),
        (&b"%PDF-1.7"[..], Some("application/pdf"))
    );
    let asked: Vec<(String, String)> = rx
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.headers["authorization"].clone()))
        .collect();
    assert_eq!(
        asked,
        [
            ("/7".to_owned(), "Bearer EAAG-token".to_owned()),
            ("/file/7".to_owned(), "Bearer EAAG-token".to_owned()),
        ]
    );
    // Another host never sees the token: refused for good.
    rx.then(media("https://collector.example/steal", 8));
    let r = plugin.fetch_media(&settings, "8", 100).await;
    assert!(matches!(r, Err(Error::Provider(_))), "{r:?}");
    // Over the limit, by Meta's word or by the bytes.
    rx.then(media(&format!("{base}/file/9"), 1_000));
    assert!(matches!(
        plugin.fetch_media(&settings, "9", 100).await,
        Err(Error::TooLarge { limit: 100 })
    ));
    rx.then(media(&format!("{base}/file/10"), 8));
    rx.then(Reply::Status(200, vec![], "x".repeat(101)));
    assert!(matches!(
        plugin.fetch_media(&settings, "10", 100).await,
        Err(Error::TooLarge { limit: 100 })
    ));
    // Gone (404) is final; Graph failing is worth another try; a bad id never leaves.
    assert!(matches!(
        plugin.fetch_media(&settings, "11", 100).await,
        Err(Error::Provider(_))
    ));
    rx.then(Reply::Status(503, vec![], String::new()));
    assert!(matches!(
        plugin.fetch_media(&settings, "12", 100).await,
        Err(Error::Integration(_))
    ));
    let before = rx.requests().len();
    for bad in ["", "../me", "a/b", "x?y=1"] {
        assert!(matches!(
            plugin.fetch_media(&settings, bad, 100).await,
            Err(Error::Provider(_))
        ));
    }
    assert_eq!(rx.requests().len(), before);
}
