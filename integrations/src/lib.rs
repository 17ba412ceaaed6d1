//! crm-integrations: provider plugins for crm, one cargo feature each (`discord`,
//! `telegram`, `email`, `whatsapp`, `calcom`, `openai`, `full`). Each implements a
//! trait that crm-core defines and is registered on the `Crm` builder, e.g.
//! `Crm::builder().notifier(crm_integrations::discord::Discord::new())`, or is a plain
//! function over (headers, raw body) for inbound sources (WhatsApp, Cal.com), so the
//! HTTP router and the Python bindings can both call it.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "discord")]
#[cfg_attr(docsrs, doc(cfg(feature = "discord")))]
pub mod discord;

#[cfg(feature = "telegram")]
#[cfg_attr(docsrs, doc(cfg(feature = "telegram")))]
pub mod telegram;

#[cfg(feature = "email")]
#[cfg_attr(docsrs, doc(cfg(feature = "email")))]
pub mod email;

#[cfg(feature = "whatsapp")]
#[cfg_attr(docsrs, doc(cfg(feature = "whatsapp")))]
pub mod whatsapp;

#[cfg(feature = "calcom")]
#[cfg_attr(docsrs, doc(cfg(feature = "calcom")))]
pub mod calcom;

#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub mod openai;
