//! Test databases: a fresh one per test, SQLite (a file in a temp dir, so WAL and
//! several connections are real) or Postgres (a new database in the server named by
//! `CRM_TEST_PG_URL`, which `scripts/test.sh` provides).

#![allow(dead_code)]

pub(crate) mod receiver;
#[cfg(feature = "postgres")]
pub(crate) mod scratch_pg;

use chrono::{TimeZone, Utc};
use crm::{Crm, CrmBuilder, ManualClock, MasterKey};
use sqlx::Connection;

pub(crate) enum Backend {
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

/// A mailer that keeps what it was asked to send.
#[derive(Clone, Default)]
pub(crate) struct Outbox(pub std::sync::Arc<std::sync::Mutex<Vec<crm::auth::AuthMail>>>);

impl crm::auth::Mailer for Outbox {
    fn send(
        &self,
        mail: crm::auth::AuthMail,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = crm::Result<()>> + Send + '_>> {
        self.0.lock().expect("lock").push(mail);
        Box::pin(async { Ok(()) })
    }
}

impl Outbox {
    /// Waits (up to 5 s) for the `n`-th mail: mails are sent from a spawned task.
    pub(crate) async fn nth(&self, n: usize) -> crm::auth::AuthMail {
        for _ in 0..500 {
            if let Some(m) = self.0.lock().expect("lock").get(n) {
                return m.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("mail {n} never came");
    }

    /// Waits for the `n` verification mails that new users get (from spawned tasks),
    /// checks that they are that, and forgets them.
    pub(crate) async fn settle(&self, n: usize) {
        if n > 0 {
            self.nth(n - 1).await;
        }
        let mut mails = self.0.lock().expect("lock");
        assert!(
            mails
                .iter()
                .all(|m| matches!(m, crm::auth::AuthMail::EmailVerification { .. })),
            "a new user's mail verifies their email"
        );
        assert_eq!(mails.len(), n, "one mail per new user");
        mails.clear();
    }

    pub(crate) fn token(mail: &crm::auth::AuthMail) -> String {
        match mail {
            crm::auth::AuthMail::PasswordReset { token, .. }
            | crm::auth::AuthMail::EmailVerification { token, .. } => token.expose().to_owned(),
        }
    }
}

/// HMAC-SHA256 of `body` as lower-case hex: how WhatsApp and Cal.com sign.
pub(crate) fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    m.update(body);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A write transaction a test holds open (see [`TestDb::hold`]).
pub(crate) enum Held {
    Sqlite(sqlx::SqliteConnection),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgConnection),
}

impl Held {
    pub(crate) async fn commit(self) {
        match self {
            Held::Sqlite(mut c) => {
                sqlx::raw_sql("COMMIT")
                    .execute(&mut c)
                    .await
                    .expect("commit");
            }
            #[cfg(feature = "postgres")]
            Held::Postgres(mut c) => {
                sqlx::raw_sql("COMMIT")
                    .execute(&mut c)
                    .await
                    .expect("commit");
            }
        }
    }
}

pub(crate) struct TestDb {
    /// One master key for every `Crm` a test opens on this database.
    key: MasterKey,
    pub backend: Backend,
    pub url: String,
    pub clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
    admin: Option<(String, String)>,
    /// Under row-level security: the owner's URL (raw SQL and migrations run
    /// there; `url` is the app role's) and the app role, dropped at cleanup.
    rls: Option<(String, String)>,
}

impl TestDb {
    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("crm.db").display());
        Self {
            key: MasterKey::generate("test").expect("key"),
            backend: Backend::Sqlite,
            url,
            clock: clock(),
            _dir: Some(dir),
            admin: None,
            rls: None,
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres() -> Self {
        let base = std::env::var("CRM_TEST_PG_URL").expect(
            "CRM_TEST_PG_URL is not set: run scripts/test.sh, which starts a throwaway Postgres",
        );
        let (url, name) = scratch_pg::create(&base, "crm_test").await;
        Self {
            key: MasterKey::generate("test").expect("key"),
            backend: Backend::Postgres,
            url,
            clock: clock(),
            _dir: None,
            admin: Some((base, name)),
            rls: None,
        }
    }

    /// A Postgres database migrated by its owner, which crm then reaches as an app
    /// role that owns nothing and has no `BYPASSRLS`, with row-level security on:
    /// the tenant wall of the policies binds every statement crm runs (`url` and
    /// [`TestDb::builder`] are the app role's; raw SQL is the owner's).
    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres_rls() -> Self {
        let mut db = Self::postgres().await;
        let owner = db.crm().await;
        owner
            .set_row_level_security(true)
            .await
            .expect("row-level security on");
        owner.close().await;
        let role = format!(
            "crm_app_{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let name = db.admin.as_ref().map(|a| a.1.clone()).unwrap_or_default();
        db.execute(&format!(
            "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; \
             GRANT CONNECT ON DATABASE {name} TO {role}; \
             GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};"
        ))
        .await;
        let mut app = reqwest::Url::parse(&db.url).expect("url");
        app.set_username(&role).expect("user");
        app.set_password(None).expect("password");
        let owner = std::mem::replace(&mut db.url, app.to_string());
        db.rls = Some((owner, role));
        db
    }

    /// Where raw SQL runs: the owner's URL (under row-level security the app
    /// role would see nothing without a tenant).
    fn raw_url(&self) -> &str {
        self.rls.as_ref().map_or(&self.url, |(owner, _)| owner)
    }

    /// A builder on this database with the test clock and a master key (under
    /// row-level security: as the app role, with it on, migrations left to the owner).
    pub(crate) fn builder(&self) -> CrmBuilder {
        let b = Crm::builder()
            .database_url(&self.url)
            .clock(self.clock.clone())
            .master_key(self.key.clone());
        if self.rls.is_some() {
            b.row_level_security(true).migrate(false)
        } else {
            b
        }
    }

    pub(crate) async fn crm(&self) -> Crm {
        self.builder().connect().await.expect("connect")
    }

    /// Runs `sql` in a write transaction of its own, outside crm, and keeps the
    /// transaction open (with its locks) until [`Held::commit`]: how a test stands
    /// for a concurrent writer, such as the dispatcher disabling an endpoint, at an
    /// exact moment.
    pub(crate) async fn hold(&self, sql: &str) -> Held {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .expect("begin");
                sqlx::raw_sql(sql).execute(&mut c).await.expect("raw sql");
                Held::Sqlite(c)
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(self.raw_url())
                    .await
                    .expect("connect");
                sqlx::raw_sql("BEGIN").execute(&mut c).await.expect("begin");
                sqlx::raw_sql(sql).execute(&mut c).await.expect("raw sql");
                Held::Postgres(c)
            }
        }
    }

    /// Runs raw SQL (test set-up such as a failing trigger), outside crm.
    pub(crate) async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql(sql).execute(&mut c).await.expect("raw sql");
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(self.raw_url())
                    .await
                    .expect("connect");
                sqlx::raw_sql(sql).execute(&mut c).await.expect("raw sql");
            }
        }
    }

    /// `SELECT COUNT(*) FROM {table}` (a table name, optionally with a `WHERE`), read
    /// outside crm.
    pub(crate) async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    /// One integer read with raw SQL, outside crm.
    pub(crate) async fn scalar_i64(&self, sql: &str) -> i64 {
        self.scalar(sql).await
    }

    /// One text value read with raw SQL, outside crm.
    pub(crate) async fn scalar_text(&self, sql: &str) -> String {
        self.scalar(sql).await
    }

    async fn scalar<T: Cell>(&self, sql: &str) -> T {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query_scalar(sql)
                    .fetch_one(&mut c)
                    .await
                    .expect("scalar")
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(self.raw_url())
                    .await
                    .expect("connect");
                sqlx::query_scalar(sql)
                    .fetch_one(&mut c)
                    .await
                    .expect("scalar")
            }
        }
    }

    pub(crate) fn is_sqlite(&self) -> bool {
        matches!(self.backend, Backend::Sqlite)
    }

    /// Drops the Postgres test database (the SQLite one goes with its temp dir).
    pub(crate) async fn cleanup(self) {
        #[cfg(feature = "postgres")]
        if let Some((base, name)) = &self.admin {
            scratch_pg::drop(base, name).await;
            if let Some((_, role)) = &self.rls {
                if let Ok(mut admin) = sqlx::PgConnection::connect(base).await {
                    let _ = sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
                        .execute(&mut admin)
                        .await;
                }
            }
        }
    }
}

/// A value `scalar` can read from every backend compiled in.
#[cfg(feature = "postgres")]
pub(crate) trait Cell:
    Send
    + Unpin
    + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
    + sqlx::Type<sqlx::Sqlite>
    + for<'r> sqlx::Decode<'r, sqlx::Postgres>
    + sqlx::Type<sqlx::Postgres>
{
}
/// A value `scalar` can read from every backend compiled in.
#[cfg(not(feature = "postgres"))]
pub(crate) trait Cell:
    Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>
{
}
impl Cell for i64 {}
impl Cell for String {}

fn clock() -> ManualClock {
    ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0)
            .single()
            .expect("valid date"),
    )
}

/// Generates, for every listed `async fn name(db: &TestDb)`, a test on SQLite and (with
/// the `postgres` feature) one on Postgres, each on a fresh database.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )+
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )+
        }
    };
}

/// Generates, for every listed `async fn name(db: &TestDb)`, a test on Postgres
/// with row-level security on ([`TestDb::postgres_rls`]): the tenant tests run
/// behind the second wall too.
#[macro_export]
macro_rules! with_rls {
    ($($name:ident),+ $(,)?) => {
        #[cfg(feature = "postgres")]
        mod postgres_rls {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::postgres_rls().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )+
        }
    };
}

impl TestDb {
    /// The test clock's time, as crm stores it.
    pub(crate) fn clock_now(&self) -> chrono::DateTime<Utc> {
        use crm::Clock;
        self.clock.now()
    }
}
