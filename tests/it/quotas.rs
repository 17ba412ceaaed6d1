//! Issue 15, item 16: a tenant cannot take more than its share of the operator's
//! resources (users, API keys, webhook endpoints, notification channels), nor turn
//! the operator's mail sender against strangers. On SQLite and Postgres.

use crate::common::TestDb;
use crm::api_keys::NewApiKey;
use crm::auth::{Actor, NewUser};
use crm::notify::{ChannelPatch, NewChannel, Notification, Notifier, Outcome, SendFuture};
use crm::webhooks::NewEndpoint;
use crm::{Crm, Error, FieldError, Quotas, WorkspaceId};
use serde_json::{json, Value};

conformance!(
    each_quota_stops_the_next_create_and_writes_nothing,
    concurrent_creates_cannot_overshoot_a_quota,
    mail_goes_only_to_the_workspaces_verified_users,
    a_disabled_user_gets_no_more_channel_mail,
);

/// A mail-sending channel plugin: it sends to `config.to`.
struct Mail;

impl Notifier for Mail {
    fn kind(&self) -> &'static str {
        "mail"
    }

    fn check_config(&self, config: &Value) -> Result<(), Vec<FieldError>> {
        match config["to"].as_array() {
            Some(_) => Ok(()),
            None => Err(vec![FieldError::new("config.to", "is required")]),
        }
    }

    fn email_recipients(&self, config: &Value) -> Vec<String> {
        config["to"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn send<'a>(&'a self, _: &'a Value, _: &'a Notification) -> SendFuture<'a> {
        Box::pin(async { Outcome::Sent })
    }
}

const SMALL: Quotas = Quotas {
    users: 2,
    api_keys: 2,
    webhook_endpoints: 2,
    notification_channels: 2,
    email_recipients: 2,
    attachment_bytes: 1 << 30,
};

async fn crm(db: &TestDb) -> Crm {
    db.builder()
        .quotas(SMALL)
        .notifier(Mail)
        .webhook_allow_networks(["127.0.0.1"])
        .connect()
        .await
        .expect("connect")
}

fn user(email: &str) -> NewUser {
    NewUser {
        email: email.into(),
        display_name: "U".into(),
        role: None,
        password: "Correct-Horse-9-Battery".into(),
    }
}

fn key(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        scopes: vec!["leads:read".into()],
        expires_at: None,
    }
}

fn endpoint() -> NewEndpoint {
    NewEndpoint {
        url: "http://127.0.0.1:9/hook".into(),
        ..Default::default()
    }
}

fn mail_channel(to: &[&str]) -> NewChannel {
    NewChannel {
        kind: "mail".into(),
        name: "Sales".into(),
        config: json!({ "to": to }),
        event_types: Vec::new(),
        enabled: None,
    }
}

fn quota_exceeded<T: std::fmt::Debug>(r: crm::Result<T>) {
    assert!(
        matches!(
            r,
            Err(Error::InvalidState {
                code: "quota_exceeded",
                ..
            })
        ),
        "{r:?}"
    );
}

async fn each_quota_stops_the_next_create_and_writes_nothing(db: &TestDb) {
    let crm = crm(db).await;
    let ws = crm.workspace(WorkspaceId::DEFAULT);
    let app = Actor::App(None);
    for i in 0..2 {
        ws.auth()
            .create_user(user(&format!("u{i}@example.com")), app)
            .await
            .expect("user");
        ws.api_keys().create(key("k")).await.expect("key");
        ws.webhooks().create(endpoint()).await.expect("endpoint");
    }
    quota_exceeded(ws.auth().create_user(user("u9@example.com"), app).await);
    quota_exceeded(ws.api_keys().create(key("k")).await);
    quota_exceeded(ws.webhooks().create(endpoint()).await);
    assert_eq!(db.count("crm_users").await, 2);
    assert_eq!(db.count("crm_api_keys").await, 2);
    assert_eq!(db.count("crm_webhook_endpoints").await, 2);

    // Channels: the two users verify their addresses, then two channels fit.
    let users = ws.auth().users().await.expect("users");
    for u in &users {
        db.execute(&format!(
            "UPDATE crm_users SET email_verified_at = created_at WHERE email = '{}'",
            u.email.as_str()
        ))
        .await;
    }
    for _ in 0..2 {
        ws.notifications()
            .create(mail_channel(&["u0@example.com"]))
            .await
            .expect("channel");
    }
    quota_exceeded(
        ws.notifications()
            .create(mail_channel(&["u0@example.com"]))
            .await,
    );
    assert_eq!(db.count("crm_notification_channels").await, 2);

    // A revoked key frees its place; a rotation is not a create, but a key is
    // rotated once: rotating the old one again would mint keys past the quota.
    let keys = ws.api_keys().list().await.expect("keys");
    ws.api_keys().revoke(keys[0].id).await.expect("revoke");
    ws.api_keys()
        .rotate(keys[1].id, None)
        .await
        .expect("a rotation is not a create");
    let again = ws.api_keys().rotate(keys[1].id, None).await;
    assert!(
        matches!(
            again,
            Err(Error::InvalidState {
                code: "key_rotated",
                ..
            })
        ),
        "{again:?}"
    );
    // An expired key frees its place too: once the rotated key's grace is over,
    // one more key fits (the replacement and the new one make two).
    quota_exceeded(ws.api_keys().create(key("k")).await);
    db.clock.advance(chrono::Duration::days(2));
    ws.api_keys()
        .create(key("k"))
        .await
        .expect("the expired key left room");
    // Another workspace has its own quota.
    let other = crm.create_workspace("Other").await.expect("workspace");
    crm.workspace(other)
        .api_keys()
        .create(key("k"))
        .await
        .expect("another workspace");
}

/// Ten creates at once against a quota of two: on Postgres each transaction counts
/// under the workspace lock, so exactly two get in.
async fn concurrent_creates_cannot_overshoot_a_quota(db: &TestDb) {
    let crm = crm(db).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let crm = crm.clone();
        tasks.push(tokio::spawn(async move {
            crm.workspace(WorkspaceId::DEFAULT)
                .api_keys()
                .create(key(&format!("k{i}")))
                .await
        }));
    }
    let mut made = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => made += 1,
            other => quota_exceeded(other),
        }
    }
    assert_eq!(made, 2);
    assert_eq!(db.count("crm_api_keys").await, 2);
}

/// Before, an email channel could send to any address: a tenant of an open
/// registration could make the operator's sender spam anyone.
async fn mail_goes_only_to_the_workspaces_verified_users(db: &TestDb) {
    let crm = crm(db).await;
    let ws = crm.workspace(WorkspaceId::DEFAULT);
    ws.auth()
        .create_user(user("ana@example.com"), Actor::App(None))
        .await
        .expect("user");
    let refused = |r: crm::Result<crm::notify::Channel>| {
        let e = r.expect_err("refused");
        assert!(
            e.field_errors().iter().any(|f| f.field == "config.to"),
            "{e:?}"
        );
    };
    // A stranger, and a user whose address is not verified yet.
    refused(
        ws.notifications()
            .create(mail_channel(&["victim@example.org"]))
            .await,
    );
    refused(
        ws.notifications()
            .create(mail_channel(&["ana@example.com"]))
            .await,
    );
    db.execute("UPDATE crm_users SET email_verified_at = created_at")
        .await;
    let c = ws
        .notifications()
        .create(mail_channel(&["ANA@example.com"]))
        .await
        .expect("a verified user");
    // More than the quota of recipients, and a stranger slipped in by an update.
    refused(
        ws.notifications()
            .create(mail_channel(&[
                "ana@example.com",
                "ana@example.com",
                "ana@example.com",
            ]))
            .await,
    );
    refused(
        ws.notifications()
            .update(
                c.id,
                ChannelPatch {
                    config: Some(json!({ "to": ["victim@example.org"] })),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(db.count("crm_notification_channels").await, 1);
}

/// The recipients are checked again at each send: a user disabled after the channel
/// was saved gets no more mail (the attempt fails for good and says why).
async fn a_disabled_user_gets_no_more_channel_mail(db: &TestDb) {
    let crm = crm(db).await;
    let ws = crm.workspace(WorkspaceId::DEFAULT);
    let ana = ws
        .auth()
        .create_user(user("ana@example.com"), Actor::App(None))
        .await
        .expect("user");
    db.execute("UPDATE crm_users SET email_verified_at = created_at")
        .await;
    let c = ws
        .notifications()
        .create(mail_channel(&["ana@example.com"]))
        .await
        .expect("channel");
    ws.auth()
        .disable_user(ana.id, Actor::App(None))
        .await
        .expect("disable");
    ws.leads()
        .create(crm::leads::NewLead {
            name: "Lead".into(),
            email: Some("lead@example.com".into()),
            ..Default::default()
        })
        .await
        .expect("lead");
    let stop = crm::webhooks::CancellationToken::new();
    let handle = crm
        .start_dispatcher(
            crm::webhooks::DispatcherConfig {
                poll_interval: std::time::Duration::from_millis(20),
                ..Default::default()
            },
            stop.clone(),
        )
        .expect("dispatcher");
    let mut attempts = Vec::new();
    for _ in 0..500 {
        attempts = ws
            .notifications()
            .attempts(c.id, None, 10)
            .await
            .expect("attempts");
        if !attempts.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.cancel();
    handle.await.expect("stops");
    let a = attempts.first().expect("an attempt");
    assert!(
        a.error_kind
            .as_deref()
            .is_some_and(|e| e.contains("ana@example.com")),
        "{a:?}"
    );
    assert_eq!(a.next_attempt_at, None, "no retry");
}
