//! cargo run --release --example server --features full
//!
//! The whole CRM as one server, with no set-up: the embedded SQLite store in a data
//! directory (`CRM_DATA_DIR`, default `./crm-data`), a master key generated on first
//! run and kept there (`master.key`, mode 0600), the owner account bootstrapped from
//! `CRM_ADMIN_EMAIL` / `CRM_ADMIN_PASSWORD` (or a generated password printed once),
//! the delivery dispatcher, and the router on `CRM_ADDR` (default 127.0.0.1:3000).
//!
//! `DATABASE_URL=postgres://…` switches to Postgres. Integrations switch on from the
//! environment (with their cargo features): `RESEND_API_KEY` + `RESEND_FROM` (email
//! notifications and auth mail), `OPENAI_API_KEY` (lead parsing), `WHATSAPP_APP_SECRET`
//! with `WHATSAPP_VERIFY_TOKEN` (inbound), `CALCOM_WEBHOOK_SECRET` (inbound); Discord,
//! Telegram and WhatsApp channels are available to create from the admin API.
//! Also: `CRM_ALLOWED_ORIGINS` (comma-separated), `CRM_REGISTRATION=1`,
//! `CRM_INSECURE_COOKIE=1` (plain-HTTP development: cookie `crm_session`, not Secure),
//! `CRM_TRUST_PROXY` (comma-separated CIDRs of the reverse proxies whose
//! `X-Forwarded-For` is believed, e.g. `127.0.0.1/32,10.0.0.0/8`), and `CRM_API_KEY_PER_MINUTE` / `CRM_ANON_PER_MINUTE` to change
//! the rate limits (the benchmark script raises them). Slow clients:
//! `CRM_HEADER_TIMEOUT_SECS` (request head and idle keep-alive, default 10),
//! `CRM_BODY_TIMEOUT_SECS` (a whole request body, default 30),
//! `CRM_SEND_TIMEOUT_SECS` (a response write that makes no progress, default 30) and
//! `CRM_MAX_CONNECTIONS` (default 1024).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use crm::auth::NewUser;
use crm::http::Config;
use crm::ratelimit::Policy;
use crm::webhooks::{CancellationToken, DispatcherConfig};
use crm::{Crm, MasterKey, SecretString, WorkspaceId};
use rand::RngCore;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A secret from the environment: `None` when unset, an error when set but blank (an
/// empty key would make every signature check meaningless).
fn secret_env(name: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => anyhow::bail!("{name} is set but blank"),
        Ok(v) => Ok(Some(v)),
        Err(_) => Ok(None),
    }
}

/// `CRM_TRUST_PROXY`: the networks of the reverse proxies in front of the server.
fn proxies() -> anyhow::Result<Vec<crm::http::IpNet>> {
    env("CRM_TRUST_PROXY")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse()
                .map_err(|e| anyhow::anyhow!("CRM_TRUST_PROXY: {e}"))
        })
        .collect()
}

fn flag(name: &str) -> bool {
    env(name).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The master key from `CRM_MASTER_KEY`, or from `dir/master.key`, made on first run.
fn master_key(dir: &Path) -> anyhow::Result<MasterKey> {
    if let Some(k) = env("CRM_MASTER_KEY") {
        return Ok(MasterKey::from_base64("k1", &k)?);
    }
    let path = dir.join("master.key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        return Ok(MasterKey::from_base64("k1", &k)?);
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    write_private(&path, &encoded)?;
    println!(
        "generated a master key in {} (keep it: sealed secrets need it)",
        path.display()
    );
    Ok(MasterKey::new("k1", bytes)?)
}

/// The data directory, created 0700 (the database and the master key live there).
#[cfg(unix)]
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[cfg(unix)]
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    std::fs::write(path, content).with_context(|| format!("creating {}", path.display()))
}

fn per_minute(name: &str) -> anyhow::Result<Option<Policy>> {
    env(name)
        .map(|v| {
            let n: u32 = v
                .parse()
                .with_context(|| format!("{name} must be a number"))?;
            Policy::per_minute(n).with_context(|| format!("{name} must be at least 1"))
        })
        .transpose()
}

/// The server's limits on slow clients, from the environment.
fn limits() -> anyhow::Result<crm::http::Limits> {
    let mut l = crm::http::Limits::default();
    let number = |name: &str| -> anyhow::Result<Option<u64>> {
        env(name)
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .with_context(|| format!("{name} must be a whole number, at least 1"))
            })
            .transpose()
    };
    if let Some(s) = number("CRM_HEADER_TIMEOUT_SECS")? {
        l.header_read_timeout = std::time::Duration::from_secs(s);
    }
    if let Some(s) = number("CRM_BODY_TIMEOUT_SECS")? {
        l.body_timeout = std::time::Duration::from_secs(s);
    }
    if let Some(s) = number("CRM_SEND_TIMEOUT_SECS")? {
        l.send_timeout = std::time::Duration::from_secs(s);
    }
    if let Some(n) = number("CRM_MAX_CONNECTIONS")? {
        l.max_connections = usize::try_from(n).context("CRM_MAX_CONNECTIONS is too large")?;
    }
    Ok(l)
}

#[allow(unused_mut)]
fn integrations(
    mut b: crm::CrmBuilder,
    mut cfg: Config,
) -> anyhow::Result<(crm::CrmBuilder, Config)> {
    #[cfg(feature = "discord")]
    {
        b = b.notifier(crm::integrations::discord::Discord::new());
    }
    #[cfg(feature = "telegram")]
    {
        b = b.notifier(crm::integrations::telegram::Telegram::new());
    }
    #[cfg(feature = "whatsapp")]
    {
        b = b.notifier(crm::integrations::whatsapp::WhatsApp::new());
        if let (Some(secret), Some(token)) = (
            secret_env("WHATSAPP_APP_SECRET")?,
            secret_env("WHATSAPP_VERIFY_TOKEN")?,
        ) {
            cfg = cfg.whatsapp(SecretString::from(secret), SecretString::from(token));
            println!("WhatsApp inbound on /api/webhooks/whatsapp");
        }
    }
    #[cfg(feature = "calcom")]
    if let Some(secret) = secret_env("CALCOM_WEBHOOK_SECRET")? {
        cfg = cfg.calcom(SecretString::from(secret));
        println!("Cal.com inbound on /api/webhooks/cal");
    }
    #[cfg(feature = "email")]
    if let (Some(key), Some(from)) = (env("RESEND_API_KEY"), env("RESEND_FROM")) {
        let resend = crm::integrations::email::Resend::new(key, from);
        b = b.notifier(resend.clone()).mailer(resend);
        println!("email via Resend");
    }
    #[cfg(feature = "openai")]
    if let Some(key) = env("OPENAI_API_KEY") {
        b = b.lead_parser(crm::integrations::openai::OpenAi::new(key));
        println!("lead parsing via OpenAI");
    }
    Ok((b, cfg))
}

/// Makes the owner account on the first run.
async fn bootstrap(crm: &Crm) -> anyhow::Result<()> {
    let email = env("CRM_ADMIN_EMAIL").unwrap_or_else(|| "admin@localhost.localdomain".into());
    let (password, generated) = match env("CRM_ADMIN_PASSWORD") {
        Some(p) => (p, false),
        None => {
            let mut bytes = [0u8; 18];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            // The policy wants every character class; the random part is the strength.
            (format!("Crm-{p}-1"), true)
        }
    };
    let owner = crm
        .workspace(WorkspaceId::DEFAULT)
        .auth()
        .bootstrap_owner(NewUser {
            email: email.clone(),
            display_name: "Owner".into(),
            role: None,
            password: password.clone(),
        })
        .await
        .context("creating the owner account")?;
    if owner.is_some() {
        if generated {
            println!("owner account: {email} / {password}   (shown once; change it)");
        } else {
            println!("owner account: {email}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .init();
    let dir = PathBuf::from(env("CRM_DATA_DIR").unwrap_or_else(|| "crm-data".into()));
    private_dir(&dir)?;
    let url = match env("DATABASE_URL") {
        Some(url) => url,
        None => {
            // Created here, 0600, before SQLite opens it: its -wal and -shm files take
            // the database file's permissions.
            let db = dir.join("crm.db");
            if !db.exists() {
                write_private(&db, "")?;
            }
            format!("sqlite://{}", db.display())
        }
    };

    let mut cfg = Config::new()
        .registration(flag("CRM_REGISTRATION"))
        .trusted_proxies(proxies()?);
    if flag("CRM_INSECURE_COOKIE") {
        cfg = cfg.insecure_cookie("crm_session");
    }
    for origin in env("CRM_ALLOWED_ORIGINS").unwrap_or_default().split(',') {
        if !origin.trim().is_empty() {
            cfg = cfg.allow_origin(origin.trim());
        }
    }
    let mut b = Crm::builder()
        .database_url(&url)
        .master_key(master_key(&dir)?);
    if let Some(p) = per_minute("CRM_API_KEY_PER_MINUTE")? {
        b = b.rate_limit_policy("api_key", p);
    }
    if let Some(p) = per_minute("CRM_ANON_PER_MINUTE")? {
        b = b.rate_limit_policy("anonymous_ip", p);
    }
    let (b, cfg) = integrations(b, cfg)?;
    let limits = limits()?;
    let crm = b.connect().await.context("opening the database")?;
    bootstrap(&crm).await?;

    let stop = CancellationToken::new();
    let dispatcher = crm.start_dispatcher(DispatcherConfig::default(), stop.clone())?;
    let app = cfg.router::<()>(crm.clone());
    let addr: SocketAddr = env("CRM_ADDR")
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()
        .context("CRM_ADDR must be host:port")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!(
        "crm listening on http://{}  (database: {}, API docs: /api/openapi.json)",
        listener.local_addr()?,
        if url.starts_with("postgres") {
            "Postgres"
        } else {
            "SQLite"
        }
    );
    let shutdown = stop.clone();
    crm::http::serve(listener, app, limits, async move {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down");
        shutdown.cancel();
    })
    .await?;
    stop.cancel();
    let _ = dispatcher.await;
    crm.close().await;
    Ok(())
}
