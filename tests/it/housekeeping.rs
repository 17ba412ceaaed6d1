//! Housekeeping on SQLite and Postgres: what a pass deletes, what it keeps, and the
//! retention period (with the test clock).

use std::time::Duration as StdDuration;

use chrono::Duration;
use crm::auth::{Login, NewUser};
use crm::housekeeping::{Housekeeping, Purged};
use crm::leads::{LeadPatch, NewLead};
use crm::webhooks::{CancellationToken, DispatcherConfig, NewEndpoint};
use crm::{Crm, WorkspaceId};

use crate::common::receiver::{Receiver, Reply};
use crate::common::{Outbox, TestDb};

conformance!(a_pass_deletes_what_expired_and_keeps_the_rest);

const PW: &str = "Correct-Horse-9-Battery";

async fn endpoint(crm: &Crm, url: &str, event: &str) {
    crm.workspace(WorkspaceId::DEFAULT)
        .webhooks()
        .create(NewEndpoint {
            url: url.into(),
            event_types: vec![event.into()],
            ..Default::default()
        })
        .await
        .expect("endpoint");
}

async fn a_pass_deletes_what_expired_and_keeps_the_rest(db: &TestDb) {
    let outbox = Outbox::default();
    let crm = db
        .builder()
        .mailer(outbox.clone())
        .webhook_allow_networks(["127.0.0.1"])
        .connect()
        .await
        .expect("connect");
    let ws = crm.workspace(WorkspaceId::DEFAULT);
    // A session, a reset token, 1,100 idempotency keys (three batches), a rate-limit row.
    ws.auth()
        .bootstrap_owner(NewUser {
            email: "ana@example.com".into(),
            display_name: "Ana".into(),
            role: None,
            password: PW.into(),
        })
        .await
        .expect("owner");
    ws.auth()
        .login(Login {
            email: "ana@example.com".into(),
            password: PW.into(),
            remember_me: false,
            ip: None,
            user_agent: None,
        })
        .await
        .expect("login");
    // A failed sign-in of another email leaves a login-throttle row.
    let failed = ws
        .auth()
        .login(Login {
            email: "bo@example.com".into(),
            password: PW.into(),
            remember_me: false,
            ip: None,
            user_agent: None,
        })
        .await;
    assert!(failed.is_err());
    ws.auth()
        .request_password_reset("ana@example.com")
        .await
        .expect("reset");
    for i in 0..1_100 {
        ws.idempotency()
            .claim("leads.create", &format!("key-{i}"), &[b"x"])
            .await
            .expect("claim");
    }
    crm.rate_limiter()
        .check("api_key", "key-1")
        .await
        .expect("rate limit");
    // `lead.created` goes to a receiver that takes it; `lead.updated` to one that
    // fails, so its job stays pending (a retry is due later).
    let ok = Receiver::start(vec![], Reply::Status(204, vec![], String::new())).await;
    let failing = Receiver::start(vec![], Reply::Status(500, vec![], String::new())).await;
    endpoint(&crm, &ok.url, "lead.created").await;
    endpoint(&crm, &failing.url, "lead.updated").await;
    let stop = CancellationToken::new();
    let dispatcher = crm
        .start_dispatcher(
            DispatcherConfig {
                poll_interval: StdDuration::from_millis(20),
                jitter: 0.0,
                ..Default::default()
            },
            stop.clone(),
        )
        .expect("start");
    let lead = ws
        .leads()
        .create(NewLead {
            name: "Ana".into(),
            email: Some("ana@example.com".into()),
            ..Default::default()
        })
        .await
        .expect("lead");
    ws.leads()
        .update(
            lead.id,
            LeadPatch {
                company: Some(Some("Acme".into())),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    for _ in 0..500 {
        if db.count("crm_delivery_attempts").await == 2 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    stop.cancel();
    dispatcher.await.expect("dispatcher stops");
    assert_eq!(db.count("crm_delivery_attempts").await, 2);
    assert_eq!(db.count("crm_events").await, 2);

    // Nothing has expired yet.
    let purged = crm.housekeep(Housekeeping::default()).await.expect("pass");
    assert_eq!(purged, Purged::default());

    // 31 days later: the session, the token, the throttle row, the keys and the
    // rate-limit rows are spent,
    // and the history is past the default retention of 30 days.
    db.clock.advance(Duration::days(31));
    let fresh = ws
        .leads()
        .create(NewLead {
            name: "Bo".into(),
            email: Some("bo@example.com".into()),
            ..Default::default()
        })
        .await
        .expect("lead");
    // On Postgres the limiter's rows (the API key's, and those login and reset wrote).
    let limiter_rows = if db.is_sqlite() {
        0
    } else {
        db.count("crm_rate_limits").await
    };
    assert!(db.is_sqlite() || limiter_rows >= 1);
    let keep_history = Housekeeping { retention: None };
    let purged = crm.housekeep(keep_history).await.expect("pass");
    assert_eq!(
        purged,
        Purged {
            sessions: 1,
            auth_tokens: 1,
            login_throttles: 1,
            idempotency_keys: 1_100,
            rate_limit_rows: u64::try_from(limiter_rows).expect("count"),
            events: 0,
            attempts: 0,
            imports: 0,
            orphaned_files: 0,
        }
    );
    assert_eq!(db.count("crm_sessions").await, 0);
    assert_eq!(db.count("crm_auth_tokens").await, 0);
    assert_eq!(db.count("crm_login_throttle").await, 0);
    assert_eq!(db.count("crm_idempotency_keys").await, 0);
    if !db.is_sqlite() {
        assert_eq!(db.count("crm_rate_limits").await, 0);
    }
    assert_eq!(db.count("crm_events").await, 3);

    // With the retention: the old `lead.created` event (delivered) goes with its job;
    // the old `lead.updated` event stays, its job still pending; the new one stays.
    let purged = crm.housekeep(Housekeeping::default()).await.expect("pass");
    assert_eq!((purged.events, purged.attempts, purged.total()), (1, 2, 3));
    let left = ws.events(None, 10).await.expect("events");
    let types: Vec<&str> = left.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["lead.updated", "lead.created"]);
    assert_eq!(left[1].payload["data"]["lead"]["id"], fresh.id.to_string());
    assert_eq!(db.count("crm_delivery_attempts").await, 0);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM crm_jobs WHERE status = 'pending'")
            .await,
        2,
        "the old lead.updated job and the new lead.created job"
    );
    // Leads, the user and the audit log are never touched.
    assert_eq!(db.count("crm_leads").await, 2);
    assert_eq!(db.count("crm_users").await, 1);
    // A second pass finds nothing.
    let purged = crm.housekeep(Housekeeping::default()).await.expect("pass");
    assert_eq!(purged.total(), 0);
}
