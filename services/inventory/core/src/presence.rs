//! A counting filter that proves absence in one load: how the peak morning's
//! refusals skip the idempotency and one-hold lookups.
//!
//! When a date is full, a request can still be owed an answer other than "no
//! room": its idempotency key may have been granted (a retry gets its
//! reservation back), or its applicant may hold a blank elsewhere (ALREADY_EXISTS
//! with that hold). Both live in hash maps, and a map lookup that misses costs
//! tens of nanoseconds, several times the load that finds the date full.
//!
//! Every claimed key and applicant also adds one to a small counter chosen by
//! its hash, before any unit is taken, and subtracts one when it is forgotten.
//! A counter at zero proves that nothing with that hash is claimed, so a
//! refusal needs two hashes and two loads; a counter above zero sends the
//! request to the exact lookups. The order makes it safe: a claim's count is
//! written before the claimant's CAS takes the last unit, and a reader that
//! finds a bucket empty has read (through the CAS chain) the value that CAS
//! wrote, so it also sees the count.

use crate::sync::{AtomicU8, Ordering};

/// Slots of a [`Presence`] filter: 256 KiB, within a core's L2 cache.
pub const DEFAULT_SLOTS: usize = 1 << 18;

/// A counter that reached this is no longer counted and stays "maybe" for good.
const SATURATED: u8 = u8::MAX;

/// Counts of claimed hashes, one byte per slot.
#[derive(Debug)]
pub struct Presence {
    slots: Box<[AtomicU8]>,
    mask: u64,
}

impl Presence {
    /// A filter of `slots` counters (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        let len = slots.max(1).next_power_of_two();
        Self {
            slots: (0..len).map(|_| AtomicU8::new(0)).collect(),
            mask: (len - 1) as u64,
        }
    }

    fn slot(&self, hash: u64) -> &AtomicU8 {
        let index = usize::try_from(hash & self.mask).unwrap_or(0);
        &self.slots[index]
    }

    /// Counts a claim of `hash`. Call it before the claim can be seen.
    pub fn add(&self, hash: u64) {
        let _ = self
            .slot(hash)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < SATURATED).then(|| n + 1)
            });
    }

    /// Forgets one claim of `hash`, once per earlier [`add`](Self::add).
    /// A saturated counter has lost count and stays.
    pub fn remove(&self, hash: u64) {
        let _ = self
            .slot(hash)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > 0 && n < SATURATED).then(|| n - 1)
            });
    }

    /// Claims counted in all slots (for checks that adds and removes balance).
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| u64::from(s.load(Ordering::Acquire)))
            .sum()
    }

    /// False only when nothing with `hash` is claimed.
    #[inline]
    pub fn may_contain(&self, hash: u64) -> bool {
        self.slot(hash).load(Ordering::Acquire) != 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_claims_and_forgets_them() {
        let p = Presence::new(8);
        assert!(!p.may_contain(3));
        p.add(3);
        p.add(11); // the same slot as 3 in 8 slots
        assert!(p.may_contain(3));
        p.remove(3);
        assert!(p.may_contain(11), "one claim of the slot is left");
        p.remove(11);
        assert!(!p.may_contain(3) && !p.may_contain(11));
        p.remove(3);
        assert!(!p.may_contain(3), "never below zero");
    }

    #[test]
    fn a_saturated_counter_stays_maybe() {
        let p = Presence::new(1);
        for _ in 0..300 {
            p.add(0);
        }
        for _ in 0..300 {
            p.remove(0);
        }
        assert!(p.may_contain(0), "it lost count, so it can not prove absence");
    }
}
