//! The connection pool of one `Crm`, SQLite or Postgres, chosen by the URL, and the
//! timestamp type both store. Timestamps go through [`Ts`], stored as `timestamptz`
//! on Postgres and as integer microseconds on SQLite (so they sort and compare as
//! numbers rather than as text).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::{Error, Result};

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("crm-core needs at least one storage feature: `sqlite` or `postgres`");

/// The connection pool of one `Crm`.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// With the lock this process's write transactions queue on (see [`WriteLock`]).
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool, WriteLock),
    /// With the tenant its statements are scoped to under row-level security
    /// (`None`: RLS is off; `"*"`: every workspace, for crm's own cross-workspace
    /// work; else a workspace id): every statement runs in a transaction that sets
    /// it as `crm.workspace_id` for that transaction alone.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool, Option<std::sync::Arc<str>>),
}

/// SQLite has one writer at a time. Writers of this process wait their turn on this
/// lock, in order, instead of in SQLite's busy handler, which sleeps and retries
/// with growing pauses (up to 100 ms): under load that sleeping, not the writing,
/// was where a create spent its time. Other processes on the same file still meet
/// the busy timeout.
#[cfg(feature = "sqlite")]
pub(crate) type WriteLock = std::sync::Arc<tokio::sync::Mutex<()>>;

impl Pool {
    /// Connections open, and how many of them are idle.
    pub(crate) fn usage(&self) -> (u32, usize) {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => (p.size(), p.num_idle()),
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, _) => (p.size(), p.num_idle()),
        }
    }

    /// Closes the pool; pending work finishes first.
    pub(crate) async fn close(&self) {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => p.close().await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, _) => p.close().await,
        }
    }

    /// This pool under row-level security with every workspace in reach (crm's own
    /// cross-workspace work: sessions, keys, jobs, housekeeping); `Config` on SQLite.
    pub(crate) fn with_rls(self) -> Result<Pool> {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, _) => Ok(Pool::Postgres(p, Some(ALL_WORKSPACES.into()))),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(..) => Err(Error::Config(
                "row-level security is a Postgres feature; SQLite has one tenant wall, the \
                 workspace filter"
                    .into(),
            )),
        }
    }

    /// This pool with its statements scoped to `ws` under row-level security;
    /// `None` when RLS is off (nothing to scope).
    pub(crate) fn scoped(&self, ws: crate::ids::WorkspaceId) -> Option<Pool> {
        match self {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, Some(_)) => {
                Some(Pool::Postgres(p.clone(), Some(ws.to_string().into())))
            }
            _ => {
                let _ = ws;
                None
            }
        }
    }
}

/// The `crm.workspace_id` of crm's own cross-workspace work under row-level
/// security (the policies let it see every workspace).
#[cfg(feature = "postgres")]
pub(crate) const ALL_WORKSPACES: &str = "*";

/// Connects to the backend the URL names (no migrations: see [`crate::migrate`]).
/// `schema` (Postgres only) becomes the connections' `search_path`, so crm's tables
/// live there.
pub(crate) async fn connect(url: &str, max_connections: u32, schema: Option<&str>) -> Result<Pool> {
    if url.starts_with("sqlite:") {
        if schema.is_some() {
            return Err(Error::Config(
                "a schema is a Postgres setting; SQLite has none".into(),
            ));
        }
        #[cfg(feature = "sqlite")]
        return connect_sqlite(url, max_connections).await;
        #[cfg(not(feature = "sqlite"))]
        return Err(Error::Config(
            "a sqlite: URL needs the `sqlite` feature".into(),
        ));
    }
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        #[cfg(feature = "postgres")]
        return connect_postgres(url, max_connections, schema).await;
        #[cfg(not(feature = "postgres"))]
        return Err(Error::Config(
            "a postgres: URL needs the `postgres` feature".into(),
        ));
    }
    Err(Error::Config(
        "database URL must start with sqlite: or postgres:".into(),
    ))
}

/// The host's own pool, when its backend is one this build of crm supports; a
/// `Config` error naming the backend and the missing feature otherwise.
pub(crate) fn from_host<DB: Database>(pool: sqlx::Pool<DB>) -> Result<Pool> {
    #[allow(unused_mut)]
    let mut any: Box<dyn std::any::Any> = Box::new(pool);
    #[cfg(feature = "sqlite")]
    {
        any = match any.downcast::<sqlx::SqlitePool>() {
            Ok(p) => return Ok(Pool::Sqlite(*p, WriteLock::default())),
            Err(other) => other,
        };
    }
    #[cfg(feature = "postgres")]
    {
        any = match any.downcast::<sqlx::PgPool>() {
            Ok(p) => return Ok(Pool::Postgres(*p, None)),
            Err(other) => other,
        };
    }
    drop(any);
    let why = match DB::NAME {
        "SQLite" => "this build of crm lacks its `sqlite` feature",
        "PostgreSQL" => "this build of crm lacks its `postgres` feature",
        _ => "crm takes a sqlx::SqlitePool or sqlx::PgPool only",
    };
    Err(Error::Config(format!(
        "the host's pool uses sqlx's {} driver, but {why}",
        DB::NAME
    )))
}

#[cfg(feature = "sqlite")]
async fn connect_sqlite(url: &str, max_connections: u32) -> Result<Pool> {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };

    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|_| Error::Config("database URL is not a valid sqlite: URL".into()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(5))
        .foreign_keys(true);
    // An in-memory database lives as long as its one connection: keep exactly one,
    // forever, or the data would vanish with a recycled connection.
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let pool_opts = if in_memory {
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(max_connections)
    };
    // A write whose future is dropped mid-transaction (a cancelled request, an aborted
    // task) can hand its connection back still inside `BEGIN IMMEDIATE`: it would keep
    // SQLite's one write lock and confuse the next transaction on it. Such a connection
    // is rolled back before it is reused (closed if that fails), which also keeps an
    // in-memory database, whose one connection must never close.
    let pool_opts = pool_opts.after_release(|conn, _| {
        Box::pin(async move {
            use sqlx::sqlite::SqliteTransactionManager as Tm;
            use sqlx::{Connection, TransactionManager};
            let depth = Tm::get_transaction_depth(conn);
            if depth > 0 {
                for _ in 0..depth {
                    Tm::start_rollback(conn);
                }
                conn.ping().await?;
            }
            Ok(Tm::get_transaction_depth(conn) == 0)
        })
    });
    let pool = pool_opts.connect_with(opts).await?;
    // The `sqlite` feature bundles SQLite 3.46; a build linked to the system's
    // library instead (LIBSQLITE3_SYS_USE_PKG_CONFIG) needs `unhex` and `->>`.
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(&pool)
        .await?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < SQLITE_MIN {
        return Err(Error::Config(format!(
            "SQLite {version} is too old: crm needs 3.41 or later (the `sqlite` feature bundles one)"
        )));
    }
    Ok(Pool::Sqlite(pool, WriteLock::default()))
}

/// The oldest SQLite crm runs on (3.41: `unhex`), as (major, minor).
#[cfg(feature = "sqlite")]
const SQLITE_MIN: (u32, u32) = (3, 41);

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, max_connections: u32, schema: Option<&str>) -> Result<Pool> {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let mut opts = PgConnectOptions::from_str(url)
        .map_err(|_| Error::Config("database URL is not a valid postgres: URL".into()))?;
    if let Some(schema) = schema {
        opts = opts.options([("search_path", schema)]);
    }
    // No ping before each checkout (sqlx's default): it doubled the round trips of
    // every read. A connection the server dropped fails its next statement instead,
    // and the pool replaces it.
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .connect_with(opts)
        .await?;
    if let Some(schema) = schema {
        // A connection pooler (PgBouncer, Supavisor) may drop startup options: the
        // tables would then land in `public` without a word.
        let path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
            .fetch_one(&pool)
            .await?;
        if path.trim_matches('"') != schema {
            return Err(Error::Config(format!(
                "the server did not keep search_path = {schema} (it is {path:?}); behind a \
                 connection pooler, set the schema there or on the database role"
            )));
        }
    }
    Ok(Pool::Postgres(pool, None))
}

/// A UTC timestamp as stored: `timestamptz` on Postgres, integer microseconds since
/// the Unix epoch on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ts(pub DateTime<Utc>);

#[cfg(feature = "sqlite")]
mod ts_sqlite {
    use super::*;
    use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};
    use sqlx::Sqlite;

    impl Type<Sqlite> for Ts {
        fn type_info() -> SqliteTypeInfo {
            <i64 as Type<Sqlite>>::type_info()
        }
        fn compatible(ty: &SqliteTypeInfo) -> bool {
            <i64 as Type<Sqlite>>::compatible(ty)
        }
    }

    impl<'q> Encode<'q, Sqlite> for Ts {
        fn encode_by_ref(
            &self,
            buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>,
        ) -> Result<IsNull, BoxDynError> {
            <i64 as Encode<'q, Sqlite>>::encode(self.0.timestamp_micros(), buf)
        }
    }

    impl<'r> Decode<'r, Sqlite> for Ts {
        fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
            let micros = <i64 as Decode<'r, Sqlite>>::decode(value)?;
            DateTime::from_timestamp_micros(micros)
                .map(Ts)
                .ok_or_else(|| "timestamp out of range".into())
        }
    }
}

#[cfg(feature = "postgres")]
mod ts_postgres {
    use super::*;
    use sqlx::postgres::{PgTypeInfo, PgValueRef};
    use sqlx::Postgres;

    impl Type<Postgres> for Ts {
        fn type_info() -> PgTypeInfo {
            <DateTime<Utc> as Type<Postgres>>::type_info()
        }
        fn compatible(ty: &PgTypeInfo) -> bool {
            <DateTime<Utc> as Type<Postgres>>::compatible(ty)
        }
    }

    impl<'q> Encode<'q, Postgres> for Ts {
        fn encode_by_ref(
            &self,
            buf: &mut <Postgres as Database>::ArgumentBuffer<'q>,
        ) -> Result<IsNull, BoxDynError> {
            <DateTime<Utc> as Encode<'q, Postgres>>::encode_by_ref(&self.0, buf)
        }
    }

    impl<'r> Decode<'r, Postgres> for Ts {
        fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
            <DateTime<Utc> as Decode<'r, Postgres>>::decode(value).map(Ts)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Crm, Error};

    /// A host pool of a backend crm does not store in (sqlx's `Any` driver stands in
    /// for MySQL, or for Postgres in a build without the `postgres` feature: the check
    /// is the same) is a configuration error that names it, before any connection.
    #[tokio::test]
    async fn a_host_pool_of_another_backend_is_a_configuration_error() {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .connect_lazy("sqlite::memory:")
            .expect("lazy pool");
        let err = Crm::builder()
            .pool(pool)
            .connect()
            .await
            .expect_err("an Any pool");
        assert!(
            matches!(&err, Error::Config(m) if m.contains("Any") && m.contains("SqlitePool or sqlx::PgPool")),
            "{err:?}"
        );
    }
}
