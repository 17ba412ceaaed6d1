//! cargo bench --bench transfer
//! (with Postgres too: CRM_TEST_PG_URL=postgres://… cargo bench --features postgres --bench transfer;
//! sizes: CRM_BENCH_ROWS=10000,100000,1000000; one backend: CRM_BENCH_BACKEND=sqlite)
//!
//! CSV import and export of leads, timed once per size (criterion's repetitions
//! would import into a store that already holds the rows): an import of new leads,
//! the same file again (every row matched and unchanged: the upsert path), and an
//! export of them all. Each phase prints rows per second and the process's peak
//! resident memory during it (Linux: the peak is reset through
//! `/proc/self/clear_refs` before each phase), so a flat memory profile shows as the
//! same peak at 10,000 and 1,000,000 rows. `scripts/bench-transfer.sh` runs each size
//! in a process of its own.

#![allow(missing_docs)]

use std::io::Write;
use std::time::Instant;

use crm::leads::{ImportOptions, LeadQuery};
use crm::Crm;

fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mb(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.0} MB", k as f64 / 1024.0))
}

fn write_csv(path: &std::path::Path, rows: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("csv"));
    writeln!(
        out,
        "Name,Email,Phone,Company,Source,Status,Tags,custom.plan"
    )
    .expect("write");
    for i in 0..rows {
        let status = ["new", "contacted", "qualified"][i % 3];
        writeln!(
            out,
            "Person {i},person{i}@example{}.com,+3460{i:07},Company {},website,{status},\"vip, import\",plan-{}",
            i % 97,
            i % 1000,
            i % 5
        )
        .expect("write");
    }
    out.flush().expect("flush");
}

async fn run(backend: &str, rows: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = match backend {
        "sqlite" => format!("sqlite://{}", dir.path().join("bench.db").display()),
        _ => match std::env::var("CRM_TEST_PG_URL") {
            Ok(url) if cfg!(feature = "postgres") => url,
            _ => return,
        },
    };
    let csv = dir.path().join("leads.csv");
    write_csv(&csv, rows);
    let size = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0);
    let crm = Crm::connect(&url).await.expect("connect");
    // A workspace of its own, so a shared Postgres database starts empty for it.
    let ws = crm
        .create_workspace(&format!("transfer bench {rows}"))
        .await
        .expect("workspace");
    let leads = crm.workspace(ws).leads();
    println!(
        "{backend}, {rows} rows ({:.1} MB file), resident before: {}",
        size as f64 / 1e6,
        mb(peak_kib())
    );
    for phase in ["import (new leads)", "import again (all unchanged)"] {
        reset_peak();
        let file = std::fs::File::open(&csv).expect("open");
        let start = Instant::now();
        let report = leads
            .import(file, ImportOptions::default(), |_| {})
            .await
            .expect("import");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(report.failed, 0, "{:?}", report.errors.first());
        println!(
            "  {phase:<30} {secs:>7.2} s  {:>9.0} rows/s  peak {}  (created {}, updated {}, skipped {})",
            rows as f64 / secs,
            mb(peak_kib()),
            report.created,
            report.updated,
            report.skipped
        );
    }
    reset_peak();
    let start = Instant::now();
    let mut export = leads.export(&LeadQuery::default()).await.expect("export");
    let mut bytes = 0;
    let mut sink = std::io::sink();
    while let Some(chunk) = export.next_chunk().await.expect("chunk") {
        bytes += chunk.len();
        sink.write_all(&chunk).expect("write");
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(export.rows(), rows as u64);
    println!(
        "  {:<30} {secs:>7.2} s  {:>9.0} rows/s  peak {}  ({:.1} MB of CSV)",
        "export (all)",
        rows as f64 / secs,
        mb(peak_kib()),
        bytes as f64 / 1e6
    );
    crm.close().await;
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let sizes: Vec<usize> = std::env::var("CRM_BENCH_ROWS")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let backends: Vec<String> = match std::env::var("CRM_BENCH_BACKEND") {
        Ok(b) => vec![b],
        Err(_) => vec!["sqlite".into(), "postgres".into()],
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for backend in &backends {
        for &rows in &sizes {
            rt.block_on(run(backend, rows));
        }
    }
}
