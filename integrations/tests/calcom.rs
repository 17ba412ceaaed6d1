//! Cal.com inbound bookings into a real SQLite store, with the shared vector.

use crm_core::leads::{ActivityKind, LeadQuery};
use crm_core::{Crm, Error};
use crm_integrations::calcom::{receive, Received};
use hmac::{Hmac, Mac};
use serde_json::Value;

fn vector() -> (String, String, String) {
    let path = format!(
        "{}/../tests/vectors/calcom.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("vectors")).expect("json");
    let c = &doc["cases"][0];
    let s = |k: &str| c[k].as_str().expect("field").to_owned();
    (s("secret"), s("body"), s("header"))
}

fn sign(secret: &str, body: &str) -> String {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
    m.update(body.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn crm() -> (Crm, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("cal.db").display());
    (Crm::connect(&url).await.expect("connect"), dir)
}

#[tokio::test]
async fn bookings_become_leads_once_per_trigger() {
    let (crm, _dir) = crm().await;
    let (secret, body, header) = vector();
    let first = receive(&crm.leads(), &secret, Some(&header), body.as_bytes())
        .await
        .expect("receive");
    let Received::Captured {
        lead,
        created: true,
    } = first
    else {
        panic!("{first:?}")
    };
    let detail = crm.leads().get(lead).await.expect("lead");
    assert_eq!(detail.lead.name, "Jo Park");
    assert_eq!(
        detail.lead.email.as_ref().map(|e| e.as_str()),
        Some("jo@example.com")
    );
    assert_eq!(detail.lead.source.as_deref(), Some("cal_com"));
    assert_eq!(detail.activities[0].kind, ActivityKind::Booking);
    assert_eq!(
        detail.activities[0].description.as_deref(),
        Some("Intro call — booked for 2026-11-25T15:00:00Z")
    );

    assert_eq!(
        receive(&crm.leads(), &secret, Some(&header), body.as_bytes())
            .await
            .expect("again"),
        Received::Duplicate
    );

    let moved = body.replace("BOOKING_CREATED", "BOOKING_RESCHEDULED");
    let r = receive(
        &crm.leads(),
        &secret,
        Some(&sign(&secret, &moved)),
        moved.as_bytes(),
    )
    .await
    .expect("reschedule");
    assert_eq!(
        r,
        Received::Captured {
            lead,
            created: false
        }
    );
    assert_eq!(
        crm.leads().get(lead).await.expect("lead").activities.len(),
        2
    );

    let other = body.replace("BOOKING_CREATED", "MEETING_ENDED");
    let r = receive(
        &crm.leads(),
        &secret,
        Some(&sign(&secret, &other)),
        other.as_bytes(),
    )
    .await
    .expect("ignored");
    assert_eq!(r, Received::Ignored("MEETING_ENDED".into()));

    // An attendee without a name is named after their email.
    let nameless = body
        .replace("\"name\":\"Jo Park\",", "")
        .replace("bk_123", "bk_456")
        .replace("jo@example.com", "kim.lee@example.com");
    let Received::Captured { lead, .. } = receive(
        &crm.leads(),
        &secret,
        Some(&sign(&secret, &nameless)),
        nameless.as_bytes(),
    )
    .await
    .expect("nameless") else {
        panic!("not captured")
    };
    assert_eq!(
        crm.leads().get(lead).await.expect("lead").lead.name,
        "kim.lee"
    );
}

#[tokio::test]
async fn bad_bookings_write_nothing() {
    let (crm, _dir) = crm().await;
    let (secret, body, header) = vector();
    for sig in [
        None,
        Some("no-secret-provided"),
        Some(&*format!("sha256={header}")),
    ] {
        assert!(matches!(
            receive(&crm.leads(), &secret, sig, body.as_bytes()).await,
            Err(Error::WebhookVerification(_))
        ));
    }
    for odd in ["[]", "{\"triggerEvent\":\"BOOKING_CREATED\",\"payload\":{\"uid\":\"x\",\"attendees\":[]}}", "{\"triggerEvent\":\"BOOKING_CREATED\",\"payload\":{\"attendees\":[{\"email\":\"a@b.co\"}]}}"] {
        let err = receive(&crm.leads(), &secret, Some(&sign(&secret, odd)), odd.as_bytes()).await.expect_err("must fail");
        assert!(matches!(err, Error::Validation { .. }), "{odd}: {err:?}");
    }
    assert!(crm
        .leads()
        .list(&LeadQuery::default())
        .await
        .expect("list")
        .items
        .is_empty());
}
