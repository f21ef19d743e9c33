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

use adminduk_kit::config::ServerConfig;
use adminduk_kit::server::{ServeError, serve_one};
use adminduk_kit::storage::Db;
use adminduk_proto::population::v1::population_service_server::PopulationServiceServer;

pub use adminduk_proto::population::v1::population_service_server::SERVICE_NAME;

/// The largest answer population sends (a search page of residents).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The population service, started: its address, its store (on the database
/// it was started with), and a clean stop that drains in-flight requests (up
/// to the drain timeout) and then closes the database.
pub type Running = adminduk_kit::server::Running<Store>;

/// Starts the population service on a connected, migrated database (see
/// [`MIGRATIONS`] and [`SCHEMA`]) with the kit's server: one tower stack,
/// health, reflection, the configured message limit. Returns once the port is open.
pub async fn start(server: ServerConfig, db: Db) -> Result<Running, ServeError> {
    let store = Store::new(db.clone());
    let api = PopulationApi::new(store.clone());
    let server = serve_one(server, |max| {
        PopulationServiceServer::new(api)
            .max_decoding_message_size(max)
            .max_encoding_message_size(MAX_ANSWER_BYTES)
    })
    .await?;
    Ok(Running::new(server, store).closing(db))
}
