//! Standard Webhooks signing and verification, and the hex HMAC schemes of WhatsApp
//! and Cal.com. No database, no allocation on the hot path.
//!
//! A [`Signer`] holds the HMAC-SHA256 state keyed once with the secret; each
//! signature clones that state (a copy of a few hundred bytes) and streams `id`, `.`,
//! the timestamp's digits, `.` and the body into it, so no concatenated copy of the
//! body is made and the key schedule is not redone per message. The base64 output
//! goes to a stack buffer. Verification computes the expected MAC once, decodes each
//! `v1,` candidate into a stack buffer and compares in constant time. SHA-256 runs on
//! SHA-NI where the CPU has it (the `sha2` crate detects it at run time).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::secret::SecretString;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Accepted timestamp skew between signer and verifier, in seconds.
pub const TOLERANCE_SECS: i64 = 300;
/// Length of one `v1,<base64>` signature.
pub const SIGNATURE_LEN: usize = 3 + 44;

/// A webhook signing secret: 24–64 random bytes, written `whsec_` + base64.
/// Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// A new secret of 24 random bytes.
    pub fn generate() -> Self {
        let mut b = vec![0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut b);
        Self(b)
    }

    /// Parses `whsec_` + standard base64 of 24 to 64 bytes.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b64 = s
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("must start with {SECRET_PREFIX}"))?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| "must be whsec_ followed by base64".to_string())?;
        if !(24..=64).contains(&bytes.len()) {
            return Err("must hold 24 to 64 bytes".into());
        }
        Ok(Self(bytes))
    }

    /// The secret in its `whsec_…` form, to show its owner.
    pub fn expose(&self) -> SecretString {
        SecretString::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0)))
    }

    /// The raw key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A signer keyed with this secret.
    pub fn signer(&self) -> Signer {
        Signer::new(&self.0)
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Why a webhook did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is missing or empty (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`, or the provider's signature header).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// The timestamp is not a whole number of seconds.
    #[error("invalid timestamp")]
    InvalidTimestamp,
    /// The timestamp is more than 300 s away from now.
    #[error("timestamp outside the tolerance")]
    TimestampOutOfTolerance,
    /// No signature matched.
    #[error("no matching signature")]
    NoMatchingSignature,
}

impl VerifyError {
    /// `missing_header`, `timestamp` or `signature`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::InvalidTimestamp | Self::TimestampOutOfTolerance => "timestamp",
            Self::NoMatchingSignature => "signature",
        }
    }
}

/// Equality of two MACs in constant time: every byte is looked at, whatever differs,
/// and the result passes through `black_box` so the compiler cannot add an early exit.
fn macs_equal(a: &[u8; 32], b: &[u8]) -> bool {
    if b.len() != 32 {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Decimal digits of `n` in a stack buffer.
fn digits(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut v = n.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// HMAC-SHA256 keyed once; see the module docs.
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

impl Signer {
    /// A signer for raw key bytes.
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length; this cannot fail.
        let keyed = <HmacSha256 as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self { keyed }
    }

    /// HMAC-SHA256 of `{id}.{timestamp}.{body}`, streamed.
    pub fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut ts = [0u8; 20];
        let mut m = self.keyed.clone();
        m.update(id.as_bytes());
        m.update(b".");
        m.update(digits(timestamp, &mut ts));
        m.update(b".");
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// Writes `v1,<base64>` into `out` and returns it as text. No allocation.
    pub fn sign_to<'b>(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
        out: &'b mut [u8; SIGNATURE_LEN],
    ) -> &'b str {
        let mac = self.mac(id, timestamp, body);
        out[..3].copy_from_slice(b"v1,");
        // 32 bytes are always 44 base64 characters: the slice fits exactly.
        let _ = STANDARD.encode_slice(mac, &mut out[3..]);
        std::str::from_utf8(out).unwrap_or_default()
    }

    /// The `webhook-signature` value `v1,<base64>` as a `String`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut buf = [0u8; SIGNATURE_LEN];
        self.sign_to(id, timestamp, body, &mut buf).to_owned()
    }

    /// Verifies the three Standard Webhooks headers against `body` at `now` (unix
    /// seconds): all three present, the timestamp within ±300 s, and any `v1`
    /// signature matching (other versions are ignored). No allocation.
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        if id.is_empty() {
            return Err(VerifyError::MissingHeader("webhook-id"));
        }
        if timestamp.is_empty() {
            return Err(VerifyError::MissingHeader("webhook-timestamp"));
        }
        if signatures.trim().is_empty() {
            return Err(VerifyError::MissingHeader("webhook-signature"));
        }
        if timestamp.len() > 18 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VerifyError::InvalidTimestamp);
        }
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| VerifyError::InvalidTimestamp)?;
        // `now` comes from the caller: `now - ts` could overflow at the ends of i64.
        if now.abs_diff(ts) > TOLERANCE_SECS.unsigned_abs() {
            return Err(VerifyError::TimestampOutOfTolerance);
        }
        let expected = self.mac(id, ts, body);
        let mut buf = [0u8; 64];
        for candidate in signatures.split(' ') {
            let Some(("v1", sig)) = candidate.split_once(',') else {
                continue;
            };
            if sig.len() != 44 {
                continue;
            }
            if let Ok(32) = STANDARD.decode_slice(sig, &mut buf) {
                if macs_equal(&expected, &buf[..32]) {
                    return Ok(());
                }
            }
        }
        Err(VerifyError::NoMatchingSignature)
    }
}

/// Verifies `sha256=<hex>`-style signatures: HMAC-SHA256 of the raw body under
/// `secret`, hex (either case), after `prefix` (which must be present when not empty).
pub fn verify_hex_hmac(
    secret: &[u8],
    body: &[u8],
    header: &str,
    prefix: &str,
) -> Result<(), VerifyError> {
    // An empty key is a key anyone knows: HMAC with it proves nothing.
    if secret.iter().all(u8::is_ascii_whitespace) {
        return Err(VerifyError::NoMatchingSignature);
    }
    let header = header.trim();
    if header.is_empty() {
        return Err(VerifyError::MissingHeader("signature"));
    }
    let hex = header
        .strip_prefix(prefix)
        .ok_or(VerifyError::NoMatchingSignature)?;
    if hex.len() != 64 {
        return Err(VerifyError::NoMatchingSignature);
    }
    let mut got = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
        let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (nib(pair[0]), nib(pair[1])) {
            (Some(h), Some(l)) => got[i] = h << 4 | l,
            _ => return Err(VerifyError::NoMatchingSignature),
        }
    }
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret)
        .map_err(|_| VerifyError::NoMatchingSignature)?;
    m.update(body);
    let expected: [u8; 32] = m.finalize().into_bytes().into();
    if macs_equal(&expected, &got) {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// WhatsApp Cloud API: `X-Hub-Signature-256: sha256=<hex>` under the app secret.
pub fn verify_whatsapp(app_secret: &str, body: &[u8], header: &str) -> Result<(), VerifyError> {
    verify_hex_hmac(app_secret.as_bytes(), body, header, "sha256=")
}

/// Cal.com: `X-Cal-Signature-256: <hex>` under the webhook secret. Cal.com sends the
/// literal `no-secret-provided` when the webhook has no secret; that never verifies.
pub fn verify_calcom(secret: &str, body: &[u8], header: &str) -> Result<(), VerifyError> {
    if header.trim() == "no-secret-provided" || secret.is_empty() {
        return Err(VerifyError::NoMatchingSignature);
    }
    verify_hex_hmac(secret.as_bytes(), body, header, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15, item 23: `(now - ts).abs()` overflowed (a panic in debug builds, a
    /// wrapped comparison in release) when the caller's `now` sat at an end of i64.
    #[test]
    fn extreme_clocks_are_out_of_tolerance_not_an_overflow() {
        let s = WebhookSecret::generate();
        let sig = s.signer().sign("msg_1", 1_700_000_000, b"{}");
        for now in [i64::MIN, i64::MIN + 1, i64::MAX] {
            assert_eq!(
                s.signer().verify("msg_1", "1700000000", &sig, b"{}", now),
                Err(VerifyError::TimestampOutOfTolerance),
                "{now}"
            );
        }
        assert_eq!(
            s.signer()
                .verify("msg_1", "1700000000", &sig, b"{}", 1_700_000_299),
            Ok(())
        );
    }

    /// Issue 15, item 14: WhatsApp accepted an HMAC made with an empty app secret (and
    /// so would any signature check handed an unset secret). A blank key never verifies.
    #[test]
    fn a_signature_made_with_an_empty_secret_never_verifies() {
        use hmac::{Hmac, Mac};
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        for secret in ["", " ", "\t\n"] {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
            mac.update(body);
            let hex: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                verify_whatsapp(secret, body, &format!("sha256={hex}")),
                Err(VerifyError::NoMatchingSignature),
                "{secret:?}"
            );
            assert_eq!(
                verify_calcom(secret, body, &hex),
                Err(VerifyError::NoMatchingSignature),
                "{secret:?}"
            );
        }
    }

    #[test]
    fn digits_match_display() {
        let mut b = [0u8; 20];
        for n in [0, 7, 10, 1649367553, i64::MAX, -1, i64::MIN + 1] {
            assert_eq!(digits(n, &mut b), n.to_string().as_bytes());
        }
    }

    #[test]
    fn secrets_parse_and_hide() {
        let s = WebhookSecret::generate();
        let text = s.expose();
        assert!(text.expose().starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(text.expose()).expect("parse"), s);
        assert!(!format!("{s:?}").contains(&text.expose()[6..]));
        for bad in [
            "",
            "whsec_",
            "sk_AAAA",
            "whsec_!!!!",
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAA",
            &format!("whsec_{}", STANDARD.encode([0u8; 65])),
        ] {
            assert!(WebhookSecret::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sign_round_trips_and_rotation_signs_twice() {
        let (a, b) = (
            WebhookSecret::generate().signer(),
            WebhookSecret::generate().signer(),
        );
        let sig = a.sign("msg_1", 1700000000, b"{}");
        assert_eq!(sig.len(), SIGNATURE_LEN);
        a.verify("msg_1", "1700000000", &sig, b"{}", 1700000000)
            .expect("verifies");
        let both = format!("{} {}", b.sign("msg_1", 1700000000, b"{}"), sig);
        a.verify("msg_1", "1700000000", &both, b"{}", 1700000100)
            .expect("either signature");
        b.verify("msg_1", "1700000000", &both, b"{}", 1700000100)
            .expect("either signature");
        assert_eq!(
            a.verify("", "1", &sig, b"{}", 1),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            a.verify("m", "", &sig, b"{}", 1),
            Err(VerifyError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            a.verify("m", "-5", &sig, b"{}", 1),
            Err(VerifyError::InvalidTimestamp)
        );
        assert_eq!(
            a.verify("m", "99999999999999999999", &sig, b"{}", 1),
            Err(VerifyError::InvalidTimestamp)
        );
        assert_eq!(
            a.verify("m", "1", &format!("v1,{}", "A".repeat(5000)), b"{}", 1),
            Err(VerifyError::NoMatchingSignature)
        );
    }
}
