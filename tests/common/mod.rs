//! Test databases: a fresh one per test, SQLite (a file in a temp dir, so WAL and
//! several connections are real) or Postgres (a new database in the server named by
//! `CRM_TEST_PG_URL`, which `scripts/test.sh` provides).

#![allow(dead_code)]

pub(crate) mod receiver;

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
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) async fn postgres() -> Self {
        let base = std::env::var("CRM_TEST_PG_URL").expect(
            "CRM_TEST_PG_URL is not set: run scripts/test.sh, which starts a throwaway Postgres",
        );
        let name = format!("crm_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .expect("connect to CRM_TEST_PG_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let (head, tail) = base
            .split_once('?')
            .map_or((base.as_str(), None), |(h, t)| (h, Some(t)));
        let prefix = head.rsplit_once('/').map_or(head, |(p, _)| p);
        let url = match tail {
            Some(t) => format!("{prefix}/{name}?{t}"),
            None => format!("{prefix}/{name}"),
        };
        Self {
            key: MasterKey::generate("test").expect("key"),
            backend: Backend::Postgres,
            url,
            clock: clock(),
            _dir: None,
            admin: Some((base, name)),
        }
    }

    /// A builder on this database with the test clock and a master key.
    pub(crate) fn builder(&self) -> CrmBuilder {
        Crm::builder()
            .database_url(&self.url)
            .clock(self.clock.clone())
            .master_key(self.key.clone())
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
                let mut c = sqlx::PgConnection::connect(&self.url)
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
                let mut c = sqlx::PgConnection::connect(&self.url)
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
                let mut c = sqlx::PgConnection::connect(&self.url)
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
            if let Ok(mut admin) = sqlx::PgConnection::connect(base).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
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

impl TestDb {
    /// The test clock's time, as crm stores it.
    pub(crate) fn clock_now(&self) -> chrono::DateTime<Utc> {
        use crm::Clock;
        self.clock.now()
    }
}
