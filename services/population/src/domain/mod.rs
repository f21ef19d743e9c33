//! Pure types and rules of population records: no I/O, no tonic, no sqlx.

// NIK and KK numbers and the official region codes live in the kit: every
// service checks them the same way.
pub use adminduk_kit::{kk, nik, region};
pub mod resident;
pub mod synth;
