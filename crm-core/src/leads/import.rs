//! CSV import of leads ([`crate::Leads::import`]) and its report.
//!
//! The file is streamed, never loaded whole: a blocking thread reads and checks
//! [`BATCH_ROWS`] rows at a time while the previous batch is written, each batch in
//! one transaction, so memory stays flat whatever the file's size.
//!
//! Decisions where the issue is silent, as a user of Twenty's or HubSpot's import
//! would expect:
//! - **Columns.** A header names each column. Without a `mapping` entry a header
//!   is matched to a lead field by name (trimmed, case and `-`/space aside:
//!   `Project Type` is `project_type`); `custom.KEY` is the custom field `KEY`;
//!   any other column is ignored and named in [`ImportReport::ignored_columns`].
//!   A `mapping` entry (`header → field`, `custom.KEY`, or `""` to ignore) wins.
//!   A file needs an email or a phone column.
//! - **Cells.** UTF-8, with or without a BOM; `,` or `;` (found from the header
//!   line when not given), quoted cells as RFC 4180. An empty cell is no value.
//!   `tags` are split on `,` and `;` (a tag holding one does not come back whole).
//!   A cell that an export escaped (`'` before `= + - @`, tab, carriage return or
//!   `'`) is read back without that `'`. `\r\n` and `\n` line ends both work; blank
//!   lines are not rows. A header repeated is read in its first column only.
//! - **Upsert.** A row is the lead with its email (first) or else its phone: that
//!   lead gets the row's non-empty cells (tags and custom fields are added to),
//!   a row that changes nothing is `skipped`. A row whose email and phone are two
//!   different leads' fails, and so does a row matching an archived lead (restore
//!   it first). A new lead needs a name. A status that changes writes the
//!   `status_change` entry on the timeline.
//! - **Events.** One `leads.imported` event per import that wrote anything, with
//!   its counts (`rows` is `rows_done`, passed-over rows included), also for one
//!   that stopped on an error; `lead.created`/`lead.updated` per lead only with
//!   `lead_events`.
//! - **Dry run.** Each batch is written and rolled back, so a dry run checks what
//!   the database would (and holds no more memory than an import). A row repeating
//!   a key that an earlier batch would have created counts as `created` again.
//! - **Resuming.** Rows are committed a batch at a time and
//!   [`ImportReport::rows_done`] counts the rows committed: importing the same file
//!   again with `skip_rows` set to it carries on where an interrupted import
//!   stopped (running it again whole is also safe: rows already imported are
//!   `skipped`).
//! - **Bad files.** A bad row is a [`RowError`] (row, line, field, message) and the
//!   import goes on. What makes the rest unreadable stops it, with the position:
//!   a row over [`ROW_BYTES_MAX`] (an unclosed quote ends in one), a header of more
//!   than [`COLUMNS_MAX`] columns or not UTF-8, an I/O error. The rows before stay
//!   imported (see resuming). A header cell over [`HEADER_MAX`] characters or
//!   holding control characters is an ignored column.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::model::{Lead, NewLead};
use super::parse::{self, Fields, LeadRules};
use super::rules;
use super::values::Email;
use crate::error::Errors;
use crate::ids::{ImportId, LeadId, WorkspaceId};
use crate::Result;

/// Rows read, checked and written together (one transaction each).
pub const BATCH_ROWS: usize = 1000;
/// The most columns a file may have.
pub const COLUMNS_MAX: usize = 256;
/// The longest row (header included), in bytes (give or take the 128 KiB the
/// readers buffer).
pub const ROW_BYTES_MAX: u64 = 1 << 20;
/// The row errors a report keeps (the first ones; `failed` counts every row that
/// failed, which may have several errors).
pub const ERRORS_MAX: usize = 100;
/// The longest header cell, in characters.
pub const HEADER_MAX: usize = 200;

/// The lead fields a column can be mapped to (besides `custom.KEY`).
pub const FIELDS: &[&str] = &[
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
];

/// How to read a file.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportOptions {
    /// Check and count every row, write nothing.
    pub dry_run: bool,
    /// Header → field (`name`, …, `custom.KEY`; `""` ignores the column), for the
    /// headers that do not name their field.
    pub mapping: BTreeMap<String, String>,
    /// `,` or `;`; found from the header line when absent.
    pub delimiter: Option<char>,
    /// Data rows to pass over first: the `rows_done` of an interrupted import.
    pub skip_rows: u64,
    /// Also emit `lead.created` / `lead.updated` per lead (the one
    /// `leads.imported` event is always emitted).
    pub lead_events: bool,
}

impl ImportOptions {
    /// Checks what can be checked before the file is read: the delimiter, and the
    /// size of the mapping (an HTTP upload is checked before its body is read).
    pub fn check(&self) -> Result<()> {
        let mut e = Errors::default();
        if self.delimiter.is_some_and(|d| d != ',' && d != ';') {
            e.add("delimiter", "must be , or ;");
        }
        if self.mapping.len() > COLUMNS_MAX {
            e.add("mapping", format!("at most {COLUMNS_MAX} columns"));
        }
        e.finish()
    }
}

/// Where an import stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Still reading (a tracked import, [`crate::Leads::start_import`]).
    Running,
    /// Every row was read (some may have failed: see `failed`).
    Completed,
    /// The file could not be read on (see `error`); the rows before it are imported.
    Failed,
    /// A tracked import whose process stopped before the end (no progress for
    /// [`STALE_SECS`] seconds); resume it with `skip_rows = rows_done`.
    Interrupted,
}

/// A tracked import with no progress for this long is reported `interrupted`.
pub const STALE_SECS: i64 = 120;

/// A row that was not imported, or what stopped the file.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// The data row (1 is the row after the header; 0 is the header).
    pub row: u64,
    /// The line of the file it starts on (1 is the header).
    pub line: u64,
    /// The field (or, before mapping, the column) at fault, when one is.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// What an import did (or, for a dry run, would do).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Its id (the `import_id` of its `leads.imported` event).
    pub id: ImportId,
    /// Where it stands.
    pub status: ImportStatus,
    /// Whether it wrote nothing.
    pub dry_run: bool,
    /// The data rows of the file, when counted first (tracked imports).
    pub total_rows: Option<u64>,
    /// Data rows read and committed (for a dry run: checked; passed-over
    /// `skip_rows` included): the `skip_rows` that resumes it.
    pub rows_done: u64,
    /// Rows that created a lead.
    pub created: u64,
    /// Rows that changed an existing lead (or one an earlier row created).
    pub updated: u64,
    /// Rows that matched a lead and changed nothing.
    pub skipped: u64,
    /// Rows not imported; the first [`ERRORS_MAX`] errors are in `errors`.
    pub failed: u64,
    /// The first row errors.
    pub errors: Vec<RowError>,
    /// Columns no field was found for.
    pub ignored_columns: Vec<String>,
    /// What stopped the file, when something did.
    pub error: Option<RowError>,
    /// When it started (UTC).
    pub created_at: DateTime<Utc>,
    /// When it last made progress (UTC).
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Progress, reported after each batch.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// Data rows done so far.
    pub rows_done: u64,
    /// The data rows of the file, when known.
    pub total_rows: Option<u64>,
    /// Rows that created, changed, passed over or failed so far.
    pub created: u64,
    /// See `created`.
    pub updated: u64,
    /// See `created`.
    pub skipped: u64,
    /// See `created`.
    pub failed: u64,
    /// Rows per second since the start.
    pub rows_per_sec: f64,
}

impl ImportReport {
    pub(crate) fn new(dry_run: bool, total_rows: Option<u64>, now: DateTime<Utc>) -> Self {
        Self {
            id: ImportId::new(),
            status: ImportStatus::Running,
            dry_run,
            total_rows,
            rows_done: 0,
            created: 0,
            updated: 0,
            skipped: 0,
            failed: 0,
            errors: Vec::new(),
            ignored_columns: Vec::new(),
            error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    pub(crate) fn fail_row(&mut self, errors: impl IntoIterator<Item = RowError>) {
        self.failed += 1;
        for e in errors {
            if self.errors.len() < ERRORS_MAX {
                self.errors.push(e);
            }
        }
    }

    pub(crate) fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Failed(e) => self.fail_row([e]),
            Outcome::Invalid(e) => self.fail_row(e),
        }
    }

    pub(crate) fn progress(&self, rows_per_sec: f64) -> Progress {
        Progress {
            rows_done: self.rows_done,
            total_rows: self.total_rows,
            created: self.created,
            updated: self.updated,
            skipped: self.skipped,
            failed: self.failed,
            rows_per_sec,
        }
    }

    /// The status as read back: a running import with no progress for
    /// [`STALE_SECS`] is interrupted.
    pub(crate) fn seen_at(mut self, now: DateTime<Utc>) -> Self {
        if self.status == ImportStatus::Running
            && now.signed_duration_since(self.updated_at).num_seconds() > STALE_SECS
        {
            self.status = ImportStatus::Interrupted;
        }
        self
    }
}

/// Counts the data rows of a file (the header not counted), reading it once with
/// the same limits as an import; blocking.
pub fn count_rows(reader: impl Read) -> Result<u64> {
    let mut reader = BufReader::with_capacity(BUF, Guard::new(ended(reader)));
    let delimiter = sniff(&mut reader)?;
    let mut csv = csv_reader(reader, delimiter);
    let mut record = ::csv::ByteRecord::new();
    let mut n: u64 = 0;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) if blank(&record) => {
                csv.get_ref().get_ref().allow(csv.position().byte());
            }
            Ok(true) => {
                n += 1;
                csv.get_ref().get_ref().allow(csv.position().byte());
            }
            Ok(false) => return Ok(n.saturating_sub(1)),
            Err(e) => return Err(crate::Error::invalid("file", read_error(&e, n, 0))),
        }
    }
}

/// What one row did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Created,
    Updated,
    Skipped,
    Failed(RowError),
    /// The row did not check out (its every error).
    Invalid(Vec<RowError>),
}

/// Where a column goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Field(&'static str),
    Custom(String),
    Ignore,
}

/// A checked row, ready to resolve against the workspace's leads.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) row: u64,
    pub(crate) line: u64,
    pub(crate) fields: Fields,
    /// Whether the row had a name (a new lead needs one; an update keeps the lead's).
    pub(crate) name_given: bool,
    /// Whether the row had a status (else an update keeps the lead's).
    pub(crate) status_given: bool,
}

/// A row as read: checked, or every error of it.
pub(crate) type Checked = std::result::Result<Row, Vec<RowError>>;

/// What the reading thread sends.
pub(crate) enum Chunk {
    /// The columns were mapped; these were ignored.
    Header(Result<Vec<String>>),
    /// A batch, in file order: each row checked, or every error of it.
    Rows { rows: Vec<Checked>, read: u64 },
    /// The file cannot be read on.
    Stop(RowError),
}

const BUF: usize = 64 * 1024;

/// Counts the bytes read and refuses to read on once the current row passes
/// [`ROW_BYTES_MAX`]: the csv crate grows its record without bound, so a 1 GiB cell
/// (or an unclosed quote) would otherwise be held whole.
struct Guard<R> {
    inner: R,
    read: u64,
    limit: Arc<AtomicU64>,
}

impl<R> Guard<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            read: 0,
            limit: Arc::new(AtomicU64::new(ROW_BYTES_MAX + 2 * BUF as u64)),
        }
    }

    /// A row ended at byte `at`: the next may read up to [`ROW_BYTES_MAX`] past it
    /// (plus what the two buffers hold).
    fn allow(&self, at: u64) {
        self.limit
            .store(at + ROW_BYTES_MAX + 2 * BUF as u64, Ordering::Relaxed);
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read > self.limit.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(TOO_LONG));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

const TOO_LONG: &str = "a row longer than 1 MiB (an unclosed quote?)";

/// The file with a line break after it, so every record ends in one (an empty
/// last line is skipped) and [`start_line`] holds for the last record too.
fn ended(reader: impl Read) -> impl Read {
    reader.chain(&b"\n"[..])
}

/// The line a record starts on, from where the reader is after it (the line after
/// its final line break) and the line breaks inside its cells. The position the
/// csv crate stamps on a record is taken before it skips the empty lines ahead.
fn start_line(after: u64, record: &::csv::ByteRecord) -> u64 {
    let inside = record.as_slice().iter().filter(|b| **b == b'\n').count() as u64;
    after.saturating_sub(1 + inside).max(1)
}

/// A blank line (the csv crate skips empty ones; one holding only a `\r` or spaces
/// is read as one blank cell).
fn blank(record: &::csv::ByteRecord) -> bool {
    record.len() == 1 && record[0].trim_ascii().is_empty()
}

fn csv_reader<R: Read>(reader: R, delimiter: u8) -> ::csv::Reader<R> {
    ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        // A record ends at `\n` (a `\r` before it is trimmed with the cell), so
        // `\r\n` files number their lines as `\n` files do.
        .terminator(::csv::Terminator::Any(b'\n'))
        .buffer_capacity(BUF)
        .from_reader(reader)
}

/// The delimiter of the header line: `;` when it has more of them than `,`.
fn sniff<R: Read>(reader: &mut BufReader<R>) -> Result<u8> {
    let head = reader
        .fill_buf()
        .map_err(|e| crate::Error::invalid("file", format!("cannot be read: {e}")))?;
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |c: u8| line.iter().filter(|b| **b == c).count();
    Ok(if count(b';') > count(b',') {
        b';'
    } else {
        b','
    })
}

fn read_error(e: &::csv::Error, row: u64, line: u64) -> String {
    let line = e.position().map_or(line, ::csv::Position::line);
    match e.kind() {
        ::csv::ErrorKind::Io(io) if io.to_string() == TOO_LONG => {
            format!("row {row} (from line {line}): {TOO_LONG}")
        }
        ::csv::ErrorKind::Io(io) => format!("cannot be read after row {row}: {io}"),
        _ => format!("cannot be read after row {row}: {e}"),
    }
}

/// Maps the header to columns: the `mapping` first, then the header's own name.
fn columns(
    header: &[String],
    mapping: &BTreeMap<String, String>,
) -> Result<(Vec<Column>, Vec<String>)> {
    if header.len() > COLUMNS_MAX {
        return Err(crate::Error::invalid(
            "file",
            format!(
                "has {} columns; at most {COLUMNS_MAX} are read",
                header.len()
            ),
        ));
    }
    let mut e = Errors::default();
    for h in mapping.keys() {
        if !header.iter().any(|c| c == h) {
            e.add(format!("mapping.{h}"), "no column has this header");
        }
    }
    let mut out = Vec::with_capacity(header.len());
    let mut ignored: Vec<String> = Vec::new();
    let mut ignore = |h: &str, out: &mut Vec<Column>| {
        // Shown as its first characters, control characters replaced (a report is
        // JSON that Postgres stores, and jsonb refuses NUL).
        let shown: String = h
            .chars()
            .take(HEADER_MAX)
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        if !ignored.contains(&shown) {
            ignored.push(shown);
        }
        out.push(Column::Ignore);
    };
    for (i, h) in header.iter().enumerate() {
        // A header cell no field can have (too long, control characters: an export
        // of an odd custom key), or one repeated (its first column is the one read).
        if h.chars().count() > HEADER_MAX
            || h.chars().any(char::is_control)
            || header[..i].contains(h)
        {
            ignore(h, &mut out);
            continue;
        }
        let col = match mapping.get(h) {
            Some(target) => match target_of(target.trim()) {
                Some(c) => c,
                None => {
                    e.add(
                        format!("mapping.{h}"),
                        format!(
                            "unknown field; expected one of: {}, custom.KEY or \"\"",
                            FIELDS.join(", ")
                        ),
                    );
                    Column::Ignore
                }
            },
            None => {
                // `E-Mail`, `Project Type` and `project_type` all name their field.
                let name: String = h
                    .trim()
                    .to_lowercase()
                    .chars()
                    .filter(|c| !matches!(c, ' ' | '-' | '_'))
                    .collect();
                let field = FIELDS.iter().find(|f| f.replace('_', "") == name);
                let custom = h.trim().starts_with("custom.").then(|| target_of(h.trim()));
                match field.map(|f| Some(Column::Field(f))).or(custom).flatten() {
                    Some(c) => c,
                    None => {
                        ignore(h, &mut out);
                        continue;
                    }
                }
            }
        };
        if col != Column::Ignore && out.contains(&col) {
            e.add(
                format!("mapping.{h}"),
                "another column already goes to this field",
            );
        }
        out.push(col);
    }
    if !out.contains(&Column::Field("email")) && !out.contains(&Column::Field("phone")) {
        e.add("file", "needs an email or a phone column");
    }
    e.finish()?;
    Ok((out, ignored))
}

fn target_of(t: &str) -> Option<Column> {
    if t.is_empty() {
        return Some(Column::Ignore);
    }
    if let Some(key) = t.strip_prefix("custom.") {
        let key = key.trim();
        return (!key.is_empty() && key.len() <= 64 && !key.contains('\0'))
            .then(|| Column::Custom(key.to_owned()));
    }
    FIELDS.iter().find(|f| **f == t).map(|f| Column::Field(f))
}

/// A cell as text: the `'` an export put before a formula character (or before a
/// `'`) is taken off.
fn cell_text(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(super::export::ESCAPED) => rest,
        _ => cell,
    }
}

/// Checks one data row.
fn check_row(
    columns: &[Column],
    header: &[String],
    record: &::csv::ByteRecord,
    rules: &LeadRules,
    (row, line): (u64, u64),
) -> std::result::Result<Row, Vec<RowError>> {
    let err = |field: Option<&str>, message: String| RowError {
        row,
        line,
        field: field.map(str::to_owned),
        message,
    };
    if record.len() != columns.len() {
        return Err(vec![err(
            None,
            format!(
                "has {} cells; the header has {}",
                record.len(),
                columns.len()
            ),
        )]);
    }
    let mut input = NewLead::default();
    let mut custom = Map::new();
    let mut errors = Vec::new();
    for ((col, bytes), h) in columns.iter().zip(record.iter()).zip(header) {
        if *col == Column::Ignore {
            continue;
        }
        let Ok(cell) = std::str::from_utf8(bytes) else {
            errors.push(err(Some(h), "is not valid UTF-8".into()));
            continue;
        };
        let cell = cell_text(cell.trim());
        if cell.is_empty() {
            continue;
        }
        let v = Some(cell.to_owned());
        match col {
            Column::Field("name") => input.name = cell.to_owned(),
            Column::Field("email") => input.email = v,
            Column::Field("phone") => input.phone = v,
            Column::Field("company") => input.company = v,
            Column::Field("budget") => input.budget = v,
            Column::Field("project_type") => input.project_type = v,
            Column::Field("message") => input.message = v,
            Column::Field("source") => input.source = v,
            Column::Field("status") => input.status = v,
            Column::Field("notes") => input.notes = v,
            Column::Field(_) => {
                input.tags = cell
                    .split([',', ';'])
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            Column::Custom(k) => {
                custom.insert(k.clone(), Value::String(cell.to_owned()));
            }
            Column::Ignore => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let name_given = !input.name.trim().is_empty();
    if !name_given {
        // Checked when the row creates a lead; an update keeps the lead's name.
        input.name = "-".into();
    }
    let status_given = input.status.is_some();
    if !custom.is_empty() {
        input.custom = Some(custom);
    }
    match parse::new_lead(input, rules) {
        Ok(fields) => Ok(Row {
            row,
            line,
            fields,
            name_given,
            status_given,
        }),
        Err(e) => Err(e
            .field_errors()
            .iter()
            .map(|f| err(Some(&f.field), f.message.clone()))
            .collect()),
    }
}

/// Reads the file on a blocking thread, sending its header and then batches of
/// checked rows, the first `skip` data rows passed over unread.
pub(crate) fn read_file<R: Read>(
    reader: R,
    options: &ImportOptions,
    rules: &LeadRules,
    send: impl Fn(Chunk) -> bool,
) {
    let stop = |message: String, row: u64, line: u64| {
        send(Chunk::Stop(RowError {
            row,
            line,
            field: None,
            message,
        }));
    };
    let mut reader = BufReader::with_capacity(BUF, Guard::new(ended(reader)));
    // `ImportOptions::check` has refused any other delimiter.
    let delimiter = match options.delimiter {
        Some(';') => b';',
        Some(_) => b',',
        None => match sniff(&mut reader) {
            Ok(d) => d,
            Err(e) => {
                send(Chunk::Header(Err(e)));
                return;
            }
        },
    };
    let mut csv = csv_reader(reader, delimiter);
    let mut record = ::csv::ByteRecord::new();
    let mut read_header = csv.read_byte_record(&mut record);
    while matches!(read_header, Ok(true)) && blank(&record) {
        read_header = csv.read_byte_record(&mut record);
    }
    let header: Vec<String> = match read_header {
        Ok(true) => match record
            .iter()
            .map(|c| std::str::from_utf8(c).map(|c| c.trim().to_owned()))
            .collect::<std::result::Result<Vec<_>, _>>()
        {
            Ok(h) => h,
            Err(_) => {
                send(Chunk::Header(Err(crate::Error::invalid(
                    "file",
                    "the header (line 1) is not valid UTF-8",
                ))));
                return;
            }
        },
        Ok(false) => {
            send(Chunk::Header(Err(crate::Error::invalid(
                "file",
                "is empty; the first line must be a header",
            ))));
            return;
        }
        Err(e) => {
            send(Chunk::Header(Err(crate::Error::invalid(
                "file",
                read_error(&e, 0, 1),
            ))));
            return;
        }
    };
    let columns = match columns(&header, &options.mapping) {
        Ok((c, ignored)) => {
            if !send(Chunk::Header(Ok(ignored))) {
                return;
            }
            c
        }
        Err(e) => {
            send(Chunk::Header(Err(e)));
            return;
        }
    };
    csv.get_ref().get_ref().allow(csv.position().byte());
    let mut row: u64 = 0;
    let mut rows = Vec::with_capacity(BATCH_ROWS);
    let mut read = 0;
    loop {
        let before = csv.position().line();
        match csv.read_byte_record(&mut record) {
            Ok(true) if blank(&record) => {
                csv.get_ref().get_ref().allow(csv.position().byte());
            }
            Ok(true) => {
                row += 1;
                let line = start_line(csv.position().line(), &record);
                csv.get_ref().get_ref().allow(csv.position().byte());
                if row <= options.skip_rows {
                    continue;
                }
                read += 1;
                rows.push(check_row(&columns, &header, &record, rules, (row, line)));
                if read == BATCH_ROWS as u64 {
                    let chunk = Chunk::Rows {
                        rows: std::mem::replace(&mut rows, Vec::with_capacity(BATCH_ROWS)),
                        read,
                    };
                    read = 0;
                    if !send(chunk) {
                        return;
                    }
                }
            }
            Ok(false) => {
                if read > 0 {
                    send(Chunk::Rows { rows, read });
                }
                return;
            }
            Err(e) => {
                if read > 0 && !send(Chunk::Rows { rows, read }) {
                    return;
                }
                stop(read_error(&e, row + 1, before), row + 1, before);
                return;
            }
        }
    }
}

/// The leads a batch of rows resolves against, and what the rows did to them.
/// Rows are applied in file order: a later row sees what an earlier one wrote.
#[derive(Default)]
pub(crate) struct Resolver {
    leads: Vec<Known>,
    ids: HashMap<LeadId, usize>,
    by_email: HashMap<String, usize>,
    by_phone: HashMap<String, usize>,
    /// Rows applied so far (the index of the next one in its batch).
    applied: usize,
}

struct Known {
    lead: Lead,
    /// The stored state; `None` for a lead this import creates.
    stored: Option<Lead>,
    /// The rows that went into a lead this import creates.
    rows: MadeBy,
    /// When a row first changed it (the index of that row), for the write order.
    first_change: Option<usize>,
}

/// The rows that made a new lead: (index in the batch, row, line).
pub(crate) type MadeBy = Vec<(usize, u64, u64)>;

/// What a batch writes.
pub(crate) struct Writes {
    /// New leads, with the rows that made them.
    pub(crate) creates: Vec<(Lead, MadeBy)>,
    /// Changed leads, (as stored, as now), in the order rows first changed them.
    pub(crate) updates: Vec<(Lead, Lead)>,
}

impl Resolver {
    /// The email keys and phones the rows look up.
    pub(crate) fn keys(rows: &[Checked]) -> (Vec<String>, Vec<String>) {
        let rows = rows.iter().flatten();
        let mut emails: Vec<String> = rows
            .clone()
            .filter_map(|r| r.fields.email.as_ref().map(Email::key))
            .collect();
        let mut phones: Vec<String> = rows
            .filter_map(|r| r.fields.phone.as_ref().map(|p| p.as_str().to_owned()))
            .collect();
        emails.sort_unstable();
        emails.dedup();
        phones.sort_unstable();
        phones.dedup();
        (emails, phones)
    }

    /// Adds a stored lead (one already known is kept as it is).
    pub(crate) fn stored(&mut self, lead: Lead) {
        if self.ids.contains_key(&lead.id) {
            return;
        }
        self.ids.insert(lead.id, self.leads.len());
        self.index(self.leads.len(), &lead);
        self.leads.push(Known {
            stored: Some(lead.clone()),
            lead,
            rows: Vec::new(),
            first_change: None,
        });
    }

    fn index(&mut self, i: usize, lead: &Lead) {
        if let Some(e) = &lead.email {
            self.by_email.insert(e.key(), i);
        }
        if let Some(p) = &lead.phone {
            self.by_phone.insert(p.as_str().to_owned(), i);
        }
    }

    fn unindex(&mut self, lead: &Lead) {
        if let Some(e) = &lead.email {
            self.by_email.remove(&e.key());
        }
        if let Some(p) = &lead.phone {
            self.by_phone.remove(p.as_str());
        }
    }

    /// Applies one row (one that did not check out is only reported).
    pub(crate) fn apply(&mut self, row: Checked, ws: WorkspaceId, now: DateTime<Utc>) -> Outcome {
        let at = self.applied;
        self.applied += 1;
        let row = match row {
            Ok(row) => row,
            Err(errors) => return Outcome::Invalid(errors),
        };
        let fail = |field: &str, message: String| {
            Outcome::Failed(RowError {
                row: row.row,
                line: row.line,
                field: Some(field.to_owned()),
                message,
            })
        };
        let by_email = row
            .fields
            .email
            .as_ref()
            .and_then(|e| self.by_email.get(&e.key()))
            .copied();
        let by_phone = row
            .fields
            .phone
            .as_ref()
            .and_then(|p| self.by_phone.get(p.as_str()))
            .copied();
        let target = match (by_email, by_phone) {
            (Some(a), Some(b)) if a != b => {
                return fail(
                    "phone",
                    format!(
                        "belongs to lead {}, the email to lead {}",
                        self.leads[b].lead.id, self.leads[a].lead.id
                    ),
                )
            }
            (a, b) => a.or(b),
        };
        let Some(i) = target else {
            if !row.name_given {
                return fail("name", "must not be empty for a new lead".into());
            }
            let lead = row.fields.into_lead(ws, now);
            self.ids.insert(lead.id, self.leads.len());
            self.index(self.leads.len(), &lead);
            self.leads.push(Known {
                lead,
                stored: None,
                rows: vec![(at, row.row, row.line)],
                first_change: None,
            });
            return Outcome::Created;
        };
        let known = &self.leads[i];
        if known.lead.archived_at.is_some() {
            let field = if by_email.is_some() { "email" } else { "phone" };
            return fail(
                field,
                format!(
                    "matches archived lead {}; restore it to import into it",
                    known.lead.id
                ),
            );
        }
        let new =
            match rules::import_onto(&known.lead, row.fields, row.name_given, row.status_given) {
                Ok(new) => new,
                Err(message) => return fail("custom", message),
            };
        if rules::diff(&known.lead, &new).is_empty() {
            return Outcome::Skipped;
        }
        let old = known.lead.clone();
        self.unindex(&old);
        self.index(i, &new);
        let known = &mut self.leads[i];
        known.lead = Lead {
            updated_at: if known.stored.is_some() {
                now
            } else {
                new.created_at
            },
            ..new
        };
        if known.stored.is_none() {
            known.rows.push((at, row.row, row.line));
        }
        known.first_change.get_or_insert(at);
        Outcome::Updated
    }

    /// What the rows applied so far write; the resolver is then empty.
    pub(crate) fn take(&mut self) -> Writes {
        self.by_email.clear();
        self.by_phone.clear();
        self.ids.clear();
        self.applied = 0;
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for k in self.leads.drain(..) {
            match k.stored {
                None => creates.push((k.lead, k.rows)),
                Some(old) if old != k.lead => {
                    updates.push((k.first_change.unwrap_or(usize::MAX), old, k.lead))
                }
                Some(_) => {}
            }
        }
        updates.sort_by_key(|(first, _, _)| *first);
        Writes {
            creates,
            updates: updates
                .into_iter()
                .map(|(_, old, new)| (old, new))
                .collect(),
        }
    }
}
