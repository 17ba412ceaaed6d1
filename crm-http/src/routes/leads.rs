//! Lead routes, served twice: under `/api/v1` for API keys (scopes enforced) and under
//! `/api/admin` for signed-in users (any role). Plus the public contact form.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use crm_core::leads::merge::{DuplicateGroup, MergeInput, Merged};
use crm_core::leads::messages::NewMessage;
use crm_core::leads::{
    Activity, Archived, Bucket, Lead, LeadDetail, LeadPage, LeadPatch, LeadQuery, LeadStats,
    NewActivity, NewLead, Parsed, SortField, SortOrder, StatsQuery,
};
use crm_core::{LeadId, Leads, UserId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Json, JsonOrForm, Path, Query};
use crate::problem::ApiResult;
use crate::AppState;

/// The lead routes, relative to `/api/v1` or `/api/admin`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_leads, create_lead))
        .routes(routes!(get_lead, update_lead, delete_lead))
        .routes(routes!(archive_lead))
        .routes(routes!(lead_duplicates))
        .routes(routes!(export_leads))
        .routes(routes!(super::imports::start_import))
        .routes(routes!(super::imports::get_import))
        .routes(routes!(merge_leads))
        .routes(routes!(restore_lead))
        .routes(routes!(add_activity))
        .routes(routes!(send_message))
        .routes(routes!(parse_lead))
        .routes(routes!(lead_stats))
}

pub(super) fn leads(s: &AppState, c: &Caller) -> Leads {
    s.crm
        .workspace(c.workspace_id())
        .leads()
        .with_actor(c.actor())
}

/// Query of `GET /leads`. Lists are comma-separated.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Statuses, any of them (`new,contacted`).
    #[param(
        pattern = r"^\s*$|^(new|contacted|qualified|proposal|won|lost)(,(new|contacted|qualified|proposal|won|lost))*$",
        example = "new,contacted"
    )]
    status: Option<String>,
    /// One source.
    #[param(max_length = 64, example = "website")]
    source: Option<String>,
    /// Tags, all of them (`vip,2026`).
    #[param(
        max_length = 1020,
        pattern = "^[^,]{0,50}(,[^,]{0,50}){0,19}$",
        example = "vip"
    )]
    tags: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(example = "2026-01-01T00:00:00Z")]
    created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    #[param(example = "2099-01-01T00:00:00Z")]
    created_before: Option<DateTime<Utc>>,
    /// Free text: every word must prefix-match a word of name, email, company, message or notes.
    #[param(max_length = 200, pattern = r"^\s*$|[0-9A-Za-z]", example = "ana")]
    q: Option<String>,
    /// Sort field (default `created_at`).
    sort: Option<SortField>,
    /// Sort direction (default `desc`).
    order: Option<SortOrder>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (same filters and sort).
    #[param(min_length = 1, max_length = 1024, pattern = "^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
    /// Also count every match.
    include_total: Option<bool>,
    /// Archived leads: `false` hides them (the default), `true` lists only them,
    /// `any` both.
    archived: Option<Archived>,
    /// Only leads assigned to this user.
    owner_id: Option<UserId>,
}

/// The listing query the parameters ask for.
fn lead_query(p: ListParams) -> LeadQuery {
    LeadQuery {
        status: list_of(p.status),
        source: p.source,
        tags: list_of(p.tags),
        created_after: p.created_after,
        created_before: p.created_before,
        q: p.q,
        sort: p.sort.unwrap_or_default(),
        order: p.order.unwrap_or_default(),
        limit: p.limit,
        cursor: p.cursor,
        include_total: p.include_total.unwrap_or(false),
        archived: p.archived.unwrap_or_default(),
        owner_id: p.owner_id,
    }
}

pub(super) fn list_of(v: Option<String>) -> Vec<String> {
    v.map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// Query of `GET /leads/export`: the filters of `GET /leads` (see there), without
/// its paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportParams {
    /// Statuses, any of them (`new,contacted`).
    #[param(
        pattern = r"^\s*$|^(new|contacted|qualified|proposal|won|lost)(,(new|contacted|qualified|proposal|won|lost))*$",
        example = "new,contacted"
    )]
    status: Option<String>,
    /// One source.
    #[param(max_length = 64, example = "website")]
    source: Option<String>,
    /// Tags, all of them (`vip,2026`).
    #[param(
        max_length = 1020,
        pattern = "^[^,]{0,50}(,[^,]{0,50}){0,19}$",
        example = "vip"
    )]
    tags: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(example = "2026-01-01T00:00:00Z")]
    created_after: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    #[param(example = "2099-01-01T00:00:00Z")]
    created_before: Option<DateTime<Utc>>,
    /// Free text, as for `GET /leads`.
    #[param(max_length = 200, pattern = r"^\s*$|[0-9A-Za-z]", example = "ana")]
    q: Option<String>,
    /// Sort field (default `created_at`).
    sort: Option<SortField>,
    /// Sort direction (default `desc`).
    order: Option<SortOrder>,
    /// Archived leads: `false` leaves them out (the default), `true` only them,
    /// `any` both.
    archived: Option<Archived>,
    /// Only leads assigned to this user.
    owner_id: Option<UserId>,
}

/// Export the leads a listing selects (the filters, search, sort and `archived`
/// of `GET /leads`) as CSV,
/// streamed: every field, then a `custom.KEY` column per custom-field key; cells a
/// spreadsheet would run as formulas start with `'`.
#[utoipa::path(get, path = "/leads/export", tag = "leads", params(ExportParams),
    responses((status = 200, description = "The leads as CSV", content_type = "text/csv", body = String)))]
pub(crate) async fn export_leads(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<ExportParams>,
) -> ApiResult<axum::response::Response> {
    c.require("leads:read")?;
    let q = lead_query(ListParams {
        status: p.status,
        source: p.source,
        tags: p.tags,
        created_after: p.created_after,
        created_before: p.created_before,
        q: p.q,
        sort: p.sort,
        order: p.order,
        archived: p.archived,
        owner_id: p.owner_id,
        ..ListParams::default()
    });
    let export = leads(&s, &c).export(&q).await?;
    // A failure after the first bytes cannot change the status any more: the body
    // ends with an error (the client sees a cut-off transfer) and it is logged.
    let chunks = futures_util::stream::unfold(Some(export), |state| async move {
        let mut export = state?;
        match export.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(export))),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %crm_core::error::Chain(&e), "an export stopped");
                Some((Err(std::io::Error::other("the export stopped")), None))
            }
        }
    });
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        axum::http::header::CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"leads.csv\""),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok((headers, axum::body::Body::from_stream(chunks)).into_response())
}

/// Query of `GET /stats`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatsParams {
    /// The series starts in the bucket of this instant (RFC 3339; default: 30 days
    /// before `end`).
    #[param(example = "2026-01-01T00:00:00Z")]
    start: Option<DateTime<Utc>>,
    /// The series ends before this instant (RFC 3339; default: now).
    #[param(example = "2026-02-01T00:00:00Z")]
    end: Option<DateTime<Utc>>,
    /// The series' bucket: `day` (the default), `week` (ISO, from Monday) or `month`,
    /// in UTC; at most 400 buckets.
    bucket: Option<Bucket>,
}

/// Lead statistics: counts by status and by source, new leads per bucket over a
/// range (zero-filled), the funnel (leads that were ever in each status) and the
/// median time from creation to contact. The range bounds the series only.
#[utoipa::path(get, path = "/stats", tag = "leads", params(StatsParams),
    responses((status = 200, description = "The workspace's lead statistics", body = LeadStats)))]
pub(crate) async fn lead_stats(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<StatsParams>,
) -> ApiResult<axum::Json<LeadStats>> {
    c.require("leads:read")?;
    let q = StatsQuery {
        start: p.start,
        end: p.end,
        bucket: p.bucket.unwrap_or_default(),
    };
    Ok(axum::Json(leads(&s, &c).stats(&q).await?))
}

/// List leads (filters, search, sort, cursor pagination).
#[utoipa::path(get, path = "/leads", tag = "leads", params(ListParams),
    responses((status = 200, description = "One page of leads", body = LeadPage)))]
pub(crate) async fn list_leads(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<ListParams>,
) -> ApiResult<axum::Json<LeadPage>> {
    c.require("leads:read")?;
    Ok(axum::Json(leads(&s, &c).list(&lead_query(p)).await?))
}

/// Create a lead (409 with the existing id when the email or phone is taken).
#[utoipa::path(post, path = "/leads", tag = "leads", request_body = NewLead,
    responses((status = 201, description = "The new lead", body = Lead)))]
pub(crate) async fn create_lead(
    State(s): State<AppState>,
    c: Caller,
    Json(input): Json<NewLead>,
) -> ApiResult<impl IntoResponse> {
    c.require("leads:write")?;
    let lead = leads(&s, &c).create(input).await?;
    Ok((StatusCode::CREATED, axum::Json(lead)))
}

/// Get a lead with its activities.
#[utoipa::path(get, path = "/leads/{id}", tag = "leads",
    params(("id" = LeadId, Path, description = "The lead id")),
    responses((status = 200, description = "The lead and its timeline", body = LeadDetail)))]
pub(crate) async fn get_lead(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
) -> ApiResult<axum::Json<LeadDetail>> {
    c.require("leads:read")?;
    Ok(axum::Json(leads(&s, &c).get(id).await?))
}

/// Change some fields of a lead (`null` clears a clearable field).
#[utoipa::path(patch, path = "/leads/{id}", tag = "leads", request_body = LeadPatch,
    params(("id" = LeadId, Path, description = "The lead id")),
    responses((status = 200, description = "The lead as it is now", body = Lead)))]
pub(crate) async fn update_lead(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
    Json(patch): Json<LeadPatch>,
) -> ApiResult<axum::Json<Lead>> {
    c.require("leads:write")?;
    Ok(axum::Json(leads(&s, &c).update(id, patch).await?))
}

/// Query of `DELETE /leads/{id}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteParams {
    /// Required (`true`) to delete a lead that has timeline entries: without it
    /// such a lead is refused with 409 `confirmation_required` (archive it instead
    /// to keep its history).
    confirm: Option<bool>,
}

/// Delete a lead and its activities. A lead with timeline entries needs
/// `?confirm=true` (409 `confirmation_required` without it).
#[utoipa::path(delete, path = "/leads/{id}", tag = "leads",
    params(("id" = LeadId, Path, description = "The lead id"), DeleteParams),
    responses((status = 204, description = "Deleted"),
              (status = 409, description = "`confirmation_required`: the lead has timeline entries and `confirm` is not `true`; nothing was deleted", body = crate::Problem)))]
pub(crate) async fn delete_lead(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
    Query(p): Query<DeleteParams>,
) -> ApiResult<StatusCode> {
    c.require("leads:delete")?;
    let confirm = p.confirm.unwrap_or(false);
    leads(&s, &c).delete_confirmed(id, confirm).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /leads/duplicates`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DuplicatesParams {
    /// Groups at most, 1–100 (default 50).
    #[param(minimum = 1, maximum = 100, example = 50)]
    limit: Option<u32>,
}

/// Groups of leads that look like one person: the same mailbox (`+tags` and Gmail
/// dots aside; score 0.95) or the same name at the same company (0.8); archived
/// leads are left out. The likeliest first.
#[utoipa::path(get, path = "/leads/duplicates", tag = "leads", params(DuplicatesParams),
    responses((status = 200, description = "The candidate groups", body = Vec<DuplicateGroup>)))]
pub(crate) async fn lead_duplicates(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<DuplicatesParams>,
) -> ApiResult<axum::Json<Vec<DuplicateGroup>>> {
    c.require("leads:read")?;
    let groups = leads(&s, &c).duplicates(p.limit.unwrap_or(50)).await?;
    Ok(axum::Json(groups))
}

/// Merge leads into this one: their timelines move here, a `merged` entry names
/// them, they are deleted, `lead.merged` carries their last state; all or nothing.
/// The target keeps its values and fills its blanks from them in order; `prefer`
/// takes a field from a named lead. `dry_run` answers the same and writes nothing.
/// Needs `leads:write`, and `leads:delete` unless `dry_run`. Merging a lead into
/// itself is 422 on `from`; an archived lead 409 `lead_archived`.
#[utoipa::path(post, path = "/leads/{id}/merge", tag = "leads", request_body = MergeInput,
    params(("id" = LeadId, Path, description = "The lead that absorbs the others")),
    responses((status = 200, description = "The merged lead, or what it would be", body = Merged),
              (status = 404, description = "The lead, or one named in `from`, is not in the workspace", body = crate::Problem)))]
pub(crate) async fn merge_leads(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
    Json(input): Json<MergeInput>,
) -> ApiResult<axum::Json<Merged>> {
    c.require("leads:write")?;
    if !input.dry_run {
        c.require("leads:delete")?;
    }
    Ok(axum::Json(leads(&s, &c).merge(id, input).await?))
}

/// Archive a lead: hidden from listings and search unless `archived` asks for it,
/// its timeline kept (`lead.archived`). Archiving an archived lead changes nothing.
#[utoipa::path(post, path = "/leads/{id}/archive", tag = "leads",
    params(("id" = LeadId, Path, description = "The lead id")),
    responses((status = 200, description = "The lead, archived", body = Lead)))]
pub(crate) async fn archive_lead(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
) -> ApiResult<axum::Json<Lead>> {
    c.require("leads:write")?;
    Ok(axum::Json(leads(&s, &c).archive(id).await?))
}

/// Restore an archived lead to the listings (`lead.restored`).
#[utoipa::path(post, path = "/leads/{id}/restore", tag = "leads",
    params(("id" = LeadId, Path, description = "The lead id")),
    responses((status = 200, description = "The lead, not archived", body = Lead)))]
pub(crate) async fn restore_lead(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
) -> ApiResult<axum::Json<Lead>> {
    c.require("leads:write")?;
    Ok(axum::Json(leads(&s, &c).restore(id).await?))
}

/// Add an activity (note, call, email, meeting, …) to a lead's timeline.
#[utoipa::path(post, path = "/leads/{id}/activities", tag = "leads", request_body = NewActivity,
    params(("id" = LeadId, Path, description = "The lead id")),
    responses((status = 201, description = "The new activity", body = Activity)))]
pub(crate) async fn add_activity(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
    Json(input): Json<NewActivity>,
) -> ApiResult<impl IntoResponse> {
    c.require("leads:write")?;
    let a = leads(&s, &c).add_activity(id, input).await?;
    Ok((StatusCode::CREATED, axum::Json(a)))
}

/// Send a WhatsApp message to the lead (text within 24 hours of their last message,
/// else a template) with the workspace's WhatsApp integration; it is recorded on the
/// timeline as a `message` activity whose status the provider's webhooks update. A
/// lead without a phone: 422 on `phone`; outside the 24-hour window: 409
/// `window_closed`; a message WhatsApp refuses (an unknown template): 422
/// `provider_error` with its words; no integration: 503.
#[utoipa::path(post, path = "/leads/{id}/messages", tag = "leads", request_body = NewMessage,
    params(("id" = LeadId, Path, description = "The lead id")),
    responses((status = 201, description = "The message activity", body = Activity)))]
pub(crate) async fn send_message(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
    Json(input): Json<NewMessage>,
) -> ApiResult<impl IntoResponse> {
    c.require("messages:write")?;
    let a = leads(&s, &c).send_message(id, "whatsapp", input).await?;
    Ok((StatusCode::CREATED, axum::Json(a)))
}

/// Input of `POST /leads/parse`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"text": "Hi, I am Ana López (ana@example.com, +34 600 123 456), budget around 10k for a web app.", "auto_save": false}))]
#[serde(deny_unknown_fields)]
pub(crate) struct ParseInput {
    /// Free text (an email, a chat message), up to 5,000 characters.
    #[schema(min_length = 1, max_length = 5000, pattern = r"\S")]
    text: String,
    /// Also create the lead from what was found.
    #[serde(default)]
    auto_save: bool,
}

/// Turn free text into lead fields with the configured parser (optionally saving it).
#[utoipa::path(post, path = "/leads/parse", tag = "leads", request_body = ParseInput,
    responses((status = 200, description = "What the parser found, and the lead when saved", body = Parsed)))]
pub(crate) async fn parse_lead(
    State(s): State<AppState>,
    c: Caller,
    Json(input): Json<ParseInput>,
) -> ApiResult<axum::Json<Parsed>> {
    c.require("leads:read")?;
    if input.auto_save {
        c.require("leads:write")?;
    }
    Ok(axum::Json(
        leads(&s, &c).parse(&input.text, input.auto_save).await?,
    ))
}

/// The public contact form. `website` is a honeypot: people leave it empty.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(example = json!({"name": "Ana López", "email": "ana@example.com", "phone": "+34 600 123 456", "company": "Acme SL", "message": "We need a booking app."}))]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ContactForm {
    /// Required.
    #[schema(required = true, min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    /// Email or phone is required.
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// With country code.
    #[schema(
        format = "phone",
        max_length = 32,
        pattern = r"^\s*$|^\s*(\+|00)[0-9 ()./-]+$"
    )]
    phone: Option<String>,
    #[schema(max_length = 200)]
    company: Option<String>,
    /// One of the allowed budgets.
    #[schema(max_length = 64)]
    budget: Option<String>,
    /// One of the allowed project types.
    #[schema(max_length = 64)]
    project_type: Option<String>,
    #[schema(max_length = 5000)]
    message: Option<String>,
    /// One of the allowed sources.
    #[schema(max_length = 64)]
    source: Option<String>,
    /// Leave empty (bots fill it in).
    website: Option<String>,
}

/// What the contact form answers, honeypot or not.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Received {
    /// Always `received`.
    status: &'static str,
}

/// Submit the contact form (JSON or an HTML form). A lead with the same email or phone
/// gets the submission on its timeline and keeps its fields. Answers the same whether
/// or not the lead existed.
#[utoipa::path(post, path = "/api/leads", tag = "public",
    request_body(content(
        (ContactForm = "application/json"),
        (ContactForm = "application/x-www-form-urlencoded")
    )),
    responses((status = 202, description = "Received", body = Received)))]
pub(crate) async fn contact(
    State(s): State<AppState>,
    JsonOrForm(form): JsonOrForm<ContactForm>,
) -> ApiResult<impl IntoResponse> {
    let received = (
        StatusCode::ACCEPTED,
        axum::Json(Received { status: "received" }),
    );
    if form
        .website
        .as_deref()
        .is_some_and(|w| !w.trim().is_empty())
    {
        tracing::info!("contact form honeypot filled; nothing written");
        return Ok(received);
    }
    let input = NewLead {
        name: form.name,
        email: form.email,
        phone: form.phone,
        company: form.company,
        budget: form.budget,
        project_type: form.project_type,
        message: form.message,
        source: form.source,
        ..NewLead::default()
    };
    s.crm
        .workspace(s.cfg.public_workspace)
        .leads()
        .with_actor("contact_form")
        .capture(input)
        .await?;
    Ok(received)
}
