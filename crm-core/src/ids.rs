//! Typed identifiers. All are UUIDv7 (time-ordered) except [`WorkspaceId::DEFAULT`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        #[cfg(feature = "openapi")]
        crate::macros::string_schema!($name, Some("uuid"), "A UUID.");

        impl $name {
            /// A new time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

id_type!(
    /// A workspace (tenant). Every row belongs to exactly one.
    WorkspaceId
);
id_type!(
    /// A lead.
    LeadId
);
id_type!(
    /// An activity on a lead's timeline.
    ActivityId
);
id_type!(
    /// An event in the outbox (`lead.created`, …).
    EventId
);

id_type!(
    /// An API key.
    ApiKeyId
);
id_type!(
    /// An audit-log entry.
    AuditId
);

id_type!(
    /// A user.
    UserId
);
id_type!(
    /// A login session.
    SessionId
);

id_type!(
    /// A webhook endpoint.
    EndpointId
);
id_type!(
    /// A notification channel.
    ChannelId
);
id_type!(
    /// A CSV import of leads ([`crate::Leads::import`]).
    ImportId
);
id_type!(
    /// A contact: a person ([`crate::Contacts`]).
    ContactId
);
id_type!(
    /// An organization: a company contacts belong to ([`crate::Organizations`]).
    OrganizationId
);

id_type!(
    /// A file attached to a lead or a contact ([`crate::Attachments`]).
    AttachmentId
);

impl WorkspaceId {
    /// The workspace that exists from the first migration on, for single-tenant apps.
    /// It is the nil UUID, so it is the same in every database.
    pub const DEFAULT: WorkspaceId = WorkspaceId(Uuid::nil());
}
