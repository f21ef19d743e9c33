//! Population records: NIK, KK, residents, families and region codes.
//!
//! `domain` holds the pure types and rules, `store` the SQL, `grpc` the thin
//! handlers; `domain` depends on neither of the others.

pub mod domain;
pub mod grpc;
pub mod store;

pub use grpc::PopulationApi;
pub use store::{MIGRATIONS, Store};

/// The schema this service's tables live in on a shared Postgres database.
pub const SCHEMA: &str = "population";
