//! Webhook endpoints and the fan-out of events into jobs, on SQLite and Postgres.

use crate::common::TestDb;
use chrono::Duration;
use crm::leads::{LeadPatch, NewLead};
use crm::webhooks::{EndpointPatch, NewEndpoint};
use crm::{Crm, EndpointId, Error, WorkspaceId};

conformance!(
    endpoints_keep_their_secret_sealed,
    bad_endpoints_are_refused_and_write_nothing,
    events_fan_out_to_matching_enabled_endpoints,
    rotation_signs_with_both_secrets_for_a_day,
    an_update_does_not_undo_an_auto_disable,
);

async fn crm(db: &TestDb) -> Crm {
    db.builder()
        .webhook_allow_networks(["127.0.0.1", "::1"])
        .connect()
        .await
        .expect("connect")
}

fn endpoint(url: &str, types: &[&str]) -> NewEndpoint {
    NewEndpoint {
        url: url.into(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        ..Default::default()
    }
}

async fn endpoints_keep_their_secret_sealed(db: &TestDb) {
    let crm = crm(db).await;
    let hooks = crm
        .workspace(WorkspaceId::DEFAULT)
        .webhooks()
        .with_actor("user:1");
    let created = hooks
        .create(endpoint("http://127.0.0.1:9/hook", &[]))
        .await
        .expect("create");
    let secret = created.secret.expose().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created.endpoint.event_types, ["*"]);
    assert!(created.endpoint.enabled);
    assert_eq!(
        hooks
            .secret(created.endpoint.id)
            .await
            .expect("secret")
            .expose(),
        secret
    );
    assert!(!format!("{created:?}").contains(&secret[6..]));
    let listed = serde_json::to_string(&hooks.list().await.expect("list")).expect("json");
    assert!(!listed.contains(&secret[6..]));
    // At rest the column holds the sealed form only.
    db.execute("CREATE TABLE secrets AS SELECT secret FROM crm_webhook_endpoints")
        .await;
    let stored = db.scalar_text("SELECT secret FROM secrets").await;
    assert!(
        stored.starts_with("v1.test.") && !stored.contains(&secret[6..]),
        "{stored}"
    );

    let own = hooks
        .create(NewEndpoint {
            secret: Some("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()),
            ..endpoint("http://[::1]:9/", &["lead.*"])
        })
        .await
        .expect("own secret");
    assert_eq!(
        own.secret.expose(),
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
    );

    let updated = hooks
        .update(
            created.endpoint.id,
            EndpointPatch {
                description: Some(Some("Zapier".into())),
                event_types: Some(vec!["lead.created".into(), "lead.status_changed".into()]),
                enabled: Some(false),
                rate_limit_per_minute: Some(Some(60)),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.description.as_deref(), Some("Zapier"));
    assert!(!updated.enabled);
    assert_eq!(hooks.get(created.endpoint.id).await.expect("get"), updated);
    hooks.delete(own.endpoint.id).await.expect("delete");
    assert!(matches!(
        hooks.get(own.endpoint.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        hooks.delete(EndpointId::new()).await,
        Err(Error::NotFound { .. })
    ));
    let actions: Vec<String> = crm
        .workspace(WorkspaceId::DEFAULT)
        .audit_log(None, 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        [
            "webhook_endpoint.created",
            "webhook_endpoint.created",
            "webhook_endpoint.updated",
            "webhook_endpoint.deleted"
        ]
    );

    // Another workspace sees none of it; without a master key nothing can be sealed.
    let other = crm.create_workspace("Other").await.expect("ws");
    assert!(crm
        .workspace(other)
        .webhooks()
        .list()
        .await
        .expect("list")
        .is_empty());
    assert!(matches!(
        crm.workspace(other)
            .webhooks()
            .get(created.endpoint.id)
            .await,
        Err(Error::NotFound { .. })
    ));
    let keyless = Crm::builder()
        .database_url(&db.url)
        .connect()
        .await
        .expect("connect");
    let r = keyless
        .workspace(WorkspaceId::DEFAULT)
        .webhooks()
        .create(endpoint("http://127.0.0.1:9/", &[]))
        .await;
    assert!(matches!(r, Err(Error::Config(_))));
}

async fn bad_endpoints_are_refused_and_write_nothing(db: &TestDb) {
    let strict = db.crm().await; // no allow-list: loopback is refused
    let hooks = strict.workspace(WorkspaceId::DEFAULT).webhooks();
    for (url, why) in [
        ("ftp://example.com/x", "scheme"),
        ("https://user:pw@example.com/", "credentials"),
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://localhost/", "loopback by name"),
        ("http://10.1.2.3/", "private"),
        ("http://169.254.169.254/latest", "link-local"),
        ("http://[::ffff:192.168.0.1]/", "mapped private"),
        ("not a url", "shape"),
    ] {
        let err = hooks.create(endpoint(url, &[])).await.expect_err(why);
        assert_eq!(err.field_errors()[0].field, "url", "{why}");
    }
    // The SSRF refusal says "not a public address", never which address the name
    // resolved to (the operator's internal DNS answers stay private).
    let err = hooks
        .create(endpoint("http://localhost:9/", &[]))
        .await
        .expect_err("loopback by name");
    let message = &err.field_errors()[0].message;
    assert!(message.contains("not a public address"), "{message}");
    for leaked in ["127.0.0.1", "::1"] {
        assert!(!message.contains(leaked), "{message}");
    }
    let err = hooks
        .create(NewEndpoint {
            url: "http://127.0.0.1/".into(),
            event_types: vec![
                "lead.created".into(),
                "lead.exploded".into(),
                "invoice.*".into(),
            ],
            rate_limit_per_minute: Some(0),
            secret: Some("whsec_tooshort".into()),
            description: Some("x".repeat(501)),
            ..Default::default()
        })
        .await
        .expect_err("must fail");
    let fields: Vec<&str> = err
        .field_errors()
        .iter()
        .map(|f| f.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "url",
            "description",
            "event_types[1]",
            "event_types[2]",
            "rate_limit_per_minute",
            "secret"
        ]
    );
    assert_eq!(db.count("crm_webhook_endpoints").await, 0);
    assert_eq!(db.count("crm_audit_log").await, 0);
}

async fn events_fan_out_to_matching_enabled_endpoints(db: &TestDb) {
    let crm = crm(db).await;
    let hooks = crm.workspace(WorkspaceId::DEFAULT).webhooks();
    hooks
        .create(endpoint("http://127.0.0.1:9/all", &["lead.*"]))
        .await
        .expect("create");
    hooks
        .create(endpoint(
            "http://127.0.0.1:9/status",
            &["lead.status_changed"],
        ))
        .await
        .expect("create");
    let off = hooks
        .create(NewEndpoint {
            enabled: Some(false),
            ..endpoint("http://127.0.0.1:9/off", &["*"])
        })
        .await
        .expect("create");
    let other = crm.create_workspace("Other").await.expect("ws");
    crm.workspace(other)
        .webhooks()
        .create(endpoint("http://127.0.0.1:9/other", &["*"]))
        .await
        .expect("create");

    let lead = crm
        .leads()
        .create(NewLead {
            name: "Ana".into(),
            email: Some("ana@example.com".into()),
            ..Default::default()
        })
        .await
        .expect("create");
    assert_eq!(
        db.count("crm_jobs").await,
        1,
        "lead.created → the lead.* endpoint only"
    );
    crm.leads()
        .update(
            lead.id,
            LeadPatch {
                status: Some("won".into()),
                ..Default::default()
            },
        )
        .await
        .expect("update");
    // lead.status_changed → both; lead.updated → lead.* only.
    assert_eq!(db.count("crm_jobs").await, 4);
    assert_eq!(
        db.count("crm_jobs WHERE status = 'pending' AND kind = 'webhook' AND attempts = 0")
            .await,
        4
    );

    hooks
        .update(
            off.endpoint.id,
            EndpointPatch {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("enable");
    crm.leads().delete(lead.id).await.expect("delete");
    assert_eq!(
        db.count("crm_jobs").await,
        6,
        "lead.deleted → lead.* and the re-enabled *"
    );
    hooks
        .delete(off.endpoint.id)
        .await
        .expect("delete endpoint");
    assert_eq!(db.count("crm_jobs").await, 5, "its pending jobs go with it");
}

async fn rotation_signs_with_both_secrets_for_a_day(db: &TestDb) {
    let crm = crm(db).await;
    let hooks = crm.workspace(WorkspaceId::DEFAULT).webhooks();
    let created = hooks
        .create(endpoint("http://127.0.0.1:9/", &[]))
        .await
        .expect("create");
    let id = created.endpoint.id;
    assert_eq!(hooks.signing_secrets(id).await.expect("secrets").len(), 1);
    let new = hooks.rotate_secret(id).await.expect("rotate");
    assert_ne!(new.expose(), created.secret.expose());
    assert_eq!(
        hooks.secret(id).await.expect("secret").expose(),
        new.expose()
    );
    let both = hooks.signing_secrets(id).await.expect("secrets");
    let texts: Vec<String> = both
        .iter()
        .map(|s| s.expose().expose().to_owned())
        .collect();
    assert_eq!(
        texts,
        [new.expose().to_owned(), created.secret.expose().to_owned()]
    );
    db.clock.advance(Duration::hours(24));
    assert_eq!(
        hooks.signing_secrets(id).await.expect("secrets").len(),
        1,
        "the overlap ends after 24 h"
    );
}

/// Issue 14, item 4: `update` read the endpoint, then wrote the whole row back, so a
/// description change racing the dispatcher's auto-disable re-enabled an endpoint
/// that had just failed ten times. The disable is held open in a transaction of its
/// own while the update runs; the update must wait for it and keep it.
async fn an_update_does_not_undo_an_auto_disable(db: &TestDb) {
    let crm = crm(db).await;
    let hooks = crm.workspace(WorkspaceId::DEFAULT).webhooks();
    let ep = hooks
        .create(endpoint("http://127.0.0.1:9/hook", &[]))
        .await
        .expect("create")
        .endpoint;
    let held = db
        .hold(
            "UPDATE crm_webhook_endpoints SET enabled = false, consecutive_failures = 10, \
             disabled_reason = 'disabled after 10 failures'",
        )
        .await;
    let h = hooks.clone();
    let update = tokio::spawn(async move {
        h.update(
            ep.id,
            EndpointPatch {
                description: Some(Some("ERP sync".into())),
                ..Default::default()
            },
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    held.commit().await;
    let updated = update.await.expect("join").expect("update");
    let now = hooks.get(ep.id).await.expect("get");
    assert_eq!(now, updated);
    assert!(!now.enabled, "the auto-disable was undone");
    assert_eq!(now.consecutive_failures, 10);
    assert_eq!(
        now.disabled_reason.as_deref(),
        Some("disabled after 10 failures")
    );
    assert_eq!(now.description.as_deref(), Some("ERP sync"));
}
