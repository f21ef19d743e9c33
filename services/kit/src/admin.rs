//! The admin port (9464 by default): plaintext, for the cluster's eyes only.
//!
//! - `GET /metrics`: the process's metrics as Prometheus text.
//! - `GET /healthz`: 200 while the process runs (liveness).
//! - `GET /readyz`: 200 when every readiness check passes (the database
//!   answers; for the gateway, its backends do), else 503 naming what failed.
//! - `grpc.health.v1.Health` over HTTP/2 without TLS, for Kubernetes' native
//!   `grpc` probes: the service `""` is SERVING when ready, and `liveness`
//!   is SERVING while the process runs.
//!
//! Readiness is checked every few seconds in the background (and on each
//! `/readyz`), and kept in the `adminduk_ready` gauge.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::metrics::{self, ServiceLabel};
use crate::server::ServeError;

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often readiness is checked in the background.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// A readiness check's future.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One thing a service needs to serve: its database, a backend.
#[derive(Clone)]
pub struct ReadyCheck {
    /// The service that needs it.
    pub service: &'static str,
    /// What is checked (`database`, `upstream population`).
    pub what: String,
    run: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl std::fmt::Debug for ReadyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyCheck")
            .field("service", &self.service)
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl ReadyCheck {
    /// A check that runs `run` each time.
    pub fn new(
        service: &'static str,
        what: impl Into<String>,
        run: impl Fn() -> CheckFuture + Send + Sync + 'static,
    ) -> Self {
        Self {
            service,
            what: what.into(),
            run: Arc::new(run),
        }
    }

    /// The service's database answers a query.
    pub fn database(service: &'static str, db: crate::storage::Db) -> Self {
        Self::new(service, "database", move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await.map_err(|err| err.to_string()) })
        })
    }

    /// A backend's health service says it is serving.
    pub fn upstream(service: &'static str, name: &str, channel: tonic::transport::Channel) -> Self {
        Self::new(service, format!("upstream {name}"), move || {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            Box::pin(async move {
                let answer = client
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map_err(|status| format!("{:?}", status.code()))?;
                match answer.into_inner().status() {
                    tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
        })
    }
}

/// The outcome of every check, run at once: the failures, named.
async fn run_checks(checks: &[ReadyCheck]) -> Vec<String> {
    // Each check in a task of its own: one that panics fails, and its service is not ready.
    let runs: Vec<_> = checks
        .iter()
        .map(|check| {
            let run = (check.run)();
            tokio::spawn(async move {
                match tokio::time::timeout(CHECK_TIMEOUT, run).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                }
            })
        })
        .collect();
    let mut outcomes: Vec<(usize, Result<(), String>)> = Vec::with_capacity(runs.len());
    for (index, run) in runs.into_iter().enumerate() {
        let outcome = run
            .await
            .unwrap_or_else(|err| Err(format!("the check failed: {err}")));
        outcomes.push((index, outcome));
    }
    let mut failed = Vec::new();
    let mut services: Vec<(&'static str, bool)> = Vec::new();
    for (index, outcome) in outcomes {
        let Some(check) = checks.get(index) else {
            continue;
        };
        let ok = outcome.is_ok();
        if let Err(err) = outcome {
            failed.push(format!("{}: {}: {err}", check.service, check.what));
        }
        match services.iter_mut().find(|(s, _)| *s == check.service) {
            Some((_, all_ok)) => *all_ok &= ok,
            None => services.push((check.service, ok)),
        }
    }
    for (service, ok) in services {
        metrics::get()
            .ready
            .get_or_create(&ServiceLabel { service })
            .set(i64::from(ok));
    }
    failed
}

/// The admin server, running.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The admin port's routes: gRPC health, `/metrics`, `/healthz`, `/readyz`.
fn http_routes(
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    checks: Arc<Vec<ReadyCheck>>,
) -> axum::Router {
    Routes::new(health)
        .into_axum_router()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                    metrics::get().encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let checks = Arc::clone(&checks);
                async move { readyz(&checks).await }
            }),
        )
}

impl AdminServer {
    /// Binds `listen` and serves metrics, health and readiness; returns once
    /// the port is open. `services` are the services of this process (for
    /// `adminduk_build_info`).
    pub async fn start(
        listen: SocketAddr,
        services: &[&'static str],
        checks: Vec<ReadyCheck>,
    ) -> Result<Self, ServeError> {
        let (listener, addr) = crate::server::bind(listen).await?;
        for &service in services {
            metrics::get()
                .build_info
                .get_or_create(&metrics::VersionLabels {
                    service,
                    version: env!("CARGO_PKG_VERSION"),
                })
                .set(1);
        }
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("liveness", ServingStatus::Serving)
            .await;
        let checks = Arc::new(checks);
        let ready = set_readiness(&reporter, &checks).await;
        tracing::info!(%addr, ready, "admin port listening");

        let router = http_routes(health, Arc::clone(&checks));
        let (stop, mut stop_rx) = watch::channel(false);
        let mut watch_stop = stop_rx.clone();
        let task = tokio::spawn(async move {
            let background = async {
                let mut tick = tokio::time::interval(CHECK_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    set_readiness(&reporter, &checks).await;
                }
            };
            let serve = Server::builder()
                .accept_http1(true)
                .add_routes(Routes::from(router))
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        let _ = stop_rx.wait_for(|stop| *stop).await;
                    },
                );
            tokio::select! {
                result = serve => {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "admin port stopped");
                    }
                }
                () = background => {}
                _ = watch_stop.wait_for(|stop| *stop) => {}
            }
        });
        Ok(Self { addr, stop, task })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Runs the checks and tells the health service; returns whether all passed.
async fn set_readiness(reporter: &HealthReporter, checks: &[ReadyCheck]) -> bool {
    let failed = run_checks(checks).await;
    let status = if failed.is_empty() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    failed.is_empty()
}

async fn readyz(checks: &[ReadyCheck]) -> impl IntoResponse + use<> {
    let failed = run_checks(checks).await;
    if failed.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", failed.join("\n")),
        )
    }
}
