//! Webhooks: signing and verification ([`signing`]), the SSRF guard ([`ssrf`]), and
//! endpoints with the fan-out of events into delivery jobs ([`endpoints`]).
//!
//! Not here yet: the dispatcher that claims and delivers those jobs (with retries,
//! the attempt log, resend and test-send). Until it lands, jobs wait in `crm_jobs`;
//! nothing is sent.

pub mod endpoints;
pub mod signing;
pub mod ssrf;

pub use endpoints::{CreatedEndpoint, Endpoint, EndpointPatch, NewEndpoint, Webhooks};
