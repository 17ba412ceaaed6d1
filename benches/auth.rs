//! cargo bench --bench auth
//!
//! Argon2id hash and verify at the default parameters (criterion), then the point of
//! running them on the blocking pool: a cheap async task that sleeps 1 ms in a loop
//! measures how late it wakes, first alone and then during a storm of 64 concurrent
//! logins, on a 2-worker runtime. Its p50/p99 are printed.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::time::{Duration, Instant};

use criterion::Criterion;
use crm::auth::{Actor, Login, NewUser};
use crm::Crm;
use tokio::runtime::Runtime;

const PW: &str = "Correct-Horse-9-Battery";

fn passwords(c: &mut Criterion, rt: &Runtime, crm: &Crm) {
    let phc = rt.block_on(crm.hash_password(PW)).expect("hash");
    let mut g = c.benchmark_group("auth/argon2id m=19456 t=2 p=1");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("hash", |b| {
        b.iter(|| rt.block_on(crm.hash_password(PW)).expect("hash"))
    });
    g.bench_function("verify", |b| {
        b.iter(|| rt.block_on(crm.verify_password(PW, &phc)).expect("verify"))
    });
    g.finish();
}

/// Wake-up lateness of a task that sleeps 1 ms, `n` times: (p50, p99).
async fn probe(n: usize) -> (Duration, Duration) {
    let mut late = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(1)).await;
        late.push(t.elapsed().saturating_sub(Duration::from_millis(1)));
    }
    late.sort();
    (late[n / 2], late[n * 99 / 100])
}

fn storm(rt: &Runtime, crm: &Crm) {
    let (quiet50, quiet99) = rt.block_on(probe(2000));
    let (storm50, storm99, logins, took) = rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let crm = crm.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while started.elapsed() < Duration::from_secs(4) {
                    let login = Login {
                        email: "ana@example.com".into(),
                        password: PW.into(),
                        ..Default::default()
                    };
                    crm.auth().login(login).await.expect("login");
                    n += 1;
                }
                n
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (p50, p99) = probe(2000).await;
        let mut logins = 0;
        for t in tasks {
            logins += t.await.expect("join");
        }
        (p50, p99, logins, started.elapsed())
    });
    println!("probe task (sleep 1 ms) wake-up lateness on a 2-worker runtime:");
    println!("  quiet:                      p50 {quiet50:>10.1?}  p99 {quiet99:>10.1?}");
    println!("  during 64 concurrent logins: p50 {storm50:>10.1?}  p99 {storm99:>10.1?}  ({logins} logins in {took:.1?})");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("auth.db").display());
    let crm = rt.block_on(Crm::connect(&url)).expect("connect");
    let user = NewUser {
        email: "ana@example.com".into(),
        display_name: "Ana".into(),
        role: None,
        password: PW.into(),
    };
    rt.block_on(crm.auth().create_user(user, Actor::App(None)))
        .expect("user");

    let mut c = Criterion::default().configure_from_args();
    passwords(&mut c, &rt, &crm);
    c.final_summary();
    storm(&rt, &crm);
}
