//! CSV export of a lead listing ([`crate::Leads::export`]), streamed a page at a
//! time.
//!
//! The columns are every field of a lead (`id`, …, `archived_at`, `owner_id`,
//! `contact_id`; the import ignores those two) and then one
//! `custom.KEY` column per custom-field key the workspace's leads use (sorted; at
//! most [`CUSTOM_COLUMNS_MAX`]), so a file exported and imported again maps by
//! itself. Tags are joined with `, `; times are RFC 3339 UTC; custom values that are
//! not text are written as JSON. A cell that a spreadsheet would run as a formula
//! (starting with `=`, `+`, `-`, `@`, a tab or a carriage return: a phone in E.164
//! is one) gets a `'` in front, as OWASP advises, and so does one starting with `'`;
//! every cell is quoted. The import takes one `'` off again.

use chrono::SecondsFormat;
use serde_json::Value;

use super::cursor::Cursor;
use super::model::{Lead, SortField, SortOrder};
use super::parse;
use crate::{store, Error, Result};

/// The most `custom.KEY` columns an export writes; a workspace using more keys
/// cannot be exported (the error says so).
pub const CUSTOM_COLUMNS_MAX: usize = 256;

/// Leads read per page (and per chunk).
const PAGE: u32 = 500;

const COLUMNS: &[&str] = &[
    "id",
    "name",
    "email",
    "phone",
    "company",
    "budget",
    "project_type",
    "message",
    "source",
    "status",
    "notes",
    "tags",
    "raw_input",
    "ai_parsed",
    "created_at",
    "updated_at",
    "archived_at",
    "owner_id",
    "contact_id",
];

/// An export in progress: call [`Export::next_chunk`] until it answers `None`.
#[derive(Debug)]
pub struct Export {
    leads: super::Leads,
    query: parse::Query,
    sort: SortField,
    order: SortOrder,
    fingerprint: String,
    after: Option<Cursor>,
    custom_keys: Vec<String>,
    started: bool,
    done: bool,
    rows: u64,
}

impl Export {
    pub(crate) async fn new(leads: super::Leads, input: &super::LeadQuery) -> Result<Self> {
        let mut query = parse::query(input)?;
        query.limit = PAGE;
        let custom_keys =
            store::leads::custom_keys(leads.crm.pool(), leads.ws, CUSTOM_COLUMNS_MAX).await?;
        if custom_keys.len() > CUSTOM_COLUMNS_MAX {
            return Err(Error::invalid(
                "custom",
                format!("the leads use more than {CUSTOM_COLUMNS_MAX} custom-field keys; an export writes at most that many columns"),
            ));
        }
        Ok(Self {
            fingerprint: query.fingerprint(),
            leads,
            query,
            sort: input.sort,
            order: input.order,
            after: None,
            custom_keys,
            started: false,
            done: false,
            rows: 0,
        })
    }

    /// The next part of the file (the header with the first page, then a page of
    /// leads each), or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let (mut page, _) = store::leads::list(
            self.leads.crm.pool(),
            self.leads.ws,
            &self.query,
            self.sort,
            self.order,
            self.after.take(),
            false,
        )
        .await?;
        if page.len() > PAGE as usize {
            page.truncate(PAGE as usize);
            self.after = page
                .last()
                .map(|l| Cursor::after(l, self.sort, self.order, &self.fingerprint));
        } else {
            self.done = true;
        }
        // Every cell quoted: a spreadsheet that splits on `;` cannot start a cell
        // inside one.
        let mut w = ::csv::WriterBuilder::new()
            .quote_style(::csv::QuoteStyle::Always)
            .from_writer(Vec::with_capacity(256 * (page.len() + 1)));
        if !self.started {
            self.started = true;
            let custom = self.custom_keys.iter().map(|k| format!("custom.{k}"));
            let header: Vec<String> = COLUMNS
                .iter()
                .map(|c| c.to_string())
                .chain(custom)
                .collect();
            w.write_record(header.iter().map(|h| escape(h).into_owned()))
                .map_err(write_error)?;
        }
        for lead in &page {
            let cells = cells(lead, &self.custom_keys);
            w.write_record(
                cells
                    .iter()
                    .map(|c| escape(c))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(|c| c.as_bytes()),
            )
            .map_err(write_error)?;
        }
        self.rows += page.len() as u64;
        w.into_inner()
            .map(Some)
            .map_err(|e| write_error(e.into_error().into()))
    }

    /// The leads written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

fn write_error(e: ::csv::Error) -> Error {
    Error::Config(format!("a CSV row could not be written: {e}"))
}

/// What a cell may not start with as written: a spreadsheet would take it for a
/// formula (or, `'`, for the escape itself).
pub(crate) const ESCAPED: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\''];

/// A cell as written: `'` before what a spreadsheet would take for a formula, and
/// before a `'` (so the import takes off exactly one).
pub(crate) fn escape(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(ESCAPED) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

fn cells(l: &Lead, custom_keys: &[String]) -> Vec<String> {
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut out = vec![
        l.id.to_string(),
        l.name.clone(),
        l.email
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        l.phone
            .as_ref()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        text(&l.company),
        text(&l.budget),
        text(&l.project_type),
        text(&l.message),
        text(&l.source),
        l.status.as_str().to_owned(),
        text(&l.notes),
        l.tags.join(", "),
        text(&l.raw_input),
        l.ai_parsed.to_string(),
        time(l.created_at),
        time(l.updated_at),
        l.archived_at.map(time).unwrap_or_default(),
        l.owner_id.map(|u| u.to_string()).unwrap_or_default(),
        l.contact_id.map(|c| c.to_string()).unwrap_or_default(),
    ];
    out.extend(custom_keys.iter().map(|k| match l.custom.get(k) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }));
    out
}
