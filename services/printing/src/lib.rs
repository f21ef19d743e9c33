//! Printing and delivery of KTP-el cards: the print queue from PRR to the
//! resident's hands, accounting for every card.

pub mod domain;
pub mod grpc;
pub mod store;

pub use grpc::PrintingApi;
pub use store::{MIGRATIONS, Store};

/// The schema this service's tables live in on a shared Postgres database.
pub const SCHEMA: &str = "printing";
