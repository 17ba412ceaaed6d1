//! Row-level security on Postgres (opt-in, [`crate::CrmBuilder::row_level_security`]):
//! migration `0022` gives every table with a `workspace_id` (and `crm_workspaces`)
//! the policy `crm_tenant`, which lets a statement see and write the rows of the
//! workspace named by the setting `crm.workspace_id`, or every row when it is `*`
//! (crm's own cross-workspace work), and nothing when it is unset. The policies
//! bind only roles that are not the tables' owner and have no `BYPASSRLS`: a
//! deployment that connects as the owner is unchanged.

use super::sql::query_as;
use super::Pool;
use crate::{Error, Result};

/// Checks that row-level security binds this pool's role exactly when it is asked
/// for (`on`), and returns the pool, under RLS when it is on. Off on a role RLS
/// binds would make every table look empty; on for a role it does not bind would
/// be a wall that is not there.
pub(crate) async fn check(pool: Pool, on: bool) -> Result<Pool> {
    if pool.dialect() != super::Dialect::Postgres {
        return if on { pool.with_rls() } else { Ok(pool) };
    }
    // (whether crm_leads has RLS on, whether it binds this role); none without
    // crm's tables (not migrated yet).
    let found = query_as::<(bool, bool)>(
        "SELECT c.relrowsecurity, row_security_active(c.oid) FROM pg_class c \
         WHERE c.oid = to_regclass('crm_leads')",
    )
    .fetch_optional(&pool)
    .await?;
    let active = found.is_some_and(|(_, active)| active);
    match (on, active, found) {
        (true, true, _) => pool.with_rls(),
        (false, false, _) => Ok(pool),
        (true, false, None) => Err(Error::Config(
            "row_level_security is on, but crm's tables are not there: run `crm migrate` as \
             the tables' owner first"
                .into(),
        )),
        (true, false, Some((false, _))) => Err(Error::Config(
            "row_level_security is on, but crm's tables have row-level security off: run \
             `crm migrate --row-level-security on` (Crm::set_row_level_security) as their owner"
                .into(),
        )),
        (true, false, Some((true, _))) => Err(Error::Config(
            "row_level_security is on, but this database role bypasses row-level security \
             (it owns crm's tables, is a superuser or has BYPASSRLS): connect as the app role"
                .into(),
        )),
        (false, true, _) => Err(Error::Config(
            "row-level security binds this database role: turn on row_level_security \
             (CRM_ROW_LEVEL_SECURITY=true), or connect as the tables' owner"
                .into(),
        )),
    }
}

/// Turns row-level security on or off for every crm table that has the tenant
/// policy (run by the tables' owner); `Config` on SQLite.
pub(crate) async fn set_enabled(pool: &Pool, on: bool) -> Result<()> {
    if pool.dialect() != super::Dialect::Postgres {
        return Err(Error::Config(
            "row-level security is a Postgres feature".into(),
        ));
    }
    let action = if on { "ENABLE" } else { "DISABLE" };
    let sql = format!(
        "DO $$ DECLARE t text; BEGIN \
         FOR t IN SELECT c.relname FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid \
         WHERE p.polname = 'crm_tenant' AND c.relnamespace = current_schema()::regnamespace \
         LOOP EXECUTE format('ALTER TABLE %I {action} ROW LEVEL SECURITY', t); END LOOP; \
         END $$"
    );
    let mut tx = pool.begin_write().await?;
    super::sql::query(sql).execute(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use sqlx::Connection;

    use super::super::sql::{query, query_as};
    use super::super::Ts;
    use crate::{Crm, WorkspaceId};

    /// The statement a bug would write: no workspace filter.
    const FORGOT_THE_FILTER: &str = "SELECT COUNT(*) FROM crm_workspaces";

    /// Every way crm runs a statement (on the pool, on a held connection, in a
    /// write transaction) sets the tenant first: a workspace's statements see that
    /// workspace only, crm's own see every one, whatever the connection's last
    /// statement left set.
    #[tokio::test]
    async fn every_way_crm_runs_a_statement_sets_the_tenant() {
        let url = std::env::var("CRM_TEST_PG_URL").expect(
            "CRM_TEST_PG_URL is not set: run scripts/test.sh, which starts a throwaway Postgres",
        );
        let id = uuid::Uuid::now_v7().simple().to_string();
        let (schema, role) = (
            format!("crm_rls_{id}"),
            format!("crm_rls_app_{}", &id[20..]),
        );
        let owner = Crm::builder()
            .database_url(&url)
            .schema(&schema)
            .connect()
            .await
            .expect("owner");
        owner.set_row_level_security(true).await.expect("enable");
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        for ws in [a, b] {
            query("INSERT INTO crm_workspaces (id, name, created_at) VALUES ($1, 'w', $2)")
                .bind(ws)
                .bind(Ts(owner.now()))
                .execute(owner.pool())
                .await
                .expect("workspace");
        }
        let mut admin = sqlx::PgConnection::connect(&url).await.expect("admin");
        sqlx::raw_sql(&format!(
            "CREATE ROLE {role} LOGIN NOBYPASSRLS; GRANT USAGE ON SCHEMA {schema} TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};"
        ))
        .execute(&mut admin)
        .await
        .expect("role");
        let mut app_url = url::Url::parse(&url).expect("url");
        app_url.set_username(&role).expect("user");
        app_url.set_password(None).expect("password");
        let app = Crm::builder()
            .database_url(app_url.as_str())
            .schema(&schema)
            .migrate(false)
            .max_connections(1)
            .row_level_security(true)
            .connect()
            .await
            .expect("app");

        // One connection only, so each statement finds the setting the one before
        // it left: crm's own statements (every workspace: the default one and
        // both) run between A's, and each of A's must set A again.
        let all = || async {
            query_as::<(i64,)>(FORGOT_THE_FILTER)
                .fetch_one(app.pool())
                .await
                .expect("all")
                .0
        };
        let scoped = app.scoped(a);
        let pool = scoped.pool();
        assert_eq!(all().await, 3);
        let on_pool = query_as::<(i64,)>(FORGOT_THE_FILTER)
            .fetch_one(pool)
            .await
            .expect("pool");
        assert_eq!(all().await, 3);
        let mut conn = pool.acquire().await.expect("conn");
        let on_conn = query_as::<(i64,)>(FORGOT_THE_FILTER)
            .fetch_one(&mut conn)
            .await
            .expect("conn");
        drop(conn);
        assert_eq!(all().await, 3);
        let mut tx = pool.begin_write().await.expect("tx");
        let in_tx = query_as::<(i64,)>(FORGOT_THE_FILTER)
            .fetch_one(&mut tx)
            .await
            .expect("tx");
        tx.commit().await.expect("commit");
        assert_eq!((on_pool.0, on_conn.0, in_tx.0), (1, 1, 1));
        let theirs = query_as::<(i64,)>("SELECT COUNT(*) FROM crm_workspaces WHERE id = $1")
            .bind(a)
            .fetch_one(app.scoped(b).pool())
            .await
            .expect("b");
        assert_eq!(theirs.0, 0);

        app.close().await;
        owner.close().await;
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE; DROP ROLE {role};"))
            .execute(&mut admin)
            .await
            .expect("drop");
    }
}
