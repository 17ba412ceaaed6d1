//! Lead parsing: free text (a message, an email body, a chat) into lead fields.
//!
//! A [`LeadParser`] is a plugin (the OpenAI one lives in `crm-integrations`);
//! [`BuiltinParser`] needs no network and is the default, so parsing works offline and
//! in tests: it finds an email, a phone with its country code, a name (a `name:` line,
//! "my name is …", or a first line of two to four capitalised words), a budget figure
//! (`30k`, `$30,000`, `30.000 €`) mapped onto the allowed budgets when they are the
//! default buckets, and a project type from keywords.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use super::model::NewLead;
use super::parse::AllowedValues;
use super::values::{Email, Phone};
use crate::Result;

/// What a parser found.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct ParsedLead {
    /// The values found, ready for `create` (checked there like any input). In JSON,
    /// an object of the fields that have a value (`name`, `email`, `phone`,
    /// `company`, `budget`, `project_type`, `message`, `source`), so a client can
    /// show them for review and send them back to create the lead.
    #[serde(serialize_with = "values")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = std::collections::BTreeMap<String, String>, example = json!({"name": "Ana López", "email": "ana@bakery.es"}))
    )]
    pub fields: NewLead,
    /// The names of the fields with a value, in the order of `fields`.
    pub found: Vec<String>,
    /// How sure the parser is of each value it found, in [0, 1], by field name.
    pub field_confidence: BTreeMap<String, f64>,
    /// How sure the parser is that this is a lead with these details, in [0, 1].
    pub confidence: f64,
    /// The parser that read the text: `builtin`, `openai`, or a plugin's name.
    pub parser: String,
    /// Whether the configured parser failed (timeout, refusal, provider down) and
    /// the builtin parser read the text instead.
    pub fallback: bool,
}

/// The fields a parser fills, by name.
const FIELDS: [&str; 8] = [
    "name",
    "email",
    "phone",
    "company",
    "budget",
    "project_type",
    "message",
    "source",
];

fn field<'a>(f: &'a NewLead, name: &str) -> Option<&'a str> {
    match name {
        "name" => Some(f.name.as_str()),
        "email" => f.email.as_deref(),
        "phone" => f.phone.as_deref(),
        "company" => f.company.as_deref(),
        "budget" => f.budget.as_deref(),
        "project_type" => f.project_type.as_deref(),
        "message" => f.message.as_deref(),
        "source" => f.source.as_deref(),
        _ => None,
    }
    .filter(|v| !v.trim().is_empty())
}

fn values<S: serde::Serializer>(f: &NewLead, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(FIELDS.iter().filter_map(|k| Some((*k, field(f, k)?))))
}

impl ParsedLead {
    /// What `parser` found: the values in `fields`, and how sure it is of each
    /// (`field_confidence`, by field name; a field with a value but no entry gets the
    /// overall `confidence`). `found` lists the fields with a value.
    pub fn new(
        parser: &str,
        fields: NewLead,
        field_confidence: &[(&str, f64)],
        confidence: f64,
    ) -> Self {
        let clamp = |c: f64| {
            if c.is_finite() {
                c.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let confidence = clamp(confidence);
        let mut found = Vec::new();
        let mut by_field = BTreeMap::new();
        for k in FIELDS {
            if field(&fields, k).is_none() {
                continue;
            }
            let c = field_confidence
                .iter()
                .find(|(f, _)| *f == k)
                .map_or(confidence, |(_, c)| clamp(*c));
            by_field.insert(k.to_owned(), c);
            found.push(k.to_owned());
        }
        Self {
            fields,
            found,
            field_confidence: by_field,
            confidence,
            parser: parser.to_owned(),
            fallback: false,
        }
    }
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

/// A name, and whether the text labelled it as one (`name:`, "my name is", …) rather
/// than it being a first line that looks like one.
fn name(text: &str) -> Option<(String, bool)> {
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
                    return Some((words.join(" "), true));
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
    looks_like_name.then(|| (words.join(" "), false))
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
            // How sure: a valid address or number is what it looks like; a name from a
            // `name:` line or "my name is" more than one from a first line; a budget
            // figure and a keyword are guesses.
            let name_confidence = match &name {
                Some((_, labelled)) if *labelled => 0.85,
                _ => 0.6,
            };
            let found = [
                name.is_some(),
                email.is_some(),
                phone.is_some(),
                budget.is_some(),
                project_type.is_some(),
            ];
            let confidence = found.iter().filter(|f| **f).count() as f64 / 5.0;
            let fields = NewLead {
                name: name.map(|(n, _)| n).unwrap_or_default(),
                email: email.map(|e| e.as_str().to_owned()),
                phone: phone.map(|p| p.as_str().to_owned()),
                budget,
                project_type,
                ..Default::default()
            };
            Ok(ParsedLead::new(
                "builtin",
                fields,
                &[
                    ("name", name_confidence),
                    ("email", 0.95),
                    ("phone", 0.9),
                    ("budget", 0.7),
                    ("project_type", 0.6),
                ],
                confidence,
            ))
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
        assert!((p.confidence - 1.0).abs() < f64::EPSILON);
        assert_eq!((p.parser.as_str(), p.fallback), ("builtin", false));
        // The JSON carries the values and how sure the parser is of each.
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(json["fields"]["name"], "Ana López");
        assert_eq!(json["fields"]["email"], "ana@bakery.es");
        assert_eq!(json["fields"]["phone"], "+34600123456");
        assert_eq!(json["fields"]["budget"], "15k_50k");
        assert_eq!(json["fields"]["project_type"], "ecommerce");
        assert!(json["fields"].get("company").is_none(), "only values found");
        assert!(
            json["fields"].get("message").is_none(),
            "the text is not a finding"
        );
        let sure = |k: &str| json["field_confidence"][k].as_f64().expect(k);
        assert!(sure("email") > sure("name") && sure("name") > 0.0);
        // A name from a first line is less sure than a labelled one.
        let labelled = BuiltinParser
            .parse("name: Ana López, ana@bakery.es", &AllowedValues::default())
            .await
            .expect("parse");
        assert!(labelled.field_confidence["name"] > p.field_confidence["name"]);
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
