//! The lead rules the store applies inside its transactions, as pure functions (so
//! they are tested without a database): which known lead an input is, what a
//! capture merges into it, and which fields a change touched (the `changed` list of
//! `lead.updated`).

use super::parse::{Fields, CUSTOM_MAX_BYTES, TAGS_MAX};
use super::{Email, Lead, Phone};

/// The known lead an input with this email and phone is, among the leads holding
/// either (`matches`): the one with the email (case-insensitively) first, else the
/// one with the phone.
pub(crate) fn known<'a>(
    matches: &'a [Lead],
    email: Option<&Email>,
    phone: Option<&Phone>,
) -> Option<&'a Lead> {
    let key = email.map(Email::key);
    matches
        .iter()
        .find(|m| key.is_some() && m.email.as_ref().map(Email::key) == key)
        .or_else(|| {
            matches
                .iter()
                .find(|m| m.phone.is_some() && m.phone.as_ref() == phone)
        })
}

/// The names of the fields that differ between two states of a lead.
pub(crate) fn diff(old: &Lead, new: &Lead) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! cmp {
        ($($f:ident),+) => {$( if old.$f != new.$f { changed.push(stringify!($f)); } )+};
    }
    cmp!(
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
        raw_input,
        owner_id,
        contact_id
    );
    changed
}

/// The state of `old` after a capture of `input`: blanks are filled, tags and custom
/// fields are added to, and nothing `old` already has is overwritten. An email or
/// phone that another lead (in `matches`) holds is not taken over.
pub(crate) fn merge(old: &Lead, input: Fields, matches: &[Lead]) -> Lead {
    let mut new = old.clone();
    let held_by_other = |f: &dyn Fn(&Lead) -> bool| matches.iter().any(|m| m.id != old.id && f(m));
    if new.email.is_none() {
        let key = input.email.as_ref().map(Email::key);
        if !held_by_other(&|m| m.email.as_ref().map(Email::key) == key) {
            new.email = input.email;
        }
    }
    if new.phone.is_none() && !held_by_other(&|m| m.phone.is_some() && m.phone == input.phone) {
        new.phone = input.phone;
    }
    macro_rules! fill {
        ($($f:ident),+) => {$( if new.$f.is_none() { new.$f = input.$f; } )+};
    }
    fill!(
        company,
        budget,
        project_type,
        message,
        source,
        notes,
        raw_input,
        owner_id
    );
    for tag in input.tags {
        if new.tags.len() < TAGS_MAX && !new.tags.contains(&tag) {
            new.tags.push(tag);
        }
    }
    let mut custom = new.custom.clone();
    for (k, v) in input.custom {
        custom.entry(k).or_insert(v);
    }
    if serde_json::to_string(&custom).is_ok_and(|s| s.len() <= CUSTOM_MAX_BYTES) {
        new.custom = custom;
    }
    new
}

/// The state of `old` after an import row (`input`): its non-empty cells are set
/// (the name and status only when the row had them), tags are added (up to
/// [`TAGS_MAX`]), custom fields set key by key. Fails when the custom fields would
/// pass [`CUSTOM_MAX_BYTES`].
pub(crate) fn import_onto(
    old: &Lead,
    input: Fields,
    name_given: bool,
    status_given: bool,
) -> Result<Lead, String> {
    let mut new = old.clone();
    if name_given {
        new.name = input.name;
    }
    if status_given {
        new.status = input.status;
    }
    macro_rules! set {
        ($($f:ident),+) => {$( if input.$f.is_some() { new.$f = input.$f; } )+};
    }
    // The same address written in another case is the same email: kept as stored.
    if let Some(email) = input.email {
        if new.email.as_ref().map(Email::key) != Some(email.key()) {
            new.email = Some(email);
        }
    }
    set!(phone, company, budget, project_type, message, source, notes);
    for tag in input.tags {
        if new.tags.len() < TAGS_MAX && !new.tags.contains(&tag) {
            new.tags.push(tag);
        }
    }
    if !input.custom.is_empty() {
        new.custom.extend(input.custom);
        if !serde_json::to_string(&new.custom).is_ok_and(|s| s.len() <= CUSTOM_MAX_BYTES) {
            return Err(format!(
                "the lead's custom fields with this row's would pass {CUSTOM_MAX_BYTES} bytes"
            ));
        }
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WorkspaceId;
    use crate::leads::LeadStatus;
    use chrono::Utc;
    use serde_json::{json, Map};

    fn fields(name: &str, email: Option<&str>, phone: Option<&str>) -> Fields {
        Fields {
            name: name.into(),
            email: email.map(|e| Email::parse(e).expect("email")),
            phone: phone.map(|p| Phone::parse(p).expect("phone")),
            company: None,
            budget: None,
            project_type: None,
            message: None,
            source: None,
            status: LeadStatus::New,
            notes: None,
            tags: Vec::new(),
            custom: Map::new(),
            raw_input: None,
            ai_parsed: false,
            owner_id: None,
        }
    }

    fn lead(name: &str, email: Option<&str>, phone: Option<&str>) -> Lead {
        fields(name, email, phone).into_lead(WorkspaceId::DEFAULT, Utc::now())
    }

    #[test]
    fn the_email_decides_before_the_phone() {
        let by_phone = lead("P", None, Some("+34600111222"));
        let by_email = lead("E", Some("ana@example.com"), None);
        let all = [by_phone.clone(), by_email.clone()];
        let email = Email::parse("ANA@example.com").expect("email");
        let phone = Phone::parse("+34600111222").expect("phone");
        assert_eq!(
            known(&all, Some(&email), Some(&phone)).map(|l| l.id),
            Some(by_email.id)
        );
        assert_eq!(
            known(&all, None, Some(&phone)).map(|l| l.id),
            Some(by_phone.id)
        );
        let other = Phone::parse("+34600999999").expect("phone");
        assert!(known(&all, None, Some(&other)).is_none());
        assert!(known(&all, None, None).is_none());
    }

    #[test]
    fn a_merge_fills_blanks_and_overwrites_nothing() {
        let mut old = lead("Ana", Some("ana@example.com"), None);
        old.company = Some("Acme".into());
        old.tags = vec!["vip".into()];
        old.custom.insert("size".into(), json!(10));
        let mut input = fields(
            "Someone Else",
            Some("ana@example.com"),
            Some("+34600111222"),
        );
        input.company = Some("Evil Corp".into());
        input.message = Some("Hello".into());
        input.tags = vec!["vip".into(), "new".into()];
        input.custom.insert("size".into(), json!(99));
        input.custom.insert("city".into(), json!("Madrid"));
        let new = merge(&old, input, std::slice::from_ref(&old));
        assert_eq!(new.name, "Ana");
        assert_eq!(new.company.as_deref(), Some("Acme"));
        assert_eq!(new.message.as_deref(), Some("Hello"));
        assert_eq!(new.phone.as_ref().map(Phone::as_str), Some("+34600111222"));
        assert_eq!(new.tags, ["vip", "new"]);
        assert_eq!(new.custom["size"], json!(10));
        assert_eq!(new.custom["city"], json!("Madrid"));
        assert_eq!(diff(&old, &new), ["phone", "message", "tags", "custom"]);
    }

    #[test]
    fn a_merge_takes_no_contact_another_lead_holds() {
        let old = lead("Ana", Some("ana@example.com"), None);
        let other = lead("Bo", Some("bo@example.com"), Some("+34600111222"));
        let input = fields("Ana", Some("ana@example.com"), Some("+34600111222"));
        let new = merge(&old, input, &[old.clone(), other]);
        assert_eq!(new.phone, None, "the phone is another lead's");
        assert!(diff(&old, &new).is_empty());
    }

    #[test]
    fn a_merge_keeps_the_tag_and_custom_limits() {
        let mut old = lead("Ana", Some("ana@example.com"), None);
        old.tags = (0..TAGS_MAX).map(|i| format!("t{i}")).collect();
        let mut input = fields("Ana", Some("ana@example.com"), None);
        input.tags = vec!["one-more".into()];
        input
            .custom
            .insert("big".into(), json!("x".repeat(CUSTOM_MAX_BYTES)));
        let new = merge(&old, input, std::slice::from_ref(&old));
        assert_eq!(new.tags.len(), TAGS_MAX);
        assert!(
            new.custom.is_empty(),
            "custom fields past 16 KiB are not merged"
        );
    }

    #[test]
    fn diff_names_each_changed_field_once() {
        let old = lead("Ana", Some("ana@example.com"), None);
        assert!(diff(&old, &old.clone()).is_empty());
        let mut new = old.clone();
        new.status = LeadStatus::Won;
        new.notes = Some("Signed".into());
        new.updated_at = Utc::now();
        assert_eq!(diff(&old, &new), ["status", "notes"]);
    }
}
