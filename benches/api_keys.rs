//! cargo bench --bench api_keys
//! (with Postgres too: CRM_TEST_PG_URL=postgres://… cargo bench --features postgres --bench api_keys)
//!
//! API-key verification with a cache hit, with a miss (the cache off, so every call
//! reads the database), and a malformed key (refused before any lookup); and one
//! rate-limiter decision in memory and on Postgres.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use crm::api_keys::NewApiKey;
use crm::ratelimit::{MemoryStore, Policy, RateLimiter};
use crm::{Crm, SystemClock, WorkspaceId};
use tokio::runtime::Runtime;

fn url(backend: &str, dir: &tempfile::TempDir) -> Option<String> {
    match backend {
        "sqlite" => Some(format!("sqlite://{}", dir.path().join("keys.db").display())),
        _ if cfg!(feature = "postgres") => std::env::var("CRM_TEST_PG_URL").ok(),
        _ => None,
    }
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut g = c.benchmark_group("api_keys");
    g.sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    for backend in ["sqlite", "postgres"] {
        let Some(url) = url(backend, &dir) else {
            continue;
        };
        let crm = rt.block_on(Crm::connect(&url)).expect("connect");
        let created = rt
            .block_on(
                crm.workspace(WorkspaceId::DEFAULT)
                    .api_keys()
                    .create(NewApiKey {
                        name: "bench".into(),
                        scopes: vec!["leads:*".into()],
                        expires_at: None,
                    }),
            )
            .expect("create");
        let key = created.secret.expose().to_owned();
        if backend == "sqlite" {
            rt.block_on(crm.verify_api_key(&key))
                .expect("warm the cache");
            g.bench_function("verify/cache hit", |b| {
                b.iter(|| rt.block_on(crm.verify_api_key(&key)).expect("ok"))
            });
            let mut bad = key.clone();
            bad.replace_range(6..7, if &bad[6..7] == "A" { "B" } else { "A" });
            g.bench_function("verify/malformed", |b| {
                b.iter(|| {
                    rt.block_on(crm.verify_api_key(&bad))
                        .expect_err("malformed")
                })
            });
        }
        let uncached = rt
            .block_on(
                Crm::builder()
                    .database_url(&url)
                    .api_key_cache_ttl(Duration::ZERO)
                    .connect(),
            )
            .expect("connect");
        g.bench_function(format!("verify/cache miss/{backend}"), |b| {
            b.iter(|| rt.block_on(uncached.verify_api_key(&key)).expect("ok"))
        });
        if backend == "postgres" {
            let mut i = 0u64;
            g.bench_function("ratelimit/postgres", |b| {
                b.iter(|| {
                    i += 1;
                    rt.block_on(
                        crm.rate_limiter()
                            .check("api_key", &format!("k{}", i % 1000)),
                    )
                    .expect("check")
                })
            });
        }
    }

    let memory = RateLimiter::with_store(
        Arc::new(MemoryStore::default()),
        Arc::new(SystemClock),
        vec![(
            "bench".into(),
            Policy::per_minute(1_000_000).expect("policy"),
        )],
    )
    .expect("limiter");
    let mut i = 0u64;
    g.bench_function("ratelimit/memory", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(memory.check("api_key", &format!("k{}", i % 1000)))
                .expect("check")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
