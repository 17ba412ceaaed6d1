//! The lead service's conformance suite: every test runs on SQLite and on Postgres.

use crate::common::TestDb;
use chrono::Duration;
use crm::events::EventType;
use crm::leads::Lead;
use crm::leads::{
    ActivityKind, Archived, Bucket, LeadPatch, LeadQuery, LeadStatus, NewActivity, NewLead,
    SortField, SortOrder, StatsQuery,
};
use crm::{Crm, Error, LeadId, WorkspaceId};

conformance!(
    concurrent_creates_each_get_their_own_result,
    create_normalises_and_get_returns_the_timeline,
    bad_input_reports_every_field_and_writes_nothing,
    duplicates_conflict_and_name_the_existing_lead,
    capture_creates_then_merges,
    update_is_partial_and_status_changes_are_recorded,
    delete_removes_the_lead_and_its_activities,
    activities_are_checked_and_listed,
    listing_filters_sorts_and_pages_by_keyset,
    cursors_are_tamper_evident,
    search_matches_words_by_prefix,
    workspaces_are_isolated,
    events_exist_exactly_when_their_change_does,
    concurrent_writes_neither_fail_nor_duplicate,
    cancelled_writes_leave_the_store_usable,
    a_tenant_cannot_spend_the_operators_ai_budget,
    stats_count_bucket_and_time_the_contact,
    stats_count_only_their_workspace,
    archived_leads_leave_the_lists_and_come_back,
    a_lead_with_a_timeline_is_deleted_only_when_confirmed,
    duplicates_are_found_and_merged_all_or_nothing,
    merges_keep_the_rules_and_cross_merges_do_not_deadlock,
);

// The tenant tests again, behind row-level security.
with_rls!(workspaces_are_isolated, stats_count_only_their_workspace,);

fn lead(name: &str, email: &str) -> NewLead {
    NewLead {
        name: name.into(),
        email: Some(email.into()),
        ..Default::default()
    }
}

fn fields(err: &Error) -> Vec<&str> {
    err.field_errors()
        .iter()
        .map(|f| f.field.as_str())
        .collect()
}

async fn event_types(crm: &Crm, ws: WorkspaceId) -> Vec<EventType> {
    let events = crm.workspace(ws).events(None, 1000).await.expect("events");
    events.iter().map(|e| e.event_type).collect()
}

async fn create_normalises_and_get_returns_the_timeline(db: &TestDb) {
    let crm = db.crm().await;
    let created = crm
        .leads()
        .create(NewLead {
            name: "  Ana López ".into(),
            email: Some(" Ana.Lopez@Example.COM ".into()),
            phone: Some("0034 (600) 12-34-56".into()),
            company: Some("Panadería López".into()),
            budget: Some("5k_15k".into()),
            project_type: Some("website".into()),
            message: Some("A new site, please".into()),
            source: Some("website".into()),
            tags: vec!["vip".into(), "es".into(), "vip".into()],
            custom: Some(
                serde_json::json!({"utm": "spring"})
                    .as_object()
                    .cloned()
                    .expect("object"),
            ),
            ..Default::default()
        })
        .await
        .expect("create");
    assert_eq!(created.name, "Ana López");
    assert_eq!(
        created.email.as_ref().map(|e| e.as_str()),
        Some("Ana.Lopez@example.com")
    );
    assert_eq!(
        created.phone.as_ref().map(|p| p.as_str()),
        Some("+34600123456")
    );
    assert_eq!(created.status, LeadStatus::New);
    assert_eq!(created.tags, ["vip", "es"]);
    assert_eq!(created.created_at, db.clock_now());
    assert_eq!(created.workspace_id, WorkspaceId::DEFAULT);

    let detail = crm.leads().get(created.id).await.expect("get");
    assert_eq!(
        detail.lead, created,
        "what is read back equals what was written"
    );
    assert!(detail.activities.is_empty());

    let events = crm
        .workspace(WorkspaceId::DEFAULT)
        .events(None, 10)
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, EventType::LeadCreated);
    assert_eq!(events[0].lead_id, Some(created.id));
    assert_eq!(events[0].payload["type"], "lead.created");
    assert_eq!(
        events[0].payload["data"]["lead"]["email"],
        "Ana.Lopez@example.com"
    );
    assert_eq!(
        events[0].payload["timestamp"],
        "2026-01-01T09:00:00.000000Z"
    );

    let missing = crm.leads().get(LeadId::new()).await.expect_err("must fail");
    assert!(
        matches!(missing, Error::NotFound { entity: "lead" }),
        "{missing:?}"
    );
}

async fn bad_input_reports_every_field_and_writes_nothing(db: &TestDb) {
    let crm = db.crm().await;
    let err = crm
        .leads()
        .create(NewLead {
            name: "".into(),
            email: Some("ana@".into()),
            phone: Some("12 34".into()),
            status: Some("open".into()),
            budget: Some("lots".into()),
            project_type: Some("rocket".into()),
            source: Some("carrier pigeon".into()),
            message: Some("x".repeat(5_001)),
            notes: Some("\0".into()),
            tags: (0..21).map(|i| format!("t{i}")).collect(),
            ..Default::default()
        })
        .await
        .expect_err("must fail");
    assert_eq!(
        fields(&err),
        [
            "name",
            "email",
            "phone",
            "budget",
            "project_type",
            "message",
            "source",
            "status",
            "notes",
            "tags"
        ]
    );
    let err = crm
        .leads()
        .create(NewLead {
            name: "No contact".into(),
            ..Default::default()
        })
        .await
        .expect_err("must fail");
    assert_eq!(fields(&err), ["email"]);
    let err = crm
        .leads()
        .capture(NewLead {
            name: "Bad".into(),
            email: Some("nope".into()),
            ..Default::default()
        })
        .await
        .expect_err("must fail");
    assert_eq!(fields(&err), ["email"]);

    assert_eq!(db.count("crm_leads").await, 0);
    assert_eq!(db.count("crm_events").await, 0);
    assert_eq!(db.count("crm_activities").await, 0);
}

async fn duplicates_conflict_and_name_the_existing_lead(db: &TestDb) {
    let crm = db.crm().await;
    let first = crm
        .leads()
        .create(NewLead {
            phone: Some("+1 415 555 0100".into()),
            ..lead("Ana", "ana@example.com")
        })
        .await
        .expect("create");

    let err = crm
        .leads()
        .create(lead("Other Ana", "ANA@EXAMPLE.com"))
        .await
        .expect_err("must fail");
    match err {
        Error::Conflict {
            field, existing_id, ..
        } => {
            assert_eq!(field, Some("email"));
            assert_eq!(existing_id, Some(first.id.0));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let err = crm
        .leads()
        .create(NewLead {
            name: "Phone twin".into(),
            phone: Some("+14155550100".into()),
            ..Default::default()
        })
        .await
        .expect_err("must fail");
    assert!(
        matches!(err, Error::Conflict { field: Some("phone"), existing_id: Some(id), .. } if id == first.id.0)
    );
    assert_eq!(db.count("crm_leads").await, 1);
    assert_eq!(db.count("crm_events").await, 1);
}

async fn capture_creates_then_merges(db: &TestDb) {
    let crm = db.crm().await;
    let leads = crm.leads().with_actor("contact-form");
    let first = leads
        .capture(NewLead {
            message: Some("Hello".into()),
            tags: vec!["web".into()],
            ..lead("Ana", "ana@example.com")
        })
        .await
        .expect("capture");
    assert!(first.created);

    db.clock.advance(Duration::minutes(5));
    let second = leads
        .capture(NewLead {
            name: "Ana L.".into(),
            email: Some("Ana@Example.com".into()),
            phone: Some("+34600000001".into()),
            company: Some("Acme".into()),
            message: Some("Second message".into()),
            tags: vec!["web".into(), "repeat".into()],
            status: Some("won".into()),
            ..Default::default()
        })
        .await
        .expect("capture again");
    assert!(!second.created);
    // Issue 15, item 18: an anonymous form names a known lead's email and brings an
    // attacker's phone and company: the lead keeps what it had, blanks included.
    let kept = second.lead;
    assert_eq!(kept, first.lead, "a known lead is not changed by a form");
    assert_eq!(kept.phone, None);
    assert_eq!(kept.company, None);
    assert_eq!(kept.tags, ["web"]);

    // The phone was not attached: a capture by it alone is a new lead.
    let third = leads
        .capture(NewLead {
            name: "Ana".into(),
            phone: Some("+34 600 000 001".into()),
            ..Default::default()
        })
        .await
        .expect("capture by phone");
    assert!(third.created);
    assert_ne!(third.lead.id, first.lead.id);

    let detail = leads.get(first.lead.id).await.expect("get");
    let kinds: Vec<_> = detail.activities.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [ActivityKind::FormSubmission; 2]);
    // What was submitted is on the timeline, for a person to review.
    let recorded = detail.activities[1].description.as_deref().unwrap_or("");
    assert!(
        recorded.starts_with("Second message\n\nSubmitted: {"),
        "{recorded}"
    );
    for value in ["+34600000001", "Acme", "Ana L.", "repeat"] {
        assert!(recorded.contains(value), "{value} in {recorded}");
    }
    assert_eq!(detail.activities[0].actor.as_deref(), Some("contact-form"));
    assert_eq!(db.count("crm_leads").await, 2);
    assert_eq!(
        event_types(&crm, WorkspaceId::DEFAULT).await,
        [
            EventType::LeadCreated,
            EventType::LeadActivityAdded,
            EventType::LeadActivityAdded,
            EventType::LeadCreated,
            EventType::LeadActivityAdded,
        ]
    );

    // Inbound messages verified by their provider still fill blanks.
    let inbound = leads
        .capture_inbound(
            "test",
            "m-1",
            NewLead {
                company: Some("Acme".into()),
                ..lead("Ana", "ana@example.com")
            },
            ActivityKind::Message,
            None,
        )
        .await
        .expect("inbound")
        .expect("first delivery");
    assert!(!inbound.created);
    assert_eq!(inbound.lead.company.as_deref(), Some("Acme"));
    assert_eq!(inbound.lead.name, "Ana");
}

async fn update_is_partial_and_status_changes_are_recorded(db: &TestDb) {
    let crm = db.crm().await;
    let leads = crm.leads().with_actor("user:7");
    let a = leads
        .create(NewLead {
            company: Some("Acme".into()),
            phone: Some("+4930123456".into()),
            ..lead("Ana", "ana@example.com")
        })
        .await
        .expect("create");
    let b = leads
        .create(lead("Bo", "bo@example.com"))
        .await
        .expect("create");
    db.clock.advance(Duration::hours(1));

    let updated = leads
        .update(
            a.id,
            LeadPatch {
                status: Some("contacted".into()),
                company: Some(None),
                notes: Some(Some("called back".into())),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.status, LeadStatus::Contacted);
    assert_eq!(updated.company, None);
    assert_eq!(updated.notes.as_deref(), Some("called back"));
    assert_eq!(updated.name, "Ana", "fields not in the patch stay");
    assert_eq!(updated.updated_at, db.clock_now());
    assert_eq!(updated.created_at, a.created_at);

    let detail = leads.get(a.id).await.expect("get");
    assert_eq!(detail.activities.len(), 1);
    let change = &detail.activities[0];
    assert_eq!(change.kind, ActivityKind::StatusChange);
    assert_eq!(
        (change.old_status, change.new_status),
        (Some(LeadStatus::New), Some(LeadStatus::Contacted))
    );
    assert_eq!(change.actor.as_deref(), Some("user:7"));

    let events = crm
        .workspace(WorkspaceId::DEFAULT)
        .events(None, 100)
        .await
        .expect("events");
    let status_event = events
        .iter()
        .find(|e| e.event_type == EventType::LeadStatusChanged)
        .expect("status event");
    assert_eq!(status_event.payload["data"]["old_status"], "new");
    assert_eq!(status_event.payload["data"]["new_status"], "contacted");
    let updated_event = events
        .iter()
        .find(|e| e.event_type == EventType::LeadUpdated)
        .expect("updated event");
    assert_eq!(
        updated_event.payload["data"]["changed"],
        serde_json::json!(["company", "status", "notes"])
    );

    // A patch that changes nothing writes nothing.
    let before = db.count("crm_events").await;
    let same = leads
        .update(
            a.id,
            LeadPatch {
                name: Some("Ana".into()),
                ..Default::default()
            },
        )
        .await
        .expect("no-op");
    assert_eq!(same.updated_at, updated.updated_at);
    assert_eq!(db.count("crm_events").await, before);

    // Bad patches: every field named, nothing written.
    let err = leads
        .update(
            a.id,
            LeadPatch {
                status: Some("archived".into()),
                name: Some(" ".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("must fail");
    assert_eq!(fields(&err), ["name", "status"]);
    let err = leads
        .update(
            a.id,
            LeadPatch {
                email: Some(None),
                phone: Some(None),
                ..Default::default()
            },
        )
        .await
        .expect_err("must fail");
    assert_eq!(fields(&err), ["email"]);
    let err = leads
        .update(
            b.id,
            LeadPatch {
                email: Some(Some("ANA@example.com".into())),
                ..Default::default()
            },
        )
        .await
        .expect_err("must fail");
    assert!(matches!(err, Error::Conflict { existing_id: Some(id), .. } if id == a.id.0));
    let err = leads
        .update(LeadId::new(), LeadPatch::default())
        .await
        .expect_err("must fail");
    assert!(matches!(err, Error::NotFound { .. }));
    assert_eq!(db.count("crm_events").await, before);
    assert_eq!(leads.get(a.id).await.expect("get").lead, updated);

    // Clearing one contact while the other stays is fine.
    let no_email = leads
        .update(
            a.id,
            LeadPatch {
                email: Some(None),
                ..Default::default()
            },
        )
        .await
        .expect("clear email");
    assert_eq!(no_email.email, None);
}

async fn delete_removes_the_lead_and_its_activities(db: &TestDb) {
    let crm = db.crm().await;
    let a = crm
        .leads()
        .create(lead("Ana", "ana@example.com"))
        .await
        .expect("create");
    let keep = crm
        .leads()
        .create(lead("Bo", "bo@example.com"))
        .await
        .expect("create");
    for kind in ["note", "call"] {
        crm.leads()
            .add_activity(
                a.id,
                NewActivity {
                    kind: kind.into(),
                    description: None,
                },
            )
            .await
            .expect("activity");
    }
    crm.leads()
        .add_activity(
            keep.id,
            NewActivity {
                kind: "note".into(),
                description: None,
            },
        )
        .await
        .expect("activity");
    crm.leads().delete(a.id).await.expect("delete");

    assert!(matches!(
        crm.leads().get(a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        crm.leads().activities(a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        crm.leads().delete(a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        db.count("crm_activities").await,
        1,
        "only the other lead's activity is left"
    );
    let events = crm
        .workspace(WorkspaceId::DEFAULT)
        .events(None, 100)
        .await
        .expect("events");
    let deleted = events.last().expect("an event");
    assert_eq!(deleted.event_type, EventType::LeadDeleted);
    assert_eq!(deleted.payload["data"]["lead"]["name"], "Ana");
    // The email is free again.
    crm.leads()
        .create(lead("Ana again", "ana@example.com"))
        .await
        .expect("create again");
}

async fn activities_are_checked_and_listed(db: &TestDb) {
    let crm = db.crm().await;
    let a = crm
        .leads()
        .create(lead("Ana", "ana@example.com"))
        .await
        .expect("create");
    let added = crm
        .leads()
        .with_actor("user:1")
        .add_activity(
            a.id,
            NewActivity {
                kind: "meeting".into(),
                description: Some("  Kick-off ".into()),
            },
        )
        .await
        .expect("add");
    assert_eq!(added.kind, ActivityKind::Meeting);
    assert_eq!(added.description.as_deref(), Some("Kick-off"));
    db.clock.advance(Duration::seconds(1));
    crm.leads()
        .add_activity(
            a.id,
            NewActivity {
                kind: "booking".into(),
                description: None,
            },
        )
        .await
        .expect("add");

    for (kind, desc) in [
        ("status_change", None),
        ("lunch", None),
        ("note", Some("x".repeat(5_001))),
    ] {
        let err = crm
            .leads()
            .add_activity(
                a.id,
                NewActivity {
                    kind: kind.into(),
                    description: desc.clone(),
                },
            )
            .await
            .expect_err("must fail");
        assert!(!fields(&err).is_empty(), "{kind}: {err:?}");
    }
    let err = crm
        .leads()
        .add_activity(
            LeadId::new(),
            NewActivity {
                kind: "note".into(),
                description: None,
            },
        )
        .await
        .expect_err("must fail");
    assert!(matches!(err, Error::NotFound { entity: "lead" }));
    let err = crm
        .leads()
        .with_actor("a".repeat(201))
        .add_activity(
            a.id,
            NewActivity {
                kind: "note".into(),
                description: None,
            },
        )
        .await
        .expect_err("must fail");
    assert_eq!(fields(&err), ["actor"]);

    let list = crm.leads().activities(a.id).await.expect("list");
    let kinds: Vec<_> = list.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, [ActivityKind::Meeting, ActivityKind::Booking]);
    assert_eq!(list[0], added);
    assert_eq!(db.count("crm_activities").await, 2);
}

/// Creates 30 leads a minute apart: statuses cycle, sources alternate, every third is tagged.
async fn seed(db: &TestDb, crm: &Crm) -> Vec<crm::leads::Lead> {
    let mut out = Vec::new();
    for i in 0..30 {
        db.clock.advance(Duration::minutes(1));
        let status = LeadStatus::ALL[i % LeadStatus::ALL.len()];
        let created = crm
            .leads()
            .create(NewLead {
                name: format!("lead {:02}", (i * 7) % 30),
                email: Some(format!("l{i}@example.com")),
                status: Some(status.as_str().into()),
                source: Some(if i % 2 == 0 { "website" } else { "referral" }.into()),
                tags: if i % 3 == 0 {
                    vec!["hot".into(), "q1".into()]
                } else {
                    vec!["q1".into()]
                },
                ..Default::default()
            })
            .await
            .expect("seed");
        out.push(created);
    }
    out
}

/// Walks every page of `q` and returns the ids in order.
async fn walk(crm: &Crm, q: &LeadQuery) -> Vec<LeadId> {
    let mut ids = Vec::new();
    let mut q = q.clone();
    loop {
        let page = crm.leads().list(&q).await.expect("list");
        assert!(page.items.len() <= q.limit.unwrap_or(20) as usize);
        ids.extend(page.items.iter().map(|l| l.id));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return ids,
        }
    }
}

async fn listing_filters_sorts_and_pages_by_keyset(db: &TestDb) {
    let crm = db.crm().await;
    let all = seed(db, &crm).await;

    // Default: newest first, 20 a page.
    let first = crm.leads().list(&LeadQuery::default()).await.expect("list");
    assert_eq!(first.items.len(), 20);
    assert_eq!(first.items[0].id, all[29].id);
    assert_eq!(first.total, None);

    for sort in [
        SortField::CreatedAt,
        SortField::UpdatedAt,
        SortField::Name,
        SortField::Status,
    ] {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            let q = LeadQuery {
                sort,
                order,
                limit: Some(7),
                ..Default::default()
            };
            let got = walk(&crm, &q).await;
            let mut want = all.clone();
            want.sort_by(|a, b| {
                let key = match sort {
                    SortField::CreatedAt => a.created_at.cmp(&b.created_at),
                    SortField::UpdatedAt => a.updated_at.cmp(&b.updated_at),
                    SortField::Name => a.name.cmp(&b.name),
                    SortField::Status => a.status.as_str().cmp(b.status.as_str()),
                };
                key.then(a.id.cmp(&b.id))
            });
            if order == SortOrder::Desc {
                want.reverse();
            }
            let want: Vec<LeadId> = want.iter().map(|l| l.id).collect();
            assert_eq!(got, want, "{sort:?} {order:?}");
        }
    }

    // Filters narrow together; the total counts every page.
    let q = LeadQuery {
        status: vec!["new".into(), "won".into()],
        source: Some("website".into()),
        tags: vec!["hot".into()],
        limit: Some(2),
        include_total: true,
        ..Default::default()
    };
    let want: Vec<LeadId> = all
        .iter()
        .rev()
        .filter(|l| matches!(l.status, LeadStatus::New | LeadStatus::Won))
        .filter(|l| l.source.as_deref() == Some("website") && l.tags.contains(&"hot".to_string()))
        .map(|l| l.id)
        .collect();
    assert!(!want.is_empty());
    assert_eq!(walk(&crm, &q).await, want);
    assert_eq!(
        crm.leads().list(&q).await.expect("list").total,
        Some(want.len() as u64)
    );

    let q = LeadQuery {
        created_after: Some(all[10].created_at),
        created_before: Some(all[15].created_at),
        sort: SortField::CreatedAt,
        order: SortOrder::Asc,
        ..Default::default()
    };
    let want: Vec<LeadId> = all[10..15].iter().map(|l| l.id).collect();
    assert_eq!(walk(&crm, &q).await, want);

    // A page written between two calls neither repeats nor hides a lead.
    let q = LeadQuery {
        limit: Some(10),
        order: SortOrder::Asc,
        ..Default::default()
    };
    let page = crm.leads().list(&q).await.expect("list");
    db.clock.advance(Duration::minutes(1));
    crm.leads()
        .create(lead("late", "late@example.com"))
        .await
        .expect("create");
    let rest = walk(
        &crm,
        &LeadQuery {
            cursor: page.next_cursor.clone(),
            ..q.clone()
        },
    )
    .await;
    assert_eq!(rest.len(), 21);

    // Bad listing input.
    for bad in [
        LeadQuery {
            limit: Some(0),
            ..Default::default()
        },
        LeadQuery {
            limit: Some(101),
            ..Default::default()
        },
        LeadQuery {
            status: vec!["archived".into()],
            ..Default::default()
        },
        LeadQuery {
            tags: vec!["".into()],
            ..Default::default()
        },
        LeadQuery {
            q: Some("!!!".into()),
            ..Default::default()
        },
        LeadQuery {
            created_after: Some(all[5].created_at),
            created_before: Some(all[1].created_at),
            ..Default::default()
        },
    ] {
        let err = crm.leads().list(&bad).await.expect_err("must fail");
        assert!(matches!(err, Error::Validation { .. }), "{bad:?}: {err:?}");
    }
}

async fn cursors_are_tamper_evident(db: &TestDb) {
    let crm = db.crm().await;
    seed(db, &crm).await;
    let q = LeadQuery {
        limit: Some(5),
        ..Default::default()
    };
    let cursor = crm
        .leads()
        .list(&q)
        .await
        .expect("list")
        .next_cursor
        .expect("more pages");

    let mut flipped = cursor.clone().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let cases = [
        LeadQuery {
            cursor: Some(flipped),
            ..q.clone()
        },
        LeadQuery {
            cursor: Some("not a cursor".into()),
            ..q.clone()
        },
        LeadQuery {
            cursor: Some(cursor.clone()),
            sort: SortField::Name,
            ..q.clone()
        },
        LeadQuery {
            cursor: Some(cursor.clone()),
            order: SortOrder::Asc,
            ..q.clone()
        },
        LeadQuery {
            cursor: Some(cursor.clone()),
            source: Some("website".into()),
            ..q.clone()
        },
    ];
    for bad in cases {
        let err = crm.leads().list(&bad).await.expect_err("must fail");
        assert_eq!(fields(&err), ["cursor"], "{bad:?}");
    }
    crm.leads()
        .list(&LeadQuery {
            cursor: Some(cursor),
            ..q
        })
        .await
        .expect("the untouched cursor works");
}

async fn search_matches_words_by_prefix(db: &TestDb) {
    let crm = db.crm().await;
    let ana = crm
        .leads()
        .create(NewLead {
            company: Some("Blue Harbor Bakery".into()),
            message: Some("Need a shop for sourdough".into()),
            ..lead("Ana López", "ana.lopez@harbor-mail.com")
        })
        .await
        .expect("create");
    let bo = crm
        .leads()
        .create(NewLead {
            notes: Some("Prefers calls; budget approved".into()),
            ..lead("Bo Chen", "bo@example.com")
        })
        .await
        .expect("create");
    crm.leads()
        .create(lead("Cy Diaz", "cy@example.org"))
        .await
        .expect("create");

    let search = |q: &str| {
        let crm = crm.clone();
        let q = q.to_owned();
        async move {
            let page = crm
                .leads()
                .list(&LeadQuery {
                    q: Some(q),
                    include_total: true,
                    ..Default::default()
                })
                .await
                .expect("search");
            let mut ids: Vec<LeadId> = page.items.iter().map(|l| l.id).collect();
            ids.sort();
            assert_eq!(page.total, Some(ids.len() as u64));
            ids
        }
    };
    assert_eq!(search("bakery").await, [ana.id]);
    assert_eq!(search("BAK").await, [ana.id], "prefix, case-insensitive");
    assert_eq!(search("sourdough").await, [ana.id], "message");
    assert_eq!(search("harbor-mail").await, [ana.id], "email words");
    assert_eq!(
        search("ana.lopez@harbor-mail.com").await,
        [ana.id],
        "a whole email"
    );
    assert_eq!(search("approved").await, [bo.id], "notes");
    assert_eq!(
        search("ana bo").await,
        Vec::<LeadId>::new(),
        "every word must match"
    );
    let mut both = vec![ana.id, bo.id];
    both.sort();
    assert_eq!(
        search("a").await.len(),
        2,
        "prefix 'a' matches Ana and approved"
    );
    assert_eq!(search("a").await, both);
    assert!(search("zebra").await.is_empty());
    assert!(
        search("\" OR * ( NEAR").await.is_empty(),
        "query syntax is not interpreted"
    );

    // The index follows updates and deletes.
    crm.leads()
        .update(
            bo.id,
            LeadPatch {
                notes: Some(Some("zebra crossing".into())),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(search("zebra").await, [bo.id]);
    assert!(search("approved").await.is_empty());
    crm.leads().delete(bo.id).await.expect("delete");
    assert!(search("zebra").await.is_empty());

    // Search combines with filters and pages.
    let page = crm
        .leads()
        .list(&LeadQuery {
            q: Some("example".into()),
            status: vec!["won".into()],
            ..Default::default()
        })
        .await
        .expect("search");
    assert!(page.items.is_empty());
}

async fn workspaces_are_isolated(db: &TestDb) {
    let crm = db.crm().await;
    let a = crm.create_workspace("A").await.expect("workspace");
    let b = crm.create_workspace("B").await.expect("workspace");
    let in_a = crm
        .workspace(a)
        .leads()
        .create(lead("Ana", "ana@example.com"))
        .await
        .expect("create");
    let leads_b = crm.workspace(b).leads();

    assert!(matches!(
        leads_b.get(in_a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        leads_b
            .update(
                in_a.id,
                LeadPatch {
                    name: Some("Stolen".into()),
                    ..Default::default()
                }
            )
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        leads_b.delete(in_a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        leads_b
            .add_activity(
                in_a.id,
                NewActivity {
                    kind: "note".into(),
                    description: None
                }
            )
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        leads_b.activities(in_a.id).await,
        Err(Error::NotFound { .. })
    ));
    let listed = leads_b
        .list(&LeadQuery {
            include_total: true,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(listed.items.is_empty());
    assert_eq!(listed.total, Some(0));
    let searched = leads_b
        .list(&LeadQuery {
            q: Some("ana".into()),
            ..Default::default()
        })
        .await
        .expect("search");
    assert!(searched.items.is_empty());
    assert!(
        crm.leads()
            .list(&LeadQuery::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "nor the default workspace"
    );

    // The same email is a different lead in another workspace; capture there creates.
    let captured = leads_b
        .capture(lead("Ana B", "ana@example.com"))
        .await
        .expect("capture");
    assert!(captured.created);
    assert_ne!(captured.lead.id, in_a.id);
    assert!(crm
        .workspace(b)
        .events(None, 10)
        .await
        .expect("events")
        .iter()
        .all(|e| e.workspace_id == b));

    // A's lead is untouched.
    let detail = crm.workspace(a).leads().get(in_a.id).await.expect("get");
    assert_eq!(detail.lead, in_a);
    assert!(detail.activities.is_empty());

    // Writes into a workspace that does not exist fail and write nothing.
    let ghost = crm.workspace(WorkspaceId::new()).leads();
    assert!(matches!(
        ghost.create(lead("X", "x@example.com")).await,
        Err(Error::NotFound {
            entity: "workspace"
        })
    ));
    assert!(matches!(
        crm.create_workspace(" ").await,
        Err(Error::Validation { .. })
    ));
}

async fn events_exist_exactly_when_their_change_does(db: &TestDb) {
    let crm = db.crm().await;
    // Make the outbox refuse `lead.updated` rows: the update must then leave no trace.
    match db.backend {
        crate::common::Backend::Sqlite => {
            db.execute(
                "CREATE TRIGGER refuse_updates BEFORE INSERT ON crm_events WHEN NEW.event_type = 'lead.updated' \
                 BEGIN SELECT RAISE(ABORT, 'outbox refused'); END;",
            )
            .await
        }
        #[cfg(feature = "postgres")]
        crate::common::Backend::Postgres => {
            db.execute(
                "CREATE FUNCTION refuse_updates() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.event_type = 'lead.updated' THEN RAISE EXCEPTION 'outbox refused'; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER refuse_updates BEFORE INSERT ON crm_events FOR EACH ROW EXECUTE FUNCTION refuse_updates();",
            )
            .await
        }
    }
    let a = crm
        .leads()
        .create(lead("Ana", "ana@example.com"))
        .await
        .expect("create");
    assert_eq!(db.count("crm_events").await, 1);

    let err = crm
        .leads()
        .update(
            a.id,
            LeadPatch {
                status: Some("won".into()),
                name: Some("Changed".into()),
                ..Default::default()
            },
        )
        .await
        .expect_err("must fail");
    assert!(matches!(err, Error::Database(_)), "{err:?}");
    assert!(
        !err.to_string().contains("outbox refused"),
        "no database text in Display"
    );
    let after = crm.leads().get(a.id).await.expect("get");
    assert_eq!(after.lead, a, "the lead change rolled back with its event");
    assert!(
        after.activities.is_empty(),
        "and so did the status_change activity"
    );
    assert_eq!(
        db.count("crm_events").await,
        1,
        "no lead.status_changed either"
    );

    // An inbound capture that would fill a blank also needs lead.updated: nothing of
    // it stays.
    let err = crm
        .leads()
        .capture_inbound(
            "test",
            "m-1",
            NewLead {
                company: Some("Acme".into()),
                ..lead("Ana", "ana@example.com")
            },
            ActivityKind::Message,
            None,
        )
        .await
        .expect_err("must fail");
    assert!(matches!(err, Error::Database(_)));
    assert_eq!(db.count("crm_activities").await, 0);
    assert_eq!(crm.leads().get(a.id).await.expect("get").lead.company, None);

    // Writes whose events are allowed go through, one event each.
    crm.leads()
        .add_activity(
            a.id,
            NewActivity {
                kind: "note".into(),
                description: None,
            },
        )
        .await
        .expect("note");
    crm.leads().delete(a.id).await.expect("delete");
    assert_eq!(
        event_types(&crm, WorkspaceId::DEFAULT).await,
        [
            EventType::LeadCreated,
            EventType::LeadActivityAdded,
            EventType::LeadDeleted
        ]
    );
}

async fn concurrent_writes_neither_fail_nor_duplicate(db: &TestDb) {
    let crm = db
        .builder()
        .max_connections(8)
        .connect()
        .await
        .expect("connect");
    // Distinct leads from many tasks at once (the futures are Send: they run on the pool's runtime).
    let mut tasks = Vec::new();
    for i in 0..24 {
        let crm = crm.clone();
        tasks.push(tokio::spawn(async move {
            crm.leads()
                .create(lead("L", &format!("c{i}@example.com")))
                .await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("create");
    }
    // The same person submitting the form from many tabs at once: one lead.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let crm = crm.clone();
        tasks.push(tokio::spawn(async move {
            crm.leads()
                .capture(NewLead {
                    message: Some(format!("try {i}")),
                    ..lead("Same", "same@example.com")
                })
                .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.expect("join").expect("capture").created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(db.count("crm_leads").await, 25);
    let page = crm
        .leads()
        .list(&LeadQuery {
            q: Some("same".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        crm.leads()
            .activities(page.items[0].id)
            .await
            .expect("activities")
            .len(),
        12
    );
}

/// A write whose future is dropped part-way (a client that hangs up, an aborted task)
/// must not leave a transaction or a lock behind for the next write.
async fn cancelled_writes_leave_the_store_usable(db: &TestDb) {
    let crm = db
        .builder()
        .max_connections(3)
        .connect()
        .await
        .expect("connect");
    for i in 0..120u64 {
        let c = crm.clone();
        let task = tokio::spawn(async move {
            c.leads()
                .create(lead("Gone", &format!("gone{i}@example.com")))
                .await
        });
        tokio::time::sleep(std::time::Duration::from_micros((i * 37) % 900)).await;
        task.abort();
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            crm.leads()
                .create(lead("Next", &format!("next{i}@example.com"))),
        )
        .await
        .expect("the next write does not wait for a leaked lock");
        next.unwrap_or_else(|e| panic!("write {i} after a cancelled one failed: {e:?}"));
    }
    // Every lead that exists has its event: no half-written transaction survived.
    assert_eq!(db.count("crm_leads").await, db.count("crm_events").await);
}

/// A parser that stands for a paid AI API: it counts its calls.
#[derive(Clone, Default)]
struct PaidParser(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl crm::leads::parser::LeadParser for PaidParser {
    fn parse<'a>(
        &'a self,
        text: &'a str,
        allowed: &'a crm::leads::AllowedValues,
    ) -> crm::leads::parser::ParseFuture<'a> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        crm::leads::parser::BuiltinParser.parse(text, allowed)
    }
}

/// Issue 15, item 16: AI parsing had no budget of its own, so one tenant with a
/// `leads:read` key could run up the operator's bill. Metered parses now spend a
/// per-workspace `lead_parse` budget; the parser is not called once it is spent, and
/// another workspace's budget is untouched.
async fn a_tenant_cannot_spend_the_operators_ai_budget(db: &TestDb) {
    let paid = PaidParser::default();
    let crm = db
        .builder()
        .lead_parser(paid.clone())
        .rate_limit_policy(
            "lead_parse",
            crm::ratelimit::Policy {
                limit: 3,
                period: std::time::Duration::from_secs(3600),
            },
        )
        .connect()
        .await
        .expect("connect");
    let a = crm.workspace(WorkspaceId::DEFAULT).leads();
    for _ in 0..3 {
        a.parse("name: Ana, ana@example.com", false)
            .await
            .expect("within the budget");
    }
    let err = a
        .parse("name: Ana, ana@example.com", false)
        .await
        .expect_err("over the budget");
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert_eq!(paid.0.load(std::sync::atomic::Ordering::SeqCst), 3);
    let other = crm.create_workspace("Other").await.expect("workspace");
    crm.workspace(other)
        .leads()
        .parse("name: Bo, bo@example.com", false)
        .await
        .expect("another workspace's budget");
    // The offline parser is not metered.
    let free = db.crm().await;
    for _ in 0..150 {
        free.workspace(WorkspaceId::DEFAULT)
            .leads()
            .parse("name: Ana, ana@example.com", false)
            .await
            .expect("builtin");
    }
}

/// Many creates at once (on SQLite they share transactions: group commit): every
/// create gets its own answer, a taken email fails only its own create and names
/// the lead that has it, and each created lead has its `lead.created` event.
async fn concurrent_creates_each_get_their_own_result(db: &TestDb) {
    let crm = db.crm().await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let crm = crm.clone();
        // Every fifth create reuses the email of the create before it.
        let n = if i % 5 == 4 { i - 1 } else { i };
        tasks.push(tokio::spawn(async move {
            crm.leads()
                .create(NewLead {
                    name: format!("Lead {i}"),
                    email: Some(format!("lead{n}@example.com")),
                    ..Default::default()
                })
                .await
        }));
    }
    let mut created = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(lead) => created.push(lead),
            Err(Error::Conflict {
                field: Some("email"),
                existing_id: Some(_),
                ..
            }) => conflicts += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((created.len(), conflicts), (48, 12));
    assert_eq!(db.count("crm_leads").await, 48);
    assert_eq!(
        db.count("crm_events WHERE event_type = 'lead.created'")
            .await,
        48
    );
    for lead in &created {
        crm.leads()
            .get(lead.id)
            .await
            .expect("each created lead is there");
    }
}

fn status_to(status: &str) -> LeadPatch {
    LeadPatch {
        status: Some(status.into()),
        ..Default::default()
    }
}

async fn stats_count_bucket_and_time_the_contact(db: &TestDb) {
    let crm = db.crm().await;
    let leads = crm.leads();
    let t0 = crm.now();

    // Nothing yet: zeros everywhere, and a full series of empty days.
    let empty = leads.stats(&StatsQuery::default()).await.expect("stats");
    assert_eq!(empty.total, 0);
    assert_eq!(empty.by_status.len(), LeadStatus::ALL.len());
    assert!(empty
        .by_status
        .iter()
        .chain(&empty.funnel)
        .all(|c| c.count == 0));
    assert!(empty.by_source.is_empty() && empty.median_seconds_to_contacted.is_none());
    assert_eq!(
        (empty.series.start, empty.series.end),
        (t0 - Duration::days(30), t0)
    );
    assert!(matches!(empty.series.points.len(), 30 | 31));
    assert!(empty.series.points.iter().all(|p| p.count == 0));

    let web = |name: &str, email: &str| NewLead {
        source: Some("website".into()),
        ..lead(name, email)
    };
    let a = leads
        .create(web("Ana", "ana@example.com"))
        .await
        .expect("create");
    db.clock.advance(Duration::hours(1));
    let b = leads
        .create(web("Bo", "bo@example.com"))
        .await
        .expect("create");
    db.clock.advance(Duration::days(2));
    let c = leads
        .create(lead("Cy", "cy@example.com"))
        .await
        .expect("create");
    db.clock.advance(Duration::hours(3));
    leads
        .update(a.id, status_to("contacted"))
        .await
        .expect("update");
    db.clock.advance(Duration::hours(2));
    leads
        .update(b.id, status_to("contacted"))
        .await
        .expect("update");
    leads.update(b.id, status_to("won")).await.expect("update");
    leads
        .update(c.id, status_to("qualified"))
        .await
        .expect("update");

    let q = StatsQuery {
        start: Some(t0 - Duration::days(1)),
        end: Some(t0 + Duration::days(4)),
        bucket: Bucket::Day,
    };
    let s = leads.stats(&q).await.expect("stats");
    let count = |list: &[crm::leads::stats::StatusCount], status: LeadStatus| {
        list.iter().find(|c| c.status == status).map(|c| c.count)
    };
    assert_eq!(s.total, 3);
    assert_eq!(count(&s.by_status, LeadStatus::Contacted), Some(1));
    assert_eq!(count(&s.by_status, LeadStatus::Won), Some(1));
    assert_eq!(count(&s.by_status, LeadStatus::Qualified), Some(1));
    assert_eq!(count(&s.by_status, LeadStatus::New), Some(0));
    let sources: Vec<_> = s
        .by_source
        .iter()
        .map(|c| (c.source.as_deref(), c.count))
        .collect();
    assert_eq!(sources, [(Some("website"), 2), (None, 1)]);
    // Everyone was new; Ana and Bo were contacted; Bo won; Cy was qualified without contact.
    let funnel: Vec<_> = s
        .funnel
        .iter()
        .map(|c| (c.status.as_str(), c.count))
        .collect();
    assert_eq!(
        funnel,
        [
            ("new", 3),
            ("contacted", 2),
            ("qualified", 1),
            ("proposal", 0),
            ("won", 1),
            ("lost", 0)
        ]
    );
    // Ana (created at t0) was contacted at t0 + 2d 4h; Bo (t0 + 1h) at t0 + 2d 6h.
    let expected = ((Duration::days(2) + Duration::hours(4)).num_seconds()
        + (Duration::days(2) + Duration::hours(5)).num_seconds()) as f64
        / 2.0;
    assert_eq!(s.median_seconds_to_contacted, Some(expected));
    // The series: each lead in the day it was created, the other days zero.
    assert_eq!(
        s.series.points.len(),
        5 + usize::from(
            q.start
                .map(|f| f.time() != chrono::NaiveTime::MIN)
                .unwrap_or(false)
        )
    );
    for p in &s.series.points {
        let want = [&a, &b, &c]
            .iter()
            .filter(|l| l.created_at.date_naive() == p.start.date_naive())
            .count() as u64;
        assert_eq!(p.count, want, "{}", p.start);
    }
    assert_eq!(s.series.points.iter().map(|p| p.count).sum::<u64>(), 3);

    // A week's and a month's buckets hold the same leads.
    for bucket in [Bucket::Week, Bucket::Month] {
        let s = leads
            .stats(&StatsQuery {
                bucket,
                ..q.clone()
            })
            .await
            .expect("stats");
        assert_eq!(s.series.points.iter().map(|p| p.count).sum::<u64>(), 3);
    }
    // Bad ranges are refused on `start`.
    for bad in [
        StatsQuery {
            start: q.end,
            ..q.clone()
        },
        StatsQuery {
            start: Some(t0 - Duration::days(3 * 365)),
            ..q.clone()
        },
    ] {
        let err = leads.stats(&bad).await.expect_err("a bad range");
        assert_eq!(fields(&err), ["start"], "{bad:?}");
    }
}

async fn stats_count_only_their_workspace(db: &TestDb) {
    let crm = db.crm().await;
    let a = crm.create_workspace("A").await.expect("workspace");
    let b = crm.create_workspace("B").await.expect("workspace");
    let in_a = crm.workspace(a).leads();
    let ana = in_a
        .create(lead("Ana", "ana@example.com"))
        .await
        .expect("create");
    in_a.update(ana.id, status_to("contacted"))
        .await
        .expect("update");
    let s = crm
        .workspace(b)
        .leads()
        .stats(&StatsQuery::default())
        .await
        .expect("stats");
    assert_eq!(s.total, 0);
    assert!(s.funnel.iter().all(|c| c.count == 0) && s.median_seconds_to_contacted.is_none());
    assert!(s.series.points.iter().all(|p| p.count == 0));
    assert_eq!(
        crm.workspace(a)
            .leads()
            .stats(&StatsQuery::default())
            .await
            .expect("stats")
            .total,
        1
    );
}

async fn archived_leads_leave_the_lists_and_come_back(db: &TestDb) {
    let crm = db.crm().await;
    let leads = crm.leads();
    let kept = leads
        .create(lead("Kept Alvarez", "kept@example.com"))
        .await
        .expect("lead");
    let gone = leads
        .create(lead("Gone Alvarez", "gone@example.com"))
        .await
        .expect("lead");
    leads
        .add_activity(
            gone.id,
            NewActivity {
                kind: "note".into(),
                description: Some("called".into()),
            },
        )
        .await
        .expect("note");
    let before = event_types(&crm, WorkspaceId::DEFAULT).await.len();
    let archived = leads.archive(gone.id).await.expect("archive");
    assert!(archived.archived_at.is_some());
    // Twice changes nothing and says nothing more.
    assert_eq!(leads.archive(gone.id).await.expect("again"), archived);
    let events = event_types(&crm, WorkspaceId::DEFAULT).await;
    assert_eq!(events[before..], [EventType::LeadArchived]);
    let names = |page: crm::leads::LeadPage| -> Vec<String> {
        page.items.into_iter().map(|l| l.name).collect()
    };
    let list = |archived: Archived, q: Option<&str>| LeadQuery {
        archived,
        q: q.map(str::to_owned),
        include_total: true,
        ..LeadQuery::default()
    };
    let hidden = leads.list(&list(Archived::Hide, None)).await.expect("list");
    assert_eq!(hidden.total, Some(1));
    assert_eq!(names(hidden), ["Kept Alvarez"]);
    let only = leads.list(&list(Archived::Only, None)).await.expect("list");
    assert_eq!(names(only), ["Gone Alvarez"]);
    let both = leads
        .list(&list(Archived::Include, None))
        .await
        .expect("list");
    assert_eq!(both.total, Some(2));
    // Search leaves it out too, unless asked.
    let found = leads
        .list(&list(Archived::Hide, Some("alvarez")))
        .await
        .expect("search");
    assert_eq!(names(found), ["Kept Alvarez"]);
    let found = leads
        .list(&list(Archived::Include, Some("gone")))
        .await
        .expect("search");
    assert_eq!(names(found), ["Gone Alvarez"]);
    // A cursor of one archived filter is refused by another.
    let paged = LeadQuery {
        limit: Some(1),
        ..list(Archived::Include, None)
    };
    let cursor = leads.list(&paged).await.expect("page").next_cursor;
    let replayed = LeadQuery {
        cursor: cursor.clone(),
        ..list(Archived::Hide, None)
    };
    assert_eq!(
        fields(&leads.list(&replayed).await.expect_err("another filter")),
        ["cursor"]
    );
    assert!(cursor.is_some());
    // The event carries the lead as archived; an update or a capture keeps it archived.
    let events = crm
        .workspace(WorkspaceId::DEFAULT)
        .events(None, 1000)
        .await
        .expect("events");
    let last = events.last().expect("an event");
    assert!(last.payload["data"]["lead"]["archived_at"].is_string());
    let patch = LeadPatch {
        company: Some(Some("Acme".into())),
        ..LeadPatch::default()
    };
    let updated = leads.update(gone.id, patch).await.expect("update");
    assert_eq!(updated.archived_at, archived.archived_at);
    let captured = leads
        .capture(lead("Gone Again", "gone@example.com"))
        .await
        .expect("capture");
    assert!(!captured.created);
    assert_eq!(captured.lead.archived_at, archived.archived_at);
    // The statistics count it.
    let stats = leads.stats(&StatsQuery::default()).await.expect("stats");
    assert_eq!(stats.total, 2);
    // Its timeline stays, and it still counts for duplicates (the conflict names it).
    let detail = leads.get(gone.id).await.expect("get");
    assert_eq!(
        detail.activities.len(),
        2,
        "the note and the captured submission"
    );
    assert!(detail.lead.archived_at.is_some());
    match leads.create(lead("Again", "GONE@example.com")).await {
        Err(Error::Conflict { existing_id, .. }) => assert_eq!(existing_id, Some(gone.id.0)),
        other => panic!("a conflict, not {other:?}"),
    }
    // Another workspace cannot archive or restore it.
    let other = crm.create_workspace("Other").await.expect("workspace");
    assert!(matches!(
        crm.workspace(other).leads().restore(gone.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        crm.workspace(other).leads().archive(kept.id).await,
        Err(Error::NotFound { .. })
    ));
    // Restored: back in the lists, `lead.restored`.
    let restored = leads.restore(gone.id).await.expect("restore");
    assert_eq!(restored.archived_at, None);
    assert_eq!(leads.restore(gone.id).await.expect("again"), restored);
    let events = event_types(&crm, WorkspaceId::DEFAULT).await;
    let of = |t: EventType| events[before..].iter().filter(|e| **e == t).count();
    assert_eq!(
        (of(EventType::LeadArchived), of(EventType::LeadRestored)),
        (1, 1)
    );
    assert_eq!(events.last(), Some(&EventType::LeadRestored));
    assert_eq!(
        leads
            .list(&list(Archived::Hide, None))
            .await
            .expect("list")
            .total,
        Some(2)
    );
}

async fn a_lead_with_a_timeline_is_deleted_only_when_confirmed(db: &TestDb) {
    let crm = db.crm().await;
    let leads = crm.leads();
    let quiet = leads
        .create(lead("Quiet", "quiet@example.com"))
        .await
        .expect("lead");
    let busy = leads
        .create(lead("Busy", "busy@example.com"))
        .await
        .expect("lead");
    leads
        .add_activity(
            busy.id,
            NewActivity {
                kind: "call".into(),
                description: None,
            },
        )
        .await
        .expect("call");
    match leads.delete_confirmed(busy.id, false).await {
        Err(Error::InvalidState { code, .. }) => assert_eq!(code, "confirmation_required"),
        other => panic!("a refusal, not {other:?}"),
    }
    assert!(leads.get(busy.id).await.is_ok(), "kept");
    assert!(!event_types(&crm, WorkspaceId::DEFAULT)
        .await
        .contains(&EventType::LeadDeleted));
    leads
        .delete_confirmed(quiet.id, false)
        .await
        .expect("no timeline: no confirmation");
    leads
        .delete_confirmed(busy.id, true)
        .await
        .expect("confirmed");
    assert!(matches!(
        leads.get(busy.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(db.count("crm_activities").await, 0);
}

async fn duplicates_are_found_and_merged_all_or_nothing(db: &TestDb) {
    use crm::leads::merge::{DuplicateReason, MergeInput};
    let crm = db.crm().await;
    let leads = crm.leads();
    let json = |s: &str| serde_json::from_str(s).expect("json");
    let a = leads
        .create(NewLead {
            name: "Ana López".into(),
            email: Some("ana.lopez@gmail.com".into()),
            company: Some("Bakery SL".into()),
            tags: vec!["vip".into()],
            custom: Some(json(r#"{"score": 1}"#)),
            ..NewLead::default()
        })
        .await
        .expect("a");
    let b = leads
        .create(NewLead {
            name: "ana  lópez".into(),
            email: Some("analopez+web@gmail.com".into()),
            phone: Some("+34 600 123 456".into()),
            company: Some("bakery sl".into()),
            budget: Some("5k_15k".into()),
            tags: vec!["web".into()],
            custom: Some(json(r#"{"score": 2, "src": "web"}"#)),
            ..NewLead::default()
        })
        .await
        .expect("b");
    let other = leads
        .create(lead("Someone Else", "else@example.com"))
        .await
        .expect("c");
    let archived = leads
        .create(NewLead {
            name: "Ana López".into(),
            email: Some("ana@bakery.es".into()),
            company: Some("Bakery SL".into()),
            ..NewLead::default()
        })
        .await
        .expect("d");
    leads.archive(archived.id).await.expect("archive");
    leads
        .add_activity(
            b.id,
            NewActivity {
                kind: "note".into(),
                description: Some("from b".into()),
            },
        )
        .await
        .expect("note");

    // Two more: one name at one company, with other mailboxes.
    let e1 = leads
        .create(NewLead {
            name: "Bo Díaz".into(),
            email: Some("bo@one.example".into()),
            company: Some("Acme".into()),
            ..NewLead::default()
        })
        .await
        .expect("e1");
    let e2 = leads
        .create(NewLead {
            name: " bo   díaz".into(),
            email: Some("bo@two.example".into()),
            company: Some("ACME".into()),
            ..NewLead::default()
        })
        .await
        .expect("e2");

    // One mailbox (a and b; their name group is the same pair, said once), and one
    // name at one company; the archived lead is left out.
    let groups = leads.duplicates(50).await.expect("duplicates");
    let ids = |g: &crm::leads::merge::DuplicateGroup| -> Vec<LeadId> {
        g.leads.iter().map(|l| l.id).collect()
    };
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0].reason, DuplicateReason::Email);
    assert_eq!(ids(&groups[0]), [a.id, b.id]);
    assert_eq!(groups[1].reason, DuplicateReason::NameCompany);
    assert_eq!(ids(&groups[1]), [e1.id, e2.id]);
    assert_eq!(groups[0].size, 2);
    assert_eq!(
        fields(&leads.duplicates(0).await.expect_err("limit")),
        ["limit"]
    );

    // A dry run answers the merge and writes nothing.
    let events_before = event_types(&crm, WorkspaceId::DEFAULT).await.len();
    let input = |dry_run: bool| MergeInput {
        from: vec![b.id],
        dry_run,
        prefer: [("name".to_owned(), b.id)].into_iter().collect(),
    };
    let dry = leads.merge(a.id, input(true)).await.expect("dry run");
    assert!(dry.dry_run);
    assert_eq!(dry.lead.name, "ana  lópez");
    assert_eq!(dry.lead.phone, b.phone, "a blank filled");
    assert_eq!(dry.lead.email, a.email, "the target's value kept");
    assert_eq!(dry.lead.budget.as_deref(), Some("5k_15k"));
    assert_eq!(dry.lead.tags, ["vip", "web"]);
    assert_eq!(dry.lead.custom.get("score"), Some(&serde_json::json!(1)));
    assert_eq!(dry.lead.custom.get("src"), Some(&serde_json::json!("web")));
    assert_eq!(dry.moved_activities, 1);
    assert!(leads.get(b.id).await.is_ok(), "nothing written");
    assert_eq!(
        event_types(&crm, WorkspaceId::DEFAULT).await.len(),
        events_before
    );

    // The merge: b's timeline moves to a, a `merged` entry names b, b is gone.
    let merged = leads.merge(a.id, input(false)).await.expect("merge");
    assert_eq!(
        merged.lead,
        Lead {
            updated_at: merged.lead.updated_at,
            ..dry.lead
        }
    );
    assert_eq!(merged.absorbed, [b.id]);
    assert!(matches!(leads.get(b.id).await, Err(Error::NotFound { .. })));
    let detail = leads.get(a.id).await.expect("a");
    assert_eq!(detail.lead.phone, b.phone);
    let kinds: Vec<ActivityKind> = detail.activities.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, [ActivityKind::Note, ActivityKind::Merged]);
    assert!(detail.activities[1]
        .description
        .as_deref()
        .is_some_and(|d| d.contains(&b.id.to_string())));
    assert_eq!(
        event_types(&crm, WorkspaceId::DEFAULT).await.last(),
        Some(&EventType::LeadMerged)
    );
    let left = leads.duplicates(50).await.expect("duplicates");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason, DuplicateReason::NameCompany);

    // Refusals, each writing nothing.
    let refused = |from: Vec<LeadId>, prefer: &[(&str, LeadId)]| MergeInput {
        from,
        dry_run: false,
        prefer: prefer
            .iter()
            .map(|(f, id)| ((*f).to_owned(), *id))
            .collect(),
    };
    let e = leads
        .merge(a.id, refused(vec![a.id], &[]))
        .await
        .expect_err("itself");
    assert_eq!(fields(&e), ["from"]);
    let e = leads
        .merge(a.id, refused(vec![], &[]))
        .await
        .expect_err("nothing");
    assert_eq!(fields(&e), ["from"]);
    let e = leads
        .merge(a.id, refused(vec![other.id], &[("colour", other.id)]))
        .await
        .expect_err("an unknown field");
    assert_eq!(fields(&e), ["prefer.colour"]);
    let e = leads
        .merge(a.id, refused(vec![other.id], &[("name", archived.id)]))
        .await
        .expect_err("a lead outside the merge");
    assert_eq!(fields(&e), ["prefer.name"]);
    match leads.merge(a.id, refused(vec![archived.id], &[])).await {
        Err(Error::InvalidState { code, .. }) => assert_eq!(code, "lead_archived"),
        r => panic!("refused, not {r:?}"),
    }
    let elsewhere = crm.create_workspace("Other").await.expect("workspace");
    assert!(matches!(
        crm.workspace(elsewhere)
            .leads()
            .merge(other.id, refused(vec![a.id], &[]))
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(leads.get(other.id).await.is_ok() && leads.get(archived.id).await.is_ok());
    let e = leads
        .add_activity(
            a.id,
            NewActivity {
                kind: "merged".into(),
                description: None,
            },
        )
        .await
        .expect_err("crm's own kind");
    assert_eq!(fields(&e), ["kind"]);
}

async fn merges_keep_the_rules_and_cross_merges_do_not_deadlock(db: &TestDb) {
    use crm::leads::merge::MergeInput;
    let crm = db.crm().await;
    let leads = crm.leads();
    let make = |name: &str, email: &str, company: Option<&str>, budget: Option<&str>| NewLead {
        name: name.into(),
        email: Some(email.into()),
        company: company.map(str::to_owned),
        budget: budget.map(str::to_owned),
        ..NewLead::default()
    };
    let t = leads
        .create(make("T", "t@example.com", None, None))
        .await
        .expect("t");
    let x = leads
        .create(make("X", "x@example.com", None, Some("1k_5k")))
        .await
        .expect("x");
    let y = leads
        .create(make("Y", "y@example.com", Some("Acme"), Some("5k_15k")))
        .await
        .expect("y");
    let input = |from: Vec<LeadId>, prefer: &[(&str, LeadId)], dry_run: bool| MergeInput {
        from,
        dry_run,
        prefer: prefer
            .iter()
            .map(|(f, id)| ((*f).to_owned(), *id))
            .collect(),
    };
    // Blanks fill in the order given: the budget from x, the company from y.
    let dry = leads
        .merge(t.id, input(vec![x.id, y.id], &[], true))
        .await
        .expect("dry");
    assert_eq!(dry.lead.budget.as_deref(), Some("1k_5k"));
    assert_eq!(dry.lead.company.as_deref(), Some("Acme"));
    // Preferring a blank is refused (it would erase the target's value).
    let e = leads
        .merge(t.id, input(vec![x.id], &[("company", x.id)], true))
        .await
        .expect_err("a blank preferred");
    assert_eq!(fields(&e), ["prefer.company"]);
    // A lead of another workspace cannot be absorbed.
    let elsewhere = crm.create_workspace("Other").await.expect("workspace");
    let foreign = crm
        .workspace(elsewhere)
        .leads()
        .create(make("F", "f@example.com", None, None))
        .await
        .expect("foreign");
    assert!(matches!(
        leads.merge(t.id, input(vec![foreign.id], &[], false)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(crm
        .workspace(elsewhere)
        .leads()
        .get(foreign.id)
        .await
        .is_ok());
    // A status taken from an absorbed lead is a recorded change.
    leads
        .update(
            y.id,
            LeadPatch {
                status: Some("qualified".into()),
                ..LeadPatch::default()
            },
        )
        .await
        .expect("qualify");
    let done = leads
        .merge(t.id, input(vec![y.id], &[("status", y.id)], false))
        .await
        .expect("merge");
    assert_eq!(done.lead.status, LeadStatus::Qualified);
    let detail = leads.get(t.id).await.expect("t");
    let kinds: Vec<ActivityKind> = detail.activities.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [
            ActivityKind::StatusChange,
            ActivityKind::StatusChange,
            ActivityKind::Merged
        ],
        "y's change moved over, t's own change, the merge"
    );
    assert_eq!(
        detail.lead,
        Lead {
            ..done.lead.clone()
        },
        "what the merge answered is stored"
    );
    // Two merges of the same pair at once, crossed: one wins, the other finds its
    // target gone; neither deadlocks.
    let a = leads
        .create(make("A", "a@example.com", None, None))
        .await
        .expect("a");
    let b = leads
        .create(make("B", "b@example.com", None, None))
        .await
        .expect("b");
    let (l1, l2) = (leads.clone(), leads.clone());
    let (r1, r2) = tokio::join!(
        l1.merge(a.id, input(vec![b.id], &[], false)),
        l2.merge(b.id, input(vec![a.id], &[], false)),
    );
    let oks = [r1.is_ok(), r2.is_ok()];
    assert_eq!(oks.iter().filter(|ok| **ok).count(), 1, "{r1:?} {r2:?}");
    for r in [r1, r2] {
        if let Err(e) = r {
            assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
        }
    }
}

/// The lead writer refreshes Postgres's statistics as the leads grow (at 1,000, then
/// at each doubling), so a listing right after many creates is not planned without
/// them (a scan and a sort of the whole workspace per page) until autovacuum runs.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statistics_follow_many_creates() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let crm = db.crm().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let analyzed = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'crm_leads'",
        )
    };
    assert_eq!(analyzed().fetch_one(&mut c).await.expect("stats"), 0);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let leads = crm.leads();
        tasks.push(tokio::spawn(async move {
            for i in (w..1_000).step_by(8) {
                leads
                    .create(lead("Many", &format!("many{i}@example.com")))
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    // The ANALYZE runs in a task of its own, and the statistics arrive within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while analyzed().fetch_one(&mut c).await.expect("stats") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "crm_leads was not analyzed after 1,000 creates"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rows: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'crm_leads'")
            .fetch_one(&mut c)
            .await
            .expect("reltuples");
    assert!(rows >= 1_000.0, "the planner sees {rows} leads");
    drop(c);
    crm.close().await;
    db.cleanup().await;
}
