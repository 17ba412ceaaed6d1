//! Scopes: `resource:action`, `resource:*` or `*`. Deny by default: a key may do
//! only what one of its scopes grants.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Resources a scope can name.
pub const RESOURCES: &[&str] = &[
    "leads",
    "contacts",
    "messages",
    "webhooks",
    "notifications",
    "api_keys",
    "settings",
    "users",
    "audit",
];
/// Actions a scope can name.
pub const ACTIONS: &[&str] = &["read", "write", "delete"];

/// One checked scope.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

#[cfg(feature = "openapi")]
crate::macros::string_schema!(
    Scope,
    None,
    "`resource:action` (`leads:read`, `leads:write`, `leads:delete`), with `*` for any."
);

impl Scope {
    /// Parses `*`, `resource:*` or `resource:action` with a known resource and action
    /// (lower case, no spaces).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self(s.to_owned()));
        }
        let known = match s.split_once(':') {
            Some((r, a)) => RESOURCES.contains(&r) && (a == "*" || ACTIONS.contains(&a)),
            None => false,
        };
        if known {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "unknown scope {s:?}; scopes are `*`, `resource:*` or `resource:action` with resource one of {} and action one of {}",
                RESOURCES.join(", "),
                ACTIONS.join(", ")
            ))
        }
    }

    /// The scope as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this scope grants `required` (a concrete `resource:action`).
    pub fn grants(&self, required: &str) -> bool {
        if self.0 == "*" || self.0 == required {
            return true;
        }
        match (self.0.strip_suffix(":*"), required.split_once(':')) {
            (Some(resource), Some((r, _))) => resource == r,
            _ => false,
        }
    }
}

impl TryFrom<String> for Scope {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.0
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({})", self.0)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether any of `scopes` grants `required`.
pub fn allows(scopes: &[Scope], required: &str) -> bool {
    scopes.iter().any(|s| s.grants(required))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_table() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "leads:read", true),
            ("*", "webhooks:delete", true),
            ("leads:*", "leads:read", true),
            ("leads:*", "leads:delete", true),
            ("leads:*", "webhooks:read", false),
            ("leads:read", "leads:read", true),
            ("leads:read", "leads:write", false),
            ("leads:write", "leads:read", false),
            ("webhooks:*", "leads:read", false),
            ("api_keys:read", "api_keys:read", true),
            ("leads:read", "leadsx:read", false),
        ];
        for (scope, required, want) in table {
            let s = Scope::parse(scope).expect("valid scope");
            assert_eq!(s.grants(required), *want, "{scope} grants {required}?");
        }
        assert!(!allows(&[], "leads:read"), "deny by default");
    }

    #[test]
    fn unknown_scopes_are_refused() {
        for bad in [
            "",
            " ",
            "leads",
            "leads:",
            ":read",
            "Leads:read",
            "leads:Read",
            "leads: read",
            "leads:read ",
            "users:*:*",
            "**",
            "leads:list",
            "invoices:read",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
    }
}
