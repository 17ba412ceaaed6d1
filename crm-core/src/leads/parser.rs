//! Lead parsing: free text (a message, an email body, a chat) into lead fields.
//!
//! A [`LeadParser`] is a plugin (the OpenAI one lives in `crm-integrations`);
//! [`BuiltinParser`] needs no network and is the default, so parsing works offline and
//! in tests: it finds an email, a phone with its country code, a name (a `name:` line,
//! "my name is …", or a first line of two to four capitalised words), a budget figure
//! (`30k`, `$30,000`, `30.000 €`) mapped onto the allowed budgets when they are the
//! default buckets, and a project type from keywords.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use super::model::NewLead;
use super::parse::{AllowedValues, MESSAGE_MAX};
use super::values::{Email, Phone};
use crate::Result;

/// What a parser found.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ParsedLead {
    /// The fields, ready for `create` (checked there like any input).
    #[serde(skip)]
    pub fields: NewLead,
    /// The names of the fields the parser found (`name`, `email`, …).
    pub found: Vec<String>,
    /// How sure the parser is, in [0, 1].
    pub confidence: f32,
}

/// A boxed future, so parsers can sit behind `dyn LeadParser`.
pub type ParseFuture<'a> = Pin<Box<dyn Future<Output = Result<ParsedLead>> + Send + 'a>>;

/// Turns free text into lead fields. `text` is at most 5,000 characters; budget and
/// project type must be among `allowed` (or absent).
pub trait LeadParser: Send + Sync + 'static {
    /// Parses one text.
    fn parse<'a>(&'a self, text: &'a str, allowed: &'a AllowedValues) -> ParseFuture<'a>;

    /// Whether a parse costs the operator something (a paid API call): metered
    /// parses spend the workspace's `lead_parse` rate-limit budget (100 an hour by
    /// default), so one tenant cannot run up the operator's AI bill. `true` unless
    /// the parser says otherwise; the offline [`BuiltinParser`] is not metered.
    fn metered(&self) -> bool {
        true
    }
}

/// The offline parser; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinParser;

fn budget_bucket(amount: f64, allowed: &AllowedValues) -> Option<String> {
    let bucket = match amount {
        a if a < 1_000.0 => "under_1k",
        a if a < 5_000.0 => "1k_5k",
        a if a < 15_000.0 => "5k_15k",
        a if a < 50_000.0 => "15k_50k",
        _ => "over_50k",
    };
    allowed
        .budgets
        .iter()
        .any(|b| b == bucket)
        .then(|| bucket.to_owned())
}

/// The first amount in `text`: digits with `,`/`.` separators, an optional `k`, next
/// to a currency sign or the word budget.
fn amount(text: &str) -> Option<f64> {
    let lower = text.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit() || chars[i] == ',' || chars[i] == '.')
            {
                i += 1;
            }
            let raw: String = chars[start..i]
                .iter()
                .filter(|c| c.is_ascii_digit())
                .collect();
            let mut value: f64 = raw.parse().ok()?;
            let k = chars.get(i).is_some_and(|c| *c == 'k');
            if k {
                value *= 1000.0;
            }
            let before: String = chars[start.saturating_sub(12)..start].iter().collect();
            let after: String = chars[i..(i + 6).min(chars.len())].iter().collect();
            let money = k
                || before.contains('$')
                || before.contains('€')
                || before.contains('£')
                || before.contains("budget")
                || after.contains('€')
                || after.contains("eur")
                || after.contains("usd");
            if money && raw.len() <= 9 {
                return Some(value);
            }
        }
        i += 1;
    }
    None
}

fn project_type(text: &str, allowed: &AllowedValues) -> Option<String> {
    let t = text.to_lowercase();
    let rules: [(&str, &[&str]); 6] = [
        (
            "ecommerce",
            &[
                "ecommerce",
                "e-commerce",
                "online shop",
                "online store",
                "webshop",
            ],
        ),
        (
            "mobile_app",
            &["mobile app", "ios", "android", "iphone app"],
        ),
        (
            "web_app",
            &["web app", "saas", "dashboard", "platform", "portal"],
        ),
        ("branding", &["logo", "branding", "brand identity"]),
        ("marketing", &["seo", "marketing", "ads", "campaign"]),
        (
            "website",
            &["website", "web site", "landing page", "homepage"],
        ),
    ];
    rules
        .iter()
        .find(|(value, words)| {
            allowed.project_types.iter().any(|a| a == value) && words.iter().any(|w| t.contains(w))
        })
        .map(|(value, _)| (*value).to_owned())
}

fn name(text: &str) -> Option<String> {
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        for prefix in ["name:", "my name is ", "i'm ", "i am ", "this is "] {
            if let Some(rest) = after_ascii_ci(line, prefix) {
                let words: Vec<&str> = rest
                    .split(|c: char| !(c.is_alphabetic() || c == '-' || c == '\''))
                    .filter(|w| !w.is_empty())
                    .take_while(|w| w.chars().next().is_some_and(char::is_uppercase))
                    .take(4)
                    .collect();
                if !words.is_empty() {
                    return Some(words.join(" "));
                }
            }
        }
    }
    let first = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let words: Vec<&str> = first.split_whitespace().collect();
    let looks_like_name = (2..=4).contains(&words.len())
        && words.iter().all(|w| {
            w.chars().next().is_some_and(char::is_uppercase)
                && w.chars()
                    .all(|c| c.is_alphabetic() || c == '-' || c == '\'')
        });
    looks_like_name.then(|| words.join(" "))
}

/// What follows the first occurrence of the ASCII `needle` in `line`, ignoring ASCII
/// case. It searches `line` itself: an offset found in `line.to_lowercase()` is not
/// an offset of `line`, whose characters may lower-case to another length (the
/// Kelvin sign `K`, 3 bytes, becomes `k`, 1 byte), and slicing with it panics.
fn after_ascii_ci<'a>(line: &'a str, needle: &str) -> Option<&'a str> {
    line.char_indices().find_map(|(i, _)| {
        let end = i.checked_add(needle.len())?;
        line.get(i..end)
            .filter(|s| s.eq_ignore_ascii_case(needle))
            .and_then(|_| line.get(end..))
    })
}

fn phone(text: &str) -> Option<Phone> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '+' || (chars[i] == '0' && chars.get(i + 1) == Some(&'0')) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || " -().".contains(chars[i])) {
                i += 1;
            }
            let candidate: String = chars[start..i].iter().collect();
            if let Ok(p) = Phone::parse(candidate.trim()) {
                return Some(p);
            }
        }
        i += 1;
    }
    None
}

impl LeadParser for BuiltinParser {
    fn metered(&self) -> bool {
        false
    }

    fn parse<'a>(&'a self, text: &'a str, allowed: &'a AllowedValues) -> ParseFuture<'a> {
        Box::pin(async move {
            let email = text
                .split(|c: char| c.is_whitespace() || "<>()[],;\"'".contains(c))
                .map(|w| w.trim_end_matches(['.', ':']))
                .find_map(|w| w.contains('@').then(|| Email::parse(w).ok()).flatten());
            let phone = phone(text);
            let name = name(text);
            let budget = amount(text).and_then(|a| budget_bucket(a, allowed));
            let project_type = project_type(text, allowed);
            let mut found = Vec::new();
            for (field, present) in [
                ("name", name.is_some()),
                ("email", email.is_some()),
                ("phone", phone.is_some()),
                ("budget", budget.is_some()),
                ("project_type", project_type.is_some()),
            ] {
                if present {
                    found.push(field.to_owned());
                }
            }
            let confidence = found.len() as f32 / 5.0;
            let fields = NewLead {
                name: name.unwrap_or_default(),
                email: email.map(|e| e.as_str().to_owned()),
                phone: phone.map(|p| p.as_str().to_owned()),
                budget,
                project_type,
                message: Some(text.chars().take(MESSAGE_MAX).collect()),
                ..Default::default()
            };
            Ok(ParsedLead {
                fields,
                found,
                confidence,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_usual_fields() {
        let text = "Ana López\nHi! We need an online shop for our bakery, budget around $30,000.\nReach me at ana@bakery.es or +34 600 123 456.";
        let p = BuiltinParser
            .parse(text, &AllowedValues::default())
            .await
            .expect("parse");
        assert_eq!(p.fields.name, "Ana López");
        assert_eq!(p.fields.email.as_deref(), Some("ana@bakery.es"));
        assert_eq!(p.fields.phone.as_deref(), Some("+34600123456"));
        assert_eq!(p.fields.budget.as_deref(), Some("15k_50k"));
        assert_eq!(p.fields.project_type.as_deref(), Some("ecommerce"));
        assert_eq!(
            p.found,
            ["name", "email", "phone", "budget", "project_type"]
        );
        assert!((p.confidence - 1.0).abs() < f32::EPSILON);
    }

    /// The reported remote panic: U+212A lower-cases from 3 bytes to 1, so an offset
    /// found in the lower-cased line pointed inside a character of the original.
    #[tokio::test]
    async fn kelvin_signs_before_a_name_prefix_do_not_panic() {
        for text in [
            "\u{212A}\u{212A}\u{212A}\u{212A} name: Ana",
            "\u{212A} NAME: Ana",
            "\u{130}\u{130} my name is Bo Chen",
            "\u{212A}\u{212A}\u{212A}\u{212A}\u{212A}\u{212A} i'm",
        ] {
            let p = BuiltinParser
                .parse(text, &AllowedValues::default())
                .await
                .expect("parse");
            if text.ends_with("Ana") {
                assert_eq!(p.fields.name, "Ana", "{text}");
            }
            if text.ends_with("Chen") {
                assert_eq!(p.fields.name, "Bo Chen", "{text}");
            }
        }
    }

    #[tokio::test]
    async fn other_phrasings_and_nothing_found() {
        let p = BuiltinParser
            .parse(
                "hello, my name is Bo Chen and I want a mobile app, 8k EUR",
                &AllowedValues::default(),
            )
            .await
            .expect("parse");
        assert_eq!(p.fields.name, "Bo Chen");
        assert_eq!(p.fields.budget.as_deref(), Some("5k_15k"));
        assert_eq!(p.fields.project_type.as_deref(), Some("mobile_app"));
        let none = BuiltinParser
            .parse("call me maybe, 2024 was great", &AllowedValues::default())
            .await
            .expect("parse");
        assert!(none.found.is_empty());
        assert_eq!(none.confidence, 0.0);
    }
}
