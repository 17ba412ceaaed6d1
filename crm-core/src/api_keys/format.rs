//! The key format: `{prefix}_{32 base62 random}{6 base62 CRC32}`.
//!
//! The checksum lets a typo, a truncated paste or a string that was never a key be
//! refused without touching the database (GitHub's token format does the same). It
//! is not a secret and adds no security: the 32 random characters (≈190 bits) do.

use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters in a key.
pub const RANDOM_LEN: usize = 32;
/// Checksum characters at the end of a key.
pub const CHECKSUM_LEN: usize = 6;
/// Random characters shown in a key's display prefix.
pub const DISPLAY_LEN: usize = 8;

/// Whether `prefix` may prefix keys: 2–16 lower-case ASCII letters and digits,
/// starting with a letter.
pub fn valid_prefix(prefix: &str) -> bool {
    (2..=16).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A new key with `prefix` (already checked by [`valid_prefix`]).
pub(crate) fn generate(prefix: &str) -> String {
    let random = Alphanumeric.sample_string(&mut rand::rngs::OsRng, RANDOM_LEN);
    let mut key = String::with_capacity(prefix.len() + 1 + RANDOM_LEN + CHECKSUM_LEN);
    key.push_str(prefix);
    key.push('_');
    key.push_str(&random);
    let sum = checksum(key.as_bytes());
    key.extend(sum.iter().map(|&b| b as char));
    key
}

/// Whether `key` has the format for `prefix` and a valid checksum. No allocation.
pub(crate) fn well_formed(key: &str, prefix: &str) -> bool {
    let k = key.as_bytes();
    let body_len = prefix.len() + 1 + RANDOM_LEN;
    k.len() == body_len + CHECKSUM_LEN
        && k.starts_with(prefix.as_bytes())
        && k[prefix.len()] == b'_'
        && k[prefix.len() + 1..].iter().all(u8::is_ascii_alphanumeric)
        && checksum(&k[..body_len]) == k[body_len..]
}

/// The stored identity of a key: hex SHA-256 of the whole key.
pub(crate) fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub(crate) fn hex(bytes: &[u8; 32]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// `{prefix}_{first 8 random characters}`: enough to tell keys apart in a list.
pub(crate) fn display_prefix(key: &str, prefix: &str) -> String {
    key[..prefix.len() + 1 + DISPLAY_LEN].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let a = generate("crm");
        let b = generate("crm");
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 1 + 32 + 6);
        assert!(well_formed(&a, "crm"));
        assert!(!well_formed(&a, "oct"));
        assert!(well_formed(&generate("oct"), "oct"));
        assert_eq!(display_prefix(&a, "crm").len(), 12);
    }

    #[test]
    fn any_single_character_change_is_refused() {
        // Property over every position and every replacement character (base62, `_`,
        // and a few outside the alphabet), for many random keys.
        let alphabet: Vec<char> = BASE62
            .iter()
            .map(|&b| b as char)
            .chain(['_', '-', ' ', 'é', '\0'])
            .collect();
        for _ in 0..25 {
            let key = generate("crm");
            for (i, original) in key.char_indices() {
                for &c in &alphabet {
                    if c == original {
                        continue;
                    }
                    let mut changed = String::with_capacity(key.len() + 2);
                    changed.push_str(&key[..i]);
                    changed.push(c);
                    changed.push_str(&key[i + 1..]);
                    assert!(!well_formed(&changed, "crm"), "{changed:?} passed");
                }
            }
            // Truncation, extension and an empty string.
            assert!(!well_formed(&key[..key.len() - 1], "crm"));
            assert!(!well_formed(&format!("{key}0"), "crm"));
            assert!(!well_formed("", "crm"));
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["crm", "oct", "ab", "k8s"] {
            assert!(valid_prefix(ok), "{ok}");
        }
        for bad in ["", "c", "CRM", "8ab", "a_b", "a-b", "abcdefghijklmnopq"] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }
}
