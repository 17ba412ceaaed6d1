//! cargo bench --bench delivery
//! (with Postgres too: CRM_TEST_PG_URL=postgres://… cargo bench --features postgres --bench delivery)
//!
//! Webhook delivery throughput: a backlog of 20,000 events queued for one endpoint (a
//! local receiver that answers 200 at once and keeps its connections alive, as a real
//! receiver behind a load balancer does), then 1 or 2 dispatchers (separate `Crm`
//! instances on separate pools, as separate processes would be) drain it; events/s
//! from the start of the dispatchers to the last delivery is printed. SQLite always,
//! Postgres when `CRM_TEST_PG_URL` is set (`CRM_BENCH_BACKEND=sqlite|postgres` for one).

#![allow(missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crm::leads::NewLead;
use crm::webhooks::{DispatcherConfig, NewEndpoint};
use crm::{Crm, MasterKey};
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 20_000;

/// A keep-alive receiver (axum) counting the deliveries it answered 200.
struct Receiver {
    url: String,
    seen: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> Self {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                async { "ok" }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    async fn wait_for(&self, n: usize) {
        while self.seen.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
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

async fn run(backend: &str, url: &str, dispatchers: usize) -> f64 {
    let key = MasterKey::generate("bench").expect("key");
    let first = connect(url, &key).await;
    let ws = first
        .create_workspace(&format!("delivery bench {dispatchers}"))
        .await
        .expect("workspace");
    let rx = Receiver::start().await;
    first
        .workspace(ws)
        .webhooks()
        .create(NewEndpoint {
            url: rx.url.clone(),
            event_types: vec!["lead.created".into()],
            ..Default::default()
        })
        .await
        .expect("endpoint");
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
    let stop = CancellationToken::new();
    let config = DispatcherConfig {
        concurrency: 64,
        per_endpoint: 64,
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..dispatchers {
        let crm = connect(url, &key).await;
        handles.push(
            crm.start_dispatcher(config.clone(), stop.clone())
                .expect("start"),
        );
    }
    rx.wait_for(EVENTS).await;
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    for h in handles {
        h.await.expect("stop");
    }
    let rate = EVENTS as f64 / secs;
    println!("delivery/{backend}/{dispatchers} dispatcher(s): {EVENTS} events in {secs:.2} s = {rate:.0} events/s");
    rate
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("delivery.db").display());
    let mut targets = vec![("sqlite", sqlite)];
    if cfg!(feature = "postgres") {
        if let Ok(pg) = std::env::var("CRM_TEST_PG_URL") {
            targets.push(("postgres", pg));
        }
    }
    // CRM_BENCH_BACKEND=sqlite|postgres runs one backend only (e.g. under a profiler).
    let only = std::env::var("CRM_BENCH_BACKEND").ok();
    for (backend, url) in targets {
        if only.as_deref().is_some_and(|o| o != backend) {
            continue;
        }
        for n in [1, 2] {
            rt.block_on(run(backend, &url, n));
        }
    }
}
