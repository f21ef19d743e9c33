//! The lock-free quota reservation core of the blank inventory. No I/O: it
//! decides who gets a blank; the inventory service persists the decisions.
//!
//! - [`bucket`]: a count of units, one cache-padded atomic, taken by CAS.
//! - [`state`]: a reservation's state, changed by one CAS.
//! - [`engine`]: buckets in a tree per region (stock → month → paced day
//!   budget → service-point-day quota), reservations and their indexes.
//! - [`policy`]: quotas and the pacing rule.
//! - [`presence`]: a counting filter that lets a refusal skip the
//!   idempotency and one-hold lookups.

pub mod bucket;
#[cfg(not(loom))]
pub mod engine;
#[cfg(not(loom))]
pub mod policy;
pub mod presence;
pub mod state;
mod sync;
