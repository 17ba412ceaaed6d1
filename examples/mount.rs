//! cargo run --example mount --features http
//!
//! The CRM router nested under `/crm` in an existing axum app that has its own
//! routes and its own state type. Try:
//!
//! ```sh
//! curl localhost:3001/                       # the host app
//! curl localhost:3001/hits                   # the host's own state
//! curl localhost:3001/crm/api/v1/health      # the CRM
//! curl -X POST localhost:3001/crm/api/leads -H 'content-type: application/json' \
//!      -d '{"name":"Ana","email":"ana@example.com"}'
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use crm::Crm;

/// The host app's own state; the CRM router does not care what it is.
#[derive(Clone, Default)]
struct HostState {
    hits: Arc<AtomicU64>,
}

async fn hits(State(s): State<HostState>) -> String {
    format!("{} hits\n", s.hits.fetch_add(1, Ordering::Relaxed) + 1)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://crm-mount.db".into());
    let crm = Crm::connect(&url).await?;
    let app = Router::new()
        .route("/", get(|| async { "the host app\n" }))
        .route("/hits", get(hits))
        .nest(
            "/crm",
            crm::http::Config::new()
                .insecure_cookie("crm_session")
                .router(crm.clone()),
        )
        .with_state(HostState::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("host app on http://{}", listener.local_addr()?);
    // `crm::http::serve` bounds slow clients (head, idle and body time, connections)
    // and passes the peer address the router's per-IP limits need; a host's own
    // `axum::serve` works too, with `into_make_service_with_connect_info`.
    crm::http::serve(listener, app, crm::http::Limits::default(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    crm.close().await;
    Ok(())
}
