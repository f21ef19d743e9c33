//! What every adminduk server shares, written once: configuration, telemetry,
//! server bootstrap with TLS, storage pools, error mapping and masking.

pub mod admin;
pub mod cache;
pub mod codes;
pub mod config;
pub mod error;
pub mod hex;
pub mod kk;
pub mod mask;
pub mod metrics;
pub mod nik;
#[cfg(test)]
mod number_props;
pub mod observe;
pub mod principal;
pub mod proof;
pub mod region;
pub mod server;
pub mod storage;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod time;
pub mod tls;
pub mod token;
pub mod upstream;

pub use codes::is_digits;
pub use error::{ApiError, ErrorCode, ErrorReason, Violations};
pub use mask::{log_nik, mask_nik};
pub use nik::Nik;
