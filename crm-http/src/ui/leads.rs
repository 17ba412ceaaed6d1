//! The pages every signed-in user has: the dashboard, the lead list, a lead with
//! its timeline, and a new lead by form or by pasting a message.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use crm_core::leads::messages::NewMessage;
use crm_core::leads::{
    Archived, Bucket, Lead, LeadDetail, LeadPatch, LeadQuery, LeadStats, LeadStatus, NewActivity,
    NewLead, SortField, SortOrder, StatsQuery,
};
use crm_core::{Error, LeadId, Leads};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    field, layout, opt, post_button, redirect, uuid_of, when, Ctx, Errors, FormData, Input, Nav,
    NoticeQuery, OrPage, PageError, PageResult,
};
use crate::AppState;

fn leads(s: &AppState, ctx: &Ctx) -> Leads {
    ctx.ws(s).leads().with_actor(ctx.actor())
}

// ------------------------------------------------------------------ dashboard

/// `GET /admin`: the last 30 days' new leads, the counts by status and source, the
/// funnel, the median time to contact, and the most recent leads.
pub(crate) async fn dashboard(State(s): State<AppState>, ctx: Ctx) -> PageResult {
    let l = leads(&s, &ctx);
    let stats = l
        .stats(&StatsQuery {
            bucket: Bucket::Day,
            ..StatsQuery::default()
        })
        .await
        .or_page(&ctx)?;
    let recent = l
        .list(&LeadQuery {
            limit: Some(10),
            ..LeadQuery::default()
        })
        .await
        .or_page(&ctx)?;
    let body = html! {
        section class="cards" {
            div class="card stat" { span class="figure" id="total" { (stats.total) } " leads" }
            div class="card stat" {
                span class="figure" { (median(&stats)) }
                " median time from creation to contact"
            }
        }
        section {
            h2 { "New leads, last 30 days" }
            (chart(&stats))
        }
        div class="columns" {
            section {
                h2 { "By status" }
                (counts(stats.by_status.iter().map(|c| (c.status.as_str().to_owned(), c.count))))
            }
            section {
                h2 { "Funnel (ever reached)" }
                (counts(stats.funnel.iter().map(|c| (c.status.as_str().to_owned(), c.count))))
            }
            section {
                h2 { "By source" }
                (counts(stats.by_source.iter().map(|c| (c.source.clone().unwrap_or_else(|| "(none)".into()), c.count))))
            }
        }
        section {
            h2 { "Recent leads" }
            (table(&ctx, &recent.items))
        }
    };
    Ok(layout(
        &ctx,
        StatusCode::OK,
        Nav::Dashboard,
        "Dashboard",
        None,
        body,
    ))
}

fn median(stats: &LeadStats) -> String {
    match stats.median_seconds_to_contacted {
        None => "—".into(),
        Some(s) if s < 3600.0 => format!("{:.0} min", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        Some(s) => format!("{:.1} days", s / 86_400.0),
    }
}

/// The series as an SVG bar chart, drawn on the server (numbers only, no text from
/// users), with a table of the same figures for screen readers.
fn chart(stats: &LeadStats) -> Markup {
    let points = &stats.series.points;
    let max = points.iter().map(|p| p.count).max().unwrap_or(0).max(1);
    let (w, h) = (600u32, 140u32);
    let n = u32::try_from(points.len()).unwrap_or(u32::MAX).max(1);
    let bar = (w / n).max(1);
    html! {
        svg class="chart" viewBox=(format!("0 0 {w} {}", h + 2)) role="img"
            aria-label="New leads per day, last 30 days" {
            @for (i, p) in points.iter().enumerate() {
                @let i = u32::try_from(i).unwrap_or(0);
                @let bh = u32::try_from(p.count.saturating_mul(u64::from(h)) / max).unwrap_or(h);
                rect x=(i * bar) y=(h - bh) width=(bar.saturating_sub(1).max(1)) height=(bh.max(1))
                    fill=(if p.count > 0 { "#3b6fd8" } else { "#d8dee9" }) {
                    title { (p.start.format("%Y-%m-%d")) ": " (p.count) }
                }
            }
            line x1="0" y1=(h + 1) x2=(w) y2=(h + 1) stroke="#888" {}
        }
        details {
            summary { "The figures" }
            table {
                thead { tr { th scope="col" { "Day" } th scope="col" { "New leads" } } }
                tbody {
                    @for p in points {
                        tr { td { (p.start.format("%Y-%m-%d")) } td { (p.count) } }
                    }
                }
            }
        }
    }
}

fn counts(rows: impl Iterator<Item = (String, u64)>) -> Markup {
    let rows: Vec<(String, u64)> = rows.collect();
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    html! {
        table class="counts" {
            tbody {
                @for (label, count) in &rows {
                    tr {
                        th scope="row" { (label) }
                        td class="num" { (count) }
                        td class="bar" {
                            svg viewBox="0 0 100 10" width="100" height="10" aria-hidden="true" {
                                rect x="0" y="0" height="10" width=(count.saturating_mul(100) / max) fill="#3b6fd8" {}
                            }
                        }
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------ list

/// The query of the lead list; values are checked by the service like the API's.
#[derive(Deserialize, Default)]
pub(crate) struct ListQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    archived: Option<String>,
    #[serde(default)]
    notice: Option<String>,
}

/// The sort of the list's query (`created_at` for anything else) and its name.
fn sort_of(v: Option<&str>) -> (SortField, &'static str) {
    match v {
        Some("updated_at") => (SortField::UpdatedAt, "updated_at"),
        Some("name") => (SortField::Name, "name"),
        Some("status") => (SortField::Status, "status"),
        _ => (SortField::CreatedAt, "created_at"),
    }
}

/// `GET /admin/leads`: search, filters by status, source and tag, sort, cursor paging.
pub(crate) async fn list(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(p): Query<ListQuery>,
) -> PageResult {
    let (sort, current_sort) = sort_of(p.sort.as_deref());
    let order = if p.order.as_deref() == Some("asc") {
        SortOrder::Asc
    } else {
        SortOrder::Desc
    };
    let q = LeadQuery {
        status: p.status.as_deref().and_then(opt).into_iter().collect(),
        source: p.source.as_deref().and_then(opt),
        tags: p.tag.as_deref().and_then(opt).into_iter().collect(),
        q: p.q.as_deref().and_then(opt),
        sort,
        order,
        limit: Some(25),
        cursor: p.cursor.as_deref().and_then(opt),
        include_total: true,
        archived: match p.archived.as_deref() {
            Some("true") => Archived::Only,
            Some("any") => Archived::Include,
            _ => Archived::Hide,
        },
        ..LeadQuery::default()
    };
    let (status, page, errors) = match leads(&s, &ctx).list(&q).await {
        Ok(page) => (StatusCode::OK, Some(page), Errors::default()),
        Err(e) => match Errors::of(&e) {
            Some(errors) => (super::problem_status(&e), None, errors),
            None => return Err(PageError::new(ctx, e)),
        },
    };
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let link = |cursor: Option<&str>, sort: &str, order: &str| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("q", &p.q),
            ("status", &p.status),
            ("source", &p.source),
            ("tag", &p.tag),
            ("archived", &p.archived),
        ] {
            if let Some(v) = v.as_deref().and_then(opt) {
                q.append_pair(k, &v);
            }
        }
        q.append_pair("sort", sort).append_pair("order", order);
        if let Some(c) = cursor {
            q.append_pair("cursor", c);
        }
        ctx.url(&format!("/admin/leads?{}", q.finish()))
    };
    let flip = |field: &str| {
        if field == current_sort && order == SortOrder::Desc {
            "asc"
        } else {
            "desc"
        }
    };
    let status_now = value(&p.status);
    let body = html! {
        form method="get" action=(ctx.url("/admin/leads")) class="filters" role="search" {
            div class="field" {
                label for="f-q" { "Search" }
                input id="f-q" name="q" type="search" value=(value(&p.q));
            }
            div class="field" {
                label for="f-status" { "Status" }
                select id="f-status" name="status" {
                    option value="" { "Any" }
                    @for st in LeadStatus::ALL {
                        option value=(st.as_str()) selected[status_now == st.as_str()] { (st.as_str()) }
                    }
                }
            }
            (field("source", "Source", Input::Text, &value(&p.source), &errors, false))
            (field("tag", "Tag", Input::Text, &value(&p.tag), &errors, false))
            div class="field" {
                label for="f-archived" { "Archived leads" }
                select id="f-archived" name="archived" {
                    @for (v, label) in [("false", "Hidden"), ("true", "Only them"), ("any", "Shown too")] {
                        option value=(v) selected[value(&p.archived) == v] { (label) }
                    }
                }
            }
            input type="hidden" name="sort" value=(current_sort);
            input type="hidden" name="order" value=(if order == SortOrder::Asc { "asc" } else { "desc" });
            button type="submit" { "Filter" }
        }
        (errors.rest(&["source", "tag"]))
        @if let Some(page) = &page {
            @if let Some(total) = page.total { p class="muted" { (total) " matching" } }
            p class="sort" {
                "Sort by: "
                @for (f, label) in [("created_at", "created"), ("updated_at", "updated"), ("name", "name"), ("status", "status")] {
                    a href=(link(None, f, flip(f))) aria-current=[(f == current_sort).then_some("true")] { (label) }
                    " "
                }
            }
            (table(&ctx, &page.items))
            @if let Some(c) = &page.next_cursor {
                p { a href=(link(Some(c), current_sort, if order == SortOrder::Asc { "asc" } else { "desc" })) rel="next" id="next-page" { "Next page →" } }
            }
        }
    };
    let notice = super::notice_text(p.notice.as_deref());
    Ok(layout(&ctx, status, Nav::Leads, "Leads", notice, body))
}

fn table(ctx: &Ctx, items: &[Lead]) -> Markup {
    html! {
        @if items.is_empty() {
            p class="muted" { "No leads." }
        } @else {
            div class="scroll" {
                table class="leads" {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Phone" }
                        th scope="col" { "Company" } th scope="col" { "Status" } th scope="col" { "Source" }
                        th scope="col" { "Tags" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for l in items {
                            tr {
                                td { a href=(ctx.url(&format!("/admin/leads/{}", l.id))) { (l.name) } }
                                td { (l.email.as_ref().map(|e| e.as_str()).unwrap_or("")) }
                                td { (l.phone.as_ref().map(|p| p.as_str()).unwrap_or("")) }
                                td { (l.company.as_deref().unwrap_or("")) }
                                td {
                                    span class=(format!("status s-{}", l.status.as_str())) { (l.status.as_str()) }
                                    @if l.archived_at.is_some() { " " span class="tag archived" { "archived" } }
                                }
                                td { (l.source.as_deref().unwrap_or("")) }
                                td { @for t in &l.tags { span class="tag" { (t) } " " } }
                                td { (when(&l.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------ new lead

/// The values of the lead form, as typed (or as the parser found them).
#[derive(Default)]
struct LeadValues {
    name: String,
    email: String,
    phone: String,
    company: String,
    budget: String,
    project_type: String,
    source: String,
    message: String,
    notes: String,
    tags: String,
    custom: String,
    raw_input: String,
    ai_parsed: bool,
}

impl LeadValues {
    fn of_form(f: &FormData) -> Self {
        Self {
            name: f.text("name"),
            email: f.text("email"),
            phone: f.text("phone"),
            company: f.text("company"),
            budget: f.text("budget"),
            project_type: f.text("project_type"),
            source: f.text("source"),
            message: f.text("message"),
            notes: f.text("notes"),
            tags: f.text("tags"),
            custom: f.text("custom"),
            raw_input: f.text("raw_input"),
            ai_parsed: f.text("ai_parsed") == "true",
        }
    }

    /// The editable fields by name, with whether each is a single line.
    fn editable(&self) -> [(&'static str, &String, bool); 11] {
        [
            ("name", &self.name, true),
            ("email", &self.email, true),
            ("phone", &self.phone, true),
            ("company", &self.company, true),
            ("budget", &self.budget, true),
            ("project_type", &self.project_type, true),
            ("source", &self.source, true),
            ("tags", &self.tags, true),
            ("message", &self.message, false),
            ("notes", &self.notes, false),
            ("custom", &self.custom, false),
        ]
    }

    fn of_lead(l: &Lead) -> Self {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        Self {
            name: l.name.clone(),
            email: l
                .email
                .as_ref()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
            phone: l
                .phone
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            company: s(&l.company),
            budget: s(&l.budget),
            project_type: s(&l.project_type),
            source: s(&l.source),
            message: s(&l.message),
            notes: s(&l.notes),
            tags: l.tags.join(", "),
            custom: if l.custom.is_empty() {
                String::new()
            } else {
                serde_json::to_string_pretty(&l.custom).unwrap_or_default()
            },
            raw_input: String::new(),
            ai_parsed: false,
        }
    }

    fn of_new(l: &NewLead) -> Self {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        Self {
            name: l.name.clone(),
            email: s(&l.email),
            phone: s(&l.phone),
            company: s(&l.company),
            budget: s(&l.budget),
            project_type: s(&l.project_type),
            source: s(&l.source),
            message: s(&l.message),
            notes: s(&l.notes),
            tags: l.tags.join(", "),
            custom: String::new(),
            raw_input: s(&l.raw_input),
            ai_parsed: l.ai_parsed,
        }
    }

    fn tags(&self) -> Vec<String> {
        self.tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The custom fields: blank is none; anything else must be a JSON object.
    fn custom(&self) -> Result<Option<Map<String, Value>>, Errors> {
        if self.custom.trim().is_empty() {
            return Ok(None);
        }
        match serde_json::from_str::<Value>(&self.custom) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            _ => Err(Errors::one(
                "custom",
                "must be a JSON object, e.g. {\"score\": 5}",
            )),
        }
    }
}

/// What the edit form was drawn with: a digest of each field's value as a browser
/// sends it back (a single-line input drops line breaks; every line break comes
/// back as one `\n`), in hidden `was.{field}` inputs. A save changes only the fields
/// whose value differs from what was drawn, so a field someone else changed
/// meanwhile keeps their value. Digests, not copies: a lead's longest fields would
/// otherwise travel twice and could pass the body limit.
struct Was(Vec<(&'static str, String)>);

impl Was {
    fn digest(value: &str, single_line: bool) -> String {
        use sha2::Digest as _;
        let mut v = value.replace("\r\n", "\n").replace('\r', "\n");
        if single_line {
            v.retain(|c| c != '\n');
        }
        let d = sha2::Sha256::digest(v.as_bytes());
        d.iter().fold(String::with_capacity(64), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        })
    }

    /// The digests of the values a form is drawn with.
    fn of(v: &LeadValues) -> Self {
        Self(
            v.editable()
                .into_iter()
                .map(|(name, value, single)| (name, Self::digest(value, single)))
                .collect(),
        )
    }

    /// The digests a submitted form carries; `None` when it carries none (a page
    /// from before they existed, or a hand-made request).
    fn of_form(f: &FormData) -> Option<Self> {
        let d: Vec<(&'static str, String)> = LeadValues::default()
            .editable()
            .into_iter()
            .map(|(name, _, _)| (name, f.text(&format!("was.{name}"))))
            .collect();
        d.iter().all(|(_, v)| !v.is_empty()).then_some(Self(d))
    }

    /// Whether the submitted `value` of `name` differs from what was drawn.
    fn changed(&self, name: &str, value: &str, single_line: bool) -> bool {
        let then = self
            .0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d.as_str());
        then != Some(Self::digest(value, single_line).as_str())
    }

    fn hidden(&self) -> Markup {
        html! {
            @for (name, digest) in &self.0 {
                input type="hidden" name=(format!("was.{name}")) value=(digest);
            }
        }
    }
}

const LEAD_FIELDS: &[&str] = &[
    "name",
    "email",
    "phone",
    "company",
    "budget",
    "project_type",
    "source",
    "message",
    "notes",
    "tags",
    "custom",
];

/// The fields of a lead (new or edited) with their values and errors.
fn lead_fields(v: &LeadValues, errors: &Errors) -> Markup {
    html! {
        div class="grid" {
            (field("name", "Name", Input::Text, &v.name, errors, true))
            (field("email", "Email", Input::Email, &v.email, errors, false))
            (field("phone", "Phone (with country code)", Input::Tel, &v.phone, errors, false))
            (field("company", "Company", Input::Text, &v.company, errors, false))
            (field("budget", "Budget", Input::Text, &v.budget, errors, false))
            (field("project_type", "Project type", Input::Text, &v.project_type, errors, false))
            (field("source", "Source", Input::Text, &v.source, errors, false))
            (field("tags", "Tags (comma-separated)", Input::Text, &v.tags, errors, false))
        }
        (field("message", "Message", Input::Area(3), &v.message, errors, false))
        (field("notes", "Notes", Input::Area(3), &v.notes, errors, false))
        (field("custom", "Custom fields (a JSON object)", Input::Area(3), &v.custom, errors, false))
    }
}

fn new_page(
    ctx: &Ctx,
    status: StatusCode,
    text: &str,
    v: &LeadValues,
    errors: &Errors,
    parse_errors: &Errors,
    notice: Option<&str>,
) -> Response {
    let body = html! {
        section class="card" {
            h2 { "Paste a message" }
            p class="muted" { "An email or a chat message: the parser fills in the form below for you to check before saving." }
            (parse_errors.rest(&["text"]))
            form method="post" action=(ctx.url("/admin/leads/parse")) {
                (field("text", "Text", Input::Area(5), text, parse_errors, true))
                button type="submit" id="parse" { "Read it" }
            }
        }
        section class="card" {
            h2 { "The lead" }
            (errors.rest(LEAD_FIELDS))
            form method="post" action=(ctx.url("/admin/leads")) id="lead-form" {
                (lead_fields(v, errors))
                input type="hidden" name="raw_input" value=(v.raw_input);
                input type="hidden" name="ai_parsed" value=(v.ai_parsed);
                button type="submit" id="save-lead" { "Save the lead" }
            }
        }
    };
    layout(ctx, status, Nav::NewLead, "New lead", notice, body)
}

/// `GET /admin/leads/new`.
pub(crate) async fn new_form(ctx: Ctx) -> Response {
    let none = Errors::default();
    new_page(
        &ctx,
        StatusCode::OK,
        "",
        &LeadValues::default(),
        &none,
        &none,
        None,
    )
}

/// `POST /admin/leads/parse`: the pasted text read by the workspace's parser into
/// the form, for review; nothing is saved.
pub(crate) async fn parse(State(s): State<AppState>, ctx: Ctx, form: FormData) -> PageResult {
    let text = form.text("text");
    let none = Errors::default();
    match leads(&s, &ctx).parse(&text, false).await {
        Ok(parsed) => {
            let mut v = LeadValues::of_new(&parsed.parsed.fields);
            v.raw_input = text.clone();
            let notice = if parsed.parsed.found.is_empty() {
                "Nothing was found in the text: fill in the lead yourself."
            } else {
                "Check what was found, change what is wrong, then save."
            };
            Ok(new_page(
                &ctx,
                StatusCode::OK,
                &text,
                &v,
                &none,
                &none,
                Some(notice),
            ))
        }
        Err(e) => match Errors::of(&e) {
            Some(errors) => {
                let v = LeadValues::default();
                Ok(new_page(
                    &ctx,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &text,
                    &v,
                    &none,
                    &errors,
                    None,
                ))
            }
            None => Err(PageError::new(ctx, e)),
        },
    }
}

/// `POST /admin/leads`: creates the lead, then shows it; a refusal keeps the form as
/// typed with the errors next to the fields.
pub(crate) async fn create(State(s): State<AppState>, ctx: Ctx, form: FormData) -> PageResult {
    let v = LeadValues::of_form(&form);
    let none = Errors::default();
    let refuse = |status: StatusCode, errors: &Errors| {
        new_page(&ctx, status, &v.raw_input, &v, errors, &none, None)
    };
    let custom = match v.custom() {
        Ok(c) => c,
        Err(errors) => return Ok(refuse(StatusCode::UNPROCESSABLE_ENTITY, &errors)),
    };
    let input = NewLead {
        name: v.name.trim().to_owned(),
        email: opt(&v.email),
        phone: opt(&v.phone),
        company: opt(&v.company),
        budget: opt(&v.budget),
        project_type: opt(&v.project_type),
        message: opt(&v.message),
        source: opt(&v.source),
        status: None,
        notes: opt(&v.notes),
        tags: v.tags(),
        custom,
        raw_input: opt(&v.raw_input),
        ai_parsed: v.ai_parsed,
        owner_id: None,
    };
    match leads(&s, &ctx).create(input).await {
        Ok(lead) => Ok(redirect(
            &ctx.url(&format!("/admin/leads/{}?notice=created", lead.id)),
        )),
        Err(e) => match Errors::of(&e) {
            Some(errors) => Ok(refuse(super::problem_status(&e), &errors)),
            None => Err(PageError::new(ctx, e)),
        },
    }
}

// ------------------------------------------------------------------ one lead

/// What the detail page shows besides the lead: a refused edit (values and errors)
/// or a refused note or message.
#[derive(Default)]
struct Refused {
    /// A refused edit: what was typed, its errors, and the digests it was drawn
    /// with (kept, so that a second try still compares with the first drawing).
    edit: Option<(LeadValues, Errors, Was)>,
    /// The kind and text of a refused timeline entry.
    note: Option<((String, String), Errors)>,
    message: Option<(String, Errors)>,
    status: Option<Errors>,
}

fn detail_page(
    ctx: &Ctx,
    status: StatusCode,
    d: &LeadDetail,
    refused: Refused,
    notice: Option<&str>,
) -> Response {
    let l = &d.lead;
    let base = format!("/admin/leads/{}", l.id);
    let none = Errors::default();
    let own = LeadValues::of_lead(l);
    let drawn = Was::of(&own);
    let (values, edit_errors, was) = match &refused.edit {
        Some((v, e, was)) => (v, e, was),
        None => (&own, &none, &drawn),
    };
    let ((note_kind, note_text), note_errors) = refused
        .note
        .as_ref()
        .map_or((("note", ""), &none), |((k, t), e)| {
            ((k.as_str(), t.as_str()), e)
        });
    let (msg_text, msg_errors) = refused
        .message
        .as_ref()
        .map_or(("", &none), |(t, e)| (t.as_str(), e));
    let body = html! {
        @if let Some(e) = &refused.status { (e.rest(&[])) }
        p class="lead-status" {
            "Status: " span class=(format!("status s-{}", l.status.as_str())) id="lead-status" { (l.status.as_str()) }
            " · created " (when(&l.created_at)) " · updated " (when(&l.updated_at))
            @if let Some(at) = &l.archived_at { " · " span class="archived" id="archived" { "archived " (when(at)) } }
        }
        div class="columns" {
            section class="card" {
                h2 { "Status" }
                form method="post" action=(ctx.url(&format!("{base}/status"))) class="row" {
                    label for="f-new-status" { "Move to" }
                    select id="f-new-status" name="status" {
                        @for st in LeadStatus::ALL {
                            option value=(st.as_str()) selected[*st == l.status] { (st.as_str()) }
                        }
                    }
                    button type="submit" id="change-status" { "Change status" }
                }
            }
            section class="card" {
                h2 { "Add to the timeline" }
                (note_errors.rest(&["description"]))
                form method="post" action=(ctx.url(&format!("{base}/activities"))) {
                    div class="field" {
                        label for="f-kind" { "Kind" }
                        select id="f-kind" name="kind" {
                            @for k in ["note", "call", "email", "meeting"] { option value=(k) selected[k == note_kind] { (k) } }
                        }
                    }
                    (field("description", "What happened", Input::Area(3), note_text, note_errors, true))
                    button type="submit" id="add-note" { "Add" }
                }
            }
            @if l.phone.is_some() {
                section class="card" {
                    h2 { "Send a WhatsApp message" }
                    (msg_errors.rest(&["text"]))
                    form method="post" action=(ctx.url(&format!("{base}/messages"))) {
                        (field("text", "Message", Input::Area(3), msg_text, msg_errors, true))
                        button type="submit" { "Send" }
                    }
                }
            }
        }
        section class="card" {
            h2 { "Details" }
            (edit_errors.rest(LEAD_FIELDS))
            form method="post" action=(ctx.url(&base)) id="edit-form" {
                (was.hidden())
                (lead_fields(values, edit_errors))
                button type="submit" id="save-edit" { "Save changes" }
            }
        }
        section {
            h2 { "Timeline" }
            ol class="timeline" id="timeline" {
                @for a in d.activities.iter().rev() {
                    li class=(format!("kind-{}", a.kind.as_str())) {
                        span class="kind" { (a.kind.as_str()) }
                        " " (when(&a.created_at))
                        @if let (Some(o), Some(n)) = (a.old_status, a.new_status) {
                            " " span class="change" { (o.as_str()) " → " (n.as_str()) }
                        }
                        @if let Some(actor) = &a.actor { " " span class="muted" { "by " (actor) } }
                        @if let Some(desc) = &a.description { p class="desc" { (desc) } }
                    }
                }
            }
        }
        div class="actions" {
            @if l.archived_at.is_some() {
                (post_button(&ctx.url(&format!("{base}/restore")), "Restore to the lists", None, ""))
            } @else {
                (post_button(&ctx.url(&format!("{base}/archive")), "Archive", Some("Archive this lead? It leaves the lists and keeps its timeline."), ""))
            }
            " "
            (post_button(&ctx.url(&format!("{base}/delete")), "Delete this lead", Some("Delete this lead and its timeline? Archiving keeps the timeline."), "danger"))
        }
    };
    layout(ctx, status, Nav::Leads, &l.name, notice, body)
}

/// `GET /admin/leads/{id}`.
pub(crate) async fn detail(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(n): Query<NoticeQuery>,
) -> PageResult {
    let id = uuid_of(&ctx, &id, "lead")?;
    let d = leads(&s, &ctx).get(id).await.or_page(&ctx)?;
    let notice = n.text();
    Ok(detail_page(
        &ctx,
        StatusCode::OK,
        &d,
        Refused::default(),
        notice,
    ))
}

/// Shows the lead again with a refusal in place, or the error page.
async fn refused(
    s: &AppState,
    ctx: Ctx,
    id: LeadId,
    e: Error,
    into: impl FnOnce(Errors) -> Refused,
) -> PageResult {
    let Some(errors) = Errors::of(&e) else {
        return Err(PageError::new(ctx, e));
    };
    let d = leads(s, &ctx).get(id).await.or_page(&ctx)?;
    Ok(detail_page(
        &ctx,
        super::problem_status(&e),
        &d,
        into(errors),
        None,
    ))
}

/// `POST /admin/leads/{id}`: saves the edited fields (a blank field clears it).
pub(crate) async fn edit(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    form: FormData,
) -> PageResult {
    let id = uuid_of(&ctx, &id, "lead")?;
    let v = LeadValues::of_form(&form);
    let Some(was) = Was::of_form(&form) else {
        // Without what the form was drawn with, a blank field cannot be told from
        // one the user cleared: nothing is guessed.
        let d = leads(&s, &ctx).get(id).await.or_page(&ctx)?;
        let errors = Errors::one(
            "",
            "This form is out of date: your changes were not saved. Make them again here.",
        );
        let r = Refused {
            status: Some(errors),
            ..Refused::default()
        };
        return Ok(detail_page(&ctx, StatusCode::CONFLICT, &d, r, None));
    };
    let changed = |name: &str, value: &String, single: bool| was.changed(name, value, single);
    let custom = if changed("custom", &v.custom, false) {
        match v.custom() {
            Ok(c) => Some(c.unwrap_or_default()),
            Err(errors) => {
                let d = leads(&s, &ctx).get(id).await.or_page(&ctx)?;
                let r = Refused {
                    edit: Some((v, errors, was)),
                    ..Refused::default()
                };
                let status = StatusCode::UNPROCESSABLE_ENTITY;
                return Ok(detail_page(&ctx, status, &d, r, None));
            }
        }
    } else {
        None
    };
    // Only what the user changed: a field someone else saved since the page was
    // drawn keeps their value.
    let set = |name: &str, value: &String| changed(name, value, true).then(|| opt(value));
    let patch = LeadPatch {
        name: changed("name", &v.name, true).then(|| v.name.trim().to_owned()),
        email: set("email", &v.email),
        phone: set("phone", &v.phone),
        company: set("company", &v.company),
        budget: set("budget", &v.budget),
        project_type: set("project_type", &v.project_type),
        message: changed("message", &v.message, false).then(|| opt(&v.message)),
        source: set("source", &v.source),
        status: None,
        notes: changed("notes", &v.notes, false).then(|| opt(&v.notes)),
        tags: changed("tags", &v.tags, true).then(|| v.tags()),
        custom,
        owner_id: None,
    };
    match leads(&s, &ctx).update(id, patch).await {
        Ok(_) => Ok(redirect(
            &ctx.url(&format!("/admin/leads/{id}?notice=saved")),
        )),
        Err(e) => {
            refused(&s, ctx, id, e, |errors| Refused {
                edit: Some((v, errors, was)),
                ..Refused::default()
            })
            .await
        }
    }
}

/// `POST /admin/leads/{id}/status`: a status change (a timeline entry).
pub(crate) async fn status(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    form: FormData,
) -> PageResult {
    let id = uuid_of(&ctx, &id, "lead")?;
    let patch = LeadPatch {
        status: Some(form.text("status")),
        ..LeadPatch::default()
    };
    match leads(&s, &ctx).update(id, patch).await {
        Ok(_) => Ok(redirect(
            &ctx.url(&format!("/admin/leads/{id}?notice=status")),
        )),
        Err(e) => {
            refused(&s, ctx, id, e, |errors| Refused {
                status: Some(errors),
                ..Refused::default()
            })
            .await
        }
    }
}

/// `POST /admin/leads/{id}/activities`: a note, call, email or meeting.
pub(crate) async fn add_note(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    form: FormData,
) -> PageResult {
    let id = uuid_of(&ctx, &id, "lead")?;
    let (kind, text) = (form.text("kind"), form.text("description"));
    let input = NewActivity {
        kind: kind.clone(),
        description: opt(&text),
    };
    match leads(&s, &ctx).add_activity(id, input).await {
        Ok(_) => Ok(redirect(
            &ctx.url(&format!("/admin/leads/{id}?notice=note")),
        )),
        Err(e) => {
            refused(&s, ctx, id, e, |errors| Refused {
                note: Some(((kind, text), errors)),
                ..Refused::default()
            })
            .await
        }
    }
}

/// `POST /admin/leads/{id}/messages`: a WhatsApp text through the workspace's
/// integration (the same rules as the API: the 24-hour window, the budget).
pub(crate) async fn send_message(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    form: FormData,
) -> PageResult {
    let id = uuid_of(&ctx, &id, "lead")?;
    let text = form.text("text");
    let input = NewMessage {
        text: opt(&text),
        template: None,
    };
    match leads(&s, &ctx).send_message(id, "whatsapp", input).await {
        Ok(_) => Ok(redirect(
            &ctx.url(&format!("/admin/leads/{id}?notice=sent")),
        )),
        Err(e) => {
            // No integration, the window closed: said next to the message, not a crash.
            let e = match e {
                Error::Config(m) | Error::Integration(m) => Error::invalid("text", m),
                other => other,
            };
            refused(&s, ctx, id, e, |errors| Refused {
                message: Some((text, errors)),
                ..Refused::default()
            })
            .await
        }
    }
}

/// `POST /admin/leads/{id}/delete`: any signed-in user, as over the session API.
pub(crate) async fn delete(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> PageResult {
    let id = uuid_of(&ctx, &id, "lead")?;
    leads(&s, &ctx).delete(id).await.or_page(&ctx)?;
    Ok(redirect(&ctx.url("/admin/leads?notice=deleted")))
}

/// `POST /admin/leads/{id}/archive`.
pub(crate) async fn archive(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> PageResult {
    let id = uuid_of(&ctx, &id, "lead")?;
    leads(&s, &ctx).archive(id).await.or_page(&ctx)?;
    Ok(redirect(
        &ctx.url(&format!("/admin/leads/{id}?notice=archived")),
    ))
}

/// `POST /admin/leads/{id}/restore`.
pub(crate) async fn restore(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> PageResult {
    let id = uuid_of(&ctx, &id, "lead")?;
    leads(&s, &ctx).restore(id).await.or_page(&ctx)?;
    Ok(redirect(
        &ctx.url(&format!("/admin/leads/{id}?notice=restored")),
    ))
}
