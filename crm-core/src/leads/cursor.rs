//! Keyset cursors. A cursor holds the sort key and id of the last lead of a page, the
//! sort it belongs to and a digest of the filters, as base64url JSON followed by an
//! 8-byte SHA-256 check. It is opaque and tamper-evident, not secret: it can only
//! point into the caller's own workspace, whose filter every query applies anyway.
//! A cursor that does not decode, fails its check or belongs to another sort or
//! filter set is a validation error on `cursor`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{Lead, SortField, SortOrder};
use crate::ids::LeadId;
use crate::{Error, Result};

const CHECK_LEN: usize = 8;

/// The sort key of the last lead on a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Key {
    /// A timestamp, in microseconds since the epoch.
    Time(i64),
    /// A text column.
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    #[serde(rename = "s")]
    pub sort: SortField,
    #[serde(rename = "o")]
    pub order: SortOrder,
    #[serde(rename = "k")]
    pub key: Key,
    #[serde(rename = "i")]
    pub id: LeadId,
    #[serde(rename = "f")]
    pub filters: String,
}

fn check(json: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::new()
        .chain_update(b"crm lead cursor v1\0")
        .chain_update(json)
        .finalize();
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&digest[..CHECK_LEN]);
    out
}

fn filters_digest(fingerprint: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(fingerprint.as_bytes())[..12])
}

impl Cursor {
    /// The cursor after `last`, for this sort and filter fingerprint.
    pub(crate) fn after(last: &Lead, sort: SortField, order: SortOrder, fingerprint: &str) -> Self {
        let key = match sort {
            SortField::CreatedAt => Key::Time(last.created_at.timestamp_micros()),
            SortField::UpdatedAt => Key::Time(last.updated_at.timestamp_micros()),
            SortField::Name => Key::Text(last.name.clone()),
            SortField::Status => Key::Text(last.status.as_str().to_owned()),
        };
        Self {
            sort,
            order,
            key,
            id: last.id,
            filters: filters_digest(fingerprint),
        }
    }

    pub(crate) fn encode(&self) -> String {
        // Serialising plain fields into a Vec cannot fail.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        let tag = check(&bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a cursor and checks it belongs to this sort and these filters.
    pub(crate) fn decode(
        s: &str,
        sort: SortField,
        order: SortOrder,
        fingerprint: &str,
    ) -> Result<Self> {
        let invalid = || {
            Error::invalid(
                "cursor",
                "is not a cursor of this listing; start again without it",
            )
        };
        if s.len() > 1024 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(s.trim()).map_err(|_| invalid())?;
        if bytes.len() <= CHECK_LEN {
            return Err(invalid());
        }
        let (json, tag) = bytes.split_at(bytes.len() - CHECK_LEN);
        if check(json) != tag {
            return Err(invalid());
        }
        let c: Cursor = serde_json::from_slice(json).map_err(|_| invalid())?;
        let key_fits = matches!(
            (&c.key, sort),
            (Key::Time(_), SortField::CreatedAt | SortField::UpdatedAt)
                | (Key::Text(_), SortField::Name | SortField::Status)
        );
        if c.sort != sort
            || c.order != order
            || !key_fits
            || c.filters != filters_digest(fingerprint)
        {
            return Err(invalid());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Cursor {
        Cursor {
            sort: SortField::Name,
            order: SortOrder::Asc,
            key: Key::Text("Ana".into()),
            id: LeadId::new(),
            filters: filters_digest("f"),
        }
    }

    #[test]
    fn round_trips() {
        let c = cursor();
        let s = c.encode();
        assert_eq!(
            Cursor::decode(&s, SortField::Name, SortOrder::Asc, "f").expect("valid"),
            c
        );
    }

    #[test]
    fn tampering_other_sort_and_other_filters_are_refused() {
        let s = cursor().encode();
        let mut bytes = URL_SAFE_NO_PAD.decode(&s).expect("b64");
        bytes[10] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(bytes);
        for (s, sort, order, f) in [
            (tampered.as_str(), SortField::Name, SortOrder::Asc, "f"),
            (s.as_str(), SortField::CreatedAt, SortOrder::Asc, "f"),
            (s.as_str(), SortField::Name, SortOrder::Desc, "f"),
            (s.as_str(), SortField::Name, SortOrder::Asc, "g"),
            ("", SortField::Name, SortOrder::Asc, "f"),
            ("%%%", SortField::Name, SortOrder::Asc, "f"),
            ("AAAA", SortField::Name, SortOrder::Asc, "f"),
        ] {
            let err = Cursor::decode(s, sort, order, f).expect_err("must fail");
            assert_eq!(err.field_errors()[0].field, "cursor");
        }
    }
}
