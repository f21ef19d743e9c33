//! Population records: NIK, KK, residents, families and region codes.
//!
//! `domain` holds the pure types and rules, `store` the SQL, `convert` the
//! requests checked into domain values and the records made messages, `error`
//! the refusals, `grpc` the thin handlers; `domain` depends on none of the others.

pub mod convert;
pub mod domain;
mod error;
pub mod grpc;
pub mod store;

pub use grpc::PopulationApi;
pub use store::{MIGRATIONS, Store};

/// The schema this service's tables live in on a shared Postgres database.
pub const SCHEMA: &str = "population";

use std::net::SocketAddr;

use adminduk_kit::config::ServerConfig;
use adminduk_kit::server::{GrpcServer, RunningServer, ServeError};
use adminduk_kit::storage::Db;
use adminduk_proto::population::v1::population_service_server::PopulationServiceServer;

pub use adminduk_proto::population::v1::population_service_server::SERVICE_NAME;

/// The largest answer population sends (a search page of residents).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The population service, started: its address, its store, and a clean stop.
#[derive(Debug)]
pub struct Running {
    server: RunningServer,
    store: Store,
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

    /// Stops accepting, drains in-flight requests (up to the drain timeout), then closes the database.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let result = self.server.shutdown().await;
        self.store.db().close().await;
        result
    }
}

/// Starts the population service on a connected, migrated database (see
/// [`MIGRATIONS`] and [`SCHEMA`]) with the kit's server: one tower stack,
/// health, reflection, the configured message limit. Returns once the port is open.
pub async fn start(server: ServerConfig, db: Db) -> Result<Running, ServeError> {
    let store = Store::new(db);
    let builder = GrpcServer::new(server);
    let service = PopulationServiceServer::new(PopulationApi::new(store.clone()))
        .max_decoding_message_size(builder.max_message_bytes())
        .max_encoding_message_size(MAX_ANSWER_BYTES);
    let server = builder
        .add_service(service)
        .with_descriptors(adminduk_proto::FILE_DESCRIPTOR_SET)
        .start()
        .await?;
    Ok(Running { server, store })
}
