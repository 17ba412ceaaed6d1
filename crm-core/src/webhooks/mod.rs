//! Webhooks. So far: signing and verification ([`signing`]); endpoints and durable
//! delivery from the outbox land with the rest of the webhooks issue.

pub mod signing;
