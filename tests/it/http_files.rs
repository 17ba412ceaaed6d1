//! Attachments over HTTP: uploads (multipart), the 413/415/409/503 answers,
//! downloads, signed links and their expiry, scopes and tenants. Both backends.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request};
use crm::attachments::AttachmentRules;
use crm::leads::NewLead;
use crm::storage::FsStorage;
use crm::{LeadId, Quotas, WorkspaceId};

use crate::common::TestDb;
use crate::http::{bearer, config, get, req as request, with_cookie, App};

conformance!(files_over_http);

const PDF: &[u8] = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n";
const BOUNDARY: &str = "crm-test-boundary-7d3f";

/// A multipart body with one part named `part`, file name `name`.
fn form(part: &str, name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{part}\"; filename=\"{name}\"\r\n\
         Content-Type: application/pdf\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn upload(path: &str, key: &str, body: Vec<u8>) -> Request<Body> {
    bearer(request(Method::POST, path), key)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body))
        .expect("request")
}

fn authed(method: Method, path: &str, key: &str) -> Request<Body> {
    bearer(request(method, path), key)
        .body(Body::empty())
        .expect("request")
}

async fn app(db: &TestDb, dir: &std::path::Path, quota: u64) -> App {
    let dir = dir.to_owned();
    App::with(
        db,
        move |b| {
            b.storage(FsStorage::new(dir))
                .attachment_rules(AttachmentRules {
                    max_file_size: 1024,
                    ..AttachmentRules::default()
                })
                .quotas(Quotas {
                    attachment_bytes: quota,
                    ..Quotas::default()
                })
        },
        config(),
    )
    .await
}

async fn lead(app: &App, ws: WorkspaceId, email: &str) -> LeadId {
    app.crm
        .workspace(ws)
        .leads()
        .create(NewLead {
            name: "Ana".into(),
            email: Some(email.into()),
            ..NewLead::default()
        })
        .await
        .expect("lead")
        .id
}

async fn files_over_http(db: &TestDb) {
    let dir = tempfile::tempdir().expect("dir");
    let app = app(db, dir.path(), (PDF.len() * 2) as u64).await;
    let ws = WorkspaceId::DEFAULT;
    let key = app.key(&["leads:read", "leads:write"]).await;
    let id = lead(&app, ws, "ana@example.com").await;
    let files = format!("/api/v1/leads/{id}/attachments");

    // Upload: the name loses its directories, the type comes from the bytes.
    let res = app
        .send(upload(
            &files,
            &key,
            form("file", "../../contrato.pdf", PDF),
        ))
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["name"], "contrato.pdf");
    assert_eq!(res.body["content_type"], "application/pdf");
    assert_eq!(res.body["size"], PDF.len());
    assert_eq!(
        res.body["uploaded_by"].as_str().map(|s| &s[..8]),
        Some("api_key:")
    );
    let file_id = res.body["id"].as_str().expect("id").to_owned();

    let res = app.send(authed(Method::GET, &files, &key)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body.as_array().map(Vec::len), Some(1));
    let one = format!("{files}/{file_id}");
    assert_eq!(
        app.send(authed(Method::GET, &one, &key)).await.body["id"],
        file_id
    );

    // Download: the bytes, as an attachment, never sniffed or rendered.
    let res = app
        .send(authed(Method::GET, &format!("{one}/content"), &key))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text.as_bytes(), PDF, "the PDF fixture is ASCII");
    assert_eq!(res.header("content-type"), "application/pdf");
    assert_eq!(res.header("content-length"), PDF.len().to_string());
    assert_eq!(
        res.header("content-disposition"),
        "attachment; filename=\"contrato.pdf\"; filename*=UTF-8''contrato.pdf"
    );
    assert_eq!(res.header("x-content-type-options"), "nosniff");
    assert!(res.header("content-security-policy").starts_with("sandbox"));

    // 413 from the declared length, before the body is read: a body that never
    // ends would hang the test if the server read it.
    let endless = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let req = bearer(request(Method::POST, &files), &key)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header(header::CONTENT_LENGTH, "10000000")
        .body(Body::from_stream(endless))
        .expect("request");
    let res = tokio::time::timeout(Duration::from_secs(10), app.send(req))
        .await
        .expect("answered without reading the body");
    res.problem(413, "file_too_large");
    // A chunked body (no length) is cut off once the file passes the limit.
    let mut big = b"%PDF-1.7\n".to_vec();
    big.resize(1025, b' ');
    let chunks = vec![Ok::<_, std::io::Error>(axum::body::Bytes::from(form(
        "file", "big.pdf", &big,
    )))];
    let req = bearer(request(Method::POST, &files), &key)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    app.send(req).await.problem(413, "file_too_large");

    // 415 names what the bytes are; a body that is not a form names the header.
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(64, 0);
    let res = app
        .send(upload(&files, &key, form("file", "invoice.pdf", &elf)))
        .await;
    res.problem(415, "unsupported_media_type");
    assert!(
        res.text.contains("application/x-executable"),
        "{}",
        res.text
    );
    let not_form = bearer(request(Method::POST, &files), &key)
        .header(header::CONTENT_TYPE, "application/pdf")
        .body(Body::from(PDF))
        .expect("request");
    app.send(not_form)
        .await
        .problem(415, "unsupported_media_type");
    // 422: no file part, another part, an empty file.
    let res = app
        .send(upload(&files, &key, form("document", "a.pdf", PDF)))
        .await;
    res.problem(422, "validation_failed");
    let res = app
        .send(upload(&files, &key, form("file", "empty.pdf", b"")))
        .await;
    res.problem(422, "validation_failed");
    assert_eq!(res.body["errors"][0]["field"], "file");

    // 409 past the quota (room for one more file, not two).
    let res = app
        .send(upload(&files, &key, form("file", "b.pdf", PDF)))
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    app.send(upload(&files, &key, form("file", "c.pdf", PDF)))
        .await
        .problem(409, "storage_quota_exceeded");

    // Scopes, and another workspace's lead.
    let reader = app.key(&["leads:read"]).await;
    app.send(upload(&files, &reader, form("file", "d.pdf", PDF)))
        .await
        .problem(403, "forbidden");
    app.send(authed(Method::DELETE, &one, &reader))
        .await
        .problem(403, "forbidden");
    let contacts_only = app.key(&["contacts:read", "contacts:write"]).await;
    app.send(authed(Method::GET, &files, &contacts_only))
        .await
        .problem(403, "forbidden");
    let other = app.crm.create_workspace("Other").await.expect("workspace");
    let foreign = lead(&app, other, "eve@example.com").await;
    app.send(authed(
        Method::GET,
        &format!("/api/v1/leads/{foreign}/attachments"),
        &key,
    ))
    .await
    .problem(404, "not_found");
    app.send(authed(
        Method::GET,
        &format!("/api/v1/leads/{foreign}/attachments/{file_id}/content"),
        &key,
    ))
    .await
    .problem(404, "not_found");

    // A signed link works without credentials until it expires.
    let res = app
        .send(
            bearer(request(Method::POST, &format!("{one}/link")), &key)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"expires_in": 60}"#))
                .expect("request"),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let url = res.body["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with("/api/files?token="), "{url}");
    let res = app.send(get(&url)).await;
    assert_eq!((res.status.as_u16(), res.text.as_bytes()), (200, PDF));
    db.clock.advance(chrono::Duration::seconds(61));
    app.send(get(&url)).await.problem(401, "unauthorized");
    app.send(get("/api/files?token=not-a-token"))
        .await
        .problem(401, "unauthorized");

    // The admin twin, as a signed-in user.
    let cookie = app.admin().await;
    let res = app
        .send(
            with_cookie(
                request(Method::GET, &format!("/api/admin/leads/{id}/attachments")),
                &cookie,
            )
            .body(Body::empty())
            .expect("request"),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body.as_array().map(Vec::len), Some(2));

    // Delete: 204, then gone.
    assert_eq!(
        app.send(authed(Method::DELETE, &one, &key)).await.status,
        204
    );
    app.send(authed(Method::GET, &one, &key))
        .await
        .problem(404, "not_found");

    // 503 when the storage cannot write, and nothing written.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"a file where a directory should be").expect("write");
    let broken = App::with(db, |b| b.storage(FsStorage::new(blocked)), config()).await;
    let bkey = broken.key(&["leads:write"]).await;
    let before = db.count("crm_attachments").await;
    broken
        .send(upload(&files, &bkey, form("file", "x.pdf", PDF)))
        .await
        .problem(503, "storage_unavailable");
    assert_eq!(db.count("crm_attachments").await, before);
}
