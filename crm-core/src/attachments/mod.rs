//! Files attached to leads and contacts (client documents: IDs, contracts,
//! photos, voice notes), their bytes in the configured [`crate::storage::Storage`].
//!
//! Decisions where the issue and the design are silent, taken as a user of
//! Stripe's file API or Twenty's attachments would expect:
//! - **Type.** A file's type is sniffed from its bytes (magic numbers; text that
//!   is valid UTF-8 without control characters is `text/plain`, or `text/csv` when
//!   named `.csv`), never taken from its name or the upload's `Content-Type`, and
//!   must be on [`AttachmentRules::allowed_types`]: an executable named `.pdf` is
//!   [`Error::UnsupportedType`] naming what it is.
//! - **Name.** Only the last part of a path is kept (`../../etc/passwd` is
//!   `passwd`), control characters are dropped, and 1–255 characters must remain.
//!   The name is metadata: objects are stored under keys crm makes.
//! - **Empty files** are refused (a validation error on `file`).
//! - **Limits.** [`AttachmentRules::max_file_size`] per file (25 MiB by default)
//!   and [`crate::Quotas::attachment_bytes`] per workspace (1 GiB), the quota
//!   counted in the transaction that inserts, with the workspace locked.
//! - **Consistency.** The bytes are stored first, then the row is written with its
//!   event (`attachment.added`) and, on a lead, a timeline entry (`attachment`). A
//!   storage that fails is [`Error::Storage`] and nothing is written; a row that
//!   cannot be written (the lead was deleted meanwhile, the quota) deletes the
//!   bytes again. Deleting a file, a lead or a contact deletes the rows first and
//!   the bytes after the commit; housekeeping deletes bytes no row names.
//! - **Merges** move the absorbed leads' files to the lead that stays.
//! - **Links.** [`Attachments::link`] makes a download link that expires (15
//!   minutes by default, at most 7 days): the storage's own where it has them (S3
//!   presigned), else crm's `/api/files?token=…`, an HMAC under a key derived from
//!   the master key (no master key, no links) over the workspace, the file and the
//!   expiry, checked against the configured clock.

mod media;
pub mod model;

pub(crate) use media::retry_media;
pub use model::{AttachmentRules, Download, Parent, SignedLink, DEFAULT_TYPES};

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::ids::{AttachmentId, WorkspaceId};
use crate::storage::Storage;
use crate::store::{self, Ctx};
use crate::{AuthFailure, Crm, Error, Result};
pub use model::Attachment;

/// The longest file name kept, in characters.
pub const NAME_MAX: usize = 255;

/// How long a link lasts when the caller does not say.
pub const LINK_TTL_DEFAULT: Duration = Duration::from_secs(15 * 60);

/// The longest a link may last (S3's limit for presigned URLs).
pub const LINK_TTL_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// How old an object no row names must be before housekeeping deletes it: an
/// upload stores its bytes a moment before it writes its row.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// The attachment service of one workspace; from [`crate::Workspace::attachments`].
///
/// An `actor` set with [`Attachments::with_actor`] is recorded as the uploader and
/// on the lead's timeline.
#[derive(Clone, Debug)]
pub struct Attachments {
    crm: Crm,
    ws: WorkspaceId,
    actor: Option<String>,
}

impl Attachments {
    pub(crate) fn new(crm: Crm, ws: WorkspaceId) -> Self {
        Self {
            crm,
            ws,
            actor: None,
        }
    }

    /// The same service, recording `actor` (a user id, `api_key:…`, `whatsapp`, …,
    /// up to 200 characters) as the uploader and on timelines.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    fn ctx(&self) -> Result<Ctx<'_>> {
        self.crm.ctx(self.ws, self.actor.as_deref())
    }

    /// Attaches `bytes`, named `name`, to a lead or contact of the workspace;
    /// `attachment.added` (and a timeline entry on a lead). Fails with
    /// `Validation` (an empty file, a name with nothing left once cleaned: field
    /// `name`), `TooLarge`, `UnsupportedType`, `NotFound` (no such lead or
    /// contact here), `InvalidState` `storage_quota_exceeded`, or `Storage`;
    /// each writes nothing.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws))]
    pub async fn add(
        &self,
        to: impl Into<Parent>,
        name: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<Attachment> {
        self.add_as(to.into(), AttachmentId::new(), name, bytes.into())
            .await
    }

    /// [`Attachments::add`] with the file's id chosen by the caller (a fetched
    /// message's media takes its activity's id, so a second try finds the first's
    /// file: `Conflict`).
    pub(crate) async fn add_as(
        &self,
        parent: Parent,
        id: AttachmentId,
        name: &str,
        bytes: Bytes,
    ) -> Result<Attachment> {
        let ctx = self.ctx()?;
        let storage = self.crm.storage()?;
        let rules = self.crm.attachment_rules();
        let name = clean_name(name)?;
        let size = bytes.len() as u64;
        check_size(size, rules.max_file_size)?;
        // Tens of milliseconds for a large file: off the async workers.
        let (content_type, sha256) = {
            let (bytes, name) = (bytes.clone(), name.clone());
            tokio::task::spawn_blocking(move || {
                (sniff(&bytes, &name), hex(&Sha256::digest(&bytes)))
            })
            .await
            .map_err(|_| Error::Storage("the file could not be read".into()))?
        };
        if !rules.allowed_types.contains(&content_type) {
            return Err(Error::UnsupportedType { content_type });
        }
        let quota = self.crm.quotas().attachment_bytes;
        let pool = self.crm.pool();
        store::attachments::check_room(pool, self.ws, parent, size, quota).await?;
        let (lead_id, contact_id) = match parent {
            Parent::Lead(id) => (Some(id), None),
            Parent::Contact(id) => (None, Some(id)),
        };
        let attachment = Attachment {
            id,
            lead_id,
            contact_id,
            name,
            size,
            content_type,
            sha256,
            uploaded_by: self.actor.clone(),
            created_at: ctx.now,
        };
        let key = storage_key(self.ws);
        let info = crate::storage::ObjectInfo {
            content_type: &attachment.content_type,
            file_name: &attachment.name,
        };
        storage.put(&key, bytes, info).await?;
        let r = store::attachments::insert(pool, &ctx, &attachment, parent, &key, quota).await;
        if r.is_err() {
            delete_bytes(storage.as_ref(), vec![key]).await;
        }
        self.crm.written(r).map(|()| attachment)
    }

    /// [`Attachments::add`] with the bytes of the file at `path`, named `name` or
    /// else as the file is. A file over the size limit is refused before it is
    /// read; one that cannot be read is a validation error on `path`.
    pub async fn add_file(
        &self,
        to: impl Into<Parent>,
        path: impl AsRef<Path>,
        name: Option<&str>,
    ) -> Result<Attachment> {
        let path = path.as_ref();
        let unreadable = |_| Error::invalid("path", "is not a file that can be read");
        let meta = tokio::fs::metadata(path).await.map_err(unreadable)?;
        if !meta.is_file() {
            return Err(Error::invalid("path", "is not a file"));
        }
        check_size(meta.len(), self.crm.attachment_rules().max_file_size)?;
        let bytes = tokio::fs::read(path).await.map_err(unreadable)?;
        let own = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.or(own.as_deref()).unwrap_or_default();
        self.add(to, name, bytes).await
    }

    /// The files of a lead or contact, oldest first; `NotFound` when it is not of
    /// this workspace.
    pub async fn list(&self, of: impl Into<Parent>) -> Result<Vec<Attachment>> {
        store::attachments::list(self.crm.pool(), self.ws, of.into()).await
    }

    /// One file's metadata; `NotFound` unless it is attached to `of`.
    pub async fn get(&self, of: impl Into<Parent>, id: AttachmentId) -> Result<Attachment> {
        let (a, _) = store::attachments::get(self.crm.pool(), self.ws, Some(of.into()), id).await?;
        Ok(a)
    }

    /// One file's bytes as a stream, with its metadata.
    pub async fn open(&self, of: impl Into<Parent>, id: AttachmentId) -> Result<Download> {
        let (attachment, key) =
            store::attachments::get(self.crm.pool(), self.ws, Some(of.into()), id).await?;
        let body = self.crm.storage()?.get(&key).await?;
        Ok(Download { attachment, body })
    }

    /// One file's bytes, whole (at most the size limit).
    pub async fn read(&self, of: impl Into<Parent>, id: AttachmentId) -> Result<Bytes> {
        self.open(of, id).await?.bytes().await
    }

    /// Deletes a file: the row (with `attachment.removed` and, on a lead, a
    /// timeline entry), then its bytes (in a `Crm` without a storage, as one of a
    /// process that only reads, the bytes are left to housekeeping where there is
    /// one). `NotFound` unless it is attached to `of`.
    #[tracing::instrument(skip_all, fields(workspace = %self.ws, attachment_id = %id))]
    pub async fn delete(&self, of: impl Into<Parent>, id: AttachmentId) -> Result<()> {
        let ctx = self.ctx()?;
        let r = store::attachments::delete(self.crm.pool(), &ctx, of.into(), id).await;
        let (_, key) = self.crm.written(r)?;
        self.crm.delete_bytes(vec![key]).await;
        Ok(())
    }

    /// A link anyone holding it can download the file from for `ttl` (default
    /// [`LINK_TTL_DEFAULT`], 1 s to [`LINK_TTL_MAX`]); see the module docs.
    pub async fn link(
        &self,
        of: impl Into<Parent>,
        id: AttachmentId,
        ttl: Option<Duration>,
    ) -> Result<SignedLink> {
        let ttl = ttl.unwrap_or(LINK_TTL_DEFAULT);
        if ttl < Duration::from_secs(1) || ttl > LINK_TTL_MAX {
            return Err(Error::invalid(
                "expires_in",
                format!("must be 1 to {} seconds", LINK_TTL_MAX.as_secs()),
            ));
        }
        let (_, key) =
            store::attachments::get(self.crm.pool(), self.ws, Some(of.into()), id).await?;
        let storage = self.crm.storage()?;
        let expires_at = self.crm.now()
            + chrono::Duration::from_std(ttl)
                .map_err(|_| Error::invalid("expires_in", "too long"))?;
        if let Some(url) = storage.signed_url(&key, ttl).await? {
            return Ok(SignedLink { url, expires_at });
        }
        let link_key = self.crm.link_key()?;
        let token = sign_link(link_key, self.ws, id, expires_at.timestamp());
        let base = self
            .crm
            .attachment_rules()
            .link_base
            .as_deref()
            .unwrap_or("");
        Ok(SignedLink {
            url: format!("{}/api/files?token={token}", base.trim_end_matches('/')),
            expires_at,
        })
    }

    /// The bytes this workspace's files take (what counts against
    /// [`crate::Quotas::attachment_bytes`]).
    pub async fn usage(&self) -> Result<u64> {
        store::attachments::usage(self.crm.pool(), self.ws).await
    }
}

impl Download {
    /// The whole file (a `Storage` error when the storage fails midway).
    pub async fn bytes(self) -> Result<Bytes> {
        let size = usize::try_from(self.attachment.size).unwrap_or(0);
        crate::storage::collect(self.body, size).await
    }
}

impl Crm {
    /// The file a link from [`Attachments::link`] names, if the link is one this
    /// server signed and has not expired: `Unauthorized` with
    /// [`AuthFailure::InvalidLink`] otherwise (malformed, forged or expired alike);
    /// `NotFound` when the file is gone.
    pub async fn open_link(&self, token: &str) -> Result<Download> {
        let (ws, id) = verify_link(self.link_key()?, token, self.now().timestamp())?;
        let (attachment, key) = store::attachments::get(self.pool(), ws, None, id).await?;
        let body = self.storage()?.get(&key).await?;
        Ok(Download { attachment, body })
    }

    /// Deletes stored bytes whose rows are gone, after the commit that removed
    /// them: a failure is logged and left to housekeeping.
    pub(crate) async fn delete_bytes(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        match self.storage() {
            Ok(storage) => {
                delete_bytes(storage.as_ref(), keys).await;
            }
            Err(_) => tracing::warn!(
                files = keys.len(),
                "files were deleted with no storage configured; their bytes stay"
            ),
        }
    }

    /// Housekeeping: deletes stored objects no attachment names that are older
    /// than [`ORPHAN_GRACE`] (a crash between storing bytes and writing their row,
    /// or between deleting a row and its bytes, or a deleted workspace); how many
    /// went (a storage that cannot be listed is logged and counts none).
    /// Only keys crm makes (`{uuid}/{uuid}`) are considered: anything else in the
    /// storage is someone else's. One storage (or prefix) per database: another
    /// deployment's files look like orphans here.
    pub(crate) async fn sweep_orphans(&self) -> Result<u64> {
        let Ok(storage) = self.storage() else {
            return Ok(0);
        };
        let grace = chrono::Duration::from_std(ORPHAN_GRACE).unwrap_or_default();
        let before = self.now() - grace;
        // A storage that cannot be listed leaves its orphans to a later pass; the
        // rest of housekeeping goes on.
        let listed = match storage.list("").await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    storage = storage.kind(),
                    "housekeeping: the file storage could not be listed"
                );
                return Ok(0);
            }
        };
        let old: Vec<String> = listed
            .into_iter()
            .filter(|o| o.modified < before && made_by_crm(&o.key))
            .map(|o| o.key)
            .collect();
        let refs: Vec<&str> = old.iter().map(String::as_str).collect();
        let known: std::collections::HashSet<String> =
            store::attachments::known_keys(self.pool(), &refs)
                .await?
                .into_iter()
                .collect();
        let orphans: Vec<String> = old.into_iter().filter(|k| !known.contains(k)).collect();
        if orphans.is_empty() {
            return Ok(0);
        }
        tracing::warn!(
            files = orphans.len(),
            storage = storage.kind(),
            "housekeeping: deleting stored files no attachment names"
        );
        // A failed delete is logged and left to the next pass.
        Ok(delete_bytes(storage.as_ref(), orphans).await)
    }
}

/// Deletes the objects, logging a failure (housekeeping tries again); how many
/// went.
async fn delete_bytes(storage: &dyn Storage, keys: Vec<String>) -> u64 {
    let mut deleted = 0;
    for key in keys {
        match storage.delete(&key).await {
            Ok(()) => deleted += 1,
            Err(e) => tracing::warn!(
                error = %e,
                storage = storage.kind(),
                "a deleted file's bytes stay until housekeeping"
            ),
        }
    }
    deleted
}

/// Where a file's bytes go: under its workspace's prefix, a key of their own (not
/// the file's id: a try that loses a race for an id deletes only its own bytes).
fn storage_key(ws: WorkspaceId) -> String {
    format!("{ws}/{}", uuid::Uuid::now_v7())
}

/// Whether `key` is one [`storage_key`] makes (or [`crate::storage::FsStorage`]'s
/// temporary file of one): the only objects housekeeping may delete, so a storage
/// shared with other files (a data directory, a bucket without a prefix) keeps them.
fn made_by_crm(key: &str) -> bool {
    let (key, partial) = match key.split_once(".part-") {
        Some((k, tail)) => (k, Some(tail)),
        None => (key, None),
    };
    let uuid = |s: &str| s.len() == 36 && uuid::Uuid::try_parse(s).is_ok();
    let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    key.split_once('/')
        .is_some_and(|(ws, id)| uuid(ws) && uuid(id))
        && partial.is_none_or(hex32)
}

fn check_size(size: u64, limit: u64) -> Result<()> {
    if size == 0 {
        return Err(Error::invalid("file", "is empty"));
    }
    if size > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok(())
}

/// The name kept: the last part of a path, without control characters, trimmed.
pub(crate) fn clean_name(raw: &str) -> Result<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = base.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::invalid("name", "must be a file name"));
    }
    if name.chars().count() > NAME_MAX {
        return Err(Error::invalid(
            "name",
            format!("must be at most {NAME_MAX} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// The type the bytes are (see the module docs).
pub(crate) fn sniff(bytes: &[u8], name: &str) -> String {
    if let Some(t) = infer::get(bytes) {
        return t.mime_type().to_owned();
    }
    let text = std::str::from_utf8(bytes).is_ok_and(|s| {
        s.chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'))
    });
    if !text {
        "application/octet-stream".into()
    } else if name.to_ascii_lowercase().ends_with(".csv") {
        "text/csv".into()
    } else {
        "text/plain".into()
    }
}

/// The `Content-Disposition` of a download of a file named `name` (RFC 6266):
/// `attachment; filename="…"; filename*=UTF-8''…`, an ASCII fallback with anything
/// unsafe replaced by `_`, and the exact name percent-encoded. Never renders inline.
pub fn content_disposition(name: &str) -> String {
    use std::fmt::Write;
    let ascii: String = name
        .chars()
        .map(|c| {
            if c == ' ' || (c.is_ascii_graphic() && c != '"' && c != '\\') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The signed part of a link: workspace, file, expiry (Unix seconds).
const LINK_BODY: usize = 16 + 16 + 8;

fn sign_link(key: &[u8; 32], ws: WorkspaceId, id: AttachmentId, expires: i64) -> String {
    let mut raw = Vec::with_capacity(LINK_BODY + 32);
    raw.extend_from_slice(ws.0.as_bytes());
    raw.extend_from_slice(id.0.as_bytes());
    raw.extend_from_slice(&expires.to_be_bytes());
    let mac = crate::seal::hmac_sha256(key, &raw);
    raw.extend_from_slice(&mac);
    URL_SAFE_NO_PAD.encode(raw)
}

fn verify_link(key: &[u8; 32], token: &str, now: i64) -> Result<(WorkspaceId, AttachmentId)> {
    use hmac::{Hmac, Mac};
    let invalid = || Error::unauthorized(AuthFailure::InvalidLink);
    if token.len() > 128 {
        return Err(invalid());
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if raw.len() != LINK_BODY + 32 {
        return Err(invalid());
    }
    let (body, tag) = raw.split_at(LINK_BODY);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| invalid())?;
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| invalid())?;
    let part = |r: std::ops::Range<usize>| body.get(r).ok_or_else(invalid);
    let ws = uuid::Uuid::from_slice(part(0..16)?).map_err(|_| invalid())?;
    let id = uuid::Uuid::from_slice(part(16..32)?).map_err(|_| invalid())?;
    let expires = i64::from_be_bytes(part(32..40)?.try_into().map_err(|_| invalid())?);
    if now >= expires {
        return Err(invalid());
    }
    Ok((WorkspaceId(ws), AttachmentId(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_directories_and_control_characters() {
        assert_eq!(clean_name("../../etc/passwd").unwrap_or_default(), "passwd");
        assert_eq!(
            clean_name("C:\\Users\\ana\\id.pdf").unwrap_or_default(),
            "id.pdf"
        );
        assert_eq!(
            clean_name(" con\u{7}trato.pdf ").unwrap_or_default(),
            "contrato.pdf"
        );
        for bad in ["", "..", "a/..", "dir/", " \u{0} ", "."] {
            assert!(clean_name(bad).is_err(), "{bad:?}");
        }
        assert!(clean_name(&"é".repeat(255)).is_ok());
        assert!(clean_name(&"é".repeat(256)).is_err());
    }

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(sniff(b"%PDF-1.7\n...", "x.pdf"), "application/pdf");
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(64, 0);
        assert_eq!(sniff(&elf, "x.pdf"), "application/x-executable");
        assert_eq!(
            sniff(b"MZ\x90\0\x03\0\0\0", "x.pdf"),
            "application/vnd.microsoft.portable-executable"
        );
        assert_eq!(
            sniff("name,email\nAna,a@x.com\n".as_bytes(), "L.CSV"),
            "text/csv"
        );
        assert_eq!(sniff("hola, qué tal".as_bytes(), "nota.pdf"), "text/plain");
        assert_eq!(
            sniff(b"\0\x01\x02binary", "x.txt"),
            "application/octet-stream"
        );
    }

    #[test]
    fn housekeeping_touches_only_keys_crm_makes() {
        let ws = WorkspaceId::new();
        let key = storage_key(ws);
        assert!(made_by_crm(&key));
        assert!(made_by_crm(&format!(
            "{key}.part-{}",
            uuid::Uuid::now_v7().simple()
        )));
        for other in [
            "crm.db".to_owned(),
            "master.key".to_owned(),
            format!("{ws}"),
            format!("{ws}/notes.txt"),
            format!("staging/{key}"),
            format!("{key}.part-xyz"),
            format!("{key}/x"),
        ] {
            assert!(!made_by_crm(&other), "{other}");
        }
    }

    #[test]
    fn downloads_are_attachments_with_a_safe_name() {
        assert_eq!(
            content_disposition("contrato.pdf"),
            "attachment; filename=\"contrato.pdf\"; filename*=UTF-8''contrato.pdf"
        );
        assert_eq!(
            content_disposition("año \"1\";\\x.pdf"),
            "attachment; filename=\"a_o _1_;_x.pdf\"; filename*=UTF-8''a%C3%B1o%20%221%22%3B%5Cx.pdf"
        );
    }

    #[test]
    fn links_verify_until_they_expire_and_never_when_changed() {
        let key = [7u8; 32];
        let ws = WorkspaceId::new();
        let id = AttachmentId::new();
        let token = sign_link(&key, ws, id, 1_000);
        assert_eq!(verify_link(&key, &token, 999).ok(), Some((ws, id)));
        assert!(verify_link(&key, &token, 1_000).is_err());
        assert!(verify_link(&[8u8; 32], &token, 0).is_err());
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap_or_default();
        raw[39] ^= 1; // a later expiry
        assert!(verify_link(&key, &URL_SAFE_NO_PAD.encode(&raw), 0).is_err());
        for junk in ["", "%%%", &"A".repeat(96), &"A".repeat(4096)] {
            assert!(verify_link(&key, junk, 0).is_err());
        }
    }
}
