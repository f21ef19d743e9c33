//! IKD (Identitas Kependudukan Digital): activation verified at an office,
//! one device per identity, and device-bound session tokens for the gateway.

pub mod domain;
pub mod grpc;
pub mod mail;
pub mod store;

pub use grpc::{IkdApi, KeyRing};
pub use mail::MailSender;
pub use store::{MIGRATIONS, Store};

/// The schema this service's tables live in on a shared Postgres database.
pub const SCHEMA: &str = "ikd";
