//! Duplicates and merge: which leads look like one person, and how several leads
//! become one.
//!
//! Email and phone are unique per workspace (the email case-insensitively, the phone
//! in E.164), so two leads never share either as stored. Duplicates are found by
//! what uniqueness does not catch: the same mailbox written two ways (`+tags`, and
//! dots in a Gmail address: `ana.lopez+web@gmail.com` is `analopez@gmail.com`), and
//! the same name at the same company. Archived leads are left out of the search.
//!
//! A merge keeps the target's values and fills its blanks from the absorbed leads
//! (in the order given); `prefer` takes a field from a named lead instead. Tags are
//! joined (the target's first, at most 20), custom fields joined (the target's win).
//! The absorbed leads' timelines move to the target, which gets a `merged` entry
//! naming them; the absorbed leads are deleted; `lead.merged` carries their last
//! state. All in one transaction; a dry run computes the same and writes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::Lead;
use super::parse::{CUSTOM_MAX_BYTES, TAGS_MAX};
use crate::error::Errors;
use crate::ids::LeadId;
use crate::Result;

/// Why leads were grouped as duplicates.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateReason {
    /// The same mailbox: equal once `+tags` (and, for Gmail, dots) are removed.
    Email,
    /// The same name (case and spacing aside) at the same company.
    NameCompany,
}

/// Leads that look like one person.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateGroup {
    /// Why they were grouped.
    pub reason: DuplicateReason,
    /// How likely they are one person, in [0, 1]: 0.95 for one mailbox, 0.8 for a
    /// name at a company.
    pub score: f64,
    /// How many leads the group has.
    pub size: u64,
    /// The oldest [`GROUP_LEADS_MAX`] of them, oldest first (the oldest is a good
    /// merge target).
    pub leads: Vec<Lead>,
}

/// The leads a [`DuplicateGroup`] shows at most.
pub const GROUP_LEADS_MAX: usize = 20;

/// The fields `prefer` may take from a named lead.
pub const PREFERABLE: &[&str] = &[
    "name",
    "email",
    "phone",
    "company",
    "budget",
    "project_type",
    "message",
    "source",
    "status",
    "notes",
    "owner_id",
];

/// Input of [`crate::Leads::merge`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"from": ["0190a5d4-8c3b-7d1e-9f00-000000000002"], "dry_run": true, "prefer": {"phone": "0190a5d4-8c3b-7d1e-9f00-000000000002"}})))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MergeInput {
    /// The leads to absorb into the target: 1–20, none the target, all in its
    /// workspace, none archived.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<uuid::Uuid>, min_items = 1, max_items = 20))]
    pub from: Vec<LeadId>,
    /// Compute the result and write nothing.
    pub dry_run: bool,
    /// A field to take from a given lead (the target or one of `from`) rather than
    /// by the rule (the target's value, else the first absorbed lead's).
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, uuid::Uuid>))]
    pub prefer: BTreeMap<String, LeadId>,
}

/// What a merge did (or, in a dry run, would do).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merged {
    /// The target as it is (or would be) after the merge.
    pub lead: Lead,
    /// The absorbed leads' ids (deleted, or to be).
    pub absorbed: Vec<LeadId>,
    /// Timeline entries moved to the target.
    pub moved_activities: u64,
    /// Whether nothing was written.
    pub dry_run: bool,
}

/// The mailbox an address reaches: lower-cased, without a `+tag`, and without dots
/// in the local part at Gmail.
pub(crate) fn mailbox(email: &str) -> String {
    let lower = email.trim().to_lowercase();
    let Some((local, domain)) = lower.rsplit_once('@') else {
        return lower;
    };
    // A local part that is only a tag (`+a@x`) is kept whole.
    let local = match local.split_once('+') {
        Some((base, _)) if !base.is_empty() => base,
        _ => local,
    };
    let local = if matches!(domain, "gmail.com" | "googlemail.com") {
        local.replace('.', "")
    } else {
        local.to_owned()
    };
    let domain = if domain == "googlemail.com" {
        "gmail.com"
    } else {
        domain
    };
    format!("{local}@{domain}")
}

/// A name or company as compared: lower case, words single-spaced.
pub(crate) fn folded(text: &str) -> String {
    text.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a merge's input against its target: 1–20 distinct leads other than the
/// target, and `prefer` naming known fields and leads of the merge.
pub(crate) fn check(target: LeadId, input: &MergeInput) -> Result<Vec<LeadId>> {
    let mut e = Errors::default();
    let mut from: Vec<LeadId> = Vec::new();
    for id in &input.from {
        if !from.contains(id) {
            from.push(*id);
        }
    }
    if from.is_empty() {
        e.add("from", "name at least one lead to merge");
    } else if from.len() > 20 {
        e.add("from", "at most 20 leads merge at once");
    }
    if from.contains(&target) {
        e.add("from", "a lead cannot be merged into itself");
    }
    for (field, id) in &input.prefer {
        if !PREFERABLE.contains(&field.as_str()) {
            e.add(
                format!("prefer.{field}"),
                format!(
                    "is not a field a merge can prefer ({})",
                    PREFERABLE.join(", ")
                ),
            );
        } else if *id != target && !from.contains(id) {
            e.add(
                format!("prefer.{field}"),
                "must name the target or one of the leads in `from`",
            );
        }
    }
    e.finish()?;
    Ok(from)
}

/// The target after absorbing `absorbed` (in order), by the rules of the module.
/// Refused (nothing written): a preferred field the named lead leaves blank (it
/// would erase the target's value with the absorbed lead's nothing), and custom
/// fields that together pass [`CUSTOM_MAX_BYTES`].
pub(crate) fn combine(
    target: &Lead,
    absorbed: &[Lead],
    prefer: &BTreeMap<String, LeadId>,
) -> Result<Lead> {
    let mut out = target.clone();
    let by_id = |id: &LeadId| -> &Lead { absorbed.iter().find(|l| l.id == *id).unwrap_or(target) };
    // Blanks filled from the absorbed leads, in order.
    for l in absorbed {
        macro_rules! fill {
            ($($f:ident),+) => { $( if out.$f.is_none() { out.$f = l.$f.clone(); } )+ };
        }
        fill!(
            email,
            phone,
            company,
            budget,
            project_type,
            message,
            source,
            notes,
            raw_input,
            owner_id,
            contact_id
        );
        for t in &l.tags {
            if out.tags.len() < TAGS_MAX && !out.tags.contains(t) {
                out.tags.push(t.clone());
            }
        }
        for (k, v) in &l.custom {
            out.custom.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    // Then what `prefer` names.
    let mut e = Errors::default();
    for (field, id) in prefer {
        let from = by_id(id);
        let mut take = |value: Option<String>, slot: &mut Option<String>| match value {
            Some(v) => *slot = Some(v),
            None => e.add(
                format!("prefer.{field}"),
                "the lead named leaves it blank: prefer a lead that has one",
            ),
        };
        match field.as_str() {
            "name" => out.name = from.name.clone(),
            "status" => out.status = from.status,
            "email" => {
                if let Some(v) = &from.email {
                    out.email = Some(v.clone());
                } else {
                    take(None, &mut None);
                }
            }
            "phone" => {
                if let Some(v) = &from.phone {
                    out.phone = Some(v.clone());
                } else {
                    take(None, &mut None);
                }
            }
            "owner_id" => {
                if let Some(v) = from.owner_id {
                    out.owner_id = Some(v);
                } else {
                    take(None, &mut None);
                }
            }
            "company" => take(from.company.clone(), &mut out.company),
            "budget" => take(from.budget.clone(), &mut out.budget),
            "project_type" => take(from.project_type.clone(), &mut out.project_type),
            "message" => take(from.message.clone(), &mut out.message),
            "source" => take(from.source.clone(), &mut out.source),
            "notes" => take(from.notes.clone(), &mut out.notes),
            _ => {}
        }
    }
    if serde_json::to_string(&out.custom).map_or(true, |j| j.len() > CUSTOM_MAX_BYTES) {
        e.add(
            "custom",
            format!(
                "the leads' custom fields together pass {CUSTOM_MAX_BYTES} bytes: trim them first"
            ),
        );
    }
    e.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{folded, mailbox};

    #[test]
    fn mailboxes_ignore_tags_and_gmail_dots() {
        assert_eq!(mailbox("Ana.Lopez+web@Gmail.com"), "analopez@gmail.com");
        assert_eq!(mailbox("ana.lopez@googlemail.com"), "analopez@gmail.com");
        assert_eq!(mailbox("ana.lopez+x@example.com"), "ana.lopez@example.com");
        assert_eq!(mailbox("no-at-sign"), "no-at-sign");
        assert_eq!(mailbox("+a@x.com"), "+a@x.com");
    }

    #[test]
    fn names_fold_case_and_spacing() {
        assert_eq!(folded("  Ana   LÓPEZ "), "ana lópez");
        assert_eq!(folded(""), "");
    }
}
