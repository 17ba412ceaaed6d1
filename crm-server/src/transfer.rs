//! `crm leads import` and `crm leads export`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crm::leads::{Archived, ImportOptions, ImportStatus, LeadQuery, Progress};
use crm::Leads;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Failure, LeadsCommand};

/// Imports the file, showing progress on standard error.
pub(crate) async fn import(leads: &Leads, cmd: LeadsCommand) -> Result<ExitCode, Failure> {
    let LeadsCommand::Import {
        file,
        dry_run,
        map,
        delimiter,
        skip_rows,
        lead_events,
    } = cmd
    else {
        return Err(Failure::Other("not an import".into()));
    };
    let mut mapping = std::collections::BTreeMap::new();
    for m in map {
        let Some((header, field)) = m.rsplit_once('=') else {
            return Err(Failure::Other(format!(
                "--map {m:?}: expected HEADER=FIELD"
            )));
        };
        mapping.insert(header.trim().to_owned(), field.trim().to_owned());
    }
    let options = ImportOptions {
        dry_run,
        mapping,
        delimiter,
        skip_rows,
        lead_events,
    };
    let open = |path: &std::path::Path| {
        std::fs::File::open(path)
            .map_err(|e| Failure::Other(format!("cannot open {}: {e}", path.display())))
    };
    // Counted first, for the bar's length (a fast pass of the same reader).
    let counting = open(&file)?;
    let total = tokio::task::spawn_blocking(move || crm::leads::import::count_rows(counting))
        .await
        .ok()
        .and_then(Result::ok);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} rows  {per_sec}  eta {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(skip_rows);
        bar
    });
    let mut last_line = Instant::now();
    let mut done = skip_rows;
    let show = |p: &Progress| {
        done = p.rows_done;
        let counts = format!(
            "{} created, {} updated, {} skipped, {} failed",
            p.created, p.updated, p.skipped, p.failed
        );
        match &bar {
            Some(bar) => {
                bar.set_position(p.rows_done);
                bar.set_message(counts);
            }
            None if last_line.elapsed() >= Duration::from_secs(1)
                || total.is_some_and(|t| p.rows_done >= t) =>
            {
                last_line = Instant::now();
                let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                eprintln!(
                    "crm: {}{of} rows, {counts}, {:.0} rows/s",
                    p.rows_done, p.rows_per_sec
                );
            }
            None => {}
        }
    };
    let report = leads.import(open(&file)?, options, show).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report.map_err(|e| match e {
        crm::Error::Validation { .. } => Failure::from(e),
        _ if dry_run => Failure::from(e),
        _ => Failure::Other(format!(
            "{e} (the first {done} rows are imported: resume with --skip-rows {done})"
        )),
    })?;
    say!(
        "{}{} rows: {} created, {} updated, {} skipped, {} failed",
        if report.dry_run { "dry run: " } else { "" },
        report.rows_done,
        report.created,
        report.updated,
        report.skipped,
        report.failed
    );
    if !report.ignored_columns.is_empty() {
        say!("ignored columns: {}", report.ignored_columns.join(", "));
    }
    for e in &report.errors {
        say!(
            "row {} (line {}){}: {}",
            e.row,
            e.line,
            e.field
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default(),
            e.message
        );
    }
    if report.failed > report.errors.len() as u64 {
        say!(
            "… and {} more failed rows",
            report.failed - report.errors.len() as u64
        );
    }
    if let Some(e) = &report.error {
        say!(
            "stopped: {} (resume with --skip-rows {})",
            e.message,
            report.rows_done
        );
    }
    Ok(
        if report.status == ImportStatus::Completed && report.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

/// Streams the export to the file or standard output; a closed pipe ends it quietly.
pub(crate) async fn export(leads: &Leads, cmd: LeadsCommand) -> Result<ExitCode, Failure> {
    let LeadsCommand::Export {
        output,
        status,
        source,
        tags,
        q,
        archived,
    } = cmd
    else {
        return Err(Failure::Other("not an export".into()));
    };
    let archived = match archived.as_deref() {
        Some("true") => Archived::Only,
        Some("any") => Archived::Include,
        _ => Archived::Hide,
    };
    let query = LeadQuery {
        status,
        source,
        tags,
        q,
        archived,
        ..LeadQuery::default()
    };
    let mut export = leads.export(&query).await?;
    let mut out: Box<dyn Write> = match &output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| Failure::Other(format!("cannot create {}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    while let Some(chunk) = export.next_chunk().await? {
        match out.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(Failure::Other(format!("cannot write the export: {e}"))),
        }
    }
    if let Err(e) = out.flush() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Failure::Other(format!("cannot write the export: {e}")));
        }
    }
    if let Some(path) = output {
        eprintln!(
            "crm: exported {} leads to {}",
            export.rows(),
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
