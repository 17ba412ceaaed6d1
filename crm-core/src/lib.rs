#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod api_keys;
pub mod attachments;
pub mod audit;
pub mod auth;
mod clock;
pub mod contacts;
mod crm;
pub mod error;
pub mod events;
pub mod housekeeping;
pub mod idempotency;
mod ids;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
pub mod leads;
mod macros;
mod migrate;
pub mod notify;
#[cfg(feature = "oidc")]
#[cfg_attr(docsrs, doc(cfg(feature = "oidc")))]
pub mod oidc;
#[cfg(feature = "openapi")]
pub mod openapi;
#[cfg(test)]
mod props;
pub mod providers;
pub mod ratelimit;
pub mod seal;
mod secret;
pub mod storage;
mod store;
pub mod webhooks;

pub use attachments::Attachments;
pub use clock::{Clock, ManualClock, SystemClock};
pub use contacts::{Contacts, Organizations};
pub use crm::{Crm, CrmBuilder, Quotas, Workspace, WorkspaceInfo};
pub use error::{AuthFailure, Error, FieldError, Result};
pub use ids::{
    ActivityId, ApiKeyId, AttachmentId, AuditId, ChannelId, ContactId, EndpointId, EventId,
    ImportId, LeadId, OrganizationId, SessionId, UserId, WorkspaceId,
};
pub use leads::Leads;
pub use seal::{MasterKey, Sealer};
pub use secret::SecretString;
