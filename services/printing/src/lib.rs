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

use std::net::SocketAddr;

use adminduk_kit::config::ServerConfig;
use adminduk_kit::server::{GrpcServer, RunningServer, ServeError};
use adminduk_kit::storage::Db;
use adminduk_proto::printing::v1::printing_service_server::PrintingServiceServer;
use tonic::transport::Channel;

pub use adminduk_proto::printing::v1::printing_service_server::SERVICE_NAME;

/// The printing service, started: its address, its store and handlers, and a clean stop.
#[derive(Debug)]
pub struct Running {
    server: RunningServer,
    printing: Printing,
    store: Store,
    gauges: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The service's store, on the database it was started with.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The workflows the server runs (for work outside a request, such as converting sukets).
    pub fn printing(&self) -> &Printing {
        &self.printing
    }

    /// Stops accepting, drains in-flight requests (up to the drain timeout), then closes the database.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.gauges.abort();
        let result = self.server.shutdown().await;
        self.store.db().close().await;
        result
    }
}

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
    let store = Store::new(db);
    let printing = Printing::new(store.clone(), peers::Peers::new(population, inventory));
    let builder = GrpcServer::new(server);
    let service = PrintingServiceServer::new(PrintingApi::new(printing.clone()))
        .max_decoding_message_size(builder.max_message_bytes());
    let server = builder
        .add_service(service)
        .with_descriptors(adminduk_proto::FILE_DESCRIPTOR_SET)
        .start()
        .await?;
    let gauges = tokio::spawn(keep_gauges(store.clone()));
    Ok(Running {
        server,
        printing,
        store,
        gauges,
    })
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
