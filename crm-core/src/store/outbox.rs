//! The outbox: an event row is written in the transaction of the change that causes
//! it, with one pending job per enabled endpoint and channel whose filter takes it
//! ([`crate::events::EventType::subscribed`]).

use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;
use uuid::Uuid;

use super::sql::{per_statement, pow2_runs, query, query_as, Tx};
use super::{corrupt, Pool, Ts};
use crate::events::Event;
use crate::ids::{EventId, LeadId, WorkspaceId};
use crate::webhooks::model::JobKind;
use crate::Result;

/// An event row, its payload parsed (`Value`, an [`Event`]'s) or kept as the JSON
/// text stored (`Box<RawValue>`, a [`QueuedEvent`]'s).
#[derive(FromRow)]
pub(crate) struct EventRow<P = Value> {
    id: EventId,
    workspace_id: WorkspaceId,
    event_type: String,
    lead_id: Option<LeadId>,
    payload: Json<P>,
    created_at: Ts,
}

impl<P> EventRow<P> {
    /// The event, with its payload made by `payload` from the one read.
    fn map(self, payload: impl FnOnce(P) -> Result<Value>) -> Result<Event> {
        Ok(Event {
            id: self.id,
            workspace_id: self.workspace_id,
            event_type: self.event_type.parse().map_err(|_| corrupt("event type"))?,
            lead_id: self.lead_id,
            payload: payload(self.payload.0)?,
            created_at: self.created_at.0,
        })
    }
}

impl EventRow {
    fn into_event(self) -> Result<Event> {
        self.map(Ok)
    }
}

/// An event as a dispatcher reads it: the payload stays the JSON text read (still
/// checked to be JSON; Postgres writes a `jsonb` out with a space after each
/// separator), and a webhook sends those bytes as they are. Parsing every payload
/// into a `Value` only to write it out again was 13 % of the dispatcher's process's
/// CPU in a Postgres drain. A notification parses it ([`QueuedEvent::to_event`]).
pub(crate) type QueuedEvent = EventRow<Box<RawValue>>;

impl QueuedEvent {
    /// The event's id.
    pub(crate) fn id(&self) -> EventId {
        self.id
    }

    /// The payload as read: the body a webhook sends.
    pub(crate) fn payload(&self) -> &str {
        self.payload.0.get()
    }

    /// The event, its payload parsed.
    pub(crate) fn to_event(&self) -> Result<Event> {
        let row = EventRow {
            id: self.id,
            workspace_id: self.workspace_id,
            event_type: self.event_type.clone(),
            lead_id: self.lead_id,
            payload: Json(self.payload()),
            created_at: self.created_at,
        };
        row.map(|raw| serde_json::from_str(raw).map_err(|_| corrupt("event payload")))
    }
}

/// The enabled webhook endpoints and notification channels of a workspace: the job
/// kind, the target and its event filter.
pub(super) type Subscribers = Vec<(String, Uuid, Json<Vec<String>>)>;

/// Reads [`Subscribers`]: both kinds in one query.
pub(super) async fn subscribers(conn: &mut Tx, ws: WorkspaceId) -> Result<Subscribers> {
    query_as::<(String, Uuid, Json<Vec<String>>)>(
        "SELECT $2, id, event_types FROM crm_webhook_endpoints \
         WHERE workspace_id = $1 AND enabled \
         UNION ALL \
         SELECT $3, id, event_types FROM crm_notification_channels \
         WHERE workspace_id = $1 AND enabled",
    )
    .bind(ws)
    .bind(JobKind::Webhook.as_str())
    .bind(JobKind::Notification.as_str())
    .fetch_all(&mut *conn)
    .await
}

/// Writes an event into the outbox, inside the caller's transaction, with one
/// pending job per enabled webhook endpoint and notification channel of the
/// workspace whose filter takes it: one read of the filters and at most one insert
/// of jobs, whatever their number.
pub(super) async fn insert_event(conn: &mut Tx, e: &Event) -> Result<()> {
    let subscribers = subscribers(conn, e.workspace_id).await?;
    insert_event_for(conn, e, &subscribers).await
}

/// [`insert_event`] with the workspace's subscribers already read in this
/// transaction (a batch of writes reads them once).
pub(super) async fn insert_event_for(
    conn: &mut Tx,
    e: &Event,
    subscribers: &Subscribers,
) -> Result<()> {
    insert_events(conn, &[(e, subscribers)]).await
}

/// Writes many events, each with the subscribers of its workspace (read in this
/// transaction), and their jobs: many rows per statement, in runs of power-of-two
/// length ([`pow2_runs`]), so a batch of creates costs a few statements instead of
/// three per event; and one `NOTIFY` for the transaction.
pub(super) async fn insert_events(conn: &mut Tx, events: &[(&Event, &Subscribers)]) -> Result<()> {
    for run in pow2_runs(events, per_statement(conn.dialect(), 6)) {
        let mut rows = query(
            "INSERT INTO crm_events (id, workspace_id, event_type, lead_id, payload, created_at) \
             VALUES ",
        );
        for (i, (e, _)) in run.iter().enumerate() {
            rows.push(if i == 0 { "(" } else { ", (" })
                .push_bind(e.id)
                .push(", ")
                .push_bind(e.workspace_id)
                .push(", ")
                .push_bind(e.event_type.as_str())
                .push(", ")
                .push_bind(e.lead_id.map(Uuid::from))
                .push(", ")
                .push_bind(Json(e.payload.clone()))
                .push(", ")
                .push_bind(Ts(e.created_at))
                .push(")");
        }
        rows.execute(&mut *conn).await?;
    }
    let jobs: Vec<(&Event, &str, Uuid)> = events
        .iter()
        .flat_map(|(e, subscribers)| {
            subscribers
                .iter()
                .filter(|(_, _, filter)| e.event_type.subscribed(&filter.0))
                .map(move |(kind, id, _)| (*e, kind.as_str(), *id))
        })
        .collect();
    if jobs.is_empty() {
        return Ok(());
    }
    for run in pow2_runs(&jobs, per_statement(conn.dialect(), 8)) {
        let mut rows = query(
            "INSERT INTO crm_jobs (id, workspace_id, kind, target_id, event_id, status, attempts, \
             run_at, created_at, updated_at) VALUES ",
        );
        for (i, (e, kind, target)) in run.iter().enumerate() {
            rows.push(if i == 0 { "(" } else { ", (" })
                .push_bind(Uuid::now_v7())
                .push(", ")
                .push_bind(e.workspace_id)
                .push(", ")
                .push_bind(*kind)
                .push(", ")
                .push_bind(*target)
                .push(", ")
                .push_bind(e.id)
                .push(", 'pending', 0, ")
                .push_bind(Ts(e.created_at))
                .push(", ")
                .push_bind(Ts(e.created_at))
                .push(", ")
                .push_bind(Ts(e.created_at))
                .push(")");
        }
        rows.execute(&mut *conn).await?;
    }
    super::jobs::announce(conn).await
}

pub(super) async fn insert_event_row(conn: &mut Tx, e: &Event) -> Result<()> {
    let none = Subscribers::new();
    insert_events(conn, &[(e, &none)]).await
}

/// Events of the workspace after `after` (by id, so in the order they were written
/// within one process), at most `limit`.
pub(crate) async fn events(
    pool: &Pool,
    ws: WorkspaceId,
    after: Option<EventId>,
    limit: u32,
) -> Result<Vec<Event>> {
    let mut sql = query(
        "SELECT id, workspace_id, event_type, lead_id, payload, created_at FROM crm_events \
         WHERE workspace_id = ",
    );
    sql.push_bind(ws.0);
    if let Some(after) = after {
        sql.push(" AND id > ").push_bind(after.0);
    }
    sql.push(&format!(" ORDER BY id LIMIT {limit}"));
    let rows: Vec<EventRow> = sql.fetch_all(pool).await?;
    rows.into_iter().map(EventRow::into_event).collect()
}

/// The events of `ids` (those that exist), in one query: what a dispatcher's claimed
/// batch delivers.
pub(crate) async fn events_by_ids(pool: &Pool, ids: &[Uuid]) -> Result<Vec<QueuedEvent>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in pow2_runs(ids, 256) {
        let mut sql = query(
            "SELECT id, workspace_id, event_type, lead_id, payload, created_at FROM crm_events WHERE id IN (",
        );
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push_bind(*id);
        }
        sql.push(")");
        out.extend(sql.fetch_all::<QueuedEvent>(pool).await?);
    }
    Ok(out)
}

pub(crate) async fn event_by_id(pool: &Pool, id: Uuid) -> Result<Option<Event>> {
    let mut sql = query("SELECT id, workspace_id, event_type, lead_id, payload, created_at FROM crm_events WHERE id = ");
    sql.push_bind(id);
    let rows: Vec<EventRow> = sql.fetch_all(pool).await?;
    rows.into_iter()
        .next()
        .map(EventRow::into_event)
        .transpose()
}
