//! The media of messages received (WhatsApp images, documents, voice notes,
//! videos): a `media` job queued with the message fetches the file from the
//! provider with the workspace's integration and stores it as an attachment of the
//! lead, linked from the message (`message.attachment_id`). The job is retried on
//! the delivery schedule while the provider or the storage fails; media the
//! provider no longer has, a file over the limit or of a type not allowed fails it
//! for good (its attempt says why). The file takes the activity's id, so a try
//! that runs twice stores one file. Deleting the file later leaves the message's
//! `attachment_id` naming it (reads of it answer `NotFound`), as a deleted file's
//! timeline entries stay.

use crate::attachments::model::Parent;
use crate::ids::{ActivityId, AttachmentId, WorkspaceId};
use crate::{store, Crm, Error, Result};

/// Whether a media job that failed with `e` is worth another try.
pub(crate) fn retry_media(e: &Error) -> bool {
    matches!(
        e,
        Error::Integration(_) | Error::Storage(_) | Error::Database(_)
    )
}

/// The name of a fetched file: the document's own, else the kind and the media id
/// with the extension its bytes call for.
fn file_name(kind: &str, media_id: &str, filename: Option<&str>, bytes: &[u8]) -> String {
    if let Some(name) = filename.filter(|n| super::clean_name(n).is_ok()) {
        return name.to_owned();
    }
    let ext = infer::get(bytes).map_or("bin", |t| t.extension());
    let id: String = media_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    format!("{kind}-{id}.{ext}")
}

impl Crm {
    /// Fetches and stores the media of `message` activity `id`: `Ok(true)` when
    /// the file is stored (now or by an earlier try), `Ok(false)` when there is no
    /// such message any more (its lead was deleted).
    pub(crate) async fn store_message_media(
        &self,
        ws: WorkspaceId,
        id: ActivityId,
    ) -> Result<bool> {
        let pool = self.pool();
        let Some((lead_id, message)) = store::leads::message_of(pool, ws, id).await? else {
            return Ok(false);
        };
        if message.attachment_id.is_some() {
            return Ok(true);
        }
        let file_id = AttachmentId(id.0);
        match store::attachments::get(pool, ws, None, file_id).await {
            // Stored by a try that stopped before it linked the message.
            Ok(_) => {
                store::leads::link_message_file(pool, ws, id, file_id).await?;
                return Ok(true);
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let media_id = message
            .media_id
            .as_deref()
            .ok_or_else(|| Error::invalid("media_id", "the message has no media"))?;
        let provider = self
            .provider(&message.channel)
            .filter(|p| p.fetches_media())
            .ok_or_else(|| {
                Error::Config(format!(
                    "no provider fetches media on {:?}",
                    message.channel
                ))
            })?;
        let settings = self
            .workspace(ws)
            .integrations()
            .settings(&message.channel)
            .await?
            .ok_or_else(|| {
                Error::Config(format!(
                    "the workspace has no {} integration",
                    message.channel
                ))
            })?;
        let max = self.attachment_rules().max_file_size;
        let media = provider.fetch_media(&settings, media_id, max).await?;
        let name = file_name(
            &message.kind,
            media_id,
            message.filename.as_deref(),
            &media.bytes,
        );
        let files = self
            .workspace(ws)
            .attachments()
            .with_actor(message.channel.clone());
        match files
            .add_as(Parent::Lead(lead_id), file_id, &name, media.bytes)
            .await
        {
            // A concurrent try stored it first.
            Ok(_) | Err(Error::Conflict { .. }) => {}
            // The lead was deleted meanwhile, or merged into another (which took
            // the message): gone, or try again with the lead that has it now.
            Err(Error::NotFound { entity: "lead" }) => {
                return match store::leads::message_of(pool, ws, id).await? {
                    None => Ok(false),
                    Some(_) => Err(Error::Integration(
                        "the message moved to another lead; trying again".into(),
                    )),
                };
            }
            Err(e) => return Err(e),
        }
        store::leads::link_message_file(pool, ws, id, file_id).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_files_are_named_after_the_document_or_the_media() {
        assert_eq!(
            file_name("document", "1", Some("contrato.pdf"), b"%PDF-1.7"),
            "contrato.pdf"
        );
        assert_eq!(
            file_name("image", "12/34\u{0}", None, b"\xff\xd8\xff\xe0\0\x10JFIF"),
            "image-1234.jpg"
        );
        assert_eq!(
            file_name("document", "9", Some("../.."), b"??"),
            "document-9.bin"
        );
    }
}
