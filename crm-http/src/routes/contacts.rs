//! Contact and organization routes, and converting a lead: served with the lead
//! routes under `/api/v1` (scopes `contacts:read|write|delete`) and `/api/admin`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use crm_core::contacts::{
    Contact, ContactPage, ContactPatch, ContactQuery, ConvertInput, Converted, NewContact,
    NewOrganization, Organization, OrganizationPage, OrganizationPatch, OrganizationQuery,
};
use crm_core::leads::{SortField, SortOrder};
use crm_core::{ContactId, Contacts, LeadId, OrganizationId, Organizations, UserId};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, Json, JsonOrEmpty, Path, Query};
use crate::problem::ApiResult;
use crate::AppState;

/// The contact, organization and conversion routes, relative to `/api/v1` or
/// `/api/admin`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_contacts, create_contact))
        .routes(routes!(get_contact, update_contact, delete_contact))
        .routes(routes!(list_organizations, create_organization))
        .routes(routes!(
            get_organization,
            update_organization,
            delete_organization
        ))
        .routes(routes!(convert_lead))
}

fn contacts(s: &AppState, c: &Caller) -> Contacts {
    s.crm.workspace(c.workspace_id()).contacts()
}

fn organizations(s: &AppState, c: &Caller) -> Organizations {
    s.crm.workspace(c.workspace_id()).organizations()
}

/// Query of `GET /contacts`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ContactParams {
    /// Free text: every word must prefix-match a word of the name, emails, title or notes.
    #[param(max_length = 200, pattern = r"^\s*$|[0-9A-Za-z]", example = "ana")]
    q: Option<String>,
    /// Only contacts assigned to this user.
    owner_id: Option<UserId>,
    /// Only contacts of this organization.
    organization_id: Option<OrganizationId>,
    /// Tags, all of them (`vip,2026`).
    #[param(
        max_length = 1020,
        pattern = "^[^,]{0,50}(,[^,]{0,50}){0,19}$",
        example = "vip"
    )]
    tags: Option<String>,
    /// Sort field: `created_at` (the default), `updated_at` or `name` (`status`
    /// is refused with 422).
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
}

/// List contacts (filters, search, sort, cursor pagination).
#[utoipa::path(get, path = "/contacts", tag = "contacts", params(ContactParams),
    responses((status = 200, description = "One page of contacts", body = ContactPage)))]
pub(crate) async fn list_contacts(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<ContactParams>,
) -> ApiResult<axum::Json<ContactPage>> {
    c.require("contacts:read")?;
    let q = ContactQuery {
        q: p.q,
        owner_id: p.owner_id,
        organization_id: p.organization_id,
        tags: super::leads::list_of(p.tags),
        sort: p.sort.unwrap_or_default(),
        order: p.order.unwrap_or_default(),
        limit: p.limit,
        cursor: p.cursor,
        include_total: p.include_total.unwrap_or(false),
    };
    Ok(axum::Json(contacts(&s, &c).list(&q).await?))
}

/// Create a contact (409 with the existing id when one of its emails or phones
/// belongs to another contact).
#[utoipa::path(post, path = "/contacts", tag = "contacts", request_body = NewContact,
    responses((status = 201, description = "The new contact", body = Contact)))]
pub(crate) async fn create_contact(
    State(s): State<AppState>,
    c: Caller,
    Json(input): Json<NewContact>,
) -> ApiResult<impl IntoResponse> {
    c.require("contacts:write")?;
    let contact = contacts(&s, &c).create(input).await?;
    Ok((StatusCode::CREATED, axum::Json(contact)))
}

/// Get a contact.
#[utoipa::path(get, path = "/contacts/{id}", tag = "contacts",
    params(("id" = ContactId, Path, description = "The contact id")),
    responses((status = 200, description = "The contact", body = Contact)))]
pub(crate) async fn get_contact(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<ContactId>,
) -> ApiResult<axum::Json<Contact>> {
    c.require("contacts:read")?;
    Ok(axum::Json(contacts(&s, &c).get(id).await?))
}

/// Change some fields of a contact (`null` clears a clearable field; lists are
/// replaced whole).
#[utoipa::path(patch, path = "/contacts/{id}", tag = "contacts", request_body = ContactPatch,
    params(("id" = ContactId, Path, description = "The contact id")),
    responses((status = 200, description = "The contact as it is now", body = Contact)))]
pub(crate) async fn update_contact(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<ContactId>,
    Json(patch): Json<ContactPatch>,
) -> ApiResult<axum::Json<Contact>> {
    c.require("contacts:write")?;
    Ok(axum::Json(contacts(&s, &c).update(id, patch).await?))
}

/// Delete a contact (leads converted into it keep their timeline, unlinked).
#[utoipa::path(delete, path = "/contacts/{id}", tag = "contacts",
    params(("id" = ContactId, Path, description = "The contact id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_contact(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<ContactId>,
) -> ApiResult<StatusCode> {
    c.require("contacts:delete")?;
    contacts(&s, &c).delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /organizations`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct OrganizationParams {
    /// Free text: every word must prefix-match a word of the name, domain or industry.
    #[param(max_length = 200, pattern = r"^\s*$|[0-9A-Za-z]", example = "acme")]
    q: Option<String>,
    /// Only organizations assigned to this user.
    owner_id: Option<UserId>,
    /// Sort field: `created_at` (the default), `updated_at` or `name` (`status`
    /// is refused with 422).
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
}

/// List organizations (filters, search, sort, cursor pagination).
#[utoipa::path(get, path = "/organizations", tag = "organizations", params(OrganizationParams),
    responses((status = 200, description = "One page of organizations", body = OrganizationPage)))]
pub(crate) async fn list_organizations(
    State(s): State<AppState>,
    c: Caller,
    Query(p): Query<OrganizationParams>,
) -> ApiResult<axum::Json<OrganizationPage>> {
    c.require("contacts:read")?;
    let q = OrganizationQuery {
        q: p.q,
        owner_id: p.owner_id,
        sort: p.sort.unwrap_or_default(),
        order: p.order.unwrap_or_default(),
        limit: p.limit,
        cursor: p.cursor,
        include_total: p.include_total.unwrap_or(false),
    };
    Ok(axum::Json(organizations(&s, &c).list(&q).await?))
}

/// Create an organization (409 with the existing id when its domain is taken).
#[utoipa::path(post, path = "/organizations", tag = "organizations", request_body = NewOrganization,
    responses((status = 201, description = "The new organization", body = Organization)))]
pub(crate) async fn create_organization(
    State(s): State<AppState>,
    c: Caller,
    Json(input): Json<NewOrganization>,
) -> ApiResult<impl IntoResponse> {
    c.require("contacts:write")?;
    let org = organizations(&s, &c).create(input).await?;
    Ok((StatusCode::CREATED, axum::Json(org)))
}

/// Get an organization.
#[utoipa::path(get, path = "/organizations/{id}", tag = "organizations",
    params(("id" = OrganizationId, Path, description = "The organization id")),
    responses((status = 200, description = "The organization", body = Organization)))]
pub(crate) async fn get_organization(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<OrganizationId>,
) -> ApiResult<axum::Json<Organization>> {
    c.require("contacts:read")?;
    Ok(axum::Json(organizations(&s, &c).get(id).await?))
}

/// Change some fields of an organization (`null` clears a clearable field).
#[utoipa::path(patch, path = "/organizations/{id}", tag = "organizations",
    request_body = OrganizationPatch,
    params(("id" = OrganizationId, Path, description = "The organization id")),
    responses((status = 200, description = "The organization as it is now", body = Organization)))]
pub(crate) async fn update_organization(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<OrganizationId>,
    Json(patch): Json<OrganizationPatch>,
) -> ApiResult<axum::Json<Organization>> {
    c.require("contacts:write")?;
    Ok(axum::Json(organizations(&s, &c).update(id, patch).await?))
}

/// Delete an organization (its contacts stay, unlinked).
#[utoipa::path(delete, path = "/organizations/{id}", tag = "organizations",
    params(("id" = OrganizationId, Path, description = "The organization id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_organization(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<OrganizationId>,
) -> ApiResult<StatusCode> {
    c.require("contacts:delete")?;
    organizations(&s, &c).delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Convert a lead into a contact (and its company into an organization), reusing
/// the contact or organization that already has its email, phone or domain. A
/// converted lead converted again answers its contact and writes nothing. The body
/// may be empty. Needs `leads:write` and `contacts:write`.
#[utoipa::path(post, path = "/leads/{id}/convert", tag = "leads",
    request_body(content = Option<ConvertInput>, description = "Optional: an empty body converts with an organization"),
    params(("id" = LeadId, Path, description = "The lead id")),
    responses((status = 200, description = "The lead, its contact and organization", body = Converted),
              (status = 409, description = "`lead_archived`: restore the lead first", body = crate::Problem)))]
pub(crate) async fn convert_lead(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
    JsonOrEmpty(input): JsonOrEmpty<ConvertInput>,
) -> ApiResult<axum::Json<Converted>> {
    c.require("leads:write")?;
    c.require("contacts:write")?;
    let converted = super::leads::leads(&s, &c).convert(id, input).await?;
    Ok(axum::Json(converted))
}
