//! Attachments on leads and contacts, and the filesystem storage: every test runs
//! on SQLite and on Postgres, with files in a temporary directory.

use std::path::Path;
use std::time::Duration;

use crate::common::TestDb;
use crm::attachments::{AttachmentRules, Parent};
use crm::contacts::NewContact;
use crm::events::EventType;
use crm::housekeeping::Housekeeping;
use crm::leads::merge::MergeInput;
use crm::leads::NewLead;
use crm::storage::{FsStorage, Storage};
use crm::{AuthFailure, Crm, Error, LeadId, Quotas, WorkspaceId};

conformance!(
    files_are_added_listed_read_and_removed,
    bad_files_are_refused_and_write_nothing,
    links_work_until_the_clock_passes_their_expiry,
    files_go_with_their_lead_or_contact_and_merges_move_them,
    two_uploads_cannot_both_take_the_last_of_the_quota,
);

const PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n";

/// A `Crm` on the test database with files under `dir` and small limits.
async fn crm_with(db: &TestDb, dir: &Path, quota: u64) -> Crm {
    db.builder()
        .storage(FsStorage::new(dir.join("files")))
        .attachment_rules(AttachmentRules {
            max_file_size: 1024,
            ..AttachmentRules::default()
        })
        .quotas(Quotas {
            attachment_bytes: quota,
            ..Quotas::default()
        })
        .connect()
        .await
        .expect("connect")
}

async fn lead(crm: &Crm, ws: WorkspaceId, email: &str) -> LeadId {
    crm.workspace(ws)
        .leads()
        .create(NewLead {
            name: "Ana López".into(),
            email: Some(email.into()),
            ..NewLead::default()
        })
        .await
        .expect("lead")
        .id
}

/// The files under the storage directory of [`crm_with`], as keys.
async fn stored(dir: &Path) -> Vec<String> {
    let mut keys: Vec<String> = FsStorage::new(dir.join("files"))
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    keys
}

async fn event_types(crm: &Crm, ws: WorkspaceId) -> Vec<EventType> {
    crm.workspace(ws)
        .events(None, 1000)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn files_are_added_listed_read_and_removed(db: &TestDb) {
    let dir = tempfile::tempdir().expect("dir");
    let crm = crm_with(db, dir.path(), 1 << 20).await;
    let ws = WorkspaceId::DEFAULT;
    let files = crm.workspace(ws).attachments().with_actor("user:ana");
    let lead_id = lead(&crm, ws, "ana@example.com").await;

    let a = files
        .add(lead_id, "../../etc/contrato.pdf", PDF)
        .await
        .expect("add");
    assert_eq!(
        a.name, "contrato.pdf",
        "only the last part of a path is kept"
    );
    assert_eq!(a.content_type, "application/pdf");
    assert_eq!(a.size, PDF.len() as u64);
    assert_eq!(a.lead_id, Some(lead_id));
    assert_eq!(a.uploaded_by.as_deref(), Some("user:ana"));
    let sha = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(PDF);
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(a.sha256, sha);
    assert_eq!(&files.read(lead_id, a.id).await.expect("read")[..], PDF);
    let keys = stored(dir.path()).await;
    assert!(
        keys.len() == 1 && keys[0].starts_with(&format!("{ws}/")),
        "one object, under the workspace's prefix: {keys:?}"
    );

    // A file from a path, named as the file is; a CSV by its bytes and name.
    let csv = dir.path().join("leads.csv");
    std::fs::write(&csv, "name,email\nAna,a@x.com\n").expect("write");
    let b = files.add_file(lead_id, &csv, None).await.expect("add_file");
    assert_eq!(
        (b.name.as_str(), b.content_type.as_str()),
        ("leads.csv", "text/csv")
    );
    let listed = files.list(lead_id).await.expect("list");
    assert_eq!(listed, [a.clone(), b.clone()]);
    assert_eq!(files.get(lead_id, a.id).await.expect("get"), a);
    assert_eq!(files.usage().await.expect("usage"), a.size + b.size);

    // On a contact, too; a contact's file is not the lead's.
    let contact = crm
        .workspace(ws)
        .contacts()
        .create(NewContact {
            first_name: "Ana".into(),
            ..NewContact::default()
        })
        .await
        .expect("contact");
    let c = files.add(contact.id, "dni.pdf", PDF).await.expect("add");
    assert_eq!(c.contact_id, Some(contact.id));
    assert!(matches!(
        files.get(lead_id, c.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        files.delete(lead_id, c.id).await,
        Err(Error::NotFound { .. })
    ));

    files.delete(lead_id, a.id).await.expect("delete");
    assert!(matches!(
        files.get(lead_id, a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(stored(dir.path()).await.len(), 2, "its bytes went with it");

    let timeline: Vec<(String, Option<String>)> = crm
        .workspace(ws)
        .leads()
        .activities(lead_id)
        .await
        .expect("activities")
        .into_iter()
        .map(|x| (x.kind.as_str().to_owned(), x.description))
        .collect();
    assert_eq!(
        timeline,
        [
            ("attachment".into(), Some("Attached contrato.pdf".into())),
            ("attachment".into(), Some("Attached leads.csv".into())),
            ("attachment".into(), Some("Removed contrato.pdf".into())),
        ]
    );
    let events = event_types(&crm, ws).await;
    let added = events
        .iter()
        .filter(|t| **t == EventType::AttachmentAdded)
        .count();
    assert_eq!(added, 3);
    assert_eq!(events.last(), Some(&EventType::AttachmentRemoved));
    crm.close().await;
}

async fn bad_files_are_refused_and_write_nothing(db: &TestDb) {
    let dir = tempfile::tempdir().expect("dir");
    let crm = crm_with(db, dir.path(), 1 << 20).await;
    let ws = WorkspaceId::DEFAULT;
    let files = crm.workspace(ws).attachments();
    let lead_id = lead(&crm, ws, "ana@example.com").await;
    let events_before = event_types(&crm, ws).await.len();

    // A file at the limit goes in; one byte over does not.
    let mut at_limit = b"%PDF-1.7\n".to_vec();
    at_limit.resize(1024, b' ');
    files
        .add(lead_id, "limit.pdf", at_limit.clone())
        .await
        .expect("at the limit");
    let mut over = at_limit.clone();
    over.push(b' ');
    assert!(matches!(
        files.add(lead_id, "over.pdf", over).await,
        Err(Error::TooLarge { limit: 1024 })
    ));
    let big = dir.path().join("big.pdf");
    std::fs::write(&big, vec![b'a'; 2048]).expect("write");
    assert!(matches!(
        files.add_file(lead_id, &big, None).await,
        Err(Error::TooLarge { .. })
    ));

    // An executable named .pdf is what its bytes say.
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
    elf.resize(64, 0);
    match files.add(lead_id, "invoice.pdf", elf).await {
        Err(Error::UnsupportedType { content_type }) => {
            assert_eq!(content_type, "application/x-executable")
        }
        other => panic!("expected UnsupportedType, got {other:?}"),
    }
    let e = files
        .add(lead_id, "empty.pdf", Vec::new())
        .await
        .expect_err("refused");
    assert_eq!(e.field_errors()[0].field, "file");
    for name in ["", "..", "a/", "\u{0}"] {
        let e = files.add(lead_id, name, PDF).await.expect_err("refused");
        assert_eq!(e.field_errors()[0].field, "name", "{name:?}");
    }
    let e = files
        .add_file(lead_id, dir.path().join("missing.pdf"), None)
        .await
        .expect_err("refused");
    assert_eq!(e.field_errors()[0].field, "path");

    // Another workspace's lead, and a lead that does not exist.
    let other = crm.create_workspace("Other").await.expect("workspace");
    let foreign = lead(&crm, other, "eve@example.com").await;
    for parent in [Parent::Lead(foreign), Parent::Lead(LeadId::new())] {
        assert!(matches!(
            files.add(parent, "x.pdf", PDF).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            files.list(parent).await,
            Err(Error::NotFound { .. })
        ));
    }

    // A storage that cannot write: 503 material, and nothing in the database.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"a file where a directory should be").expect("write");
    let broken = db
        .builder()
        .storage(FsStorage::new(&blocked))
        .connect()
        .await
        .expect("connect");
    assert!(matches!(
        broken
            .workspace(ws)
            .attachments()
            .add(lead_id, "x.pdf", PDF)
            .await,
        Err(Error::Storage(_))
    ));
    // No storage at all is a configuration error.
    let none = db.crm().await;
    assert!(matches!(
        none.workspace(ws)
            .attachments()
            .add(lead_id, "x.pdf", PDF)
            .await,
        Err(Error::Config(_))
    ));

    assert_eq!(files.list(lead_id).await.expect("list").len(), 1);
    assert_eq!(
        stored(dir.path()).await.len(),
        1,
        "only the file at the limit"
    );
    assert_eq!(
        event_types(&crm, ws).await.len(),
        events_before + 1,
        "only the file at the limit wrote an event"
    );
    // A process without a storage can still delete a file's row; its bytes are
    // left for housekeeping where a storage is.
    let limit = files.list(lead_id).await.expect("list").remove(0);
    none.workspace(ws)
        .attachments()
        .delete(lead_id, limit.id)
        .await
        .expect("delete without a storage");
    assert!(files.list(lead_id).await.expect("list").is_empty());
    assert_eq!(
        stored(dir.path()).await.len(),
        1,
        "the bytes wait for the sweep"
    );
    for c in [broken, none, crm] {
        c.close().await;
    }
}

async fn links_work_until_the_clock_passes_their_expiry(db: &TestDb) {
    let dir = tempfile::tempdir().expect("dir");
    let crm = crm_with(db, dir.path(), 1 << 20).await;
    let ws = crm.create_workspace("Links").await.expect("workspace");
    let files = crm.workspace(ws).attachments();
    let lead_id = lead(&crm, ws, "ana@example.com").await;
    let a = files.add(lead_id, "contrato.pdf", PDF).await.expect("add");

    let link = files
        .link(lead_id, a.id, Some(Duration::from_secs(60)))
        .await
        .expect("link");
    assert_eq!(
        link.expires_at,
        db.clock_now() + chrono::Duration::seconds(60)
    );
    let token = link
        .url
        .strip_prefix("/api/files?token=")
        .expect("crm's own link");
    let download = crm.open_link(token).await.expect("open");
    assert_eq!(download.attachment, a);

    let invalid = |r: Result<crm::attachments::Download, Error>| {
        matches!(
            r,
            Err(Error::Unauthorized {
                reason: AuthFailure::InvalidLink
            })
        )
    };
    // Changed in one character, or cut short: refused.
    let mut forged: Vec<char> = token.chars().collect();
    forged[10] = if forged[10] == 'A' { 'B' } else { 'A' };
    assert!(invalid(
        crm.open_link(&forged.into_iter().collect::<String>()).await
    ));
    assert!(invalid(crm.open_link(&token[..40]).await));
    // Another server's master key does not verify it.
    let other_key = crm::Crm::builder()
        .database_url(&db.url)
        .master_key(crm::MasterKey::generate("other").expect("key"))
        .clock(db.clock.clone())
        .storage(FsStorage::new(dir.path().join("files")))
        .connect()
        .await
        .expect("connect");
    assert!(invalid(other_key.open_link(token).await));

    db.clock.advance(chrono::Duration::seconds(59));
    assert!(crm.open_link(token).await.is_ok());
    db.clock.advance(chrono::Duration::seconds(1));
    assert!(invalid(crm.open_link(token).await), "expired");

    for bad in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
        let e = files
            .link(lead_id, a.id, Some(bad))
            .await
            .expect_err("refused");
        assert_eq!(e.field_errors()[0].field, "expires_in");
    }
    // A link to a file that was deleted finds nothing.
    let link = files.link(lead_id, a.id, None).await.expect("link");
    files.delete(lead_id, a.id).await.expect("delete");
    let token = link
        .url
        .strip_prefix("/api/files?token=")
        .expect("crm's own link");
    assert!(matches!(
        crm.open_link(token).await,
        Err(Error::NotFound { .. })
    ));
    // With a base, links are absolute.
    let based = db
        .builder()
        .storage(FsStorage::new(dir.path().join("files")))
        .attachment_rules(AttachmentRules {
            link_base: Some("https://crm.example.com/crm/".into()),
            ..AttachmentRules::default()
        })
        .connect()
        .await
        .expect("connect");
    let b = based
        .workspace(ws)
        .attachments()
        .add(lead_id, "b.pdf", PDF)
        .await
        .expect("add");
    let url = based
        .workspace(ws)
        .attachments()
        .link(lead_id, b.id, None)
        .await
        .expect("link")
        .url;
    assert!(
        url.starts_with("https://crm.example.com/crm/api/files?token="),
        "{url}"
    );
    for c in [other_key, based, crm] {
        c.close().await;
    }
}

async fn files_go_with_their_lead_or_contact_and_merges_move_them(db: &TestDb) {
    let dir = tempfile::tempdir().expect("dir");
    let crm = crm_with(db, dir.path(), 1 << 20).await;
    let ws = WorkspaceId::DEFAULT;
    let files = crm.workspace(ws).attachments();
    let leads = crm.workspace(ws).leads();
    let keep = lead(&crm, ws, "ana@example.com").await;
    let absorbed = lead(&crm, ws, "ana.lopez@example.com").await;
    let a = files.add(keep, "a.pdf", PDF).await.expect("add");
    let b = files.add(absorbed, "b.pdf", PDF).await.expect("add");
    leads
        .merge(
            keep,
            MergeInput {
                from: vec![absorbed],
                ..MergeInput::default()
            },
        )
        .await
        .expect("merge");
    let moved: Vec<_> = files
        .list(keep)
        .await
        .expect("list")
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(moved, [a.id, b.id], "the absorbed lead's file moved");
    assert_eq!(stored(dir.path()).await.len(), 2);

    leads.delete_confirmed(keep, true).await.expect("delete");
    assert!(
        stored(dir.path()).await.is_empty(),
        "no bytes outlive the lead"
    );
    assert_eq!(db.count("crm_attachments").await, 0);

    let contact = crm
        .workspace(ws)
        .contacts()
        .create(NewContact {
            first_name: "Ana".into(),
            ..NewContact::default()
        })
        .await
        .expect("contact");
    files.add(contact.id, "dni.pdf", PDF).await.expect("add");
    crm.workspace(ws)
        .contacts()
        .delete(contact.id)
        .await
        .expect("delete");
    assert!(
        stored(dir.path()).await.is_empty(),
        "no bytes outlive the contact"
    );

    // Bytes no row names (a crash between storing and writing the row): an hour
    // later, housekeeping finds and deletes them; a file with its row stays.
    let kept_lead = lead(&crm, ws, "bo@example.com").await;
    let kept = files.add(kept_lead, "kept.pdf", PDF).await.expect("add");
    let storage = FsStorage::new(dir.path().join("files"));
    let orphan = format!("{ws}/{}", uuid::Uuid::now_v7());
    let info = crm::storage::ObjectInfo {
        content_type: "application/pdf",
        file_name: "orphan.pdf",
    };
    storage.put(&orphan, PDF.into(), info).await.expect("put");
    // Files crm did not make are someone else's: never touched.
    std::fs::write(dir.path().join("files").join("readme.txt"), "not crm's").expect("write");
    let kept_key = stored(dir.path()).await;
    let purged = crm.housekeep(Housekeeping::default()).await.expect("pass");
    assert_eq!(
        purged.orphaned_files, 0,
        "too young: it may be an upload in flight"
    );
    // The files were written now (the wall clock); crm's clock moves past the grace.
    db.clock
        .set(chrono::Utc::now() + chrono::Duration::hours(2));
    let purged = crm.housekeep(Housekeeping::default()).await.expect("pass");
    assert_eq!(purged.orphaned_files, 1);
    let expected: Vec<String> = kept_key.into_iter().filter(|k| *k != orphan).collect();
    assert_eq!(stored(dir.path()).await, expected);
    assert!(expected.contains(&"readme.txt".to_owned()) && expected.len() == 2);
    assert_eq!(
        &files.read(kept_lead, kept.id).await.expect("read")[..],
        PDF
    );
    crm.close().await;
}

async fn two_uploads_cannot_both_take_the_last_of_the_quota(db: &TestDb) {
    let dir = tempfile::tempdir().expect("dir");
    let quota = (PDF.len() * 2) as u64;
    let crm = crm_with(db, dir.path(), quota).await;
    let ws = WorkspaceId::DEFAULT;
    let files = crm.workspace(ws).attachments();
    let lead_id = lead(&crm, ws, "ana@example.com").await;
    files.add(lead_id, "one.pdf", PDF).await.expect("add");
    // Room for one more: four at once, each on a lead of its own (so no lead row
    // lock orders them: the workspace's does), one wins.
    let mut others = Vec::new();
    for i in 0..4 {
        others.push(lead(&crm, ws, &format!("other{i}@example.com")).await);
    }
    let results =
        futures_util::future::join_all(others.iter().map(|l| files.add(*l, "more.pdf", PDF))).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in results.iter().filter(|r| r.is_err()) {
        match r {
            Err(Error::InvalidState { code, .. }) => assert_eq!(*code, "storage_quota_exceeded"),
            other => panic!("expected the quota, got {other:?}"),
        }
    }
    assert_eq!(files.usage().await.expect("usage"), quota);
    assert_eq!(
        stored(dir.path()).await.len(),
        2,
        "refused uploads left no bytes"
    );
    crm.close().await;
}
