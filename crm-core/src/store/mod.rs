//! Storage: every SQL statement crm runs, one module per domain, written once for
//! both backends.
//!
//! Layout. The storage of a domain is a file here rather than inside the domain's
//! folder because writes cross domains inside one transaction (a lead change writes
//! its outbox event and the jobs of the endpoints and channels that take it; every
//! admin change writes its audit entry), and because the driver seam stays private
//! to this module. The direction is one way: models (plain types, in each domain's
//! model files) <- storage (this module) <- services (`Leads`, `Auth`, `Webhooks`,
//! ...). A storage module imports no service; a service calls storage functions.
//!
//! - [`sql`]: the seam over the two drivers (a query as text plus typed arguments,
//!   run on a pool, connection or transaction) and [`sql::Dialect`], where SQLite
//!   and Postgres differ within a statement (row locks, search, tag filters); how a
//!   write transaction starts is `Pool::begin_write`. Where a whole statement
//!   differs it is one function per backend beside the others (the rate-limit
//!   upsert, Postgres only).
//! - [`pool`]: connecting, the host's pool, and [`Ts`] (timestamps as stored).
//! - one module per domain: its row types, its column lists and its SQL.
//!
//! Rules for every function here: a change and what it implies (events, jobs, the
//! audit entry) are written in one transaction; a read-modify-write locks the row it
//! reads (`FOR UPDATE` on Postgres, the write lock taken by `BEGIN IMMEDIATE` on
//! SQLite) or is one conditional `UPDATE`; every statement on a workspace handle's
//! behalf filters by `workspace_id`, which is how a handle never sees another's rows.
//! The exceptions are keyed by something no other workspace can hold (a session or
//! token hash, an API key id found by its hash) or serve every workspace at once (the
//! job queue, housekeeping).

pub(crate) mod api_keys;
pub(crate) mod attachments;
pub(crate) mod audit;
pub(crate) mod channels;
#[cfg(test)]
mod conformance;
pub(crate) mod contacts;
pub(crate) mod endpoints;
pub(crate) mod housekeeping;
pub(crate) mod idempotency;
pub(crate) mod imports;
pub(crate) mod integrations;
pub(crate) mod jobs;
pub(crate) mod leads;
#[cfg(feature = "oidc")]
pub(crate) mod oidc;
pub(crate) mod outbox;
mod pool;
#[cfg(feature = "postgres")]
pub(crate) mod rate_limits;
pub(crate) mod rls;
pub(crate) mod sessions;
mod sql;
pub(crate) mod users;
pub(crate) mod workspaces;

pub(crate) use pool::{connect, from_host, Pool, Ts};
use sql::{query, Row};
pub(crate) use sql::{Dialect, Seek};

use serde_json::Value;
use uuid::Uuid;

use crate::events::{Event, EventType};
use crate::ids::{ActivityId, LeadId, WorkspaceId};
use crate::leads::model::Activity;
use crate::leads::values::ActivityKind;
use crate::{Error, Result};

/// A stored value that no longer parses: the database was changed behind crm's back.
pub(crate) fn corrupt(what: &str) -> Error {
    Error::Database(crate::error::DatabaseError::new(sqlx::Error::Decode(
        format!("stored {what} is not valid").into(),
    )))
}

/// Who and when, for one call.
pub(crate) struct Ctx<'a> {
    pub ws: WorkspaceId,
    pub now: chrono::DateTime<chrono::Utc>,
    pub actor: Option<&'a str>,
}

impl Ctx<'_> {
    fn activity(
        &self,
        lead_id: LeadId,
        kind: ActivityKind,
        description: Option<String>,
    ) -> Activity {
        Activity {
            id: ActivityId::new(),
            lead_id,
            kind,
            description,
            old_status: None,
            new_status: None,
            actor: self.actor.map(str::to_owned),
            message: None,
            created_at: self.now,
        }
    }

    fn event(&self, t: EventType, lead_id: LeadId, data: Value) -> Event {
        Event::new(self.ws, t, Some(lead_id), data, self.now)
    }
}

/// The number a `SELECT COUNT(*) …` answers.
async fn count(pool: &Pool, sql: sql::Sql<'_>) -> Result<u64> {
    let rows: Vec<(i64,)> = sql.fetch_all(pool).await?;
    Ok(rows
        .first()
        .map_or(0, |(n,)| u64::try_from(*n).unwrap_or(0)))
}

/// Rows of a workspace-owned `table` (`id` narrows to one), oldest first.
async fn owned_rows<R>(
    pool: &Pool,
    columns: &str,
    table: &str,
    ws: WorkspaceId,
    id: Option<Uuid>,
) -> Result<Vec<R>>
where
    R: Row,
{
    let mut sql = query(format!(
        "SELECT {columns} FROM {table} WHERE workspace_id = "
    ));
    sql.push_bind(ws.0);
    if let Some(id) = id {
        sql.push(" AND id = ").push_bind(id);
    }
    sql.push(" ORDER BY id");
    sql.fetch_all(pool).await
}
