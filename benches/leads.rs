//! cargo bench --bench leads
//! (with Postgres too: CRM_TEST_PG_URL=postgres://… cargo bench --features postgres --bench leads)
//!
//! The lead store at 10k and 100k leads: create, get, the first page of a listing, a
//! page 500 deep reached by cursor (keyset: it should cost what the first page costs),
//! a search whose word matches 1% of the leads (first page), duplicate detection over
//! every lead, and the statistics of a dashboard (every lead created within the
//! 30-day series, one in ten contacted).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use crm::leads::{LeadPatch, LeadQuery, NewLead, StatsQuery};
use crm::{Crm, LeadId, Leads};
use tokio::runtime::Runtime;

const SIZES: [usize; 2] = [10_000, 100_000];
const WORDS: [&str; 12] = [
    "website", "shop", "redesign", "logo", "urgent", "budget", "mobile", "app", "booking", "seo",
    "brand", "catalog",
];

struct Store {
    leads: Leads,
    ids: Vec<LeadId>,
    deep_cursor: String,
    _dir: Option<tempfile::TempDir>,
}

fn new_lead(i: usize) -> NewLead {
    // Every 100th lead mentions "zephyr": a search term that matches 1% of them.
    let extra = if i.is_multiple_of(100) { " zephyr" } else { "" };
    NewLead {
        name: format!("Person {i}"),
        email: Some(format!("person{i}@example{}.com", i % 97)),
        company: Some(format!("Company {}", i % 1000)),
        message: Some(format!(
            "{} {} {}{extra}",
            WORDS[i % 12],
            WORDS[(i / 12) % 12],
            WORDS[(i / 144) % 12]
        )),
        source: Some(
            if i.is_multiple_of(2) {
                "website"
            } else {
                "referral"
            }
            .into(),
        ),
        ..Default::default()
    }
}

async fn seed(leads: &Leads, n: usize) -> Vec<LeadId> {
    // Eight writers at once: SQLite serialises them, Postgres overlaps them.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let leads = leads.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (w..n).step_by(8) {
                ids.push(leads.create(new_lead(i)).await.expect("seed").id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.expect("join"));
    }
    ids
}

async fn open(backend: &str, n: usize) -> Option<Store> {
    let (url, dir) = match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().expect("temp dir");
            (
                format!("sqlite://{}", dir.path().join("bench.db").display()),
                Some(dir),
            )
        }
        _ if cfg!(feature = "postgres") => (std::env::var("CRM_TEST_PG_URL").ok()?, None),
        _ => return None,
    };
    let crm = Crm::connect(&url).await.expect("connect");
    // A workspace of its own, so a shared Postgres database starts empty for the bench.
    let ws = crm
        .create_workspace(&format!("bench {n}"))
        .await
        .expect("workspace");
    let leads = crm.workspace(ws).leads();
    let ids = seed(&leads, n).await;
    // One lead in ten is contacted: the funnel and the time to contact have data.
    for id in ids.iter().step_by(10) {
        let patch = LeadPatch {
            status: Some("contacted".into()),
            ..Default::default()
        };
        leads.update(*id, patch).await.expect("contact");
    }
    let mut q = LeadQuery {
        limit: Some(20),
        ..Default::default()
    };
    for _ in 0..499 {
        q.cursor = leads.list(&q).await.expect("list").next_cursor;
    }
    Some(Store {
        leads,
        ids,
        deep_cursor: q.cursor.expect("500 pages"),
        _dir: dir,
    })
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let counter = AtomicU64::new(0);
    for n in SIZES {
        for backend in ["sqlite", "postgres"] {
            let Some(store) = rt.block_on(open(backend, n)) else {
                continue;
            };
            let leads = &store.leads;
            let mut g = c.benchmark_group(format!("leads/{backend}/{n}"));
            g.sample_size(30)
                .measurement_time(Duration::from_secs(4))
                .warm_up_time(Duration::from_secs(1));
            g.bench_function("create", |b| {
                b.iter(|| {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let input = NewLead {
                        email: Some(format!("new{i}@bench.example")),
                        ..new_lead(1)
                    };
                    rt.block_on(leads.create(input)).expect("create")
                })
            });
            let mut k = 0usize;
            g.bench_function("get", |b| {
                b.iter(|| {
                    k = (k + 7919) % store.ids.len();
                    rt.block_on(leads.get(store.ids[k])).expect("get")
                })
            });
            let first = LeadQuery {
                limit: Some(20),
                ..Default::default()
            };
            g.bench_function(BenchmarkId::new("list", "first page"), |b| {
                b.iter(|| rt.block_on(leads.list(&first)).expect("list"))
            });
            let deep = LeadQuery {
                cursor: Some(store.deep_cursor.clone()),
                ..first.clone()
            };
            g.bench_function(BenchmarkId::new("list", "page 500"), |b| {
                b.iter(|| rt.block_on(leads.list(&deep)).expect("list"))
            });
            let search = LeadQuery {
                q: Some("zephyr".into()),
                ..first.clone()
            };
            g.bench_function(BenchmarkId::new("search", "1% match, first page"), |b| {
                b.iter(|| rt.block_on(leads.list(&search)).expect("search"))
            });
            g.bench_function(BenchmarkId::new("duplicates", "every lead"), |b| {
                b.iter(|| rt.block_on(leads.duplicates(100)).expect("duplicates"))
            });
            let stats = StatsQuery::default();
            g.bench_function(BenchmarkId::new("stats", "30 days by day"), |b| {
                b.iter(|| rt.block_on(leads.stats(&stats)).expect("stats"))
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
