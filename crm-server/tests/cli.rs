//! The `crm` binary as an operator runs it, against temporary data directories: the
//! configuration table (every bad setting is exit 2 with one line naming it, and
//! nothing is written), the administration commands, and `serve` (probes, metrics,
//! the access log, and a SIGTERM that lets an in-flight request finish).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const PW: &str = "Correct-Horse-9-Battery";

/// `crm` with a clean environment (no CRM_* or DATABASE_URL from the caller's shell).
fn crm(dir: &Path) -> Command {
    clean(Command::new(env!("CARGO_BIN_EXE_crm")), dir)
}

/// `c` without the caller's CRM_*, DATABASE_URL and RUST_LOG, on data directory `dir`.
fn clean(mut c: Command, dir: &Path) -> Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("CRM_") || k == "DATABASE_URL" || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("CRM_DATA_DIR", dir);
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run crm");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Mail settings that only fail together: a bad SMTP URL (never echoed: it may hold
/// a password), and two mail providers at once.
#[test]
fn mail_settings_are_checked_together() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("CRM_SMTP_URL", "http://user:hunter2@mail.example.com"),
                ("CRM_SMTP_FROM", "crm@example.com"),
            ],
            "CRM_SMTP_URL",
        ),
        (
            &[
                ("CRM_SMTP_URL", "smtps://user:hunter2@mail.example.com"),
                ("CRM_SMTP_FROM", "not an address"),
            ],
            "CRM_SMTP_FROM",
        ),
        (
            &[
                ("CRM_SMTP_URL", "smtps://user:hunter2@mail.example.com"),
                ("CRM_SMTP_FROM", "crm@example.com"),
                ("RESEND_API_KEY", "re_hunter2"),
                ("RESEND_FROM", "crm@example.com"),
            ],
            "set one",
        ),
    ];
    for (vars, says) in cases {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let mut c = crm(&data);
        for (k, v) in *vars {
            c.env(k, v);
        }
        let (code, out, err) = run(c.args(["config", "check"]));
        assert_eq!(code, 2, "{vars:?}: {out}{err}");
        assert!(err.contains(says), "{vars:?}: {err}");
        assert!(!err.contains("hunter2"), "a secret is never echoed: {err}");
    }
    // Both SMTP settings, well formed: the configuration checks out.
    let dir = tempfile::tempdir().expect("dir");
    let (code, out, err) = run(crm(&dir.path().join("data"))
        .env("CRM_SMTP_URL", "smtps://user:hunter2@mail.example.com")
        .env("CRM_SMTP_FROM", "CRM <crm@example.com>")
        .args(["config", "check"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}{err}"
    );
}

#[test]
fn every_bad_setting_exits_2_naming_it_and_writes_nothing() {
    let cases: &[(&str, &str, &str)] = &[
        ("CRM_API_KEY_PER_MINUTE", "abc", "CRM_API_KEY_PER_MINUTE"),
        ("CRM_API_KEY_PER_MINUTE", "0", "CRM_API_KEY_PER_MINUTE"),
        (
            "CRM_API_KEY_PER_MINUTE",
            "100000000",
            "finer than a per-minute policy",
        ),
        ("CRM_ANON_PER_MINUTE", "-5", "CRM_ANON_PER_MINUTE"),
        ("CRM_TRUST_PROXY", "10.0.0/8x", "CRM_TRUST_PROXY"),
        (
            "CRM_WEBHOOK_ALLOW_NETWORKS",
            "intranet",
            "CRM_WEBHOOK_ALLOW_NETWORKS",
        ),
        ("CRM_LOG_FORMAT", "xml", "CRM_LOG_FORMAT"),
        ("CRM_S3_PREFIX", "prod/", "needs CRM_S3_BUCKET"),
        ("CRM_MAX_FILE_BYTES", "0", "CRM_MAX_FILE_BYTES"),
        ("CRM_STORAGE_QUOTA_BYTES", "lots", "CRM_STORAGE_QUOTA_BYTES"),
        ("CRM_LOG", "info,crm=loud", "CRM_LOG"),
        ("CRM_MASTER_KEY", "not-a-key", "CRM_MASTER_KEY"),
        ("CRM_MASTER_KEY", " ", "CRM_MASTER_KEY is set but blank"),
        ("DATABASE_URL", "mysql://localhost/crm", "DATABASE_URL"),
        ("CRM_ADDR", "localhost", "CRM_ADDR"),
        ("CRM_RETENTION_DAYS", "-1", "CRM_RETENTION_DAYS"),
        ("CRM_REGISTRATION", "maybe", "CRM_REGISTRATION"),
        (
            "CRM_REQUIRE_VERIFIED_EMAIL",
            "maybe",
            "CRM_REQUIRE_VERIFIED_EMAIL",
        ),
        ("CRM_PUBLIC_URL", "crm.example.com", "CRM_PUBLIC_URL"),
        (
            "CRM_SMTP_URL",
            "smtp://mail.example.com",
            "CRM_SMTP_URL and CRM_SMTP_FROM: set both",
        ),
        (
            "CRM_PUBLIC_URL",
            "https://crm.example.com/?a=1",
            "CRM_PUBLIC_URL",
        ),
        (
            "CRM_PUBLIC_URL",
            "https://user@crm.example.com",
            "CRM_PUBLIC_URL",
        ),
        (
            "CRM_DISPATCHER_CONCURRENCY",
            "100000",
            "CRM_DISPATCHER_CONCURRENCY",
        ),
        ("CRM_HEADER_TIMEOUT_SECS", "0", "CRM_HEADER_TIMEOUT_SECS"),
        ("RESEND_API_KEY", "re_123", "RESEND_FROM"),
        ("CRM_ALLOWED_ORIGINS", "*", "CRM_ALLOWED_ORIGINS"),
        (
            "CRM_ALLOWED_ORIGINS",
            "app.example.com",
            "CRM_ALLOWED_ORIGINS",
        ),
        ("CRM_ADMIN_EMAIL", "not-an-email", "CRM_ADMIN_EMAIL"),
        ("CRM_ADMIN_PASSWORD", "short", "CRM_ADMIN_PASSWORD"),
        (
            "CRM_HOUSEKEEPING_INTERVAL_SECS",
            "10000000000000000000",
            "CRM_HOUSEKEEPING_INTERVAL_SECS",
        ),
        (
            "CRM_SHUTDOWN_TIMEOUT_SECS",
            "99999",
            "CRM_SHUTDOWN_TIMEOUT_SECS",
        ),
    ];
    for (name, value, says) in cases {
        for command in [&["config", "check"][..], &["serve"][..]] {
            let dir = tempfile::tempdir().expect("dir");
            let data = dir.path().join("data");
            let (code, out, err) = run(crm(&data).env(name, value).args(command));
            assert_eq!(code, 2, "{name}={value} {command:?}: {out}{err}");
            assert_eq!(err.lines().count(), 1, "{name}={value}: one line: {err}");
            assert!(err.contains(says), "{name}={value}: {err}");
            assert!(
                !err.contains("panicked") && !err.contains("backtrace"),
                "{err}"
            );
            let secrets = [
                "CRM_MASTER_KEY",
                "RESEND_API_KEY",
                "CRM_ADMIN_PASSWORD",
                "CRM_SMTP_URL",
            ];
            if secrets.contains(name) && !value.trim().is_empty() {
                assert!(!err.contains(value), "a secret is never echoed: {err}");
            }
            assert!(!data.exists(), "{name}={value}: nothing is written");
        }
    }
    // The same rule for a TOML file, and for an unknown key in it.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("crm.toml");
    std::fs::write(&file, "api_key_per_minute = 0\n").expect("write");
    let (code, _, err) = run(crm(&dir.path().join("d"))
        .args(["--config"])
        .arg(&file)
        .args(["config", "check"]));
    assert_eq!(code, 2);
    assert!(err.contains("CRM_API_KEY_PER_MINUTE"), "{err}");
    std::fs::write(&file, "api_key_per_minut = 10\n").expect("write");
    let (code, _, err) = run(crm(&dir.path().join("d"))
        .args(["--config"])
        .arg(&file)
        .args(["config", "check"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown setting \"api_key_per_minut\""),
        "{err}"
    );
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_and_secrets_are_masked() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("crm.toml");
    std::fs::write(
        &file,
        "api_key_per_minute = 7\nanon_per_minute = 8\nretention_days = 9\nwebhook_allow_networks = [\"10.0.0.0/8\", \"127.0.0.1\"]\n",
    )
    .expect("write");
    let (code, out, err) = run(crm(&dir.path().join("d"))
        .env("CRM_ANON_PER_MINUTE", "80")
        .env("CRM_RETENTION_DAYS", "90")
        .env("CRM_ADMIN_PASSWORD", PW)
        .args(["--retention-days", "900", "--config"])
        .arg(&file)
        .args(["config", "check"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("api_key_per_minute = 7 "), "{out}");
    assert!(out.contains("anon_per_minute = 80 "), "{out}");
    assert!(out.contains("retention_days = 900 "), "{out}");
    assert!(
        out.contains("webhook_allow_networks = 10.0.0.0/8,127.0.0.1 "),
        "{out}"
    );
    assert!(out.contains("admin_password = ******** (set)"), "{out}");
    assert!(!out.contains(PW) && !err.contains(PW));
}

#[test]
fn administration_commands() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    // Neither a check nor the document writes anything.
    let (code, out, _) = run(crm(&data).args(["migrate", "--check"]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("every migration is pending"), "{out}");
    let (code, out, _) = run(crm(&data).args(["openapi"]));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/leads"].is_object());
    assert!(!data.exists(), "nothing written");
    // After `migrate`, the check passes.
    std::fs::create_dir_all(&data).expect("dir");
    let (code, _, _) = run(crm(&data).args(["migrate"]));
    assert_eq!(code, 0);
    let db = format!("sqlite://{}", data.join("crm.db").display());
    let (code, out, _) = run(crm(&data).args(["--database-url", &db, "migrate", "--check"]));
    assert_eq!((code, out.as_str()), (0, "the schema is current\n"));
    std::fs::remove_dir_all(&data).expect("clean");
    let (code, out, _) = run(crm(&data).args(["migrate"]));
    assert_eq!(code, 0);
    assert!(out.starts_with("applied migrations:"), "{out}");
    let (code, out, _) = run(crm(&data).args(["migrate", "--check"]));
    assert_eq!((code, out.as_str()), (0, "the schema is current\n"));
    // Row-level security is Postgres's: on SQLite the step is refused.
    let (code, out, err) = run(crm(&data).args(["migrate", "--row-level-security", "on"]));
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("row-level security is a Postgres feature"),
        "{err}"
    );
    let (code, _, err) = run(crm(&data).args(["migrate", "--row-level-security", "maybe"]));
    assert_eq!(code, 2, "{err}");
    // A check changes nothing, so it takes no row-level-security step.
    let (code, _, err) = run(crm(&data).args(["migrate", "--check", "--row-level-security", "on"]));
    assert_eq!(code, 2, "{err}");

    // Users: created with the password from the environment, listed, disabled.
    let (code, out, err) = run(crm(&data).env("CRM_USER_PASSWORD", PW).args([
        "user",
        "create",
        "--email",
        "bo@example.com",
        "--name",
        "Bo",
        "--role",
        "admin",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(bo@example.com, admin)") && !out.contains(PW),
        "{out}"
    );
    let (code, out, _) = run(crm(&data).args([
        "user",
        "create",
        "--email",
        "cy@example.com",
        "--name",
        "Cy",
    ]));
    assert_eq!(code, 0);
    assert!(
        out.contains("password: Crm-"),
        "a generated password is shown once: {out}"
    );
    let (code, _, err) = run(crm(&data).args([
        "user",
        "create",
        "--email",
        "x@example.com",
        "--name",
        "X",
        "--role",
        "boss",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("--role"), "{err}");
    let (_, out, _) = run(crm(&data).args(["user", "list"]));
    let users: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(users.len(), 2);
    assert!(users
        .iter()
        .all(|u| u["disabled_at"].is_null() && u.get("password_hash").is_none()));
    let (code, out, _) = run(crm(&data).args(["user", "disable", "bo@example.com"]));
    assert_eq!(code, 0);
    assert!(out.starts_with("disabled user"), "{out}");
    let (_, out, _) = run(crm(&data).args(["user", "list"]));
    assert!(out
        .lines()
        .any(|l| l.contains("bo@example.com") && !l.contains("\"disabled_at\":null")));
    let (code, _, err) = run(crm(&data).args(["user", "disable", "nobody@example.com"]));
    assert_eq!(code, 1);
    assert!(err.contains("no user"), "{err}");

    // API keys: the secret once, never in the list; revoked by id.
    let (code, out, _) =
        run(crm(&data).args(["api-key", "create", "--name", "ci", "--scope", "leads:read"]));
    assert_eq!(code, 0);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .and_then(|l| l.split_whitespace().next())
        .expect("secret line")
        .to_owned();
    let (_, list, _) = run(crm(&data).args(["api-key", "list"]));
    assert!(!list.contains(&secret));
    let key: serde_json::Value =
        serde_json::from_str(list.lines().next().expect("a key")).expect("json");
    let id = key["id"].as_str().expect("id").to_owned();
    let (code, out, _) = run(crm(&data).args(["api-key", "revoke", &id]));
    assert_eq!(code, 0);
    assert!(out.starts_with("revoked API key"), "{out}");
    let (code, _, err) = run(crm(&data).args(["api-key", "revoke", "nope"]));
    assert_eq!(code, 1);
    assert!(err.contains("not an API key id"), "{err}");
    let (code, _, err) =
        run(crm(&data).args(["api-key", "create", "--name", "x", "--scope", "everything"]));
    assert_eq!(code, 1);
    assert!(err.contains("unknown scope"), "{err}");
}

/// Starts `crm serve` on a free port; returns the child and its base URL.
async fn serve(
    data: &Path,
    extra: &[(&str, &str)],
) -> (
    tokio::process::Child,
    String,
    tokio::task::JoinHandle<String>,
) {
    let mut c = tokio::process::Command::from(crm(data));
    c.args(["--addr", "127.0.0.1:0", "serve"])
        .env("CRM_ADMIN_PASSWORD", PW)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in extra {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stdout.next_line().await.expect("read") {
            if let Some(addr) = line.strip_prefix("crm listening on ") {
                return addr.to_owned();
            }
        }
        panic!("crm serve ended before listening");
    })
    .await
    .expect("listening in time");
    let mut stderr = child.stderr.take().expect("stderr");
    let logs = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    (child, base, logs)
}

#[tokio::test]
async fn serve_answers_probes_counts_requests_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let (code, out, _) = run(crm(&data).args([
        "api-key",
        "create",
        "--name",
        "t",
        "--scope",
        "leads:write",
        "--scope",
        "leads:read",
    ]));
    assert_eq!(code, 0);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .and_then(|l| l.split_whitespace().next())
        .expect("secret")
        .to_owned();
    let (mut child, base, logs) = serve(&data, &[("CRM_LOG_FORMAT", "json")]).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();
    assert_eq!(
        get("/livez")
            .await
            .expect("livez")
            .text()
            .await
            .expect("body"),
        "ok"
    );
    let ready = get("/readyz").await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let lead = http
        .post(format!("{base}/api/v1/leads"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "Ana", "email": "ana@example.com"}))
        .send()
        .await
        .expect("create");
    assert_eq!(lead.status(), 201);
    let list = http
        .get(format!("{base}/api/v1/leads?q=private-search-term"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("list");
    assert_eq!(list.status(), 200);
    let metrics = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains(
            r#"crm_http_requests_total{method="POST",route="/api/v1/leads",status="201"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"crm_http_request_duration_seconds_bucket{method="GET",route="/readyz""#));

    // A request in flight when SIGTERM comes is answered, then the process exits 0.
    let addr = base.trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let body = br#"{"name":"Bo","email":"bo@example.com"}"#;
    let head = format!(
        "POST /api/v1/leads HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(&body[..10]).await.expect("part");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(&body[10..]).await.expect("rest");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits in time")
        .expect("status");
    assert_eq!(status.code(), Some(0));

    // One JSON access line per request, with the route template, never the query.
    let logs = logs.await.expect("logs");
    assert!(!logs.contains("private-search-term"), "{logs}");
    assert!(!logs.contains(&key));
    assert!(!logs.contains('\u{1b}'), "no ANSI codes in a file");
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "request")
        .collect();
    assert!(access
        .iter()
        .any(|v| v["route"] == "/api/v1/leads" && v["method"] == "GET" && v["status"] == 200));
    assert!(access
        .iter()
        .all(|v| v["request_id"].as_str().is_some() && v["latency_ms"].is_number()));
    assert!(logs.contains("stopping: draining"), "{logs}");
}

/// `crm leads import` and `crm leads export`: progress lines when standard error is
/// not a terminal, a bar when it is, the report, the exit code, and the CSV out.
#[test]
fn leads_import_and_export_commands() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("dir");
    let file = dir.path().join("leads.csv");
    let mut csv = String::from("Full name;E-mail;Plan\n");
    for i in 0..2_500 {
        csv.push_str(&format!("Person {i};p{i}@example.com;gold\n"));
    }
    csv.push_str("Broken;not-an-email;\n");
    std::fs::write(&file, &csv).expect("write");
    let file = file.to_str().expect("path");
    let maps = ["--map", "Full name=name", "--map", "Plan=custom.plan"];

    // Not a terminal: plain progress lines on stderr, the report on stdout, exit 1
    // because a row failed.
    let (code, out, err) = run(crm(&data).args(["leads", "import", file]).args(maps));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("2501 rows: 2500 created, 0 updated, 0 skipped, 1 failed"),
        "{out}"
    );
    assert!(out.contains("row 2501 (line 2502) email:"), "{out}");
    assert!(err.contains("crm: 2501/2501 rows, 2500 created"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no terminal codes off a terminal: {err}"
    );

    // A dry run of the same file: nothing new.
    let (code, out, _) = run(crm(&data)
        .args(["leads", "import", "--dry-run", file])
        .args(maps));
    assert_eq!(code, 1);
    assert!(
        out.starts_with("dry run: 2501 rows: 0 created, 0 updated, 2500 skipped, 1 failed"),
        "{out}"
    );
    // A mapping to no field stops before anything is read.
    let (code, _, err) = run(crm(&data).args(["leads", "import", file, "--map", "Plan=plan"]));
    assert_eq!(code, 1);
    assert!(err.contains("mapping.Plan"), "{err}");

    // On a terminal (a pseudo-terminal through util-linux `script`): a bar.
    let cmd = format!(
        "{} leads import --map 'Full name=name' --map Plan=custom.plan {file}",
        env!("CARGO_BIN_EXE_crm")
    );
    let (code, tty, _) = run(clean(Command::new("script"), &data)
        .env("TERM", "xterm")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"]));
    assert_eq!(code, 1, "{tty}");
    assert!(
        tty.contains('\u{1b}'),
        "a bar is drawn on a terminal: {tty:?}"
    );
    assert!(
        tty.contains("2501 rows: 0 created, 0 updated, 2500 skipped, 1 failed"),
        "{tty}"
    );

    // Export: every lead as CSV to stdout, or filtered to a file.
    let (code, out, _) = run(crm(&data).args(["leads", "export"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2_501);
    assert!(
        lines[0].starts_with(r#""id","name","email","phone","#),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with(r#","custom.plan""#));
    let csv_out = dir.path().join("out.csv");
    let (code, _, err) = run(crm(&data).args([
        "leads",
        "export",
        "--q",
        "p1234",
        "-o",
        csv_out.to_str().expect("path"),
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported 1 leads"), "{err}");
    let written = std::fs::read_to_string(&csv_out).expect("read");
    assert!(
        written.contains(r#""Person 1234","p1234@example.com""#),
        "{written}"
    );
}
