//! crm's schema migrations, kept apart from the host's.
//!
//! The SQL files are embedded (`migrations/sqlite`, `migrations/postgres`, through
//! `sqlx::migrate!`), but crm runs them itself and keeps their history in its own
//! table, `_crm_migrations`, never in sqlx's `_sqlx_migrations`: that table belongs to
//! the host app, whose own `sqlx::migrate!` would otherwise see crm's versions as
//! its own (a version collision, or "migration N was previously applied but is
//! missing"). A host can therefore run its migrations and crm's in either order, on
//! one database and one pool.
//!
//! All pending migrations run in one transaction that first takes the migration lock
//! (`BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory lock on Postgres), so
//! several instances starting at once apply each migration once, and a failure
//! leaves the database as it was. A database whose crm schema is newer than this
//! library (a version it does not know) or whose applied migration was edited is
//! refused with [`Error::Migration`] before anything changes.

use sqlx::migrate::{Migration, Migrator};
use sqlx::Executor;

use crate::error::DatabaseError;
use crate::store::Pool;
use crate::{Error, Result};

/// The table that records crm's applied migrations (in the Postgres schema crm's
/// tables live in).
const MIGRATIONS_TABLE: &str = "_crm_migrations";

#[cfg(feature = "sqlite")]
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
#[cfg(feature = "postgres")]
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// The key of the Postgres advisory lock held while migrating ("crm_migr" in ASCII);
/// advisory locks are per database, so instances on other databases never wait.
#[cfg(feature = "postgres")]
const PG_LOCK_KEY: i64 = 0x6372_6d5f_6d69_6772;

fn migrations(pool: &Pool) -> &'static [Migration] {
    match pool {
        #[cfg(feature = "sqlite")]
        Pool::Sqlite(..) => &SQLITE.migrations,
        #[cfg(feature = "postgres")]
        Pool::Postgres(..) => &POSTGRES.migrations,
    }
}

fn last_version(embedded: &[Migration]) -> i64 {
    ups(embedded).map(|m| m.version).max().unwrap_or(0)
}

/// Whether the database's crm schema is at this library's version: one read of the
/// history table, no lock (a missing table is a schema that is not current).
pub(crate) async fn is_current(pool: &Pool) -> Result<bool> {
    let sql = format!("SELECT MAX(version) FROM {MIGRATIONS_TABLE}");
    let applied: std::result::Result<Option<i64>, sqlx::Error> = match pool {
        #[cfg(feature = "sqlite")]
        Pool::Sqlite(p, _) => sqlx::query_scalar(&sql).fetch_one(p).await,
        #[cfg(feature = "postgres")]
        Pool::Postgres(p, _) => sqlx::query_scalar(&sql).fetch_one(p).await,
    };
    match applied {
        Ok(v) => Ok(v == Some(last_version(migrations(pool)))),
        Err(sqlx::Error::Database(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The migrations that move forward (a `.down.sql` file is never run by crm).
fn ups(embedded: &[Migration]) -> impl Iterator<Item = &Migration> {
    embedded
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
}

/// Which embedded migrations still need to run, given the applied `(version,
/// checksum)` pairs; an error when the database is ahead of this library or an
/// applied migration differs from the embedded one.
fn pending<'m>(
    embedded: &'m [Migration],
    applied: &[(i64, Vec<u8>)],
) -> Result<Vec<&'m Migration>> {
    let library = last_version(embedded);
    if let Some(database) = applied.iter().map(|(v, _)| *v).max() {
        if database > library {
            return Err(Error::Migration {
                message: format!(
                    "the database's crm schema is at version {database}, newer than this \
                     crm library's version {library}: upgrade crm (nothing was changed)"
                ),
                source: None,
            });
        }
    }
    for (version, checksum) in applied {
        match ups(embedded).find(|m| m.version == *version) {
            Some(m) if m.checksum.as_ref() == checksum.as_slice() => {}
            Some(_) => {
                return Err(Error::Migration {
                    message: format!(
                        "crm migration {version} applied to this database differs from the \
                         one in this library (nothing was changed)"
                    ),
                    source: None,
                })
            }
            None => {
                return Err(Error::Migration {
                    message: format!(
                        "crm migration {version} applied to this database is unknown to this \
                         library (nothing was changed)"
                    ),
                    source: None,
                })
            }
        }
    }
    let todo: Vec<&Migration> = ups(embedded)
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .collect();
    if let Some(m) = todo.iter().find(|m| m.no_tx) {
        // All of crm's migrations run in one transaction, so that a failure changes
        // nothing; a statement that cannot run in one has no place among them.
        return Err(Error::Migration {
            message: format!(
                "crm migration {} must run outside a transaction, which crm does not do",
                m.version
            ),
            source: None,
        });
    }
    Ok(todo)
}

fn failed(version: i64) -> impl FnOnce(sqlx::Error) -> Error {
    move |err| Error::Migration {
        message: format!("crm migration {version} failed (nothing was changed)"),
        source: Some(DatabaseError::new(err)),
    }
}

/// Inside the locked transaction `conn`: creates the history table (with the
/// dialect's column types), reads it, and applies what is pending (with `check`,
/// only says what is; the caller rolls back).
async fn apply<DB>(
    conn: &mut DB::Connection,
    embedded: &[Migration],
    (bytes, time, now): (&str, &str, &str),
    create_history: bool,
    check: bool,
) -> Result<Vec<i64>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'r> (i64, Vec<u8>): sqlx::FromRow<'r, DB::Row>,
    for<'q> i64: sqlx::Type<DB> + sqlx::Encode<'q, DB>,
    for<'q> &'q str: sqlx::Type<DB> + sqlx::Encode<'q, DB>,
    for<'q> &'q [u8]: sqlx::Type<DB> + sqlx::Encode<'q, DB>,
{
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            checksum {bytes} NOT NULL,
            installed_on {time} NOT NULL DEFAULT {now}
        )"
    );
    if create_history {
        conn.execute(create.as_str()).await?;
    }
    let applied: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT version, checksum FROM {MIGRATIONS_TABLE} ORDER BY version"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let insert = format!(
        "INSERT INTO {MIGRATIONS_TABLE} (version, description, checksum) VALUES ($1, $2, $3)"
    );
    let mut done = Vec::new();
    for m in pending(embedded, &applied)? {
        if check {
            done.push(m.version);
            continue;
        }
        conn.execute(m.sql.as_ref())
            .await
            .map_err(failed(m.version))?;
        sqlx::query(&insert)
            .bind(m.version)
            .bind(m.description.as_ref())
            .bind(m.checksum.as_ref())
            .execute(&mut *conn)
            .await?;
        done.push(m.version);
    }
    Ok(done)
}

/// Brings crm's tables to this library's version; returns the versions it applied.
/// `schema` (Postgres only) is created first when it does not exist. With `check`
/// nothing is applied: the versions that would be are returned, and the transaction
/// is rolled back.
pub(crate) async fn run(pool: &Pool, schema: Option<&str>, check: bool) -> Result<Vec<i64>> {
    let embedded = migrations(pool);
    let ran = match pool {
        #[cfg(feature = "sqlite")]
        Pool::Sqlite(p, _) => {
            let _ = schema;
            // The write lock up front: a second instance waits here, then finds the
            // migrations applied.
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
            let done = apply::<sqlx::Sqlite>(
                &mut tx,
                embedded,
                ("BLOB", "TEXT", "CURRENT_TIMESTAMP"),
                true,
                check,
            )
            .await?;
            if !check {
                tx.commit().await?;
            }
            Ok(done)
        }
        #[cfg(feature = "postgres")]
        Pool::Postgres(p, _) => run_postgres(p, embedded, schema, check).await,
    };
    // A failure to lock or to read the history is a migration failure too.
    ran.map_err(|e| match e {
        Error::Database(cause) => Error::Migration {
            message: "crm's migrations could not run (nothing was changed)".into(),
            source: Some(cause),
        },
        other => other,
    })
}

#[cfg(feature = "postgres")]
async fn run_postgres(
    p: &sqlx::PgPool,
    embedded: &'static [Migration],
    schema: Option<&str>,
    check: bool,
) -> Result<Vec<i64>> {
    let mut tx = p.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    // DDL only when something is missing: `CREATE … IF NOT EXISTS` still needs the
    // CREATE privilege, which an app's role may lack once the tables exist.
    if let Some(schema) = schema {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            // `schema` was checked by the builder: lower-case letters, digits, `_`.
            let create = format!("CREATE SCHEMA \"{schema}\"");
            tx.execute(create.as_str()).await?;
        }
    }
    let has_history: bool = sqlx::query_scalar("SELECT to_regclass('_crm_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await?;
    let done = apply::<sqlx::Postgres>(
        &mut tx,
        embedded,
        ("BYTEA", "TIMESTAMPTZ", "now()"),
        !has_history,
        check,
    )
    .await?;
    if !check {
        tx.commit().await?;
    }
    Ok(done)
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    fn applied(v: &[i64]) -> Vec<(i64, Vec<u8>)> {
        v.iter()
            .map(|v| {
                let m = SQLITE.migrations.iter().find(|m| m.version == *v);
                (*v, m.map(|m| m.checksum.to_vec()).unwrap_or_default())
            })
            .collect()
    }

    #[test]
    fn nothing_applied_runs_everything_in_order() {
        let todo = pending(&SQLITE.migrations, &[]).expect("plan");
        let versions: Vec<i64> = todo.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        assert_eq!(versions, sorted);
        assert_eq!(versions.len(), SQLITE.migrations.len());
    }

    #[test]
    fn a_newer_database_names_both_versions() {
        let library = last_version(&SQLITE.migrations);
        let mut done = applied(&[1]);
        done.push((library + 2, vec![1, 2, 3]));
        let err = pending(&SQLITE.migrations, &done).expect_err("newer");
        let text = err.to_string();
        assert!(text.contains(&(library + 2).to_string()), "{text}");
        assert!(text.contains(&library.to_string()), "{text}");
    }

    #[test]
    fn every_embedded_migration_moves_forward_in_a_transaction() {
        for m in SQLITE.migrations.iter() {
            assert!(!m.migration_type.is_down_migration(), "{}", m.version);
            assert!(!m.no_tx, "{}", m.version);
        }
    }

    #[test]
    fn an_edited_migration_is_refused() {
        let mut done = applied(&[1]);
        done[0].1 = vec![0; 48];
        assert!(matches!(
            pending(&SQLITE.migrations, &done),
            Err(Error::Migration { .. })
        ));
    }
}
