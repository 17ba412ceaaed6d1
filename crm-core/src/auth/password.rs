//! Passwords: Argon2id PHC strings, hashed and verified on the blocking pool behind a
//! semaphore (one permit per core), so a burst of logins queues there instead of
//! stalling the async workers; and the password policy.
//!
//! The common-password list is Django's `common-passwords.txt` (BSD-3-Clause; itself
//! from Royce Williams' list of the most common passwords), lower-cased: 19,729 entries.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::Errors;
use crate::{Error, Result};

/// Shortest password, in characters.
pub const MIN_CHARS: usize = 12;
/// Longest password, in bytes.
pub const MAX_BYTES: usize = 1024;

static COMMON: &str = include_str!("common-passwords.txt");

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON.lines().collect())
}

/// Checks a password against the policy: at least 12 characters, at most 1024 bytes,
/// upper- and lower-case letters, a digit and a symbol, and not among the common
/// passwords. Every failed rule is reported, each as an error on `password`.
pub fn check_policy(password: &str) -> Result<()> {
    let mut e = Errors::default();
    if password.chars().count() < MIN_CHARS {
        e.add(
            "password",
            format!("must be at least {MIN_CHARS} characters"),
        );
    }
    if password.len() > MAX_BYTES {
        e.add("password", format!("must be at most {MAX_BYTES} bytes"));
    }
    if !password.chars().any(char::is_lowercase) {
        e.add("password", "must contain a lower-case letter");
    }
    if !password.chars().any(char::is_uppercase) {
        e.add("password", "must contain an upper-case letter");
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        e.add("password", "must contain a digit");
    }
    if !password
        .chars()
        .any(|c| !c.is_alphanumeric() && !c.is_whitespace())
    {
        e.add("password", "must contain a symbol");
    }
    if common().contains(password.to_lowercase().as_str()) {
        e.add("password", "is too common");
    }
    e.finish()
}

/// Argon2id cost parameters. The defaults are OWASP's minimum (19 MiB, 2 passes, 1
/// lane); they can be raised, never lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB (at least 19,456).
    pub memory_kib: u32,
    /// Passes (at least 2).
    pub iterations: u32,
    /// Lanes (at least 1).
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// The hasher of one `Crm`.
pub(crate) struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    verifications: AtomicU64,
    hashes: AtomicU64,
    dummy: OnceCell<String>,
}

/// Argon2 parameters for `p`, refusing anything below the defaults.
fn argon_params(p: PasswordParams) -> Result<Params> {
    let min = PasswordParams::default();
    if p.memory_kib < min.memory_kib
        || p.iterations < min.iterations
        || p.parallelism < min.parallelism
    {
        return Err(Error::Config(
            "password parameters may be raised above the defaults, not lowered".into(),
        ));
    }
    Params::new(p.memory_kib, p.iterations, p.parallelism, None)
        .map_err(|_| Error::Config("invalid Argon2 parameters".into()))
}

fn argon(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` into an Argon2id PHC string with `params` and a fresh random salt.
///
/// This is CPU-bound work (tens of milliseconds at the defaults) on the calling thread:
/// async code should use [`crate::Crm::hash_password`], which runs it on the blocking
/// pool. A password longer than [`MAX_BYTES`] is a validation error; parameters below
/// the defaults are a configuration error.
pub fn hash(password: &str, params: PasswordParams) -> Result<String> {
    if password.len() > MAX_BYTES {
        return Err(Error::invalid(
            "password",
            format!("must be at most {MAX_BYTES} bytes"),
        ));
    }
    hash_with(password, argon_params(params)?)
}

fn hash_with(password: &str, params: Params) -> Result<String> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| Error::Config("salt".into()))?;
    argon(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| Error::Config("password hashing failed".into()))
}

/// Whether `password` matches the PHC string `phc`, verified with the parameters the
/// hash was made with. A malformed PHC string never matches. CPU-bound, like [`hash`].
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

impl Passwords {
    pub(crate) fn new(p: PasswordParams) -> Result<Self> {
        let params = argon_params(p)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(cores)),
            verifications: AtomicU64::new(0),
            hashes: AtomicU64::new(0),
            dummy: OnceCell::new(),
        })
    }

    /// Runs CPU-heavy work on the blocking pool, at most one job per core at a time.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        // The permit moves into the blocking job: a caller that goes away (a client
        // that disconnects mid-hash drops the request future) cannot free it while the
        // hash still runs, so the cap holds.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Config("password hasher closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|_| Error::Config("password hashing task failed".into()))
    }

    /// A PHC string for `password` with the current parameters.
    pub(crate) async fn hash(&self, password: &str) -> Result<String> {
        self.hashes.fetch_add(1, Ordering::Relaxed);
        let password = password.to_owned();
        let params = self.params.clone();
        self.blocking(move || hash_with(&password, params)).await?
    }

    /// Whether `password` matches the PHC string `phc` (a malformed string never does).
    pub(crate) async fn verify(&self, password: &str, phc: &str) -> Result<bool> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let password = password.to_owned();
        let phc = phc.to_owned();
        self.blocking(move || verify(&password, &phc)).await
    }

    /// The same work as [`Passwords::verify`] against a hash of nothing, so that an
    /// unknown account costs what a known one costs.
    pub(crate) async fn verify_dummy(&self, password: &str) -> Result<()> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                self.hash("crm dummy password for unknown accounts").await
            })
            .await?;
        self.verify(password, dummy).await.map(|_| ())
    }

    /// Whether a stored hash was made with weaker parameters than the current ones.
    pub(crate) fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() < self.params.m_cost()
                    || p.t_cost() < self.params.t_cost()
                    || p.p_cost() < self.params.p_cost()
            }
            Err(_) => true,
        }
    }

    /// Passwords hashed so far.
    pub(crate) fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// Password verifications run so far (known and unknown accounts alike).
    pub(crate) fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(p: &str) -> Vec<String> {
        match check_policy(p) {
            Ok(()) => Vec::new(),
            Err(e) => e.field_errors().iter().map(|f| f.message.clone()).collect(),
        }
    }

    #[test]
    fn policy_names_each_failed_rule() {
        assert!(rules("Correct-Horse-9-Battery").is_empty());
        assert_eq!(rules("short1A!"), ["must be at least 12 characters"]);
        assert_eq!(
            rules("alllowercase123!"),
            ["must contain an upper-case letter"]
        );
        assert_eq!(
            rules("ALLUPPERCASE123!"),
            ["must contain a lower-case letter"]
        );
        assert_eq!(rules("NoDigitsHere!!!!"), ["must contain a digit"]);
        assert_eq!(rules("NoSymbolsHere123"), ["must contain a symbol"]);
        assert_eq!(
            rules(&format!("Aa1!{}", "x".repeat(1021))),
            ["must be at most 1024 bytes"]
        );
        assert_eq!(
            rules(""),
            [
                "must be at least 12 characters",
                "must contain a lower-case letter",
                "must contain an upper-case letter",
                "must contain a digit",
                "must contain a symbol",
            ]
        );
        assert!(common().len() >= 10_000);
        assert!(common().contains("password"));
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        let long_common = common()
            .iter()
            .find(|p| p.chars().count() >= 12)
            .expect("a long common password");
        assert!(rules(long_common).contains(&"is too common".to_string()));
        assert!(rules(&long_common.to_uppercase()).contains(&"is too common".to_string()));
    }

    #[tokio::test]
    async fn hash_verify_and_rehash() {
        let pw = Passwords::new(PasswordParams::default()).expect("params");
        let phc = pw.hash("Correct-Horse-9-Battery").await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(pw
            .verify("Correct-Horse-9-Battery", &phc)
            .await
            .expect("verify"));
        assert!(!pw.verify("wrong", &phc).await.expect("verify"));
        assert!(!pw.verify("x", "not a hash").await.expect("verify"));
        assert!(!pw.needs_rehash(&phc));
        let stronger = Passwords::new(PasswordParams {
            iterations: 3,
            ..Default::default()
        })
        .expect("params");
        assert!(stronger.needs_rehash(&phc));
        assert!(stronger
            .verify("Correct-Horse-9-Battery", &phc)
            .await
            .expect("old hashes still verify"));
        assert!(Passwords::new(PasswordParams {
            memory_kib: 1024,
            ..Default::default()
        })
        .is_err());
        pw.verify_dummy("anything").await.expect("dummy");
        assert_eq!(pw.verifications(), 4);
    }
}
