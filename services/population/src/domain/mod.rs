//! Pure types and rules of population records: no I/O, no tonic, no sqlx.

pub mod kk;
pub mod nik;
pub mod region;
pub mod resident;
pub mod synth;
