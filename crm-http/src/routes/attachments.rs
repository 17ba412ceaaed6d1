//! Files on leads and contacts, served with the lead routes under `/api/v1` and
//! `/api/admin` (a lead's files need `leads:read|write`, a contact's
//! `contacts:read|write`), and `GET /api/files?token=…`, the signed download link
//! anyone holding it may use until it expires.
//!
//! Decided: an upload is `multipart/form-data` with one part, `file` (its file
//! name is the attachment's name), as with Twenty's and most upload APIs. A body
//! whose `Content-Length` is over the limit is refused with 413 before a byte is
//! read; a chunked one as soon as the file passes the limit. An upload is not
//! replayed under an `Idempotency-Key` (the body is a file too large to
//! fingerprint, as with imports): sending it again stores a second file. Downloads are served
//! as attachments (`Content-Disposition: attachment`), with `nosniff` and a
//! sandboxing CSP, so a file never runs as a page of this origin.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crm_core::attachments::{
    content_disposition, Attachment, Attachments, Download, Parent, SignedLink,
};
use crm_core::{AttachmentId, ContactId, Error, LeadId};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Caller, JsonOrEmpty, Path, Query};
use crate::problem::{ApiResult, Problem};
use crate::AppState;

/// What a multipart body may carry besides the file (boundaries, part headers).
const MULTIPART_OVERHEAD: u64 = 16 * 1024;

/// The attachment routes, relative to `/api/v1` or `/api/admin`. The body limit of
/// the upload routes is the file limit plus the multipart framing.
pub(crate) fn router(s: &AppState) -> OpenApiRouter<AppState> {
    let limit = s
        .crm
        .attachment_rules()
        .max_file_size
        .saturating_add(MULTIPART_OVERHEAD);
    let uploads = OpenApiRouter::new()
        .routes(routes!(list_lead_files, add_lead_file))
        .routes(routes!(list_contact_files, add_contact_file))
        .route_layer(DefaultBodyLimit::max(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
    OpenApiRouter::new()
        .merge(uploads)
        .routes(routes!(get_lead_file, delete_lead_file))
        .routes(routes!(lead_file_content))
        .routes(routes!(lead_file_link))
        .routes(routes!(get_contact_file, delete_contact_file))
        .routes(routes!(contact_file_content))
        .routes(routes!(contact_file_link))
}

/// The public download route (`/api/files?token=…`), relative to the root.
pub(crate) fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(open_link))
}

fn files(s: &AppState, c: &Caller) -> Attachments {
    s.crm
        .workspace(c.workspace_id())
        .attachments()
        .with_actor(c.actor())
}

/// The scope a caller needs to `verb` (`read`, `write`) the files of `parent`.
fn require(c: &Caller, parent: Parent, verb: &str) -> ApiResult<()> {
    let resource = match parent {
        Parent::Lead(_) => "leads",
        Parent::Contact(_) => "contacts",
    };
    c.require(&format!("{resource}:{verb}"))?;
    Ok(())
}

/// The form of an upload.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct UploadForm {
    /// The file; its file name is the attachment's name (without any directory).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The body of a link request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkRequest {
    /// Seconds the link works for: 1–604800 (7 days); default 900.
    #[schema(minimum = 1, maximum = 604800, example = 900)]
    expires_in: Option<u64>,
}

async fn list(s: &AppState, c: &Caller, parent: Parent) -> ApiResult<axum::Json<Vec<Attachment>>> {
    require(c, parent, "read")?;
    Ok(axum::Json(files(s, c).list(parent).await?))
}

async fn add(
    s: &AppState,
    c: &Caller,
    parent: Parent,
    headers: &HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    require(c, parent, "write")?;
    let limit = s.crm.attachment_rules().max_file_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(Error::TooLarge { limit }.into());
    }
    let mut form = form.map_err(|_| {
        Problem::field(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type",
            "must be multipart/form-data with a boundary",
        )
    })?;
    let (name, bytes) = read_file(&mut form, limit).await?;
    let a = files(s, c).add(parent, &name, bytes).await?;
    Ok((StatusCode::CREATED, axum::Json(a)).into_response())
}

/// The `file` part of the form: its file name and bytes, refused as soon as it
/// passes `limit`.
async fn read_file(form: &mut Multipart, limit: u64) -> ApiResult<(String, Bytes)> {
    let unreadable = |e: axum::extract::multipart::MultipartError| -> crate::problem::ApiError {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::TooLarge { limit }.into()
        } else {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid_multipart",
                "the body is not a readable multipart form",
            )
            .into()
        }
    };
    let mut found = None;
    while let Some(mut field) = form.next_field().await.map_err(unreadable)? {
        let part = field.name().unwrap_or_default().to_owned();
        if part != "file" {
            return Err(
                Error::invalid(part, "is not a part of an upload: send one part, file").into(),
            );
        }
        if found.is_some() {
            return Err(Error::invalid("file", "must be sent once").into());
        }
        let name = field.file_name().unwrap_or_default().to_owned();
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(Error::TooLarge { limit }.into());
            }
            bytes.extend_from_slice(&chunk);
        }
        found = Some((name, Bytes::from(bytes)));
    }
    let (name, bytes) = found.ok_or_else(|| Error::invalid("file", "is required"))?;
    if name.is_empty() {
        return Err(Error::invalid("file", "needs a file name (the part's filename)").into());
    }
    Ok((name, bytes))
}

async fn get(
    s: &AppState,
    c: &Caller,
    parent: Parent,
    id: AttachmentId,
) -> ApiResult<axum::Json<Attachment>> {
    require(c, parent, "read")?;
    Ok(axum::Json(files(s, c).get(parent, id).await?))
}

async fn delete(
    s: &AppState,
    c: &Caller,
    parent: Parent,
    id: AttachmentId,
) -> ApiResult<StatusCode> {
    require(c, parent, "write")?;
    files(s, c).delete(parent, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn content(
    s: &AppState,
    c: &Caller,
    parent: Parent,
    id: AttachmentId,
) -> ApiResult<Response> {
    require(c, parent, "read")?;
    Ok(serve(files(s, c).open(parent, id).await?))
}

async fn link(
    s: &AppState,
    c: &Caller,
    parent: Parent,
    id: AttachmentId,
    body: LinkRequest,
) -> ApiResult<axum::Json<SignedLink>> {
    require(c, parent, "read")?;
    let ttl = body.expires_in.map(std::time::Duration::from_secs);
    Ok(axum::Json(files(s, c).link(parent, id, ttl).await?))
}

/// A download: the bytes with their type, size and name, never rendered here.
fn serve(d: Download) -> Response {
    let a = &d.attachment;
    let mut res = Response::new(Body::from_stream(d.body));
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&a.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(a.size));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&a.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", a.sha256)) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    res
}

/// List a lead's files, oldest first.
#[utoipa::path(get, path = "/leads/{id}/attachments", tag = "attachments",
    params(("id" = LeadId, Path, description = "The lead id")),
    responses((status = 200, description = "The lead's files", body = Vec<Attachment>)))]
pub(crate) async fn list_lead_files(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
) -> ApiResult<axum::Json<Vec<Attachment>>> {
    list(&s, &c, Parent::Lead(id)).await
}

/// Attach a file to a lead (multipart part `file`). Its type is sniffed from its
/// bytes and must be allowed (415 naming it); over the size limit 413; past the
/// workspace's storage quota 409 `storage_quota_exceeded`; storage down 503.
#[utoipa::path(post, path = "/leads/{id}/attachments", tag = "attachments",
    params(("id" = LeadId, Path, description = "The lead id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "The file, stored", body = Attachment),
              (status = 413, description = "The file is over the size limit", body = crate::Problem),
              (status = 415, description = "The file's type is not accepted", body = crate::Problem),
              (status = 503, description = "The file storage is unavailable", body = crate::Problem)))]
pub(crate) async fn add_lead_file(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<LeadId>,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    add(&s, &c, Parent::Lead(id), &headers, form).await
}

/// A lead's file's metadata.
#[utoipa::path(get, path = "/leads/{id}/attachments/{attachment_id}", tag = "attachments",
    params(("id" = LeadId, Path, description = "The lead id"),
           ("attachment_id" = AttachmentId, Path, description = "The file id")),
    responses((status = 200, description = "The file's metadata", body = Attachment)))]
pub(crate) async fn get_lead_file(
    State(s): State<AppState>,
    c: Caller,
    Path((id, file)): Path<(LeadId, AttachmentId)>,
) -> ApiResult<axum::Json<Attachment>> {
    get(&s, &c, Parent::Lead(id), file).await
}

/// Delete a lead's file (its bytes with it).
#[utoipa::path(delete, path = "/leads/{id}/attachments/{attachment_id}", tag = "attachments",
    params(("id" = LeadId, Path, description = "The lead id"),
           ("attachment_id" = AttachmentId, Path, description = "The file id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_lead_file(
    State(s): State<AppState>,
    c: Caller,
    Path((id, file)): Path<(LeadId, AttachmentId)>,
) -> ApiResult<StatusCode> {
    delete(&s, &c, Parent::Lead(id), file).await
}

/// Download a lead's file.
#[utoipa::path(get, path = "/leads/{id}/attachments/{attachment_id}/content", tag = "attachments",
    params(("id" = LeadId, Path, description = "The lead id"),
           ("attachment_id" = AttachmentId, Path, description = "The file id")),
    responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>)))]
pub(crate) async fn lead_file_content(
    State(s): State<AppState>,
    c: Caller,
    Path((id, file)): Path<(LeadId, AttachmentId)>,
) -> ApiResult<Response> {
    content(&s, &c, Parent::Lead(id), file).await
}

/// A download link to a lead's file that anyone holding it may use until it
/// expires.
#[utoipa::path(post, path = "/leads/{id}/attachments/{attachment_id}/link", tag = "attachments",
    params(("id" = LeadId, Path, description = "The lead id"),
           ("attachment_id" = AttachmentId, Path, description = "The file id")),
    request_body = LinkRequest,
    responses((status = 200, description = "The link", body = SignedLink)))]
pub(crate) async fn lead_file_link(
    State(s): State<AppState>,
    c: Caller,
    Path((id, file)): Path<(LeadId, AttachmentId)>,
    JsonOrEmpty(body): JsonOrEmpty<LinkRequest>,
) -> ApiResult<axum::Json<SignedLink>> {
    link(&s, &c, Parent::Lead(id), file, body).await
}

/// List a contact's files, oldest first.
#[utoipa::path(get, path = "/contacts/{id}/attachments", tag = "attachments",
    params(("id" = ContactId, Path, description = "The contact id")),
    responses((status = 200, description = "The contact's files", body = Vec<Attachment>)))]
pub(crate) async fn list_contact_files(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<ContactId>,
) -> ApiResult<axum::Json<Vec<Attachment>>> {
    list(&s, &c, Parent::Contact(id)).await
}

/// Attach a file to a contact (multipart part `file`); as for a lead.
#[utoipa::path(post, path = "/contacts/{id}/attachments", tag = "attachments",
    params(("id" = ContactId, Path, description = "The contact id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "The file, stored", body = Attachment),
              (status = 413, description = "The file is over the size limit", body = crate::Problem),
              (status = 415, description = "The file's type is not accepted", body = crate::Problem),
              (status = 503, description = "The file storage is unavailable", body = crate::Problem)))]
pub(crate) async fn add_contact_file(
    State(s): State<AppState>,
    c: Caller,
    Path(id): Path<ContactId>,
    headers: HeaderMap,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    add(&s, &c, Parent::Contact(id), &headers, form).await
}

/// A contact's file's metadata.
#[utoipa::path(get, path = "/contacts/{id}/attachments/{attachment_id}", tag = "attachments",
    params(("id" = ContactId, Path, description = "The contact id"),
           ("attachment_id" = AttachmentId, Path, description = "The file id")),
    responses((status = 200, description = "The file's metadata", body = Attachment)))]
pub(crate) async fn get_contact_file(
    State(s): State<AppState>,
    c: Caller,
    Path((id, file)): Path<(ContactId, AttachmentId)>,
) -> ApiResult<axum::Json<Attachment>> {
    get(&s, &c, Parent::Contact(id), file).await
}

/// Delete a contact's file (its bytes with it).
#[utoipa::path(delete, path = "/contacts/{id}/attachments/{attachment_id}", tag = "attachments",
    params(("id" = ContactId, Path, description = "The contact id"),
           ("attachment_id" = AttachmentId, Path, description = "The file id")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn delete_contact_file(
    State(s): State<AppState>,
    c: Caller,
    Path((id, file)): Path<(ContactId, AttachmentId)>,
) -> ApiResult<StatusCode> {
    delete(&s, &c, Parent::Contact(id), file).await
}

/// Download a contact's file.
#[utoipa::path(get, path = "/contacts/{id}/attachments/{attachment_id}/content", tag = "attachments",
    params(("id" = ContactId, Path, description = "The contact id"),
           ("attachment_id" = AttachmentId, Path, description = "The file id")),
    responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>)))]
pub(crate) async fn contact_file_content(
    State(s): State<AppState>,
    c: Caller,
    Path((id, file)): Path<(ContactId, AttachmentId)>,
) -> ApiResult<Response> {
    content(&s, &c, Parent::Contact(id), file).await
}

/// A download link to a contact's file that anyone holding it may use until it
/// expires.
#[utoipa::path(post, path = "/contacts/{id}/attachments/{attachment_id}/link", tag = "attachments",
    params(("id" = ContactId, Path, description = "The contact id"),
           ("attachment_id" = AttachmentId, Path, description = "The file id")),
    request_body = LinkRequest,
    responses((status = 200, description = "The link", body = SignedLink)))]
pub(crate) async fn contact_file_link(
    State(s): State<AppState>,
    c: Caller,
    Path((id, file)): Path<(ContactId, AttachmentId)>,
    JsonOrEmpty(body): JsonOrEmpty<LinkRequest>,
) -> ApiResult<axum::Json<SignedLink>> {
    link(&s, &c, Parent::Contact(id), file, body).await
}

/// Query of `GET /api/files`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LinkParams {
    /// The link's token. In the query, not the path: request logs show paths.
    #[param(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]+$")]
    token: String,
}

/// Download a file through a signed link (from `…/attachments/{attachment_id}/link`):
/// no credentials; 401 `unauthorized` ("invalid or expired link") when the link is
/// malformed, forged or expired.
#[utoipa::path(get, path = "/api/files", tag = "attachments", params(LinkParams),
    responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 401, description = "Invalid or expired link", body = crate::Problem)))]
pub(crate) async fn open_link(
    State(s): State<AppState>,
    Query(p): Query<LinkParams>,
) -> ApiResult<Response> {
    Ok(serve(s.crm.open_link(&p.token).await?))
}
