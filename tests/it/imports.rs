//! CSV import and export of leads: every test runs on SQLite and on Postgres.

use std::io::Cursor;

use crate::common::TestDb;
use crm::events::EventType;
use crm::leads::{
    Archived, ImportOptions, ImportReport, ImportStatus, LeadQuery, LeadStatus, NewLead,
};
use crm::{Crm, Error, WorkspaceId};

conformance!(
    an_import_creates_updates_skips_and_reports_each_row,
    a_dry_run_reports_the_same_and_writes_nothing,
    events_are_one_per_import_unless_asked,
    bad_files_fail_with_positions_and_nothing_unbounded,
    an_import_resumes_and_a_tracked_one_is_polled,
    an_export_streams_every_field_safely_and_imports_back,
    keys_move_between_leads_in_one_batch,
    a_batch_of_long_rows_goes_in_whole,
);

async fn import(crm: &Crm, csv: &str, options: ImportOptions) -> Result<ImportReport, Error> {
    crm.leads()
        .import(Cursor::new(csv.as_bytes().to_vec()), options, |_| {})
        .await
}

async fn all(crm: &Crm, archived: Archived) -> Vec<crm::leads::Lead> {
    let mut q = LeadQuery {
        limit: Some(100),
        archived,
        ..LeadQuery::default()
    };
    let mut out = Vec::new();
    loop {
        let page = crm.leads().list(&q).await.expect("list");
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

async fn event_types(crm: &Crm) -> Vec<EventType> {
    let events = crm
        .workspace(WorkspaceId::DEFAULT)
        .events(None, 1000)
        .await
        .expect("events");
    events.iter().map(|e| e.event_type).collect()
}

async fn an_import_creates_updates_skips_and_reports_each_row(db: &TestDb) {
    let crm = db.crm().await;
    let leads = crm.leads();
    let known = leads
        .create(NewLead {
            name: "Known Ruiz".into(),
            email: Some("known@example.com".into()),
            tags: vec!["old".into()],
            ..NewLead::default()
        })
        .await
        .expect("lead");
    let by_phone = leads
        .create(NewLead {
            name: "Phone Ruiz".into(),
            phone: Some("+34600000001".into()),
            ..NewLead::default()
        })
        .await
        .expect("lead");
    let archived = leads
        .create(NewLead {
            name: "Gone Ruiz".into(),
            email: Some("gone@example.com".into()),
            ..NewLead::default()
        })
        .await
        .expect("lead");
    leads.archive(archived.id).await.expect("archive");

    // A BOM, `;` between cells, a quoted cell with a `;` and a line break, headers
    // that name their fields loosely, a custom column, an ignored one.
    let csv = "\u{feff}Name;E-Mail;Phone;Project Type;Status;Tags;custom.plan;Favourite colour\n\
        Ana Ruiz;ana@example.com;;website;;vip, new;gold;red\n\
        ;known@example.com;;;contacted;imported;;\n\
        \"Multi; Line\nName\";multi@example.com;;;;;;\n\
        Bad Email;not-an-email;;;;;;\n\
        Phone Again;;+34 600 000 001;;qualified;;;\n\
        Known Ruiz;known@example.com;;;contacted;imported;;\n\
        Nobody;;;;;;;\n\
        Two People;known@example.com;+34600000001;;;;;\n\
        Back Ruiz;gone@example.com;;;;;;\n\
        Ana Again;ANA@example.com;;;;;silver;\n\
        No Name;new@example.com;;;;;;\n\
        Short;row\n";
    let report = import(&crm, csv, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(report.status, ImportStatus::Completed);
    assert_eq!(report.rows_done, 12);
    assert_eq!(report.ignored_columns, ["Favourite colour"]);
    // Created: Ana, Multi, No Name. Updated: known (row 2), by_phone (row 5), Ana
    // again (row 10, a lead row 1 created). Skipped: row 6 (row 2 did it already).
    assert_eq!(
        (report.created, report.updated, report.skipped),
        (3, 3, 1),
        "{report:#?}"
    );
    assert_eq!(report.failed, 5, "{report:#?}");
    let errors: Vec<(u64, Option<&str>)> = report
        .errors
        .iter()
        .map(|e| (e.row, e.field.as_deref()))
        .collect();
    assert_eq!(
        errors,
        [
            (4, Some("email")),
            (7, Some("email")),
            (8, Some("phone")),
            (9, Some("email")),
            (12, None),
        ],
        "{:#?}",
        report.errors
    );
    // Row 4 starts on line 6: the quoted cell of row 3 spans two lines.
    assert_eq!(report.errors[0].line, 6);
    assert!(report.errors[4]
        .message
        .contains("has 2 cells; the header has 8"));
    assert!(report.errors[3].message.contains("archived"));

    let stored = all(&crm, Archived::Include).await;
    let find = |email: &str| {
        stored
            .iter()
            .find(|l| l.email.as_ref().is_some_and(|e| e.as_str() == email))
            .cloned()
            .expect("lead")
    };
    let ana = find("ana@example.com");
    assert_eq!(
        ana.name, "Ana Again",
        "row 10 renamed the lead row 1 created"
    );
    assert_eq!(ana.project_type.as_deref(), Some("website"));
    assert_eq!(ana.tags, ["vip", "new"]);
    assert_eq!(ana.custom["plan"], "silver");
    assert_eq!(find("multi@example.com").name, "Multi; Line\nName");
    assert_eq!(find("new@example.com").name, "No Name");
    let known_now = find("known@example.com");
    assert_eq!(
        known_now.name, "Known Ruiz",
        "a row without a name keeps it"
    );
    assert_eq!(known_now.status, LeadStatus::Contacted);
    assert_eq!(known_now.tags, ["old", "imported"]);
    let timeline = leads.activities(known.id).await.expect("timeline");
    assert_eq!(
        timeline
            .iter()
            .filter(|a| a.kind == crm::leads::ActivityKind::StatusChange)
            .count(),
        1,
        "the status change is on the timeline once"
    );
    let phone_now = leads.get(by_phone.id).await.expect("get").lead;
    assert_eq!(phone_now.status, LeadStatus::Qualified);
    assert_eq!(phone_now.name, "Phone Again");
    let gone = leads.get(archived.id).await.expect("get").lead;
    assert_eq!(
        gone.name, "Gone Ruiz",
        "an archived lead is not imported into"
    );

    // The same file again creates nothing; rows 1 and 10 rename Ana back and forth,
    // the other good rows change nothing.
    let again = import(&crm, csv, ImportOptions::default())
        .await
        .expect("again");
    assert_eq!(
        (again.created, again.updated, again.skipped, again.failed),
        (0, 2, 5, 5),
        "{again:#?}"
    );
}

async fn a_dry_run_reports_the_same_and_writes_nothing(db: &TestDb) {
    let crm = db.crm().await;
    crm.leads()
        .create(NewLead {
            name: "Known".into(),
            email: Some("known@example.com".into()),
            ..NewLead::default()
        })
        .await
        .expect("lead");
    let mut csv = String::from("name,email,status\n");
    for i in 0..2_500 {
        // Every 7th row repeats an earlier row's email (an update of a lead this
        // import creates, in an earlier batch); every 11th is bad.
        let email = if i % 7 == 6 {
            format!("p{}@example.com", i - 3)
        } else {
            format!("p{i}@example.com")
        };
        let status = if i % 11 == 10 { "nope" } else { "contacted" };
        csv.push_str(&format!("Person {i},{email},{status}\n"));
    }
    csv.push_str("Known Again,known@example.com,won\n");
    let before = event_types(&crm).await.len();
    let dry = import(
        &crm,
        &csv,
        ImportOptions {
            dry_run: true,
            ..ImportOptions::default()
        },
    )
    .await
    .expect("dry run");
    assert!(dry.dry_run);
    assert_eq!(
        all(&crm, Archived::Include).await.len(),
        1,
        "nothing written"
    );
    assert_eq!(event_types(&crm).await.len(), before);
    let real = import(&crm, &csv, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(
        (
            dry.created,
            dry.updated,
            dry.skipped,
            dry.failed,
            dry.rows_done
        ),
        (
            real.created,
            real.updated,
            real.skipped,
            real.failed,
            real.rows_done
        ),
    );
    assert_eq!(dry.errors, real.errors);
    assert_eq!(real.rows_done, 2_501);
    assert!(real.updated > 250 && real.failed > 200, "{real:#?}");
    assert_eq!(
        all(&crm, Archived::Include).await.len() as u64,
        1 + real.created
    );
}

async fn events_are_one_per_import_unless_asked(db: &TestDb) {
    let crm = db.crm().await;
    let csv = "name,email\nA,a@example.com\nB,b@example.com\n";
    let before = event_types(&crm).await.len();
    let report = import(&crm, csv, ImportOptions::default())
        .await
        .expect("import");
    let events = crm
        .workspace(WorkspaceId::DEFAULT)
        .events(None, 100)
        .await
        .expect("events");
    let new: Vec<_> = events[before..].iter().collect();
    assert_eq!(new.len(), 1, "one event for the import");
    assert_eq!(new[0].event_type, EventType::LeadsImported);
    let data = &new[0].payload["data"];
    assert_eq!(data["import_id"], report.id.to_string());
    assert_eq!(
        (data["created"].as_u64(), data["rows"].as_u64()),
        (Some(2), Some(2))
    );

    // With lead_events: one per lead as well; a run that writes nothing, none.
    let before = event_types(&crm).await.len();
    import(
        &crm,
        "name,email,status\nA,a@example.com,won\nC,c@example.com,\n",
        ImportOptions {
            lead_events: true,
            ..ImportOptions::default()
        },
    )
    .await
    .expect("import");
    let events = event_types(&crm).await;
    assert_eq!(
        events[before..],
        [
            // Changed leads are written before new ones.
            EventType::LeadStatusChanged,
            EventType::LeadUpdated,
            EventType::LeadCreated,
            EventType::LeadsImported
        ]
    );
    let before = events.len();
    import(&crm, csv, ImportOptions::default())
        .await
        .expect("again");
    assert_eq!(
        event_types(&crm).await.len(),
        before,
        "nothing written, nothing said"
    );
}

async fn bad_files_fail_with_positions_and_nothing_unbounded(db: &TestDb) {
    let crm = db.crm().await;
    let count = |crm: &Crm| {
        let crm = crm.clone();
        async move { all(&crm, Archived::Include).await.len() }
    };
    // Header problems are a validation error and write nothing.
    let header_errors = [
        ("", "file"),
        ("name,company\nA,B\n", "file"),
        ("name,email\n", ""),
    ];
    for (csv, field) in header_errors {
        match import(&crm, csv, ImportOptions::default()).await {
            Err(Error::Validation { errors }) => assert_eq!(errors[0].field, field),
            Ok(r) if field.is_empty() => assert_eq!(r.rows_done, 0),
            other => panic!("{csv:?}: {other:?}"),
        }
    }
    let wide = format!(
        "email,{}\n",
        (0..10_000)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let err = import(&crm, &wide, ImportOptions::default())
        .await
        .expect_err("10,000 columns");
    assert!(err.to_string().contains("10001 columns"), "{err}");
    let mapped = ImportOptions {
        mapping: [("E".to_string(), "mail".to_string())].into(),
        ..ImportOptions::default()
    };
    let err = import(&crm, "E,name\nx@example.com,X\n", mapped)
        .await
        .expect_err("unknown field");
    assert_eq!(err.field_errors()[0].field, "mapping.E");
    let err = import(
        &crm,
        "name,email\n",
        ImportOptions {
            delimiter: Some('|'),
            ..ImportOptions::default()
        },
    )
    .await
    .expect_err("delimiter");
    assert_eq!(err.field_errors()[0].field, "delimiter");
    // A header cell with a control character, or longer than 200 characters (an
    // export of an odd custom key): an ignored column, shown shortened and safe.
    for (header, shown) in [
        ("na\u{0}me,email\n".to_string(), "na\u{fffd}me".to_string()),
        (format!("{},email\n", "n-".repeat(200)), "n-".repeat(100)),
    ] {
        let report = import(&crm, &header, ImportOptions::default())
            .await
            .expect("an odd header cell is ignored");
        assert_eq!(report.ignored_columns, [shown]);
    }
    let mut bad_header = b"name,em".to_vec();
    bad_header.extend([0xff, 0xfe]);
    bad_header.extend(b"ail\nA,a@example.com\n");
    let err = crm
        .leads()
        .import(Cursor::new(bad_header), ImportOptions::default(), |_| {})
        .await
        .expect_err("header not UTF-8");
    assert_eq!(err.field_errors()[0].field, "file");
    assert_eq!(count(&crm).await, 0);

    // Bad rows are reported where they are and the rest goes in.
    let mut bytes = b"name,email\nGood One,one@example.com\nBad,b".to_vec();
    bytes.extend([0xc3, 0x28]);
    bytes.extend(b"@example.com\nToo,many,cells\nGood Two,two@example.com\n");
    let report = crm
        .leads()
        .import(Cursor::new(bytes), ImportOptions::default(), |_| {})
        .await
        .expect("import");
    assert_eq!((report.created, report.failed), (2, 2));
    assert_eq!(report.errors[0].row, 2);
    assert_eq!(report.errors[0].field.as_deref(), Some("email"));
    assert!(report.errors[0].message.contains("UTF-8"));
    assert_eq!((report.errors[1].row, report.errors[1].line), (3, 4));

    // CRLF line ends and blank lines: rows keep their file lines; a repeated header
    // reads its first column only.
    let report = import(
        &crm,
        "name,email,email\r\nCr Lf,crlf@example.com,x\r\n\r\nBad,nope,crlf2@example.com\r\n",
        ImportOptions::default(),
    )
    .await
    .expect("import");
    assert_eq!(report.ignored_columns, ["email"]);
    assert_eq!((report.created, report.failed), (1, 1), "{report:#?}");
    assert_eq!((report.errors[0].row, report.errors[0].line), (2, 4));
    assert_eq!(
        all(&crm, Archived::Include)
            .await
            .iter()
            .filter(|l| l.name == "Cr Lf")
            .count(),
        1,
        "the \\r is not part of a cell"
    );

    let report = import(
        &crm,
        "\nname,email\nLf,lf@example.com\n\n\nBad,nope\n",
        ImportOptions::default(),
    )
    .await
    .expect("import");
    assert_eq!(
        (report.errors[0].row, report.errors[0].line),
        (2, 6),
        "{report:#?}"
    );

    // A 10 MB cell stops the file at its row, after what came before is imported;
    // an unclosed quote runs into the same limit, or ends as a short last row.
    let mut huge = String::from("name,email\nBefore Huge,before@example.com\nHuge,\"");
    huge.push_str(&"x".repeat(10 << 20));
    huge.push_str("\"\nAfter Huge,after@example.com\n");
    let report = import(&crm, &huge, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(report.status, ImportStatus::Failed);
    assert_eq!(report.created, 1);
    let stop = report.error.expect("what stopped it");
    assert_eq!(stop.row, 2);
    assert!(
        stop.message.contains("longer than 1 MiB"),
        "{}",
        stop.message
    );
    assert_eq!(report.rows_done, 1, "resume from here");
    let report = import(
        &crm,
        "name,email\nOpen,\"open@example.com\nNext,next@example.com\n",
        ImportOptions::default(),
    )
    .await
    .expect("import");
    assert_eq!((report.created, report.failed), (0, 1), "{report:#?}");
    assert_eq!(count(&crm).await, 5);
}

async fn keys_move_between_leads_in_one_batch(db: &TestDb) {
    let crm = db.crm().await;
    let leads = crm.leads();
    let mut ids = Vec::new();
    for (name, email, phone) in [
        ("A", "a@example.com", "+34600000001"),
        ("B", "b@example.com", "+34600000002"),
    ] {
        let lead = leads
            .create(NewLead {
                name: name.into(),
                email: Some(email.into()),
                phone: Some(phone.into()),
                ..NewLead::default()
            })
            .await
            .expect("lead");
        ids.push(lead.id);
    }
    // A gives up a@ for c@, B takes a@, A takes b@: the two swap emails, and B
    // (changed second) is written while A's old key is parked.
    let csv = "name,email,phone\n\
        A,c@example.com,+34600000001\n\
        B,a@example.com,+34600000002\n\
        A,b@example.com,+34600000001\n";
    let report = import(&crm, csv, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!((report.updated, report.failed), (3, 0), "{report:#?}");
    let email = |i: usize| {
        let leads = leads.clone();
        let id = ids[i];
        async move {
            let lead = leads.get(id).await.expect("get").lead;
            lead.email.map(|e| e.as_str().to_owned())
        }
    };
    assert_eq!(email(0).await.as_deref(), Some("b@example.com"));
    assert_eq!(email(1).await.as_deref(), Some("a@example.com"));
    // And a phone moves the same way.
    let csv = "name,email,phone\nA,b@example.com,+34600000003\nB,a@example.com,+34600000001\n";
    let report = import(&crm, csv, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!((report.updated, report.failed), (2, 0), "{report:#?}");
}

async fn an_import_resumes_and_a_tracked_one_is_polled(db: &TestDb) {
    let crm = db.crm().await;
    let mut csv = String::from("name,email\n");
    for i in 0..2_300 {
        csv.push_str(&format!("P {i},p{i}@example.com\n"));
    }
    // An import stopped after its first 1,000 rows carries on from there.
    let mut seen = Vec::new();
    let report = crm
        .leads()
        .import(
            Cursor::new(csv.clone().into_bytes()),
            ImportOptions {
                skip_rows: 1_000,
                ..ImportOptions::default()
            },
            |p| seen.push((p.rows_done, p.created)),
        )
        .await
        .expect("import");
    assert_eq!(report.rows_done, 2_300);
    assert_eq!(report.created, 1_300);
    assert_eq!(
        seen,
        [(2_000, 1_000), (2_300, 1_300)],
        "progress after each batch"
    );
    assert!(all(&crm, Archived::Include)
        .await
        .iter()
        .all(|l| l.name != "P 999" && l.name != "P 0"));

    // A tracked import is counted first, saved with every batch, read by its id.
    let mut file = tempfile::tempfile().expect("temp file");
    std::io::Write::write_all(&mut file, csv.as_bytes()).expect("write");
    std::io::Seek::rewind(&mut file).expect("rewind");
    let started = crm
        .leads()
        .start_import(file, ImportOptions::default())
        .await
        .expect("start");
    assert_eq!(started.status, ImportStatus::Running);
    let mut report = started.clone();
    for _ in 0..600 {
        report = crm.leads().import_report(started.id).await.expect("report");
        if report.status != ImportStatus::Running {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(report.status, ImportStatus::Completed, "{report:#?}");
    assert_eq!(report.total_rows, Some(2_300));
    assert_eq!((report.created, report.skipped), (1_000, 1_300));
    assert!(report.finished_at.is_some());
    // Another workspace does not see it.
    let other = crm.create_workspace("Other").await.expect("workspace");
    let err = crm
        .workspace(other)
        .leads()
        .import_report(started.id)
        .await
        .expect_err("another workspace's import");
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

async fn an_export_streams_every_field_safely_and_imports_back(db: &TestDb) {
    let crm = db.crm().await;
    let leads = crm.leads();
    let tricky = leads
        .create(NewLead {
            name: "=HYPERLINK(\"http://x\")".into(),
            message: Some("'quoted; =1+1".into()),
            email: Some("tricky@example.com".into()),
            phone: Some("+34600000009".into()),
            company: Some("@Corp, \"Quoted\"".into()),
            notes: Some("line one\nline two".into()),
            tags: vec!["a".into(), "b".into()],
            custom: Some(
                serde_json::json!({"plan": "gold", "seats": 3})
                    .as_object()
                    .cloned()
                    .expect("object"),
            ),
            status: Some("won".into()),
            ..NewLead::default()
        })
        .await
        .expect("lead");
    let mut csv = String::from("name,email\n");
    for i in 0..1_200 {
        csv.push_str(&format!("Bulk {i},bulk{i}@example.com\n"));
    }
    import(&crm, &csv, ImportOptions::default())
        .await
        .expect("import");
    let archived = leads
        .create(NewLead {
            name: "Archived".into(),
            email: Some("archived@example.com".into()),
            ..NewLead::default()
        })
        .await
        .expect("lead");
    leads.archive(archived.id).await.expect("archive");

    let read = |query: LeadQuery| {
        let leads = leads.clone();
        async move {
            let mut export = leads.export(&query).await.expect("export");
            let mut out = Vec::new();
            let mut chunks = 0;
            while let Some(chunk) = export.next_chunk().await.expect("chunk") {
                out.extend(chunk);
                chunks += 1;
            }
            (
                String::from_utf8(out).expect("UTF-8"),
                export.rows(),
                chunks,
            )
        }
    };
    let (all_csv, rows, chunks) = read(LeadQuery::default()).await;
    assert_eq!(rows, 1_201, "archived leads are left out by default");
    assert!(chunks >= 3, "streamed in pages, not at once");
    let mut r = csv::Reader::from_reader(all_csv.as_bytes());
    let header: Vec<String> = r
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header[..3], ["id", "name", "email"]);
    assert_eq!(header[header.len() - 2..], ["custom.plan", "custom.seats"]);
    let records: Vec<csv::StringRecord> = r.records().map(|r| r.expect("record")).collect();
    assert_eq!(records.len(), 1_201);
    let row = records
        .iter()
        .find(|r| r[0] == tricky.id.to_string())
        .expect("the tricky lead");
    let col = |name: &str| header.iter().position(|h| h == name).expect("column");
    assert_eq!(&row[col("name")], "'=HYPERLINK(\"http://x\")");
    assert_eq!(&row[col("phone")], "'+34600000009");
    assert_eq!(&row[col("company")], "'@Corp, \"Quoted\"");
    assert_eq!(&row[col("notes")], "line one\nline two");
    assert_eq!(&row[col("tags")], "a, b");
    assert_eq!(
        &row[col("message")],
        "''quoted; =1+1",
        "a leading ' is escaped too"
    );
    assert!(
        all_csv
            .lines()
            .next()
            .is_some_and(|h| h.starts_with(r#""id","name""#)),
        "every cell is quoted"
    );
    assert_eq!(&row[col("custom.plan")], "gold");
    assert_eq!(&row[col("custom.seats")], "3");
    assert_eq!(&row[col("status")], "won");

    // Filters apply; archived leads when asked.
    let (won, rows, _) = read(LeadQuery {
        status: vec!["won".into()],
        ..LeadQuery::default()
    })
    .await;
    assert_eq!(rows, 1);
    assert!(won.contains("tricky@example.com"));
    let (_, rows, _) = read(LeadQuery {
        archived: Archived::Only,
        ..LeadQuery::default()
    })
    .await;
    assert_eq!(rows, 1);

    // The file imports into another workspace as the same leads.
    let other = crm.create_workspace("Copy").await.expect("workspace");
    let copy = crm
        .workspace(other)
        .leads()
        .import(
            Cursor::new(all_csv.into_bytes()),
            ImportOptions::default(),
            |_| {},
        )
        .await
        .expect("import back");
    assert_eq!((copy.created, copy.failed), (1_201, 0), "{copy:#?}");
    assert!(copy.ignored_columns.contains(&"id".to_string()));
    let copied = crm
        .workspace(other)
        .leads()
        .list(&LeadQuery {
            q: Some("tricky".into()),
            ..LeadQuery::default()
        })
        .await
        .expect("list");
    let c = &copied.items[0];
    assert_eq!(
        (&c.name, &c.phone, &c.company, &c.notes, &c.tags, c.status),
        (
            &tricky.name,
            &tricky.phone,
            &tricky.company,
            &tricky.notes,
            &tricky.tags,
            tricky.status
        )
    );
    assert_eq!(c.custom["plan"], "gold");
    assert_eq!(c.custom["seats"], "3", "a number comes back as text");
}

/// A batch whose leads carry long notes passes the size of one insert (on SQLite a
/// JSON parameter of a few MiB) and goes in as several: every lead, whole.
async fn a_batch_of_long_rows_goes_in_whole(db: &TestDb) {
    let crm = db.crm().await;
    let mut csv = String::from("name,email,notes\n");
    for i in 0..700 {
        let notes = format!("{i} {}", "n".repeat(9_000));
        csv.push_str(&format!("Long {i},long{i}@example.com,{notes}\n"));
    }
    let report = import(&crm, &csv, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!((report.created, report.failed), (700, 0));
    let leads = all(&crm, Archived::Hide).await;
    assert_eq!(leads.len(), 700);
    for l in &leads {
        let i: usize = l.name["Long ".len()..].parse().expect("number");
        assert_eq!(
            l.notes.as_deref().map(str::len),
            Some(9_001 + i.to_string().len())
        );
        assert_eq!(
            l.email.as_ref().map(|e| e.as_str().to_owned()),
            Some(format!("long{i}@example.com"))
        );
    }
}
