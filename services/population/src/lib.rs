//! Population records: NIK, KK, residents, families and region codes.

pub mod domain;
