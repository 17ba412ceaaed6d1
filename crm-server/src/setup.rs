//! Opening the CRM from the configuration: the data directory, the master key, the
//! database, the integrations and the router's settings.

use std::path::Path;

use base64::Engine;
use crm::http::Config as RouterConfig;
use crm::{Crm, MasterKey};
use rand::RngCore;

use crate::config::{Config, ConfigError};
use crate::Failure;

/// The `Crm` of this configuration; `migrate`: bring the schema up to date first
/// (`crm migrate` does that itself).
pub(crate) async fn open(cfg: &Config, migrate: bool) -> Result<Crm, Failure> {
    private_dir(&cfg.data_dir)?;
    let url = match &cfg.database_url {
        Some(url) => url.clone(),
        None => {
            // Created here, 0600, before SQLite opens it: its -wal and -shm files take
            // the database file's permissions.
            let db = cfg.data_dir.join("crm.db");
            if !db.exists() {
                write_private(&db, "")?;
            }
            format!("sqlite://{}", db.display())
        }
    };
    let mut b = Crm::builder()
        .database_url(&url)
        .migrate(migrate)
        .master_key(master_key(cfg)?)
        .webhook_allow_networks(cfg.webhook_allow_networks.iter().map(String::as_str));
    if let Some(p) = cfg.api_key_policy {
        b = b.rate_limit_policy("api_key", p);
    }
    if let Some(p) = cfg.anon_policy {
        b = b.rate_limit_policy("anonymous_ip", p);
    }
    b = b
        .notifier(crm::integrations::discord::Discord::new())
        .notifier(crm::integrations::telegram::Telegram::new())
        .notifier(crm::integrations::whatsapp::WhatsApp::new());
    if let Some((key, from)) = &cfg.resend {
        let resend = crm::integrations::email::Resend::new(key.expose().to_owned(), from.clone());
        b = b.notifier(resend.clone()).mailer(resend);
    }
    if let Some(key) = &cfg.openai_api_key {
        b = b.lead_parser(crm::integrations::openai::OpenAi::new(
            key.expose().to_owned(),
        ));
    }
    b.connect().await.map_err(|e| match e {
        crm::Error::Config(m) => Failure::Config(ConfigError(m)),
        other => Failure::Other(format!("opening the database: {other}")),
    })
}

/// The router's settings of this configuration.
pub(crate) fn router_config(cfg: &Config) -> RouterConfig {
    let mut r = RouterConfig::new()
        .registration(cfg.registration)
        .trusted_proxies(cfg.trust_proxy.iter().cloned());
    if cfg.insecure_cookie {
        r = r.insecure_cookie("crm_session");
    }
    for origin in &cfg.allowed_origins {
        r = r.allow_origin(origin);
    }
    if let Some((secret, token)) = &cfg.whatsapp {
        r = r.whatsapp(secret.clone(), token.clone());
    }
    if let Some(secret) = &cfg.calcom_webhook_secret {
        r = r.calcom(secret.clone());
    }
    r
}

/// A password that meets the policy (every character class; the random part is the
/// strength).
pub(crate) fn generated_password() -> String {
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!("Crm-{p}-1")
}

/// The master key from the setting, or from `master.key` in the data directory,
/// made there on first run.
fn master_key(cfg: &Config) -> Result<MasterKey, Failure> {
    let unreadable = |what: String| {
        Failure::Config(ConfigError(format!(
            "{what}: not a master key (32 bytes, base64)"
        )))
    };
    if let Some(k) = &cfg.master_key {
        return Ok(k.clone());
    }
    let path = cfg.data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(k) => {
            return MasterKey::from_base64("k1", k.trim())
                .map_err(|_| unreadable(path.display().to_string()))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Failure::Config(ConfigError(format!(
                "{}: cannot be read: {e}",
                path.display()
            ))))
        }
        Err(_) => {}
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    write_private(
        &path,
        &base64::engine::general_purpose::STANDARD.encode(bytes),
    )?;
    tracing::info!(path = %path.display(), "generated a master key (keep it: sealed secrets need it)");
    MasterKey::new("k1", bytes).map_err(|e| Failure::Other(e.to_string()))
}

/// The data directory, created 0700 (the database and the master key live there).
fn private_dir(dir: &Path) -> Result<(), Failure> {
    if dir.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| {
        Failure::Config(ConfigError(format!(
            "CRM_DATA_DIR (--data-dir) = {:?}: cannot be created: {e}",
            dir.display().to_string()
        )))
    })
}

fn write_private(path: &Path, content: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
        .and_then(|mut f| f.write_all(content.as_bytes()))
        .map_err(|e| Failure::Other(format!("creating {}: {e}", path.display())))
}
