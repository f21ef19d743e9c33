//! The e-KTP blank inventory: a stock ledger, quotas with pacing, and
//! two-phase reservations decided by the lock-free core
//! (`adminduk-inventory-core`) and made durable by group commit.

pub mod demo;
pub mod grpc;
pub mod service;
pub mod store;

pub use grpc::InventoryApi;
pub use service::Inventory;
pub use store::{GroupCommit, MIGRATIONS};

/// The schema this service's tables live in on a shared Postgres database.
pub const SCHEMA: &str = "inventory";
