//! The storage plugins: the filesystem and S3 (against the local S3 server the test
//! command starts, `CRM_TEST_S3_URL`) pass one conformance suite, and attachments
//! work end to end on S3 with presigned links, on both database backends.

use std::time::Duration;

use crm::storage::{FsStorage, ObjectInfo, Storage};
use crm::Error;

const INFO: ObjectInfo<'static> = ObjectInfo {
    content_type: "application/pdf",
    file_name: "contrato año.pdf",
};

/// What every backend must do.
async fn storage_conformance(s: &dyn Storage) {
    let ws = uuid::Uuid::now_v7();
    let (a, b) = (format!("{ws}/a"), format!("{ws}/b"));
    assert!(matches!(s.get(&a).await, Err(Error::NotFound { .. })));
    assert!(s.list(&format!("{ws}/")).await.expect("list").is_empty());

    s.put(&a, "first".into(), INFO).await.expect("put");
    s.put(&a, "second, longer".into(), INFO)
        .await
        .expect("overwrite");
    s.put(&b, vec![0u8; 100_000].into(), INFO)
        .await
        .expect("put");
    let read = |key: String| async move {
        crm::storage::collect(s.get(&key).await.expect("get"), 0)
            .await
            .expect("bytes")
    };
    assert_eq!(&read(a.clone()).await[..], b"second, longer");
    assert_eq!(read(b.clone()).await.len(), 100_000);

    let mut listed: Vec<(String, u64)> = s
        .list(&format!("{ws}/"))
        .await
        .expect("list")
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    listed.sort();
    assert_eq!(listed, [(a.clone(), 14), (b.clone(), 100_000)]);
    // A prefix that ends inside a name matches by characters, not by whole parts.
    let partial: Vec<String> = s
        .list(&format!("{ws}/a"))
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(partial, std::slice::from_ref(&a));
    assert!(s.list("").await.expect("list").len() >= 2);

    s.delete(&a).await.expect("delete");
    s.delete(&a)
        .await
        .expect("deleting what is gone is not an error");
    assert!(matches!(s.get(&a).await, Err(Error::NotFound { .. })));
    assert_eq!(s.list(&format!("{ws}/")).await.expect("list").len(), 1);

    for bad in ["../escape", "/abs", "a//b", "UPPER/x", "a/./b", ""] {
        assert!(
            matches!(s.put(bad, "x".into(), INFO).await, Err(Error::Storage(_))),
            "{bad:?}"
        );
        assert!(
            matches!(s.get(bad).await, Err(Error::Storage(_))),
            "{bad:?}"
        );
        assert!(
            matches!(s.delete(bad).await, Err(Error::Storage(_))),
            "{bad:?}"
        );
    }
    s.delete(&b).await.expect("delete");
}

#[tokio::test]
async fn the_filesystem_storage_conforms_and_stays_under_its_root() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("files");
    let fs = FsStorage::new(&root);
    storage_conformance(&fs).await;
    assert!(fs
        .signed_url("w/a", Duration::from_secs(60))
        .await
        .expect("url")
        .is_none());
    // Nothing was ever written outside the root.
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(outside, ["files"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the server's user may read the files");
    }
}

#[cfg(feature = "s3")]
mod s3 {
    use super::*;
    use crate::common::TestDb;
    use crm::integrations::s3::S3Storage;
    use crm::leads::NewLead;
    use crm::WorkspaceId;

    conformance!(attachments_live_in_the_bucket_with_presigned_links);

    const PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n";

    fn endpoint() -> String {
        std::env::var("CRM_TEST_S3_URL").expect(
            "CRM_TEST_S3_URL is not set: run scripts/test.sh, which starts a local S3 server",
        )
    }

    /// A fresh bucket on the local server (which takes unsigned requests).
    async fn bucket() -> String {
        let name = format!("crm-test-{}", uuid::Uuid::now_v7().simple());
        let res = reqwest::Client::new()
            .put(format!("{}/{name}", endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(res.status().is_success(), "{}", res.status());
        name
    }

    async fn storage(prefix: &str) -> S3Storage {
        S3Storage::builder(bucket().await)
            .endpoint(endpoint())
            .region("us-east-1")
            .credentials("test", "test")
            .prefix(prefix)
            .build()
            .expect("storage")
    }

    #[tokio::test]
    async fn the_s3_storage_conforms() {
        storage_conformance(&storage("").await).await;
        storage_conformance(&storage("prod/eu/").await).await;
    }

    #[tokio::test]
    async fn presigned_links_serve_the_file_as_a_download() {
        let s = storage("t/").await;
        let key = format!("{}/f", uuid::Uuid::now_v7());
        s.put(&key, PDF.into(), INFO).await.expect("put");
        let url = s
            .signed_url(&key, Duration::from_secs(60))
            .await
            .expect("sign")
            .expect("S3 has presigned links");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        let res = reqwest::get(&url).await.expect("download");
        assert_eq!(res.status(), 200);
        let h = res.headers().clone();
        assert_eq!(h["content-type"], "application/pdf");
        assert_eq!(
            h["content-disposition"],
            "attachment; filename=\"contrato a_o.pdf\"; filename*=UTF-8''contrato%20a%C3%B1o.pdf"
        );
        assert_eq!(&res.bytes().await.expect("body")[..], PDF);
    }

    #[tokio::test]
    async fn a_bucket_that_cannot_be_reached_is_a_storage_error() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let s = S3Storage::builder("nowhere")
            .endpoint(format!("http://127.0.0.1:{closed}"))
            .credentials("test", "test")
            .build()
            .expect("storage");
        let r = s.put("w/a", "x".into(), INFO).await;
        assert!(matches!(r, Err(Error::Storage(_))), "{r:?}");
        for bad in ["no-slash-end", "Upper/", "../"] {
            let r = S3Storage::builder("b").prefix(bad).build();
            assert!(matches!(r, Err(Error::Config(_))), "{bad:?}");
        }
    }

    async fn attachments_live_in_the_bucket_with_presigned_links(db: &TestDb) {
        let s3 = storage("crm/").await;
        let crm = db.builder().storage(s3).connect().await.expect("connect");
        let ws = WorkspaceId::DEFAULT;
        let files = crm.workspace(ws).attachments();
        let lead = crm
            .workspace(ws)
            .leads()
            .create(NewLead {
                name: "Ana".into(),
                email: Some("ana@example.com".into()),
                ..NewLead::default()
            })
            .await
            .expect("lead");
        let a = files.add(lead.id, "dni.pdf", PDF).await.expect("add");
        assert_eq!(&files.read(lead.id, a.id).await.expect("read")[..], PDF);
        let storage = crm.storage().expect("storage");
        let keys: Vec<String> = storage
            .list("")
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert!(
            keys.len() == 1 && keys[0].starts_with(&format!("{ws}/")),
            "one object under the workspace's prefix (the storage's own prefix hidden): {keys:?}"
        );

        let link = files.link(lead.id, a.id, None).await.expect("link");
        assert!(link.url.starts_with(&endpoint()), "{}", link.url);
        let res = reqwest::get(&link.url).await.expect("download");
        assert_eq!(res.status(), 200);
        assert_eq!(&res.bytes().await.expect("body")[..], PDF);

        // Orphans in the bucket are found by housekeeping once an hour old.
        let orphan = format!("{ws}/{}", uuid::Uuid::now_v7());
        storage.put(&orphan, PDF.into(), INFO).await.expect("put");
        db.clock
            .set(chrono::Utc::now() + chrono::Duration::hours(2));
        let purged = crm
            .housekeep(crm::housekeeping::Housekeeping::default())
            .await
            .expect("pass");
        assert_eq!(purged.orphaned_files, 1);

        crm.workspace(ws)
            .leads()
            .delete(lead.id)
            .await
            .expect("delete");
        assert!(storage.list("").await.expect("list").is_empty());
        crm.close().await;
    }
}
