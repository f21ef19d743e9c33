//! Printing and delivery of KTP-el cards: the print queue from PRR to the
//! resident's hands, accounting for every card.

pub mod convert;
pub mod domain;
mod error;
pub mod grpc;
pub mod peers;
pub mod service;
pub mod store;

pub use grpc::PrintingApi;
pub use service::Printing;
pub use store::{MIGRATIONS, Store};

/// The schema this service's tables live in on a shared Postgres database.
pub const SCHEMA: &str = "printing";

use adminduk_kit::config::ServerConfig;
use adminduk_kit::server::{ServeError, serve_one};
use adminduk_kit::storage::Db;
use adminduk_proto::printing::v1::printing_service_server::PrintingServiceServer;
use tonic::transport::Channel;

pub use adminduk_proto::printing::v1::printing_service_server::SERVICE_NAME;

/// The printing service, started: its address, the workflows it runs (and
/// through them its store, for work outside a request such as converting
/// sukets), and a clean stop that ends the gauge task, drains in-flight
/// requests (up to the drain timeout), then closes the database.
pub type Running = adminduk_kit::server::Running<Printing>;

/// Starts the printing service on a connected, migrated database (see
/// [`MIGRATIONS`] and [`SCHEMA`]) with the kit's server: one tower stack,
/// health, reflection, the configured message limit. `population` and
/// `inventory` are the channels to those services, reached over gRPC as
/// across pods. Returns once the port is open.
pub async fn start(
    server: ServerConfig,
    db: Db,
    population: Channel,
    inventory: Channel,
) -> Result<Running, ServeError> {
    let store = Store::new(db.clone());
    let printing = Printing::new(store.clone(), peers::Peers::new(population, inventory));
    let api = PrintingApi::new(printing.clone());
    let server = serve_one(server, |max| {
        PrintingServiceServer::new(api).max_decoding_message_size(max)
    })
    .await?;
    let gauges = tokio::spawn(keep_gauges(store));
    Ok(Running::new(server, printing)
        .stop_first(move || async move { gauges.abort() })
        .closing(db))
}

/// How often the job gauges are read from the database.
const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Keeps `adminduk_printing_jobs` and `adminduk_printing_backlog` at what the
/// database says, every [`GAUGES_EVERY`].
async fn keep_gauges(store: Store) {
    const STATES: [&str; 7] = [
        "QUEUED",
        "LEASED",
        "PRINTED",
        "IN_TRANSIT",
        "AT_SERVICE_POINT",
        "DELIVERED",
        "CANCELLED",
    ];
    let mut tick = tokio::time::interval(GAUGES_EVERY);
    loop {
        tick.tick().await;
        let (states, waiting) = match store.job_states().await {
            Ok(counts) => counts,
            Err(err) => {
                tracing::warn!(error = %err, "job gauges not read");
                continue;
            }
        };
        let m = adminduk_kit::metrics::get();
        for state in STATES {
            let n = states.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
            m.print_jobs
                .get_or_create(&adminduk_kit::metrics::StateLabels {
                    service: "printing",
                    state,
                })
                .set(n);
        }
        m.print_backlog
            .get_or_create(&adminduk_kit::metrics::ServiceLabel { service: "printing" })
            .set(waiting);
    }
}
