//! IKD (Identitas Kependudukan Digital): activation verified at an office,
//! one device per identity, and device-bound session tokens for the gateway.

mod convert;
pub mod domain;
pub mod grpc;
mod keys;
pub mod mail;
mod population;
mod refusal;
pub mod service;
pub mod store;

pub use grpc::IkdApi;
pub use keys::KeyRing;
pub use mail::MailSender;
pub use store::{MIGRATIONS, Store};

/// The schema this service's tables live in on a shared Postgres database.
pub const SCHEMA: &str = "ikd";

use std::sync::Arc;
use std::time::Duration;

use adminduk_kit::cache::SharedCache;
use adminduk_kit::config::{MailConfig, ServerConfig};
use adminduk_kit::server::{ServeError, serve_one};
use adminduk_kit::storage::Db;
use adminduk_proto::ikd::v1::ikd_service_server::IkdServiceServer;
use tonic::transport::Channel;

pub use adminduk_proto::ikd::v1::ikd_service_server::SERVICE_NAME;

/// The IKD service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The mail settings cannot be used.
    #[error(transparent)]
    Mail(#[from] mail::MailConfigError),
    /// The token signing keys could not be loaded or made.
    #[error("loading the token signing keys: {0}")]
    Keys(#[from] store::StoreError),
    /// Its server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The IKD service, started: its address, its store (on the database it was
/// started with), and a clean stop that lets the mail sender finish its pass
/// (up to the mail timeout and a second), drains in-flight requests (up to the
/// drain timeout), then closes the database.
pub type Running = adminduk_kit::server::Running<Store>;

/// Starts the IKD service on a connected, migrated database (see
/// [`MIGRATIONS`] and [`SCHEMA`]) with the kit's server (one tower stack,
/// health, reflection, the configured message limit), and its mail sender
/// when mail goes anywhere. `population` is the channel to the population
/// service, reached over gRPC as across pods; `cache` holds what replicas
/// share (revocations). Returns once the port is open.
pub async fn start(
    server: ServerConfig,
    db: Db,
    population: Channel,
    cache: Arc<dyn SharedCache>,
    mail: &MailConfig,
) -> Result<Running, StartError> {
    let store = Store::new(db);
    let sender = MailSender::new(store.clone(), mail)?;
    match &sender {
        Some(sender) => tracing::info!(to = %sender.destination(), "mail to residents"),
        None => tracing::warn!(
            "mail.smtp_host is not set: activation codes wait in the outbox (`adminduk outbox --database-url URL` shows them)"
        ),
    }
    let keys = Arc::new(KeyRing::load(&store).await?);
    let api = IkdApi::new(store.clone(), population, cache, keys);
    let server = serve_one(server, |max| {
        IkdServiceServer::new(api).max_decoding_message_size(max)
    })
    .await?;
    let mut running = Running::new(server, store.clone());
    if let Some(task) = sender.map(MailSender::spawn) {
        let within = Duration::from_millis(mail.timeout_ms + 1_000);
        running = running.stop_first(move || task.shutdown(within));
    }
    Ok(running.closing(store.db().clone()))
}
