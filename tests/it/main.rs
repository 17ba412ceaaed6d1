//! The integration tests, as one binary (it links once): every module runs its cases
//! on SQLite and, with the `postgres` feature, on Postgres (see `common`). Modules
//! that need a cargo feature are compiled with it only. `tests/signing_alloc.rs`
//! stays a binary of its own: it installs a counting global allocator.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod api_keys;
mod attachments;
mod auth;
mod contacts;
#[cfg(feature = "webhooks")]
mod delivery;
mod embedding;
#[cfg(feature = "webhooks")]
mod housekeeping;
#[cfg(all(feature = "http", feature = "whatsapp", feature = "calcom"))]
mod http;
#[cfg(all(feature = "http", feature = "whatsapp", feature = "calcom"))]
mod http_files;
mod imports;
#[cfg(all(
    feature = "http",
    feature = "whatsapp",
    feature = "calcom",
    feature = "openai",
    feature = "email",
    feature = "telegram",
    feature = "webhooks"
))]
mod integrations;
#[cfg(feature = "jwt")]
mod jwt;
mod leads;
mod notifications;
#[cfg(all(feature = "oidc", feature = "http"))]
mod oidc;
#[cfg(all(
    feature = "http",
    feature = "whatsapp",
    feature = "calcom",
    feature = "email"
))]
mod openapi;
#[cfg(feature = "webhooks")]
mod quotas;
#[cfg(feature = "postgres")]
mod rls;
mod storage;
#[cfg(all(
    feature = "ui",
    feature = "http",
    feature = "whatsapp",
    feature = "calcom"
))]
mod ui;
mod webhook_signing;
#[cfg(feature = "webhooks")]
mod webhooks;
#[cfg(all(feature = "whatsapp", feature = "webhooks"))]
mod whatsapp_media;
