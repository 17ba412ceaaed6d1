//! crm as a guest in a host app's database: its migrations keep their history in
//! `_crm_migrations`, so the host's own `sqlx::migrate!` (versions 1..3 here, which
//! collide with crm's) runs before or after crm's on one database and one pool.

use crate::common::TestDb;
use crm::leads::NewLead;
use crm::{Crm, Error};
use sqlx::migrate::Migrator;

conformance!(
    host_migrations_then_crm_on_the_hosts_pool,
    crm_then_host_migrations,
    migrate_false_leaves_the_database_alone_until_asked,
    a_newer_crm_schema_is_refused_and_nothing_changes,
    an_edited_migration_is_refused,
    instances_migrating_at_once_apply_each_migration_once,
);

/// The newest migration version of this library for `db`'s backend, read off a fresh
/// database of the same kind.
async fn library_version(db: &TestDb) -> i64 {
    let fresh = if db.is_sqlite() {
        TestDb::sqlite().await
    } else {
        #[cfg(feature = "postgres")]
        {
            TestDb::postgres().await
        }
        #[cfg(not(feature = "postgres"))]
        unreachable!()
    };
    let crm = fresh
        .builder()
        .migrate(false)
        .connect()
        .await
        .expect("connect");
    let applied = crm.migrate().await.expect("migrate");
    crm.close().await;
    fresh.cleanup().await;
    applied.into_iter().max().expect("crm has migrations")
}

/// The host app's pool on the test database.
#[derive(Clone)]
enum HostPool {
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl HostPool {
    async fn open(db: &TestDb) -> Self {
        if db.is_sqlite() {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
            use std::str::FromStr;
            // What a host app would open: its file, created on first start, in WAL mode.
            let opts = SqliteConnectOptions::from_str(&db.url)
                .expect("url")
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true);
            let pool = sqlx::SqlitePool::connect_with(opts)
                .await
                .expect("host pool");
            return Self::Sqlite(pool);
        }
        #[cfg(feature = "postgres")]
        return Self::Postgres(sqlx::PgPool::connect(&db.url).await.expect("host pool"));
        #[cfg(not(feature = "postgres"))]
        unreachable!("Postgres tests need the postgres feature")
    }

    /// The host's own migrations, versions 1..3: what `sqlx::migrate!()` in the host
    /// app would run.
    async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let dir = tempfile::tempdir().expect("temp dir");
        for (file, sql) in [
            (
                "1_users.sql",
                "CREATE TABLE host_users (id BIGINT PRIMARY KEY, email TEXT NOT NULL);",
            ),
            (
                "2_orders.sql",
                "CREATE TABLE host_orders (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL);",
            ),
            (
                "3_user_names.sql",
                "ALTER TABLE host_users ADD COLUMN name TEXT;",
            ),
        ] {
            std::fs::write(dir.path().join(file), sql).expect("write migration");
        }
        let migrator = Migrator::new(dir.path()).await?;
        match self {
            Self::Sqlite(p) => migrator.run(p).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => migrator.run(p).await,
        }
    }

    fn crm(&self, db: &TestDb) -> crm::CrmBuilder {
        match self {
            Self::Sqlite(p) => db.builder().pool(p.clone()),
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => db.builder().pool(p.clone()),
        }
    }
}

/// Whether the table exists (in the default schema).
async fn has_table(db: &TestDb, table: &str) -> bool {
    let sql = if db.is_sqlite() {
        format!("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'")
    } else {
        format!(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '{table}'"
        )
    };
    db.scalar_i64(&sql).await == 1
}

async fn crm_migrations(db: &TestDb) -> i64 {
    db.count("_crm_migrations").await
}

async fn a_lead_round_trip(crm: &Crm) {
    let lead = crm
        .leads()
        .create(NewLead {
            name: "Ana".into(),
            email: Some("ana@example.com".into()),
            ..Default::default()
        })
        .await
        .expect("create a lead");
    assert_eq!(
        crm.leads().get(lead.id).await.expect("get").lead.name,
        "Ana"
    );
}

async fn host_migrations_then_crm_on_the_hosts_pool(db: &TestDb) {
    let host = HostPool::open(db).await;
    host.migrate().await.expect("the host's migrations");

    let crm = host
        .crm(db)
        .connect()
        .await
        .expect("crm on the host's pool");
    a_lead_round_trip(&crm).await;

    // The host's next deploy runs its migrator again: nothing of crm's is in its way.
    host.migrate().await.expect("the host's migrations, again");
    assert_eq!(db.count("_sqlx_migrations").await, 3);
    assert!(crm_migrations(db).await >= 7);
    db.execute("INSERT INTO host_users (id, email, name) VALUES (1, 'h@example.com', 'H')")
        .await;
    assert!(crm.migrate().await.expect("nothing to do").is_empty());
}

async fn crm_then_host_migrations(db: &TestDb) {
    db.crm().await; // crm's own pool, migrations on connect
    let applied = crm_migrations(db).await;
    assert!(applied >= 7);

    let host = HostPool::open(db).await;
    host.migrate()
        .await
        .expect("the host's migrations after crm's");
    assert_eq!(db.count("_sqlx_migrations").await, 3);
    assert_eq!(crm_migrations(db).await, applied);

    // crm connects again (its own pool and the host's): both find nothing to do.
    let again = db.crm().await;
    a_lead_round_trip(&again).await;
    let on_host = host
        .crm(db)
        .connect()
        .await
        .expect("crm on the host's pool");
    assert!(on_host.migrate().await.expect("up to date").is_empty());
}

async fn migrate_false_leaves_the_database_alone_until_asked(db: &TestDb) {
    let crm = db
        .builder()
        .migrate(false)
        .connect()
        .await
        .expect("connect");
    assert!(!has_table(db, "crm_leads").await);
    assert!(!has_table(db, "_crm_migrations").await);
    // A check changes nothing either.
    assert!(!crm.schema_is_current().await.expect("probe"));
    let pending = crm.pending_migrations().await.expect("check");
    assert!(!has_table(db, "crm_leads").await);
    assert!(!has_table(db, "_crm_migrations").await);

    let applied = crm.migrate().await.expect("migrate");
    assert_eq!(pending, applied, "the check named what migrate applied");
    assert!(crm.schema_is_current().await.expect("probe"));
    assert!(crm.pending_migrations().await.expect("check").is_empty());
    assert!(applied.len() >= 7, "{applied:?}");
    assert!(
        applied.windows(2).all(|w| w[0] < w[1]),
        "in order: {applied:?}"
    );
    assert_eq!(crm_migrations(db).await, applied.len() as i64);
    assert!(
        !has_table(db, "_sqlx_migrations").await,
        "crm never writes sqlx's table"
    );
    a_lead_round_trip(&crm).await;
    assert!(crm.migrate().await.expect("again").is_empty());
}

async fn a_newer_crm_schema_is_refused_and_nothing_changes(db: &TestDb) {
    // A database a newer crm migrated up to version 9999 (and whose tables this test
    // leaves out): this library must not touch it.
    let _host = HostPool::open(db).await;
    let (bytes, zero) = if db.is_sqlite() {
        ("BLOB", "X'00'")
    } else {
        ("BYTEA", "'\\x00'::bytea")
    };
    db.execute(&format!(
        "CREATE TABLE _crm_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         checksum {bytes} NOT NULL, installed_on TEXT NOT NULL DEFAULT 'then'); \
         INSERT INTO _crm_migrations (version, description, checksum) VALUES (9999, 'future', {zero})"
    ))
    .await;

    let lazy = db
        .builder()
        .migrate(false)
        .connect()
        .await
        .expect("connect");
    assert!(!lazy
        .schema_is_current()
        .await
        .expect("a newer schema is not current"));
    assert!(lazy.pending_migrations().await.is_err());
    let err = db.builder().connect().await.expect_err("a newer schema");
    let Error::Migration { message, .. } = &err else {
        panic!("expected a migration error, got {err:?}");
    };
    assert!(message.contains("9999"), "{message}");
    let library = library_version(db).await;
    assert!(message.contains(&format!("version {library}")), "{message}");
    let probe = db
        .builder()
        .migrate(false)
        .connect()
        .await
        .expect("connect");
    let err = probe.migrate().await.expect_err("still newer");
    assert_eq!(err.code(), "internal_error");
    assert!(!has_table(db, "crm_leads").await, "nothing was created");
    assert_eq!(crm_migrations(db).await, 1);
}

async fn instances_migrating_at_once_apply_each_migration_once(db: &TestDb) {
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(
            db.builder()
                .migrate(false)
                .connect()
                .await
                .expect("connect"),
        );
    }
    let (a, b, c) = tokio::join!(
        instances[0].migrate(),
        instances[1].migrate(),
        instances[2].migrate()
    );
    let mut applied: Vec<i64> = [a, b, c]
        .into_iter()
        .flat_map(|r| r.expect("each instance migrates"))
        .collect();
    let total = applied.len();
    applied.sort_unstable();
    applied.dedup();
    assert_eq!(total, applied.len(), "a version was applied twice");
    assert_eq!(applied.last().copied(), Some(library_version(db).await));
    assert_eq!(crm_migrations(db).await, total as i64);
    for crm in &instances {
        a_lead_round_trip_unique(crm).await;
    }
}

async fn an_edited_migration_is_refused(db: &TestDb) {
    db.crm().await;
    // As if crm migration 1 had been edited after this database ran it.
    let other = if db.is_sqlite() {
        "X'00'"
    } else {
        "'\\x00'::bytea"
    };
    db.execute(&format!(
        "UPDATE _crm_migrations SET checksum = {other} WHERE version = 1"
    ))
    .await;
    let err = db
        .builder()
        .connect()
        .await
        .expect_err("an edited migration");
    assert!(
        matches!(&err, Error::Migration { message, .. }
            if message.contains("migration 1 ") && message.contains("differs")),
        "{err:?}"
    );
}
async fn a_lead_round_trip_unique(crm: &Crm) {
    let email = format!("{}@example.com", uuid::Uuid::now_v7().simple());
    crm.leads()
        .create(NewLead {
            name: "Instance".into(),
            email: Some(email),
            ..Default::default()
        })
        .await
        .expect("create");
}

#[tokio::test]
async fn a_schema_is_checked_before_connecting() {
    for bad in [
        "",
        "Crm",
        "1crm",
        "crm-data",
        "pg_catalog",
        "crm\"; DROP TABLE x; --",
        &"a".repeat(64),
    ] {
        // Nothing listens on port 1: a bad name is refused before any connection.
        let err = Crm::builder()
            .database_url("postgres://crm@127.0.0.1:1/crm")
            .schema(bad)
            .connect()
            .await
            .expect_err(bad);
        assert!(
            matches!(&err, Error::Config(m) if m.contains("lower-case letters")),
            "{bad}: {err:?}"
        );
    }
    let err = Crm::builder()
        .database_url("sqlite::memory:")
        .schema("crm")
        .connect()
        .await
        .expect_err("SQLite has no schemas");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("Postgres")),
        "{err:?}"
    );
    let pool = sqlx::SqlitePool::connect("sqlite::memory:")
        .await
        .expect("pool");
    let err = Crm::builder()
        .pool(pool)
        .schema("crm")
        .connect()
        .await
        .expect_err("a schema with the host's pool");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("search_path")),
        "{err:?}"
    );
}

/// crm's tables in a schema of their own, beside the host's tables in `public`: once
/// through crm's `schema` option, once through the host pool's `search_path`.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_live_in_the_schema_the_host_chooses() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;

    let db = TestDb::postgres().await;
    let in_schema = |schema: &str, table: &str| {
        format!(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = '{schema}' AND table_name = '{table}'"
        )
    };

    let host = HostPool::open(&db).await;
    host.migrate()
        .await
        .expect("the host's migrations in public");
    let crm = db
        .builder()
        .schema("crm_data")
        .connect()
        .await
        .expect("connect");
    a_lead_round_trip(&crm).await;
    assert_eq!(db.scalar_i64(&in_schema("crm_data", "crm_leads")).await, 1);
    assert_eq!(
        db.scalar_i64(&in_schema("crm_data", "_crm_migrations"))
            .await,
        1
    );
    assert_eq!(db.scalar_i64(&in_schema("public", "crm_leads")).await, 0);
    assert_eq!(db.scalar_i64(&in_schema("public", "host_users")).await, 1);
    assert_eq!(db.count("crm_data.crm_leads").await, 1);

    // The host's pool, its search_path on a schema it made: crm follows it.
    db.execute("CREATE SCHEMA hosted").await;
    let opts = PgConnectOptions::from_str(&db.url)
        .expect("url")
        .options([("search_path", "hosted")]);
    let pool = PgPoolOptions::new().connect_with(opts).await.expect("pool");
    let hosted = db.builder().pool(pool).connect().await.expect("connect");
    assert!(hosted
        .leads()
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .is_empty());
    a_lead_round_trip(&hosted).await;
    assert_eq!(db.count("hosted.crm_leads").await, 1);
    assert_eq!(db.count("crm_data.crm_leads").await, 1);
    assert_eq!(
        db.scalar_i64(&in_schema("public", "_crm_migrations")).await,
        0
    );
    db.cleanup().await;
}
