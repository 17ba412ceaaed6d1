#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use crm_core::*;

/// The mountable axum router (feature `http`).
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use crm_http as http;

/// Provider plugins, one feature each (`discord`, `telegram`, `email`, `smtp`, `whatsapp`, `calcom`, `openai`, `s3`).
#[cfg(any(
    feature = "discord",
    feature = "telegram",
    feature = "email",
    feature = "smtp",
    feature = "whatsapp",
    feature = "calcom",
    feature = "openai",
    feature = "s3"
))]
pub use crm_integrations as integrations;
