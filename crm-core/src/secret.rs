//! A string that must not be printed: its `Debug` and `Display` are redacted, and the
//! value is reached only through [`SecretString::expose`], which is easy to grep for.

use std::fmt;

/// A secret string (an API key shown once, a token).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub(crate) fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret itself. Show it to its owner once; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for SecretString {
    /// Wraps a secret the caller holds (an API key from the environment, say).
    fn from(s: String) -> Self {
        Self(s)
    }
}
