//! `crm`: the whole CRM as one server, and the commands an operator runs by hand.
//!
//! `crm serve` runs the API (and the webhook and notification dispatcher, and
//! housekeeping) on embedded SQLite in `./crm-data` with no set-up, or on Postgres
//! with `DATABASE_URL`. `crm --help` lists the commands and `crm serve --help` every
//! setting; each is a flag, an environment variable and a key of the `--config` TOML
//! file (flags win over the environment, which wins over the file). A setting that
//! cannot be used stops the process with exit code 2 and one line naming it.

/// Prints a line to stdout; a closed pipe (`crm openapi | head`) ends the output
/// quietly instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// mimalloc instead of the system's allocator: under load the server allocates
/// from both cores at once, and in a profile of the end-to-end delivery benchmark
/// glibc's malloc took about a sixth of the process's time, in its own functions
/// and in futex waits on its arena locks. The same code with mimalloc, alternated
/// runs of `benches/delivery.rs` on Postgres (which uses it too): a drain of
/// 20,000 went from 7,314-8,231 to 9,684-9,738 deliveries/s, end to end from
/// 3,291-3,366 to 3,835-3,871 creates/s. An app that embeds the library picks its
/// own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod serve;
mod setup;
mod transfer;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crm::api_keys::NewApiKey;
use crm::auth::{Actor, NewUser, Role};
use crm::WorkspaceId;

use config::{ConfigError, Settings};

#[derive(Parser)]
#[command(
    name = "crm",
    version,
    about = "The crm server and its administration commands"
)]
struct Cli {
    /// A TOML file of settings (keys as in `crm config check`); flags and the
    /// environment win over it.
    #[arg(long, env = "CRM_CONFIG", global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API, deliver webhooks and notifications, and keep the tables tidy.
    Serve,
    /// Bring the database to this version's schema and exit (or only check it).
    Migrate {
        /// Only say which migrations are pending; exit 1 when any are.
        #[arg(long)]
        check: bool,
        /// Then turn Postgres row-level security on or off for crm's tables (run as
        /// their owner; the app then connects with CRM_ROW_LEVEL_SECURITY=true as a
        /// role that owns nothing).
        #[arg(long, value_parser = ["on", "off"], conflicts_with = "check")]
        row_level_security: Option<String>,
    },
    /// Users of the default workspace.
    #[command(subcommand)]
    User(UserCommand),
    /// API keys of the default workspace.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Leads of the default workspace: CSV import and export.
    #[command(subcommand)]
    Leads(LeadsCommand),
    /// Print the OpenAPI document of the API.
    Openapi,
    /// The configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password comes from CRM_USER_PASSWORD or is generated and
    /// printed once.
    Create {
        /// The user's email (their sign-in name).
        #[arg(long)]
        email: String,
        /// The name shown for them.
        #[arg(long)]
        name: String,
        /// owner, admin or member.
        #[arg(long, default_value = "member")]
        role: String,
        /// The password (prefer the environment variable: flags show in `ps`).
        #[arg(long, env = "CRM_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// List users, one JSON object per line.
    List,
    /// Disable a user: their sessions end and they can no longer sign in.
    Disable {
        /// The user's email.
        email: String,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key; its secret is printed once and cannot be shown again.
    Create {
        /// A name to recognise it by.
        #[arg(long)]
        name: String,
        /// A scope (repeat for several), e.g. leads:read, leads:write.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List keys (never their secrets), one JSON object per line.
    List,
    /// Revoke a key by its id.
    Revoke {
        /// The key's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum LeadsCommand {
    /// Import leads from a CSV file: a new lead per row, or the lead with the row's
    /// email (else phone) updated with its non-empty cells. Shows a progress bar on
    /// a terminal and a progress line a second otherwise; prints the report.
    /// Exit code 0 when every row went in, 1 when a row failed or the file stopped.
    Import {
        /// The CSV file; its first line is a header naming the fields.
        file: std::path::PathBuf,
        /// Check and count every row, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// A header and the field its column goes to (repeat): "E-mail=email",
        /// "Plan=custom.plan", "Notes 2=" (ignore the column).
        #[arg(long = "map", value_name = "HEADER=FIELD")]
        map: Vec<String>,
        /// `,` or `;` (default: found from the header line).
        #[arg(long)]
        delimiter: Option<char>,
        /// Data rows to pass over first: the rows_done of an interrupted import.
        #[arg(long, default_value_t = 0)]
        skip_rows: u64,
        /// Also emit lead.created / lead.updated per lead (leads.imported is always sent).
        #[arg(long)]
        lead_events: bool,
    },
    /// Export leads as CSV (every field, custom fields as custom.KEY columns), to
    /// standard output or a file.
    Export {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        /// Only leads in this status (repeat for any of several).
        #[arg(long)]
        status: Vec<String>,
        /// Only leads from this source.
        #[arg(long)]
        source: Option<String>,
        /// Only leads with this tag (repeat: all of them).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Only leads matching this text.
        #[arg(long)]
        q: Option<String>,
        /// Archived leads: false (left out, the default), true (only them) or any.
        #[arg(long, value_parser = ["false", "true", "any"])]
        archived: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check every setting and print the effective configuration, secrets masked.
    Check,
}

/// What ends a command: a bad setting (exit 2) or a failure (exit 1).
enum Failure {
    Config(ConfigError),
    Other(String),
}

impl Failure {
    /// Says what was being done when a failure (not a bad setting) happened.
    fn context(self, doing: &str) -> Self {
        match self {
            Failure::Other(e) => Failure::Other(format!("{doing}: {e}")),
            config => config,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<crm::Error> for Failure {
    fn from(e: crm::Error) -> Self {
        match e {
            crm::Error::Config(m) => Failure::Config(ConfigError(m)),
            other => Failure::Other(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.settings.clone().with_file(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(Failure::Config(e)),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(Failure::Other(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(code) => code,
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    match f {
        Failure::Config(e) => {
            eprintln!("crm: configuration error: {e}");
            ExitCode::from(2)
        }
        Failure::Other(e) => {
            eprintln!("crm: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command, settings: Settings) -> Result<ExitCode, Failure> {
    let cfg = settings.check()?;
    serve::init_logs(cfg.log_format)?;
    match command {
        Command::Config(ConfigCommand::Check) => {
            for (key, env, value) in settings.describe() {
                say!("{key} = {value}    # {env}");
            }
            say!("# configuration OK");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => serve::serve(cfg).await,
        Command::Migrate {
            check,
            row_level_security,
        } => {
            if check && cfg.database_url.is_none() && !setup::default_db(&cfg).exists() {
                say!(
                    "no database at {} yet: every migration is pending",
                    setup::default_db(&cfg).display()
                );
                return Ok(ExitCode::from(1));
            }
            // Migrations run as the tables' owner, whom row-level security does not
            // bind: `crm migrate` ignores CRM_ROW_LEVEL_SECURITY.
            let cfg = config::Config {
                row_level_security: false,
                ..cfg
            };
            let crm = setup::open(&cfg, false).await?;
            if check {
                let pending = crm.pending_migrations().await?;
                crm.close().await;
                if pending.is_empty() {
                    say!("the schema is current");
                    return Ok(ExitCode::SUCCESS);
                }
                say!("pending migrations: {pending:?}");
                return Ok(ExitCode::from(1));
            }
            let applied = crm.migrate().await?;
            if applied.is_empty() {
                say!("the schema is current; nothing to do");
            } else {
                say!("applied migrations: {applied:?}");
            }
            if let Some(rls) = row_level_security {
                let on = rls == "on";
                let done = crm.set_row_level_security(on).await;
                crm.close().await;
                done?;
                say!("row-level security is {rls} for crm's tables");
            } else {
                crm.close().await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            let crm = setup::in_memory(&cfg).await?;
            let doc = crm::http::openapi(crm.clone(), setup::router_config(&cfg));
            let text = serde_json::to_string_pretty(&doc)
                .map_err(|e| Failure::Other(format!("cannot write the document: {e}")))?;
            say!("{text}");
            crm.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::User(cmd) => {
            let crm = setup::open(&cfg, true).await?;
            let r = user(&crm, cmd).await;
            crm.close().await;
            r
        }
        Command::ApiKey(cmd) => {
            let crm = setup::open(&cfg, true).await?;
            let r = api_key(&crm, cmd).await;
            crm.close().await;
            r
        }
        Command::Leads(cmd) => {
            let crm = setup::open(&cfg, true).await?;
            let leads = crm
                .workspace(WorkspaceId::DEFAULT)
                .leads()
                .with_actor("cli");
            let r = match cmd {
                LeadsCommand::Export { .. } => transfer::export(&leads, cmd).await,
                LeadsCommand::Import { .. } => transfer::import(&leads, cmd).await,
            };
            crm.close().await;
            r
        }
    }
}

const CLI: Actor<'static> = Actor::App(Some("cli"));

async fn user(crm: &crm::Crm, cmd: UserCommand) -> Result<ExitCode, Failure> {
    let auth = crm.workspace(WorkspaceId::DEFAULT).auth();
    match cmd {
        UserCommand::Create {
            email,
            name,
            role,
            password,
        } => {
            // Checked here for a message naming the flag; the service checks it again.
            role.parse::<Role>()
                .map_err(|e: String| Failure::Other(format!("--role: {e}")))?;
            let (password, generated) = match password {
                Some(p) => (p, false),
                None => (setup::generated_password(), true),
            };
            let user = auth
                .create_user(
                    NewUser {
                        email,
                        display_name: name,
                        role: Some(role),
                        password: password.clone(),
                    },
                    CLI,
                )
                .await?;
            say!(
                "created user {} ({}, {})",
                user.id,
                user.email.as_str(),
                user.role
            );
            if generated {
                say!("password: {password}   (shown once)");
            }
        }
        UserCommand::List => {
            for u in auth.users().await? {
                say!("{}", json(&u)?);
            }
        }
        UserCommand::Disable { email } => {
            let users = auth.users().await?;
            let Some(u) = users
                .iter()
                .find(|u| u.email.as_str().eq_ignore_ascii_case(email.trim()))
            else {
                return Err(Failure::Other(format!("no user with the email {email:?}")));
            };
            let u = auth.disable_user(u.id, CLI).await?;
            say!("disabled user {} ({})", u.id, u.email.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn api_key(crm: &crm::Crm, cmd: ApiKeyCommand) -> Result<ExitCode, Failure> {
    let keys = crm
        .workspace(WorkspaceId::DEFAULT)
        .api_keys()
        .with_actor("cli");
    match cmd {
        ApiKeyCommand::Create { name, scopes } => {
            let created = keys
                .create(NewApiKey {
                    name,
                    scopes,
                    expires_at: None,
                })
                .await?;
            say!("created API key {} ({})", created.key.id, created.key.name);
            say!("secret: {}   (shown once)", created.secret.expose());
        }
        ApiKeyCommand::List => {
            for k in keys.list().await? {
                say!("{}", json(&k)?);
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let id = id
                .trim()
                .parse()
                .map_err(|_| Failure::Other(format!("{id:?} is not an API key id")))?;
            let k = keys.revoke(id).await?;
            say!("revoked API key {} ({})", k.id, k.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn json(v: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string(v).map_err(|e| Failure::Other(format!("cannot print: {e}")))
}
