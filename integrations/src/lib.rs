//! crm-integrations: provider plugins for crm, one cargo feature each (`discord`,
//! `telegram`, `email`, `whatsapp`, `calcom`, `openai`, `full`). Each implements a
//! trait that crm-core defines and is registered on the `Crm` builder, e.g.
//! `Crm::builder().notifier(crm_integrations::discord::Discord::new())`.
//!
//! So far: Discord, Telegram, email (Resend), WhatsApp and Cal.com. The other providers land with the rest of the integrations issue;
//! their features exist and add nothing yet.
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
