//! Domain events: the outbox.
//!
//! Every change to a lead writes its event row in the same transaction as the change
//! itself, so an event exists exactly when its change does. Webhook delivery and
//! notifications fan out from these rows. The payload is what receivers get:
//! `{"type", "timestamp", "data"}`, where `data` holds the `lead` (its state after the
//! change, or before a delete) and, per type, `changed` (field names),
//! `old_status`/`new_status`, or the `activity` added.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::ids::{EventId, LeadId, WorkspaceId};
use crate::macros::string_enum;

string_enum!(
    /// What happened.
    pub EventType, "event type" {
        /// A lead was created (directly or by `capture`).
        LeadCreated => "lead.created",
        /// Fields of a lead changed; `data.changed` names them.
        LeadUpdated => "lead.updated",
        /// The status changed; also reported as `lead.updated`.
        LeadStatusChanged => "lead.status_changed",
        /// A lead was deleted; `data.lead` is its last state.
        LeadDeleted => "lead.deleted",
        /// A lead was archived (hidden from listings); `data.lead` as it is now.
        LeadArchived => "lead.archived",
        /// An archived lead was restored; `data.lead` as it is now.
        LeadRestored => "lead.restored",
        /// Leads were merged into this one: `data.lead` as it is now, `data.absorbed`
        /// their ids, `data.absorbed_leads` their last state (they are deleted).
        LeadMerged => "lead.merged",
        /// An activity was added by a caller (or a form submission by `capture`).
        LeadActivityAdded => "lead.activity_added",
        /// A CSV import wrote leads ([`crate::Leads::import`]): one event per import,
        /// `data` holds its counts (`import_id`, `rows`, `created`, `updated`,
        /// `skipped`, `failed`). A workspace event: `lead.*` does not cover it,
        /// `leads.*` and `*` do.
        LeadsImported => "leads.imported",
        /// A lead was converted into a contact ([`crate::Leads::convert`]):
        /// `data.lead` as it is now (linked), `data.contact`, `data.organization`
        /// (or `null`), `data.contact_created` and `data.organization_created`.
        LeadConverted => "lead.converted",
        /// A contact was created; `data.contact`.
        ContactCreated => "contact.created",
        /// Fields of a contact changed; `data.contact`, `data.changed` names them.
        ContactUpdated => "contact.updated",
        /// A contact was deleted; `data.contact` is its last state.
        ContactDeleted => "contact.deleted",
        /// An organization was created; `data.organization`.
        OrganizationCreated => "organization.created",
        /// Fields of an organization changed; `data.organization`, `data.changed`.
        OrganizationUpdated => "organization.updated",
        /// An organization was deleted (its contacts stay, unlinked);
        /// `data.organization` is its last state.
        OrganizationDeleted => "organization.deleted",
        /// A file was attached to a lead or a contact; `data.attachment` (its
        /// metadata: `lead_id` or `contact_id`, name, size, type, SHA-256).
        AttachmentAdded => "attachment.added",
        /// A file was removed from a lead or a contact; `data.attachment` as it was.
        /// Deleting the lead or contact removes its files without this event.
        AttachmentRemoved => "attachment.removed",
        /// A sample event sent by a webhook test-send; never fanned out.
        WebhookTest => "webhook.test",
    }
);

impl EventType {
    /// Whether an endpoint or channel with this subscription filter gets this event
    /// (the fan-out rule of the outbox).
    pub(crate) fn subscribed(self, filter: &[String]) -> bool {
        filter.iter().any(|f| self.matches(f))
    }

    /// Whether a subscription filter (`lead.created`, `lead.*` or `*`) covers this type.
    pub fn matches(self, filter: &str) -> bool {
        let name = self.as_str();
        filter == "*"
            || filter == name
            || filter
                .strip_suffix(".*")
                .is_some_and(|prefix| name.split_once('.').is_some_and(|(p, _)| p == prefix))
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Its id (UUIDv7), used as the webhook message id.
    pub id: EventId,
    /// The workspace it happened in.
    pub workspace_id: WorkspaceId,
    /// What happened.
    pub event_type: EventType,
    /// The lead it concerns.
    pub lead_id: Option<LeadId>,
    /// The payload receivers get: `{"type", "timestamp", "data"}`.
    pub payload: Value,
    /// When it happened (UTC).
    pub created_at: DateTime<Utc>,
}

impl Event {
    pub(crate) fn new(
        workspace_id: WorkspaceId,
        event_type: EventType,
        lead_id: Option<LeadId>,
        data: Value,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: EventId::new(),
            workspace_id,
            event_type,
            lead_id,
            payload: json!({
                "type": event_type.as_str(),
                "timestamp": now.to_rfc3339_opts(SecondsFormat::Micros, true),
                "data": data,
            }),
            created_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_by_name_prefix_or_star() {
        let t = EventType::LeadStatusChanged;
        assert!(t.matches("*"));
        assert!(t.matches("lead.*"));
        assert!(t.matches("lead.status_changed"));
        assert!(!t.matches("lead.created"));
        assert!(!t.matches("lea.*"));
        assert!(!t.matches("webhook.*"));
    }

    #[test]
    fn a_target_gets_an_event_when_any_filter_covers_it() {
        let f = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let t = EventType::LeadCreated;
        assert!(t.subscribed(&f(&["lead.deleted", "lead.*"])));
        assert!(!t.subscribed(&f(&["lead.deleted", "webhook.*"])));
        assert!(!t.subscribed(&[]), "an empty filter gets nothing");
        assert!(!EventType::WebhookTest.subscribed(&f(&["lead.*"])));
    }
}
