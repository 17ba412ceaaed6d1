//! crm-integrations: provider plugins for crm, one cargo feature each (`discord`,
//! `telegram`, `email`, `whatsapp`, `calcom`, `openai`, `full`). Each will implement a
//! trait that crm-core defines (`Notifier`, `LeadParser`, `InboundSource`); the plugins
//! land with the integrations issue and until then this crate exports nothing.
