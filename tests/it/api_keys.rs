//! API keys and the rate limiter: the conformance suite on SQLite and Postgres, and
//! the shared budget of two instances on one Postgres.

use std::time::Duration as StdDuration;

use crate::common::TestDb;
use chrono::Duration;
use crm::api_keys::{ApiKeyPatch, NewApiKey};
use crm::{ApiKeyId, AuthFailure, Crm, Error, WorkspaceId};

conformance!(
    create_shows_the_secret_once,
    bad_input_is_refused_and_writes_nothing,
    verify_returns_scopes_or_says_why_not,
    malformed_keys_are_refused_before_the_database,
    rotation_keeps_the_old_key_for_the_grace_period,
    other_instances_see_a_revoke_within_the_ttl,
    last_used_at_is_written_at_most_once_a_minute,
    keys_belong_to_one_workspace,
    the_rate_limiter_admits_the_policy,
);

// The tenant tests again, behind row-level security.
with_rls!(keys_belong_to_one_workspace,);

fn new_key(name: &str, scopes: &[&str]) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
    }
}

fn reason(r: crm::Result<impl std::fmt::Debug>) -> AuthFailure {
    match r {
        Err(Error::Unauthorized { reason }) => reason,
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

async fn create_shows_the_secret_once(db: &TestDb) {
    let crm = db.crm().await;
    let keys = crm
        .workspace(WorkspaceId::DEFAULT)
        .api_keys()
        .with_actor("user:1");
    let created = keys
        .create(new_key(
            "Zapier",
            &["leads:read", "leads:write", "leads:read"],
        ))
        .await
        .expect("create");
    let secret = created.secret.expose().to_owned();
    assert!(secret.starts_with("crm_"));
    assert_eq!(secret.len(), 42);
    assert_eq!(created.key.display_prefix, secret[..12]);
    assert_eq!(
        created
            .key
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
        ["leads:read", "leads:write"]
    );
    assert_eq!(created.key.created_by.as_deref(), Some("user:1"));
    assert!(
        !format!("{created:?}").contains(&secret),
        "Debug never shows the secret"
    );

    let listed = keys.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], created.key);
    let json = serde_json::to_string(&listed).expect("json");
    assert!(
        !json.contains(&secret[4..]),
        "the secret is not stored or listed"
    );
    assert_eq!(keys.get(created.key.id).await.expect("get"), created.key);
    assert!(matches!(
        keys.get(ApiKeyId::new()).await,
        Err(Error::NotFound { .. })
    ));

    let renamed = keys
        .update(
            created.key.id,
            ApiKeyPatch {
                name: Some("Zapier prod".into()),
                scopes: Some(vec!["*".into()]),
            },
        )
        .await
        .expect("update");
    assert_eq!(renamed.name, "Zapier prod");
    assert!(crm
        .verify_api_key(&secret)
        .await
        .expect("verify")
        .allows("webhooks:delete"));

    let audit = crm
        .workspace(WorkspaceId::DEFAULT)
        .audit_log(None, 10)
        .await
        .expect("audit");
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["api_key.created", "api_key.updated"]);
    assert_eq!(audit[0].actor.as_deref(), Some("user:1"));
    assert_eq!(audit[0].target_id, Some(created.key.id.to_string()));
    assert!(!serde_json::to_string(&audit)
        .expect("json")
        .contains(&secret[4..]));

    // Another prefix per Crm.
    let oct = db
        .builder()
        .api_key_prefix("oct")
        .connect()
        .await
        .expect("connect");
    let k = oct
        .workspace(WorkspaceId::DEFAULT)
        .api_keys()
        .create(new_key("x", &["*"]))
        .await
        .expect("create");
    assert!(k.secret.expose().starts_with("oct_"));
    assert!(oct.verify_api_key(k.secret.expose()).await.is_ok());
    assert_eq!(
        reason(crm.verify_api_key(k.secret.expose()).await),
        AuthFailure::MalformedKey
    );
}

async fn bad_input_is_refused_and_writes_nothing(db: &TestDb) {
    let crm = db.crm().await;
    let keys = crm.workspace(WorkspaceId::DEFAULT).api_keys();
    let past = crm.now() - Duration::seconds(1);
    let err = keys
        .create(NewApiKey {
            name: " ".into(),
            scopes: vec![
                "leads:read".into(),
                "Leads:read".into(),
                "leads: read".into(),
                "".into(),
                "invoices:*".into(),
            ],
            expires_at: Some(past),
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
            "name",
            "scopes[1]",
            "scopes[2]",
            "scopes[3]",
            "scopes[4]",
            "expires_at"
        ]
    );
    let err = keys
        .create(new_key("no scopes", &[]))
        .await
        .expect_err("must fail");
    assert_eq!(err.field_errors()[0].field, "scopes");
    let err = keys
        .clone()
        .with_actor("")
        .create(new_key("x", &["*"]))
        .await
        .expect_err("must fail");
    assert_eq!(err.field_errors()[0].field, "actor");
    let bad_prefix = db.builder().api_key_prefix("Bad_Prefix").connect().await;
    assert!(matches!(bad_prefix, Err(Error::Config(_))));

    let ok = keys
        .create(new_key("ok", &["leads:read"]))
        .await
        .expect("create");
    let err = keys
        .update(
            ok.key.id,
            ApiKeyPatch {
                name: None,
                scopes: Some(vec!["leads:read".into(), "everything".into()]),
            },
        )
        .await
        .expect_err("must fail");
    assert_eq!(err.field_errors()[0].field, "scopes[1]");
    assert!(matches!(
        keys.rotate(ok.key.id, Some(Duration::days(31))).await,
        Err(Error::Validation { .. })
    ));
    assert_eq!(db.count("crm_api_keys").await, 1);
    assert_eq!(db.count("crm_audit_log").await, 1);
}

async fn verify_returns_scopes_or_says_why_not(db: &TestDb) {
    let crm = db.crm().await;
    let keys = crm.workspace(WorkspaceId::DEFAULT).api_keys();
    let k = keys
        .create(new_key("reader", &["leads:*"]))
        .await
        .expect("create");
    let secret = k.secret.expose();

    let v = crm.verify_api_key(secret).await.expect("verify");
    assert_eq!((v.key_id, v.workspace_id), (k.key.id, WorkspaceId::DEFAULT));
    assert!(v.allows("leads:read") && v.allows("leads:delete"));
    assert!(!v.allows("webhooks:read"));
    assert!(matches!(v.require("webhooks:read"), Err(Error::Forbidden)));
    assert_eq!(crm.api_key_me(secret).await.expect("me").name, "reader");

    // Malformed: wrong prefix, length, alphabet, checksum.
    let mut bad_checksum = secret.to_owned();
    let last = bad_checksum.pop().expect("char");
    bad_checksum.push(if last == 'a' { 'b' } else { 'a' });
    for bad in [
        String::new(),
        secret.replacen("crm_", "oct_", 1),
        secret[..secret.len() - 1].to_owned(),
        format!("{secret}x"),
        secret.replacen(&secret[10..11], "-", 1),
        bad_checksum,
        format!("Bearer {secret}"),
    ] {
        assert_eq!(
            reason(crm.verify_api_key(&bad).await),
            AuthFailure::MalformedKey,
            "{bad:?}"
        );
    }
    // Well-formed but never issued.
    let other_db = Crm::connect("sqlite::memory:").await.expect("connect");
    let stranger = other_db
        .workspace(WorkspaceId::DEFAULT)
        .api_keys()
        .create(new_key("s", &["*"]))
        .await
        .expect("create");
    assert_eq!(
        reason(crm.verify_api_key(stranger.secret.expose()).await),
        AuthFailure::UnknownKey
    );

    // Expiry applies even to a cached key.
    let expiring = keys
        .create(NewApiKey {
            expires_at: Some(crm.now() + Duration::seconds(5)),
            ..new_key("short", &["leads:read"])
        })
        .await
        .expect("create");
    crm.verify_api_key(expiring.secret.expose())
        .await
        .expect("valid now");
    db.clock.advance(Duration::seconds(5));
    assert_eq!(
        reason(crm.verify_api_key(expiring.secret.expose()).await),
        AuthFailure::ExpiredKey
    );

    // A revoke applies at once in this process, cached or not.
    crm.verify_api_key(secret).await.expect("cached");
    let revoked = keys.revoke(k.key.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        reason(crm.verify_api_key(secret).await),
        AuthFailure::RevokedKey
    );
    // Issue 24: a revoked key is frozen. Before, `update` rewrote a revoked key's
    // scopes to `*` (and its audit trail with them).
    let frozen = |r: crm::Result<()>| {
        assert!(
            matches!(
                r,
                Err(Error::InvalidState {
                    code: "key_revoked",
                    ..
                })
            ),
            "{r:?}"
        )
    };
    // A second revoke (a retried DELETE) answers with the key as it is.
    assert_eq!(keys.revoke(k.key.id).await.expect("again"), revoked);
    frozen(keys.rotate(k.key.id, None).await.map(|_| ()));
    frozen(
        keys.update(
            k.key.id,
            ApiKeyPatch {
                name: Some("renamed".into()),
                scopes: Some(vec!["*".into()]),
            },
        )
        .await
        .map(|_| ()),
    );
    let now = keys.get(k.key.id).await.expect("get");
    assert_eq!(now, revoked, "the record is as it was revoked");
    let log = crm
        .workspace(WorkspaceId::DEFAULT)
        .audit_log(None, 100)
        .await
        .expect("audit");
    let entry = log
        .iter()
        .find(|a| a.action == "api_key.revoked")
        .expect("revoked entry");
    assert!(entry.details["scopes"].is_array(), "{:?}", entry.details);
    assert_eq!(
        log.iter().filter(|a| a.action == "api_key.revoked").count(),
        1
    );
}

async fn malformed_keys_are_refused_before_the_database(db: &TestDb) {
    let crm = db.crm().await;
    let k = crm
        .workspace(WorkspaceId::DEFAULT)
        .api_keys()
        .create(new_key("k", &["*"]))
        .await
        .expect("create");
    crm.close().await;
    // With the pool closed, any database access fails with a database error...
    assert!(matches!(
        crm.verify_api_key(k.secret.expose()).await,
        Err(Error::Database(_))
    ));
    // ...so a malformed key's answer shows the database was never asked.
    let mut changed = k.secret.expose().to_owned();
    changed.replace_range(5..6, if &changed[5..6] == "A" { "B" } else { "A" });
    assert_eq!(
        reason(crm.verify_api_key(&changed).await),
        AuthFailure::MalformedKey
    );
}

async fn rotation_keeps_the_old_key_for_the_grace_period(db: &TestDb) {
    let crm = db.crm().await;
    let keys = crm.workspace(WorkspaceId::DEFAULT).api_keys();
    let old = keys
        .create(new_key("ci", &["leads:read"]))
        .await
        .expect("create");
    crm.verify_api_key(old.secret.expose())
        .await
        .expect("cached before rotation");

    let new = keys.rotate(old.key.id, None).await.expect("rotate");
    assert_ne!(new.secret.expose(), old.secret.expose());
    assert_eq!(new.key.name, "ci");
    assert_eq!(new.key.scopes, old.key.scopes);
    let old_after = keys.get(old.key.id).await.expect("get");
    assert_eq!(old_after.replaced_by, Some(new.key.id));
    assert_eq!(old_after.expires_at, Some(crm.now() + Duration::hours(24)));

    db.clock.advance(Duration::hours(23));
    crm.verify_api_key(old.secret.expose())
        .await
        .expect("old key in grace");
    crm.verify_api_key(new.secret.expose())
        .await
        .expect("new key");
    db.clock.advance(Duration::hours(1));
    assert_eq!(
        reason(crm.verify_api_key(old.secret.expose()).await),
        AuthFailure::ExpiredKey
    );
    crm.verify_api_key(new.secret.expose())
        .await
        .expect("new key still");

    // Zero grace stops the old key at once.
    let newer = keys
        .rotate(new.key.id, Some(Duration::zero()))
        .await
        .expect("rotate");
    assert_eq!(
        reason(crm.verify_api_key(new.secret.expose()).await),
        AuthFailure::ExpiredKey
    );
    crm.verify_api_key(newer.secret.expose())
        .await
        .expect("newest");
    let audit = crm
        .workspace(WorkspaceId::DEFAULT)
        .audit_log(None, 10)
        .await
        .expect("audit");
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.action == "api_key.rotated")
            .count(),
        2
    );
}

async fn other_instances_see_a_revoke_within_the_ttl(db: &TestDb) {
    let admin = db.crm().await;
    let api = db.crm().await; // a second app instance: its own pool and cache
    let keys = admin.workspace(WorkspaceId::DEFAULT).api_keys();
    let k = keys
        .create(new_key("k", &["leads:read"]))
        .await
        .expect("create");
    api.verify_api_key(k.secret.expose())
        .await
        .expect("verified and cached");

    keys.revoke(k.key.id).await.expect("revoke");
    assert_eq!(
        reason(admin.verify_api_key(k.secret.expose()).await),
        AuthFailure::RevokedKey
    );
    db.clock.advance(Duration::seconds(9));
    api.verify_api_key(k.secret.expose())
        .await
        .expect("still cached in the other instance");
    db.clock.advance(Duration::seconds(1));
    assert_eq!(
        reason(api.verify_api_key(k.secret.expose()).await),
        AuthFailure::RevokedKey,
        "after the TTL"
    );

    // With the cache off, the revoke is seen at once.
    let uncached = db
        .builder()
        .api_key_cache_ttl(StdDuration::ZERO)
        .connect()
        .await
        .expect("connect");
    let k2 = keys
        .create(new_key("k2", &["leads:read"]))
        .await
        .expect("create");
    uncached
        .verify_api_key(k2.secret.expose())
        .await
        .expect("verify");
    keys.revoke(k2.key.id).await.expect("revoke");
    assert_eq!(
        reason(uncached.verify_api_key(k2.secret.expose()).await),
        AuthFailure::RevokedKey
    );
    assert!(db
        .builder()
        .api_key_cache_ttl(StdDuration::from_secs(11))
        .connect()
        .await
        .is_err());
}

async fn last_used(crm: &Crm, id: ApiKeyId, want: Option<chrono::DateTime<chrono::Utc>>) {
    // The write happens in a spawned task: wait for it (up to 5 s), not for a fixed time.
    for _ in 0..500 {
        let got = crm
            .workspace(WorkspaceId::DEFAULT)
            .api_keys()
            .get(id)
            .await
            .expect("get")
            .last_used_at;
        if got == want {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    panic!("last_used_at never became {want:?}");
}

async fn last_used_at_is_written_at_most_once_a_minute(db: &TestDb) {
    let crm = db.crm().await;
    let k = crm
        .workspace(WorkspaceId::DEFAULT)
        .api_keys()
        .create(new_key("k", &["*"]))
        .await
        .expect("create");
    assert_eq!(k.key.last_used_at, None);
    let t0 = crm.now();
    crm.verify_api_key(k.secret.expose()).await.expect("verify");
    last_used(&crm, k.key.id, Some(t0)).await;

    // Within the minute, cached or read anew: no further write.
    for step in [1, 5, 20, 30] {
        db.clock.advance(Duration::seconds(step));
        crm.verify_api_key(k.secret.expose()).await.expect("verify");
    }
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    last_used(&crm, k.key.id, Some(t0)).await;

    db.clock.advance(Duration::seconds(5)); // 61 s after t0
    let t1 = crm.now();
    crm.verify_api_key(k.secret.expose()).await.expect("verify");
    last_used(&crm, k.key.id, Some(t1)).await;
}

async fn keys_belong_to_one_workspace(db: &TestDb) {
    let crm = db.crm().await;
    let a = crm.create_workspace("A").await.expect("ws");
    let b = crm.create_workspace("B").await.expect("ws");
    let k = crm
        .workspace(a)
        .api_keys()
        .create(new_key("k", &["*"]))
        .await
        .expect("create");
    let in_b = crm.workspace(b).api_keys();
    assert!(in_b.list().await.expect("list").is_empty());
    assert!(matches!(
        in_b.get(k.key.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        in_b.revoke(k.key.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        in_b.rotate(k.key.id, None).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        crm.verify_api_key(k.secret.expose())
            .await
            .expect("verify")
            .workspace_id,
        a
    );
    assert!(crm
        .workspace(b)
        .audit_log(None, 10)
        .await
        .expect("audit")
        .is_empty());
}

async fn the_rate_limiter_admits_the_policy(db: &TestDb) {
    let crm = db.crm().await;
    let l = crm.rate_limiter();
    for i in 0..10 {
        let d = l.check("anonymous_ip", "203.0.113.9").await.expect("check");
        assert!(d.allowed);
        assert_eq!(d.remaining, 9 - i);
    }
    let refused = l.check("anonymous_ip", "203.0.113.9").await.expect("check");
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after, Some(StdDuration::from_secs(6)));
    db.clock.advance(Duration::seconds(6));
    assert!(
        l.check("anonymous_ip", "203.0.113.9")
            .await
            .expect("check")
            .allowed
    );
    assert_eq!(
        l.check("login", "ana@example.com")
            .await
            .expect("check")
            .limit,
        5
    );
}

/// Two app instances (separate pools) on one Postgres database share one budget:
/// 400 concurrent requests against a budget of 50 admit exactly 50.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_instances_share_one_budget() {
    use crm::ratelimit::Policy;
    let db = TestDb::postgres().await;
    let policy = Policy::new(50, StdDuration::from_secs(3600)).expect("policy");
    let connect = || {
        db.builder()
            .max_connections(8)
            .rate_limit_policy("burst", policy)
            .connect()
    };
    let (one, two) = (
        connect().await.expect("connect"),
        connect().await.expect("connect"),
    );
    let mut tasks = Vec::new();
    for i in 0..400 {
        let crm = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            crm.rate_limiter().check("burst", "shared").await
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        if t.await.expect("join").expect("check").allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 50);
    // One emission interval (72 s) later, exactly one more.
    db.clock.advance(Duration::seconds(72));
    assert!(
        one.rate_limiter()
            .check("burst", "shared")
            .await
            .expect("check")
            .allowed
    );
    assert!(
        !two.rate_limiter()
            .check("burst", "shared")
            .await
            .expect("check")
            .allowed
    );
    db.cleanup().await;
}

/// A busy key takes its budget in slices (1% of the limit) so most requests cost no
/// round trip, and two instances still share one budget: at a stopped clock they
/// admit no more than the policy (the overshoot bound, instances × slice, is for
/// slices taken before a window and spent in it), and no fewer than the policy
/// less the rests of the slices the instances hold. The next slice comes once the
/// shared state has room for it, and one request at a time near the limit.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_instances_share_a_sliced_budget() {
    use crm::ratelimit::Policy;
    let db = TestDb::postgres().await;
    // 10,000 an hour: slices of 100.
    let policy = Policy::new(10_000, StdDuration::from_secs(3600)).expect("policy");
    let connect = || {
        db.builder()
            .max_connections(8)
            .rate_limit_policy("busy", policy)
            .connect()
    };
    let (one, two) = (
        connect().await.expect("connect"),
        connect().await.expect("connect"),
    );
    let rows = || async {
        let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .expect("connect");
        sqlx::query_scalar::<_, i64>("SELECT tat FROM crm_rate_limits WHERE key = 'busy:k'")
            .fetch_one(&mut c)
            .await
            .expect("tat")
    };
    // 250 requests on one instance: slices grow with the key's traffic (up to 100);
    // what is counted beyond the 250 admitted is one unspent rest at most.
    for _ in 0..250 {
        assert!(
            one.rate_limiter()
                .check("busy", "k")
                .await
                .expect("check")
                .allowed
        );
    }
    let start = db.clock_now().timestamp_micros();
    let counted = (rows().await - start) / 360_000;
    assert!(
        (250..=250 + 99).contains(&counted),
        "counted {counted} for 250 admitted"
    );

    // Both instances, 12,000 requests at a stopped clock.
    let mut admitted = 250;
    for i in 0..12_000 {
        let crm = if i % 2 == 0 { &one } else { &two };
        if crm
            .rate_limiter()
            .check("busy", "k")
            .await
            .expect("check")
            .allowed
        {
            admitted += 1;
        }
    }
    assert!(admitted <= 10_000, "never more than the budget: {admitted}");
    assert!(
        admitted >= 10_000 - 2 * 99,
        "at most one unused slice rest per instance: {admitted}"
    );
    db.cleanup().await;
}

/// Requests of a busy key that arrive together while a slice is being taken wait
/// for it: a burst costs a round trip per slice, not one per request (counted by a
/// trigger on the shared state's table).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_waits_for_the_slice_on_its_way() {
    use crm::ratelimit::Policy;
    let db = TestDb::postgres().await;
    let policy = Policy::new(1_000_000, StdDuration::from_secs(3600)).expect("policy");
    let crm = db
        .builder()
        .max_connections(8)
        .rate_limit_policy("busy", policy)
        .connect()
        .await
        .expect("connect");
    db.execute(
        "CREATE TABLE steps (n bigint NOT NULL); INSERT INTO steps VALUES (0); \
         CREATE FUNCTION count_step() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN UPDATE steps SET n = n + 1; RETURN NEW; END $$; \
         CREATE TRIGGER count_step AFTER INSERT OR UPDATE ON crm_rate_limits \
         FOR EACH ROW EXECUTE FUNCTION count_step();",
    )
    .await;
    // The key is busy here: 100 requests in this second make slices of 100.
    for _ in 0..100 {
        assert!(
            crm.rate_limiter()
                .check("busy", "k")
                .await
                .expect("check")
                .allowed
        );
    }
    let before = db.scalar_i64("SELECT n FROM steps").await;
    // 64 at once, then 64 more: the first takes a slice, the others wait for it.
    for _ in 0..2 {
        let burst: Vec<_> = (0..64)
            .map(|_| {
                let crm = crm.clone();
                tokio::spawn(async move { crm.rate_limiter().check("busy", "k").await })
            })
            .collect();
        for b in burst {
            assert!(b.await.expect("join").expect("check").allowed);
        }
    }
    let steps = db.scalar_i64("SELECT n FROM steps").await - before;
    assert!(steps <= 4, "128 requests took {steps} round trips");
    db.cleanup().await;
}
