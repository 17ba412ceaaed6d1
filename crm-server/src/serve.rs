//! `crm serve`: the router, the dispatcher and housekeeping, with logs, metrics,
//! probes and a bounded drain on SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use crm::auth::NewUser;
use crm::housekeeping::Housekeeping;
use crm::webhooks::{CancellationToken, DispatcherConfig};
use crm::{Crm, WorkspaceId};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigError, LogFormat};
use crate::{setup, Failure};

/// Installs the log subscriber: the filter from `CRM_LOG` or `RUST_LOG` (default
/// `info`), text with colours on a terminal, JSON lines otherwise (or as asked).
pub(crate) fn init_logs(format: LogFormat) -> Result<(), ConfigError> {
    let filter = match ["CRM_LOG", "RUST_LOG"]
        .iter()
        .find_map(|name| Some((*name, std::env::var(name).ok()?)))
    {
        Some((name, value)) => EnvFilter::try_new(&value)
            .map_err(|e| ConfigError(format!("{name} = {value:?}: not a log filter ({e})")))?,
        None => EnvFilter::new("info"),
    };
    let tty = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Auto => !tty,
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let done = if json {
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        logs.with_ansi(tty).try_init()
    };
    done.map_err(|e| ConfigError(format!("cannot install the logger: {e}")))
}

/// Runs the server until SIGTERM or SIGINT, then drains within the bound and exits 0.
pub(crate) async fn serve(cfg: Config) -> Result<ExitCode, Failure> {
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| Failure::Other(format!("cannot install the metrics recorder: {e}")))?;
    let mut stop_signal = stop_signal()?;
    // The addresses first: one that cannot be had stops the server before anything
    // is written.
    let listener = bind(cfg.addr, "CRM_ADDR").await?;
    let metrics_listener = match cfg.metrics_addr {
        Some(addr) => Some(bind(addr, "CRM_METRICS_ADDR").await?),
        None => None,
    };

    let crm = setup::open(&cfg, true).await?;
    bootstrap(&crm, &cfg).await?;
    let stop = CancellationToken::new();
    let mut dispatch = DispatcherConfig::default();
    if let Some(n) = cfg.dispatcher_concurrency {
        dispatch.concurrency = n;
    }
    let dispatcher = crm.start_dispatcher(dispatch, stop.clone())?;
    let dispatching = Arc::new(AtomicBool::new(true));
    let up = dispatching.clone();
    let dispatcher = tokio::spawn(async move {
        let _ = dispatcher.await;
        up.store(false, Ordering::Relaxed);
    });
    tokio::spawn(gauges(crm.clone(), stop.clone()));
    let housekeeper = tokio::spawn(housekeeping(
        crm.clone(),
        Housekeeping {
            retention: cfg.retention,
        },
        cfg.housekeeping_every,
        stop.clone(),
    ));

    let probes = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Ready {
            crm: crm.clone(),
            dispatching,
        });
    // The exporter keeps histograms until they are rendered; upkeep bounds them when
    // nobody scrapes.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let scrape = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { render(&m) }
        }),
    );
    let mut app = probes.merge(setup::router_config(&cfg).router::<()>(crm.clone()));
    let mut metrics_server = None;
    match metrics_listener {
        None => app = app.merge(scrape),
        Some(listener) => {
            say!("metrics on http://{}/metrics", local(&listener));
            metrics_server = Some(tokio::spawn(crm::http::serve(
                listener,
                scrape,
                cfg.limits,
                stop.clone().cancelled_owned(),
            )));
        }
    }
    let app = app.layer(axum::middleware::from_fn(access_log));
    let addr = local(&listener);
    say!("crm listening on http://{addr}");
    tracing::info!(%addr, database = if cfg.is_postgres() { "postgres" } else { "sqlite" }, "listening");
    let mut server = tokio::spawn(crm::http::serve(
        listener,
        app,
        cfg.limits,
        stop.clone().cancelled_owned(),
    ));

    let ended_early = tokio::select! {
        _ = stop_signal.recv() => false,
        r = &mut server => {
            tracing::error!(error = ?r, "the server stopped by itself");
            true
        }
    };
    tracing::info!(
        bound_secs = cfg.shutdown_timeout.as_secs(),
        "stopping: draining in-flight requests and deliveries"
    );
    stop.cancel();
    let drain = tokio::time::timeout(cfg.shutdown_timeout, async {
        if !ended_early {
            let _ = server.await;
        }
        if let Some(m) = metrics_server {
            let _ = m.await;
        }
        let _ = dispatcher.await;
        let _ = housekeeper.await;
    });
    // A second signal does not wait for the drain.
    let drained = tokio::select! {
        d = drain => d.is_ok(),
        _ = stop_signal.recv() => {
            tracing::warn!("second signal: exiting without waiting for the drain");
            return Ok(ExitCode::from(1));
        }
    };
    if !drained {
        tracing::warn!("work still in flight after the bound; exiting anyway");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), crm.close()).await;
    tracing::info!("stopped");
    Ok(if ended_early {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn local(listener: &tokio::net::TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string())
}

async fn bind(addr: std::net::SocketAddr, env: &str) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Other(format!("{env}: cannot listen on {addr}: {e}")))
}

/// SIGTERM (a process manager) or SIGINT (Ctrl-C).
struct StopSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl StopSignal {
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn stop_signal() -> Result<StopSignal, Failure> {
    Ok(StopSignal {
        #[cfg(unix)]
        term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::Other(format!("cannot handle SIGTERM: {e}")))?,
    })
}

fn render(handle: &PrometheusHandle) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

#[derive(Clone)]
struct Ready {
    crm: Crm,
    dispatching: Arc<AtomicBool>,
}

/// Ready when the database answers (within 2 s) at this version's schema and the
/// dispatcher runs.
async fn readyz(State(r): State<Ready>) -> Response {
    let fail = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "reason": reason})),
        )
            .into_response()
    };
    if !r.dispatching.load(Ordering::Relaxed) {
        return fail("dispatcher_stopped");
    }
    match tokio::time::timeout(Duration::from_secs(2), r.crm.schema_is_current()).await {
        Ok(Ok(true)) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(Ok(false)) => fail("schema_not_current"),
        _ => fail("database_unreachable"),
    }
}

/// One access-log line per request at INFO (method, route template, status, latency,
/// request id; never the query string, a body or a header value) and the request
/// metrics.
async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    // A label from a closed set: a client may send any method name.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info!(
        method,
        route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        request_id,
        "request"
    );
    metrics::counter!("crm_http_requests_total", "method" => method, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("crm_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    resp
}

/// A housekeeping pass every `every` until `stop`; what it deletes is logged and
/// counted (`crm_housekeeping_deleted_total` by kind).
async fn housekeeping(crm: Crm, config: Housekeeping, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match crm.housekeep(config).await {
            Ok(p) => {
                for (kind, n) in [
                    ("sessions", p.sessions),
                    ("auth_tokens", p.auth_tokens),
                    ("idempotency_keys", p.idempotency_keys),
                    ("rate_limit_rows", p.rate_limit_rows),
                    ("events", p.events),
                    ("attempts", p.attempts),
                ] {
                    metrics::counter!("crm_housekeeping_deleted_total", "kind" => kind)
                        .increment(n);
                }
                metrics::counter!("crm_housekeeping_passes_total").increment(1);
                if p.total() > 0 {
                    tracing::info!(
                        sessions = p.sessions,
                        auth_tokens = p.auth_tokens,
                        idempotency_keys = p.idempotency_keys,
                        rate_limit_rows = p.rate_limit_rows,
                        events = p.events,
                        attempts = p.attempts,
                        "housekeeping"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "housekeeping pass failed; the next one goes on"),
        }
    }
}

/// Every 15 s: the job queue's depth and the age of its most overdue job, and the
/// database pool's connections.
async fn gauges(crm: Crm, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Ok(q) = crm.job_queue().await {
            metrics::gauge!("crm_jobs_pending").set(q.pending as f64);
            let age = q.oldest_due_at.map_or(0.0, |t| {
                (crm.now() - t).num_milliseconds().max(0) as f64 / 1000.0
            });
            metrics::gauge!("crm_jobs_oldest_due_age_seconds").set(age);
        }
        let (size, idle) = crm.pool_usage();
        metrics::gauge!("crm_db_pool_connections").set(f64::from(size));
        metrics::gauge!("crm_db_pool_idle_connections").set(idle as f64);
    }
}

/// Makes the owner account on the first run (the password printed once when it was
/// generated).
async fn bootstrap(crm: &Crm, cfg: &Config) -> Result<(), Failure> {
    let (password, generated) = match &cfg.admin_password {
        Some(p) => (p.expose().to_owned(), false),
        None => (setup::generated_password(), true),
    };
    let owner = crm
        .workspace(WorkspaceId::DEFAULT)
        .auth()
        .bootstrap_owner(NewUser {
            email: cfg.admin_email.clone(),
            display_name: "Owner".into(),
            role: None,
            password: password.clone(),
        })
        .await?;
    if owner.is_some() {
        if generated {
            say!(
                "owner account: {} / {password}   (shown once; change it)",
                cfg.admin_email
            );
        } else {
            say!("owner account: {}", cfg.admin_email);
        }
    }
    Ok(())
}
