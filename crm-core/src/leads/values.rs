//! Typed lead values: each one exists only in its valid, normalised form.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::macros::string_enum;

/// An email address, trimmed, with a lower-cased domain. Two addresses that differ
/// only in case are the same lead: uniqueness uses [`Email::key`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

#[cfg(feature = "openapi")]
crate::macros::string_schema!(Email, Some("email"), "An email address.");

impl Email {
    /// Parses an address: one `@`, a local part of 1–64 characters without spaces or
    /// control characters, a domain of dot-separated labels of letters, digits and
    /// hyphens with at least one dot; 254 characters in all.
    pub fn parse(input: &str) -> Result<Self, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.chars().count() > 254 {
            return Err("must be at most 254 characters".into());
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err("must be an email address like name@example.com".into());
        };
        let local_ok = !local.is_empty()
            && local.chars().count() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"@<>()[]\\,;:\"".contains(c));
        let domain = domain.to_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return Err("must be an email address like name@example.com".into());
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    /// The address as stored and shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-insensitive key that makes an address unique within a workspace.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

/// A phone number in E.164 form (`+` and 8–15 digits, no leading zero in the
/// country code).
///
/// Parsing accepts the usual separators (spaces, `-`, `.`, `/`, parentheses), an
/// international `00` prefix, and — when the `Crm` has a default country code — a
/// national number with or without its trunk `0`. It checks the E.164 shape, not
/// each country's numbering plan.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

#[cfg(feature = "openapi")]
crate::macros::string_schema!(
    Phone,
    None,
    "A phone number in E.164 (`+` and up to 15 digits)."
);

impl Phone {
    /// Parses a number written in international form.
    pub fn parse(input: &str) -> Result<Self, String> {
        Self::parse_with_default(input, None)
    }

    /// Parses a number, reading a national number (no `+` or `00`) as one in
    /// `default_country_code` (e.g. `34` for Spain) when that is given.
    pub fn parse_with_default(
        input: &str,
        default_country_code: Option<u16>,
    ) -> Result<Self, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 32 {
            return Err("must be at most 32 characters".into());
        }
        let (international, rest) = if let Some(r) = s.strip_prefix('+') {
            (true, r)
        } else if let Some(r) = s.strip_prefix("00") {
            (true, r)
        } else {
            (false, s)
        };
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '/' | '(' | ')' => {}
                _ => return Err("must contain only digits, spaces, + - . / ( )".into()),
            }
        }
        let e164 = if international {
            digits
        } else if let Some(cc) = default_country_code {
            format!("{cc}{}", digits.trim_start_matches('0'))
        } else {
            return Err("must start with + and the country code, e.g. +34 600 000 000".into());
        };
        if !(8..=15).contains(&e164.len()) || e164.starts_with('0') {
            return Err("must be a phone number with country code, 8 to 15 digits".into());
        }
        Ok(Self(format!("+{e164}")))
    }

    /// The number in E.164 form, e.g. `+34600000000`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Phone {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.0)
    }
}

string_enum!(
    /// Where a lead stands in the pipeline.
    pub LeadStatus, "status" {
        /// Not yet handled (the default).
        New => "new",
        /// First contact made.
        Contacted => "contacted",
        /// A real prospect.
        Qualified => "qualified",
        /// An offer was sent.
        Proposal => "proposal",
        /// Became a customer.
        Won => "won",
        /// Will not become a customer.
        Lost => "lost",
    }
);

string_enum!(
    /// What kind of entry an activity is on a lead's timeline.
    pub ActivityKind, "activity kind" {
        /// A free-form note.
        Note => "note",
        /// A phone call.
        Call => "call",
        /// An email exchanged.
        Email => "email",
        /// A meeting held.
        Meeting => "meeting",
        /// The status changed (written by crm itself on every status change).
        StatusChange => "status_change",
        /// A form (or inbound channel) submitted this lead again.
        FormSubmission => "form_submission",
        /// A booking (e.g. from Cal.com).
        Booking => "booking",
        /// A message (e.g. WhatsApp).
        Message => "message",
        /// Other leads were merged into this one (written by crm on a merge).
        Merged => "merged",
        /// The lead was converted into a contact (written by crm on a conversion).
        Converted => "converted",
        /// A file was attached or removed (written by crm; the description names it).
        Attachment => "attachment",
    }
);

// string_enum! declares the enum, so `#[derive(Default)]` cannot be added to it.
#[allow(clippy::derivable_impls)]
impl Default for LeadStatus {
    fn default() -> Self {
        Self::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_normalise_and_refuse_junk() {
        let e = Email::parse("  Ana.Lopez@Example.COM ").expect("valid");
        assert_eq!(e.as_str(), "Ana.Lopez@example.com");
        assert_eq!(e.key(), "ana.lopez@example.com");
        for bad in [
            "",
            "plain",
            "a@b",
            "@x.com",
            "a@@x.com",
            "a b@x.com",
            "a@x..com",
            "a@-x.com",
            "a\0@x.com",
            ".a@x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@x.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(
            Phone::parse("+34 600-12.34 56").expect("ok").as_str(),
            "+34600123456"
        );
        assert_eq!(
            Phone::parse("0034 600 123 456").expect("ok").as_str(),
            "+34600123456"
        );
        assert_eq!(
            Phone::parse_with_default("0600 123 456", Some(34))
                .expect("ok")
                .as_str(),
            "+34600123456"
        );
        for bad in [
            "",
            "600123456",
            "+12",
            "+0123456789",
            "+34 600 abc",
            "+1234567890123456",
            "++34600123456",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enums_round_trip_and_name_the_choices() {
        for s in LeadStatus::ALL {
            assert_eq!(s.as_str().parse::<LeadStatus>(), Ok(*s));
        }
        let err = "open".parse::<LeadStatus>().expect_err("must fail");
        assert!(err.contains("new, contacted"), "{err}");
        assert!("Note".parse::<ActivityKind>().is_err());
    }
}
