//! The reservation engine against a sequential model.
//!
//! One region with three service points (two share a pool), small quotas, a
//! small monthly cap and a small stock; a random sequence of reserves,
//! commits, releases (some aborted, some left pending and settled later),
//! expiries as time passes, stock received and spoiled, availability queries,
//! forgetting old reservations and quota changes. The model is plain maps and
//! counters; after every step the engine's answers, every bucket's counts and
//! every reservation's state must be the model's.
#![cfg(not(loom))]

use std::collections::{BTreeSet, HashMap};

use adminduk_inventory_core::bucket::BucketCounts;
use adminduk_inventory_core::engine::{
    Begun, BucketKey, Engine, Level, Reservation, ReserveError, ReserveRequest, Reserved, TransitionError,
};
use adminduk_inventory_core::policy::{PointKind, PointSpec, Policy, PoolSpec};
use adminduk_inventory_core::state::{State, Transition};
use chrono::{DateTime, Datelike as _, Duration, NaiveDate, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use uuid::Uuid;

const REGION: &str = "3275";
/// Code, kecamatan and pool of each service point: A and B share pool P1.
const POINTS: [(&str, &str, &str); 3] = [
    ("3275-A", "327501", "P1"),
    ("3275-B", "327502", "P1"),
    ("3275-C", "327503", "P2"),
];
const POOLS: [&str; 2] = ["P1", "P2"];
/// A point no policy names.
const UNKNOWN_POINT: &str = "3275-X";
const APPLICANTS: [&str; 3] = ["3275010101900001", "3275014112850002", "3275025505770003"];
const PURPOSES: [&str; 2] = ["ktp-el", "kia"];
const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];
/// Days the model spreads stock over when no shipment date guides it.
const PACING_DAYS: i64 = 30;

/// The first appointment day; days 0 to 3 from it cross a month's end.
fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 29).expect("date")
}

fn start_time() -> DateTime<Utc> {
    first_day().and_hms_opt(1, 0, 0).expect("time").and_utc()
}

fn point_code(point: usize) -> &'static str {
    POINTS.get(point).map_or(UNKNOWN_POINT, |p| p.0)
}

fn policy(quotas: [i64; 2], monthly_cap: i64, next_shipment: Option<NaiveDate>) -> Policy {
    Policy {
        region_code: REGION.into(),
        points: POINTS
            .iter()
            .map(|(code, district, pool)| PointSpec {
                code: (*code).into(),
                name: format!("Point {code}"),
                kind: PointKind::Kecamatan,
                district_code: (*district).into(),
                pool_code: (*pool).into(),
            })
            .collect(),
        pools: POOLS
            .iter()
            .zip(quotas)
            .map(|(code, daily_quota)| PoolSpec {
                code: (*code).into(),
                daily_quota,
            })
            .collect(),
        monthly_cap,
        next_shipment,
        version: 0,
    }
}

#[derive(Debug, Clone)]
struct Setup {
    quotas: [i64; 2],
    monthly_cap: i64,
    stock: i64,
    /// Days after the first day.
    next_shipment: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Caller {
    /// The reservation's own point.
    Own,
    /// No point given (the sweeper, an operator).
    Anyone,
    /// Another point of the region.
    Other,
    /// A point nobody knows.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The write succeeded.
    Complete,
    /// The write failed.
    Abort,
    /// The write is still in flight; a later `Settle` finishes it.
    Pending,
}

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        point: usize,
        day: u64,
        applicant: usize,
        purpose: usize,
        key: usize,
        hold_minutes: i64,
        write_fails: bool,
    },
    Transition {
        pick: Index,
        commit: bool,
        caller: Caller,
        outcome: Outcome,
    },
    Settle {
        pick: Index,
        success: bool,
    },
    /// Sends again the request of an earlier reservation (a client's retry).
    Retry {
        pick: Index,
        hold_minutes: i64,
    },
    Advance {
        minutes: i64,
        expiry: Outcome,
    },
    ReceiveStock(i64),
    Spoil(i64),
    Availability {
        point: usize,
        day: u64,
    },
    Forget,
    SetQuotas {
        quotas: [i64; 2],
        monthly_cap: i64,
    },
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        [0i64..=3, 1i64..=3],
        0i64..=6,
        prop_oneof![0i64..=10, 10i64..=200],
        prop_oneof![1 => Just(None), 2 => (1u64..=5).prop_map(Some)],
    )
        .prop_map(|(quotas, monthly_cap, stock, next_shipment)| Setup {
            quotas,
            monthly_cap,
            stock,
            next_shipment,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let caller = prop_oneof![
        4 => Just(Caller::Own),
        2 => Just(Caller::Anyone),
        1 => Just(Caller::Other),
        1 => Just(Caller::Unknown),
    ];
    let outcome = prop_oneof![
        6 => Just(Outcome::Complete),
        2 => Just(Outcome::Abort),
        2 => Just(Outcome::Pending),
    ];
    let point = prop_oneof![9 => 0..POINTS.len(), 1 => Just(POINTS.len())];
    prop_oneof![
        10 => (
            point.clone(),
            0u64..=3,
            0..APPLICANTS.len(),
            0..PURPOSES.len(),
            0..KEYS.len(),
            1i64..=180,
            prop::bool::weighted(0.1),
        )
            .prop_map(|(point, day, applicant, purpose, key, hold_minutes, write_fails)| {
                Op::Reserve {
                    point,
                    day,
                    applicant,
                    purpose,
                    key,
                    hold_minutes,
                    write_fails,
                }
            }),
        6 => (any::<Index>(), any::<bool>(), caller, outcome.clone()).prop_map(
            |(pick, commit, caller, outcome)| Op::Transition {
                pick,
                commit,
                caller,
                outcome,
            }
        ),
        2 => (any::<Index>(), prop::bool::weighted(0.7))
            .prop_map(|(pick, success)| Op::Settle { pick, success }),
        2 => (any::<Index>(), 1i64..=180)
            .prop_map(|(pick, hold_minutes)| Op::Retry { pick, hold_minutes }),
        3 => (1i64..=120, outcome.clone())
            .prop_map(|(minutes, expiry)| Op::Advance { minutes, expiry }),
        1 => (1i64..=10).prop_map(Op::ReceiveStock),
        1 => (1i64..=10).prop_map(Op::Spoil),
        1 => (point, 0u64..=3).prop_map(|(point, day)| Op::Availability { point, day }),
        1 => Just(Op::Forget),
        1 => ([0i64..=3, 0i64..=3], 0i64..=6)
            .prop_map(|(quotas, monthly_cap)| Op::SetQuotas {
                quotas,
                monthly_cap
            }),
    ]
}

/// What a reserve asks for, as indexes into the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    point: usize,
    day: NaiveDate,
    applicant: usize,
    purpose: usize,
    key: usize,
}

impl Request {
    /// Whether a retry with the same key asks for the same thing.
    fn same_as(&self, other: &Request) -> bool {
        (self.point, self.day, self.applicant, self.purpose)
            == (other.point, other.day, other.applicant, other.purpose)
    }
}

/// A bucket as the model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MBucket {
    capacity: i64,
    held: i64,
    committed: i64,
    /// The capacity a policy asked for; units coming back are absorbed while
    /// the capacity is above it (see `a_lowered_quota_holds_after_a_release`).
    target: Option<i64>,
}

impl MBucket {
    fn new(capacity: i64) -> Self {
        Self {
            capacity,
            held: 0,
            committed: 0,
            target: None,
        }
    }

    fn remaining(&self) -> i64 {
        self.capacity - self.held - self.committed
    }

    fn counts(&self) -> BucketCounts {
        BucketCounts {
            capacity: self.capacity,
            held: self.held,
            committed: self.committed,
            remaining: self.remaining(),
        }
    }

    /// What `Bucket::set_capacity` does: the target, or what was granted if more.
    fn set_capacity(&mut self, target: i64) {
        self.capacity = target.max(self.held + self.committed);
        self.target = Some(target);
    }

    /// What `Bucket::give_back` does: a held unit returns, absorbed while above the target.
    fn give_back(&mut self) {
        self.held -= 1;
        if self.target.is_some_and(|t| self.capacity > t) {
            self.capacity -= 1;
        }
    }
}

/// A reservation as the model knows it.
#[derive(Debug, Clone)]
struct MReservation {
    id: Uuid,
    req: Request,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    state: State,
    /// Pool, budget, month, stock.
    path: [BucketKey; 4],
    /// Its grant's write failed and it was undone: its units went back.
    undone: bool,
    /// Final and forgotten by `forget_final_before`.
    forgotten: bool,
}

impl MReservation {
    fn known(&self) -> bool {
        !self.undone && !self.forgotten
    }
}

/// The answer to a reserve, as comparable values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReserveAnswer {
    Granted,
    Again(Uuid),
    UnknownPoint,
    Exhausted(Level),
    ApplicantHolds(Uuid),
    KeyReused(Uuid),
    Contended,
}

/// The answer to a `begin`, as comparable values.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BeginAnswer {
    Won,
    AlreadyDone,
    NotFound,
    WrongPoint(Uuid),
    NotHeld(Uuid, State),
}

#[derive(Debug)]
struct Model {
    quotas: [i64; 2],
    monthly_cap: i64,
    next_shipment: Option<NaiveDate>,
    version: i64,
    now: DateTime<Utc>,
    buckets: HashMap<BucketKey, MBucket>,
    reservations: Vec<MReservation>,
    by_id: HashMap<Uuid, usize>,
    keys: HashMap<usize, Uuid>,
    pending: Vec<(Uuid, Transition)>,
}

fn stock_key() -> BucketKey {
    BucketKey::Stock {
        region: REGION.into(),
    }
}

/// The pacing rule, written out again: the stock on hand spread over the days
/// to the next shipment (a month when none is known or it is not ahead), never
/// more than the pools' quotas together.
fn model_budget(stock: i64, daily_total: i64, day: NaiveDate, next: Option<NaiveDate>) -> i64 {
    let days = match next {
        Some(next) if (next - day).num_days() >= 1 => (next - day).num_days(),
        _ => PACING_DAYS,
    };
    (stock.max(0) / days).min(daily_total).max(0)
}

impl Model {
    fn new(setup: &Setup) -> Self {
        let mut buckets = HashMap::new();
        buckets.insert(stock_key(), MBucket::new(setup.stock));
        Self {
            quotas: setup.quotas,
            monthly_cap: setup.monthly_cap,
            next_shipment: setup.next_shipment.map(|n| first_day() + chrono::Days::new(n)),
            version: 1,
            now: start_time(),
            buckets,
            reservations: Vec::new(),
            by_id: HashMap::new(),
            keys: HashMap::new(),
            pending: Vec::new(),
        }
    }

    fn bucket(&self, key: &BucketKey) -> MBucket {
        *self.buckets.get(key).expect("the model knows the bucket")
    }

    fn bucket_mut(&mut self, key: &BucketKey) -> &mut MBucket {
        self.buckets.get_mut(key).expect("the model knows the bucket")
    }

    fn pool_index(point: usize) -> usize {
        usize::from(POINTS[point].2 == POOLS[1])
    }

    /// The path of a known point on a day; its buckets are made on first use,
    /// the day's budget from the stock remaining at that moment.
    fn touch_path(&mut self, point: usize, day: NaiveDate) -> [BucketKey; 4] {
        let pool = Self::pool_index(point);
        let keys = [
            BucketKey::Pool {
                region: REGION.into(),
                pool: POOLS[pool].into(),
                day,
            },
            BucketKey::Budget {
                region: REGION.into(),
                day,
            },
            BucketKey::Month {
                region: REGION.into(),
                year: day.year(),
                month: day.month(),
            },
            stock_key(),
        ];
        let quota = self.quotas[pool];
        self.buckets
            .entry(keys[0].clone())
            .or_insert_with(|| MBucket::new(quota));
        let stock = self.bucket(&stock_key()).remaining();
        let daily_total = self.quotas.iter().sum();
        let budget = model_budget(stock, daily_total, day, self.next_shipment);
        self.buckets
            .entry(keys[1].clone())
            .or_insert_with(|| MBucket::new(budget));
        let cap = self.monthly_cap;
        self.buckets
            .entry(keys[2].clone())
            .or_insert_with(|| MBucket::new(cap));
        keys
    }

    fn reservation(&self, id: &Uuid) -> &MReservation {
        &self.reservations[self.by_id[id]]
    }

    fn reservation_mut(&mut self, id: &Uuid) -> &mut MReservation {
        let i = self.by_id[id];
        &mut self.reservations[i]
    }

    /// What a reserve must answer; on `Granted` the caller records the grant.
    fn expect_reserve(&mut self, req: Request) -> ReserveAnswer {
        if let Some(id) = self.keys.get(&req.key) {
            let r = self.reservation(id);
            return if r.req.same_as(&req) {
                ReserveAnswer::Again(r.id)
            } else {
                ReserveAnswer::KeyReused(r.id)
            };
        }
        if req.point >= POINTS.len() {
            return ReserveAnswer::UnknownPoint;
        }
        let path = self.touch_path(req.point, req.day);
        if let Some(holder) = self.reservations.iter().find(|r| {
            r.known()
                && (r.req.applicant, r.req.purpose) == (req.applicant, req.purpose)
                && !r.state.is_final()
        }) {
            return ReserveAnswer::ApplicantHolds(holder.id);
        }
        let levels = [Level::Pool, Level::Budget, Level::Month, Level::Stock];
        for (key, level) in path.iter().zip(levels) {
            if self.bucket(key).remaining() <= 0 {
                return ReserveAnswer::Exhausted(level);
            }
        }
        ReserveAnswer::Granted
    }

    /// Releases or consumes a reservation's units.
    fn settle_units(&mut self, id: &Uuid, transition: Transition) {
        let path = self.reservation(id).path.clone();
        for key in &path {
            let b = self.bucket_mut(key);
            if transition == Transition::Commit {
                b.held -= 1;
                b.committed += 1;
            } else {
                b.give_back();
            }
        }
    }

    fn expect_begin(&self, id: &Uuid, transition: Transition, caller: Option<&str>) -> BeginAnswer {
        let r = self.reservation(id);
        if !r.known() {
            return BeginAnswer::NotFound;
        }
        if caller.is_some_and(|c| c != point_code(r.req.point)) {
            return BeginAnswer::WrongPoint(r.id);
        }
        if r.state == State::Held {
            BeginAnswer::Won
        } else if transition != Transition::Expire && r.state == transition.done() {
            BeginAnswer::AlreadyDone
        } else {
            BeginAnswer::NotHeld(r.id, r.state)
        }
    }
}

fn reserve_answer(result: &Result<Reserved, ReserveError>) -> ReserveAnswer {
    match result {
        Ok(r) if r.fresh => ReserveAnswer::Granted,
        Ok(r) => ReserveAnswer::Again(r.reservation.id),
        Err(ReserveError::UnknownPoint) => ReserveAnswer::UnknownPoint,
        Err(ReserveError::Exhausted(level)) => ReserveAnswer::Exhausted(*level),
        Err(ReserveError::ApplicantHolds(r)) => ReserveAnswer::ApplicantHolds(r.id),
        Err(ReserveError::KeyReused(r)) => ReserveAnswer::KeyReused(r.id),
        Err(ReserveError::Contended) => ReserveAnswer::Contended,
    }
}

fn begin_answer(result: &Result<Begun, TransitionError>) -> BeginAnswer {
    match result {
        Ok(Begun::Won(_)) => BeginAnswer::Won,
        Ok(Begun::AlreadyDone(_)) => BeginAnswer::AlreadyDone,
        Err(TransitionError::NotFound) => BeginAnswer::NotFound,
        Err(TransitionError::WrongPoint(r)) => BeginAnswer::WrongPoint(r.id),
        Err(TransitionError::NotHeld(r, state)) => BeginAnswer::NotHeld(r.id, *state),
    }
}

/// A reserve on the engine and the model; with `write_fails`, a grant is undone
/// as the service does when its row could not be written.
fn reserve(
    engine: &Engine,
    model: &mut Model,
    req: Request,
    hold_minutes: i64,
    write_fails: bool,
) -> Result<(), TestCaseError> {
    let expires_at = model.now + Duration::minutes(hold_minutes);
    let request = ReserveRequest {
        point_code: point_code(req.point),
        day: req.day,
        applicant: APPLICANTS[req.applicant],
        purpose: PURPOSES[req.purpose],
        idempotency_key: KEYS[req.key],
        expires_at,
    };
    let result = engine.reserve(&request, model.now);
    let expected = model.expect_reserve(req);
    prop_assert_eq!(&reserve_answer(&result), &expected, "reserve {:?}", request);
    if expected != ReserveAnswer::Granted {
        return Ok(());
    }
    let granted = result.expect("granted").reservation;
    prop_assert!(!model.by_id.contains_key(&granted.id), "a fresh id was reused");
    prop_assert_eq!(granted.state(), State::Held);
    prop_assert!(!granted.is_durable(), "a fresh grant is not yet written");
    prop_assert_eq!(granted.expires_at, expires_at);
    let path = model.touch_path(req.point, req.day);
    prop_assert_eq!(granted.path.keys().to_vec(), path.to_vec());
    for key in &path {
        model.bucket_mut(key).held += 1;
    }
    // The pool never grants more than its quota, nor the month more than its
    // cap (save after the known case where a lowered quota stays too high).
    let limits = [
        (&path[0], model.quotas[Model::pool_index(req.point)]),
        (&path[2], model.monthly_cap),
    ];
    for (key, limit) in limits {
        let b = model.bucket(key);
        {
            prop_assert!(
                b.held + b.committed <= limit,
                "{} granted {} over its limit {}",
                key.id(),
                b.held + b.committed,
                limit
            );
        }
    }
    model.by_id.insert(granted.id, model.reservations.len());
    model.reservations.push(MReservation {
        id: granted.id,
        req,
        expires_at,
        created_at: model.now,
        state: State::Held,
        path: path.clone(),
        undone: write_fails,
        forgotten: false,
    });
    if write_fails {
        engine.undo_reserve(&granted);
        for key in &path {
            model.bucket_mut(key).give_back();
        }
    } else {
        granted.mark_durable();
        model.keys.insert(req.key, granted.id);
    }
    Ok(())
}

/// Finishes a transition this caller won: written, failed, or left in flight.
fn finish(
    engine: &Engine,
    model: &mut Model,
    won: &Reservation,
    transition: Transition,
    outcome: Outcome,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(won.state(), transition.pending());
    match outcome {
        Outcome::Complete => {
            engine.complete(won, transition);
            model.reservation_mut(&won.id).state = transition.done();
            model.settle_units(&won.id, transition);
        }
        Outcome::Abort => engine.abort(won, transition),
        Outcome::Pending => {
            model.reservation_mut(&won.id).state = transition.pending();
            model.pending.push((won.id, transition));
        }
    }
    Ok(())
}

/// Runs one operation on the engine and the model, comparing every answer.
fn step(engine: &Engine, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        &Op::Reserve {
            point,
            day,
            applicant,
            purpose,
            key,
            hold_minutes,
            write_fails,
        } => {
            let req = Request {
                point,
                day: first_day() + chrono::Days::new(day),
                applicant,
                purpose,
                key,
            };
            reserve(engine, model, req, hold_minutes, write_fails)?;
        }
        &Op::Retry { pick, hold_minutes } => {
            if model.reservations.is_empty() {
                return Ok(());
            }
            let req = model.reservations[pick.index(model.reservations.len())].req;
            reserve(engine, model, req, hold_minutes, false)?;
        }
        Op::Transition {
            pick,
            commit,
            caller,
            outcome,
        } => {
            if model.reservations.is_empty() {
                return Ok(());
            }
            let r = model.reservations[pick.index(model.reservations.len())].clone();
            let transition = if *commit {
                Transition::Commit
            } else {
                Transition::Release
            };
            let caller = match caller {
                Caller::Own => Some(point_code(r.req.point)),
                Caller::Anyone => None,
                Caller::Other => Some(point_code((r.req.point + 1) % POINTS.len())),
                Caller::Unknown => Some(UNKNOWN_POINT),
            };
            let result = engine.begin(&r.id, transition, caller);
            let expected = model.expect_begin(&r.id, transition, caller);
            prop_assert_eq!(
                &begin_answer(&result),
                &expected,
                "begin {:?} of {:?} by {:?}",
                transition,
                r,
                caller
            );
            if let Ok(Begun::Won(won)) = result {
                prop_assert_eq!(won.id, r.id);
                finish(engine, model, &won, transition, *outcome)?;
            }
        }
        Op::Settle { pick, success } => {
            if model.pending.is_empty() {
                return Ok(());
            }
            let (id, transition) = model.pending.remove(pick.index(model.pending.len()));
            let reservation = engine.reservation(&id).expect("a pending reservation is known");
            prop_assert_eq!(reservation.state(), transition.pending());
            if *success {
                engine.complete(&reservation, transition);
                model.reservation_mut(&id).state = transition.done();
                model.settle_units(&id, transition);
            } else {
                engine.abort(&reservation, transition);
                model.reservation_mut(&id).state = State::Held;
            }
        }
        &Op::Advance { minutes, expiry } => {
            model.now += Duration::minutes(minutes);
            let now = model.now;
            let due: BTreeSet<Uuid> = engine.due_for_expiry(now).iter().map(|r| r.id).collect();
            let expected: BTreeSet<Uuid> = model
                .reservations
                .iter()
                .filter(|r| r.known() && r.state == State::Held && r.expires_at <= now)
                .map(|r| r.id)
                .collect();
            prop_assert_eq!(&due, &expected, "due for expiry at {}", now);
            for id in &due {
                let begun = engine.begin(id, Transition::Expire, None);
                let Ok(Begun::Won(won)) = begun else {
                    return Err(TestCaseError::fail(format!("expiry of {id} lost: {begun:?}")));
                };
                finish(engine, model, &won, Transition::Expire, expiry)?;
            }
        }
        &Op::ReceiveStock(n) => {
            prop_assert_eq!(engine.stock(REGION).adjust_capacity(n), Ok(()));
            model.bucket_mut(&stock_key()).capacity += n;
        }
        &Op::Spoil(n) => {
            let result = engine.stock(REGION).adjust_capacity(-n);
            let stock = model.bucket_mut(&stock_key());
            let remaining = stock.remaining();
            if n > remaining {
                prop_assert_eq!(result, Err(remaining));
            } else {
                prop_assert_eq!(result, Ok(()));
                stock.capacity -= n;
            }
        }
        &Op::Availability { point, day } => {
            let day = first_day() + chrono::Days::new(day);
            let answer = engine.availability(point_code(point), day);
            let expected = (point < POINTS.len()).then(|| {
                let path = model.touch_path(point, day);
                let remaining = path
                    .iter()
                    .map(|k| model.bucket(k).remaining())
                    .min()
                    .unwrap_or(0)
                    .max(0);
                (remaining, model.bucket(&path[0]).capacity)
            });
            prop_assert_eq!(
                answer,
                expected,
                "availability at {} on {}",
                point_code(point),
                day
            );
        }
        Op::Forget => {
            let now = model.now;
            let forgotten = engine.forget_final_before(now);
            let mut expected = 0;
            for r in &mut model.reservations {
                if r.known() && r.state.is_final() && r.created_at < now {
                    r.forgotten = true;
                    expected += 1;
                    if model.keys.get(&r.req.key) == Some(&r.id) {
                        model.keys.remove(&r.req.key);
                    }
                }
            }
            prop_assert_eq!(forgotten, expected);
        }
        &Op::SetQuotas { quotas, monthly_cap } => {
            let set = engine
                .set_policy(policy(quotas, monthly_cap, model.next_shipment))
                .map_err(|v| TestCaseError::fail(format!("policy refused: {v:?}")))?;
            model.version += 1;
            prop_assert_eq!(set.version, model.version);
            model.quotas = quotas;
            model.monthly_cap = monthly_cap;
            for (key, bucket) in &mut model.buckets {
                match key {
                    BucketKey::Pool { pool, .. } => {
                        let i = POOLS.iter().position(|p| p == pool).expect("a known pool");
                        bucket.set_capacity(quotas[i]);
                    }
                    BucketKey::Month { .. } => bucket.set_capacity(monthly_cap),
                    BucketKey::Budget { .. } | BucketKey::Stock { .. } => {}
                }
            }
        }
    }
    Ok(())
}

/// What must hold after every step.
fn check_invariants(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    let counts: HashMap<BucketKey, BucketCounts> = engine.bucket_counts().into_iter().collect();
    for (key, c) in &counts {
        prop_assert!(c.remaining >= 0, "{}: {:?}", key.id(), c);
        prop_assert!(c.held >= 0 && c.committed >= 0, "{}: {:?}", key.id(), c);
        prop_assert_eq!(
            c.held + c.committed + c.remaining,
            c.capacity,
            "{}: counts do not add up",
            key.id()
        );
    }
    let expected: HashMap<BucketKey, BucketCounts> = model
        .buckets
        .iter()
        .map(|(k, b)| (k.clone(), b.counts()))
        .collect();
    prop_assert_eq!(&counts, &expected, "buckets");

    // Every bucket's held and committed units are exactly the reservations on it.
    for (key, c) in &counts {
        let on_it = || {
            model
                .reservations
                .iter()
                .filter(move |r| !r.undone && r.path.contains(key))
        };
        let held = on_it().filter(|r| !r.state.is_final()).count() as i64;
        let committed = on_it().filter(|r| r.state == State::Committed).count() as i64;
        prop_assert_eq!((c.held, c.committed), (held, committed), "{}", key.id());
    }
    let active = model
        .reservations
        .iter()
        .filter(|r| r.known() && !r.state.is_final())
        .count();
    prop_assert_eq!(counts[&stock_key()].held, active as i64, "stock held");
    prop_assert_eq!(engine.held_count(REGION), active);

    // One active hold per applicant and purpose.
    let mut holders = BTreeSet::new();
    for r in model
        .reservations
        .iter()
        .filter(|r| r.known() && !r.state.is_final())
    {
        prop_assert!(
            holders.insert((r.req.applicant, r.req.purpose)),
            "two holds for {:?}",
            r
        );
    }

    for r in &model.reservations {
        let found = engine.reservation(&r.id);
        if r.known() {
            let found = found.ok_or_else(|| TestCaseError::fail(format!("lost {r:?}")))?;
            prop_assert_eq!(found.state(), r.state, "state of {:?}", r);
            prop_assert!(found.is_durable(), "{:?} was written", r);
            prop_assert_eq!(found.point_code(), point_code(r.req.point));
            prop_assert_eq!(found.idempotency_key.as_str(), KEYS[r.req.key]);
        } else {
            prop_assert!(found.is_none(), "{:?} should be gone", r);
        }
    }
    Ok(())
}

fn run(setup: &Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    let engine = Engine::new();
    let next_shipment = setup.next_shipment.map(|n| first_day() + chrono::Days::new(n));
    let set = engine
        .set_policy(policy(setup.quotas, setup.monthly_cap, next_shipment))
        .map_err(|v| TestCaseError::fail(format!("policy refused: {v:?}")))?;
    prop_assert_eq!(set.version, 1);
    prop_assert_eq!(engine.stock(REGION).adjust_capacity(setup.stock), Ok(()));
    let mut model = Model::new(setup);
    check_invariants(&engine, &model)?;
    for op in ops {
        step(&engine, &mut model, op)?;
        check_invariants(&engine, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_follows_the_model(
        setup in setup_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..=60),
    ) {
        run(&setup, &ops)?;
    }
}

/// A quota lowered below what is granted stays at the units granted then,
/// and follows the policy down as they come back, so freed units are not
/// granted again above the new quota. Found by `the_engine_follows_the_model`
/// once its model checked pools against the quota in force.
#[test]
fn a_lowered_quota_holds_after_a_release() {
    let engine = Engine::new();
    let next_shipment = Some(first_day() + chrono::Days::new(1));
    engine
        .set_policy(policy([2, 3], 10, next_shipment))
        .expect("valid policy");
    engine.stock(REGION).adjust_capacity(100).expect("stock");
    let req = |applicant: &'static str, key: &'static str| ReserveRequest {
        point_code: "3275-A",
        day: first_day(),
        applicant,
        purpose: "ktp-el",
        idempotency_key: key,
        expires_at: start_time() + Duration::hours(1),
    };
    let first = engine
        .reserve(&req(APPLICANTS[0], "k0"), start_time())
        .expect("granted");
    engine
        .reserve(&req(APPLICANTS[1], "k1"), start_time())
        .expect("granted");
    // The pool's quota drops to 1 with 2 held: its capacity stays at 2.
    engine
        .set_policy(policy([1, 3], 10, next_shipment))
        .expect("valid policy");
    let Ok(Begun::Won(won)) = engine.begin(&first.reservation.id, Transition::Release, None) else {
        panic!("release wins");
    };
    engine.complete(&won, Transition::Release);
    // One unit is held and the quota is 1: the pool is full.
    let third = engine.reserve(&req(APPLICANTS[2], "k2"), start_time());
    let pool = engine
        .bucket(&BucketKey::Pool {
            region: REGION.into(),
            pool: "P1".into(),
            day: first_day(),
        })
        .expect("pool")
        .counts();
    assert!(
        matches!(third, Err(ReserveError::Exhausted(Level::Pool))),
        "granted over the quota of 1: {third:?}, pool {pool:?}"
    );
}
