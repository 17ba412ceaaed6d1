//! Sealing: secrets that must be read back (webhook signing secrets, provider tokens)
//! are encrypted at rest with AES-256-GCM under a master key the embedding app
//! supplies.
//!
//! A sealed value is the text `v1.{key id}.{base64url(nonce ‖ ciphertext ‖ tag)}`:
//! a fresh random 96-bit nonce per seal, and the id of the key that sealed it, so a
//! [`Sealer`] holding the current key and retired ones opens values sealed under any
//! of them while sealing only under the current one (key rotation without a flag day).
//! Callers pass associated data (e.g. `"webhook_endpoint:{id}"`) that binds a sealed
//! value to its row: a value copied into another row does not open.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;

use crate::{Error, Result};

const NONCE_LEN: usize = 12;

/// A 256-bit master key with a short id. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
    /// HMAC-SHA256 of the key under a fixed label: the root of the keys derived for
    /// other purposes ([`MasterKey::derive`]), so the raw key is not kept.
    mac_root: [u8; 32],
}

impl MasterKey {
    /// A key from 32 raw bytes. `id` (1–32 characters of `A–Z a–z 0–9 _ -`) is written
    /// into every value this key seals, to find the key again after a rotation.
    pub fn new(id: &str, key: [u8; 32]) -> Result<Self> {
        let valid_id = !id.is_empty()
            && id.len() <= 32
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_id {
            return Err(Error::Config(
                "master key id must be 1-32 characters of A-Z a-z 0-9 _ -".into(),
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            cipher: Aes256Gcm::new(&key.into()),
            mac_root: hmac_sha256(&key, b"crm master key: derived keys v1"),
        })
    }

    /// A key from the standard base64 of 32 bytes (e.g. `openssl rand -base64 32`).
    pub fn from_base64(id: &str, key: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(key.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| Error::Config("master key must be the base64 of 32 bytes".into()))?;
        Self::new(id, bytes)
    }

    /// A new random key; for tests and first-time set-up (persist it, or sealed data
    /// is lost with the process).
    pub fn generate(id: &str) -> Result<Self> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self::new(id, key)
    }

    /// A 256-bit key for one purpose (`label`), derived from this one: cursors are
    /// signed with one, never with the master key itself.
    pub(crate) fn derive(&self, label: &str) -> [u8; 32] {
        hmac_sha256(&self.mac_root, label.as_bytes())
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Seals under the current master key and opens under any key it holds.
#[derive(Clone, Debug)]
pub struct Sealer {
    current: MasterKey,
    retired: Vec<MasterKey>,
}

impl Sealer {
    /// A sealer that seals with `current` and can also open values sealed by `retired` keys.
    pub fn new(current: MasterKey, retired: Vec<MasterKey>) -> Self {
        Self { current, retired }
    }

    /// Encrypts `plaintext`, bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::Config("sealing failed".into()))?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!(
            "v1.{}.{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Decrypts a value from [`Sealer::seal`] with the same `aad`. Fails with
    /// [`Error::Unseal`] for an unknown key id, a wrong `aad`, or any tampering.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Unseal);
        };
        let key = std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|k| k.id == kid)
            .ok_or(Error::Unseal)?;
        let blob = URL_SAFE_NO_PAD.decode(body).map_err(|_| Error::Unseal)?;
        if blob.len() < NONCE_LEN {
            return Err(Error::Unseal);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        key.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| Error::Unseal)
    }

    /// Whether `sealed` was sealed under a retired key and should be sealed again.
    pub fn needs_reseal(&self, sealed: &str) -> bool {
        sealed.split('.').nth(1) != Some(self.current.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> MasterKey {
        MasterKey::generate(id).expect("valid id")
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let s = Sealer::new(key("k1"), vec![]);
        let a = s.seal(b"token", b"row:1").expect("seal");
        let b = s.seal(b"token", b"row:1").expect("seal");
        assert_ne!(a, b, "a fresh nonce per seal");
        assert!(a.starts_with("v1.k1."));
        assert_eq!(s.open(&a, b"row:1").expect("open"), b"token");
    }

    #[test]
    fn wrong_aad_tamper_and_unknown_key_fail() {
        let s = Sealer::new(key("k1"), vec![]);
        let sealed = s.seal(b"token", b"row:1").expect("seal");
        assert!(matches!(s.open(&sealed, b"row:2"), Err(Error::Unseal)));
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(matches!(s.open(&tampered, b"row:1"), Err(Error::Unseal)));
        let other = Sealer::new(key("k2"), vec![]);
        assert!(matches!(other.open(&sealed, b"row:1"), Err(Error::Unseal)));
        for junk in ["", "v1", "v1.k1", "v1.k1.!!", "v2.k1.AAAA", "v1.k1.AAAA"] {
            assert!(matches!(s.open(junk, b""), Err(Error::Unseal)), "{junk}");
        }
    }

    #[test]
    fn rotation_opens_old_values_and_seals_with_the_new_key() {
        let old = key("2025");
        let sealed = Sealer::new(old.clone(), vec![])
            .seal(b"x", b"a")
            .expect("seal");
        let rotated = Sealer::new(key("2026"), vec![old]);
        assert_eq!(rotated.open(&sealed, b"a").expect("open"), b"x");
        assert!(rotated.needs_reseal(&sealed));
        let fresh = rotated.seal(b"x", b"a").expect("seal");
        assert!(!rotated.needs_reseal(&fresh));
    }

    #[test]
    fn bad_master_keys_are_config_errors() {
        assert!(MasterKey::new("", [0; 32]).is_err());
        assert!(MasterKey::new("has.dot", [0; 32]).is_err());
        assert!(MasterKey::from_base64("k", "c2hvcnQ=").is_err());
        let debug = format!("{:?}", key("k"));
        assert!(debug.contains("redacted"));
    }
}
