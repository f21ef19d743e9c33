//! Retries of idempotent reads, within a budget. A read the backend did not
//! answer (the connection failed, or UNAVAILABLE) is tried once more after a
//! short pause, if the caller's deadline leaves room and the budget allows:
//! each first attempt adds a tenth of a retry to the budget (up to 20), each
//! retry spends one, so retries stay near a tenth of the traffic however
//! badly a backend fails and never multiply an overload (Finagle's and gRPC's
//! retry throttling work the same way). Changes are never retried.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// What each first attempt adds to the budget.
const DEPOSIT: f64 = 0.1;
/// The most retries saved up.
const MAX_SAVED: f64 = 20.0;
/// The pause before a retry.
pub(crate) const PAUSE: Duration = Duration::from_millis(25);
/// A retry is made only when the deadline leaves at least this.
pub(crate) const ROOM_NEEDED: Duration = Duration::from_millis(200);

/// The budget of one gateway replica.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    saved: Mutex<f64>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        // Room for a few retries at start, before any traffic has paid for them.
        Self {
            saved: Mutex::new(5.0),
        }
    }
}

impl RetryBudget {
    /// A first attempt: it adds to the budget.
    pub(crate) fn attempted(&self) {
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        *saved = (*saved + DEPOSIT).min(MAX_SAVED);
    }

    /// Whether a retry may be made now (and spends it).
    pub(crate) fn may_retry(&self) -> bool {
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        if *saved >= 1.0 {
            *saved -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_held_to_a_tenth_of_the_attempts_once_the_savings_are_spent() {
        let budget = RetryBudget::default();
        let mut retries = 0;
        for _ in 0..1_000 {
            budget.attempted();
            // Every attempt fails and asks for a retry.
            if budget.may_retry() {
                retries += 1;
            }
        }
        // Five saved at start, then one for every ten attempts.
        assert!((100..=106).contains(&retries), "{retries}");
        let idle = RetryBudget::default();
        for _ in 0..1_000 {
            idle.attempted();
        }
        let burst = (0..100).filter(|_| idle.may_retry()).count();
        assert_eq!(burst, 20, "savings are capped");
    }
}
