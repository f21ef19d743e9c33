//! IKD.
pub mod domain;
