//! Keyset cursors (of leads, contacts and organizations). A cursor holds the sort key
//! and id of the last row of a page, the
//! sort it belongs to and a digest of the filters, as base64url JSON followed by a
//! 16-byte HMAC-SHA256 tag under a key derived from the master key, so a client can
//! neither forge nor edit one (without a master key the tag's key is a public
//! constant: cursors are then tamper-evident only). Not secret: a cursor can only
//! point into the caller's own workspace, whose filter every query applies anyway. A
//! master-key rotation ends the cursors made before it (start the listing again).
//! A cursor that does not decode, fails its check or belongs to another sort or
//! filter set is a validation error on `cursor`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{Lead, SortField, SortOrder};
use crate::{Error, Result};

const CHECK_LEN: usize = 16;

/// The key of cursors when the `Crm` has no master key (public: tamper-evident only).
pub(crate) const PUBLIC_KEY: [u8; 32] = *b"crm lead cursors, no master key!";

fn mac(key: &[u8; 32], json: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(b"crm lead cursor v2\0");
    mac.update(json);
    mac
}

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
    pub id: uuid::Uuid,
    #[serde(rename = "f")]
    pub filters: String,
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
        Self::new(sort, order, key, last.id.0, fingerprint)
    }

    /// The cursor after the row with this sort key and id.
    pub(crate) fn new(
        sort: SortField,
        order: SortOrder,
        key: Key,
        id: uuid::Uuid,
        fingerprint: &str,
    ) -> Self {
        Self {
            sort,
            order,
            key,
            id,
            filters: filters_digest(fingerprint),
        }
    }

    /// The cursor as a string, signed with `key`.
    pub(crate) fn encode(&self, key: &[u8; 32]) -> String {
        // Serialising plain fields into a Vec cannot fail.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        let tag = mac(key, &bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..CHECK_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a cursor signed with `key` and checks it belongs to this sort and these
    /// filters.
    pub(crate) fn decode(
        s: &str,
        sort: SortField,
        order: SortOrder,
        fingerprint: &str,
        key: &[u8; 32],
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
        // Constant time: a forger learns nothing from how fast a guess fails.
        if mac(key, json).verify_truncated_left(tag).is_err() {
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
            id: uuid::Uuid::now_v7(),
            filters: filters_digest("f"),
        }
    }

    #[test]
    fn round_trips() {
        let c = cursor();
        let s = c.encode(&KEY);
        assert_eq!(
            Cursor::decode(&s, SortField::Name, SortOrder::Asc, "f", &KEY).expect("valid"),
            c
        );
    }

    const KEY: [u8; 32] = [9; 32];

    /// Issue 15, item 19: the check was a plain SHA-256 anyone could recompute, so a
    /// client could forge a cursor (any sort key, any id). Now a cursor made without
    /// the server's key does not decode.
    #[test]
    fn a_cursor_made_without_the_key_is_refused() {
        let c = cursor();
        for forged in [c.encode(&PUBLIC_KEY), c.encode(&[1; 32])] {
            let err = Cursor::decode(&forged, SortField::Name, SortOrder::Asc, "f", &KEY)
                .expect_err("forged");
            assert_eq!(err.field_errors()[0].field, "cursor");
        }
    }

    #[test]
    fn tampering_other_sort_and_other_filters_are_refused() {
        let s = cursor().encode(&KEY);
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
            let err = Cursor::decode(s, sort, order, f, &KEY).expect_err("must fail");
            assert_eq!(err.field_errors()[0].field, "cursor");
        }
    }
}
