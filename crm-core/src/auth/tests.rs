//! Unit tests of the auth rules and types.

use super::*;
use chrono::TimeZone;

fn someone(role: Role) -> User {
    User {
        id: UserId::new(),
        workspace_id: WorkspaceId::DEFAULT,
        email: Email::parse("u@example.com").expect("email"),
        display_name: "U".into(),
        role,
        email_verified_at: None,
        disabled_at: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

/// The rules of roles, every (actor, target, new role) combination.
#[test]
fn who_may_set_which_role() {
    use Role::{Admin, Member, Owner};
    let allowed = |actor: Option<Role>, target: Role, role: Role, owners: usize| {
        let a = actor.map(someone);
        may_set_role(a.as_ref(), &someone(target), role, owners).is_ok()
    };
    for target in [Owner, Admin, Member] {
        for role in [Owner, Admin, Member] {
            let owner_involved = target == Owner || role == Owner;
            assert!(
                allowed(Some(Owner), target, role, 2),
                "{target:?}->{role:?}"
            );
            assert_eq!(allowed(Some(Admin), target, role, 2), !owner_involved);
            assert!(!allowed(Some(Member), target, role, 2));
            assert!(allowed(None, target, role, 2));
        }
    }
    // The last owner stays, whoever asks; keeping the role is no demotion.
    assert!(!allowed(None, Owner, Admin, 1));
    assert!(!allowed(Some(Owner), Owner, Member, 1));
    assert!(allowed(None, Owner, Owner, 1));
    // Nobody changes their own role.
    let me = someone(Owner);
    assert!(matches!(
        may_set_role(Some(&me), &me, Admin, 3),
        Err(Error::Forbidden)
    ));
    assert!(may_create(Some(&someone(Admin)), Owner).is_err());
    assert!(may_create(Some(&someone(Admin)), Admin).is_ok());
    assert!(may_create(Some(&someone(Member)), Member).is_err());
    assert!(may_create(Some(&someone(Owner)), Owner).is_ok());
    assert!(may_create(None, Owner).is_ok());
}

#[test]
fn lockouts_grow_and_cap() {
    let cfg = AuthConfig::default();
    let t0 = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let mut t: Option<Throttle> = None;
    let mut locks = Vec::new();
    let mut now = t0;
    for _ in 0..40 {
        let (next, locked) = Throttle::after_failure(t, now, 5, Duration::minutes(15), &cfg);
        if locked {
            locks.push(next.locked_until.expect("locked") - now);
            now = next.locked_until.expect("locked");
        }
        t = Some(next);
    }
    let minutes: Vec<i64> = locks.iter().map(|d| d.num_minutes()).collect();
    // Issue 15, item 8: the escalation stops at a bound (it reached 24 h).
    assert_eq!(&minutes[..4], [15, 30, 60, 60]);
    assert!(minutes.iter().all(|m| *m <= 60), "{minutes:?}");
}

#[test]
fn failures_outside_the_window_start_over() {
    let cfg = AuthConfig::default();
    let t0 = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let mut t = None;
    for i in 0..4 {
        t = Some(
            Throttle::after_failure(t, t0 + Duration::minutes(i), 5, Duration::minutes(15), &cfg).0,
        );
    }
    let (after, locked) = Throttle::after_failure(
        t,
        t0 + Duration::minutes(20),
        5,
        Duration::minutes(15),
        &cfg,
    );
    assert!(!locked);
    assert_eq!(after.failures, 1);
}

#[test]
fn tokens_have_one_shape() {
    let (t, h) = new_token();
    assert_eq!(t.expose().len(), 43);
    assert_eq!(token_hash(t.expose()).expect("valid"), h);
    for bad in [
        "",
        "short",
        &format!("{}=", &t.expose()[..42]),
        &format!("{}!", &t.expose()[..42]),
        &format!("{}A", t.expose()),
    ] {
        assert!(
            matches!(
                token_hash(bad),
                Err(Error::Unauthorized {
                    reason: AuthFailure::MalformedToken
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn debug_hides_passwords() {
    let l = Login {
        email: "a@x.com".into(),
        password: "Sup3r-Secret-Pw".into(),
        ..Default::default()
    };
    assert!(!format!("{l:?}").contains("Sup3r"));
    let u = NewUser {
        password: "Sup3r-Secret-Pw".into(),
        ..Default::default()
    };
    assert!(!format!("{u:?}").contains("Sup3r"));
}
