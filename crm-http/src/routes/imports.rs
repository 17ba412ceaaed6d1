//! CSV import of leads (a polled job), served with the lead routes under `/api/v1`
//! and `/api/admin` (the export is a lead listing: `leads::export_leads`).
//!
//! Decided: the file is the request body itself (`Content-Type: text/csv`), the
//! options are query parameters, as with Stripe's file uploads it is not
//! multipart. The body is streamed to an anonymous temporary file (in the system's
//! temporary directory, gone when the import ends) up to [`crate::Config::import_limit`]
//! and must arrive within the server's body timeout (`Limits::body_timeout`, 30 s by
//! default: a large file over a slow link needs a longer one); the import then runs in the
//! background of the process that took it. An `Idempotency-Key` is not replayed
//! for an import (the body is too large to fingerprint); sending the file again is
//! safe, as rows already imported are `skipped`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_core::leads::{ImportOptions, ImportReport};
use crm_core::{Error, ImportId};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use utoipa::IntoParams;

use super::leads::leads;
use crate::extract::{Caller, Path, Query};
use crate::problem::{ApiResult, Problem};
use crate::AppState;

/// Query of `POST /imports`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ImportParams {
    /// Check and count every row, write nothing.
    dry_run: Option<bool>,
    /// `,` or `;` (default: found from the header line).
    #[param(pattern = "^[,;]$", example = ",")]
    delimiter: Option<char>,
    /// Data rows to pass over first: the `rows_done` of an interrupted import.
    #[param(minimum = 0, example = 0)]
    skip_rows: Option<u64>,
    /// Also emit `lead.created` / `lead.updated` per lead.
    lead_events: Option<bool>,
    /// Header → field, as a JSON object (`{"E-mail address":"email","Plan":"custom.plan"}`).
    #[param(pattern = r"^\s*\{", example = r#"{"E-mail address":"email"}"#)]
    mapping: Option<String>,
}

/// Import leads from a CSV file (the request body, up to the server's import
/// limit): a job that runs in the background. Rows are upserted by email, then
/// phone; a bad row is reported with its row, line and field and the rest goes in.
/// Poll `GET /imports/{id}` for its progress and report.
#[utoipa::path(post, path = "/imports", tag = "leads", params(ImportParams),
    request_body(content = String, content_type = "text/csv", description = "The CSV file, its first line a header",
        example = "name,email\nAna López,ana.import@example.com\n"),
    responses((status = 202, description = "The import, started", body = ImportReport),
              (status = 413, description = "The file is larger than the import limit", body = crate::Problem)))]
pub(crate) async fn start_import(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<ImportParams>,
    body: Body,
) -> ApiResult<Response> {
    c.require("leads:write")?;
    let mapping = match p.mapping.as_deref() {
        Some(m) => serde_json::from_str(m)
            .map_err(|_| Error::invalid("mapping", "must be a JSON object of header to field"))?,
        None => Default::default(),
    };
    let options = ImportOptions {
        dry_run: p.dry_run.unwrap_or(false),
        mapping,
        delimiter: p.delimiter,
        skip_rows: p.skip_rows.unwrap_or(0),
        lead_events: p.lead_events.unwrap_or(false),
    };
    options.check()?;
    let file = spool(body, s.cfg.import_limit).await?;
    let report = leads(&s, &c).start_import(file, options).await?;
    let mut res = (StatusCode::ACCEPTED, axum::Json(&report)).into_response();
    if let Ok(v) = HeaderValue::from_str(&report.id.to_string()) {
        res.headers_mut().insert("x-import-id", v);
    }
    Ok(res)
}

/// Writes the body to an anonymous temporary file, at most `limit` bytes (413
/// past it, before the rest is read).
async fn spool(body: Body, limit: usize) -> ApiResult<std::fs::File> {
    let failed = |e: std::io::Error| {
        tracing::error!(error = %e, "an import's temporary file could not be written");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "the file could not be stored for the import",
        )
    };
    let file = tempfile::tempfile().map_err(failed)?;
    let mut out = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    let mut size = 0usize;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| {
            crate::extract::body_timed_out(&e).unwrap_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "body_unreadable",
                    "the body could not be read",
                )
            })
        })?;
        size += chunk.len();
        if size > limit {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the file must be at most {limit} bytes"),
            )
            .into());
        }
        out.write_all(&chunk).await.map_err(failed)?;
    }
    out.flush().await.map_err(failed)?;
    Ok(out.into_std().await)
}

/// An import: where it stands (`running`, `completed`, `failed`, `interrupted`),
/// its counts and its first row errors. `rows_done` is what is committed: send the
/// file again with `skip_rows` set to it to finish an interrupted import.
#[utoipa::path(get, path = "/imports/{id}", tag = "leads",
    params(("id" = ImportId, Path, description = "The import id")),
    responses((status = 200, description = "The import", body = ImportReport),
              (status = 404, description = "No such import in the workspace", body = crate::Problem)))]
pub(crate) async fn get_import(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<ImportId>,
) -> ApiResult<axum::Json<ImportReport>> {
    c.require("leads:read")?;
    Ok(axum::Json(leads(&s, &c).import_report(id).await?))
}
