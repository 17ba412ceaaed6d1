//! The edge of the lead service: raw input becomes typed, valid values here, with
//! every field error collected so the caller sees them all at once.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::model::{Lead, LeadPatch, LeadQuery, NewActivity, NewLead};
use super::values::{ActivityKind, Email, LeadStatus, Phone};
use crate::error::Errors;
use crate::ids::{LeadId, UserId, WorkspaceId};
use crate::Result;

/// Longest name or company, in characters.
pub const NAME_MAX: usize = 200;
/// Longest message or activity description, in characters.
pub const MESSAGE_MAX: usize = 5_000;
/// Longest notes, in characters.
pub const NOTES_MAX: usize = 10_000;
/// Longest raw input, in characters.
pub const RAW_INPUT_MAX: usize = 20_000;
/// Most tags on a lead.
pub const TAGS_MAX: usize = 20;
/// Longest tag, in characters.
pub const TAG_MAX: usize = 50;
/// Largest custom-field object, in bytes of JSON.
pub const CUSTOM_MAX_BYTES: usize = 16 * 1024;
/// Longest actor name, in characters.
pub const ACTOR_MAX: usize = 200;
/// Most search words used from `q`.
pub const SEARCH_TERMS_MAX: usize = 8;

/// The values budget, project type and source may take. The defaults suit an agency
/// or freelancer; an app replaces them on the `Crm` builder.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AllowedValues {
    /// Allowed budgets.
    pub budgets: Vec<String>,
    /// Allowed project types.
    pub project_types: Vec<String>,
    /// Allowed sources.
    pub sources: Vec<String>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for AllowedValues {
    fn default() -> Self {
        Self {
            budgets: strings(&[
                "under_1k", "1k_5k", "5k_15k", "15k_50k", "over_50k", "unknown",
            ]),
            project_types: strings(&[
                "website",
                "web_app",
                "mobile_app",
                "ecommerce",
                "branding",
                "marketing",
                "consulting",
                "other",
            ]),
            sources: strings(&[
                "website",
                "contact_form",
                "whatsapp",
                "cal_com",
                "email",
                "phone",
                "referral",
                "social",
                "api",
                "import",
                "manual",
                "ai",
                "other",
            ]),
        }
    }
}

/// What the lead service checks input against, fixed when the `Crm` is built.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeadRules {
    pub(crate) allowed: AllowedValues,
    pub(crate) default_country_code: Option<u16>,
}

/// The checked fields of a lead, without identity or timestamps.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub name: String,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub company: Option<String>,
    pub budget: Option<String>,
    pub project_type: Option<String>,
    pub message: Option<String>,
    pub source: Option<String>,
    pub status: LeadStatus,
    pub notes: Option<String>,
    pub tags: Vec<String>,
    pub custom: Map<String, Value>,
    pub raw_input: Option<String>,
    pub ai_parsed: bool,
    pub owner_id: Option<UserId>,
}

impl Fields {
    pub(crate) fn into_lead(self, workspace_id: WorkspaceId, now: DateTime<Utc>) -> Lead {
        Lead {
            id: LeadId::new(),
            workspace_id,
            name: self.name,
            email: self.email,
            phone: self.phone,
            company: self.company,
            budget: self.budget,
            project_type: self.project_type,
            message: self.message,
            source: self.source,
            status: self.status,
            notes: self.notes,
            tags: self.tags,
            custom: self.custom,
            raw_input: self.raw_input,
            ai_parsed: self.ai_parsed,
            created_at: now,
            updated_at: now,
            archived_at: None,
            owner_id: self.owner_id,
            contact_id: None,
        }
    }
}

/// Optional text: trimmed; empty means absent; no NUL (Postgres cannot store it);
/// at most `max` characters.
pub(crate) fn text(errs: &mut Errors, field: &str, v: Option<&str>, max: usize) -> Option<String> {
    let v = v?.trim();
    if v.is_empty() {
        return None;
    }
    if v.contains('\0') {
        errs.add(field, "must not contain NUL characters");
        return None;
    }
    if v.chars().count() > max {
        errs.add(field, format!("must be at most {max} characters"));
        return None;
    }
    Some(v.to_owned())
}

pub(crate) fn required_text(errs: &mut Errors, field: &str, v: &str, max: usize) -> Option<String> {
    let t = text(errs, field, Some(v), max);
    if t.is_none() && !errs_has(errs, field) {
        errs.add(field, "must not be empty");
    }
    t
}

fn errs_has(errs: &Errors, field: &str) -> bool {
    errs.fields().any(|f| f == field)
}

fn one_of(errs: &mut Errors, field: &str, v: Option<&str>, allowed: &[String]) -> Option<String> {
    let v = text(errs, field, v, 64)?;
    if allowed.contains(&v) {
        Some(v)
    } else {
        errs.add(
            field,
            format!("unknown value; expected one of: {}", allowed.join(", ")),
        );
        None
    }
}

fn status(errs: &mut Errors, field: &str, v: &str) -> Option<LeadStatus> {
    errs.take(field, LeadStatus::from_str(v.trim()))
}

pub(crate) fn tags(errs: &mut Errors, field: &str, input: &[String]) -> Vec<String> {
    if input.len() > TAGS_MAX {
        errs.add(field, format!("at most {TAGS_MAX} tags"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::with_capacity(input.len());
    for (i, t) in input.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match text(errs, &f, Some(t), TAG_MAX) {
            Some(t) if !out.contains(&t) => out.push(t),
            Some(_) => {}
            None if !errs_has(errs, &f) => errs.add(f, "must not be empty"),
            None => {}
        }
    }
    out
}

pub(crate) fn custom(errs: &mut Errors, v: Option<Map<String, Value>>) -> Map<String, Value> {
    let v = v.unwrap_or_default();
    match serde_json::to_string(&v) {
        Ok(json) if json.len() > CUSTOM_MAX_BYTES => {
            errs.add(
                "custom",
                format!("must be at most {CUSTOM_MAX_BYTES} bytes of JSON"),
            );
        }
        // Postgres jsonb refuses the NUL character.
        Ok(json) if json.contains("\\u0000") => {
            errs.add("custom", "must not contain NUL characters")
        }
        Ok(_) => {}
        Err(_) => errs.add("custom", "must be a JSON object"),
    }
    v
}

fn email(errs: &mut Errors, v: Option<&str>) -> Option<Email> {
    let v = v.map(str::trim).filter(|v| !v.is_empty())?;
    errs.take("email", Email::parse(v))
}

fn phone(errs: &mut Errors, v: Option<&str>, rules: &LeadRules) -> Option<Phone> {
    let v = v.map(str::trim).filter(|v| !v.is_empty())?;
    errs.take(
        "phone",
        Phone::parse_with_default(v, rules.default_country_code),
    )
}

pub(crate) fn new_lead(input: NewLead, rules: &LeadRules) -> Result<Fields> {
    let mut e = Errors::default();
    let a = &rules.allowed;
    let fields = Fields {
        name: required_text(&mut e, "name", &input.name, NAME_MAX).unwrap_or_default(),
        email: email(&mut e, input.email.as_deref()),
        phone: phone(&mut e, input.phone.as_deref(), rules),
        company: text(&mut e, "company", input.company.as_deref(), NAME_MAX),
        budget: one_of(&mut e, "budget", input.budget.as_deref(), &a.budgets),
        project_type: one_of(
            &mut e,
            "project_type",
            input.project_type.as_deref(),
            &a.project_types,
        ),
        message: text(&mut e, "message", input.message.as_deref(), MESSAGE_MAX),
        source: one_of(&mut e, "source", input.source.as_deref(), &a.sources),
        status: match input.status.as_deref() {
            Some(s) => status(&mut e, "status", s).unwrap_or_default(),
            None => LeadStatus::New,
        },
        notes: text(&mut e, "notes", input.notes.as_deref(), NOTES_MAX),
        tags: tags(&mut e, "tags", &input.tags),
        custom: custom(&mut e, input.custom),
        raw_input: text(
            &mut e,
            "raw_input",
            input.raw_input.as_deref(),
            RAW_INPUT_MAX,
        ),
        ai_parsed: input.ai_parsed,
        owner_id: input.owner_id,
    };
    let contact_given = [&input.email, &input.phone]
        .iter()
        .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()));
    if !contact_given {
        e.add("email", "a lead needs an email or a phone");
    }
    e.finish()?;
    Ok(fields)
}

/// A checked patch; `apply` produces the lead after it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Patch {
    name: Option<String>,
    email: Option<Option<Email>>,
    phone: Option<Option<Phone>>,
    company: Option<Option<String>>,
    budget: Option<Option<String>>,
    project_type: Option<Option<String>>,
    message: Option<Option<String>>,
    source: Option<Option<String>>,
    status: Option<LeadStatus>,
    notes: Option<Option<String>>,
    tags: Option<Vec<String>>,
    custom: Option<Map<String, Value>>,
    pub(crate) owner_id: Option<Option<UserId>>,
}

pub(crate) fn patch(input: LeadPatch, rules: &LeadRules) -> Result<Patch> {
    let mut e = Errors::default();
    let a = &rules.allowed;
    let p = Patch {
        name: input
            .name
            .and_then(|n| required_text(&mut e, "name", &n, NAME_MAX)),
        email: input.email.map(|v| email(&mut e, v.as_deref())),
        phone: input.phone.map(|v| phone(&mut e, v.as_deref(), rules)),
        company: input
            .company
            .map(|v| text(&mut e, "company", v.as_deref(), NAME_MAX)),
        budget: input
            .budget
            .map(|v| one_of(&mut e, "budget", v.as_deref(), &a.budgets)),
        project_type: input
            .project_type
            .map(|v| one_of(&mut e, "project_type", v.as_deref(), &a.project_types)),
        message: input
            .message
            .map(|v| text(&mut e, "message", v.as_deref(), MESSAGE_MAX)),
        source: input
            .source
            .map(|v| one_of(&mut e, "source", v.as_deref(), &a.sources)),
        status: input.status.and_then(|s| status(&mut e, "status", &s)),
        notes: input
            .notes
            .map(|v| text(&mut e, "notes", v.as_deref(), NOTES_MAX)),
        tags: input.tags.map(|t| tags(&mut e, "tags", &t)),
        custom: input.custom.map(|c| custom(&mut e, Some(c))),
        owner_id: input.owner_id,
    };
    e.finish()?;
    Ok(p)
}

impl Patch {
    /// The lead after this patch; timestamps are untouched.
    pub(crate) fn apply(self, old: &Lead) -> Lead {
        let mut new = old.clone();
        macro_rules! set {
            ($($f:ident),+) => {$( if let Some(v) = self.$f { new.$f = v; } )+};
        }
        set!(
            name,
            email,
            phone,
            company,
            budget,
            project_type,
            message,
            source,
            status,
            notes,
            tags,
            custom,
            owner_id
        );
        new
    }
}

pub(crate) fn activity(input: NewActivity) -> Result<(ActivityKind, Option<String>)> {
    let mut e = Errors::default();
    let kind = e.take("kind", ActivityKind::from_str(input.kind.trim()));
    if kind == Some(ActivityKind::StatusChange) {
        e.add(
            "kind",
            "status_change is recorded by crm when the status changes",
        );
    }
    if kind == Some(ActivityKind::Merged) {
        e.add("kind", "merged is recorded by crm when leads are merged");
    }
    if kind == Some(ActivityKind::Converted) {
        e.add(
            "kind",
            "converted is recorded by crm when a lead is converted",
        );
    }
    if kind == Some(ActivityKind::Attachment) {
        e.add(
            "kind",
            "attachment is recorded by crm when a file is attached or removed",
        );
    }
    let description = text(
        &mut e,
        "description",
        input.description.as_deref(),
        MESSAGE_MAX,
    );
    e.finish()?;
    Ok((kind.unwrap_or(ActivityKind::Note), description))
}

pub(crate) fn actor(v: Option<&str>) -> Result<Option<String>> {
    let mut e = Errors::default();
    let a = text(&mut e, "actor", v, ACTOR_MAX);
    e.finish()?;
    Ok(a)
}

/// A checked listing query; the cursor is decoded by the caller, against `fingerprint`.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub statuses: Vec<LeadStatus>,
    pub source: Option<String>,
    pub tags: Vec<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub terms: Vec<String>,
    pub limit: u32,
    pub archived: super::model::Archived,
    pub owner_id: Option<UserId>,
}

impl Query {
    /// A digest of the filters, so a cursor cannot be replayed against other filters.
    pub(crate) fn fingerprint(&self) -> String {
        let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        let mut f = format!(
            "{statuses:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.source,
            self.tags,
            self.created_after.map(|t| t.timestamp_micros()),
            self.created_before.map(|t| t.timestamp_micros()),
            self.terms,
        );
        // Only when archived leads are asked for: the cursors of the default listing
        // keep the fingerprint they had before archiving existed.
        match self.archived {
            super::model::Archived::Hide => {}
            super::model::Archived::Only => f.push_str("|archived=true"),
            super::model::Archived::Include => f.push_str("|archived=any"),
        }
        if let Some(owner) = self.owner_id {
            f.push_str(&format!("|owner={owner}"));
        }
        f
    }
}

pub(crate) fn query(input: &LeadQuery) -> Result<Query> {
    let mut e = Errors::default();
    let mut statuses = Vec::new();
    for (i, s) in input.status.iter().enumerate() {
        if let Some(s) = status(&mut e, &format!("status[{i}]"), s) {
            if !statuses.contains(&s) {
                statuses.push(s);
            }
        }
    }
    let source = text(&mut e, "source", input.source.as_deref(), 64);
    let tags = tags(&mut e, "tags", &input.tags);
    if let (Some(a), Some(b)) = (input.created_after, input.created_before) {
        if a >= b {
            e.add("created_before", "must be later than created_after");
        }
    }
    let mut terms = Vec::new();
    if let Some(q) = input.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        if q.chars().count() > 200 {
            e.add("q", "must be at most 200 characters");
        } else {
            terms = search_terms(q);
            if terms.is_empty() {
                e.add("q", "must contain a letter or digit");
            }
        }
    }
    let limit = input.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        e.add("limit", "must be between 1 and 100");
    }
    e.finish()?;
    Ok(Query {
        statuses,
        source,
        tags,
        created_after: input.created_after,
        created_before: input.created_before,
        terms,
        limit,
        archived: input.archived,
        owner_id: input.owner_id,
    })
}

/// Splits `q` into lower-cased runs of letters and digits, the tokens both backends
/// index; at most [`SEARCH_TERMS_MAX`] distinct ones.
pub(crate) fn search_terms(q: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for t in q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
    {
        let t = t.to_lowercase();
        if !terms.contains(&t) {
            terms.push(t);
        }
        if terms.len() == SEARCH_TERMS_MAX {
            break;
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_error_is_reported_together() {
        let input = NewLead {
            name: "  ".into(),
            email: Some("not-an-email".into()),
            phone: Some("12".into()),
            budget: Some("a million".into()),
            project_type: Some("rocket".into()),
            source: Some("pigeon".into()),
            status: Some("open".into()),
            message: Some("x".repeat(MESSAGE_MAX + 1)),
            tags: vec!["ok".into(), "".into(), "t".repeat(TAG_MAX + 1)],
            ..Default::default()
        };
        let err = new_lead(input, &LeadRules::default()).expect_err("must fail");
        let fields: Vec<&str> = err
            .field_errors()
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "name",
                "email",
                "phone",
                "budget",
                "project_type",
                "message",
                "source",
                "status",
                "tags[1]",
                "tags[2]"
            ]
        );
    }

    #[test]
    fn contact_is_required_and_nul_refused() {
        let err = new_lead(
            NewLead {
                name: "Ana".into(),
                ..Default::default()
            },
            &LeadRules::default(),
        )
        .expect_err("must fail");
        assert_eq!(err.field_errors()[0].field, "email");
        let err = new_lead(
            NewLead {
                name: "A\0na".into(),
                email: Some("a@x.com".into()),
                ..Default::default()
            },
            &LeadRules::default(),
        )
        .expect_err("must fail");
        assert_eq!(err.field_errors()[0].field, "name");
        let mut custom = Map::new();
        custom.insert("k".into(), Value::String("\0".into()));
        let err = new_lead(
            NewLead {
                name: "Ana".into(),
                email: Some("a@x.com".into()),
                custom: Some(custom),
                ..Default::default()
            },
            &LeadRules::default(),
        )
        .expect_err("must fail");
        assert_eq!(err.field_errors()[0].field, "custom");
    }

    #[test]
    fn search_terms_are_words() {
        assert_eq!(
            search_terms("Ana@Example.com  ana"),
            ["ana", "example", "com"]
        );
        assert!(search_terms("\"*) OR (").iter().all(|t| t == "or"));
        assert!(search_terms("!!!").is_empty());
    }
}
