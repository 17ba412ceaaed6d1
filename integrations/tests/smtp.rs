//! The SMTP plugin against a local SMTP server that speaks the protocol and records
//! the exact conversation: notifications and auth mails, AUTH PLAIN, a refused
//! mailbox (permanent), a busy server (retried), a server that is not there.

use std::sync::{Arc, Mutex};

use crm_core::auth::{AuthMail, Mailer, Role, User};
use crm_core::events::EventType;
use crm_core::leads::LeadStatus;
use crm_core::notify::{Notification, Notifier, Outcome};
use crm_core::{ChannelId, EventId, SecretString, UserId, WorkspaceId};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One SMTP conversation as the server saw it: the client's command lines and the
/// message data.
#[derive(Debug, Default, Clone)]
struct Seen {
    commands: Vec<String>,
    data: String,
}

/// A local SMTP server: AUTH PLAIN offered, `refuse@` mailboxes refused with 550,
/// every transaction refused with 451 when `busy`, every AUTH with 535 when
/// `bad_password`.
async fn server_with(busy: bool, bad_password: bool) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let all = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let all = all.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut s = Seen::default();
                let _ = write.write_all(b"220 localhost ESMTP test\r\n").await;
                while let Ok(Some(line)) = lines.next_line().await {
                    s.commands.push(line.clone());
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-localhost\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("AUTH PLAIN") && bad_password {
                        b"535 5.7.8 authentication failed\r\n"
                    } else if upper.starts_with("AUTH PLAIN") {
                        b"235 2.7.0 accepted\r\n"
                    } else if upper.starts_with("MAIL FROM") && busy {
                        b"451 4.3.0 try again later\r\n"
                    } else if upper.starts_with("RCPT TO") && upper.contains("REFUSE@") {
                        b"550 5.1.1 no such mailbox\r\n"
                    } else if upper.starts_with("DATA") {
                        let _ = write.write_all(b"354 go ahead\r\n").await;
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            s.data.push_str(&l);
                            s.data.push('\n');
                        }
                        b"250 2.0.0 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        // MAIL FROM, RCPT TO, RSET, NOOP.
                        b"250 ok\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        break;
                    }
                }
                all.lock().expect("lock").push(s);
            });
        }
    });
    (format!("smtp://crm:s3cret@127.0.0.1:{port}"), seen)
}

async fn server(busy: bool) -> (String, Arc<Mutex<Vec<Seen>>>) {
    server_with(busy, false).await
}

fn smtp(url: &str) -> crm_integrations::smtp::Smtp {
    crm_integrations::smtp::Smtp::new(&SecretString::from(url.to_owned()), "CRM <crm@example.com>")
        .expect("smtp")
}

fn notification() -> Notification {
    Notification {
        event_id: EventId::new(),
        channel_id: ChannelId::new(),
        event_type: EventType::LeadCreated,
        title: "New lead: Ana <b>".into(),
        fields: vec![("Email".into(), "ana@example.com".into())],
        status: Some(LeadStatus::New),
        timestamp: chrono::Utc::now(),
        payload: json!({}),
    }
}

/// The message data with quoted-printable's soft line breaks and `=3D` undone.
fn flat(data: &str) -> String {
    data.replace("=\n", "").replace("=3D", "=")
}

async fn conversations(seen: &Arc<Mutex<Vec<Seen>>>, n: usize) -> Vec<Seen> {
    for _ in 0..200 {
        if seen.lock().expect("lock").len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    seen.lock().expect("lock").clone()
}

#[tokio::test]
async fn a_notification_goes_to_every_recipient_with_auth() {
    let (url, seen) = server(false).await;
    let plugin = smtp(&url);
    let config = json!({"to": ["sales@example.com", "boss@example.com"]});
    assert!(plugin.check_config(&config).is_ok());
    let out = Notifier::send(&plugin, &config, &notification()).await;
    assert!(matches!(out, Outcome::Sent), "{out:?}");
    let s = conversations(&seen, 1).await.remove(0);
    let cmds: Vec<&str> = s.commands.iter().map(String::as_str).collect();
    assert!(cmds[0].starts_with("EHLO "), "{cmds:?}");
    // AUTH PLAIN with "\0crm\0s3cret" in base64.
    assert_eq!(cmds[1], "AUTH PLAIN AGNybQBzM2NyZXQ=");
    assert!(
        cmds[2].starts_with("MAIL FROM:<crm@example.com>"),
        "{cmds:?}"
    );
    assert_eq!(cmds[3], "RCPT TO:<sales@example.com>");
    assert_eq!(cmds[4], "RCPT TO:<boss@example.com>");
    assert_eq!(cmds[5], "DATA");
    assert_eq!(cmds.last(), Some(&"QUIT"));
    assert!(s.data.contains("Subject: New lead: Ana <b>"), "{}", s.data);
    assert!(s.data.contains("multipart/alternative"), "{}", s.data);
    assert!(s.data.contains("text/plain"), "{}", s.data);
    assert!(s.data.contains("text/html"), "{}", s.data);
    // The HTML part escapes the title.
    assert!(
        flat(&s.data).contains("<h2>New lead: Ana &lt;b&gt;</h2>"),
        "{}",
        s.data
    );
}

#[tokio::test]
async fn an_auth_mail_carries_the_link() {
    let (url, seen) = server(false).await;
    let plugin = smtp(&url).with_links(
        "https://crm.example.com/auth/reset-password?token={token}",
        "https://crm.example.com/auth/verify-email?token={token}",
    );
    let now = chrono::Utc::now();
    let user = User {
        id: UserId::new(),
        workspace_id: WorkspaceId::DEFAULT,
        email: crm_core::leads::Email::parse("ana@example.com").expect("email"),
        display_name: "Ana".into(),
        role: Role::Member,
        email_verified_at: None,
        disabled_at: None,
        created_at: now,
        updated_at: now,
    };
    let token = "q3Zx0bM2hVfJ9wYtL4nR8sK1pD6cE5aG7uI0oWjXyZA";
    Mailer::send(
        &plugin,
        AuthMail::EmailVerification {
            user,
            token: SecretString::from(token.to_owned()),
            expires_at: now,
        },
    )
    .await
    .expect("sent");
    let s = conversations(&seen, 1).await.remove(0);
    assert!(s.commands.contains(&"RCPT TO:<ana@example.com>".to_owned()));
    assert!(s.data.contains("Subject: Verify your email"), "{}", s.data);
    let flat = flat(&s.data);
    assert!(
        flat.contains(&format!(
            "https://crm.example.com/auth/verify-email?token={token}"
        )),
        "{flat}"
    );
}

#[tokio::test]
async fn refusals_are_permanent_busy_servers_and_silence_are_retried() {
    let (url, _) = server(false).await;
    let out = Notifier::send(
        &smtp(&url),
        &json!({"to": ["refuse@example.com"]}),
        &notification(),
    )
    .await;
    match out {
        Outcome::Permanent(why) => assert!(why.contains("550"), "{why}"),
        other => panic!("a refused mailbox is permanent: {other:?}"),
    }
    let (busy, _) = server(true).await;
    let out = Notifier::send(
        &smtp(&busy),
        &json!({"to": ["sales@example.com"]}),
        &notification(),
    )
    .await;
    assert!(matches!(out, Outcome::Retry { .. }), "{out:?}");
    // Wrong credentials are the operator's to fix: retried, not a lost mail.
    let (locked, _) = server_with(false, true).await;
    let out = Notifier::send(
        &smtp(&locked),
        &json!({"to": ["sales@example.com"]}),
        &notification(),
    )
    .await;
    match out {
        Outcome::Retry { reason, .. } => assert!(reason.contains("535"), "{reason}"),
        other => panic!("a 535 is retried: {other:?}"),
    }
    // Nobody listens on this port (bound, then closed).
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = Notifier::send(
        &smtp(&format!("smtp://127.0.0.1:{gone}")),
        &json!({"to": ["sales@example.com"]}),
        &notification(),
    )
    .await;
    match out {
        Outcome::Retry { reason, .. } => assert!(!reason.contains("127.0.0.1"), "{reason}"),
        other => panic!("an absent server is retried: {other:?}"),
    }
}

#[test]
fn bad_urls_and_senders_are_config_errors_that_hide_the_url() {
    for url in ["http://mail.example.com", "smtp://", "not a url"] {
        let e = crm_integrations::smtp::Smtp::new(
            &SecretString::from(url.to_owned()),
            "crm@example.com",
        )
        .expect_err("bad url");
        assert!(matches!(e, crm_core::Error::Config(_)));
    }
    let e = crm_integrations::smtp::Smtp::new(
        &SecretString::from("smtp://user:hunter2@mail.example.com".to_owned()),
        "not an address",
    )
    .expect_err("bad sender");
    assert!(!e.to_string().contains("hunter2"));
    let ok = smtp("smtps://user:hunter2@mail.example.com");
    assert!(!format!("{ok:?}").contains("hunter2"));
    // A password over a connection that may stay plain, to another machine: refused.
    for url in [
        "smtp://user:hunter2@mail.example.com",
        "smtp://user:hunter2@mail.example.com:587?tls=opportunistic",
    ] {
        let e = crm_integrations::smtp::Smtp::new(
            &SecretString::from(url.to_owned()),
            "crm@example.com",
        )
        .expect_err("a password in the clear");
        assert!(
            e.to_string().contains("no TLS") && !e.to_string().contains("hunter2"),
            "{e}"
        );
    }
    smtp("smtp://user:hunter2@mail.example.com:587?tls=required");
    smtp("smtp://mail.example.com:25");
}

fn settings(url: &str, from: &str) -> crm_core::providers::Settings {
    [("url", url), ("from", from)]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn refused_field(r: crm_core::Result<()>) -> (String, String) {
    match r {
        Err(crm_core::Error::Validation { errors }) => {
            (errors[0].field.clone(), errors[0].message.clone())
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn the_integration_signs_in_when_saved_and_names_what_failed() {
    use crm_core::providers::Provider;
    let (url, seen) = server(false).await;
    // Loopback is no public address: refused before any connection.
    let (field, message) = refused_field(
        crm_integrations::smtp::SmtpIntegration::new()
            .check(&settings(&url, "CRM <crm@example.com>"))
            .await,
    );
    assert_eq!(field, "settings.url");
    assert!(message.contains("not a public address"), "{message}");
    assert!(seen.lock().expect("lock").is_empty(), "nothing connected");
    let provider = crm_integrations::smtp::SmtpIntegration::new()
        .with_allowed_networks(["127.0.0.1/32".parse().expect("net")]);
    provider
        .check(&settings(&url, "CRM <crm@example.com>"))
        .await
        .expect("accepted");
    let conversation = conversations(&seen, 1).await;
    assert!(conversation[0]
        .commands
        .iter()
        .any(|c| c.starts_with("AUTH PLAIN")));

    let (url, _) = server_with(false, true).await;
    let (field, message) = refused_field(
        provider
            .check(&settings(&url, "CRM <crm@example.com>"))
            .await,
    );
    assert_eq!(field, "settings.url");
    assert!(message.contains("535"), "{message}");
    assert!(
        !message.contains("s3cret"),
        "the password stays out: {message}"
    );
    // Nothing listens there.
    let (field, _) = refused_field(
        provider
            .check(&settings("smtp://127.0.0.1:9", "CRM <crm@example.com>"))
            .await,
    );
    assert_eq!(field, "settings.url");
    let (field, _) = refused_field(provider.check(&settings(&url, "not a sender")).await);
    assert_eq!(field, "settings.from");
    let (field, message) = refused_field(
        provider
            .check(&settings(
                "smtp://crm:s3cret@mail.example.com:587",
                "CRM <crm@example.com>",
            ))
            .await,
    );
    assert_eq!(
        field, "settings.url",
        "a password over a connection that may stay plain"
    );
    assert!(!message.contains("s3cret"));
}
