//! The e-KTP blank inventory: a stock ledger, quotas with pacing, and
//! two-phase reservations decided by the lock-free core
//! (`adminduk-inventory-core`) and made durable by group commit.

pub mod convert;
pub mod demo;
mod error;
pub mod grpc;
pub mod metrics;
pub mod service;
pub mod store;

pub use grpc::InventoryApi;
pub use service::Inventory;
pub use store::{GroupCommit, MIGRATIONS};

/// The schema this service's tables live in on a shared Postgres database.
pub const SCHEMA: &str = "inventory";

use std::sync::Arc;

use adminduk_kit::config::ServerConfig;
use adminduk_kit::server::{ServeError, serve_one};
use adminduk_kit::storage::Db;
use adminduk_proto::inventory::v1::inventory_service_server::InventoryServiceServer;

pub use adminduk_proto::inventory::v1::inventory_service_server::SERVICE_NAME;

/// The inventory could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its core could not be rebuilt from the database.
    #[error("rebuilding the inventory from its database: {0}")]
    Open(#[from] store::StoreError),
    /// Its server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The inventory service, started: its address, the inventory it answers
/// from (for seeding a policy and stock, or reading the books), and a clean
/// stop that ends the availability streams, drains in-flight requests (up to
/// the drain timeout), stops the group commit and the expiry sweeper, then
/// closes the database.
pub type Running = adminduk_kit::server::Running<Arc<Inventory>>;

/// Opens the inventory on a connected, migrated database (see [`MIGRATIONS`]
/// and [`SCHEMA`]), rebuilding its core from the rows, and starts its service
/// with the kit's server: one tower stack, health, reflection, the configured
/// message limit. Returns once the port is open.
pub async fn start(server: ServerConfig, db: Db, settings: GroupCommit) -> Result<Running, StartError> {
    let (inventory, background, report) = Inventory::open(db.clone(), settings).await?;
    tracing::info!(
        buckets = report.buckets,
        policies = report.policies,
        reservations = report.reservations,
        "inventory rebuilt"
    );
    let api = InventoryApi::new(inventory.clone());
    let started = serve_one(server, |max| {
        InventoryServiceServer::new(api).max_decoding_message_size(max)
    })
    .await;
    let server = match started {
        Ok(server) => server,
        Err(err) => {
            inventory.close();
            background.abort();
            return Err(err.into());
        }
    };
    let closing = inventory.clone();
    Ok(Running::new(server, inventory)
        .stop_first(move || async move { closing.close() })
        .stop_last(move || async move { background.abort() })
        .closing(db))
}
