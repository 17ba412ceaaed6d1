#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod crm;
mod db;
mod error;
pub mod events;
mod ids;
pub mod leads;
mod macros;
pub mod seal;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use crm::{Crm, CrmBuilder, Workspace};
pub use error::{Error, FieldError, Result};
pub use ids::{ActivityId, EventId, LeadId, WorkspaceId};
pub use leads::Leads;
pub use seal::{MasterKey, Sealer};
