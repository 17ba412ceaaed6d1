//! Notification channels through the shared job queue, with a plugin written here that
//! checks its configuration and answers as its configuration says.

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use crate::common::TestDb;
use chrono::Duration;
use crm::leads::NewLead;
use crm::notify::{ChannelPatch, NewChannel, Notification, Notifier, Outcome, SendFuture};
use crm::webhooks::{CancellationToken, DispatcherConfig};
use crm::{ChannelId, Crm, Error, FieldError, WorkspaceId};
use serde_json::{json, Value};

conformance!(
    channels_check_and_seal_their_configuration,
    a_lead_event_notifies_matching_channels,
    retries_follow_the_plugin_and_permanent_failures_stop,
    a_slow_channel_does_not_hold_up_the_others,
    two_changes_to_a_channel_both_stay,
);

/// Records what it sent, per chat id.
#[derive(Clone, Default)]
struct TestPlugin(Arc<Mutex<Vec<(String, Notification)>>>);

impl Notifier for TestPlugin {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn check_config(&self, config: &Value) -> Result<(), Vec<FieldError>> {
        match config["chat_id"].as_str() {
            Some(id) if !id.is_empty() => Ok(()),
            _ => Err(vec![FieldError::new("config.chat_id", "is required")]),
        }
    }

    fn send<'a>(&'a self, config: &'a Value, n: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            let chat = config["chat_id"].as_str().unwrap_or_default().to_owned();
            match config["mode"].as_str().unwrap_or("ok") {
                "permanent" => Outcome::Permanent("chat not found".into()),
                "retry" => Outcome::Retry {
                    after: Some(StdDuration::from_secs(30)),
                    reason: "429".into(),
                },
                "slow" => {
                    tokio::time::sleep(StdDuration::from_secs(2)).await;
                    self.0.lock().expect("lock").push((chat, n.clone()));
                    Outcome::Sent
                }
                _ => {
                    self.0.lock().expect("lock").push((chat, n.clone()));
                    Outcome::Sent
                }
            }
        })
    }
}

impl TestPlugin {
    fn sent(&self, chat: &str) -> Vec<Notification> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|(c, _)| c == chat)
            .map(|(_, n)| n.clone())
            .collect()
    }

    async fn wait(&self, chat: &str, n: usize) -> Vec<Notification> {
        for _ in 0..1000 {
            let got = self.sent(chat);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
        panic!("{chat}: expected {n} notifications");
    }
}

async fn setup(db: &TestDb) -> (Crm, TestPlugin) {
    let plugin = TestPlugin::default();
    let crm = db
        .builder()
        .notifier(plugin.clone())
        .connect()
        .await
        .expect("connect");
    (crm, plugin)
}

fn channel(chat: &str, mode: &str, types: &[&str]) -> NewChannel {
    NewChannel {
        kind: "test".into(),
        name: format!("chat {chat}"),
        config: json!({ "chat_id": chat, "mode": mode, "token": "secret-token-123" }),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        enabled: None,
    }
}

fn dispatcher(crm: &Crm) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let cfg = DispatcherConfig {
        poll_interval: StdDuration::from_millis(20),
        jitter: 0.0,
        ..Default::default()
    };
    let handle = crm.start_dispatcher(cfg, stop.clone()).expect("start");
    (stop, handle)
}

async fn lead(crm: &Crm, email: &str) {
    crm.leads()
        .create(NewLead {
            name: "Ana López".into(),
            email: Some(email.into()),
            company: Some("<Acme & Co>".into()),
            ..Default::default()
        })
        .await
        .expect("lead");
}

async fn attempts(crm: &Crm, id: ChannelId, n: usize) -> Vec<crm::webhooks::Attempt> {
    for _ in 0..1000 {
        let got = crm
            .workspace(WorkspaceId::DEFAULT)
            .notifications()
            .attempts(id, None, 100)
            .await
            .expect("attempts");
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    panic!("expected {n} attempts");
}

async fn channels_check_and_seal_their_configuration(db: &TestDb) {
    let (crm, _) = setup(db).await;
    // Issue 15, item 22: channel changes name their actor, like every admin change.
    let service = crm
        .workspace(WorkspaceId::DEFAULT)
        .notifications()
        .with_actor("user:admin-1");
    let err = service
        .create(NewChannel {
            kind: "test".into(),
            name: " ".into(),
            config: json!({}),
            event_types: vec!["lead.nope".into()],
            enabled: None,
        })
        .await
        .expect_err("must fail");
    let fields: Vec<&str> = err
        .field_errors()
        .iter()
        .map(|f| f.field.as_str())
        .collect();
    assert_eq!(fields, ["config.chat_id", "name", "event_types[0]"]);
    let err = service
        .create(NewChannel {
            kind: "pigeon".into(),
            ..channel("1", "ok", &[])
        })
        .await
        .expect_err("must fail");
    assert_eq!(err.field_errors()[0].field, "kind");
    assert_eq!(db.count("crm_notification_channels").await, 0);

    let c = service
        .create(channel("42", "ok", &[]))
        .await
        .expect("create");
    assert_eq!(
        c.event_types,
        ["lead.created"],
        "channels default to new leads"
    );
    assert_eq!(
        service.config(c.id).await.expect("config")["token"],
        "secret-token-123"
    );
    assert!(!serde_json::to_string(&service.list().await.expect("list"))
        .expect("json")
        .contains("secret-token-123"));
    db.execute("CREATE TABLE configs AS SELECT config FROM crm_notification_channels")
        .await;
    assert!(
        !db.scalar_text("SELECT config FROM configs")
            .await
            .contains("secret-token-123"),
        "sealed at rest"
    );

    let bad = service
        .update(
            c.id,
            ChannelPatch {
                config: Some(json!({ "mode": "ok" })),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(bad, Err(Error::Validation { .. })));
    let renamed = service
        .update(
            c.id,
            ChannelPatch {
                name: Some("Sales chat".into()),
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(
        (renamed.name.as_str(), renamed.enabled),
        ("Sales chat", false)
    );
    assert_eq!(
        service.config(c.id).await.expect("config")["chat_id"],
        "42",
        "config kept"
    );
    service.delete(c.id).await.expect("delete");
    assert!(matches!(
        service.get(c.id).await,
        Err(Error::NotFound { .. })
    ));
    let log = crm
        .workspace(WorkspaceId::DEFAULT)
        .audit_log(None, 10)
        .await
        .expect("audit");
    let actions: Vec<&str> = log.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "notification_channel.created",
            "notification_channel.updated",
            "notification_channel.deleted"
        ]
    );
    assert!(
        log.iter()
            .all(|a| a.actor.as_deref() == Some("user:admin-1")),
        "{log:?}"
    );
}

async fn a_lead_event_notifies_matching_channels(db: &TestDb) {
    let (crm, plugin) = setup(db).await;
    let service = crm.workspace(WorkspaceId::DEFAULT).notifications();
    let created_only = service
        .create(channel("new", "ok", &["lead.created"]))
        .await
        .expect("create");
    service
        .create(channel("deleted", "ok", &["lead.deleted"]))
        .await
        .expect("create");
    service
        .create(NewChannel {
            enabled: Some(false),
            ..channel("off", "ok", &["*"])
        })
        .await
        .expect("create");
    let (stop, handle) = dispatcher(&crm);
    lead(&crm, "ana@example.com").await;

    let got = plugin.wait("new", 1).await;
    assert_eq!(got[0].title, "New lead: Ana López");
    assert!(
        got[0]
            .fields
            .contains(&("Company".to_string(), "<Acme & Co>".to_string())),
        "values reach the plugin unescaped"
    );
    assert!(got[0]
        .fields
        .contains(&("Email".to_string(), "ana@example.com".to_string())));
    let a = attempts(&crm, created_only.id, 1).await;
    assert_eq!(
        (a[0].kind.as_str(), a[0].error_kind.as_deref()),
        ("notification", None)
    );
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert!(plugin.sent("deleted").is_empty() && plugin.sent("off").is_empty());
    assert_eq!(plugin.sent("new").len(), 1, "exactly one");

    service.test(created_only.id).await.expect("test-send");
    let got = plugin.wait("new", 2).await;
    assert_eq!(got[1].title, "Test notification from crm");
    stop.cancel();
    handle.await.expect("stop");
}

async fn retries_follow_the_plugin_and_permanent_failures_stop(db: &TestDb) {
    let (crm, _) = setup(db).await;
    let service = crm.workspace(WorkspaceId::DEFAULT).notifications();
    let retry = service
        .create(channel("r", "retry", &["lead.created"]))
        .await
        .expect("create");
    let dead = service
        .create(channel("p", "permanent", &["lead.created"]))
        .await
        .expect("create");
    let (stop, handle) = dispatcher(&crm);
    lead(&crm, "ana@example.com").await;
    let t0 = crm.now();
    let r = attempts(&crm, retry.id, 1).await;
    assert_eq!(r[0].error_kind.as_deref(), Some("429"));
    assert_eq!(
        r[0].next_attempt_at,
        Some(t0 + Duration::seconds(30)),
        "the provider's hint"
    );
    let p = attempts(&crm, dead.id, 1).await;
    assert_eq!(
        (p[0].error_kind.as_deref(), p[0].next_attempt_at),
        (Some("chat not found"), None)
    );
    db.clock.advance(Duration::seconds(30));
    let r = attempts(&crm, retry.id, 2).await;
    assert_eq!(r[1].attempt, 2);
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert_eq!(
        attempts(&crm, dead.id, 1).await.len(),
        1,
        "a permanent failure is not retried"
    );
    assert_eq!(
        db.count("crm_jobs WHERE kind = 'notification' AND status = 'failed'")
            .await,
        1
    );
    stop.cancel();
    handle.await.expect("stop");
}

async fn a_slow_channel_does_not_hold_up_the_others(db: &TestDb) {
    let (crm, plugin) = setup(db).await;
    let service = crm.workspace(WorkspaceId::DEFAULT).notifications();
    service
        .create(channel("slow", "slow", &["lead.created"]))
        .await
        .expect("create");
    service
        .create(channel("fast", "ok", &["lead.created"]))
        .await
        .expect("create");
    let (stop, handle) = dispatcher(&crm);
    lead(&crm, "ana@example.com").await;
    plugin.wait("fast", 1).await;
    assert!(
        plugin.sent("slow").is_empty(),
        "the fast channel was served while the slow one was still sending"
    );
    plugin.wait("slow", 1).await;
    stop.cancel();
    handle.await.expect("stop");
}

/// End to end with the provider plugins: a lead created → the Discord, Telegram and
/// email channels each receive exactly one well-formed message, while a channel whose
/// provider hangs does not hold them up.
#[cfg(all(feature = "discord", feature = "telegram", feature = "email"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_each_receive_one_message_per_new_lead() {
    use crate::common::receiver::Receiver;
    use crm::integrations::{discord::Discord, email::Resend, telegram::Telegram};

    let db = TestDb::sqlite().await;
    let (discord, telegram, resend) = (
        Receiver::ok().await,
        Receiver::start(
            vec![],
            crate::common::receiver::Reply::Status(200, vec![], "{\"ok\":true}".into()),
        )
        .await,
        Receiver::ok().await,
    );
    let discord_base = discord.url.replace("/hook", "/api/webhooks/");
    let slow = TestPlugin::default();
    let crm = db
        .builder()
        .notifier(Discord::new().with_base_url(&discord_base))
        .notifier(Telegram::new().with_base_url(telegram.url.replace("/hook", "")))
        .notifier(
            Resend::new("re_key", "CRM <crm@example.com>")
                .with_base_url(resend.url.replace("/hook", "")),
        )
        .notifier(slow.clone())
        .connect()
        .await
        .expect("connect");
    let service = crm.workspace(WorkspaceId::DEFAULT).notifications();
    // Mail goes only to the workspace's verified users.
    crm.workspace(WorkspaceId::DEFAULT)
        .auth()
        .create_user(
            crm::auth::NewUser {
                email: "sales@example.com".into(),
                display_name: "Sales".into(),
                role: None,
                password: "Correct-Horse-9-Battery".into(),
            },
            crm::auth::Actor::App(None),
        )
        .await
        .expect("user");
    db.execute("UPDATE crm_users SET email_verified_at = created_at")
        .await;
    for (kind, config) in [
        (
            "discord",
            json!({ "webhook_url": format!("{discord_base}1/token") }),
        ),
        (
            "telegram",
            json!({ "bot_token": "123:abc", "chat_id": "-100" }),
        ),
        ("email", json!({ "to": ["sales@example.com"] })),
        ("test", json!({ "chat_id": "down", "mode": "slow" })),
    ] {
        let c = NewChannel {
            kind: kind.into(),
            name: kind.into(),
            config,
            event_types: vec!["lead.created".into()],
            enabled: None,
        };
        service.create(c).await.expect("channel");
    }
    let (stop, handle) = dispatcher(&crm);
    lead(&crm, "ana@example.com").await;
    let d = discord.wait_for(1).await[0].clone();
    let t = telegram.wait_for(1).await[0].clone();
    let e = resend.wait_for(1).await[0].clone();
    assert!(
        slow.sent("down").is_empty(),
        "the hanging provider is still sending"
    );
    let d: Value = serde_json::from_slice(&d.body).expect("json");
    assert_eq!(d["embeds"][0]["title"], "New lead: Ana López");
    let t: Value = serde_json::from_slice(&t.body).expect("json");
    assert!(t["text"]
        .as_str()
        .expect("text")
        .contains("&lt;Acme &amp; Co&gt;"));
    let e: Value = serde_json::from_slice(&e.body).expect("json");
    assert_eq!(e["subject"], "New lead: Ana López");
    tokio::time::sleep(StdDuration::from_millis(150)).await;
    assert_eq!(
        (
            discord.requests().len(),
            telegram.requests().len(),
            resend.requests().len()
        ),
        (1, 1, 1)
    );
    slow.wait("down", 1).await;
    stop.cancel();
    handle.await.expect("stop");
}

/// Issue 14, item 4: `update` read the channel, then wrote the whole row back, so a
/// rename racing a disable (another admin, another process) switched the channel back
/// on. The disable is held open in a transaction while the rename runs.
async fn two_changes_to_a_channel_both_stay(db: &TestDb) {
    let (crm, _plugin) = setup(db).await;
    let service = crm.workspace(WorkspaceId::DEFAULT).notifications();
    let c = service
        .create(channel("1", "ok", &[]))
        .await
        .expect("channel");
    let held = db
        .hold("UPDATE crm_notification_channels SET enabled = false")
        .await;
    let s = service.clone();
    let rename = tokio::spawn(async move {
        s.update(
            c.id,
            ChannelPatch {
                name: Some("Sales (EU)".into()),
                ..Default::default()
            },
        )
        .await
    });
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    held.commit().await;
    let renamed = rename.await.expect("join").expect("rename");
    let now = service.get(c.id).await.expect("get");
    assert_eq!(now, renamed);
    assert_eq!(now.name, "Sales (EU)");
    assert!(!now.enabled, "the disable was undone");
}
