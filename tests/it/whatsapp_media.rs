//! WhatsApp media received: fetched from a local stand-in of Meta's Graph API with
//! the workspace's token and stored as an attachment of the lead, linked from the
//! `message` activity; retried through the job queue while Graph fails, given up
//! when the media is gone. Both backends.

use std::time::Duration;

use crate::common::receiver::{Receiver, Reply};
use crate::common::{hmac_hex, TestDb};
use crm::auth::Actor;
use crm::integrations::whatsapp::{receive_for, WhatsApp};
use crm::storage::FsStorage;
use crm::webhooks::{CancellationToken, DispatcherConfig};
use crm::{Crm, LeadId, WorkspaceId};
use serde_json::{json, Value};

conformance!(media_received_is_fetched_stored_and_linked);

const SECRET: &str = "app-secret";
const PDF: &str = "%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n";

fn json_reply(status: u16, v: Value) -> Reply {
    Reply::Status(
        status,
        vec![("content-type".into(), "application/json".into())],
        v.to_string(),
    )
}

/// Meta's webhook for one message from Ana to number 1065.
fn payload(message: Value) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001065", "phone_number_id": "1065"},
            "contacts": [{"wa_id": "34600111222", "profile": {"name": "Ana"}}],
            "messages": [message]}}]}]})
    .to_string()
    .into_bytes()
}

async fn receive(crm: &Crm, message: Value) {
    let body = payload(message);
    let signature = format!("sha256={}", hmac_hex(SECRET, &body));
    let leads = crm
        .workspace(WorkspaceId::DEFAULT)
        .leads()
        .with_actor("whatsapp");
    receive_for(&leads, SECRET, Some("1065"), Some(&signature), &body)
        .await
        .expect("received");
}

async fn lead_of(crm: &Crm) -> LeadId {
    crm.leads()
        .list(&crm::leads::LeadQuery::default())
        .await
        .expect("list")
        .items[0]
        .id
}

async fn media_received_is_fetched_stored_and_linked(db: &TestDb) {
    let dir = tempfile::tempdir().expect("dir");
    // Graph: the integration check, a failing first try, then the media's URL and
    // its bytes; then a media id Meta no longer has.
    let graph = Receiver::start(
        vec![
            json_reply(200, json!({"id": "1065"})),
            json_reply(500, json!({"error": {"message": "try later", "code": 2}})),
        ],
        Reply::Status(404, vec![], String::new()),
    )
    .await;
    let base = graph.url.clone();
    let crm = db
        .builder()
        .storage(FsStorage::new(dir.path()))
        .provider(WhatsApp::new().with_base_url(base.clone()))
        .connect()
        .await
        .expect("connect");
    crm.workspace(WorkspaceId::DEFAULT)
        .integrations()
        .save(
            Actor::App(None),
            "whatsapp",
            [
                ("access_token", "EAAG-ws"),
                ("phone_number_id", "1065"),
                ("app_secret", SECRET),
                ("verify_token", "v"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        )
        .await
        .expect("integration");

    receive(
        &crm,
        json!({"id": "wamid.DOC", "from": "34600111222", "timestamp": "1767258000",
            "type": "document", "document": {"id": "4471", "mime_type": "application/pdf",
            "filename": "contrato.pdf", "caption": "Mi contrato"}}),
    )
    .await;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM crm_jobs WHERE kind = 'media'")
            .await,
        1,
        "the capture queued the fetch"
    );

    let file_url = format!("{base}/file4471");
    graph.then(json_reply(
        200,
        json!({"messaging_product": "whatsapp", "url": file_url, "mime_type": "application/pdf",
            "sha256": "x", "file_size": PDF.len().to_string(), "id": "4471"}),
    ));
    graph.then(Reply::Status(
        200,
        vec![("content-type".into(), "application/pdf".into())],
        PDF.into(),
    ));

    let stop = CancellationToken::new();
    let cfg = DispatcherConfig {
        poll_interval: Duration::from_millis(20),
        schedule: vec![Duration::ZERO, Duration::from_millis(100)],
        jitter: 0.0,
        ..Default::default()
    };
    let handle = crm.start_dispatcher(cfg, stop.clone()).expect("dispatcher");
    let lead = lead_of(&crm).await;
    let files = crm.workspace(WorkspaceId::DEFAULT).attachments();
    let mut stored = Vec::new();
    for _ in 0..500 {
        stored = files.list(lead).await.expect("list");
        // Done when the file is stored and the message links it (the link is the
        // job's last write, after the file's).
        let linked = crm
            .leads()
            .get(lead)
            .await
            .expect("lead")
            .activities
            .iter()
            .any(|a| {
                a.message
                    .as_ref()
                    .is_some_and(|m| m.attachment_id.is_some())
            });
        if !stored.is_empty() && linked {
            break;
        }
        // The retry is due on crm's clock, which the test moves.
        db.clock.advance(chrono::Duration::milliseconds(200));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let [file] = stored.as_slice() else {
        panic!(
            "expected the document stored once, got {stored:?}; attempts: {}; graph: {:?}",
            db.scalar_text("SELECT COALESCE(MAX(error_kind), 'none') FROM crm_delivery_attempts")
                .await,
            graph
                .requests()
                .iter()
                .map(|r| r.path.clone())
                .collect::<Vec<_>>()
        );
    };
    assert_eq!(
        (
            file.name.as_str(),
            file.content_type.as_str(),
            file.uploaded_by.as_deref()
        ),
        ("contrato.pdf", "application/pdf", Some("whatsapp"))
    );
    assert_eq!(
        &files.read(lead, file.id).await.expect("read")[..],
        PDF.as_bytes()
    );
    // The message links its file (which has the activity's id).
    let detail = crm.leads().get(lead).await.expect("lead");
    let message = detail
        .activities
        .iter()
        .find_map(|a| a.message.as_ref().map(|m| (a.id, m.clone())))
        .expect("message activity");
    assert_eq!(message.1.attachment_id, Some(file.id));
    assert_eq!(message.0 .0, file.id.0);
    let asked: Vec<(String, String)> = graph
        .requests()
        .into_iter()
        .skip(1)
        .map(|r| {
            (
                r.path,
                r.headers.get("authorization").cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        asked,
        [
            ("/hook/4471".to_owned(), "Bearer EAAG-ws".to_owned()),
            ("/hook/4471".to_owned(), "Bearer EAAG-ws".to_owned()),
            ("/hook/file4471".to_owned(), "Bearer EAAG-ws".to_owned()),
        ],
        "one failed try, then the media and its file, with the workspace's token"
    );

    // Media Meta no longer has: one try, then the job gives up; nothing stored.
    receive(
        &crm,
        json!({"id": "wamid.IMG", "from": "34600111222", "timestamp": "1767258100",
            "type": "image", "image": {"id": "9999", "mime_type": "image/jpeg"}}),
    )
    .await;
    let failed = "SELECT COUNT(*) FROM crm_delivery_attempts WHERE kind = 'media' \
        AND error_kind LIKE '%404%' AND next_attempt_at IS NULL";
    for _ in 0..500 {
        if db.scalar_i64(failed).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(db.scalar_i64(failed).await, 1, "the 404 is final");
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM crm_delivery_attempts WHERE kind = 'media'")
            .await,
        3
    );
    assert_eq!(files.list(lead).await.expect("list").len(), 1);
    stop.cancel();
    let _ = handle.await;

    // Deleting the lead deletes the fetched file's bytes.
    crm.leads().delete(lead).await.expect("delete");
    let left: Vec<_> = walk(dir.path());
    assert!(left.is_empty(), "{left:?}");

    // Without storage, media is not fetched: no job is queued.
    let plain = db
        .builder()
        .provider(WhatsApp::new().with_base_url(base))
        .connect()
        .await
        .expect("connect");
    receive(
        &plain,
        json!({"id": "wamid.AUD", "from": "34600111333", "timestamp": "1767258200",
            "type": "audio", "audio": {"id": "5555", "mime_type": "audio/ogg"}}),
    )
    .await;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM crm_jobs WHERE kind = 'media' AND status = 'pending'")
            .await,
        0
    );
    plain.close().await;
    crm.close().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
