//! A bucket: a count of units that can be granted, decremented lock-free.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicI64, Ordering};

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

/// Statistics, written only on grants, returns and capacity changes.
#[derive(Debug)]
struct Stats {
    capacity: AtomicI64,
    held: AtomicI64,
    committed: AtomicI64,
}

/// A count of grantable units.
///
/// `remaining` sits alone on its cache line: on the peak morning every
/// request reads it and almost none write it, so readers on all cores share
/// the line without it bouncing between them. A grant is a CAS loop that never
/// takes `remaining` below zero; the statistics live on another line so that
/// grants do not disturb the readers more than the one write they must make.
#[derive(Debug)]
pub struct Bucket {
    remaining: CachePadded<AtomicI64>,
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
        let remaining = (capacity - held - committed).max(0);
        Self {
            remaining: CachePadded::new(AtomicI64::new(remaining)),
            stats: CachePadded::new(Stats {
                capacity: AtomicI64::new(capacity),
                held: AtomicI64::new(held),
                committed: AtomicI64::new(committed),
            }),
        }
    }

    /// Units that can be granted now: one atomic load.
    #[inline]
    pub fn remaining(&self) -> i64 {
        self.remaining.load(Ordering::Acquire)
    }

    /// Takes one unit if any is left.
    #[inline]
    pub fn try_take(&self) -> bool {
        let mut current = self.remaining.load(Ordering::Acquire);
        loop {
            if current <= 0 {
                return false;
            }
            match self.remaining.compare_exchange_weak(
                current,
                current - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.stats.held.fetch_add(1, Ordering::AcqRel);
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Returns one held unit (a release, an expiry, or a grant undone).
    #[inline]
    pub fn give_back(&self) {
        self.stats.held.fetch_sub(1, Ordering::AcqRel);
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    /// Consumes one held unit for good.
    #[inline]
    pub fn consume(&self) {
        self.stats.held.fetch_sub(1, Ordering::AcqRel);
        self.stats.committed.fetch_add(1, Ordering::AcqRel);
    }

    /// Adds (or with a negative `delta`, removes) capacity. Removing more than
    /// remains is refused with the amount that remains: held and consumed
    /// units cannot be taken back.
    pub fn adjust_capacity(&self, delta: i64) -> Result<(), i64> {
        let mut current = self.remaining.load(Ordering::Acquire);
        loop {
            let next = current + delta;
            if next < 0 {
                return Err(current);
            }
            match self
                .remaining
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.stats.capacity.fetch_add(delta, Ordering::AcqRel);
                    return Ok(());
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Sets the capacity, as near to `target` as the units already granted
    /// allow; returns the capacity set.
    pub fn set_capacity(&self, target: i64) -> i64 {
        loop {
            let capacity = self.stats.capacity.load(Ordering::Acquire);
            let delta = target - capacity;
            let remaining = self.remaining.load(Ordering::Acquire);
            let delta = delta.max(-remaining);
            if self.adjust_capacity(delta).is_ok() {
                return capacity + delta;
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
        assert_eq!(b.set_capacity(10), 10);
        assert_eq!(b.remaining(), 9);
        let c = b.counts();
        assert_eq!(c.held + c.committed + c.remaining, c.capacity);
    }
}
