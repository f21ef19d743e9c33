//! Model checking of the lock-free primitives (buckets and state cells) with
//! loom: every interleaving of two or three threads, up to the preemption
//! bound, must keep the invariants.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p adminduk-inventory-core --test loom --release --target-dir target/loom`
#![cfg(loom)]

use adminduk_inventory_core::bucket::{Bucket, BucketCounts, consume_all, give_back_all, take_all};
use adminduk_inventory_core::presence::Presence;
use adminduk_inventory_core::state::{State, StateCell, Transition};
use loom::sync::Arc;
use loom::thread;

/// The at-rest invariant of a bucket: nothing negative, and the counts add up.
fn assert_consistent(name: &str, b: &Bucket) -> BucketCounts {
    let c = b.counts();
    assert!(c.remaining >= 0, "{name}: remaining below zero: {c:?}");
    assert!(c.held >= 0, "{name}: held below zero: {c:?}");
    assert!(c.committed >= 0, "{name}: committed below zero: {c:?}");
    assert_eq!(
        c.held + c.committed + c.remaining,
        c.capacity,
        "{name}: counts do not add up: {c:?}"
    );
    c
}

/// `threads` threads (the model's own thread among them) each take one unit
/// along `[leaf, parent]`; those with an even index that get one consume it
/// (a commit), the others keep holding it.
fn race_take_all(threads: usize, leaf_capacity: i64, parent_capacity: i64) {
    loom::model(move || {
        let leaf = Arc::new(Bucket::new(leaf_capacity));
        let parent = Arc::new(Bucket::new(parent_capacity));
        let reserve = move |i: usize, leaf: &Bucket, parent: &Bucket| {
            let result = take_all(&[leaf, parent]);
            let consumes = i.is_multiple_of(2);
            if result.is_ok() && consumes {
                consume_all(&[leaf, parent]);
            }
            result.map(|()| consumes)
        };
        let handles: Vec<_> = (1..threads)
            .map(|i| {
                let (leaf, parent) = (leaf.clone(), parent.clone());
                thread::spawn(move || reserve(i, &leaf, &parent))
            })
            .collect();
        let mut results = vec![reserve(0, &leaf, &parent)];
        results.extend(handles.into_iter().map(|h| h.join().expect("thread")));
        let granted = results.iter().filter(|r| r.is_ok()).count() as i64;
        let consumed = results.iter().filter(|r| matches!(r, Ok(true))).count() as i64;
        let expected = leaf_capacity.min(parent_capacity).min(threads as i64);
        assert_eq!(
            granted, expected,
            "threads {threads}, leaf {leaf_capacity}, parent {parent_capacity}: {results:?}"
        );
        for r in &results {
            if let Err(level) = r {
                assert!(*level < 2, "refused at a level not on the path: {level}");
            }
        }
        for (name, bucket, capacity) in [
            ("leaf", &leaf, leaf_capacity),
            ("parent", &parent, parent_capacity),
        ] {
            let c = assert_consistent(name, bucket);
            assert_eq!(c.capacity, capacity, "{name}");
            assert_eq!(c.held, granted - consumed, "{name}: {c:?}");
            assert_eq!(c.committed, consumed, "{name}: {c:?}");
            assert_eq!(c.remaining, capacity - granted, "{name}: {c:?}");
        }
    });
}

#[test]
fn two_reservers_get_exactly_the_smallest_capacity() {
    for leaf in 1..=2 {
        for parent in 1..=2 {
            race_take_all(2, leaf, parent);
        }
    }
}

#[test]
fn three_reservers_get_exactly_the_smallest_capacity() {
    for (leaf, parent) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
        race_take_all(3, leaf, parent);
    }
}

/// Two pools sharing one budget of 1 (two service points on the same day):
/// exactly one of them gets the unit, and the loser's pool is left whole.
#[test]
fn two_pools_race_for_a_shared_parent() {
    loom::model(|| {
        let pools = [Arc::new(Bucket::new(1)), Arc::new(Bucket::new(1))];
        let budget = Arc::new(Bucket::new(1));
        let handles: Vec<_> = pools
            .iter()
            .map(|pool| {
                let (pool, budget) = (pool.clone(), budget.clone());
                thread::spawn(move || take_all(&[&pool, &budget]))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        for (pool, result) in pools.iter().zip(&results) {
            let c = assert_consistent("pool", pool);
            assert_eq!(c.held, i64::from(result.is_ok()), "{c:?}");
            assert_eq!(c.remaining, i64::from(result.is_err()), "{c:?}");
        }
        let c = assert_consistent("budget", &budget);
        assert_eq!((c.held, c.remaining), (1, 0), "{c:?}");
    });
}

/// Commit, release and expiry race for one hold: exactly one wins, the others
/// see the winner's pending or final state, and the end state is the winner's.
#[test]
fn exactly_one_transition_wins() {
    loom::model(|| {
        let cell = Arc::new(StateCell::new(State::Held));
        let handles: Vec<_> = [Transition::Commit, Transition::Release, Transition::Expire]
            .into_iter()
            .map(|t| {
                let cell = cell.clone();
                thread::spawn(move || match cell.begin(t) {
                    Ok(()) => {
                        assert_eq!(cell.get(), t.pending(), "the winner sees its claim");
                        cell.complete(t);
                        Ok(t)
                    }
                    Err(found) => Err(found),
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
        let winners: Vec<Transition> = results.iter().filter_map(|r| r.ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let winner = winners[0];
        for found in results.iter().filter_map(|r| r.err()) {
            assert!(
                found == winner.pending() || found == winner.done(),
                "a loser saw {found:?} while {winner:?} won"
            );
        }
        assert_eq!(cell.get(), winner.done());
    });
}

/// A release and an expiry of the same reservation race; only the winner
/// gives the unit back, so it comes back exactly once.
#[test]
fn a_unit_is_returned_once() {
    loom::model(|| {
        let bucket = Arc::new(Bucket::new(1));
        assert!(bucket.try_take());
        let cell = Arc::new(StateCell::new(State::Held));
        let handles: Vec<_> = [Transition::Release, Transition::Expire]
            .into_iter()
            .map(|t| {
                let (bucket, cell) = (bucket.clone(), cell.clone());
                thread::spawn(move || {
                    let won = cell.begin(t).is_ok();
                    if won {
                        bucket.give_back();
                        cell.complete(t);
                    }
                    won
                })
            })
            .collect();
        let won: Vec<bool> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
        let c = assert_consistent("bucket", &bucket);
        assert_eq!(
            c,
            BucketCounts {
                capacity: 1,
                held: 0,
                committed: 0,
                remaining: 1
            }
        );
    });
}

/// Commit, release and expiry of one hold on a two-bucket path: the unit is
/// consumed or returned, once, in both buckets.
#[test]
fn a_hold_is_settled_once_along_its_path() {
    loom::model(|| {
        let leaf = Arc::new(Bucket::new(1));
        let parent = Arc::new(Bucket::new(2));
        assert_eq!(take_all(&[&leaf, &parent]), Ok(()));
        let cell = Arc::new(StateCell::new(State::Held));
        let handles: Vec<_> = [Transition::Commit, Transition::Release, Transition::Expire]
            .into_iter()
            .map(|t| {
                let (leaf, parent, cell) = (leaf.clone(), parent.clone(), cell.clone());
                thread::spawn(move || {
                    let won = cell.begin(t).is_ok();
                    if won {
                        match t {
                            Transition::Commit => consume_all(&[&leaf, &parent]),
                            Transition::Release | Transition::Expire => {
                                give_back_all(&[&leaf, &parent]);
                            }
                        }
                        cell.complete(t);
                    }
                    won.then_some(t)
                })
            })
            .collect();
        let winners: Vec<Transition> = handles
            .into_iter()
            .filter_map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(winners.len(), 1, "{winners:?}");
        let committed = i64::from(winners[0] == Transition::Commit);
        assert_eq!(cell.get(), winners[0].done());
        for (name, bucket, capacity) in [("leaf", &leaf, 1), ("parent", &parent, 2)] {
            let c = assert_consistent(name, bucket);
            assert_eq!(
                (c.held, c.committed, c.remaining),
                (0, committed, capacity - committed),
                "{name}"
            );
        }
    });
}

/// Quota 1. Thread A takes the unit and, winning a release, gives it back;
/// thread B tries to take it meanwhile. Someone always gets it, and B's answer
/// agrees with the counts: if B holds, nothing remains.
#[test]
fn a_reserve_races_a_release() {
    loom::model(|| {
        let leaf = Arc::new(Bucket::new(1));
        let parent = Arc::new(Bucket::new(1));
        let cell = Arc::new(StateCell::new(State::Held));
        let a = {
            let (leaf, parent, cell) = (leaf.clone(), parent.clone(), cell.clone());
            thread::spawn(move || {
                if take_all(&[&leaf, &parent]).is_err() {
                    return false;
                }
                assert_eq!(cell.begin(Transition::Release), Ok(()));
                give_back_all(&[&leaf, &parent]);
                cell.complete(Transition::Release);
                true
            })
        };
        let b = {
            let (leaf, parent) = (leaf.clone(), parent.clone());
            thread::spawn(move || take_all(&[&leaf, &parent]))
        };
        let a_took = a.join().expect("thread a");
        let b_result = b.join().expect("thread b");
        assert!(a_took || b_result.is_ok(), "the unit went to nobody");
        if let Err(level) = b_result {
            assert!(a_took, "B refused although A never held the unit");
            // B's first look at the path is not one snapshot: it may see the
            // leaf free and then the parent taken, so either level may refuse.
            assert!(level < 2, "refused at a level not on the path: {level}");
        }
        let held = i64::from(b_result.is_ok());
        for (name, bucket) in [("leaf", &leaf), ("parent", &parent)] {
            let c = assert_consistent(name, bucket);
            assert_eq!((c.held, c.remaining), (held, 1 - held), "{name}");
        }
        if a_took {
            assert_eq!(cell.get(), State::Released);
        }
    });
}

/// A commit is claimed and then aborted (its write failed) while a release
/// races it: the release either wins (before the commit or after the abort)
/// or finds the commit pending; a commit never completes alongside a release.
#[test]
fn an_aborted_commit_races_a_release() {
    loom::model(|| {
        let cell = Arc::new(StateCell::new(State::Held));
        let committer = {
            let cell = cell.clone();
            thread::spawn(move || match cell.begin(Transition::Commit) {
                Ok(()) => {
                    cell.abort(Transition::Commit);
                    Ok(())
                }
                Err(found) => Err(found),
            })
        };
        let releaser = {
            let cell = cell.clone();
            thread::spawn(move || match cell.begin(Transition::Release) {
                Ok(()) => {
                    cell.complete(Transition::Release);
                    Ok(())
                }
                Err(found) => Err(found),
            })
        };
        let commit = committer.join().expect("committer");
        let release = releaser.join().expect("releaser");
        match (commit, release) {
            // The commit claimed first and the release came after its abort.
            (Ok(()), Ok(())) => assert_eq!(cell.get(), State::Released),
            // The release came while the commit was pending: the hold stands.
            (Ok(()), Err(found)) => {
                assert_eq!(found, State::Committing);
                assert_eq!(cell.get(), State::Held);
                // ...and can still be released.
                assert_eq!(cell.begin(Transition::Release), Ok(()));
            }
            // The release claimed first.
            (Err(found), Ok(())) => {
                assert!(
                    matches!(found, State::Releasing | State::Released),
                    "the commit saw {found:?}"
                );
                assert_eq!(cell.get(), State::Released);
            }
            (Err(a), Err(b)) => panic!("both refused: commit saw {a:?}, release saw {b:?}"),
        }
    });
}

/// A policy change lowers a quota to 0 while a grant races it: the capacity
/// ends at exactly what was granted, and nothing remains to grant.
#[test]
fn lowering_a_quota_races_a_grant() {
    loom::model(|| {
        let pool = Arc::new(Bucket::new(2));
        let granter = {
            let pool = pool.clone();
            thread::spawn(move || pool.try_take())
        };
        let set = pool.set_capacity(0);
        let granted = i64::from(granter.join().expect("granter"));
        let c = assert_consistent("pool", &pool);
        assert_eq!(c.remaining, 0, "{c:?}");
        assert_eq!(c.capacity, granted, "{c:?}");
        assert!(set == 0 || set == 1, "set_capacity returned {set}");
    });
}

/// Two policy changes set the same quota at once (3 and 5, from 1): the
/// capacity must end at one of the two targets (found by this model: an
/// earlier `set_capacity` added both deltas and ended at 7).
#[test]
fn concurrent_quota_changes_end_at_one_target() {
    loom::model(|| {
        let pool = Arc::new(Bucket::new(1));
        let other = {
            let pool = pool.clone();
            thread::spawn(move || pool.set_capacity(5))
        };
        pool.set_capacity(3);
        other.join().expect("setter");
        let c = assert_consistent("pool", &pool);
        assert!(c.capacity == 3 || c.capacity == 5, "{c:?}");
    });
}

/// A quota lowered from 2 to 1 while both units are held, racing a release
/// and a grant: the returned unit is absorbed, so the pool never holds more
/// than the new quota afterwards and the counts add up.
#[test]
fn a_lowered_quota_absorbs_a_returned_unit() {
    loom::model(|| {
        let pool = Arc::new(Bucket::new(2));
        assert!(pool.try_take() && pool.try_take());
        let releaser = {
            let pool = pool.clone();
            thread::spawn(move || pool.give_back())
        };
        let granter = {
            let pool = pool.clone();
            thread::spawn(move || pool.try_take())
        };
        pool.set_capacity(1);
        releaser.join().expect("releaser");
        let granted = granter.join().expect("granter");
        let c = assert_consistent("pool", &pool);
        // Held after: one from before, plus the grant if it won the returned unit before the cut.
        assert_eq!(c.held, 1 + i64::from(granted), "{c:?}");
        if !granted {
            assert_eq!((c.capacity, c.remaining), (1, 0), "{c:?}");
        }
        assert!(c.capacity <= 2 && c.capacity >= 1, "{c:?}");
    });
}

/// The fast refusal's premise: a claimant counts its key in the presence
/// filter, then takes a unit; another claimant (not counted) takes the last
/// one. A reader that finds the bucket empty must also find the first
/// claimant's count, whichever of the two took last, so it never answers
/// "full" to a retry whose reservation it failed to see.
#[test]
fn a_reader_that_finds_the_bucket_empty_sees_the_claims_before_it() {
    loom::model(|| {
        const KEY: u64 = 5;
        let pool = Arc::new(Bucket::new(2));
        let presence = Arc::new(Presence::new(4));
        let counted = {
            let (pool, presence) = (pool.clone(), presence.clone());
            thread::spawn(move || {
                presence.add(KEY);
                assert!(pool.try_take(), "two units for two claimants");
            })
        };
        let other = {
            let pool = pool.clone();
            thread::spawn(move || assert!(pool.try_take(), "two units for two claimants"))
        };
        let reader = {
            let (pool, presence) = (pool.clone(), presence.clone());
            thread::spawn(move || {
                // Loom places this check before, between and after the takes.
                if pool.remaining() == 0 {
                    assert!(
                        presence.may_contain(KEY),
                        "the bucket is empty, so both took, but the count is not seen"
                    );
                }
            })
        };
        counted.join().expect("counted claimant");
        other.join().expect("other claimant");
        reader.join().expect("reader");
    });
}
