//! Storage: one pool per `Crm`, SQLite or Postgres, chosen by the URL.
//!
//! The SQL is written once, generic over the backend ([`Dialect`]), using `$n`
//! placeholders that both drivers accept. Only what the dialects really disagree on
//! lives in the two `Dialect` impls: how full-text search and tag filters are
//! phrased, and how a write transaction starts. Timestamps go through [`Ts`], stored
//! as `timestamptz` on Postgres and as integer microseconds on SQLite (so they sort
//! and compare as numbers rather than as text).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};
use uuid::Uuid;

use crate::{Error, Result};

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("crm-core needs at least one storage feature: `sqlite` or `postgres`");

/// The connection pool of one `Crm`.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl Pool {
    /// The backend's name, for `Debug` output that never shows a URL.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => "postgres",
        }
    }
}

/// Runs `$body` with `$pool` bound to the concrete pool and `$db` to its database type.
macro_rules! with_pool {
    ($pool:expr, |$p:ident, $db:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "sqlite")]
            $crate::db::Pool::Sqlite($p) => {
                #[allow(unused)]
                type $db = sqlx::Sqlite;
                $body
            }
            #[cfg(feature = "postgres")]
            $crate::db::Pool::Postgres($p) => {
                #[allow(unused)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}
pub(crate) use with_pool;

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
            Ok(p) => return Ok(Pool::Sqlite(*p)),
            Err(other) => other,
        };
    }
    #[cfg(feature = "postgres")]
    {
        any = match any.downcast::<sqlx::PgPool>() {
            Ok(p) => return Ok(Pool::Postgres(*p)),
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
    Ok(Pool::Sqlite(pool))
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str, max_connections: u32, schema: Option<&str>) -> Result<Pool> {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let mut opts = PgConnectOptions::from_str(url)
        .map_err(|_| Error::Config("database URL is not a valid postgres: URL".into()))?;
    if let Some(schema) = schema {
        opts = opts.options([("search_path", schema)]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
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
    Ok(Pool::Postgres(pool))
}

/// What the two SQL dialects disagree on.
pub(crate) trait Dialect: Database {
    /// Starts a transaction that will write. SQLite takes the write lock up front
    /// (`BEGIN IMMEDIATE`) so a read-then-write transaction waits for the lock under
    /// the busy timeout instead of failing with `SQLITE_BUSY` when it upgrades.
    const BEGIN_WRITE: &'static str;

    /// Appended to a `SELECT` inside a write transaction to lock the rows it reads.
    /// Empty on SQLite, where `BEGIN IMMEDIATE` already holds the one write lock.
    const FOR_UPDATE: &'static str;

    /// Appended to a `SELECT` of a parent row to serialise the writers of its
    /// children without blocking the foreign-key checks of other inserts (Postgres
    /// `FOR NO KEY UPDATE`). Empty on SQLite.
    const FOR_NO_KEY_UPDATE: &'static str;

    /// Appended to the subquery that picks jobs to claim: Postgres skips rows another
    /// worker is claiming; SQLite needs nothing (one writer at a time).
    const SKIP_LOCKED: &'static str;

    /// Rows a statement changed.
    fn rows_affected(r: &Self::QueryResult) -> u64;

    /// Pushes a condition: lead `l` matches every search term (prefix match).
    fn push_search(sql: &mut Sql, terms: &[String]);

    /// Pushes a condition: lead `l` carries `tag`.
    fn push_has_tag(sql: &mut Sql, tag: String);
}

#[cfg(feature = "sqlite")]
impl Dialect for sqlx::Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const FOR_UPDATE: &'static str = "";
    const FOR_NO_KEY_UPDATE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";

    fn rows_affected(r: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        r.rows_affected()
    }

    fn push_search(sql: &mut Sql, terms: &[String]) {
        // FTS5 query: every term as a quoted prefix ("term"*), implicitly ANDed. Terms
        // hold letters and digits only, so they cannot carry FTS5 syntax.
        let fts: Vec<String> = terms.iter().map(|t| format!("\"{t}\"*")).collect();
        sql.push("l.seq IN (SELECT rowid FROM crm_leads_fts WHERE crm_leads_fts MATCH ")
            .bind(Bind::Text(fts.join(" ")))
            .push(")");
    }

    fn push_has_tag(sql: &mut Sql, tag: String) {
        sql.push("EXISTS (SELECT 1 FROM json_each(l.tags) WHERE json_each.value = ")
            .bind(Bind::Text(tag))
            .push(")");
    }
}

#[cfg(feature = "postgres")]
impl Dialect for sqlx::Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_NO_KEY_UPDATE: &'static str = " FOR NO KEY UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    fn rows_affected(r: &sqlx::postgres::PgQueryResult) -> u64 {
        r.rows_affected()
    }

    fn push_search(sql: &mut Sql, terms: &[String]) {
        // Same tokens as on SQLite (the `search` column strips everything that is not
        // a letter or digit); `term:*` is a prefix match.
        let q: Vec<String> = terms.iter().map(|t| format!("{t}:*")).collect();
        sql.push("l.search @@ to_tsquery('simple', ")
            .bind(Bind::Text(q.join(" & ")))
            .push(")");
    }

    fn push_has_tag(sql: &mut Sql, tag: String) {
        sql.push("l.tags ? ").bind(Bind::Text(tag));
    }
}

/// A value bound to a [`Sql`] placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Uuid(Uuid),
    Text(String),
    Ts(Ts),
}

/// SQL assembled at run time (filters that come and go) with `$n` placeholders, which
/// both drivers accept. The binds are applied in order by the caller; this replaces
/// sqlx's `QueryBuilder`, whose borrowed arguments cannot be executed from code that
/// is generic over the database.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub(crate) fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            binds: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub(crate) fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        self.text.push('$');
        self.text.push_str(&self.binds.len().to_string());
        self
    }
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
