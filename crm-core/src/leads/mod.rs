//! The lead service: create, capture, read, list, update, delete, and the activity
//! timeline, each write in one transaction together with its events.
//!
//! Two ways in for a new lead: [`Leads::create`] refuses a duplicate email or phone
//! with [`crate::Error::Conflict`] naming the existing lead (what an API client or an admin
//! typing a lead wants), while [`Leads::capture`] — the path for contact forms, where
//! the same person writing twice is normal — records a `form_submission` activity on
//! the existing lead and changes none of its fields (anyone can type a customer's
//! email into a form). [`Leads::capture_inbound`], for messages a provider verified
//! (WhatsApp, Cal.com), fills the existing lead's blanks and adds tags and custom
//! fields; it never overwrites what the lead already has.
//!
//! Decisions where the design is silent, taken as a user of Stripe's or Twenty's API
//! would expect:
//! - **Identity.** `name` is required. Emails keep the local part's case for display
//!   but are unique case-insensitively (`Ana@x.com` and `ana@x.com` are one lead).
//!   Phones are stored in E.164; a national number needs the builder's
//!   `default_country_code`.
//! - **Capture** matches by email first, then phone. An email or phone that another
//!   lead holds is not copied onto the matched lead. A lost race between two
//!   captures of the same new person is retried, so they end as one lead.
//! - **Listing.** Filters combine with AND; `status` is any-of, `tags` is all-of.
//!   `q` splits into words (runs of letters and digits, lower-cased, at most 8),
//!   each of which must prefix-match a word of name, email, company, message or
//!   notes; query syntax is never interpreted. Name and status sort by bytes, the
//!   same on both backends. The cursor is bound to its sort and filters; reusing it
//!   with others is a validation error on `cursor`.
//! - **Events.** A status change emits `lead.status_changed` and `lead.updated`;
//!   activities crm writes itself (`status_change`) do not emit
//!   `lead.activity_added`, those added by callers and by `capture` do. An update
//!   that changes nothing writes nothing and emits nothing.

pub(crate) mod batch;
pub(crate) mod cursor;
pub mod export;
pub mod import;
pub mod merge;
pub mod messages;
pub(crate) mod model;
pub(crate) use model::nullable;
pub(crate) mod parse;
pub mod parser;
pub(crate) mod rules;
pub mod stats;
pub(crate) mod values;

pub use export::Export;
pub use import::{ImportOptions, ImportReport, ImportStatus, Progress, RowError};
pub use model::{
    Activity, Archived, Captured, Lead, LeadDetail, LeadPage, LeadPatch, LeadQuery, NewActivity,
    NewLead, SortField, SortOrder,
};
pub use parse::{
    AllowedValues, ACTOR_MAX, CUSTOM_MAX_BYTES, MESSAGE_MAX, NAME_MAX, NOTES_MAX, RAW_INPUT_MAX,
    SEARCH_TERMS_MAX, TAGS_MAX, TAG_MAX,
};
pub use stats::{Bucket, LeadStats, StatsQuery};
pub use values::{ActivityKind, Email, LeadStatus, Phone};

use crate::ids::{ImportId, LeadId};
use crate::store::{self, leads::OnKnown, Ctx};
use crate::{Crm, Result, WorkspaceId};
use cursor::Cursor;

/// The lead service of one workspace; from [`crate::Workspace::leads`].
///
/// An `actor` set with [`Leads::with_actor`] is written on the activities this
/// handle records (status changes, form submissions, added activities).
#[derive(Clone, Debug)]
pub struct Leads {
    crm: Crm,
    ws: WorkspaceId,
    actor: Option<String>,
}

impl Leads {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self {
            crm,
            ws,
            actor: None,
        }
    }

    /// The same service, recording `actor` (a user id, `api_key:…`, `whatsapp`, …,
    /// up to 200 characters) on the activities it writes.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Wakes the dispatchers after a write (its events may have queued deliveries).
    fn written<T>(&self, r: Result<T>) -> Result<T> {
        self.crm.written(r)
    }

    fn ctx(&self) -> Result<Ctx<'_>> {
        self.crm.ctx(self.ws, self.actor.as_deref())
    }

    /// Creates a lead. Fails with `Validation` listing every bad field, or with
    /// `Conflict` (naming the existing lead) when its email or phone is taken.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn create(&self, input: NewLead) -> Result<Lead> {
        let fields = parse::new_lead(input, self.crm.rules())?;
        let ctx = self.ctx()?;
        // A user is never deleted into another workspace, and a deleted one
        // fails the insert's foreign key: checking before the write is enough.
        store::contacts::check_owner(self.crm.pool(), self.ws, fields.owner_id).await?;
        let row = store::leads::NewRow {
            ws: ctx.ws,
            now: ctx.now,
            actor: ctx.actor.map(str::to_owned),
            fields,
        };
        let r = match self.crm.lead_writer().create(row).await {
            Ok(r) => r,
            // The writer's runtime is gone: this create is written alone.
            Err(row) => {
                retry_race(|| async {
                    store::leads::create(self.crm.pool(), &ctx, row.fields.clone()).await
                })
                .await
            }
        };
        self.written(r)
    }

    /// Creates a lead from an anonymous submission (a contact form), or, when a lead
    /// already has its email (checked first) or phone, records the submission on that
    /// lead without changing any of its fields: anyone can type a customer's email
    /// into a form, and must not attach their own phone or company to that customer.
    /// Either way a `form_submission` activity records it: its description is the
    /// message, and on a known lead also what was submitted (`Submitted: {json}`).
    /// Inbound messages verified by their provider fill blanks instead
    /// ([`Leads::capture_inbound`]).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn capture(&self, input: NewLead) -> Result<Captured> {
        let description = input.message.clone();
        let captured = self
            .capture_with(
                input,
                ActivityKind::FormSubmission,
                description,
                false,
                None,
                None,
            )
            .await?;
        captured.ok_or_else(|| {
            crate::Error::Config("capture without a receipt cannot be a duplicate".into())
        })
    }

    /// Capture for inbound channels: like [`Leads::capture`], but a known lead's blank
    /// fields are filled from the input (the provider verified it), the activity is of
    /// `kind` with `description`, and the message is identified by
    /// (`source`, `external_id`) — a WhatsApp message id, a Cal.com booking uid and
    /// trigger. A message already captured returns `Ok(None)` and writes nothing, so a
    /// provider's redelivery changes nothing.
    pub async fn capture_inbound(
        &self,
        source: &str,
        external_id: &str,
        input: NewLead,
        kind: ActivityKind,
        description: Option<String>,
    ) -> Result<Option<Captured>> {
        let mut e = crate::error::Errors::default();
        for (field, v) in [("source", source), ("external_id", external_id)] {
            if v.is_empty() || v.len() > 200 || v.contains('\0') {
                e.add(field, "must be 1-200 bytes");
            }
        }
        e.finish()?;
        self.capture_with(
            input,
            kind,
            description,
            true,
            Some((source, external_id)),
            None,
        )
        .await
    }

    async fn capture_with(
        &self,
        input: NewLead,
        kind: ActivityKind,
        description: Option<String>,
        fill: bool,
        receipt: Option<(&str, &str)>,
        message: Option<messages::MessageInfo>,
    ) -> Result<Option<Captured>> {
        let fields = parse::new_lead(input, self.crm.rules())?;
        store::contacts::check_owner(self.crm.pool(), self.ws, fields.owner_id).await?;
        let (_, description) = parse::activity(NewActivity {
            kind: kind.as_str().into(),
            description,
        })?;
        let on_known = if fill {
            OnKnown::Fill
        } else {
            OnKnown::Record(Some(submission(description.as_deref(), &fields)))
        };
        let ctx = self.ctx()?;
        // Media is fetched where there is somewhere to keep it and a provider that
        // can fetch it.
        let fetch_media = message.as_ref().is_some_and(|m| {
            self.crm.storage().is_ok()
                && self
                    .crm
                    .provider(&m.channel)
                    .is_some_and(|p| p.fetches_media())
        });
        let r = retry_race(|| async {
            store::leads::capture(
                self.crm.pool(),
                &ctx,
                fields.clone(),
                (kind, description.clone(), message.clone()),
                on_known.clone(),
                receipt,
                fetch_media,
            )
            .await
        })
        .await;
        Ok(self
            .written(r)?
            .map(|(lead, created)| Captured { lead, created }))
    }

    /// Parses free text (1–5,000 characters) into lead fields with the `Crm`'s
    /// [`parser::LeadParser`] (the offline [`parser::BuiltinParser`] unless one was
    /// registered). With `auto_save` the lead is also created, with the text as
    /// `raw_input` (and as the message when the parser found none), `ai_parsed =
    /// true` and source `ai` unless the parser set one; a
    /// lead without a name is named after its email or phone. When the registered
    /// parser fails (an integration error: a timeout, a refusal, the provider down), the builtin parser reads
    /// the text instead and the result says so (`parser: "builtin"`, `fallback`).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn parse(&self, text: &str, auto_save: bool) -> Result<Parsed> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MESSAGE_MAX || text.contains('\0') {
            return Err(crate::Error::invalid(
                "text",
                format!("must be 1-{MESSAGE_MAX} characters"),
            ));
        }
        let parser = self.crm.lead_parser_for(self.ws).await?;
        if parser.metered() {
            // The workspace's AI budget: the operator pays for every call.
            self.crm
                .rate_limiter()
                .enforce("lead_parse", &self.ws.to_string())
                .await?;
        }
        let allowed = &self.crm.rules().allowed;
        let parsed = match parser.parse(text, allowed).await {
            Ok(p) => p,
            // The configured parser failed (timeout, refusal, provider down): the
            // builtin parser reads the text instead, and the answer says so.
            Err(e @ crate::Error::Integration(_)) => {
                tracing::warn!(error = %e, "the lead parser failed; the builtin parser stood in");
                metrics::counter!("crm_lead_parser_fallbacks_total").increment(1);
                let mut p =
                    parser::LeadParser::parse(&parser::BuiltinParser, text, allowed).await?;
                p.fallback = true;
                p
            }
            Err(e) => return Err(e),
        };
        let lead = if auto_save {
            let mut input = parsed.fields.clone();
            if input.name.trim().is_empty() {
                input.name = input
                    .email
                    .as_deref()
                    .and_then(|e| e.split('@').next())
                    .or(input.phone.as_deref())
                    .unwrap_or_default()
                    .to_owned();
            }
            input.raw_input = Some(text.to_owned());
            // The text is the message when the parser did not say what was asked.
            input.message = input.message.or_else(|| Some(text.to_owned()));
            input.ai_parsed = true;
            input.source = input.source.or_else(|| Some("ai".into()));
            Some(self.create(input).await?)
        } else {
            None
        };
        Ok(Parsed { parsed, lead })
    }

    /// A lead with its activities, oldest first.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn get(&self, id: LeadId) -> Result<LeadDetail> {
        let (lead, activities) = store::leads::get(self.crm.pool(), self.ws, id).await?;
        Ok(LeadDetail { lead, activities })
    }

    /// The workspace's lead statistics: counts by status and by source, new leads
    /// per bucket over a range (zero-filled), the funnel, and the median time from
    /// creation to contact ([`stats`] says what each means). A range that is
    /// backwards or holds more than [`stats::BUCKETS_MAX`] buckets is a
    /// validation error on `start`.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn stats(&self, query: &StatsQuery) -> Result<LeadStats> {
        let (from, to) = stats::range(query, self.crm.now())?;
        let rows = store::leads::stats(self.crm.pool(), self.ws, from, to).await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let mut by_source: Vec<stats::SourceCount> = rows
            .sources
            .into_iter()
            .map(|(source, n)| stats::SourceCount {
                source,
                count: count(n),
            })
            .collect();
        by_source.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.source.cmp(&b.source)));
        let mut to_contacted = rows.to_contacted;
        let by_status = stats::by_status(&[&rows.statuses]);
        Ok(LeadStats {
            total: by_status.iter().map(|c| c.count).sum(),
            by_status,
            by_source,
            series: stats::series(query.bucket, from, to, &rows.created),
            funnel: stats::by_status(&[&rows.statuses, &rows.left]),
            median_seconds_to_contacted: stats::median(&mut to_contacted),
        })
    }

    /// One page of leads matching `query`, sorted with the id as tie-breaker.
    /// Pages are keyset-based: page 500 costs what page 1 costs, and a lead written
    /// between two calls neither repeats nor hides another.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn list(&self, query: &LeadQuery) -> Result<LeadPage> {
        let q = parse::query(query)?;
        let fingerprint = q.fingerprint();
        let after = query
            .cursor
            .as_deref()
            .map(|c| {
                Cursor::decode(
                    c,
                    query.sort,
                    query.order,
                    &fingerprint,
                    self.crm.cursor_key(),
                )
            })
            .transpose()?;
        let (mut items, total) = store::leads::list(
            self.crm.pool(),
            self.ws,
            &q,
            query.sort,
            query.order,
            after,
            query.include_total,
        )
        .await?;
        let next_cursor = if items.len() > q.limit as usize {
            items.truncate(q.limit as usize);
            items.last().map(|last| {
                Cursor::after(last, query.sort, query.order, &fingerprint)
                    .encode(self.crm.cursor_key())
            })
        } else {
            None
        };
        Ok(LeadPage {
            items,
            next_cursor,
            total,
        })
    }

    /// Changes the fields the patch sets. A status change writes a `status_change`
    /// activity and a `lead.status_changed` event; any change writes `lead.updated`
    /// naming the changed fields. A patch that changes nothing writes nothing.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn update(&self, id: LeadId, patch: LeadPatch) -> Result<Lead> {
        let patch = parse::patch(patch, self.crm.rules())?;
        let ctx = self.ctx()?;
        if let Some(owner) = patch.owner_id {
            store::contacts::check_owner(self.crm.pool(), self.ws, owner).await?;
        }
        let r = store::leads::update(self.crm.pool(), &ctx, id, patch).await;
        self.written(r)
    }

    /// Converts the lead into a contact, in one transaction: the contact that
    /// already has the lead's email (first) or phone is reused, otherwise one is
    /// made from the lead (its name split into first and last, its email, phone,
    /// notes, tags, custom fields and owner). Unless `input.organization` is
    /// `false`, the contact (when it has none) gets the organization with the
    /// domain of the lead's company email (not a free-mail provider's), else the
    /// one named like the lead's company, else a new one named after the company
    /// (no company and no known domain: no organization). The lead keeps its
    /// timeline, gets a `converted` entry and a link (`contact_id`);
    /// `lead.converted`, with `contact.created` and `organization.created` for what
    /// was made. Converting a converted lead again answers its contact and writes
    /// nothing. An archived lead is refused (`InvalidState` `lead_archived`).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn convert(
        &self,
        id: LeadId,
        input: crate::contacts::ConvertInput,
    ) -> Result<crate::contacts::Converted> {
        let ctx = self.ctx()?;
        let with_organization = input.organization.unwrap_or(true);
        let r =
            retry_race(|| store::contacts::convert(self.crm.pool(), &ctx, id, with_organization))
                .await;
        self.written(r)
    }

    /// Deletes the lead, its activities and its files for good (a `lead.deleted`
    /// event keeps its last state for subscribers).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn delete(&self, id: LeadId) -> Result<()> {
        let ctx = self.ctx()?;
        let r = store::leads::delete(self.crm.pool(), &ctx, id, false).await;
        let files = self.written(r)?;
        self.crm.delete_bytes(files).await;
        Ok(())
    }

    /// [`Leads::delete`], unless the lead has a timeline and `confirm` is false:
    /// then `InvalidState` `confirmation_required` and nothing is deleted (the HTTP
    /// rule: `DELETE …?confirm=true` for a lead with activities; archiving keeps
    /// them).
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn delete_confirmed(&self, id: LeadId, confirm: bool) -> Result<()> {
        let ctx = self.ctx()?;
        let r = store::leads::delete(self.crm.pool(), &ctx, id, !confirm).await;
        let files = self.written(r)?;
        self.crm.delete_bytes(files).await;
        Ok(())
    }

    /// Groups of leads that look like one person (see [`merge`]): the same mailbox,
    /// or the same name at the same company; archived leads are left out. At most
    /// `limit` (1–100) groups, the likeliest first.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn duplicates(&self, limit: u32) -> Result<Vec<merge::DuplicateGroup>> {
        use std::collections::HashMap;
        if !(1..=100).contains(&limit) {
            return Err(crate::Error::invalid("limit", "must be between 1 and 100"));
        }
        let keys = store::leads::duplicate_keys(self.crm.pool(), self.ws).await?;
        let mut by_mailbox: HashMap<String, Vec<LeadId>> = HashMap::new();
        let mut by_name: HashMap<(String, String), Vec<LeadId>> = HashMap::new();
        for (id, name, company, email) in keys {
            if let Some(e) = email {
                by_mailbox.entry(merge::mailbox(&e)).or_default().push(id);
            }
            let (name, company) = (
                merge::folded(&name),
                merge::folded(company.as_deref().unwrap_or("")),
            );
            if !name.is_empty() && !company.is_empty() {
                by_name.entry((name, company)).or_default().push(id);
            }
        }
        let mut groups: Vec<(merge::DuplicateReason, f64, Vec<LeadId>)> = by_mailbox
            .into_values()
            .map(|ids| (merge::DuplicateReason::Email, 0.95, ids))
            .filter(|(_, _, ids)| ids.len() > 1)
            .collect();
        // A name group with the very leads of a mailbox group says nothing more.
        let mut names: Vec<_> = by_name
            .into_values()
            .filter(|ids| ids.len() > 1 && !groups.iter().any(|g| g.2 == *ids))
            .map(|ids| (merge::DuplicateReason::NameCompany, 0.8, ids))
            .collect();
        groups.append(&mut names);
        // The likeliest first, then the oldest (ids are time-ordered).
        groups.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| a.2.first().cmp(&b.2.first()))
        });
        groups.truncate(limit as usize);
        let shown = |ids: &[LeadId]| {
            ids.iter()
                .take(merge::GROUP_LEADS_MAX)
                .copied()
                .collect::<Vec<_>>()
        };
        let ids: Vec<LeadId> = groups.iter().flat_map(|g| shown(&g.2)).collect();
        let leads: HashMap<LeadId, Lead> = store::leads::by_ids(self.crm.pool(), self.ws, &ids)
            .await?
            .into_iter()
            .map(|l| (l.id, l))
            .collect();
        Ok(groups
            .into_iter()
            .map(|(reason, score, ids)| merge::DuplicateGroup {
                reason,
                score,
                size: ids.len() as u64,
                leads: shown(&ids)
                    .iter()
                    .filter_map(|id| leads.get(id).cloned())
                    .collect(),
            })
            .filter(|g| g.leads.len() > 1)
            .collect())
    }

    /// Merges the leads `input.from` into `id` (see [`merge`] for the rules): their
    /// timelines move to it, it gets a `merged` entry, they are deleted, and
    /// `lead.merged` names them; all or nothing. `dry_run` answers the same and
    /// writes nothing. Merging a lead into itself, a lead of another workspace
    /// (`NotFound`) or an archived one (`InvalidState` `lead_archived`) is refused.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn merge(&self, id: LeadId, input: merge::MergeInput) -> Result<merge::Merged> {
        let from = merge::check(id, &input)?;
        let ctx = self.ctx()?;
        let r = store::leads::merge(
            self.crm.pool(),
            &ctx,
            id,
            &from,
            &input.prefer,
            input.dry_run,
        )
        .await;
        if input.dry_run {
            return r;
        }
        self.written(r)
    }

    /// Archives the lead: hidden from listings and search unless they ask for
    /// archived leads ([`crate::leads::Archived`]), its timeline and its fields kept;
    /// `lead.archived`. An archived lead still counts for duplicates (a new lead with
    /// its email or phone is a conflict naming it) and in the statistics. Archiving
    /// an archived lead changes nothing.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn archive(&self, id: LeadId) -> Result<Lead> {
        let ctx = self.ctx()?;
        let r = store::leads::set_archived(self.crm.pool(), &ctx, id, true).await;
        self.written(r)
    }

    /// Restores an archived lead to the listings; `lead.restored`. Restoring a lead
    /// that is not archived changes nothing.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn restore(&self, id: LeadId) -> Result<Lead> {
        let ctx = self.ctx()?;
        let r = store::leads::set_archived(self.crm.pool(), &ctx, id, false).await;
        self.written(r)
    }

    /// Adds an activity to the lead's timeline.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn add_activity(&self, id: LeadId, input: NewActivity) -> Result<Activity> {
        let (kind, description) = parse::activity(input)?;
        let ctx = self.ctx()?;
        let r = store::leads::add_activity(self.crm.pool(), &ctx, id, kind, description).await;
        self.written(r)
    }

    /// Imports leads from a CSV file (see [`import`] for the columns, the upsert by
    /// email then phone, and what stops a file), a batch of [`import::BATCH_ROWS`]
    /// rows per transaction, streamed: memory stays flat whatever the size.
    /// `progress` is called after each batch. A bad row is counted and reported
    /// with its position, and the import goes on; a file whose header cannot be
    /// used (no email or phone column, an unknown mapping, a bad delimiter) is a
    /// `Validation` error and nothing is written. The reader is read on a
    /// blocking thread.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn import<R: std::io::Read + Send + 'static>(
        &self,
        reader: R,
        options: ImportOptions,
        progress: impl FnMut(&import::Progress) + Send,
    ) -> Result<ImportReport> {
        options.check()?;
        let report = ImportReport::new(options.dry_run, None, self.crm.now());
        self.run_import(reader, options, report, false, progress)
            .await
    }

    /// Starts an import of `file` (read from its start) in the background and answers at once with its
    /// report (`running`); [`Leads::import_report`] reads how far it got, which is
    /// saved with every batch. The rows are counted first (`total_rows`). The task
    /// runs on this process's runtime: if the process stops, the import reads as
    /// `interrupted` after [`import::STALE_SECS`] seconds, and importing the file
    /// again with `skip_rows = rows_done` finishes it.
    pub async fn start_import(
        &self,
        file: std::fs::File,
        options: ImportOptions,
    ) -> Result<ImportReport> {
        self.ctx()?;
        options.check()?;
        let mut report = ImportReport::new(options.dry_run, None, self.crm.now());
        report.rows_done = options.skip_rows;
        store::imports::insert(self.crm.pool(), self.ws, &report).await?;
        let this = self.clone();
        let mut running = report.clone();
        tokio::spawn(async move {
            let counted = tokio::task::spawn_blocking(move || {
                use std::io::Seek;
                let mut file = file;
                file.rewind()?;
                let total = import::count_rows(&file).ok();
                file.rewind().map(|()| (file, total))
            })
            .await;
            let (file, total) = match counted {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => {
                    let message = format!("the file could not be read: {e}");
                    return this.import_failed(running, message, true).await;
                }
                Err(_) => {
                    let message = "the file could not be read".to_owned();
                    return this.import_failed(running, message, true).await;
                }
            };
            running.total_rows = total;
            // The outcome is in the saved report; an error was logged there.
            let _ = this.run_import(file, options, running, true, |_| {}).await;
        });
        Ok(report)
    }

    /// A tracked import ([`Leads::start_import`]) as it stands.
    pub async fn import_report(&self, id: ImportId) -> Result<ImportReport> {
        let report = store::imports::get(self.crm.pool(), self.ws, id).await?;
        Ok(report.seen_at(self.crm.now()))
    }

    /// Ends an import that stopped on an error: failed with `message`, its
    /// `leads.imported` event when it had committed anything, its report saved when
    /// it is `tracked` (best effort: a failure here is logged).
    async fn import_failed(&self, mut report: ImportReport, message: String, tracked: bool) {
        tracing::warn!(import_id = %report.id, error = %message, "an import failed");
        report.status = import::ImportStatus::Failed;
        report.error = Some(import::RowError {
            // Before any row: the header (0); else the row after those committed.
            row: match report.rows_done {
                0 => 0,
                n => n + 1,
            },
            line: 0,
            field: None,
            message,
        });
        report.finished_at = Some(self.crm.now());
        report.updated_at = self.crm.now();
        if let Err(e) =
            store::leads::import_finish(self.crm.pool(), self.ws, &report, tracked).await
        {
            tracing::warn!(import_id = %report.id, error = %crate::error::Chain(&e), "an import's report could not be saved");
        }
    }

    async fn run_import<R: std::io::Read + Send + 'static>(
        &self,
        reader: R,
        options: ImportOptions,
        mut report: ImportReport,
        tracked: bool,
        mut progress: impl FnMut(&import::Progress) + Send,
    ) -> Result<ImportReport> {
        let actor = match self.ctx() {
            Ok(ctx) => ctx.actor.map(str::to_owned),
            Err(e) => {
                self.import_failed(report, e.to_string(), tracked).await;
                return Err(e);
            }
        };
        report.rows_done = options.skip_rows;
        let (send, mut chunks) = tokio::sync::mpsc::channel(2);
        let rules = self.crm.rules().clone();
        let opts = options.clone();
        let reading = tokio::task::spawn_blocking(move || {
            import::read_file(reader, &opts, &rules, |c| send.blocking_send(c).is_ok());
        });
        let started = std::time::Instant::now();
        let result: Result<()> = async {
            match chunks.recv().await {
                Some(import::Chunk::Header(Ok(ignored))) => report.ignored_columns = ignored,
                Some(import::Chunk::Header(Err(e))) => return Err(e),
                _ => {
                    return Err(crate::Error::Config(
                        "the CSV reader stopped before the header".into(),
                    ))
                }
            }
            while let Some(chunk) = chunks.recv().await {
                let (rows, read) = match chunk {
                    import::Chunk::Rows { rows, read } => (rows, read),
                    import::Chunk::Stop(e) => {
                        report.error = Some(e);
                        continue;
                    }
                    import::Chunk::Header(_) => continue,
                };
                let ctx = Ctx {
                    ws: self.ws,
                    now: self.crm.now(),
                    actor: actor.as_deref(),
                };
                store::leads::import_batch(
                    self.crm.pool(),
                    &ctx,
                    rows,
                    read,
                    options.lead_events,
                    options.dry_run,
                    &mut report,
                    tracked,
                )
                .await?;
                if options.lead_events && !options.dry_run {
                    self.crm.wake_dispatchers();
                }
                let secs = started.elapsed().as_secs_f64();
                let done = report.rows_done.saturating_sub(options.skip_rows);
                progress(&report.progress(if secs > 0.0 { done as f64 / secs } else { 0.0 }));
            }
            Ok(())
        }
        .await;
        drop(chunks);
        let _ = reading.await;
        if let Err(e) = result {
            let message = match &e {
                crate::Error::Validation { .. } => e.to_string(),
                _ => "the import stopped on a database error; import the file again with skip_rows = rows_done".into(),
            };
            self.import_failed(report, message, tracked).await;
            return Err(e);
        }
        report.status = match report.error {
            Some(_) => import::ImportStatus::Failed,
            None => import::ImportStatus::Completed,
        };
        report.finished_at = Some(self.crm.now());
        report.updated_at = self.crm.now();
        store::leads::import_finish(self.crm.pool(), self.ws, &report, tracked).await?;
        self.crm.wake_dispatchers();
        Ok(report)
    }

    /// Exports the leads a listing query selects (its filters, search, sort and
    /// archived choice; `limit`, `cursor` and `include_total` are not used) as CSV,
    /// streamed a page at a time: see [`export`] for the columns and the escaping.
    pub async fn export(&self, query: &LeadQuery) -> Result<Export> {
        Export::new(self.clone(), query).await
    }

    /// The lead's activities, oldest first. `NotFound` when the lead does not exist.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, lead_id = %id))]
    pub async fn activities(&self, id: LeadId) -> Result<Vec<Activity>> {
        store::leads::activities(self.crm.pool(), self.ws, id).await
    }
}

/// The description of an anonymous submission on a lead that already exists: the
/// message, then every value submitted, as JSON, for a person to review.
fn submission(message: Option<&str>, f: &parse::Fields) -> String {
    let submitted = serde_json::json!({
        "name": f.name,
        "email": f.email,
        "phone": f.phone,
        "company": f.company,
        "budget": f.budget,
        "project_type": f.project_type,
        "source": f.source,
        "tags": f.tags,
        "custom": f.custom,
    });
    match message {
        Some(m) => format!("{m}\n\nSubmitted: {submitted}"),
        None => format!("Submitted: {submitted}"),
    }
}

/// Runs a create or capture again when it lost a race: two transactions that both saw
/// no lead with an email and both inserted one end with a unique violation in the
/// second, which carries no lead id. The retry sees the committed lead, so `create`
/// reports it in its `Conflict` and `capture` records on it.
pub(crate) async fn retry_race<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match attempt().await {
        Err(crate::Error::Conflict {
            existing_id: None, ..
        }) => attempt().await,
        r => r,
    }
}

/// What [`Leads::parse`] returns.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, serde::Serialize)]
pub struct Parsed {
    /// What the parser found.
    #[serde(flatten)]
    pub parsed: parser::ParsedLead,
    /// The lead, when `auto_save` created it.
    pub lead: Option<Lead>,
}
