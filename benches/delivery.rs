//! cargo bench --bench delivery
//! (with Postgres too: CRM_TEST_PG_URL=postgres://… cargo bench --features postgres --bench delivery)
//!
//! Webhook delivery throughput: a backlog of 20,000 events queued for one endpoint (a
//! local receiver that answers 200 at once and keeps its connections alive, as a real
//! receiver behind a load balancer does), then 1 or 2 dispatchers (separate `Crm`
//! instances on separate pools, as separate processes would be) drain it; events/s
//! from the start of the dispatchers to the last delivery is printed. Each dispatcher
//! has 512 delivery slots (`CRM_BENCH_SLOTS` to change); the endpoint may have as
//! many deliveries in flight as the dispatchers have slots together
//! (`CRM_BENCH_PER_ENDPOINT` to change): that limit counts across every process, so
//! at one dispatcher's slots it would let a second dispatcher add nothing in flight,
//! and the run would measure the limit, not the scale-out. SQLite always,
//! Postgres when `CRM_TEST_PG_URL` is set (`CRM_BENCH_BACKEND=sqlite|postgres` for one).
//!
//! Wake (Postgres): one `Crm` creates a lead every 50 ms, another (its own pool, its
//! dispatcher polling once a minute) delivers it; the time from each call to create
//! to its webhook's arrival is printed (p50/p90/max of 100).
//!
//! End to end (with feature `http`): the router serves `POST /api/v1/leads` on a local
//! port while 256 clients create leads over HTTP at a steady total rate
//! (`CRM_BENCH_E2E_RATE`, default 4,000/s, 0 to skip; for 10 s: more than the 3,600/s the rate
//! must sustain, since the rate reached can never pass the rate asked) and the
//! dispatcher delivers each
//! `lead.created`; the receiver notes when each lead's delivery arrived. Printed: the
//! creates/s reached, non-2xx answers, and the create-to-delivery latency (from the
//! moment the create was sent to the moment its webhook arrived) at p50/p99/max.

#![allow(missing_docs)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crm::leads::NewLead;
use crm::webhooks::{DispatcherConfig, NewEndpoint};
use crm::{Crm, MasterKey, WorkspaceId};
use tokio_util::sync::CancellationToken;

/// The allocator the crm binary ships with (`crm-server`), since this bench stands
/// in for that server; an app embedding the library brings its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "postgres")]
#[path = "../tests/common/scratch_pg.rs"]
mod scratch_pg;

const EVENTS: usize = 20_000;

/// A keep-alive receiver (axum) counting the deliveries it answered 200.
struct Receiver {
    url: String,
    seen: Arc<AtomicUsize>,
    /// Woken at every delivery (the wake figure times single deliveries) ...
    arrived: Arc<tokio::sync::Notify>,
    /// ... which came in at `since` + this many nanoseconds (the last one's).
    last_at: Arc<AtomicU64>,
    since: Instant,
}

impl Receiver {
    async fn start() -> Self {
        let seen = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let last_at = Arc::new(AtomicU64::new(0));
        let since = Instant::now();
        let (counter, ping, at) = (seen.clone(), arrived.clone(), last_at.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
                at.store(nanos, Ordering::Relaxed);
                counter.fetch_add(1, Ordering::Relaxed);
                ping.notify_waiters();
                async { "ok" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            seen,
            arrived,
            last_at,
            since,
        }
    }

    async fn wait_for(&self, n: usize) {
        while self.seen.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// A dispatcher's delivery slots: `CRM_BENCH_SLOTS`, or 512 (a delivery's slot is
/// held from its claim to its hand-over, so slots bound deliveries in flight times
/// the claim/write cycle: on this bench's one endpoint, 128 slots left SQLite's
/// dispatcher one write turn per create batch behind, 5 s at p99 end to end; past
/// 512 nothing more was gained).
fn bench_slots() -> usize {
    std::env::var("CRM_BENCH_SLOTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

async fn connect(url: &str, key: &MasterKey) -> Crm {
    Crm::builder()
        .database_url(url)
        .master_key(key.clone())
        .webhook_allow_networks(["127.0.0.1"])
        .connect()
        .await
        .expect("connect")
}

/// A new workspace whose one endpoint, subscribed to `lead.created`, is a new
/// receiver.
async fn workspace_with_receiver(crm: &Crm, name: &str) -> (WorkspaceId, Receiver) {
    let ws = crm.create_workspace(name).await.expect("workspace");
    let rx = Receiver::start().await;
    crm.workspace(ws)
        .webhooks()
        .create(NewEndpoint {
            url: rx.url.clone(),
            event_types: vec!["lead.created".into()],
            ..Default::default()
        })
        .await
        .expect("endpoint");
    (ws, rx)
}

async fn run(backend: &str, url: &str, dispatchers: usize) -> f64 {
    let key = MasterKey::generate("bench").expect("key");
    let first = connect(url, &key).await;
    let (ws, rx) = workspace_with_receiver(&first, &format!("delivery bench {dispatchers}")).await;
    // The backlog, written by 32 concurrent writers (no dispatcher runs yet).
    let mut writers = Vec::new();
    for w in 0..32 {
        let leads = first.workspace(ws).leads();
        writers.push(tokio::spawn(async move {
            for i in (w..EVENTS).step_by(32) {
                let lead = NewLead {
                    name: "Bench".into(),
                    email: Some(format!("d{dispatchers}-{i}@bench.example")),
                    ..Default::default()
                };
                leads.create(lead).await.expect("lead");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    eprintln!("delivery/{backend}/{dispatchers}: backlog of {EVENTS} written, draining");
    let stop = CancellationToken::new();
    let slots = bench_slots();
    let config = DispatcherConfig {
        concurrency: slots,
        per_endpoint: std::env::var("CRM_BENCH_PER_ENDPOINT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(slots * dispatchers),
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    };
    // Connected (the schema checked on a first connection) before the clock starts:
    // the time of a connect is not delivery, and two dispatchers connect twice.
    let mut crms = Vec::new();
    for _ in 0..dispatchers {
        crms.push(connect(url, &key).await);
    }
    let started = Instant::now();
    let handles: Vec<_> = crms
        .iter()
        .map(|crm| {
            crm.start_dispatcher(config.clone(), stop.clone())
                .expect("start")
        })
        .collect();
    rx.wait_for(EVENTS).await;
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    for h in handles {
        h.await.expect("stop");
    }
    for crm in crms {
        crm.close().await;
    }
    first.close().await;
    let rate = EVENTS as f64 / secs;
    println!("delivery/{backend}/{dispatchers} dispatcher(s): {EVENTS} events in {secs:.2} s = {rate:.0} events/s");
    rate
}

/// The cross-process wake (Postgres): one `Crm` creates a lead every 50 ms and
/// another, on a pool of its own as another process would be, delivers it; its
/// dispatcher polls once a minute, so only the writer's `NOTIFY` can wake it in
/// time. Printed: the time from the call to create (before its commit) to the
/// webhook's arrival at the receiver, an upper bound of the time from the commit to
/// the other dispatcher's claim. One untimed create first opens the connections.
async fn wake(backend: &str, url: &str) {
    const CREATES: usize = 100;
    let key = MasterKey::generate("bench").expect("key");
    let writer = connect(url, &key).await;
    let (ws, rx) = workspace_with_receiver(&writer, "wake bench").await;
    let sender = connect(url, &key).await;
    let stop = CancellationToken::new();
    let config = DispatcherConfig {
        poll_interval: Duration::from_secs(60),
        ..Default::default()
    };
    let dispatcher = sender
        .start_dispatcher(config, stop.clone())
        .expect("start");
    let leads = writer.workspace(ws).leads();
    let mut lat = Vec::with_capacity(CREATES);
    // Round 0 is the warm-up: delivered by the first poll at the latest.
    for i in 0..=CREATES {
        let arrived = rx.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let lead = NewLead {
            name: "Wake".into(),
            email: Some(format!("w{i}@bench.example")),
            ..Default::default()
        };
        let called = Instant::now();
        leads.create(lead).await.expect("lead");
        tokio::time::timeout(Duration::from_secs(90), arrived)
            .await
            .expect("delivered");
        let at = rx.since + Duration::from_nanos(rx.last_at.load(Ordering::Relaxed));
        if i > 0 {
            lat.push(at.saturating_duration_since(called));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lat.sort();
    // Nearest rank: the smallest value at least `p` of the sample is not above.
    let ms = |p: f64| {
        let rank = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len());
        lat[rank - 1].as_secs_f64() * 1000.0
    };
    println!(
        "wake/{backend}: {CREATES} creates in one process, each delivered by another's dispatcher; \
         create-to-delivery p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.9),
        ms(1.0),
    );
    stop.cancel();
    dispatcher.await.expect("dispatcher");
    sender.close().await;
    writer.close().await;
}

/// One end-to-end run: leads created over HTTP at `rate`/s for `secs`, each delivered.
#[cfg(feature = "http")]
async fn end_to_end(backend: &str, url: &str, rate: u32, secs: u64) {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use crm::api_keys::NewApiKey;
    use crm::ratelimit::Policy;

    let key = MasterKey::generate("bench").expect("key");
    let crm = Crm::builder()
        .database_url(url)
        .master_key(key)
        .webhook_allow_networks(["127.0.0.1"])
        .rate_limit_policy(
            "api_key",
            Policy::new(1_000_000, Duration::from_secs(1)).expect("policy"),
        )
        .connect()
        .await
        .expect("connect");
    let ws = crm
        .create_workspace("end to end bench")
        .await
        .expect("workspace");
    // The receiver: when did each lead's delivery arrive (by the lead's email)?
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = arrived.clone();
    let hook = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let at = Instant::now();
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            if let Some(email) = v["data"]["lead"]["email"].as_str() {
                seen.lock().expect("lock").insert(email.to_owned(), at);
            }
            async { "ok" }
        }),
    );
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", hook_listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(hook_listener, hook).await });
    crm.workspace(ws)
        .webhooks()
        .create(NewEndpoint {
            url: hook_url,
            event_types: vec!["lead.created".into()],
            ..Default::default()
        })
        .await
        .expect("endpoint");
    let api_key = crm
        .workspace(ws)
        .api_keys()
        .create(NewApiKey {
            name: "bench".into(),
            scopes: vec!["leads:write".into()],
            expires_at: None,
        })
        .await
        .expect("api key")
        .secret
        .expose()
        .to_owned();
    // The server.
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = crm::http::Config::new().router(crm.clone());
    let until = stop.clone();
    let server = tokio::spawn(crm::http::serve(
        listener,
        app,
        crm::http::Limits::default(),
        async move { until.cancelled().await },
    ));
    let slots = bench_slots();
    let dispatcher = crm
        .start_dispatcher(
            DispatcherConfig {
                concurrency: slots,
                per_endpoint: slots,
                ..Default::default()
            },
            stop.clone(),
        )
        .expect("start");
    // 256 clients, each at rate/256 per second.
    const CLIENTS: u32 = 256;
    let http = reqwest::Client::new();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, sent, failed) = (http.clone(), sent.clone(), failed.clone());
        let (url, auth) = (format!("{base}/api/v1/leads"), format!("Bearer {api_key}"));
        clients.push(tokio::spawn(async move {
            let every = Duration::from_secs_f64(f64::from(CLIENTS) / f64::from(rate));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0u64;
            while started.elapsed() < Duration::from_secs(secs) {
                tick.tick().await;
                let email = format!("e2e-{c}-{i}@bench.example");
                i += 1;
                sent.lock()
                    .expect("lock")
                    .insert(email.clone(), Instant::now());
                let ok = http
                    .post(&url)
                    .header("authorization", &auth)
                    .json(&serde_json::json!({"name": "Bench", "email": email}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                    sent.lock().expect("lock").remove(&email);
                }
            }
        }));
    }
    for c in clients {
        c.await.expect("client");
    }
    let create_secs = started.elapsed().as_secs_f64();
    let sent = std::mem::take(&mut *sent.lock().expect("lock"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrived.lock().expect("lock").len() < sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_secs = started.elapsed().as_secs_f64();
    let arrived = std::mem::take(&mut *arrived.lock().expect("lock"));
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(email, t)| Some(arrived.get(email)?.saturating_duration_since(*t)))
        .collect();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "end-to-end/{backend}: asked {rate}/s; {} created in {create_secs:.1} s = {:.0}/s, {} non-2xx; \
         {} of them delivered by {all_secs:.1} s; create-to-delivery p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        sent.len(),
        sent.len() as f64 / create_secs,
        failed.load(Ordering::Relaxed),
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
    );
    stop.cancel();
    dispatcher.await.expect("dispatcher");
    server.await.expect("server task").expect("server");
    crm.close().await;
}

/// Runs `f` on a database of its own, so that no run starts on the rows of another
/// (or of an earlier bench): a new SQLite file in `dir`, or a new database in the
/// Postgres server of `CRM_TEST_PG_URL` (`base`), dropped after a run that ends
/// (one that panics leaves its `crm_bench_*` database behind).
async fn on_fresh_db<T, F: std::future::Future<Output = T>>(
    backend: &str,
    base: &str,
    dir: &std::path::Path,
    f: impl FnOnce(String) -> F,
) -> T {
    #[cfg(feature = "postgres")]
    if backend == "postgres" {
        let (url, name) = scratch_pg::create(base, "crm_bench").await;
        let out = f(url).await;
        scratch_pg::drop(base, &name).await;
        return out;
    }
    let _ = (backend, base);
    let file = dir.join(format!("{}.db", uuid::Uuid::now_v7().simple()));
    f(format!("sqlite://{}", file.display())).await
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut targets = vec![("sqlite", String::new())];
    if cfg!(feature = "postgres") {
        if let Ok(pg) = std::env::var("CRM_TEST_PG_URL") {
            targets.push(("postgres", pg));
        }
    }
    // CRM_BENCH_BACKEND=sqlite|postgres runs one backend only (e.g. under a profiler).
    let only = std::env::var("CRM_BENCH_BACKEND").ok();
    for (backend, base) in targets {
        if only.as_deref().is_some_and(|o| o != backend) {
            continue;
        }
        let dir = dir.path();
        for n in [1, 2] {
            rt.block_on(on_fresh_db(backend, &base, dir, |url| async move {
                run(backend, &url, n).await
            }));
        }
        if backend == "postgres" {
            rt.block_on(on_fresh_db(backend, &base, dir, |url| async move {
                wake(backend, &url).await
            }));
        }
        #[cfg(feature = "http")]
        {
            let rate = std::env::var("CRM_BENCH_E2E_RATE")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(4_000);
            if rate == 0 {
                println!("end-to-end/{backend}: skipped (CRM_BENCH_E2E_RATE=0)");
            } else {
                rt.block_on(on_fresh_db(backend, &base, dir, |url| async move {
                    end_to_end(backend, &url, rate, 10).await
                }));
            }
        }
    }
    if cfg!(not(feature = "http")) {
        println!("end-to-end: skipped (needs feature `http`)");
    }
    // Linux only: the process's peak resident set (server, dispatchers, clients and
    // receiver together, so an upper bound of the server's).
    if let Some(kb) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
    {
        println!("peak RSS of the bench process: {} MB", kb / 1024);
    }
}
