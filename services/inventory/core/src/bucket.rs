//! A bucket: a count of units that can be granted, decremented lock-free.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicI64, AtomicU64, Mutex, Ordering};

/// Counts of a bucket at one moment; at rest `held + committed + remaining == capacity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketCounts {
    /// Units the bucket was given in total.
    pub capacity: i64,
    /// Units granted and not yet consumed or returned.
    pub held: i64,
    /// Units consumed for good.
    pub committed: i64,
    /// Units that can still be granted.
    pub remaining: i64,
}

/// Most units a bucket can hold: the count is half of one 64-bit word.
pub const MAX_UNITS: i64 = u32::MAX as i64;

const LOW: u64 = 0xFFFF_FFFF;

fn pack(debt: u64, remaining: u64) -> u64 {
    (debt << 32) | remaining.min(LOW)
}

fn remaining_of(word: u64) -> u64 {
    word & LOW
}

fn debt_of(word: u64) -> u64 {
    word >> 32
}

fn to_units(n: i64) -> u64 {
    u64::try_from(n.clamp(0, MAX_UNITS)).unwrap_or(0)
}

fn to_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(MAX_UNITS)
}

/// Statistics, written only on grants, returns and capacity changes.
#[derive(Debug)]
struct Stats {
    capacity: AtomicI64,
    held: AtomicI64,
    committed: AtomicI64,
    /// Serialises capacity changes (policy, stock), which are rare; grants never take it.
    changes: Mutex<()>,
}

/// A count of grantable units.
///
/// The grantable count sits alone on its cache line, in one 64-bit word with
/// the "debt": units to absorb when they come back, because a policy lowered
/// the capacity below what was already granted. On the peak morning every
/// request reads the word and almost none write it, so readers on all cores
/// share the line without it bouncing between them. A grant is a CAS loop
/// that never takes the count below zero; a return either raises the count or
/// pays a unit of debt, decided by one CAS, so a lowered quota can never be
/// exceeded by units that come back. The statistics live on another line.
#[derive(Debug)]
pub struct Bucket {
    word: CachePadded<AtomicU64>,
    stats: CachePadded<Stats>,
}

impl Bucket {
    /// A bucket with `capacity` units, none granted.
    pub fn new(capacity: i64) -> Self {
        Self::restore(capacity.max(0), 0, 0)
    }

    /// A bucket rebuilt from stored counts. Counts that do not add up (more
    /// held and committed than capacity) leave nothing to grant rather than
    /// a negative remainder.
    pub fn restore(capacity: i64, held: i64, committed: i64) -> Self {
        let capacity = capacity.clamp(0, MAX_UNITS);
        let remaining = to_units(capacity - held - committed);
        Self {
            word: CachePadded::new(AtomicU64::new(pack(0, remaining))),
            stats: CachePadded::new(Stats {
                capacity: AtomicI64::new(capacity),
                held: AtomicI64::new(held),
                committed: AtomicI64::new(committed),
                changes: Mutex::new(()),
            }),
        }
    }

    /// Units that can be granted now: one atomic load.
    #[inline]
    pub fn remaining(&self) -> i64 {
        to_count(remaining_of(self.word.load(Ordering::Acquire)))
    }

    /// Takes one unit if any is left.
    #[inline]
    pub fn try_take(&self) -> bool {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if remaining_of(word) == 0 {
                return false;
            }
            match self
                .word
                .compare_exchange_weak(word, word - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.stats.held.fetch_add(1, Ordering::AcqRel);
                    return true;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Returns one held unit (a release, an expiry, or a grant undone). While a
    /// lowered quota is still above its target, the unit is absorbed instead of
    /// becoming grantable again.
    #[inline]
    pub fn give_back(&self) {
        self.stats.held.fetch_sub(1, Ordering::AcqRel);
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if debt_of(word) > 0 {
                // Rare (only after a quota was cut): under the lock, so the capacity
                // and the debt change together as a policy change sees them.
                let _changes = self.stats.changes.lock().unwrap_or_else(|e| e.into_inner());
                let current = self.word.load(Ordering::Acquire);
                if debt_of(current) == 0 {
                    word = current;
                    continue;
                }
                if self
                    .word
                    .compare_exchange(current, current - (1 << 32), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.stats.capacity.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                word = self.word.load(Ordering::Acquire);
                continue;
            }
            let next = pack(0, remaining_of(word) + 1);
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Consumes one held unit for good.
    #[inline]
    pub fn consume(&self) {
        self.stats.held.fetch_sub(1, Ordering::AcqRel);
        self.stats.committed.fetch_add(1, Ordering::AcqRel);
    }

    /// Adds (or with a negative `delta`, removes) capacity. Removing more than
    /// remains is refused with the amount that remains: held and consumed
    /// units cannot be taken back. Adding first cancels any debt.
    pub fn adjust_capacity(&self, delta: i64) -> Result<(), i64> {
        let _changes = self.stats.changes.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let word = self.word.load(Ordering::Acquire);
            let (debt, remaining) = (debt_of(word), remaining_of(word));
            let (next, capacity_change) = if delta >= 0 {
                let add = to_units(delta);
                let pay = debt.min(add);
                (pack(debt - pay, remaining + (add - pay)), to_count(add - pay))
            } else {
                let need = to_units(-delta);
                if remaining < need {
                    return Err(to_count(remaining));
                }
                (pack(debt, remaining - need), -to_count(need))
            };
            if self
                .word
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.stats.capacity.fetch_add(capacity_change, Ordering::AcqRel);
                return Ok(());
            }
        }
    }

    /// Sets the capacity to `target`: at once as far as units not granted
    /// allow, and the rest as granted units come back. Returns the capacity
    /// now. Concurrent calls are serialised and end at the last target.
    pub fn set_capacity(&self, target: i64) -> i64 {
        let target = target.clamp(0, MAX_UNITS);
        let _changes = self.stats.changes.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let word = self.word.load(Ordering::Acquire);
            let (debt, remaining) = (debt_of(word), remaining_of(word));
            let capacity = self.stats.capacity.load(Ordering::Acquire);
            // What the capacity will be once every debt is paid.
            let settled = capacity - to_count(debt);
            let gap = settled - target;
            let (next, change) = match gap {
                0 => return capacity,
                gap if gap > 0 => {
                    let take = remaining.min(to_units(gap));
                    (
                        pack(debt + (to_units(gap) - take), remaining - take),
                        -to_count(take),
                    )
                }
                gap => {
                    let raise = to_units(-gap);
                    let pay = debt.min(raise);
                    (pack(debt - pay, remaining + (raise - pay)), to_count(raise - pay))
                }
            };
            if self
                .word
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.stats.capacity.fetch_add(change, Ordering::AcqRel);
                return capacity + change;
            }
        }
    }

    /// The counts now; consistent only when no operation is in flight.
    pub fn counts(&self) -> BucketCounts {
        BucketCounts {
            capacity: self.stats.capacity.load(Ordering::Acquire),
            held: self.stats.held.load(Ordering::Acquire),
            committed: self.stats.committed.load(Ordering::Acquire),
            remaining: self.remaining(),
        }
    }
}

/// Takes one unit from every bucket of `path` (leaf first), or from none.
/// On refusal, returns the index of the bucket that had nothing left.
///
/// The loads before any write make a refusal cost loads only: with the leaf
/// empty, which is what nearly every request on the peak morning finds, the
/// answer comes from one atomic load and nothing is written.
#[inline]
pub fn take_all(path: &[&Bucket]) -> Result<(), usize> {
    if let Some(i) = path.iter().position(|b| b.remaining() <= 0) {
        return Err(i);
    }
    for (i, bucket) in path.iter().enumerate() {
        if !bucket.try_take() {
            for taken in path[..i].iter().rev() {
                taken.give_back();
            }
            return Err(i);
        }
    }
    Ok(())
}

/// Returns one unit to every bucket of `path`.
pub fn give_back_all(path: &[&Bucket]) {
    for bucket in path.iter().rev() {
        bucket.give_back();
    }
}

/// Consumes one held unit in every bucket of `path`.
pub fn consume_all(path: &[&Bucket]) {
    for bucket in path {
        bucket.consume();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn take_never_goes_below_zero_and_counts_add_up() {
        let b = Bucket::new(2);
        assert!(b.try_take());
        assert!(b.try_take());
        assert!(!b.try_take());
        assert_eq!(b.remaining(), 0);
        b.consume();
        b.give_back();
        let c = b.counts();
        assert_eq!((c.capacity, c.held, c.committed, c.remaining), (2, 0, 1, 1));
    }

    #[test]
    fn a_path_is_taken_whole_or_not_at_all() {
        let leaf = Bucket::new(5);
        let parent = Bucket::new(1);
        assert_eq!(take_all(&[&leaf, &parent]), Ok(()));
        assert_eq!(take_all(&[&leaf, &parent]), Err(1));
        assert_eq!(leaf.remaining(), 4, "the leaf's unit went back");
        assert_eq!(leaf.counts().held, 1);
    }

    #[test]
    fn capacity_cannot_drop_below_what_was_granted() {
        let b = Bucket::new(3);
        assert!(b.try_take());
        assert_eq!(b.adjust_capacity(-3), Err(2));
        assert_eq!(b.set_capacity(0), 1, "one unit is held");
        assert_eq!(b.remaining(), 0);
        b.give_back();
        assert_eq!(
            b.counts().capacity,
            0,
            "the returned unit is absorbed by the lowered quota"
        );
        assert!(!b.try_take());
        assert!(b.adjust_capacity(1).is_ok());
        assert!(b.try_take());
        assert_eq!(b.set_capacity(10), 10);
        assert_eq!(b.remaining(), 9);
        let c = b.counts();
        assert_eq!(c.held + c.committed + c.remaining, c.capacity);
    }
}
