//! The server's one typed configuration. Every setting is a flag, an environment
//! variable and a key of the optional TOML file (`--config`); a flag wins over the
//! environment, which wins over the file, which wins over the default. Values are
//! read as text and checked here, so a bad one from any of the three gets the same
//! one-line message naming the setting, the value and the rule.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crm::http::IpNet;
use crm::ratelimit::Policy;

/// A setting that cannot be used: the process prints it and exits with code 2.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! settings {
    ($( $field:ident, $env:literal, $secret:literal, $default:literal, $help:literal; )+) => {
        /// Every setting as given (flag, environment or file), before it is checked.
        #[derive(clap::Args, Default, Clone)]
        pub(crate) struct Settings {
            $(
                #[doc = $help]
                #[arg(long, env = $env, global = true, hide_env_values = $secret, value_name = "VALUE")]
                pub(crate) $field: Option<String>,
            )+
        }

        impl Settings {
            /// Fills what flags and environment left unset from the TOML file's table.
            fn fill_from(&mut self, table: toml::Table, file: &Path) -> Result<(), ConfigError> {
                for (key, value) in table {
                    let text = match value {
                        toml::Value::String(s) => s,
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        toml::Value::Array(items) => items
                            .iter()
                            .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
                            .collect::<Vec<_>>()
                            .join(","),
                        other => other.to_string(),
                    };
                    match key.as_str() {
                        $( stringify!($field) => {
                            if self.$field.is_none() {
                                self.$field = Some(text);
                            }
                        } )+
                        _ => return Err(ConfigError(format!(
                            "{}: unknown setting {key:?}", file.display()
                        ))),
                    }
                }
                Ok(())
            }

            /// `(file key, variable, value)` of every setting, secrets masked and
            /// defaults named.
            pub(crate) fn describe(&self) -> Vec<(&'static str, &'static str, String)> {
                vec![$(
                    (stringify!($field), $env, match (&self.$field, $secret) {
                        (None, _) => format!("{} (default)", $default),
                        (Some(_), true) => "******** (set)".to_owned(),
                        (Some(v), false) => v.clone(),
                    }),
                )+]
            }
        }
    };
}

settings! {
    data_dir, "CRM_DATA_DIR", false, "./crm-data", "Directory of the embedded SQLite database and the generated master key (created 0700). Default ./crm-data";
    database_url, "DATABASE_URL", true, "sqlite in the data directory", "Database URL: sqlite://PATH or postgres://… Default: crm.db in the data directory";
    master_key, "CRM_MASTER_KEY", true, "master.key in the data directory", "Master key (32 bytes, base64) that seals stored secrets. Default: master.key in the data directory, made on first run";
    addr, "CRM_ADDR", false, "127.0.0.1:3000", "Address the server listens on. Default 127.0.0.1:3000";
    metrics_addr, "CRM_METRICS_ADDR", false, "the main address", "Serve GET /metrics on this separate address instead of the main one";
    log_format, "CRM_LOG_FORMAT", false, "auto", "Log format: auto (text on a terminal, JSON otherwise), text or json. The filter is CRM_LOG or RUST_LOG (default info)";
    registration, "CRM_REGISTRATION", false, "false", "Whether anyone may register a new workspace: true or false. Default false";
    public_url, "CRM_PUBLIC_URL", false, "none (mails carry the bare token)", "The address people reach this server at, e.g. https://crm.example.com: reset and verification mails link to its /auth pages, file download links to its /api/files, and OpenID Connect providers send browsers back to its /api/auth/oidc/{workspace}/{provider}/callback";
    files_dir, "CRM_FILES_DIR", false, "files in the data directory", "Directory attached files are stored in (created 0700 on first upload). Default: files in the data directory";
    s3_bucket, "CRM_S3_BUCKET", false, "none (files in CRM_FILES_DIR)", "S3 bucket attached files are stored in instead of a directory (presigned download links); credentials, region and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT (AWS_ALLOW_HTTP=true for an http endpoint)";
    s3_prefix, "CRM_S3_PREFIX", false, "none", "Key prefix in that bucket, ending in / (e.g. prod/), for a bucket shared by deployments";
    max_file_bytes, "CRM_MAX_FILE_BYTES", false, "26214400", "Largest attached file, in bytes (1 to 1073741824). Default 26214400 (25 MiB)";
    storage_quota_bytes, "CRM_STORAGE_QUOTA_BYTES", false, "1073741824", "Bytes of attached files one workspace may hold. Default 1073741824 (1 GiB)";
    require_verified_email, "CRM_REQUIRE_VERIFIED_EMAIL", false, "false", "Refuse sign-in until the account's email is verified: true or false. Default false";
    row_level_security, "CRM_ROW_LEVEL_SECURITY", false, "false", "Postgres row-level security as a second wall between workspaces: true when DATABASE_URL names an app role that neither owns crm's tables nor has BYPASSRLS (first, as the owner: crm migrate --row-level-security on); the server then migrates nothing. Default false";
    insecure_cookie, "CRM_INSECURE_COOKIE", false, "false", "Plain-HTTP development: session cookie crm_session without Secure: true or false. Default false";
    allowed_origins, "CRM_ALLOWED_ORIGINS", false, "none", "Browser origins allowed by CORS, comma-separated, each scheme://host[:port]";
    trust_proxy, "CRM_TRUST_PROXY", false, "none", "Networks of the reverse proxies whose X-Forwarded-For is believed, comma-separated CIDRs";
    webhook_allow_networks, "CRM_WEBHOOK_ALLOW_NETWORKS", false, "none (public addresses only)", "Private networks webhooks may be sent to, comma-separated CIDRs (e.g. 10.0.0.0/8). Default: public addresses only";
    api_key_per_minute, "CRM_API_KEY_PER_MINUTE", false, "100", "Requests per minute per API key. Default 100";
    anon_per_minute, "CRM_ANON_PER_MINUTE", false, "10", "Requests per minute per client address without a key. Default 10";
    retention_days, "CRM_RETENTION_DAYS", false, "30", "Days events and delivery attempts are kept; 0 keeps them forever. Default 30";
    housekeeping_interval_secs, "CRM_HOUSEKEEPING_INTERVAL_SECS", false, "600", "Seconds between housekeeping passes (expired sessions, tokens, keys, old events). Default 100";
    dispatcher_concurrency, "CRM_DISPATCHER_CONCURRENCY", false, "8", "Deliveries (webhooks, notifications) in flight at once. Default 8";
    shutdown_timeout_secs, "CRM_SHUTDOWN_TIMEOUT_SECS", false, "30", "On SIGTERM or SIGINT, how long in-flight requests and deliveries may take before the process exits. Default 30";
    header_timeout_secs, "CRM_HEADER_TIMEOUT_SECS", false, "10", "Seconds a client has to send a request head; also the idle keep-alive time. Default 10";
    body_timeout_secs, "CRM_BODY_TIMEOUT_SECS", false, "30", "Seconds a client has to send a whole request body. Default 30";
    send_timeout_secs, "CRM_SEND_TIMEOUT_SECS", false, "30", "Seconds a response write may make no progress. Default 30";
    max_connections, "CRM_MAX_CONNECTIONS", false, "1024", "Connections served at once. Default 1024";
    admin_email, "CRM_ADMIN_EMAIL", false, "admin@localhost.localdomain", "Email of the owner account made on the first run. Default admin@localhost.localdomain";
    admin_password, "CRM_ADMIN_PASSWORD", true, "generated, printed once", "Password of that owner account. Default: generated and printed once";
    resend_api_key, "RESEND_API_KEY", true, "none", "Resend API key: email notifications and auth mail (with resend_from)";
    resend_from, "RESEND_FROM", false, "none", "Sender address of mail sent through Resend";
    smtp_url, "CRM_SMTP_URL", true, "none", "SMTP server for email notifications and auth mail (with smtp_from), instead of Resend: smtps://user:password@host, or smtp://user:password@host:587?tls=required";
    smtp_from, "CRM_SMTP_FROM", false, "none", "Sender address of mail sent over SMTP, e.g. CRM <crm@example.com>";
    openai_api_key, "OPENAI_API_KEY", true, "none (the builtin parser)", "OpenAI API key: lead parsing";
    whatsapp_app_secret, "WHATSAPP_APP_SECRET", true, "none", "WhatsApp app secret: inbound messages on /api/webhooks/whatsapp (with whatsapp_verify_token)";
    whatsapp_verify_token, "WHATSAPP_VERIFY_TOKEN", true, "none", "WhatsApp webhook verify token";
    calcom_webhook_secret, "CALCOM_WEBHOOK_SECRET", true, "none", "Cal.com webhook secret: bookings on /api/webhooks/cal";
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines (colours only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// The checked configuration.
pub(crate) struct Config {
    pub(crate) data_dir: PathBuf,
    pub(crate) database_url: Option<String>,
    pub(crate) master_key: Option<crm::MasterKey>,
    pub(crate) addr: SocketAddr,
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) log_format: LogFormat,
    pub(crate) registration: bool,
    pub(crate) public_url: Option<String>,
    pub(crate) files_dir: Option<PathBuf>,
    pub(crate) s3_bucket: Option<String>,
    pub(crate) s3_prefix: Option<String>,
    pub(crate) max_file_bytes: Option<u64>,
    pub(crate) storage_quota_bytes: Option<u64>,
    pub(crate) require_verified_email: bool,
    pub(crate) insecure_cookie: bool,
    pub(crate) row_level_security: bool,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) trust_proxy: Vec<IpNet>,
    pub(crate) webhook_allow_networks: Vec<String>,
    pub(crate) api_key_policy: Option<Policy>,
    pub(crate) anon_policy: Option<Policy>,
    pub(crate) retention: Option<chrono::Duration>,
    pub(crate) housekeeping_every: Duration,
    pub(crate) dispatcher_concurrency: Option<usize>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) limits: crm::http::Limits,
    pub(crate) admin_email: String,
    pub(crate) admin_password: Option<crm::SecretString>,
    pub(crate) resend: Option<(crm::SecretString, String)>,
    pub(crate) smtp: Option<crm::integrations::smtp::Smtp>,
    pub(crate) openai_api_key: Option<crm::SecretString>,
    pub(crate) whatsapp: Option<(crm::SecretString, crm::SecretString)>,
    pub(crate) calcom_webhook_secret: Option<crm::SecretString>,
}

impl Config {
    /// Whether the database is Postgres (else SQLite).
    pub(crate) fn is_postgres(&self) -> bool {
        self.database_url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres"))
    }
}

fn bad(env: &str, value: &str, rule: &str) -> ConfigError {
    let flag = env.to_ascii_lowercase().replace('_', "-");
    let flag = flag.strip_prefix("crm-").unwrap_or(&flag);
    ConfigError(format!("{env} (--{flag}) = {value:?}: {rule}"))
}

/// A whole number from `min` to `max`; `what` names the unit in the message.
fn number<T>(
    env: &str,
    value: Option<&str>,
    (min, max): (T, T),
    what: &str,
) -> Result<Option<T>, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    value
        .map(|v| {
            v.trim()
                .parse::<T>()
                .ok()
                .filter(|n| *n >= min && *n <= max)
                .ok_or_else(|| {
                    bad(
                        env,
                        v,
                        &format!("must be a whole number{what} from {min} to {max}"),
                    )
                })
        })
        .transpose()
}

/// Seconds, from 1 to a day.
fn seconds(env: &str, value: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    Ok(number::<u64>(env, value, (1, 86_400), " of seconds")?.map(Duration::from_secs))
}

/// Browser origins: `scheme://host[:port]`, nothing after.
fn origins(value: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let items = list(value);
    for o in &items {
        let o = o.trim_end_matches('/');
        let rest = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        if !rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '*', '?', '#', ' ', '@'])) {
            return Err(bad(
                "CRM_ALLOWED_ORIGINS",
                o,
                "must be comma-separated origins like https://app.example.com (scheme, host and port only; not *)",
            ));
        }
    }
    Ok(items)
}

/// `scheme://host[:port][/path]`, without a query or fragment; the trailing `/` is
/// dropped so that links append `/auth/…`.
fn public_url(value: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let v = v.trim_end_matches('/');
    let host = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next());
    let ok = host.is_some_and(|h| !h.is_empty() && !h.contains(['@', ' ']))
        && !v.contains(['?', '#', ' ', '{', '}']);
    if !ok {
        return Err(bad(
            "CRM_PUBLIC_URL",
            v,
            "must be an http(s) address like https://crm.example.com (a path is allowed; no query)",
        ));
    }
    Ok(Some(v.to_owned()))
}

fn boolean(env: &str, value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(_) => Err(bad(env, value.unwrap_or_default(), "must be true or false")),
    }
}

fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn networks(env: &str, value: Option<&str>) -> Result<Vec<IpNet>, ConfigError> {
    list(value)
        .iter()
        .map(|n| {
            n.parse().map_err(|_| {
                bad(
                    env,
                    n,
                    "must be comma-separated networks like 10.0.0.0/8 or 127.0.0.1",
                )
            })
        })
        .collect()
}

fn per_minute(env: &str, value: Option<&str>) -> Result<Option<Policy>, ConfigError> {
    let Some(n) = number::<u32>(env, value, (1, u32::MAX), "")? else {
        return Ok(None);
    };
    // A policy spaces requests at least a microsecond apart.
    Policy::per_minute(n)
        .map(Some)
        .ok_or_else(|| bad(env, value.unwrap_or_default(), "is finer than a per-minute policy supports (at most 60000000, one request per microsecond)"))
}

fn secret(env: &str, value: Option<&str>) -> Result<Option<crm::SecretString>, ConfigError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Err(ConfigError(format!(
            "{env} is set but blank (an empty secret would make every check meaningless)"
        ))),
        Some(v) => Ok(Some(crm::SecretString::from(v.to_owned()))),
    }
}

fn address(env: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| bad(env, value, "must be host:port, e.g. 127.0.0.1:3000"))
}

impl Settings {
    /// Reads `file` (when given) under what flags and the environment set.
    pub(crate) fn with_file(mut self, file: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                ConfigError(format!(
                    "CRM_CONFIG (--config) = {:?}: cannot be read: {e}",
                    file.display().to_string()
                ))
            })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                ConfigError(format!(
                    "{}: not valid TOML: {}",
                    file.display(),
                    e.message()
                ))
            })?;
            self.fill_from(table, file)?;
        }
        Ok(self)
    }

    /// Checks every setting; the first bad one is the error.
    pub(crate) fn check(&self) -> Result<Config, ConfigError> {
        let s = self;
        let database_url = s.database_url.clone().filter(|u| !u.trim().is_empty());
        if let Some(url) = &database_url {
            let scheme = url.split_once(':').map_or("", |(s, _)| s);
            if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
                return Err(ConfigError(
                    "DATABASE_URL (--database-url): must start with sqlite: or postgres: (the backends this server is built with)".into(),
                ));
            }
        }
        let log_format = match s.log_format.as_deref().map(str::trim) {
            None | Some("auto") => LogFormat::Auto,
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(bad("CRM_LOG_FORMAT", other, "must be auto, text or json")),
        };
        let shutdown_timeout = number::<u64>(
            "CRM_SHUTDOWN_TIMEOUT_SECS",
            s.shutdown_timeout_secs.as_deref(),
            (0, 3_600),
            " of seconds",
        )?
        .map_or(Duration::from_secs(30), Duration::from_secs);
        let mut limits = crm::http::Limits {
            shutdown_grace: shutdown_timeout,
            ..crm::http::Limits::default()
        };
        if let Some(d) = seconds("CRM_HEADER_TIMEOUT_SECS", s.header_timeout_secs.as_deref())? {
            limits.header_read_timeout = d;
        }
        if let Some(d) = seconds("CRM_BODY_TIMEOUT_SECS", s.body_timeout_secs.as_deref())? {
            limits.body_timeout = d;
        }
        if let Some(d) = seconds("CRM_SEND_TIMEOUT_SECS", s.send_timeout_secs.as_deref())? {
            limits.send_timeout = d;
        }
        if let Some(n) = number::<usize>(
            "CRM_MAX_CONNECTIONS",
            s.max_connections.as_deref(),
            (1, 1_000_000),
            "",
        )? {
            limits.max_connections = n;
        }
        let admin_email = s
            .admin_email
            .clone()
            .unwrap_or_else(|| "admin@localhost.localdomain".into());
        crm::leads::Email::parse(&admin_email)
            .map_err(|rule| bad("CRM_ADMIN_EMAIL", &admin_email, &rule))?;
        let admin_password = secret("CRM_ADMIN_PASSWORD", s.admin_password.as_deref())?;
        if let Some(p) = &admin_password {
            crm::auth::check_policy(p.expose())
                .map_err(|e| ConfigError(format!("CRM_ADMIN_PASSWORD (--admin-password): {e}")))?;
        }
        let allow = list(s.webhook_allow_networks.as_deref());
        // Checked here with the same parser the library uses, for a message naming the setting.
        networks(
            "CRM_WEBHOOK_ALLOW_NETWORKS",
            s.webhook_allow_networks.as_deref(),
        )?;
        // 0 keeps events forever.
        let retention_days = number::<u32>(
            "CRM_RETENTION_DAYS",
            s.retention_days.as_deref(),
            (0, 36_500),
            " of days",
        )?
        .unwrap_or(30);
        let resend = match (
            secret("RESEND_API_KEY", s.resend_api_key.as_deref())?,
            s.resend_from.clone(),
        ) {
            (Some(k), Some(from)) => Some((k, from)),
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "RESEND_API_KEY and RESEND_FROM: set both or neither".into(),
                ))
            }
        };
        let smtp = match (
            secret("CRM_SMTP_URL", s.smtp_url.as_deref())?,
            s.smtp_from.clone(),
        ) {
            (Some(url), Some(from)) => Some(
                crm::integrations::smtp::Smtp::new(&url, &from)
                    .map_err(|e| ConfigError(format!("CRM_SMTP_URL and CRM_SMTP_FROM: {e}")))?,
            ),
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "CRM_SMTP_URL and CRM_SMTP_FROM: set both or neither".into(),
                ))
            }
        };
        let require_verified_email = boolean(
            "CRM_REQUIRE_VERIFIED_EMAIL",
            s.require_verified_email.as_deref(),
        )?;
        if require_verified_email && resend.is_none() && smtp.is_none() {
            return Err(ConfigError(
                "CRM_REQUIRE_VERIFIED_EMAIL: needs a mail provider (RESEND_API_KEY or CRM_SMTP_URL), or nobody could verify an email".into(),
            ));
        }
        if resend.is_some() && smtp.is_some() {
            return Err(ConfigError(
                "RESEND_API_KEY and CRM_SMTP_URL: mail goes through one of them; set one".into(),
            ));
        }
        let whatsapp = match (
            secret("WHATSAPP_APP_SECRET", s.whatsapp_app_secret.as_deref())?,
            secret("WHATSAPP_VERIFY_TOKEN", s.whatsapp_verify_token.as_deref())?,
        ) {
            (Some(a), Some(v)) => Some((a, v)),
            (None, None) => None,
            _ => {
                return Err(ConfigError(
                    "WHATSAPP_APP_SECRET and WHATSAPP_VERIFY_TOKEN: set both or neither".into(),
                ))
            }
        };
        Ok(Config {
            data_dir: PathBuf::from(s.data_dir.clone().unwrap_or_else(|| "crm-data".into())),
            database_url,
            master_key: secret("CRM_MASTER_KEY", s.master_key.as_deref())?
                .map(|k| {
                    crm::MasterKey::from_base64("k1", k.expose().trim()).map_err(|_| {
                        ConfigError(
                            "CRM_MASTER_KEY (--master-key): not a master key (32 bytes, base64)"
                                .into(),
                        )
                    })
                })
                .transpose()?,
            addr: address("CRM_ADDR", s.addr.as_deref().unwrap_or("127.0.0.1:3000"))?,
            metrics_addr: s
                .metrics_addr
                .as_deref()
                .map(|a| address("CRM_METRICS_ADDR", a))
                .transpose()?,
            log_format,
            registration: boolean("CRM_REGISTRATION", s.registration.as_deref())?,
            public_url: public_url(s.public_url.as_deref())?,
            files_dir: s.files_dir.clone().map(PathBuf::from),
            s3_bucket: s.s3_bucket.clone().filter(|b| !b.trim().is_empty()),
            s3_prefix: match (&s.s3_bucket, &s.s3_prefix) {
                (None, Some(p)) => {
                    return Err(bad(
                        "CRM_S3_PREFIX",
                        p,
                        "needs CRM_S3_BUCKET (files go to a directory without one)",
                    ))
                }
                (_, p) => p.clone(),
            },
            max_file_bytes: number::<u64>(
                "CRM_MAX_FILE_BYTES",
                s.max_file_bytes.as_deref(),
                (1, 1 << 30),
                " of bytes",
            )?,
            storage_quota_bytes: number::<u64>(
                "CRM_STORAGE_QUOTA_BYTES",
                s.storage_quota_bytes.as_deref(),
                (0, u64::MAX >> 1),
                " of bytes",
            )?,
            require_verified_email,
            insecure_cookie: boolean("CRM_INSECURE_COOKIE", s.insecure_cookie.as_deref())?,
            row_level_security: boolean("CRM_ROW_LEVEL_SECURITY", s.row_level_security.as_deref())?,
            allowed_origins: origins(s.allowed_origins.as_deref())?,
            trust_proxy: networks("CRM_TRUST_PROXY", s.trust_proxy.as_deref())?,
            webhook_allow_networks: allow,
            api_key_policy: per_minute("CRM_API_KEY_PER_MINUTE", s.api_key_per_minute.as_deref())?,
            anon_policy: per_minute("CRM_ANON_PER_MINUTE", s.anon_per_minute.as_deref())?,
            retention: (retention_days > 0)
                .then(|| chrono::Duration::days(i64::from(retention_days))),
            housekeeping_every: seconds(
                "CRM_HOUSEKEEPING_INTERVAL_SECS",
                s.housekeeping_interval_secs.as_deref(),
            )?
            .unwrap_or(Duration::from_secs(600)),
            dispatcher_concurrency: number::<usize>(
                "CRM_DISPATCHER_CONCURRENCY",
                s.dispatcher_concurrency.as_deref(),
                (1, 10_000),
                "",
            )?,
            shutdown_timeout,
            limits,
            admin_email,
            admin_password,
            resend,
            smtp,
            openai_api_key: secret("OPENAI_API_KEY", s.openai_api_key.as_deref())?,
            whatsapp,
            calcom_webhook_secret: secret(
                "CALCOM_WEBHOOK_SECRET",
                s.calcom_webhook_secret.as_deref(),
            )?,
        })
    }
}
