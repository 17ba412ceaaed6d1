//! Row-level security on Postgres: the connect-time checks (a role RLS binds must
//! have it on; a role it does not bind must not claim it), every workspace-owned
//! table under the tenant policy, and a query without its workspace filter seeing
//! its workspace only. The tenant tests of the other modules run behind RLS too
//! (their `with_rls!` lists).

use crm::auth::NewUser;
use crm::leads::NewLead;
use crm::{Crm, Error, WorkspaceId};
use sqlx::Connection;

use crate::common::TestDb;

async fn two_workspaces(crm: &Crm) -> (WorkspaceId, WorkspaceId) {
    let mut ids = Vec::new();
    for (name, email) in [("A", "a@example.com"), ("B", "b@example.com")] {
        let owner = crm
            .register(
                name,
                NewUser {
                    email: email.into(),
                    display_name: name.into(),
                    role: None,
                    password: "Correct-Horse-42!".into(),
                },
            )
            .await
            .expect("register");
        ids.push(owner.workspace_id);
    }
    for (ws, n) in [(ids[0], 2), (ids[1], 3)] {
        for i in 0..n {
            crm.workspace(ws)
                .leads()
                .create(NewLead {
                    name: format!("Lead {i}"),
                    email: Some(format!("lead{i}@example.com")),
                    ..NewLead::default()
                })
                .await
                .expect("lead");
        }
    }
    (ids[0], ids[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_checks_that_the_wall_is_there_exactly_when_asked_for() {
    let db = TestDb::postgres_rls().await;
    // The app role with RLS on: connects.
    db.crm().await;
    // The app role without it would see empty tables: refused.
    let r = Crm::builder()
        .database_url(&db.url)
        .migrate(false)
        .connect()
        .await;
    assert!(
        matches!(r, Err(Error::Config(ref m)) if m.contains("binds this database role")),
        "{r:?}"
    );
    // The owner (a superuser here) with it on would be a wall that is not there.
    let owner = db.url.replace(
        &db.url[db.url.find("://").map_or(0, |i| i + 3)..db.url.find('@').unwrap_or(0)],
        "postgres",
    );
    let r = Crm::builder()
        .database_url(&owner)
        .row_level_security(true)
        .connect()
        .await;
    assert!(
        matches!(r, Err(Error::Config(ref m)) if m.contains("bypasses")),
        "{r:?}"
    );
    // With RLS off on the tables, the app role is not bound: it connects without
    // it, and with it it is told to turn it on.
    let owner_crm = Crm::builder()
        .database_url(&owner)
        .connect()
        .await
        .expect("owner");
    owner_crm.set_row_level_security(false).await.expect("off");
    let r = Crm::builder()
        .database_url(&db.url)
        .migrate(false)
        .row_level_security(true)
        .connect()
        .await;
    assert!(
        matches!(r, Err(Error::Config(ref m)) if m.contains("row-level security off")),
        "{r:?}"
    );
    Crm::builder()
        .database_url(&db.url)
        .migrate(false)
        .connect()
        .await
        .expect("not bound");
    owner_crm.set_row_level_security(true).await.expect("on");
    db.crm().await;
    // SQLite has no RLS.
    let r = Crm::builder()
        .database_url("sqlite::memory:")
        .row_level_security(true)
        .connect()
        .await;
    assert!(matches!(r, Err(Error::Config(_))), "{r:?}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workspace_table_is_behind_the_tenant_policy() {
    let db = TestDb::postgres_rls().await;
    let unprotected = db
        .scalar_i64(
            "SELECT COUNT(*) FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'crm\\_%' \
             AND c.relnamespace = 'public'::regnamespace \
             AND (EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                          AND a.attname = 'workspace_id' AND NOT a.attisdropped) \
                  OR c.relname = 'crm_workspaces') \
             AND NOT (c.relrowsecurity AND EXISTS (SELECT 1 FROM pg_policy p \
                      WHERE p.polrelid = c.oid AND p.polname = 'crm_tenant'))",
        )
        .await;
    assert_eq!(unprotected, 0);
    let protected = db
        .scalar_i64("SELECT COUNT(*) FROM pg_policy WHERE polname = 'crm_tenant'")
        .await;
    assert!(protected >= 24, "{protected}");
    db.cleanup().await;
}

/// Leads counted by a query without a workspace filter (the query a bug would
/// write), as the app role, in a transaction with `tenant` set (or not).
async fn count(c: &mut sqlx::PgConnection, tenant: Option<String>) -> i64 {
    let mut tx = c.begin().await.expect("begin");
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('crm.workspace_id', $1, true)")
            .bind(t)
            .execute(&mut *tx)
            .await
            .expect("set");
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM crm_leads")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    tx.rollback().await.expect("rollback");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_forgot_its_workspace_filter_sees_only_its_workspace() {
    let db = TestDb::postgres_rls().await;
    let crm = db.crm().await;
    let (a, b) = two_workspaces(&crm).await;
    // As the app role, outside crm: the setting decides what a statement sees.
    let mut c = sqlx::PgConnection::connect(&db.url).await.expect("app");
    assert_eq!(count(&mut c, Some(a.to_string())).await, 2);
    assert_eq!(count(&mut c, Some(b.to_string())).await, 3);
    assert_eq!(count(&mut c, None).await, 0);
    assert_eq!(count(&mut c, Some("*".into())).await, 5);
    // Nor can a statement scoped to A write a row of B.
    let mut tx = c.begin().await.expect("begin");
    sqlx::query("SELECT set_config('crm.workspace_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .expect("set");
    let moved = sqlx::query("UPDATE crm_leads SET workspace_id = $1")
        .bind(b.0)
        .execute(&mut *tx)
        .await;
    assert!(moved.is_err(), "{moved:?}");
    drop(tx);
    // Through crm: each workspace's services see their own rows only.
    let la = crm
        .workspace(a)
        .leads()
        .list(&Default::default())
        .await
        .expect("a");
    let lb = crm
        .workspace(b)
        .leads()
        .list(&Default::default())
        .await
        .expect("b");
    assert_eq!((la.items.len(), lb.items.len()), (2, 3));
    let r = crm.workspace(a).leads().get(lb.items[0].id).await;
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    db.cleanup().await;
}

/// Lifting a lockout in a workspace also lifts the count of the email's sign-ins
/// without a workspace, a row of the default workspace: crm's own write, which
/// a workspace's statements could not reach behind RLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifting_a_lockout_reaches_the_sign_in_count_of_every_workspace() {
    let db = TestDb::postgres_rls().await;
    let crm = db.crm().await;
    let (a, _) = two_workspaces(&crm).await;
    let login = |password: &str| crm::auth::Login {
        email: "a@example.com".into(),
        password: password.into(),
        remember_me: false,
        ip: None,
        user_agent: None,
    };
    for _ in 0..5 {
        let _ = crm.sign_in(login("Wrong-Password-1!")).await;
    }
    let locked = crm.sign_in(login("Correct-Horse-42!")).await;
    assert!(
        matches!(locked, Err(Error::RateLimited { .. })),
        "{locked:?}"
    );
    let auth = crm.workspace(a).auth();
    let owner = auth.users().await.expect("users")[0].clone();
    auth.lift_lockout(owner.id, crm::auth::Actor::App(None))
        .await
        .expect("lift");
    crm.sign_in(login("Correct-Horse-42!"))
        .await
        .expect("signed in again");
    db.cleanup().await;
}
