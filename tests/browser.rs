//! The admin web app (`/admin`) in a real browser: Debian's chromium, headless,
//! driven through chromedriver (WebDriver) against the router on a real socket,
//! over SQLite, with a real webhook receiver and dispatcher.
//!
//! `scripts/test.sh` installs `chromium` and `chromium-driver` when they are
//! missing. Elsewhere, set `CRM_CHROMEDRIVER` and `CRM_CHROMIUM` to their paths.
//! A screenshot (PNG) of every page goes to `target/test-artifacts/browser/` (or
//! `CRM_TEST_ARTIFACTS`), and one of the page a failed step was on.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use common::receiver::Receiver;
use common::TestDb;
use crm::auth::{Actor, NewUser};
use crm::http::Config;
use crm::webhooks::DispatcherConfig;
use crm::{Crm, WorkspaceId};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "Correct-Horse-42!";
const OWNER: &str = "owner@example.com";
const MEMBER: &str = "member@example.com";

/// chromedriver, stopped when the test ends however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn path_of(var: &str, default: &str) -> Result<PathBuf> {
    let p = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()));
    ensure!(
        p.exists(),
        "{} not found: run scripts/test.sh (it installs Debian's chromium and chromium-driver), \
         or set {var}",
        p.display()
    );
    Ok(p)
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

async fn start_driver() -> Result<(Driver, String)> {
    let bin = path_of("CRM_CHROMEDRIVER", "/usr/bin/chromedriver")?;
    let port = free_port()?;
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start chromedriver")?;
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{url}/status")).send().await.is_ok() {
            return Ok((driver, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("chromedriver did not answer on {url}")
}

/// The browser, the app's address and where screenshots go.
struct Browser {
    c: Client,
    base: String,
    shots: PathBuf,
    n: AtomicUsize,
}

impl Browser {
    async fn go(&self, path: &str) -> Result<()> {
        self.c.goto(&format!("{}{path}", self.base)).await?;
        Ok(())
    }

    /// The path (and query) of the page the browser is on.
    async fn at(&self) -> Result<String> {
        let u = self.c.current_url().await?;
        Ok(match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        })
    }

    async fn shot(&self, name: &str) -> Result<()> {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let png = self.c.screenshot().await?;
        std::fs::write(self.shots.join(format!("{n:02}-{name}.png")), png)?;
        Ok(())
    }

    async fn find(&self, css: &str) -> Result<fantoccini::elements::Element> {
        self.c
            .wait()
            .at_most(Duration::from_secs(5))
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no `{css}` on {}", self.base))
    }

    async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let e = self.find(css).await?;
        e.clear().await?;
        e.send_keys(text).await?;
        Ok(())
    }

    /// Clicks `css` and waits for the page it leads to (the old page's root element
    /// goes stale, then the new one has loaded).
    async fn click(&self, css: &str) -> Result<()> {
        let old = self.c.find(Locator::Css("html")).await?;
        self.find(css).await?.click().await?;
        for _ in 0..100 {
            if old.tag_name().await.is_err() {
                let ready = self
                    .c
                    .execute("return document.readyState;", vec![])
                    .await?;
                if ready == "complete" {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("clicking `{css}` led to no new page")
    }

    /// Clicks `css` on this page (a checkbox, an option): no navigation.
    async fn tick(&self, css: &str) -> Result<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    async fn text(&self, css: &str) -> Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    async fn value(&self, css: &str) -> Result<String> {
        Ok(self
            .find(css)
            .await?
            .prop("value")
            .await?
            .unwrap_or_default())
    }

    /// Reloads the page until it has at least `n` elements `css` (up to 5 s, the
    /// dispatcher writes an attempt a cycle after the delivery); how many it has.
    async fn rows_after_reload(&self, css: &str, n: usize) -> Result<usize> {
        let mut rows = 0;
        for _ in 0..50 {
            self.c.refresh().await?;
            rows = self.c.find_all(Locator::Css(css)).await?.len();
            if rows >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(rows)
    }

    async fn has(&self, css: &str) -> Result<bool> {
        Ok(!self.c.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// Picks `value` in the `<select>` `css` (through the keyboard-free WebDriver
    /// way: clicking the option).
    async fn select(&self, css: &str, value: &str) -> Result<()> {
        self.tick(&format!("{css} option[value=\"{value}\"]")).await
    }

    /// Whether any script planted by the XSS payloads ran.
    async fn no_script_ran(&self) -> Result<()> {
        let ran = self
            .c
            .execute(
                "return window.__xss === undefined ? null : String(window.__xss);",
                vec![],
            )
            .await?;
        ensure!(ran.is_null(), "an injected script ran: {ran}");
        Ok(())
    }

    async fn sign_in(&self, email: &str) -> Result<()> {
        self.fill("#f-email", email).await?;
        self.fill("#f-password", PASSWORD).await?;
        self.click("#sign-in").await
    }
}

async fn user(crm: &Crm, email: &str, role: &str) -> Result<()> {
    crm.workspace(WorkspaceId::DEFAULT)
        .auth()
        .create_user(
            NewUser {
                email: email.into(),
                display_name: format!("{role} user"),
                role: Some(role.into()),
                password: PASSWORD.into(),
            },
            Actor::App(None),
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_app_in_a_real_browser() {
    let shots = std::env::var("CRM_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/browser")
        });
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("artifacts folder");
    println!("browser screenshots: {}", shots.display());

    let (_driver, driver_url) = start_driver().await.expect("chromedriver");
    let chromium = path_of("CRM_CHROMIUM", "/usr/bin/chromium").expect("chromium");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--lang=en-US"]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("an object")
    };
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .expect("a chromium session");

    let db = TestDb::sqlite().await;
    let crm = db
        .builder()
        .webhook_allow_networks(["127.0.0.1"])
        .connect()
        .await
        .expect("connect");
    user(&crm, OWNER, "owner").await.expect("owner");
    user(&crm, MEMBER, "member").await.expect("member");
    let receiver = Receiver::ok().await;
    let stop = CancellationToken::new();
    let dispatcher = crm
        .start_dispatcher(
            DispatcherConfig {
                poll_interval: Duration::from_millis(50),
                jitter: 0.0,
                ..Default::default()
            },
            stop.clone(),
        )
        .expect("dispatcher");
    let router = Config::new()
        .insecure_cookie("crm_session")
        .router::<()>(crm.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let b = Browser {
        c,
        base: format!("http://{addr}"),
        shots,
        n: AtomicUsize::new(0),
    };
    let outcome = steps(&b, &db, &crm, &receiver).await;
    if outcome.is_err() {
        let _ = b.shot("failed").await;
    }
    let _ = b.c.clone().close().await;
    stop.cancel();
    let _ = dispatcher.await;
    server.abort();
    if let Err(e) = outcome {
        panic!("browser step failed (screenshot `failed` in the artifacts folder): {e:#}");
    }
}

async fn steps(b: &Browser, db: &TestDb, crm: &Crm, receiver: &Receiver) -> Result<()> {
    // Signed out, a page sends to the sign-in page, which comes back to it.
    b.go("/admin/leads").await?;
    ensure!(
        b.at()
            .await?
            .starts_with("/admin/login?next=%2Fadmin%2Fleads"),
        "at {}",
        b.at().await?
    );
    b.shot("sign-in").await?;
    b.go("/admin/forgot-password").await?;
    ensure!(b.text("h1").await? == "Forgot your password?");
    b.shot("forgot-password").await?;
    b.go("/admin/leads").await?;
    b.fill("#f-email", OWNER).await?;
    b.fill("#f-password", "a wrong password").await?;
    b.click("#sign-in").await?;
    ensure!(b.text("#f-password-error").await?.contains("wrong"));
    ensure!(b.value("#f-email").await? == OWNER, "the email is kept");
    b.shot("sign-in-refused").await?;
    b.sign_in(OWNER).await?;
    b.find("#f-q").await?;
    ensure!(
        b.at().await? == "/admin/leads",
        "back to the page asked for: {}",
        b.at().await?
    );

    // A lead by pasting a message, with a mistake first, then XSS in every field.
    b.go("/admin/leads/new").await?;
    b.shot("new-lead").await?;
    b.fill(
        "#f-text",
        "Hi, I am Ana López, ana@example.com, +34 600 123 456. We need a booking app for our bakery.",
    )
    .await?;
    b.click("#parse").await?;
    ensure!(
        b.value("#f-email").await? == "ana@example.com",
        "parsed email"
    );
    ensure!(b.value("#f-phone").await?.contains("600"), "parsed phone");
    b.shot("new-lead-parsed").await?;
    // The browser checks the email's shape itself; the phone's rule is the server's.
    b.fill("#f-phone", "600 123 456").await?;
    b.fill("#f-name", "<img src=x onerror=\"window.__xss='name'\">Ana")
        .await?;
    b.click("#save-lead").await?;
    b.find("#f-phone-error")
        .await
        .context("the phone's error is next to it")?;
    ensure!(
        b.value("#f-phone").await? == "600 123 456",
        "what was typed is kept"
    );
    ensure!(
        b.value("#f-name").await?.ends_with(">Ana"),
        "the name is kept"
    );
    b.shot("new-lead-refused").await?;
    b.fill("#f-phone", "+34 600 123 456").await?;
    b.fill(
        "#f-tags",
        "vip, <b onmouseover=\"window.__xss='tag'\">hot</b>",
    )
    .await?;
    b.fill("#f-notes", "<script>window.__xss='notes'</script>")
        .await?;
    b.fill(
        "#f-custom",
        r#"{"score": 5, "x": "<script>window.__xss='custom'</script>"}"#,
    )
    .await?;
    b.click("#save-lead").await?;
    ensure!(
        b.text("h1").await? == "<img src=x onerror=\"window.__xss='name'\">Ana",
        "the name as text"
    );
    ensure!(b.text(".notice").await?.contains("Created"));
    b.no_script_ran().await?;
    let lead_page = b
        .at()
        .await?
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    b.shot("lead").await?;

    // Edit, status change (a timeline entry), a note.
    let notes = b.value("#f-notes").await?;
    let custom = b.value("#f-custom").await?;
    let tags = b.value("#f-tags").await?;
    b.fill("#f-company", "Bakery <i>SL</i>").await?;
    b.click("#save-edit").await?;
    ensure!(b.value("#f-company").await? == "Bakery <i>SL</i>");
    ensure!(b.value("#f-notes").await? == notes, "the notes unchanged");
    ensure!(
        b.value("#f-custom").await? == custom,
        "the custom fields unchanged"
    );
    ensure!(b.value("#f-tags").await? == tags, "the tags unchanged");
    b.select("#f-new-status", "contacted").await?;
    b.click("#change-status").await?;
    ensure!(b.text("#lead-status").await? == "contacted");
    ensure!(
        b.text("#timeline").await?.contains("new → contacted"),
        "the timeline shows the change"
    );
    b.fill(
        "#f-description",
        "Called <script>window.__xss='note'</script> back",
    )
    .await?;
    b.click("#add-note").await?;
    ensure!(b.text("#timeline").await?.contains("Called <script>"));
    b.no_script_ran().await?;
    b.shot("lead-contacted").await?;
    b.go("/admin/leads?q=ana").await?;
    ensure!(b.text("table.leads").await?.contains("contacted"));
    b.shot("leads").await?;
    // The test clock stands still: a minute on, the lead made "now" is inside the
    // dashboard's range, which ends before now.
    db.clock.advance(chrono::Duration::minutes(1));
    b.go("/admin").await?;
    ensure!(b.text("#total").await? == "1");
    b.shot("dashboard").await?;
    // On a phone: one column, nothing wider than the screen but the tables' own
    // scrolling boxes.
    b.c.set_window_size(390, 844).await?;
    for (path, name) in [
        ("/admin", "dashboard-phone"),
        (lead_page.as_str(), "lead-phone"),
    ] {
        b.go(path).await?;
        let fits =
            b.c.execute(
                "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
                vec![],
            )
            .await?;
        ensure!(fits == true, "{path} is wider than a phone");
        b.shot(name).await?;
    }
    b.c.set_window_size(1280, 1000).await?;

    // An API key: its secret shown once, and it works.
    b.go("/admin/api-keys").await?;
    b.fill("#f-name", "Website <script>window.__xss='key'</script>")
        .await?;
    b.tick("input[value=\"leads:read\"]").await?;
    b.click("#create-key").await?;
    let secret = b.text("#secret").await?;
    crm.verify_api_key(&secret)
        .await
        .context("the shown key verifies")?;
    b.shot("api-key-created").await?;
    b.go("/admin/api-keys").await?;
    ensure!(!b.has("#secret").await?, "no secret on the next visit");
    ensure!(
        !b.c.source().await?.contains(&secret),
        "the secret is never shown again"
    );
    b.no_script_ran().await?;
    b.shot("api-keys").await?;

    // A webhook endpoint: its secret once, a test event delivered, then resent.
    b.go("/admin/webhooks").await?;
    b.fill("#f-url", &receiver.url).await?;
    b.fill("#f-description", "<script>window.__xss='hook'</script>")
        .await?;
    b.click("#create-endpoint").await?;
    ensure!(b.text("#secret").await?.starts_with("whsec_"));
    b.shot("webhook-created").await?;
    b.click("#endpoint-link").await?;
    b.click("form[action$=\"/test\"] button").await?;
    receiver.wait_for(1).await;
    let rows = b.rows_after_reload("#deliveries tbody tr", 1).await?;
    ensure!(rows == 1, "one delivery shown, not {rows}");
    b.click("button.resend").await?;
    ensure!(b.text(".notice").await?.contains("Queued"));
    receiver.wait_for(2).await;
    let rows = b.rows_after_reload("#deliveries tbody tr", 2).await?;
    ensure!(rows == 2, "the resend shown too, not {rows} rows");
    b.no_script_ran().await?;
    b.shot("webhook-deliveries").await?;

    // A user invited; the other admin pages render.
    b.go("/admin/users").await?;
    b.fill("#f-email", "bo@example.com").await?;
    b.fill("#f-display_name", "Bo <script>window.__xss='user'</script>")
        .await?;
    b.fill("#f-password", "short").await?;
    b.click("#invite").await?;
    b.find("#f-password-error")
        .await
        .context("the password rule next to the field")?;
    ensure!(b.value("#f-email").await? == "bo@example.com");
    b.fill("#f-password", PASSWORD).await?;
    b.click("#invite").await?;
    ensure!(b.text("#users").await?.contains("bo@example.com"));
    b.no_script_ran().await?;
    b.shot("users").await?;
    for (path, name) in [
        ("/admin/notifications", "notifications"),
        ("/admin/settings", "settings"),
        ("/admin/audit", "audit"),
    ] {
        b.go(path).await?;
        ensure!(
            b.has("h1").await? && !b.text("h1").await?.contains("wrong"),
            "{path}"
        );
        b.shot(name).await?;
    }

    // Sign out; a member gets the 403 page on an admin page.
    b.click("#sign-out").await?;
    ensure!(b.at().await?.starts_with("/admin/login"));
    b.go("/admin").await?;
    ensure!(
        b.at().await?.starts_with("/admin/login"),
        "signed out for good"
    );
    b.sign_in(MEMBER).await?;
    b.go("/admin/api-keys").await?;
    ensure!(b.text("h1").await? == "Not allowed");
    ensure!(
        !b.has("a[href$=\"/admin/api-keys\"]").await?,
        "no admin entries for a member"
    );
    b.shot("forbidden").await?;

    // The session runs out: the next page is the sign-in page, then the page asked for.
    db.clock.advance(chrono::Duration::hours(25));
    b.go(&lead_page).await?;
    ensure!(
        b.at().await?.starts_with("/admin/login?next="),
        "expired: {}",
        b.at().await?
    );
    b.shot("session-expired").await?;
    b.sign_in(MEMBER).await?;
    b.find("#timeline").await?;
    ensure!(
        b.at().await? == lead_page,
        "back to {lead_page}: {}",
        b.at().await?
    );
    b.click("#sign-out").await?;
    ensure!(b.at().await?.starts_with("/admin/login"));
    Ok(())
}
