//! Opening the CRM from the configuration: the data directory, the master key, the
//! database, the integrations and the router's settings.

use std::path::{Path, PathBuf};

use base64::Engine;
use crm::http::Config as RouterConfig;
use crm::{Crm, CrmBuilder, MasterKey};
use rand::RngCore;

use crate::config::{Config, ConfigError};
use crate::Failure;

/// The `Crm` of this configuration; `migrate`: bring the schema up to date first
/// (`crm migrate` does that itself). A master key made on this run is written to the
/// data directory only once the database has opened.
pub(crate) async fn open(cfg: &Config, migrate: bool) -> Result<Crm, Failure> {
    let url = match &cfg.database_url {
        Some(url) => url.clone(),
        None => {
            private_dir(&cfg.data_dir)?;
            // Created here, 0600, before SQLite opens it: its -wal and -shm files take
            // the database file's permissions.
            let db = default_db(cfg);
            if !db.exists() {
                write_private(&db, "")?;
            }
            format!("sqlite://{}", db.display())
        }
    };
    let (key, made) = master_key(cfg)?;
    let crm = builder(cfg, &url, key, migrate)?
        .connect()
        .await
        .map_err(|e| Failure::from(e).context("opening the database"))?;
    if let Some((path, encoded)) = made {
        private_dir(&cfg.data_dir)?;
        write_private(&path, &encoded)?;
        tracing::info!(path = %path.display(), "generated a master key (keep it: sealed secrets need it)");
        if cfg.is_postgres() {
            tracing::warn!(
                "every instance on this Postgres database must use the same master key: \
                 give the others CRM_MASTER_KEY with the contents of this file"
            );
        }
    }
    Ok(crm)
}

/// A `Crm` like [`open`]'s on an in-memory database, for what needs no data
/// (`crm openapi`): nothing is read or written.
pub(crate) async fn in_memory(cfg: &Config) -> Result<Crm, Failure> {
    let key = MasterKey::generate("k1")?;
    Ok(builder(cfg, "sqlite::memory:", key, true)?
        .connect()
        .await?)
}

/// The links of reset and verification mails: the router's pages under the public
/// address.
pub(crate) fn auth_links(public_url: &str) -> (String, String) {
    (
        format!("{public_url}/auth/reset-password?token={{token}}"),
        format!("{public_url}/auth/verify-email?token={{token}}"),
    )
}

/// The default SQLite database, in the data directory.
pub(crate) fn default_db(cfg: &Config) -> std::path::PathBuf {
    cfg.data_dir.join("crm.db")
}

fn builder(cfg: &Config, url: &str, key: MasterKey, migrate: bool) -> Result<CrmBuilder, Failure> {
    let mut b = Crm::builder()
        .database_url(url)
        // Under row-level security the app role cannot change the schema: the
        // owner runs `crm migrate`.
        .migrate(migrate && !cfg.row_level_security)
        .row_level_security(cfg.row_level_security)
        .master_key(key)
        .webhook_allow_networks(cfg.webhook_allow_networks.iter().map(String::as_str))
        .auth_config(crm::auth::AuthConfig {
            require_verified_email: cfg.require_verified_email,
            ..crm::auth::AuthConfig::default()
        });
    b = match &cfg.s3_bucket {
        Some(bucket) => b.storage(
            crm::integrations::s3::S3Storage::builder(bucket)
                .from_env()
                .prefix(cfg.s3_prefix.clone().unwrap_or_default())
                .build()
                .map_err(|e| {
                    Failure::Config(ConfigError(format!("CRM_S3_BUCKET, CRM_S3_PREFIX: {e}")))
                })?,
        ),
        None => b.storage(crm::storage::FsStorage::new(
            cfg.files_dir
                .clone()
                .unwrap_or_else(|| cfg.data_dir.join("files")),
        )),
    };
    let defaults = crm::attachments::AttachmentRules::default();
    b = b
        .attachment_rules(crm::attachments::AttachmentRules {
            max_file_size: cfg.max_file_bytes.unwrap_or(defaults.max_file_size),
            link_base: cfg.public_url.clone(),
            ..defaults
        })
        .quotas(crm::Quotas {
            attachment_bytes: cfg
                .storage_quota_bytes
                .unwrap_or(crm::Quotas::default().attachment_bytes),
            ..crm::Quotas::default()
        });
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
        let mut resend =
            crm::integrations::email::Resend::new(key.expose().to_owned(), from.clone());
        if let Some(url) = &cfg.public_url {
            let (reset, verify) = auth_links(url);
            resend = resend.with_links(reset, verify);
        }
        b = b.notifier(resend.clone()).mailer(resend);
    }
    if let Some(smtp) = &cfg.smtp {
        let mut smtp = smtp.clone();
        if let Some(public) = &cfg.public_url {
            let (reset, verify) = auth_links(public);
            smtp = smtp.with_links(reset, verify);
        }
        b = b.notifier(smtp.clone()).mailer(smtp);
    }
    // Every workspace may keep its own credentials for these providers (admin API
    // `/api/admin/integrations`); the settings above are the server's defaults.
    let (mut resend, mut smtp) = (
        crm::integrations::email::ResendIntegration::new(),
        crm::integrations::smtp::SmtpIntegration::new().with_allowed_networks(
            cfg.webhook_allow_networks
                .iter()
                .filter_map(|n| n.parse::<crm::webhooks::ssrf::IpNet>().ok()),
        ),
    );
    if let Some(url) = &cfg.public_url {
        let (reset, verify) = auth_links(url);
        resend = resend.with_links(reset.clone(), verify.clone());
        smtp = smtp.with_links(reset, verify);
    }
    b = b
        .provider(crm::integrations::openai::OpenAiIntegration::new())
        .provider(resend)
        .provider(smtp)
        .provider(crm::integrations::whatsapp::WhatsApp::new())
        .provider(crm::integrations::calcom::CalcomIntegration)
        .provider(crm::integrations::telegram::Telegram::new())
        .provider(crm::integrations::discord::Discord::new());
    if let Some(key) = &cfg.openai_api_key {
        b = b.lead_parser(crm::integrations::openai::OpenAi::new(
            key.expose().to_owned(),
        ));
    }
    Ok(b)
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
    // The providers' redirect URIs (the server serves the router at its root).
    if let Some(url) = &cfg.public_url {
        r = r.oidc_base_url(url);
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

/// The master key from the setting, or from `master.key` in the data directory, or a
/// new one (with the path it is to be kept at, and its text, once the database opens).
fn master_key(cfg: &Config) -> Result<(MasterKey, Option<(PathBuf, String)>), Failure> {
    if let Some(k) = &cfg.master_key {
        return Ok((k.clone(), None));
    }
    let path = cfg.data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(k) => MasterKey::from_base64("k1", k.trim())
            .map(|k| (k, None))
            .map_err(|_| {
                Failure::Config(ConfigError(format!(
                    "{}: not a master key (32 bytes, base64)",
                    path.display()
                )))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            Ok((MasterKey::new("k1", bytes)?, Some((path, encoded))))
        }
        Err(e) => Err(Failure::Config(ConfigError(format!(
            "{}: cannot be read: {e}",
            path.display()
        )))),
    }
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

#[cfg(test)]
mod tests {
    /// Mails link to the router's pages under the public address (a path prefix kept).
    #[test]
    fn auth_links_point_at_the_routers_pages() {
        assert_eq!(
            super::auth_links("https://crm.example.com/team"),
            (
                "https://crm.example.com/team/auth/reset-password?token={token}".to_owned(),
                "https://crm.example.com/team/auth/verify-email?token={token}".to_owned(),
            )
        );
    }
}
