//! Webhook delivery through the dispatcher, to local receivers on real sockets, on
//! SQLite and Postgres.

use std::time::Duration as StdDuration;

use crate::common::receiver::{Receiver, Reply};
use crate::common::TestDb;
use chrono::Duration;
use crm::leads::NewLead;
use crm::webhooks::signing::WebhookSecret;
use crm::webhooks::{message_id, Attempt, DispatcherConfig, NewEndpoint};
use crm::{Crm, EndpointId, WorkspaceId};
use tokio_util::sync::CancellationToken;

conformance!(
    a_write_delivers_one_signed_message_per_matching_endpoint,
    failures_retry_on_the_schedule_with_the_same_id,
    gone_and_repeated_failures_disable_the_endpoint,
    retry_after_is_honoured_and_redirects_are_not_followed,
    timeouts_and_resets_are_failed_attempts,
    the_ssrf_guard_holds_at_delivery,
    rotation_signs_with_both_secrets,
    resend_and_test_send,
    a_crashed_worker_loses_no_job,
    a_per_endpoint_rate_limit_spreads_deliveries,
    a_slow_endpoint_cannot_hold_every_slot,
    a_stop_writes_every_attempt_in_flight,
);

fn cfg() -> DispatcherConfig {
    DispatcherConfig {
        poll_interval: StdDuration::from_millis(20),
        jitter: 0.0,
        timeout: StdDuration::from_secs(5),
        ..Default::default()
    }
}

struct Running {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.handle.await.expect("dispatcher stops");
    }
}

async fn crm(db: &TestDb) -> Crm {
    db.builder()
        .webhook_allow_networks(["127.0.0.1"])
        .connect()
        .await
        .expect("connect")
}

fn start(crm: &Crm, cfg: DispatcherConfig) -> Running {
    let stop = CancellationToken::new();
    let handle = crm.start_dispatcher(cfg, stop.clone()).expect("start");
    Running { stop, handle }
}

async fn endpoint(crm: &Crm, url: &str, types: &[&str]) -> (EndpointId, String) {
    let created = crm
        .workspace(WorkspaceId::DEFAULT)
        .webhooks()
        .create(NewEndpoint {
            url: url.into(),
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        })
        .await
        .expect("endpoint");
    (created.endpoint.id, created.secret.expose().to_owned())
}

async fn new_lead(crm: &Crm, email: &str) -> crm::leads::Lead {
    crm.leads()
        .create(NewLead {
            name: "Ana".into(),
            email: Some(email.into()),
            ..Default::default()
        })
        .await
        .expect("lead")
}

/// Waits (up to 10 s) until the endpoint has `n` recorded attempts.
async fn attempts(crm: &Crm, ep: EndpointId, n: usize) -> Vec<Attempt> {
    for _ in 0..1000 {
        let got = crm
            .workspace(WorkspaceId::DEFAULT)
            .webhooks()
            .attempts(ep, None, 1000)
            .await
            .expect("attempts");
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    panic!("expected {n} attempts to {ep}");
}

fn verify(secret: &str, req: &crate::common::receiver::Request) {
    let signer = WebhookSecret::parse(secret).expect("secret").signer();
    let h = |k: &str| req.headers.get(k).map(String::as_str).unwrap_or_default();
    let ts: i64 = h("webhook-timestamp").parse().expect("timestamp");
    signer
        .verify(
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            &req.body,
            ts,
        )
        .expect("signature verifies");
}

async fn a_write_delivers_one_signed_message_per_matching_endpoint(db: &TestDb) {
    let crm = crm(db).await;
    let (all, other) = (Receiver::ok().await, Receiver::ok().await);
    let (ep_all, secret) = endpoint(&crm, &all.url, &["lead.*"]).await;
    let (ep_other, _) = endpoint(&crm, &other.url, &["lead.deleted"]).await;
    let running = start(&crm, cfg());
    let lead = new_lead(&crm, "ana@example.com").await;

    let got = all.wait_for(1).await;
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook");
    assert_eq!(req.headers["content-type"], "application/json");
    assert!(req.headers["user-agent"].starts_with("crm-webhooks/"));
    verify(&secret, req);
    let payload: serde_json::Value = serde_json::from_slice(&req.body).expect("json");
    assert_eq!(payload["type"], "lead.created");
    assert_eq!(payload["data"]["lead"]["id"], lead.id.to_string());
    let events = crm
        .workspace(WorkspaceId::DEFAULT)
        .events(None, 10)
        .await
        .expect("events");
    assert_eq!(req.headers["webhook-id"], message_id(events[0].id));
    // The body is the event's payload (the JSON the outbox keeps).
    assert_eq!(payload, events[0].payload);

    let a = attempts(&crm, ep_all, 1).await;
    assert_eq!(
        (a[0].status_code, a[0].error_kind.as_deref(), a[0].attempt),
        (Some(200), None, 1)
    );
    assert_eq!(a[0].response_body.as_deref(), Some("ok"));
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert_eq!(all.requests().len(), 1, "exactly one delivery");
    assert!(other.requests().is_empty(), "the filter did not match");
    assert!(crm
        .workspace(WorkspaceId::DEFAULT)
        .webhooks()
        .attempts(ep_other, None, 10)
        .await
        .expect("attempts")
        .is_empty());
    assert_eq!(
        db.count("crm_jobs").await,
        0,
        "a delivered job leaves the queue; its attempt is the record"
    );
    let ep = crm
        .workspace(WorkspaceId::DEFAULT)
        .webhooks()
        .get(ep_all)
        .await
        .expect("get");
    assert!(ep.last_success_at.is_some());
    running.stop().await;
}

async fn failures_retry_on_the_schedule_with_the_same_id(db: &TestDb) {
    let crm = crm(db).await;
    let rx = Receiver::start(
        vec![
            Reply::Status(500, vec![], "boom".into()),
            Reply::Status(502, vec![], "".into()),
        ],
        Reply::Status(204, vec![], "".into()),
    )
    .await;
    let (ep, _) = endpoint(&crm, &rx.url, &["*"]).await;
    let running = start(&crm, cfg());
    new_lead(&crm, "ana@example.com").await;
    let t0 = crm.now();
    let a = attempts(&crm, ep, 1).await;
    assert_eq!(a[0].status_code, Some(500));
    assert_eq!(a[0].error_kind.as_deref(), Some("http_status"));
    assert_eq!(a[0].next_attempt_at, Some(t0 + Duration::minutes(1)));
    // Not before it is due.
    tokio::time::sleep(StdDuration::from_millis(150)).await;
    assert_eq!(rx.requests().len(), 1);
    db.clock.advance(Duration::minutes(1));
    let a = attempts(&crm, ep, 2).await;
    assert_eq!(a[1].attempt, 2);
    assert_eq!(
        a[1].next_attempt_at,
        Some(t0 + Duration::minutes(1) + Duration::minutes(5))
    );
    db.clock.advance(Duration::minutes(5));
    let a = attempts(&crm, ep, 3).await;
    assert_eq!(
        (a[2].attempt, a[2].status_code, a[2].next_attempt_at),
        (3, Some(204), None)
    );
    let ids: Vec<String> = rx
        .wait_for(3)
        .await
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "the same webhook-id on every retry"
    );
    let ep = crm
        .workspace(WorkspaceId::DEFAULT)
        .webhooks()
        .get(ep)
        .await
        .expect("get");
    assert_eq!(ep.consecutive_failures, 0, "a success resets the count");
    running.stop().await;
}

async fn gone_and_repeated_failures_disable_the_endpoint(db: &TestDb) {
    let crm = crm(db).await;
    let gone = Receiver::start(vec![], Reply::Status(410, vec![], "gone".into())).await;
    let failing = Receiver::start(vec![], Reply::Status(500, vec![], "".into())).await;
    let (ep_gone, _) = endpoint(&crm, &gone.url, &["*"]).await;
    let (ep_fail, _) = endpoint(&crm, &failing.url, &["*"]).await;
    let config = DispatcherConfig {
        schedule: vec![StdDuration::ZERO; 12],
        ..cfg()
    };
    let running = start(&crm, config);
    new_lead(&crm, "ana@example.com").await;
    attempts(&crm, ep_gone, 1).await;
    attempts(&crm, ep_fail, 10).await;
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let hooks = crm.workspace(WorkspaceId::DEFAULT).webhooks();
    let g = hooks.get(ep_gone).await.expect("get");
    assert!(!g.enabled);
    assert_eq!(
        g.disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );
    let f = hooks.get(ep_fail).await.expect("get");
    assert!(!f.enabled);
    assert_eq!(
        f.disabled_reason.as_deref(),
        Some("10 consecutive failed attempts")
    );
    assert_eq!(
        failing.requests().len(),
        10,
        "no attempt after the endpoint was disabled"
    );
    let audit = crm
        .workspace(WorkspaceId::DEFAULT)
        .audit_log(None, 100)
        .await
        .expect("audit");
    let disabled: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "webhook_endpoint.disabled")
        .collect();
    assert_eq!(disabled.len(), 2);
    // A disabled endpoint gets no new jobs.
    new_lead(&crm, "bo@example.com").await;
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert_eq!(gone.requests().len(), 1);
    running.stop().await;
}

async fn retry_after_is_honoured_and_redirects_are_not_followed(db: &TestDb) {
    let crm = crm(db).await;
    let target = Receiver::ok().await;
    let limited = Receiver::start(
        vec![Reply::Status(
            429,
            vec![("retry-after".into(), "120".into())],
            "".into(),
        )],
        Reply::Status(200, vec![], "".into()),
    )
    .await;
    let redirect = Receiver::start(
        vec![],
        Reply::Status(
            302,
            vec![("location".into(), target.url.clone())],
            "".into(),
        ),
    )
    .await;
    let (ep_limited, _) = endpoint(&crm, &limited.url, &["*"]).await;
    let (ep_redirect, _) = endpoint(&crm, &redirect.url, &["*"]).await;
    let running = start(&crm, cfg());
    new_lead(&crm, "ana@example.com").await;
    let t0 = crm.now();
    let a = attempts(&crm, ep_limited, 1).await;
    assert_eq!(a[0].status_code, Some(429));
    assert_eq!(
        a[0].next_attempt_at,
        Some(t0 + Duration::seconds(120)),
        "Retry-After, not the 1 min schedule"
    );
    let r = attempts(&crm, ep_redirect, 1).await;
    assert_eq!(
        (r[0].status_code, r[0].error_kind.as_deref()),
        (Some(302), Some("redirect"))
    );
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert!(
        target.requests().is_empty(),
        "the redirect was not followed"
    );
    db.clock.advance(Duration::seconds(120));
    let a = attempts(&crm, ep_limited, 2).await;
    assert_eq!(a[1].status_code, Some(200));
    running.stop().await;
}

async fn timeouts_and_resets_are_failed_attempts(db: &TestDb) {
    let crm = crm(db).await;
    let hang = Receiver::start(vec![], Reply::Hang(StdDuration::from_secs(30))).await;
    let reset = Receiver::start(vec![], Reply::Reset).await;
    let garbage = Receiver::start(
        vec![],
        Reply::Status(200, vec![], "\u{0}\u{1}not json at all".into()),
    )
    .await;
    let (ep_hang, _) = endpoint(&crm, &hang.url, &["*"]).await;
    let (ep_reset, _) = endpoint(&crm, &reset.url, &["*"]).await;
    let (ep_garbage, _) = endpoint(&crm, &garbage.url, &["*"]).await;
    let not_http = Receiver::start(vec![], Reply::Raw(b"garbage\r\n\r\n")).await;
    let (ep_not_http, _) = endpoint(&crm, &not_http.url, &["*"]).await;
    let running = start(
        &crm,
        DispatcherConfig {
            timeout: StdDuration::from_millis(300),
            ..cfg()
        },
    );
    new_lead(&crm, "ana@example.com").await;
    let h = attempts(&crm, ep_hang, 1).await;
    assert_eq!(
        (h[0].status_code, h[0].error_kind.as_deref()),
        (None, Some("timeout"))
    );
    let r = attempts(&crm, ep_reset, 1).await;
    assert!(
        matches!(r[0].error_kind.as_deref(), Some("network" | "connect")),
        "{:?}",
        r[0]
    );
    let g = attempts(&crm, ep_garbage, 1).await;
    assert_eq!(
        g[0].error_kind, None,
        "a 2xx is a success whatever its body"
    );
    let n = attempts(&crm, ep_not_http, 1).await;
    assert_eq!(
        (n[0].status_code, n[0].error_kind.as_deref()),
        (None, Some("network")),
        "{:?}",
        n[0]
    );
    // The dispatcher keeps going.
    new_lead(&crm, "bo@example.com").await;
    attempts(&crm, ep_garbage, 2).await;
    running.stop().await;
}

async fn the_ssrf_guard_holds_at_delivery(db: &TestDb) {
    let allowed = crm(db).await;
    let rx = Receiver::ok().await;
    let (ep, _) = endpoint(&allowed, &rx.url, &["*"]).await;
    let by_name = rx.url.replace("127.0.0.1", "localhost");
    let (ep_name, _) = endpoint(&allowed, &by_name, &["*"]).await;
    // Another instance without the allow-list runs the dispatcher: loopback is refused.
    let strict = db.crm().await;
    let running = start(&strict, cfg());
    new_lead(&allowed, "ana@example.com").await;
    strict.wake_dispatchers();
    let a = attempts(&strict, ep, 1).await;
    assert_eq!(a[0].error_kind.as_deref(), Some("ssrf_refused"));
    let n = attempts(&strict, ep_name, 1).await;
    assert_eq!(
        n[0].error_kind.as_deref(),
        Some("ssrf_refused"),
        "a name resolving to loopback too"
    );
    assert!(rx.requests().is_empty());
    running.stop().await;
}

async fn rotation_signs_with_both_secrets(db: &TestDb) {
    let crm = crm(db).await;
    let rx = Receiver::ok().await;
    let (ep, old) = endpoint(&crm, &rx.url, &["*"]).await;
    let new = crm
        .workspace(WorkspaceId::DEFAULT)
        .webhooks()
        .rotate_secret(ep)
        .await
        .expect("rotate");
    let running = start(&crm, cfg());
    new_lead(&crm, "ana@example.com").await;
    let req = &rx.wait_for(1).await[0];
    assert_eq!(req.headers["webhook-signature"].split(' ').count(), 2);
    verify(&old, req);
    verify(new.expose(), req);
    db.clock.advance(Duration::hours(25));
    new_lead(&crm, "bo@example.com").await;
    let req = &rx.wait_for(2).await[1];
    assert_eq!(
        req.headers["webhook-signature"].split(' ').count(),
        1,
        "the overlap is over"
    );
    verify(new.expose(), req);
    running.stop().await;
}

async fn resend_and_test_send(db: &TestDb) {
    let crm = crm(db).await;
    let rx = Receiver::ok().await;
    let (ep, secret) = endpoint(&crm, &rx.url, &["lead.created"]).await;
    let running = start(&crm, cfg());
    new_lead(&crm, "ana@example.com").await;
    let first = rx.wait_for(1).await[0].clone();
    let event = crm
        .workspace(WorkspaceId::DEFAULT)
        .events(None, 1)
        .await
        .expect("events")[0]
        .id;
    let hooks = crm.workspace(WorkspaceId::DEFAULT).webhooks();
    hooks.resend(ep, event).await.expect("resend");
    let again = rx.wait_for(2).await[1].clone();
    assert_eq!(again.headers["webhook-id"], first.headers["webhook-id"]);
    assert_eq!(again.body, first.body);
    attempts(&crm, ep, 2).await;
    assert_eq!(
        hooks
            .message_attempts(ep, event)
            .await
            .expect("attempts")
            .len(),
        2
    );

    let test_event = hooks.test(ep).await.expect("test");
    let t = rx.wait_for(3).await[2].clone();
    verify(&secret, &t);
    assert_eq!(t.headers["webhook-id"], message_id(test_event));
    let payload: serde_json::Value = serde_json::from_slice(&t.body).expect("json");
    assert_eq!(payload["type"], "webhook.test");
    assert!(matches!(
        hooks.resend(ep, crm::EventId::new()).await,
        Err(crm::Error::NotFound { .. })
    ));
    running.stop().await;
}

async fn a_crashed_worker_loses_no_job(db: &TestDb) {
    let bad = DispatcherConfig {
        lease: StdDuration::from_secs(5),
        ..cfg()
    };
    assert!(
        db.crm()
            .await
            .start_dispatcher(bad, CancellationToken::new())
            .is_err(),
        "lease must outlast the timeout"
    );
    let crm = crm(db).await;
    let rx = Receiver::start(
        vec![Reply::Hang(StdDuration::from_secs(60))],
        Reply::Status(200, vec![], "".into()),
    )
    .await;
    let (ep, _) = endpoint(&crm, &rx.url, &["lead.created"]).await;
    // Worker A (another instance, as another process would be) takes the job, then
    // dies mid-delivery: its task is aborted and its connections closed, which is what
    // a crash leaves behind.
    let crashed = self::crm(db).await;
    let a = start(
        &crashed,
        DispatcherConfig {
            timeout: StdDuration::from_secs(30),
            ..cfg()
        },
    );
    new_lead(&crm, "ana@example.com").await;
    crashed.wake_dispatchers();
    let first = rx.wait_for(1).await[0].clone();
    a.handle.abort();
    let _ = a.handle.await;
    crashed.close().await;
    // Worker B cannot take it while A's lease lasts...
    let b = start(&crm, cfg());
    tokio::time::sleep(StdDuration::from_millis(150)).await;
    assert_eq!(rx.requests().len(), 1);
    // ...and takes it once the lease has run out.
    db.clock.advance(Duration::seconds(61));
    let second = rx.wait_for(2).await[1].clone();
    assert_eq!(second.headers["webhook-id"], first.headers["webhook-id"]);
    let done = attempts(&crm, ep, 1).await;
    assert_eq!(done[0].status_code, Some(200));
    assert_eq!(done[0].attempt, 2, "the lost attempt counts");
    b.stop().await;
}

/// Two dispatchers (two instances, two pools) on one Postgres deliver 1,000 events:
/// every one arrives, and no attempt is made twice.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_dispatchers_deliver_every_event_once() {
    let db = TestDb::postgres().await;
    let one = crm(&db).await;
    let two = crm(&db).await;
    let rx = Receiver::ok().await;
    let (ep, _) = endpoint(&one, &rx.url, &["lead.created"]).await;
    let config = DispatcherConfig {
        concurrency: 16,
        per_endpoint: 8,
        ..cfg()
    };
    let (a, b) = (start(&one, config.clone()), start(&two, config));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let crm = if w % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                new_lead(&crm, &format!("l{w}-{i}@example.com")).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let got = rx.wait_for(1000).await;
    let ids: std::collections::HashSet<&str> = got
        .iter()
        .map(|r| r.headers["webhook-id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1000, "every event arrived");
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 1000, "none twice");
    assert_eq!(attempts(&one, ep, 1000).await.len(), 1000);
    assert_eq!(db.count("crm_jobs").await, 0, "every job left the queue");
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

async fn a_per_endpoint_rate_limit_spreads_deliveries(db: &TestDb) {
    let crm = crm(db).await;
    let rx = Receiver::ok().await;
    let created = crm
        .workspace(WorkspaceId::DEFAULT)
        .webhooks()
        .create(NewEndpoint {
            url: rx.url.clone(),
            event_types: vec!["lead.created".into()],
            rate_limit_per_minute: Some(2),
            ..Default::default()
        })
        .await
        .expect("endpoint");
    let running = start(&crm, cfg());
    for i in 0..3 {
        new_lead(&crm, &format!("l{i}@example.com")).await;
    }
    rx.wait_for(2).await;
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    assert_eq!(
        rx.requests().len(),
        2,
        "a burst of two per minute, then wait"
    );
    db.clock.advance(Duration::seconds(30));
    rx.wait_for(3).await;
    let a = attempts(&crm, created.endpoint.id, 3).await;
    assert!(
        a.iter().all(|x| x.attempt == 1),
        "waiting for the limit is not a failed attempt"
    );
    running.stop().await;
}

/// Issue 15, item 16: one tenant's endpoint that answers after 29 s, with a long
/// queue, must not hold up another workspace's deliveries. Before, each claim took the
/// oldest due jobs whatever their endpoint, so the slow endpoint's queue came back
/// claim after claim (released over its cap) while the other workspace waited behind
/// it; now a claim takes at most `per_endpoint` of one endpoint, counted across
/// processes, and the first job of every endpoint before the second of any.
async fn a_slow_endpoint_cannot_hold_every_slot(db: &TestDb) {
    let crm = crm(db).await;
    let slow = crate::common::receiver::Receiver::start(
        vec![],
        crate::common::receiver::Reply::Late(StdDuration::from_secs(29)),
    )
    .await;
    let fast = crate::common::receiver::Receiver::ok().await;
    endpoint(&crm, &slow.url, &["lead.created"]).await;
    for i in 0..100 {
        new_lead(&crm, &format!("slow{i}@example.com")).await;
    }
    let other = crm
        .create_workspace("Other tenant")
        .await
        .expect("workspace");
    let ws = crm.workspace(other);
    ws.webhooks()
        .create(NewEndpoint {
            url: fast.url.clone(),
            event_types: vec!["lead.created".into()],
            ..Default::default()
        })
        .await
        .expect("endpoint");
    for i in 0..5 {
        ws.leads()
            .create(NewLead {
                name: "Bo".into(),
                email: Some(format!("fast{i}@example.com")),
                ..Default::default()
            })
            .await
            .expect("lead");
    }
    let started = std::time::Instant::now();
    let running = start(
        &crm,
        DispatcherConfig {
            concurrency: 4,
            per_endpoint: 2,
            timeout: StdDuration::from_secs(30),
            lease: StdDuration::from_secs(60),
            poll_interval: StdDuration::from_millis(200),
            ..cfg()
        },
    );
    fast.wait_for(5).await;
    let took = started.elapsed();
    assert!(
        took < StdDuration::from_secs(5),
        "the other workspace waited {took:?} behind the slow endpoint"
    );
    assert!(
        slow.requests().len() <= 2,
        "the slow endpoint holds at most its per-endpoint share: {}",
        slow.requests().len()
    );
    // The slow deliveries would hold a graceful stop for 29 s: end the test here.
    running.handle.abort();
}

/// On Postgres a job written by one process wakes the dispatcher of another at once
/// (`LISTEN`/`NOTIFY`), not at its next poll: with a poll of a minute, the delivery
/// arrives within seconds. Then, with the notification connection of the listening
/// process killed, the poll still delivers (the fallback).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wakes_another_process_dispatcher() {
    let db = TestDb::postgres().await;
    let (writer, sender) = (crm(&db).await, crm(&db).await);
    let rx = Receiver::ok().await;
    endpoint(&writer, &rx.url, &["lead.created"]).await;
    let slow_poll = DispatcherConfig {
        poll_interval: StdDuration::from_secs(60),
        ..cfg()
    };
    let running = start(&sender, slow_poll);
    // Let the first (empty) claim and the LISTEN happen.
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let t = std::time::Instant::now();
    new_lead(&writer, "ana@example.com").await;
    let got = tokio::time::timeout(StdDuration::from_secs(10), rx.wait_for(1))
        .await
        .expect("delivered long before the next poll");
    assert_eq!(got.len(), 1);
    eprintln!("cross-process wake to delivery: {:?}", t.elapsed());
    running.stop().await;

    // Without notifications the poll delivers.
    let polling = start(
        &sender,
        DispatcherConfig {
            poll_interval: StdDuration::from_millis(200),
            ..cfg()
        },
    );
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .await;
    new_lead(&writer, "bo@example.com").await;
    let got = tokio::time::timeout(StdDuration::from_secs(10), rx.wait_for(2))
        .await
        .expect("the poll delivers");
    assert_eq!(got.len(), 2);
    polling.stop().await;
    db.cleanup().await;
}

/// A dispatcher stopped while hundreds of deliveries are in flight waits for them and
/// writes every attempt before its stop returns: each delivery the receiver answered
/// has its attempt, and no job is left leased.
async fn a_stop_writes_every_attempt_in_flight(db: &TestDb) {
    const N: usize = 300;
    let crm = crm(db).await;
    let rx = Receiver::start(vec![], Reply::Late(StdDuration::from_millis(500))).await;
    let (ep, _) = endpoint(&crm, &rx.url, &["lead.created"]).await;
    let mut writers = Vec::new();
    for w in 0..6 {
        let crm = crm.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..N).step_by(6) {
                new_lead(&crm, &format!("l{i}@example.com")).await;
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let running = start(
        &crm,
        DispatcherConfig {
            concurrency: N,
            per_endpoint: N,
            ..cfg()
        },
    );
    rx.wait_for(N).await;
    tokio::time::timeout(StdDuration::from_secs(30), running.stop())
        .await
        .expect("the stop returns once the deliveries in flight are written");
    assert_eq!(rx.requests().len(), N, "each event was sent once");
    let hooks = crm.workspace(WorkspaceId::DEFAULT).webhooks();
    let written = hooks.attempts(ep, None, 1000).await.expect("attempts");
    assert_eq!(written.len(), N, "every delivery in flight has its attempt");
    assert!(written.iter().all(|a| a.status_code == Some(200)));
    assert_eq!(db.count("crm_jobs").await, 0, "no job is left leased");
}
