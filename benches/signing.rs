//! cargo bench --bench signing
//!
//! The webhook signing path against the bare HMAC-SHA256 it is built on, one group per
//! body size, so the overhead is a ratio read off one run: `sign` (stream the pieces
//! into the pre-keyed state, base64 into a stack buffer), `verify` (parse headers, check
//! the timestamp, compute, decode, compare in constant time), and `hmac baseline` (the
//! same crates, a pre-keyed state, one update over the already-joined signed content).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crm::webhooks::signing::{WebhookSecret, SIGNATURE_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
const TS: i64 = 1_700_000_000;

fn bench(c: &mut Criterion) {
    let secret = WebhookSecret::generate();
    let signer = secret.signer();
    let keyed = <Hmac<Sha256> as Mac>::new_from_slice(secret.bytes()).expect("key");
    for (label, size) in [
        ("256 B", 256),
        ("1 KiB", 1024),
        ("16 KiB", 16 * 1024),
        ("1 MiB", 1024 * 1024),
    ] {
        let body: Vec<u8> = (0..size)
            .map(|i| b"{\"lead\":\"abcdefghij\"}"[i % 21])
            .collect();
        let content = [ID.as_bytes(), b".", TS.to_string().as_bytes(), b".", &body].concat();
        let header = signer.sign(ID, TS, &body);
        let mut g = c.benchmark_group(format!("signing/{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        if size >= 1024 * 1024 {
            g.sample_size(20).measurement_time(Duration::from_secs(4));
        }
        g.bench_function("hmac baseline", |b| {
            b.iter(|| {
                let mut m = keyed.clone();
                m.update(black_box(&content));
                black_box(m.finalize().into_bytes())
            })
        });
        g.bench_function("sign", |b| {
            let mut out = [0u8; SIGNATURE_LEN];
            b.iter(|| {
                black_box(
                    signer
                        .sign_to(black_box(ID), TS, black_box(&body), &mut out)
                        .len(),
                )
            })
        });
        g.bench_function("verify", |b| {
            b.iter(|| {
                signer
                    .verify(
                        black_box(ID),
                        "1700000000",
                        black_box(&header),
                        black_box(&body),
                        TS,
                    )
                    .expect("ok")
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
