//! The atomics (and the one lock, for rare capacity changes) the core is
//! built on: std's, or loom's when model-checking.

#[cfg(loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
