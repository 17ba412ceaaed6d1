//! Webhooks: signing and verification ([`signing`]), the SSRF guard ([`ssrf`]),
//! endpoints with the fan-out of events into delivery jobs ([`endpoints`]), and the
//! dispatcher that delivers them ([`dispatcher`]).

#[cfg(feature = "webhooks")]
mod delivery;
pub mod dispatcher;
pub mod endpoints;
pub(crate) mod model;
pub mod signing;
pub mod ssrf;

pub use dispatcher::{message_id, DispatcherConfig};
pub use endpoints::Webhooks;
pub use model::Attempt;
pub use model::{CreatedEndpoint, Endpoint, EndpointPatch, NewEndpoint};
/// The token that stops a dispatcher (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;
