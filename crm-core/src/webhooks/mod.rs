//! Webhooks: signing and verification ([`signing`]), the SSRF guard ([`ssrf`]),
//! endpoints ([`endpoints`]), and the dispatcher that delivers their jobs
//! ([`dispatcher`]); events fan out into jobs in the transaction that writes them
//! (the outbox, in crm's storage).

#[cfg(feature = "webhooks")]
mod delivery;
pub mod dispatcher;
pub mod endpoints;
pub(crate) mod model;
pub mod signing;
pub mod ssrf;

pub use dispatcher::{message_id, DispatcherConfig};
pub use endpoints::Webhooks;
pub use model::{Attempt, QueueStats};
pub use model::{CreatedEndpoint, Endpoint, EndpointPatch, NewEndpoint};
/// The token that stops a dispatcher (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;
