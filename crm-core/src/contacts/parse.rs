//! The edge of the contact and organization services: raw input becomes typed,
//! valid values here, every field error collected at once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::model::{
    Contact, ContactPatch, ContactQuery, NewContact, NewOrganization, Organization,
    OrganizationPatch, OrganizationQuery,
};
use crate::error::Errors;
use crate::ids::{ContactId, OrganizationId, UserId, WorkspaceId};
use crate::leads::parse::{custom, required_text, search_terms, tags, text, LeadRules};
use crate::leads::{Email, Phone, SortField, NOTES_MAX};
use crate::Result;

/// Longest first or last name, in characters.
pub const PERSON_NAME_MAX: usize = 100;
/// Most emails, and most phones, of a contact.
pub const CONTACT_POINTS_MAX: usize = 10;
/// Most social links of a contact.
pub const SOCIAL_MAX: usize = 10;
const TITLE_MAX: usize = 200;
const ADDRESS_MAX: usize = 500;
const URL_MAX: usize = 500;
const INDUSTRY_MAX: usize = 100;
const SIZE_MAX: usize = 64;
const ORG_NAME_MAX: usize = 200;

/// The email list of a contact: each parsed, duplicates (case-insensitively) dropped.
fn emails(e: &mut Errors, field: &str, input: &[String]) -> Vec<Email> {
    if input.len() > CONTACT_POINTS_MAX {
        e.add(field, format!("at most {CONTACT_POINTS_MAX} emails"));
        return Vec::new();
    }
    let mut out: Vec<Email> = Vec::new();
    for (i, v) in input.iter().enumerate() {
        if let Some(m) = e.take(&format!("{field}[{i}]"), Email::parse(v.trim())) {
            if !out.iter().any(|o| o.key() == m.key()) {
                out.push(m);
            }
        }
    }
    out
}

fn phones(e: &mut Errors, field: &str, input: &[String], rules: &LeadRules) -> Vec<Phone> {
    if input.len() > CONTACT_POINTS_MAX {
        e.add(field, format!("at most {CONTACT_POINTS_MAX} phones"));
        return Vec::new();
    }
    let mut out: Vec<Phone> = Vec::new();
    for (i, v) in input.iter().enumerate() {
        let parsed = Phone::parse_with_default(v.trim(), rules.default_country_code);
        if let Some(p) = e.take(&format!("{field}[{i}]"), parsed) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn social(e: &mut Errors, input: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if input.len() > SOCIAL_MAX {
        e.add("social", format!("at most {SOCIAL_MAX} links"));
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    for (network, url) in input {
        let good_name = (1..=32).contains(&network.len())
            && network
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !good_name {
            e.add(
                "social",
                "network names are 1-32 lower-case letters, digits or _",
            );
            continue;
        }
        let field = format!("social.{network}");
        let url = url.trim();
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| u.scheme() == "https" && u.host_str().is_some() && u.username().is_empty());
        if url.chars().count() > URL_MAX || parsed.is_none() {
            e.add(
                field,
                format!("must be an https URL of at most {URL_MAX} characters"),
            );
            continue;
        }
        out.insert(network, url.to_owned());
    }
    out
}

/// A domain as stored: lower case, the host of a URL, without `www.`; ASCII labels
/// of letters, digits and `-`, at least two of them.
pub(crate) fn domain(e: &mut Errors, v: Option<&str>) -> Option<String> {
    let v = v.map(str::trim).filter(|v| !v.is_empty())?;
    let mut d = v.to_ascii_lowercase();
    for scheme in ["https://", "http://"] {
        if let Some(rest) = d.strip_prefix(scheme) {
            d = rest.to_owned();
        }
    }
    if let Some(end) = d.find(['/', '?', '#']) {
        d.truncate(end);
    }
    let d = d.trim_end_matches('.');
    let d = d.strip_prefix("www.").unwrap_or(d);
    let labels: Vec<&str> = d.split('.').collect();
    let good = d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if good {
        Some(d.to_owned())
    } else {
        e.add(
            "domain",
            "must be a domain name such as acme.example (punycode for international names)",
        );
        None
    }
}

/// The shown name of a person.
pub(crate) fn full_name(first: &str, last: Option<&str>) -> String {
    match last {
        Some(l) => format!("{first} {l}"),
        None => first.to_owned(),
    }
}

/// A name folded for matching (lower case, words separated by one space).
pub(crate) fn name_key(name: &str) -> String {
    name.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn new_contact(
    input: NewContact,
    ws: WorkspaceId,
    now: DateTime<Utc>,
    rules: &LeadRules,
) -> Result<Contact> {
    let mut e = Errors::default();
    let first_name = required_text(&mut e, "first_name", &input.first_name, PERSON_NAME_MAX);
    let last_name = text(
        &mut e,
        "last_name",
        input.last_name.as_deref(),
        PERSON_NAME_MAX,
    );
    let c = Contact {
        id: ContactId::new(),
        workspace_id: ws,
        name: full_name(
            first_name.as_deref().unwrap_or_default(),
            last_name.as_deref(),
        ),
        first_name: first_name.unwrap_or_default(),
        last_name,
        emails: emails(&mut e, "emails", &input.emails),
        phones: phones(&mut e, "phones", &input.phones, rules),
        title: text(&mut e, "title", input.title.as_deref(), TITLE_MAX),
        address: text(&mut e, "address", input.address.as_deref(), ADDRESS_MAX),
        social: social(&mut e, input.social),
        organization_id: input.organization_id,
        owner_id: input.owner_id,
        notes: text(&mut e, "notes", input.notes.as_deref(), NOTES_MAX),
        tags: tags(&mut e, "tags", &input.tags),
        custom: custom(&mut e, input.custom),
        last_contacted_at: input.last_contacted_at,
        created_at: now,
        updated_at: now,
    };
    e.finish()?;
    Ok(c)
}

/// A checked contact patch; `apply` gives the contact after it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContactChange {
    first_name: Option<String>,
    last_name: Option<Option<String>>,
    emails: Option<Vec<Email>>,
    phones: Option<Vec<Phone>>,
    title: Option<Option<String>>,
    address: Option<Option<String>>,
    social: Option<BTreeMap<String, String>>,
    pub(crate) organization_id: Option<Option<OrganizationId>>,
    pub(crate) owner_id: Option<Option<UserId>>,
    notes: Option<Option<String>>,
    tags: Option<Vec<String>>,
    custom: Option<Map<String, Value>>,
    last_contacted_at: Option<Option<DateTime<Utc>>>,
}

pub(crate) fn contact_patch(input: ContactPatch, rules: &LeadRules) -> Result<ContactChange> {
    let mut e = Errors::default();
    let p = ContactChange {
        first_name: input
            .first_name
            .and_then(|n| required_text(&mut e, "first_name", &n, PERSON_NAME_MAX)),
        last_name: input
            .last_name
            .map(|v| text(&mut e, "last_name", v.as_deref(), PERSON_NAME_MAX)),
        emails: input.emails.map(|v| emails(&mut e, "emails", &v)),
        phones: input.phones.map(|v| phones(&mut e, "phones", &v, rules)),
        title: input
            .title
            .map(|v| text(&mut e, "title", v.as_deref(), TITLE_MAX)),
        address: input
            .address
            .map(|v| text(&mut e, "address", v.as_deref(), ADDRESS_MAX)),
        social: input.social.map(|v| social(&mut e, v)),
        organization_id: input.organization_id,
        owner_id: input.owner_id,
        notes: input
            .notes
            .map(|v| text(&mut e, "notes", v.as_deref(), NOTES_MAX)),
        tags: input.tags.map(|t| tags(&mut e, "tags", &t)),
        custom: input.custom.map(|c| custom(&mut e, Some(c))),
        last_contacted_at: input.last_contacted_at,
    };
    e.finish()?;
    Ok(p)
}

impl ContactChange {
    /// The contact after this change; timestamps are untouched.
    pub(crate) fn apply(self, old: &Contact) -> Contact {
        let mut new = old.clone();
        macro_rules! set {
            ($($f:ident),+) => {$( if let Some(v) = self.$f { new.$f = v; } )+};
        }
        set!(
            first_name,
            last_name,
            emails,
            phones,
            title,
            address,
            social,
            organization_id,
            owner_id,
            notes,
            tags,
            custom,
            last_contacted_at
        );
        new.name = full_name(&new.first_name, new.last_name.as_deref());
        new
    }
}

/// The names of the fields that differ between two states of a contact.
pub(crate) fn contact_diff(old: &Contact, new: &Contact) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! cmp {
        ($($f:ident),+) => {$( if old.$f != new.$f { changed.push(stringify!($f)); } )+};
    }
    cmp!(
        first_name,
        last_name,
        emails,
        phones,
        title,
        address,
        social,
        organization_id,
        owner_id,
        notes,
        tags,
        custom,
        last_contacted_at
    );
    changed
}

pub(crate) fn new_organization(
    input: NewOrganization,
    ws: WorkspaceId,
    now: DateTime<Utc>,
) -> Result<Organization> {
    let mut e = Errors::default();
    let o = Organization {
        id: OrganizationId::new(),
        workspace_id: ws,
        name: required_text(&mut e, "name", &input.name, ORG_NAME_MAX).unwrap_or_default(),
        domain: domain(&mut e, input.domain.as_deref()),
        industry: text(&mut e, "industry", input.industry.as_deref(), INDUSTRY_MAX),
        size: text(&mut e, "size", input.size.as_deref(), SIZE_MAX),
        address: text(&mut e, "address", input.address.as_deref(), ADDRESS_MAX),
        owner_id: input.owner_id,
        created_at: now,
        updated_at: now,
    };
    e.finish()?;
    Ok(o)
}

/// A checked organization patch.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrganizationChange {
    name: Option<String>,
    domain: Option<Option<String>>,
    industry: Option<Option<String>>,
    size: Option<Option<String>>,
    address: Option<Option<String>>,
    pub(crate) owner_id: Option<Option<UserId>>,
}

pub(crate) fn organization_patch(input: OrganizationPatch) -> Result<OrganizationChange> {
    let mut e = Errors::default();
    let p = OrganizationChange {
        name: input
            .name
            .and_then(|n| required_text(&mut e, "name", &n, ORG_NAME_MAX)),
        domain: input.domain.map(|v| domain(&mut e, v.as_deref())),
        industry: input
            .industry
            .map(|v| text(&mut e, "industry", v.as_deref(), INDUSTRY_MAX)),
        size: input
            .size
            .map(|v| text(&mut e, "size", v.as_deref(), SIZE_MAX)),
        address: input
            .address
            .map(|v| text(&mut e, "address", v.as_deref(), ADDRESS_MAX)),
        owner_id: input.owner_id,
    };
    e.finish()?;
    Ok(p)
}

impl OrganizationChange {
    /// The organization after this change; timestamps are untouched.
    pub(crate) fn apply(self, old: &Organization) -> Organization {
        let mut new = old.clone();
        macro_rules! set {
            ($($f:ident),+) => {$( if let Some(v) = self.$f { new.$f = v; } )+};
        }
        set!(name, domain, industry, size, address, owner_id);
        new
    }
}

/// The names of the fields that differ between two states of an organization.
pub(crate) fn organization_diff(old: &Organization, new: &Organization) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! cmp {
        ($($f:ident),+) => {$( if old.$f != new.$f { changed.push(stringify!($f)); } )+};
    }
    cmp!(name, domain, industry, size, address, owner_id);
    changed
}

/// A checked listing of contacts or organizations.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub terms: Vec<String>,
    pub owner_id: Option<UserId>,
    pub organization_id: Option<OrganizationId>,
    pub tags: Vec<String>,
    pub limit: u32,
}

impl Listing {
    /// A digest of the filters (and the entity), so a cursor cannot be replayed
    /// against other filters or another listing.
    pub(crate) fn fingerprint(&self, entity: &str) -> String {
        format!(
            "{entity}|{:?}|{:?}|{:?}|{:?}",
            self.terms, self.owner_id, self.organization_id, self.tags
        )
    }
}

fn listing(
    e: &mut Errors,
    q: Option<&str>,
    sort: SortField,
    limit: Option<u32>,
) -> (Vec<String>, u32) {
    let mut terms = Vec::new();
    if let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) {
        if q.chars().count() > 200 {
            e.add("q", "must be at most 200 characters");
        } else {
            terms = search_terms(q);
            if terms.is_empty() {
                e.add("q", "must contain a letter or digit");
            }
        }
    }
    if sort == SortField::Status {
        e.add("sort", "must be created_at, updated_at or name");
    }
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        e.add("limit", "must be between 1 and 100");
    }
    (terms, limit)
}

pub(crate) fn contact_query(input: &ContactQuery) -> Result<Listing> {
    let mut e = Errors::default();
    let (terms, limit) = listing(&mut e, input.q.as_deref(), input.sort, input.limit);
    let tags = tags(&mut e, "tags", &input.tags);
    e.finish()?;
    Ok(Listing {
        terms,
        owner_id: input.owner_id,
        organization_id: input.organization_id,
        tags,
        limit,
    })
}

pub(crate) fn organization_query(input: &OrganizationQuery) -> Result<Listing> {
    let mut e = Errors::default();
    let (terms, limit) = listing(&mut e, input.q.as_deref(), input.sort, input.limit);
    e.finish()?;
    Ok(Listing {
        terms,
        owner_id: input.owner_id,
        organization_id: None,
        tags: Vec::new(),
        limit,
    })
}

/// Mailbox providers whose domain says nothing about a person's company: a lead
/// writing from one is not matched to an organization by its email's domain.
const FREE_MAIL: &[&str] = &[
    "aol.com",
    "gmail.com",
    "gmx.com",
    "gmx.de",
    "googlemail.com",
    "hotmail.com",
    "icloud.com",
    "live.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "outlook.com",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "web.de",
    "yahoo.com",
    "yandex.ru",
    "zoho.com",
];

/// The domain of a company mailbox (none for a free-mail provider).
pub(crate) fn company_domain(email: &Email) -> Option<String> {
    let key = email.key();
    let (_, host) = key.rsplit_once('@')?;
    // A domain an organization could store (ASCII labels): a Unicode one is left
    // out rather than stored in a form `domain` refuses.
    let host = domain(&mut Errors::default(), Some(host))?;
    let free = FREE_MAIL.contains(&host.as_str())
        || host.starts_with("yahoo.")
        || host.starts_with("hotmail.")
        || host.starts_with("outlook.")
        || host.starts_with("live.");
    (!free).then_some(host)
}

/// First and last name from a lead's one name: the first word, and the rest, each
/// cut to [`PERSON_NAME_MAX`] characters (a lead's name may be longer).
pub(crate) fn split_name(name: &str) -> (String, Option<String>) {
    let cut = |s: &str| {
        let s: String = s.chars().take(PERSON_NAME_MAX).collect();
        s.trim_end().to_owned()
    };
    let name = name.trim();
    match name.split_once(char::is_whitespace) {
        Some((first, rest)) if !rest.trim().is_empty() => (cut(first), Some(cut(rest.trim()))),
        _ => (cut(name), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_hosts_in_lower_case() {
        let d = |v: &str| {
            let mut e = Errors::default();
            let out = domain(&mut e, Some(v));
            (out, e.finish().is_err())
        };
        assert_eq!(
            d("https://www.Acme.example/about"),
            (Some("acme.example".into()), false)
        );
        assert_eq!(d("acme.co.uk."), (Some("acme.co.uk".into()), false));
        for bad in [
            "acme",
            "-a.example",
            "a..example",
            "ácme.example",
            "a b.example",
            "x.",
            ".",
        ] {
            assert_eq!(d(bad), (None, true), "{bad:?}");
        }
    }

    #[test]
    fn company_domains_skip_free_mail() {
        let e = |v: &str| Email::parse(v).expect("valid");
        assert_eq!(
            company_domain(&e("ana@Acme.example")),
            Some("acme.example".into())
        );
        assert_eq!(company_domain(&e("ana@gmail.com")), None);
        assert_eq!(company_domain(&e("ana@yahoo.es")), None);
        assert_eq!(company_domain(&e("ana@ácme.example")), None, "not ASCII");
    }

    #[test]
    fn names_split_at_the_first_space() {
        assert_eq!(
            split_name(" Ana  López García "),
            ("Ana".into(), Some("López García".into()))
        );
        assert_eq!(split_name("Ana"), ("Ana".into(), None));
        let long = format!("{} {}", "á".repeat(150), "b".repeat(150));
        let (first, last) = split_name(&long);
        assert_eq!(first.chars().count(), PERSON_NAME_MAX);
        assert_eq!(last.map(|l| l.chars().count()), Some(PERSON_NAME_MAX));
        assert_eq!(name_key("  Acme   SL "), "acme sl");
    }

    #[test]
    fn contact_input_is_checked_field_by_field() {
        let mut social = BTreeMap::new();
        social.insert("linkedin".into(), "javascript:alert(1)".into());
        social.insert("Bad Name".into(), "https://x.example".into());
        let err = new_contact(
            NewContact {
                first_name: " ".into(),
                emails: vec!["ana@x.example".into(), "nope".into()],
                phones: vec!["12".into()],
                social,
                ..Default::default()
            },
            WorkspaceId::DEFAULT,
            Utc::now(),
            &LeadRules::default(),
        )
        .expect_err("must fail");
        let fields: Vec<&str> = err
            .field_errors()
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "first_name",
                "emails[1]",
                "phones[0]",
                "social",
                "social.linkedin"
            ]
        );
    }
}
