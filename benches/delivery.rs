//! cargo bench --bench delivery
//! (with Postgres too: CRM_TEST_PG_URL=postgres://… cargo bench --features postgres --bench delivery)
//!
//! Webhook delivery throughput: 1,000 events queued for one endpoint (a local receiver
//! that answers 200 at once), then 1 or 2 dispatchers (separate `Crm` instances, as
//! separate processes would be) drain them; events/s from the first claim to the last
//! delivery is printed. SQLite always, Postgres when `CRM_TEST_PG_URL` is set.

#![allow(missing_docs)]

#[path = "../tests/common/receiver.rs"]
mod receiver;

use std::time::{Duration, Instant};

use crm::leads::NewLead;
use crm::webhooks::{DispatcherConfig, NewEndpoint};
use crm::{Crm, MasterKey};
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 1000;

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
    let rx = receiver::Receiver::ok().await;
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
    for i in 0..EVENTS {
        let lead = NewLead {
            name: "Bench".into(),
            email: Some(format!("d{dispatchers}-{i}@bench.example")),
            ..Default::default()
        };
        first
            .workspace(ws)
            .leads()
            .create(lead)
            .await
            .expect("lead");
    }
    let stop = CancellationToken::new();
    let config = DispatcherConfig {
        concurrency: 16,
        per_endpoint: 16,
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
    for (backend, url) in targets {
        for n in [1, 2] {
            rt.block_on(run(backend, &url, n));
        }
    }
}
