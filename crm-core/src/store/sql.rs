//! The seam between crm's SQL and the two drivers: a query is text plus [`Arg`]s,
//! run on a pool, a connection or a write transaction ([`Exec`]), decoding rows of
//! any type that decodes on every enabled backend ([`Row`]). The storage modules
//! are ordinary functions over these types; the places that name a driver are this
//! file, [`super::pool`] (which opens the pool) and the Postgres-only rate-limit
//! statements.
//!
//! What the dialects disagree on is [`Dialect`], a value the pool, connection or
//! transaction carries: the row-lock clauses, and how full-text search and tag
//! filters are phrased; how a write transaction starts is [`Pool::begin_write`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::marker::PhantomData;

use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::types::Json;
use sqlx::{Arguments, Database, Encode, FromRow, Type};
use uuid::Uuid;

use super::pool::{Pool, Ts};
use crate::ids::{
    ActivityId, ApiKeyId, AttachmentId, AuditId, ChannelId, ContactId, EndpointId, EventId,
    ImportId, LeadId, OrganizationId, SessionId, UserId, WorkspaceId,
};
use crate::Result;

/// What the two SQL dialects disagree on.
/// A build with one backend never constructs the other's variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The backend's name, for `Debug` output that never shows a URL.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// Appended to a `SELECT` inside a write transaction to lock the rows it reads.
    /// Empty on SQLite, where `BEGIN IMMEDIATE` already holds the one write lock.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Appended to a `SELECT` of a parent row to serialise the writers of its
    /// children without blocking the foreign-key checks of other inserts (Postgres
    /// `FOR NO KEY UPDATE`). Empty on SQLite.
    pub(crate) fn for_no_key_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR NO KEY UPDATE",
        }
    }

    /// Pushes a condition: row `alias` of `table` (`crm_leads`, `crm_contacts`,
    /// `crm_organizations`) matches every search term (prefix match). Terms
    /// hold letters and digits only (the `search` column and the query are tokenised
    /// the same way), so they cannot carry FTS5 or tsquery syntax.
    pub(crate) fn push_search(
        self,
        q: &mut Sql<'_>,
        alias: &'static str,
        table: &'static str,
        terms: &[String],
    ) {
        match self {
            Dialect::Sqlite => {
                // Every term as a quoted prefix ("term"*), implicitly ANDed.
                let fts: Vec<String> = terms.iter().map(|t| format!("\"{t}\"*")).collect();
                q.push(&format!(
                    "{alias}.seq IN (SELECT rowid FROM {table}_fts WHERE {table}_fts MATCH "
                ))
                .push_bind(fts.join(" "))
                .push(")");
            }
            Dialect::Postgres => {
                let ts: Vec<String> = terms.iter().map(|t| format!("{t}:*")).collect();
                q.push(&format!("{alias}.search @@ to_tsquery('simple', "))
                    .push_bind(ts.join(" & "))
                    .push(")");
            }
        }
    }

    /// An expression for the UTC day of the timestamp column `col`, as days since
    /// 1970-01-01 (for timestamps from 1970 on).
    pub(crate) fn unix_day(self, col: &str) -> String {
        match self {
            Dialect::Sqlite => format!("({col} / 86400000000)"),
            Dialect::Postgres => format!("(floor(extract(epoch FROM {col}) / 86400)::bigint)"),
        }
    }

    /// Pushes a condition: row `alias` (a lead or contact) carries `tag`.
    pub(crate) fn push_has_tag(self, q: &mut Sql<'_>, alias: &'static str, tag: String) {
        match self {
            Dialect::Sqlite => {
                q.push(&format!(
                    "EXISTS (SELECT 1 FROM json_each({alias}.tags) WHERE json_each.value = "
                ))
                .push_bind(tag)
                .push(")");
            }
            Dialect::Postgres => {
                q.push(&format!("{alias}.tags ? ")).push_bind(tag);
            }
        }
    }
}

/// A value bound to a placeholder. Every variant but `Bool` and `Json` is nullable,
/// and keeps its SQL type when null (Postgres checks parameter types). No `Debug`:
/// values include password hashes and sealed secrets.
#[derive(Clone)]
pub(crate) enum Arg<'a> {
    Uuid(Option<Uuid>),
    Text(Option<Cow<'a, str>>),
    Int(Option<i64>),
    Bool(bool),
    Ts(Option<Ts>),
    Json(Value),
}

impl From<Uuid> for Arg<'_> {
    fn from(v: Uuid) -> Self {
        Arg::Uuid(Some(v))
    }
}

impl From<Option<Uuid>> for Arg<'_> {
    fn from(v: Option<Uuid>) -> Self {
        Arg::Uuid(v)
    }
}

/// Typed ids bind as their UUID.
macro_rules! id_args {
    ($($id:ty),*) => {$(
        impl From<$id> for Arg<'_> {
            fn from(v: $id) -> Self {
                Arg::Uuid(Some(v.0))
            }
        }
        impl From<Option<$id>> for Arg<'_> {
            fn from(v: Option<$id>) -> Self {
                Arg::Uuid(v.map(|v| v.0))
            }
        }
    )*};
}
id_args!(
    ActivityId,
    ApiKeyId,
    AttachmentId,
    AuditId,
    ChannelId,
    ContactId,
    EndpointId,
    EventId,
    ImportId,
    LeadId,
    OrganizationId,
    SessionId,
    UserId,
    WorkspaceId
);

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}

impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Arg::Text(Some(Cow::Owned(v)))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v.map(Cow::Borrowed))
    }
}

impl From<Option<String>> for Arg<'_> {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v.map(Cow::Owned))
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl From<Ts> for Arg<'_> {
    fn from(v: Ts) -> Self {
        Arg::Ts(Some(v))
    }
}

impl From<Option<Ts>> for Arg<'_> {
    fn from(v: Option<Ts>) -> Self {
        Arg::Ts(v)
    }
}

impl From<Json<Value>> for Arg<'_> {
    fn from(v: Json<Value>) -> Self {
        Arg::Json(v.0)
    }
}

/// The driver's argument buffer for `args`: the one place that says which Rust type
/// each [`Arg`] is encoded as.
fn arguments<'a, DB>(args: &'a [Arg<'_>]) -> std::result::Result<DB::Arguments<'a>, BoxDynError>
where
    DB: Database,
    Option<Uuid>: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    Option<i64>: Encode<'a, DB> + Type<DB>,
    bool: Encode<'a, DB> + Type<DB>,
    Option<Ts>: Encode<'a, DB> + Type<DB>,
    Json<&'a Value>: Encode<'a, DB> + Type<DB>,
{
    let mut out = DB::Arguments::default();
    for a in args {
        match a {
            Arg::Uuid(v) => out.add(*v)?,
            Arg::Text(v) => out.add(v.as_deref())?,
            Arg::Int(v) => out.add(*v)?,
            Arg::Bool(v) => out.add(*v)?,
            Arg::Ts(v) => out.add(*v)?,
            Arg::Json(v) => out.add(Json(v))?,
        }
    }
    Ok(out)
}

fn encode_error(e: BoxDynError) -> crate::Error {
    crate::Error::from(sqlx::Error::Encode(e))
}

/// A row type that decodes from SQLite (when that backend is built in).
#[cfg(feature = "sqlite")]
pub(crate) trait SqliteRow: for<'r> FromRow<'r, sqlx::sqlite::SqliteRow> {}
#[cfg(feature = "sqlite")]
impl<T: for<'r> FromRow<'r, sqlx::sqlite::SqliteRow>> SqliteRow for T {}
/// A row type that decodes from SQLite (when that backend is built in).
#[cfg(not(feature = "sqlite"))]
pub(crate) trait SqliteRow {}
#[cfg(not(feature = "sqlite"))]
impl<T> SqliteRow for T {}

/// A row type that decodes from Postgres (when that backend is built in).
#[cfg(feature = "postgres")]
pub(crate) trait PgRow: for<'r> FromRow<'r, sqlx::postgres::PgRow> {}
#[cfg(feature = "postgres")]
impl<T: for<'r> FromRow<'r, sqlx::postgres::PgRow>> PgRow for T {}
/// A row type that decodes from Postgres (when that backend is built in).
#[cfg(not(feature = "postgres"))]
pub(crate) trait PgRow {}
#[cfg(not(feature = "postgres"))]
impl<T> PgRow for T {}

/// A row type that decodes on every backend this build has (`#[derive(FromRow)]`).
pub(crate) trait Row: SqliteRow + PgRow + Send + Unpin {}
impl<T: SqliteRow + PgRow + Send + Unpin> Row for T {}

/// Where a statement runs: the pool (any free connection) or one connection, which
/// may be inside a transaction.
pub(crate) enum On<'c> {
    #[cfg(feature = "sqlite")]
    SqlitePool(&'c sqlx::SqlitePool),
    #[cfg(feature = "sqlite")]
    Sqlite(&'c mut sqlx::SqliteConnection),
    /// The pool, and the tenant a statement's own transaction sets first
    /// (row-level security).
    #[cfg(feature = "postgres")]
    PgPool(&'c sqlx::PgPool, Option<&'c str>),
    #[cfg(feature = "postgres")]
    Postgres(&'c mut sqlx::PgConnection),
}

impl On<'_> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "sqlite")]
            On::SqlitePool(_) | On::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            On::PgPool(..) | On::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Something a statement can run on: `&Pool`, `&mut Conn`, `&mut Tx` or an
/// [`On`] taken from one of them (to ask its [`Dialect`] first).
pub(crate) trait Exec<'c> {
    fn on(self) -> On<'c>;
}

impl<'c> Exec<'c> for On<'c> {
    fn on(self) -> On<'c> {
        self
    }
}

impl<'c> Exec<'c> for &'c Pool {
    fn on(self) -> On<'c> {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => On::SqlitePool(p),
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, tenant) => On::PgPool(p, tenant.as_deref()),
        }
    }
}

/// One connection held for several reads that must see the same connection.
/// Reads only: under row-level security it is a transaction with the tenant set
/// for it alone, rolled back when dropped.
pub(crate) enum Conn {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    #[cfg(feature = "postgres")]
    PostgresTenant(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl<'c> Exec<'c> for &'c mut Conn {
    fn on(self) -> On<'c> {
        match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(c) => On::Sqlite(c),
            #[cfg(feature = "postgres")]
            Conn::Postgres(c) => On::Postgres(c),
            #[cfg(feature = "postgres")]
            Conn::PostgresTenant(t) => On::Postgres(t),
        }
    }
}

/// A write transaction ([`Pool::begin_write`]); rolled back if dropped uncommitted.
/// On SQLite it holds this process's write turn, given up after the transaction
/// (fields drop in order).
pub(crate) enum Tx {
    #[cfg(feature = "sqlite")]
    Sqlite(
        sqlx::Transaction<'static, sqlx::Sqlite>,
        tokio::sync::OwnedMutexGuard<()>,
    ),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(..) => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(t, _turn) => t.commit().await?,
            #[cfg(feature = "postgres")]
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

impl<'c> Exec<'c> for &'c mut Tx {
    fn on(self) -> On<'c> {
        match self {
            #[cfg(feature = "sqlite")]
            Tx::Sqlite(t, _) => On::Sqlite(t),
            #[cfg(feature = "postgres")]
            Tx::Postgres(t) => On::Postgres(t),
        }
    }
}

impl Pool {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(..) => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Pool::Postgres(..) => Dialect::Postgres,
        }
    }

    /// Starts a transaction that will write. SQLite takes the write lock up front
    /// (`BEGIN IMMEDIATE`) so a read-then-write transaction waits for the lock under
    /// the busy timeout instead of failing with `SQLITE_BUSY` when it upgrades.
    pub(crate) async fn begin_write(&self) -> Result<Tx> {
        Ok(match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, lock) => {
                let turn = lock.clone().lock_owned().await;
                Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?, turn)
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, None) => Tx::Postgres(p.begin().await?),
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, Some(tenant)) => Tx::Postgres(tenant_tx(p, tenant).await?),
        })
    }

    /// One connection, for reads that belong together.
    pub(crate) async fn acquire(&self) -> Result<Conn> {
        Ok(match self {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p, _) => Conn::Sqlite(p.acquire().await?),
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, None) => Conn::Postgres(p.acquire().await?),
            #[cfg(feature = "postgres")]
            Pool::Postgres(p, Some(tenant)) => Conn::PostgresTenant(tenant_tx(p, tenant).await?),
        })
    }
}

/// A transaction with the tenant row-level security sees (`crm.workspace_id`)
/// set for it alone (`set_config(…, true)`): nothing is left on the connection
/// for its next user (a host sharing the pool, or another client of a
/// transaction-mode pooler), so every statement crm runs under RLS runs in one,
/// its own or its caller's.
#[cfg(feature = "postgres")]
async fn tenant_tx(
    p: &sqlx::PgPool,
    tenant: &str,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = p.begin().await?;
    sqlx::query("SELECT set_config('crm.workspace_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// SQL text with `$n` placeholders (both drivers accept them) and its arguments.
/// Built whole (`query("…").bind(a).bind(b)`) or piece by piece for filters that
/// come and go (`push`, `push_bind`). Placeholders are numbered by the arguments
/// bound so far, so a text with fixed `$n` binds them before it pushes more. Its
/// `Debug` shows the text and how many arguments, never their values.
#[derive(Default)]
pub(crate) struct Sql<'a> {
    text: Cow<'a, str>,
    args: Vec<Arg<'a>>,
}

impl std::fmt::Debug for Sql<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql")
            .field("text", &self.text)
            .field("args", &self.args.len())
            .finish()
    }
}

/// Which page of a listing ordered by its (time-ordered, UUIDv7) id: oldest first
/// after a cursor, or newest first before one.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seek {
    /// Oldest first, ids above this one (from the start when `None`).
    After(Option<uuid::Uuid>),
    /// Newest first, ids below this one (from the end when `None`).
    Before(Option<uuid::Uuid>),
}

impl Seek {
    /// Appends ` AND id > $n ORDER BY id LIMIT k` (or `<` and `DESC`) to `sql`.
    pub(crate) fn push(self, sql: &mut Sql<'_>, limit: u32) {
        let (cursor, cmp, order) = match self {
            Seek::After(c) => (c, " AND id > ", ""),
            Seek::Before(c) => (c, " AND id < ", " DESC"),
        };
        if let Some(c) = cursor {
            sql.push(cmp).push_bind(c);
        }
        sql.push(&format!(" ORDER BY id{order} LIMIT {limit}"));
    }
}

/// How many values of `width` parameters one statement binds. SQLite looks a
/// parameter's name up by a linear scan (`sqlite3_bind_parameter_name`, which sqlx
/// calls for each), so a statement's binding costs the square of its parameters: at
/// 608 per statement it was a fifth of an import's time (new leads now go in as one
/// JSON parameter, `leads::insert_leads_json`). Postgres has no such cost.
pub(crate) fn per_statement(d: Dialect, width: usize) -> usize {
    match d {
        Dialect::Sqlite => 320 / width.max(1),
        Dialect::Postgres => 1024 / width.max(1),
    }
}

/// `items` in runs whose lengths are powers of two, none longer than `max`
/// (rounded down to a power of two), longest first (100 items: 64, 32, 4). A statement built for a
/// batch of rows has one text per batch length; built per run, it has one of a
/// few texts, which each connection prepares once and Postgres plans once, where
/// a text per length was parsed and planned again on nearly every batch (in the
/// profile of a Postgres drain, parsing and planning took a fifth of the server's
/// time).
pub(crate) fn pow2_runs<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let cap = 1usize << max.max(1).ilog2();
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = (1usize << rest.len().ilog2()).min(cap);
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// A statement whose arguments follow with [`Sql::bind`].
pub(crate) fn query<'a>(text: impl Into<Cow<'a, str>>) -> Sql<'a> {
    Sql {
        text: text.into(),
        args: Vec::new(),
    }
}

/// A statement whose rows decode as `R`.
pub(crate) fn query_as<'a, R: Row>(text: impl Into<Cow<'a, str>>) -> QueryAs<'a, R> {
    QueryAs(query(text), PhantomData)
}

impl<'a> Sql<'a> {
    /// Binds the next `$n` of the text as it is written.
    pub(crate) fn bind(mut self, v: impl Into<Arg<'a>>) -> Self {
        self.args.push(v.into());
        self
    }

    /// Appends text.
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.to_mut().push_str(text);
        self
    }

    /// Appends the next placeholder (`$n`) and binds it.
    pub(crate) fn push_bind(&mut self, v: impl Into<Arg<'a>>) -> &mut Self {
        self.args.push(v.into());
        let n = self.args.len();
        // Writing into a `String` cannot fail.
        let _ = write!(self.text.to_mut(), "${n}");
        self
    }

    /// Runs the statement; the number of rows it changed.
    pub(crate) async fn execute<'c>(self, on: impl Exec<'c>) -> Result<u64> {
        let Sql { text, args } = self;
        Ok(match on.on() {
            #[cfg(feature = "sqlite")]
            On::SqlitePool(p) => sqlite(&text, &args)?.execute(p).await?.rows_affected(),
            #[cfg(feature = "sqlite")]
            On::Sqlite(c) => sqlite(&text, &args)?.execute(c).await?.rows_affected(),
            #[cfg(feature = "postgres")]
            On::PgPool(p, None) => postgres(&text, &args)?.execute(p).await?.rows_affected(),
            #[cfg(feature = "postgres")]
            On::PgPool(p, Some(tenant)) => {
                let mut tx = tenant_tx(p, tenant).await?;
                let r = postgres(&text, &args)?
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                r
            }
            #[cfg(feature = "postgres")]
            On::Postgres(c) => postgres(&text, &args)?.execute(c).await?.rows_affected(),
        })
    }

    /// Every row, decoded as `R`.
    pub(crate) async fn fetch_all<'c, R: Row>(self, on: impl Exec<'c>) -> Result<Vec<R>> {
        let Sql { text, args } = self;
        Ok(match on.on() {
            #[cfg(feature = "sqlite")]
            On::SqlitePool(p) => sqlite_as(&text, &args)?.fetch_all(p).await?,
            #[cfg(feature = "sqlite")]
            On::Sqlite(c) => sqlite_as(&text, &args)?.fetch_all(c).await?,
            #[cfg(feature = "postgres")]
            On::PgPool(p, None) => postgres_as(&text, &args)?.fetch_all(p).await?,
            #[cfg(feature = "postgres")]
            On::PgPool(p, Some(tenant)) => {
                let mut tx = tenant_tx(p, tenant).await?;
                let r = postgres_as(&text, &args)?.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                r
            }
            #[cfg(feature = "postgres")]
            On::Postgres(c) => postgres_as(&text, &args)?.fetch_all(c).await?,
        })
    }

    /// The first row, if any, decoded as `R`.
    pub(crate) async fn fetch_optional<'c, R: Row>(self, on: impl Exec<'c>) -> Result<Option<R>> {
        let Sql { text, args } = self;
        Ok(match on.on() {
            #[cfg(feature = "sqlite")]
            On::SqlitePool(p) => sqlite_as(&text, &args)?.fetch_optional(p).await?,
            #[cfg(feature = "sqlite")]
            On::Sqlite(c) => sqlite_as(&text, &args)?.fetch_optional(c).await?,
            #[cfg(feature = "postgres")]
            On::PgPool(p, None) => postgres_as(&text, &args)?.fetch_optional(p).await?,
            #[cfg(feature = "postgres")]
            On::PgPool(p, Some(tenant)) => {
                let mut tx = tenant_tx(p, tenant).await?;
                let r = postgres_as(&text, &args)?.fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                r
            }
            #[cfg(feature = "postgres")]
            On::Postgres(c) => postgres_as(&text, &args)?.fetch_optional(c).await?,
        })
    }
}

#[cfg(feature = "sqlite")]
fn sqlite<'a>(
    text: &'a str,
    args: &'a [Arg<'_>],
) -> Result<sqlx::query::Query<'a, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'a>>> {
    let args = arguments::<sqlx::Sqlite>(args).map_err(encode_error)?;
    Ok(sqlx::query_with(text, args))
}

#[cfg(feature = "sqlite")]
fn sqlite_as<'a, R: Row>(
    text: &'a str,
    args: &'a [Arg<'_>],
) -> Result<sqlx::query::QueryAs<'a, sqlx::Sqlite, R, sqlx::sqlite::SqliteArguments<'a>>> {
    let args = arguments::<sqlx::Sqlite>(args).map_err(encode_error)?;
    Ok(sqlx::query_as_with(text, args))
}

#[cfg(feature = "postgres")]
fn postgres<'a>(
    text: &'a str,
    args: &'a [Arg<'_>],
) -> Result<sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments>> {
    let args = arguments::<sqlx::Postgres>(args).map_err(encode_error)?;
    Ok(sqlx::query_with(text, args))
}

#[cfg(feature = "postgres")]
fn postgres_as<'a, R: Row>(
    text: &'a str,
    args: &'a [Arg<'_>],
) -> Result<sqlx::query::QueryAs<'a, sqlx::Postgres, R, sqlx::postgres::PgArguments>> {
    let args = arguments::<sqlx::Postgres>(args).map_err(encode_error)?;
    Ok(sqlx::query_as_with(text, args))
}

/// A [`Sql`] whose rows decode as `R` ([`query_as`]).
pub(crate) struct QueryAs<'a, R>(Sql<'a>, PhantomData<fn() -> R>);

impl<'a, R: Row> QueryAs<'a, R> {
    /// Binds the next `$n` of the text as it is written.
    pub(crate) fn bind(self, v: impl Into<Arg<'a>>) -> Self {
        Self(self.0.bind(v), PhantomData)
    }

    pub(crate) async fn fetch_all<'c>(self, on: impl Exec<'c>) -> Result<Vec<R>> {
        self.0.fetch_all(on).await
    }

    pub(crate) async fn fetch_optional<'c>(self, on: impl Exec<'c>) -> Result<Option<R>> {
        self.0.fetch_optional(on).await
    }

    /// The first row; a statement that returns none is a bug of crm's SQL
    /// (`RowNotFound`), not a missing entity.
    pub(crate) async fn fetch_one<'c>(self, on: impl Exec<'c>) -> Result<R> {
        self.0
            .fetch_optional(on)
            .await?
            .ok_or_else(|| crate::Error::from(sqlx::Error::RowNotFound))
    }
}

#[cfg(test)]
mod tests {
    use super::pow2_runs;

    #[test]
    fn runs_are_powers_of_two_up_to_the_cap() {
        let lens = |n: usize, max: usize| {
            let items: Vec<usize> = (0..n).collect();
            let runs: Vec<&[usize]> = pow2_runs(&items, max).collect();
            assert_eq!(runs.concat(), items, "every item once, in order");
            runs.iter().map(|r| r.len()).collect::<Vec<_>>()
        };
        assert_eq!(lens(0, 256), Vec::<usize>::new());
        assert_eq!(lens(1, 256), [1]);
        assert_eq!(lens(100, 256), [64, 32, 4]);
        assert_eq!(lens(600, 256), [256, 256, 64, 16, 8]);
        assert_eq!(lens(100, 32), [32, 32, 32, 4]);
        assert_eq!(lens(7, 500), [4, 2, 1]);
        assert_eq!(lens(700, 500), [256, 256, 128, 32, 16, 8, 4]);
        assert_eq!(lens(3, 0), [1, 1, 1]);
    }
}
