//! A Postgres database of its own for one test or one bench run, created in the
//! server that a base URL (`CRM_TEST_PG_URL`) names and dropped after it, so that
//! nothing accumulates there and no run starts on another's rows. Shared by the
//! tests (`tests/common`) and the benches, which include this file by path.

use sqlx::Connection;

/// Creates the database `{prefix}_{uuid v7}` in the server of `base`; returns its
/// URL (`base` with its database name replaced, the query string kept) and its name.
pub(crate) async fn create(base: &str, prefix: &str) -> (String, String) {
    let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to CRM_TEST_PG_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a scratch database");
    let (head, tail) = base
        .split_once('?')
        .map_or((base, None), |(h, t)| (h, Some(t)));
    let prefix = head.rsplit_once('/').map_or(head, |(p, _)| p);
    let url = match tail {
        Some(t) => format!("{prefix}/{name}?{t}"),
        None => format!("{prefix}/{name}"),
    };
    (url, name)
}

/// Drops the database `name` made by [`create`] in the server of `base`, closing
/// any connection still on it; errors are ignored (cleanup after the fact).
pub(crate) async fn drop(base: &str, name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}
