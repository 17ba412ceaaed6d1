//! The storage conformance suite: the same cases, on the storage functions directly,
//! against SQLite and (with the `postgres` feature and `CRM_TEST_PG_URL`) Postgres,
//! each on a fresh database (a fresh schema on Postgres). What must hold on both:
//! every argument type binds and reads back (nulls keep their type), the dialect's
//! search and tag filters and the keyset paging give the same pages, a job is
//! claimed by one worker until its lease ends (and a finish written after it moves
//! nothing), and an idempotency key is claimed once and then replayed.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use sqlx::types::Json;
use uuid::Uuid;

use super::sql::{query, query_as};
use super::{idempotency, jobs, leads, workspaces, Ctx, Pool, Ts};
use crate::events::{Event, EventType};
use crate::ids::WorkspaceId;
use crate::leads::cursor::Cursor;
use crate::leads::model::{Lead, LeadQuery, NewLead, SortField, SortOrder};
use crate::leads::parse::{self, LeadRules};
use crate::webhooks::model::{Attempt, JobKind, JobStatus};
use crate::Crm;

/// One backend's fresh database, and how to drop it.
struct Db {
    crm: Crm,
    #[cfg(feature = "postgres")]
    drop_schema: Option<(String, String)>,
}

impl Db {
    async fn sqlite() -> Self {
        let crm = Crm::connect("sqlite::memory:").await.expect("sqlite");
        Self {
            crm,
            #[cfg(feature = "postgres")]
            drop_schema: None,
        }
    }

    #[cfg(feature = "postgres")]
    async fn postgres() -> Self {
        let url = std::env::var("CRM_TEST_PG_URL").expect(
            "CRM_TEST_PG_URL is not set: run scripts/test.sh, which starts a throwaway Postgres",
        );
        let schema = format!("crm_conformance_{}", Uuid::now_v7().simple());
        let crm = Crm::builder()
            .database_url(&url)
            .schema(&schema)
            .connect()
            .await
            .expect("postgres");
        Self {
            crm,
            drop_schema: Some((url, schema)),
        }
    }

    fn pool(&self) -> &Pool {
        self.crm.pool()
    }

    async fn cleanup(self) {
        self.crm.close().await;
        #[cfg(feature = "postgres")]
        if let Some((url, schema)) = self.drop_schema {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .execute(&mut c)
                .await
                .expect("drop schema");
        }
    }
}

/// A test per case and backend, as `sqlite::case` and `postgres::case`.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::Db::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )+
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::Db::postgres().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )+
        }
    };
}

conformance!(
    every_argument_type_binds_and_reads_back,
    search_tags_status_and_paging_give_the_same_pages,
    a_job_is_claimed_by_one_worker_until_its_lease_ends,
    concurrent_claims_keep_a_targets_share,
    a_finish_moves_only_the_jobs_its_lease_still_holds,
    an_idempotency_key_is_claimed_once_then_replayed,
    a_batch_of_creates_gives_each_its_own_result,
);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("date")
}

type Values = (
    Option<Uuid>,
    Option<String>,
    Option<i64>,
    bool,
    Option<Ts>,
    Json<Value>,
);

async fn every_argument_type_binds_and_reads_back(db: &Db) {
    let id = Uuid::now_v7();
    let t = Ts(t0() + Duration::microseconds(123_456));
    let back: Values = query_as::<Values>("SELECT $1, $2, $3, $4, $5, $6")
        .bind(id)
        .bind("é ü 🙂 ' \" \\")
        .bind(i64::MIN)
        .bind(true)
        .bind(t)
        .bind(Json(json!({"k": [1, "two", null]})))
        .fetch_one(db.pool())
        .await
        .expect("values");
    assert_eq!(back.0, Some(id));
    assert_eq!(back.1.as_deref(), Some("é ü 🙂 ' \" \\"));
    assert_eq!(back.2, Some(i64::MIN));
    assert!(back.3);
    assert_eq!(back.4, Some(t), "microseconds survive");
    assert_eq!(back.5 .0, json!({"k": [1, "two", null]}));

    // Nulls keep their type: Postgres would refuse an untyped null in a typed column.
    let ws = WorkspaceId::DEFAULT;
    let written = query(
        "INSERT INTO crm_events (id, workspace_id, event_type, lead_id, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(ws)
    .bind("lead.created")
    .bind(None::<Uuid>)
    .bind(Json(json!({})))
    .bind(t)
    .execute(db.pool())
    .await
    .expect("insert with a null uuid");
    assert_eq!(written, 1);
    let nulls: Values =
        query_as::<Values>("SELECT lead_id, $2, $3, $4, $5, payload FROM crm_events WHERE id = $1")
            .bind(id)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(false)
            .bind(None::<Ts>)
            .fetch_one(db.pool())
            .await
            .expect("nulls");
    assert_eq!(
        (nulls.0, nulls.1, nulls.2, nulls.3, nulls.4),
        (None, None, None, false, None)
    );
}

async fn search_tags_status_and_paging_give_the_same_pages(db: &Db) {
    let ws = WorkspaceId::DEFAULT;
    let rules = LeadRules::default();
    let people = [
        ("Alice Martin", "vip", "website"),
        ("Alina Costa", "cold", "website"),
        ("Bob Alison", "vip", "whatsapp"),
        ("Carla Diaz", "vip", "website"),
        ("Dan Ng", "cold", "website"),
    ];
    for (i, (name, tag, source)) in people.iter().enumerate() {
        let fields = parse::new_lead(
            NewLead {
                name: (*name).into(),
                email: Some(format!("p{i}@example.com")),
                source: Some((*source).into()),
                tags: vec![(*tag).into()],
                ..NewLead::default()
            },
            &rules,
        )
        .expect("valid lead");
        let ctx = Ctx {
            ws,
            now: t0() + Duration::minutes(i as i64),
            actor: None,
        };
        leads::create(db.pool(), &ctx, fields)
            .await
            .expect("create");
    }
    let names = |page: &[Lead]| -> Vec<String> { page.iter().map(|l| l.name.clone()).collect() };
    let list = |input: LeadQuery, after: Option<Cursor>| {
        let q = parse::query(&input).expect("query");
        let (sort, order) = (input.sort, input.order);
        async move {
            leads::list(db.pool(), ws, &q, sort, order, after, true)
                .await
                .expect("list")
        }
    };

    // Prefix search on every word of name, email and company.
    let (page, total) = list(
        LeadQuery {
            q: Some("ali".into()),
            sort: SortField::Name,
            order: SortOrder::Asc,
            ..LeadQuery::default()
        },
        None,
    )
    .await;
    assert_eq!(names(&page), ["Alice Martin", "Alina Costa", "Bob Alison"]);
    assert_eq!(total, Some(3));

    // A tag and a source together.
    let (page, _) = list(
        LeadQuery {
            tags: vec!["vip".into()],
            source: Some("website".into()),
            sort: SortField::Name,
            order: SortOrder::Desc,
            ..LeadQuery::default()
        },
        None,
    )
    .await;
    assert_eq!(names(&page), ["Carla Diaz", "Alice Martin"]);

    // Keyset paging, newest first: two pages of two and one of one, no repeats.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let input = LeadQuery {
            limit: Some(2),
            ..LeadQuery::default()
        };
        let fingerprint = parse::query(&input).expect("query").fingerprint();
        let (mut page, _) = list(input, after).await;
        let more = page.len() > 2;
        page.truncate(2);
        seen.extend(names(&page));
        if !more {
            break;
        }
        let last = page.last().expect("a page");
        after = Some(Cursor::after(
            last,
            SortField::CreatedAt,
            SortOrder::Desc,
            &fingerprint,
        ));
    }
    assert_eq!(
        seen,
        [
            "Dan Ng",
            "Carla Diaz",
            "Bob Alison",
            "Alina Costa",
            "Alice Martin"
        ]
    );
}

/// Queues one job of `kind` for `target` in the default workspace, with an event of
/// its own, due at [`t0`].
async fn enqueue_one(db: &Db, kind: JobKind, target: Uuid) {
    let ws = WorkspaceId::DEFAULT;
    let event = Event::new(ws, EventType::LeadCreated, None, json!({}), t0());
    jobs::enqueue(db.pool(), ws, kind, target, event.id, Some(&event), t0())
        .await
        .expect("enqueue");
}

async fn a_job_is_claimed_by_one_worker_until_its_lease_ends(db: &Db) {
    let target = Uuid::now_v7();
    enqueue_one(db, JobKind::Webhook, target).await;
    let now = t0() + Duration::seconds(1);
    let lease = now + Duration::seconds(30);
    let first = jobs::claim_jobs(db.pool(), now, lease, (10, 10), None)
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].target_id, target);
    assert_eq!(first[0].attempts, 1);
    let second = jobs::claim_jobs(db.pool(), now, lease, (10, 10), None)
        .await
        .expect("claim");
    assert!(second.is_empty(), "a leased job is not claimed twice");
    // Another kind's worker sees nothing either.
    let other = jobs::claim_jobs(db.pool(), now, lease, (10, 10), Some(JobKind::Notification))
        .await
        .expect("claim");
    assert!(other.is_empty());
    // When the lease has run out, another worker takes it (the first one died).
    let later = lease + Duration::seconds(1);
    let retaken = jobs::claim_jobs(
        db.pool(),
        later,
        later + Duration::seconds(30),
        (10, 10),
        None,
    )
    .await
    .expect("claim");
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].attempts, 2);
    assert_ne!(
        retaken[0].lease_token, first[0].lease_token,
        "every claim has a token of its own"
    );
    // The first claim's token no longer holds it: its release changes nothing.
    jobs::release_job(db.pool(), first[0].id, first[0].lease_token, later)
        .await
        .expect("release");
    let none = jobs::claim_jobs(
        db.pool(),
        later,
        later + Duration::seconds(30),
        (10, 10),
        None,
    )
    .await
    .expect("claim");
    assert!(
        none.is_empty(),
        "a stale token cannot release another's lease"
    );
}

/// Claims made at the same moment (other processes) never together lease more than
/// `per_target` jobs of one target: each claim counts the leases committed before it.
async fn concurrent_claims_keep_a_targets_share(db: &Db) {
    let now = t0() + Duration::seconds(1);
    let lease = now + Duration::seconds(30);
    for round in 0..10 {
        let target = Uuid::now_v7();
        for _ in 0..8 {
            enqueue_one(db, JobKind::Webhook, target).await;
        }
        let claim = || jobs::claim_jobs(db.pool(), now, lease, (8, 2), None);
        let (a, b, c, d) = tokio::join!(claim(), claim(), claim(), claim());
        let taken: usize = [a, b, c, d]
            .into_iter()
            .map(|r| {
                r.expect("claim")
                    .iter()
                    .filter(|j| j.target_id == target)
                    .count()
            })
            .sum();
        assert_eq!(
            taken, 2,
            "round {round}: a target's share is 2 across claims"
        );
    }
}

/// Finished attempts written in one batch delete (delivered) or move (retried,
/// failed) only the jobs whose lease their claim still holds: a finish written late,
/// after the lease ran out and the job was claimed again, moves nothing, beside
/// batch-mates whose claim is current.
async fn a_finish_moves_only_the_jobs_its_lease_still_holds(db: &Db) {
    let target = Uuid::now_v7();
    for _ in 0..4 {
        enqueue_one(db, JobKind::Notification, target).await;
    }
    let now = t0() + Duration::seconds(1);
    let lease = now + Duration::seconds(30);
    // The first claim takes two jobs; its lease runs out, and a second claim takes
    // those two again with the other two.
    let stale = jobs::claim_jobs(db.pool(), now, lease, (2, 10), None)
        .await
        .expect("claim");
    assert_eq!(stale.len(), 2);
    let later = lease + Duration::seconds(1);
    let current = jobs::claim_jobs(
        db.pool(),
        later,
        later + Duration::seconds(30),
        (4, 10),
        None,
    )
    .await
    .expect("claim");
    assert_eq!(current.len(), 4);
    let fresh: Vec<_> = current
        .iter()
        .filter(|j| stale.iter().all(|s| s.id.0 != j.id.0))
        .cloned()
        .collect();
    assert_eq!(fresh.len(), 2);
    let finish = |job: &jobs::ClaimedJob, status: JobStatus| jobs::Finish {
        job: job.clone(),
        attempt: Attempt {
            id: Uuid::now_v7(),
            job_id: job.id.0,
            kind: job.kind.clone(),
            target_id: job.target_id,
            event_id: job.event_id.into(),
            attempt: 1,
            status_code: None,
            response_body: None,
            duration_ms: 1,
            error_kind: None,
            next_attempt_at: (status == JobStatus::Pending).then(|| later + Duration::hours(1)),
            created_at: later,
        },
        job_status: status,
        success: status == JobStatus::Delivered,
        disable: None,
        disable_after: 5,
        audit: None,
    };
    // Late: the first claim's delivered and retried attempts. Current: one delivered
    // and one failed for good.
    let done = [
        finish(&stale[0], JobStatus::Delivered),
        finish(&stale[1], JobStatus::Pending),
        finish(&fresh[0], JobStatus::Delivered),
        finish(&fresh[1], JobStatus::Failed),
    ];
    jobs::finish_jobs(db.pool(), &done).await.expect("finish");
    let rows: Vec<(Uuid, String, Option<Uuid>, Ts)> =
        query_as("SELECT id, status, lease_token, run_at FROM crm_jobs WHERE target_id = $1")
            .bind(target)
            .fetch_all(db.pool())
            .await
            .expect("jobs");
    let row = |id: Uuid| rows.iter().find(|r| r.0 == id);
    let token = current[0].lease_token;
    for late in &stale {
        let r = row(late.id.0).expect("a late finish deletes nothing");
        assert_eq!(
            (r.1.as_str(), r.2, r.3 .0),
            ("pending", Some(token), t0()),
            "a late finish leaves the current lease alone"
        );
    }
    assert!(row(fresh[0].id.0).is_none(), "a delivered job is deleted");
    let failed = row(fresh[1].id.0).expect("a failed job stays");
    assert_eq!((failed.1.as_str(), failed.2), ("failed", None));
    assert_eq!(rows.len(), 3);
    // Every attempt is logged, the late ones too.
    let (logged,): (i64,) =
        query_as("SELECT COUNT(*) FROM crm_delivery_attempts WHERE target_id = $1")
            .bind(target)
            .fetch_one(db.pool())
            .await
            .expect("attempts");
    assert_eq!(logged, 4);
}

async fn an_idempotency_key_is_claimed_once_then_replayed(db: &Db) {
    let ws = WorkspaceId::DEFAULT;
    let now = Ts(t0());
    let long_ago = Ts(t0() - Duration::hours(24));
    let claim = |fingerprint: &'static str, now: Ts| {
        idempotency::claim_idempotency(
            db.pool(),
            ws,
            "POST /leads",
            "key-1",
            fingerprint,
            now,
            long_ago,
            long_ago,
        )
    };
    assert!(claim("f1", now).await.expect("claim").is_none(), "new");
    let running = claim("f1", now).await.expect("claim").expect("held");
    assert_eq!(running.fingerprint, "f1");
    assert_eq!(running.status_code, None, "still running");
    idempotency::finish_idempotency(db.pool(), ws, "POST /leads", "key-1", Some((201, "{}")))
        .await
        .expect("finish");
    let done = claim("f2", now).await.expect("claim").expect("replay");
    assert_eq!(
        done.fingerprint, "f1",
        "the first request's fingerprint is kept"
    );
    assert_eq!(done.status_code, Some(201));
    assert_eq!(done.response.as_deref(), Some("{}"));
    // Another workspace's key of the same name is its own.
    let other = WorkspaceId::new();
    workspaces::create_workspace(db.pool(), other, "other", now)
        .await
        .expect("workspace");
    let theirs = idempotency::claim_idempotency(
        db.pool(),
        other,
        "POST /leads",
        "key-1",
        "f1",
        now,
        long_ago,
        long_ago,
    )
    .await
    .expect("claim");
    assert!(theirs.is_none(), "a new claim in the other workspace");
}

/// One batch of creates (the lead writer's group commit), written many rows per
/// statement: each create gets its own result, in order. Of two creates of one new
/// email the first wins; a create refused is told of the lead that held its email
/// before it (not of one a later create of the batch inserted, even one sharing its
/// phone); every lead inserted has its event and its job, and no refused one has.
async fn a_batch_of_creates_gives_each_its_own_result(db: &Db) {
    let ws = WorkspaceId::DEFAULT;
    let rules = LeadRules::default();
    let now = t0();
    let fields = |name: &str, email: Option<&str>, phone: Option<&str>| {
        parse::new_lead(
            NewLead {
                name: name.into(),
                email: email.map(str::to_owned),
                phone: phone.map(str::to_owned),
                ..NewLead::default()
            },
            &rules,
        )
        .expect("valid lead")
    };
    let row = |f| leads::NewRow {
        ws,
        now,
        actor: None,
        fields: f,
    };
    let endpoint = Uuid::now_v7();
    query(
        "INSERT INTO crm_webhook_endpoints (id, workspace_id, url, description, event_types, \
         secret, enabled, consecutive_failures, created_at, updated_at) \
         VALUES ($1, $2, 'https://example.com/hook', '', $3, 'sealed', true, 0, $4, $4)",
    )
    .bind(endpoint)
    .bind(ws)
    .bind(Json(json!(["lead.created"])))
    .bind(Ts(now))
    .execute(db.pool())
    .await
    .expect("endpoint");
    let first = leads::create_batch(
        db.pool(),
        &[
            row(fields("Held", Some("held@example.com"), None)),
            row(fields("F", None, Some("+4915199999999"))),
        ],
    )
    .await
    .expect("first batch");
    let [Ok(held), Ok(f)] = &first[..] else {
        panic!("the first batch creates both: {first:?}");
    };
    let batch = [
        row(fields("A", Some("new@example.com"), None)),
        row(fields("B", Some("new@example.com"), None)),
        row(fields(
            "C",
            Some("held@example.com"),
            Some("+4915112345678"),
        )),
        row(fields("D", None, Some("+4915112345678"))),
        row(fields("E", Some("other@example.com"), None)),
        // H is refused for F's phone; G then takes H's email: H is told of F.
        row(fields("H", Some("h@example.com"), Some("+4915199999999"))),
        row(fields("G", Some("h@example.com"), None)),
    ];
    let results = leads::create_batch(db.pool(), &batch).await.expect("batch");
    assert_eq!(results.len(), 7);
    let a = results[0].as_ref().expect("A is created");
    let existing = |r: &crate::Result<Lead>| match r {
        Err(crate::Error::Conflict {
            field, existing_id, ..
        }) => (*field, *existing_id),
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert_eq!(existing(&results[1]), (Some("email"), Some(a.id.0)));
    assert_eq!(existing(&results[2]), (Some("email"), Some(held.id.0)));
    let d = results[3].as_ref().expect("D takes the phone C could not");
    let e = results[4].as_ref().expect("E is created");
    assert_eq!(existing(&results[5]), (Some("phone"), Some(f.id.0)));
    let g = results[6].as_ref().expect("G takes the email H could not");
    let mut created: Vec<Uuid> = vec![held.id.0, f.id.0, a.id.0, d.id.0, e.id.0, g.id.0];
    created.sort();
    let mut with_events: Vec<(Uuid,)> = query_as::<(Uuid,)>(
        "SELECT e.lead_id FROM crm_events e JOIN crm_jobs j ON j.event_id = e.id \
         WHERE e.workspace_id = $1 AND e.event_type = 'lead.created' AND j.target_id = $2",
    )
    .bind(ws)
    .bind(endpoint)
    .fetch_all(db.pool())
    .await
    .expect("events");
    with_events.sort();
    assert_eq!(
        with_events.into_iter().map(|(id,)| id).collect::<Vec<_>>(),
        created
    );
}
