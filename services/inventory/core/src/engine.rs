//! The reservation engine: buckets in a tree per region, reservations and
//! their indexes, all in lock-free maps. It decides; the caller persists
//! (and undoes a decision whose write failed).

use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Datelike as _, Days, NaiveDate, Utc};
use foldhash::fast::RandomState;
use uuid::Uuid;

use crate::bucket::{Bucket, BucketCounts, consume_all, give_back_all, take_all};
use crate::policy::{PointSpec, Policy, PolicyViolation, pacing_budget};
use crate::presence::{DEFAULT_SLOTS, Presence};
use crate::state::{State, StateCell, Transition};

type Map<K, V> = papaya::HashMap<K, V, RandomState>;

fn map<K, V>() -> Map<K, V> {
    papaya::HashMap::builder().hasher(RandomState::default()).build()
}

/// Identifies a bucket, in memory and in the database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    /// A region's stock: on hand = capacity - committed; grants hold from it.
    Stock {
        /// Regency code.
        region: String,
    },
    /// A region's monthly cap.
    Month {
        /// Regency code.
        region: String,
        /// Year.
        year: i32,
        /// Month, 1 to 12.
        month: u32,
    },
    /// A region's paced budget for one day.
    Budget {
        /// Regency code.
        region: String,
        /// The day.
        day: NaiveDate,
    },
    /// A pool's quota for one day: the leaf.
    Pool {
        /// Regency code.
        region: String,
        /// Pool code.
        pool: String,
        /// The day.
        day: NaiveDate,
    },
}

impl BucketKey {
    /// The stored id, e.g. `pool:3275:3275-KEC-01:2026-11-23`.
    pub fn id(&self) -> String {
        match self {
            Self::Stock { region } => format!("stock:{region}"),
            Self::Month { region, year, month } => format!("month:{region}:{year:04}-{month:02}"),
            Self::Budget { region, day } => format!("budget:{region}:{day}"),
            Self::Pool { region, pool, day } => format!("pool:{region}:{pool}:{day}"),
        }
    }

    /// Parses a stored id.
    pub fn parse(id: &str) -> Option<Self> {
        let parts: Vec<&str> = id.split(':').collect();
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        match parts.as_slice() {
            ["stock", region] => Some(Self::Stock {
                region: (*region).to_owned(),
            }),
            ["month", region, ym] => {
                let (y, m) = ym.split_once('-')?;
                Some(Self::Month {
                    region: (*region).to_owned(),
                    year: y.parse().ok()?,
                    month: m.parse().ok().filter(|m| (1..=12).contains(m))?,
                })
            }
            ["budget", region, d] => Some(Self::Budget {
                region: (*region).to_owned(),
                day: day(d)?,
            }),
            ["pool", region, pool, d] => Some(Self::Pool {
                region: (*region).to_owned(),
                pool: (*pool).to_owned(),
                day: day(d)?,
            }),
            _ => None,
        }
    }

    /// The region the bucket belongs to.
    pub fn region(&self) -> &str {
        match self {
            Self::Stock { region }
            | Self::Month { region, .. }
            | Self::Budget { region, .. }
            | Self::Pool { region, .. } => region,
        }
    }
}

/// Which level of the tree refused a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// The service point's (pool's) quota for the day.
    Pool,
    /// The region's paced budget for the day.
    Budget,
    /// The region's monthly cap.
    Month,
    /// The region's stock.
    Stock,
}

const LEVELS: [Level; 4] = [Level::Pool, Level::Budget, Level::Month, Level::Stock];

/// A service point as the engine knows it.
#[derive(Debug)]
pub struct Point {
    /// Its specification.
    pub spec: PointSpec,
    /// Its region's code.
    pub region: String,
}

/// The buckets a grant at one point on one day takes from, leaf first.
#[derive(Debug)]
pub struct Path {
    /// The service point.
    pub point: Arc<Point>,
    /// The day.
    pub day: NaiveDate,
    buckets: [Arc<Bucket>; 4],
}

/// Where a path is found: the service point's code and the day.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PathKey(String, NaiveDate);

/// A [`PathKey`], borrowed: looks a path up without allocating. Hashes as
/// `PathKey` does (a `&str` hashes as the `String` it borrows from).
#[derive(Debug, Hash)]
struct PathRef<'a>(&'a str, NaiveDate);

impl papaya::Equivalent<PathKey> for PathRef<'_> {
    fn equivalent(&self, key: &PathKey) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// The keys of the four buckets of a point's path on a day, leaf first.
fn path_keys(point: &Point, day: NaiveDate) -> [BucketKey; 4] {
    let region = point.region.clone();
    [
        BucketKey::Pool {
            region: region.clone(),
            pool: point.spec.pool_code.clone(),
            day,
        },
        BucketKey::Budget {
            region: region.clone(),
            day,
        },
        BucketKey::Month {
            region: region.clone(),
            year: day.year(),
            month: day.month(),
        },
        BucketKey::Stock { region },
    ]
}

impl Path {
    /// Keys of pool, budget, month and stock: built when asked (rarely: on
    /// grants' writes), so a path carries no copies of them.
    pub fn keys(&self) -> [BucketKey; 4] {
        path_keys(&self.point, self.day)
    }

    fn refs(&self) -> [&Bucket; 4] {
        [
            &self.buckets[0],
            &self.buckets[1],
            &self.buckets[2],
            &self.buckets[3],
        ]
    }

    /// The first level with nothing left, if any: four loads, no write.
    #[inline]
    fn empty_level(&self) -> Option<Level> {
        self.buckets
            .iter()
            .position(|b| b.remaining() <= 0)
            .map(|level| LEVELS[level])
    }

    /// What can still be granted here: the least of the four.
    pub fn remaining(&self) -> i64 {
        self.buckets
            .iter()
            .map(|b| b.remaining())
            .min()
            .unwrap_or(0)
            .max(0)
    }

    /// The pool's quota for the day.
    pub fn quota(&self) -> i64 {
        self.buckets[0].counts().capacity
    }

    /// The buckets with their keys.
    pub fn buckets(&self) -> impl Iterator<Item = (BucketKey, &Bucket)> {
        self.keys().into_iter().zip(self.buckets.iter().map(|b| &**b))
    }
}

/// One reserved unit.
#[derive(Debug)]
pub struct Reservation {
    /// Identifier.
    pub id: Uuid,
    /// Where and when, with the buckets it holds from.
    pub path: Arc<Path>,
    /// The applicant's NIK (kept whole in memory only, for the one-hold rule).
    pub applicant: String,
    /// What the blank is for.
    pub purpose: String,
    /// The client's idempotency key.
    pub idempotency_key: String,
    /// When a hold not consumed by then expires.
    pub expires_at: DateTime<Utc>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    state: StateCell,
    durable: AtomicBool,
}

impl Reservation {
    /// Whether its grant has been made durable (acknowledged grants only are shown to callers).
    pub fn is_durable(&self) -> bool {
        self.durable.load(Ordering::Acquire)
    }

    /// Marks its grant durable, once the write committed.
    pub fn mark_durable(&self) {
        self.durable.store(true, Ordering::Release);
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.state.get()
    }

    /// The service point's code.
    pub fn point_code(&self) -> &str {
        &self.path.point.spec.code
    }

    /// A new hold of `req` on `path`, made `now`, not yet durable.
    fn held(id: Uuid, path: Arc<Path>, req: &ReserveRequest<'_>, now: DateTime<Utc>) -> Self {
        Self {
            id,
            path,
            applicant: req.applicant.to_owned(),
            purpose: req.purpose.to_owned(),
            idempotency_key: req.idempotency_key.to_owned(),
            expires_at: req.expires_at,
            created_at: now,
            state: StateCell::new(State::Held),
            durable: AtomicBool::new(false),
        }
    }

    fn same_request(&self, req: &ReserveRequest<'_>) -> bool {
        self.point_code() == req.point_code
            && self.path.day == req.day
            && self.applicant == req.applicant
            && self.purpose == req.purpose
    }
}

/// An applicant and purpose, borrowed: looks up the `(String, String)` keys
/// of the one-hold index without allocating them.
#[derive(Debug, Hash)]
struct ApplicantRef<'a>(&'a str, &'a str);

impl papaya::Equivalent<(String, String)> for ApplicantRef<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// A request for one unit.
#[derive(Debug, Clone, Copy)]
pub struct ReserveRequest<'a> {
    /// Service point code.
    pub point_code: &'a str,
    /// Appointment day.
    pub day: NaiveDate,
    /// Applicant NIK.
    pub applicant: &'a str,
    /// Purpose, e.g. `ktp-el`.
    pub purpose: &'a str,
    /// Idempotency key.
    pub idempotency_key: &'a str,
    /// Expiry of the hold.
    pub expires_at: DateTime<Utc>,
}

/// A reservation the engine granted or found.
#[derive(Debug, Clone)]
pub struct Reserved {
    /// The reservation.
    pub reservation: Arc<Reservation>,
    /// True when granted by this call (and so still to be persisted).
    pub fresh: bool,
}

/// Why a unit was not granted.
#[derive(Debug, Clone)]
pub enum ReserveError {
    /// No such service point.
    UnknownPoint,
    /// Nothing left at this level.
    Exhausted(Level),
    /// The applicant already holds a unit for this purpose.
    ApplicantHolds(Arc<Reservation>),
    /// The idempotency key was used for a different request.
    KeyReused(Arc<Reservation>),
    /// Another request with the same key or applicant is being decided; retry.
    Contended,
}

/// Why a commit, release or expiry did not happen.
#[derive(Debug, Clone)]
pub enum TransitionError {
    /// No such reservation.
    NotFound,
    /// The caller's service point is not the reservation's.
    WrongPoint(Arc<Reservation>),
    /// The reservation is not held any more (or another transition is being written).
    NotHeld(Arc<Reservation>, State),
}

/// The outcome of starting a transition.
#[derive(Debug, Clone)]
pub enum Begun {
    /// This caller won; persist, then `complete` (or `abort`).
    Won(Arc<Reservation>),
    /// Already done by an earlier call of the same kind (a retried commit or release): nothing to do.
    AlreadyDone(Arc<Reservation>),
}

/// A reservation as stored, for rebuilding the engine.
#[derive(Debug, Clone)]
pub struct StoredReservation {
    /// Identifier.
    pub id: Uuid,
    /// Service point code.
    pub point_code: String,
    /// Day.
    pub day: NaiveDate,
    /// Applicant NIK.
    pub applicant: String,
    /// Purpose.
    pub purpose: String,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Held, committed, released or expired.
    pub state: State,
}

/// Other dates and points with room, offered when a date is full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suggestions {
    /// The next days with room at the same point.
    pub next_dates: Vec<NaiveDate>,
    /// Other points of the region with room on the same day, nearest first, with
    /// what remains; one point per quota pool, as the points of a pool share its room.
    pub other_points: Vec<(String, i64)>,
}

#[derive(Debug)]
struct Region {
    policy: Policy,
    stock: Arc<Bucket>,
    /// Pool quotas by code, and their sum, resolved once per policy so
    /// building a path costs the same in a region of 14 points or 7,277.
    quotas: std::collections::HashMap<String, i64>,
    daily_total: i64,
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    regions: Map<String, Arc<Region>>,
    points: Map<String, Arc<Point>>,
    buckets: Map<BucketKey, Arc<Bucket>>,
    paths: Map<PathKey, Arc<Path>>,
    reservations: Map<Uuid, Arc<Reservation>>,
    by_key: Map<String, Uuid>,
    by_applicant: Map<(String, String), Uuid>,
    /// Counts the keys of `by_key` and the applicants of `by_applicant` by
    /// hash, so a refusal proves a request has neither without the lookups.
    presence: Presence,
    /// Two independent hash functions, so a key and an applicant that happen
    /// to be the same text land in different counters.
    key_hasher: RandomState,
    applicant_hasher: RandomState,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An empty engine.
    pub fn new() -> Self {
        Self {
            regions: map(),
            points: map(),
            buckets: map(),
            paths: map(),
            reservations: map(),
            by_key: map(),
            by_applicant: map(),
            presence: Presence::new(DEFAULT_SLOTS),
            key_hasher: RandomState::default(),
            applicant_hasher: RandomState::default(),
        }
    }

    fn key_hash(&self, key: &str) -> u64 {
        self.key_hasher.hash_one(key)
    }

    /// By NIK alone (not purpose): one applicant's holds for several purposes
    /// share a counter, which costs nothing but a rare trip to the exact lookups.
    fn applicant_hash(&self, applicant: &str) -> u64 {
        self.applicant_hasher.hash_one(applicant)
    }

    /// The stock bucket of a region, created empty if it has none yet.
    pub fn stock(&self, region: &str) -> Arc<Bucket> {
        let key = BucketKey::Stock {
            region: region.to_owned(),
        };
        self.buckets
            .pin()
            .get_or_insert_with(key, || Arc::new(Bucket::new(0)))
            .clone()
    }

    /// Installs or replaces a region's policy. Quotas of days already open
    /// follow the new policy as far as the units already granted allow.
    pub fn set_policy(&self, policy: Policy) -> Result<Policy, Vec<PolicyViolation>> {
        self.install_policy(policy, false)
    }

    /// Reinstalls a stored policy with its stored version (start-up).
    pub fn restore_policy(&self, policy: Policy) -> Result<Policy, Vec<PolicyViolation>> {
        self.install_policy(policy, true)
    }

    fn install_policy(&self, mut policy: Policy, keep_version: bool) -> Result<Policy, Vec<PolicyViolation>> {
        policy.check()?;
        let region_code = policy.region_code.clone();
        let stock = self.stock(&region_code);
        let previous = self.regions.pin().get(&region_code).cloned();
        if !keep_version {
            policy.version = previous.as_ref().map_or(1, |r| r.policy.version + 1);
        }
        let points = self.points.pin();
        for spec in &policy.points {
            points.insert(
                spec.code.clone(),
                Arc::new(Point {
                    spec: spec.clone(),
                    region: region_code.clone(),
                }),
            );
        }
        if let Some(previous) = &previous {
            for old in &previous.policy.points {
                if !policy.points.iter().any(|p| p.code == old.code) {
                    points.remove(&old.code);
                }
            }
        }
        let quotas: std::collections::HashMap<&str, i64> = policy
            .pools
            .iter()
            .map(|p| (p.code.as_str(), p.daily_quota))
            .collect();
        for (key, bucket) in self.buckets.pin().iter() {
            match key {
                BucketKey::Pool { region, pool, .. } if *region == region_code => {
                    bucket.set_capacity(quotas.get(pool.as_str()).copied().unwrap_or(0));
                }
                BucketKey::Month { region, .. } if *region == region_code => {
                    bucket.set_capacity(policy.monthly_cap);
                }
                _ => {}
            }
        }
        self.regions.pin().insert(
            region_code,
            Arc::new(Region {
                quotas: policy
                    .pools
                    .iter()
                    .map(|p| (p.code.clone(), p.daily_quota))
                    .collect(),
                daily_total: policy.daily_total(),
                policy: policy.clone(),
                stock,
            }),
        );
        // Paths name pools: rebuild them from the new policy on next use.
        self.paths.pin().clear();
        Ok(policy)
    }

    /// A region's policy.
    pub fn policy(&self, region: &str) -> Option<Policy> {
        self.regions.pin().get(region).map(|r| r.policy.clone())
    }

    /// Codes of regions with a policy.
    pub fn regions(&self) -> Vec<String> {
        self.regions.pin().keys().cloned().collect()
    }

    /// A service point.
    pub fn point(&self, code: &str) -> Option<Arc<Point>> {
        self.points.pin().get(code).cloned()
    }

    fn bucket_or(&self, key: BucketKey, capacity: impl FnOnce() -> i64) -> Arc<Bucket> {
        self.buckets
            .pin()
            .get_or_insert_with(key, || Arc::new(Bucket::new(capacity())))
            .clone()
    }

    /// A bucket, if it exists.
    pub fn bucket(&self, key: &BucketKey) -> Option<Arc<Bucket>> {
        self.buckets.pin().get(key).cloned()
    }

    /// The path for a point and day, built on first use.
    pub fn path(&self, point: &Arc<Point>, day: NaiveDate) -> Option<Arc<Path>> {
        if let Some(path) = self.paths.pin().get(&PathRef(&point.spec.code, day)) {
            return Some(path.clone());
        }
        let region = self.regions.pin().get(&point.region)?.clone();
        let policy = &region.policy;
        let keys = path_keys(point, day);
        let pool = self.bucket_or(keys[0].clone(), || {
            region.quotas.get(&point.spec.pool_code).copied().unwrap_or(0)
        });
        let budget = self.bucket_or(keys[1].clone(), || {
            pacing_budget(
                region.stock.remaining(),
                region.daily_total,
                day,
                policy.next_shipment,
            )
        });
        let month = self.bucket_or(keys[2].clone(), || policy.monthly_cap);
        let path = Arc::new(Path {
            point: point.clone(),
            day,
            buckets: [pool, budget, month, region.stock.clone()],
        });
        Some(
            self.paths
                .pin()
                .get_or_insert(PathKey(point.spec.code.clone(), day), path)
                .clone(),
        )
    }

    /// Raises the paced budgets of open days (from `from_day` on) after stock
    /// arrived: each to what pacing gives now, plus what it already granted.
    /// Budgets are never lowered mid-day. Returns the buckets raised, with
    /// their new capacities, for the store to follow.
    pub fn repace_budgets(&self, region: &str, from_day: NaiveDate) -> Vec<(BucketKey, i64)> {
        let Some(policy) = self.policy(region) else {
            return Vec::new();
        };
        let available = self.stock(region).remaining();
        let mut raised = Vec::new();
        for (key, bucket) in self.buckets.pin().iter() {
            let BucketKey::Budget { region: r, day } = key else {
                continue;
            };
            if r != region || *day < from_day {
                continue;
            }
            let counts = bucket.counts();
            let target = pacing_budget(available, policy.daily_total(), *day, policy.next_shipment)
                + counts.held
                + counts.committed;
            if target > counts.capacity && bucket.adjust_capacity(target - counts.capacity).is_ok() {
                raised.push((key.clone(), target));
            }
        }
        raised
    }

    /// Grants one unit, or says why not. Read-only unless the date has room.
    pub fn reserve(&self, req: &ReserveRequest<'_>, now: DateTime<Utc>) -> Result<Reserved, ReserveError> {
        let key_hash = self.key_hash(req.idempotency_key);
        let applicant_hash = self.applicant_hash(req.applicant);
        let paths = self.paths.pin();
        let found = paths.get(&PathRef(req.point_code, req.day));
        // The peak morning's common answer: the date is full, and neither the
        // key nor the applicant has anything that would change the answer.
        // One lookup, four loads and two counters; nothing written or allocated.
        if let Some(path) = found
            && let Some(level) = path.empty_level()
            && !self.presence.may_contain(key_hash)
            && !self.presence.may_contain(applicant_hash)
        {
            return Err(ReserveError::Exhausted(level));
        }
        self.reserve_exact(req, now, found, key_hash, applicant_hash)
    }

    /// The answer from the maps themselves: idempotency, one hold per
    /// applicant, then the buckets. `found` is the request's path, if it exists.
    /// Kept out of line, so the fast refusal's own frame stays small.
    #[inline(never)]
    fn reserve_exact(
        &self,
        req: &ReserveRequest<'_>,
        now: DateTime<Utc>,
        found: Option<&Arc<Path>>,
        key_hash: u64,
        applicant_hash: u64,
    ) -> Result<Reserved, ReserveError> {
        if let Some(answer) = self.replayed(req) {
            return answer;
        }
        let built;
        let path: &Arc<Path> = match found {
            Some(path) => path,
            None => {
                let point = self.point(req.point_code).ok_or(ReserveError::UnknownPoint)?;
                built = self.path(&point, req.day).ok_or(ReserveError::UnknownPoint)?;
                &built
            }
        };
        let applicant = ApplicantRef(req.applicant, req.purpose);
        if let Some(existing) = self.active_hold(&applicant) {
            return Err(ReserveError::ApplicantHolds(existing));
        }
        if let Some(level) = path.empty_level() {
            return Err(ReserveError::Exhausted(level));
        }
        let applicant_key = (req.applicant.to_owned(), req.purpose.to_owned());

        let id = Uuid::now_v7();
        // Claim the applicant and the key before taking units, so two racing
        // requests cannot both end up holding; count them in `presence` before
        // the claims can be seen, so a refusal that finds the date full after
        // this grant took the last unit also finds the counts.
        self.presence.add(applicant_hash);
        let applicants = self.by_applicant.pin();
        if let Err(occupied) = applicants.try_insert(applicant_key.clone(), id) {
            let other = *occupied.current;
            self.presence.remove(applicant_hash);
            return Err(self
                .reservation(&other)
                .map_or(ReserveError::Contended, ReserveError::ApplicantHolds));
        }
        self.presence.add(key_hash);
        if self
            .by_key
            .pin()
            .try_insert(req.idempotency_key.to_owned(), id)
            .is_err()
        {
            self.presence.remove(key_hash);
            applicants.remove(&applicant_key);
            self.presence.remove(applicant_hash);
            return Err(ReserveError::Contended);
        }
        if let Err(level) = take_all(&path.refs()) {
            self.by_key.pin().remove(req.idempotency_key);
            self.presence.remove(key_hash);
            applicants.remove(&applicant_key);
            self.presence.remove(applicant_hash);
            return Err(ReserveError::Exhausted(LEVELS[level]));
        }
        let reservation = Arc::new(Reservation::held(id, path.clone(), req, now));
        self.reservations.pin().insert(id, reservation.clone());
        Ok(Reserved {
            reservation,
            fresh: true,
        })
    }

    /// What a retry with a key already used gets: what the first try got, or
    /// `KeyReused` when the key came with another request. `None` for a new key.
    fn replayed(&self, req: &ReserveRequest<'_>) -> Option<Result<Reserved, ReserveError>> {
        let existing = self
            .by_key
            .pin()
            .get(req.idempotency_key)
            .and_then(|id| self.reservation(id))?;
        Some(if existing.same_request(req) {
            Ok(Reserved {
                reservation: existing,
                fresh: false,
            })
        } else {
            Err(ReserveError::KeyReused(existing))
        })
    }

    fn active_hold(&self, applicant: &ApplicantRef<'_>) -> Option<Arc<Reservation>> {
        let id = *self.by_applicant.pin().get(applicant)?;
        let reservation = self.reservation(&id)?;
        (!reservation.state().is_final()).then_some(reservation)
    }

    /// Undoes a fresh grant whose write failed: its units go back and it is forgotten.
    pub fn undo_reserve(&self, reservation: &Reservation) {
        self.reservations.pin().remove(&reservation.id);
        self.forget_key(reservation);
        self.forget_applicant(reservation);
        give_back_all(&reservation.path.refs());
    }

    /// Drops the reservation's idempotency key (if it is still its own) and its count.
    fn forget_key(&self, reservation: &Reservation) {
        let removed = self
            .by_key
            .pin()
            .remove_if(&reservation.idempotency_key, |_, id| *id == reservation.id)
            .is_ok_and(|r| r.is_some());
        if removed {
            self.presence.remove(self.key_hash(&reservation.idempotency_key));
        }
    }

    /// Drops the reservation's one-hold entry (if it is still its own) and its count.
    fn forget_applicant(&self, reservation: &Reservation) {
        let key = ApplicantRef(&reservation.applicant, &reservation.purpose);
        let removed = self
            .by_applicant
            .pin()
            .remove_if(&key, |_, id| *id == reservation.id)
            .is_ok_and(|r| r.is_some());
        if removed {
            self.presence.remove(self.applicant_hash(&reservation.applicant));
        }
    }

    /// A reservation by id.
    pub fn reservation(&self, id: &Uuid) -> Option<Arc<Reservation>> {
        self.reservations.pin().get(id).cloned()
    }

    /// Claims a transition for one caller. `caller_point`, when given, must be the reservation's point.
    pub fn begin(
        &self,
        id: &Uuid,
        transition: Transition,
        caller_point: Option<&str>,
    ) -> Result<Begun, TransitionError> {
        let reservation = self.reservation(id).ok_or(TransitionError::NotFound)?;
        if caller_point.is_some_and(|p| p != reservation.point_code()) {
            return Err(TransitionError::WrongPoint(reservation));
        }
        match reservation.state.begin(transition) {
            Ok(()) => Ok(Begun::Won(reservation)),
            // A retried commit or release finds its own outcome: answered the same, nothing moves.
            Err(state) if state == transition.done() && transition != Transition::Expire => {
                Ok(Begun::AlreadyDone(reservation))
            }
            Err(state) => Err(TransitionError::NotHeld(reservation, state)),
        }
    }

    /// Finishes a transition whose write succeeded: units are consumed or returned, once.
    pub fn complete(&self, reservation: &Reservation, transition: Transition) {
        reservation.state.complete(transition);
        match transition {
            Transition::Commit => consume_all(&reservation.path.refs()),
            Transition::Release | Transition::Expire => give_back_all(&reservation.path.refs()),
        }
        self.forget_applicant(reservation);
    }

    /// Gives up a transition whose write failed: the hold stands.
    pub fn abort(&self, reservation: &Reservation, transition: Transition) {
        reservation.state.abort(transition);
    }

    /// Holds whose deadline has passed.
    pub fn due_for_expiry(&self, now: DateTime<Utc>) -> Vec<Arc<Reservation>> {
        self.reservations
            .pin()
            .values()
            .filter(|r| r.state() == State::Held && r.expires_at <= now)
            .cloned()
            .collect()
    }

    /// Forgets final reservations created before `before`, keeping memory bounded;
    /// their idempotency keys are forgotten with them.
    pub fn forget_final_before(&self, before: DateTime<Utc>) -> usize {
        let old: Vec<Arc<Reservation>> = self
            .reservations
            .pin()
            .values()
            .filter(|r| r.state().is_final() && r.created_at < before)
            .cloned()
            .collect();
        for r in &old {
            self.reservations.pin().remove(&r.id);
            self.forget_key(r);
        }
        old.len()
    }

    /// What remains for a point on a day (and the pool's quota).
    pub fn availability(&self, point_code: &str, day: NaiveDate) -> Option<(i64, i64)> {
        let point = self.point(point_code)?;
        let path = self.path(&point, day)?;
        Some((path.remaining(), path.quota()))
    }

    /// Where else there is room: the next `horizon` days at the same point, and
    /// the region's other points on the same day, nearest kecamatan first.
    pub fn suggestions(&self, point_code: &str, day: NaiveDate, horizon: u32, max: usize) -> Suggestions {
        let Some(point) = self.point(point_code) else {
            return Suggestions::default();
        };
        let next_dates = (1..=u64::from(horizon))
            .filter_map(|n| day.checked_add_days(Days::new(n)))
            .filter(|d| self.path(&point, *d).is_some_and(|p| p.remaining() > 0))
            .take(max)
            .collect();
        let Some(region) = self.regions.pin().get(&point.region).cloned() else {
            return Suggestions {
                next_dates,
                other_points: Vec::new(),
            };
        };
        let own = district_number(&point.spec.district_code);
        let mut others: Vec<(u32, String, i64, &str)> = region
            .policy
            .points
            .iter()
            .filter(|p| p.code != point.spec.code && p.pool_code != point.spec.pool_code)
            .filter_map(|spec| {
                let other = self.point(&spec.code)?;
                let remaining = self.path(&other, day)?.remaining();
                (remaining > 0).then(|| {
                    (
                        own.abs_diff(district_number(&spec.district_code)),
                        spec.code.clone(),
                        remaining,
                        spec.pool_code.as_str(),
                    )
                })
            })
            .collect();
        others.sort();
        // Points that share a pool share its room: the pool is offered once,
        // at its nearest point, so its blanks are not counted once per point.
        let mut pools_seen: Vec<&str> = Vec::new();
        others.retain(|(_, _, _, pool)| {
            let first = !pools_seen.contains(pool);
            pools_seen.push(pool);
            first
        });
        Suggestions {
            next_dates,
            other_points: others
                .into_iter()
                .take(max)
                .map(|(_, code, n, _)| (code, n))
                .collect(),
        }
    }

    /// Rebuilds a bucket from stored counts (start-up).
    pub fn restore_bucket(&self, key: BucketKey, counts: BucketCounts) {
        let bucket = Arc::new(Bucket::restore(counts.capacity, counts.held, counts.committed));
        self.buckets.pin().insert(key, bucket);
    }

    /// Rebuilds a reservation (start-up, after buckets and policies).
    /// Returns false when its point is no longer known.
    pub fn restore_reservation(&self, stored: StoredReservation) -> bool {
        let Some(point) = self.point(&stored.point_code) else {
            return false;
        };
        let Some(path) = self.path(&point, stored.day) else {
            return false;
        };
        let reservation = Arc::new(Reservation {
            id: stored.id,
            path,
            applicant: stored.applicant,
            purpose: stored.purpose,
            idempotency_key: stored.idempotency_key,
            expires_at: stored.expires_at,
            created_at: stored.created_at,
            state: StateCell::new(stored.state),
            durable: AtomicBool::new(true),
        });
        self.presence.add(self.key_hash(&reservation.idempotency_key));
        if self
            .by_key
            .pin()
            .insert(reservation.idempotency_key.clone(), reservation.id)
            .is_some()
        {
            // Replaced, not added: the key was counted already.
            self.presence.remove(self.key_hash(&reservation.idempotency_key));
        }
        if !stored.state.is_final() {
            let hash = self.applicant_hash(&reservation.applicant);
            self.presence.add(hash);
            if self
                .by_applicant
                .pin()
                .insert(
                    (reservation.applicant.clone(), reservation.purpose.clone()),
                    reservation.id,
                )
                .is_some()
            {
                self.presence.remove(hash);
            }
        }
        self.reservations.pin().insert(reservation.id, reservation);
        true
    }

    /// Every bucket with its counts, for checks and reports.
    pub fn bucket_counts(&self) -> Vec<(BucketKey, BucketCounts)> {
        self.buckets
            .pin()
            .iter()
            .map(|(k, b)| (k.clone(), b.counts()))
            .collect()
    }

    /// Reservations held now, per region.
    pub fn held_count(&self, region: &str) -> usize {
        self.reservations
            .pin()
            .values()
            .filter(|r| r.path.point.region == region && !r.state().is_final())
            .count()
    }
}

fn district_number(code: &str) -> u32 {
    code.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PointKind, PoolSpec};

    fn day(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, n).expect("date")
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000, 0).expect("time")
    }

    fn bekasi() -> Policy {
        let mut points: Vec<PointSpec> = (1..=12)
            .map(|n| PointSpec {
                code: format!("3275-KEC-{n:02}"),
                name: format!("Kecamatan {n}"),
                kind: PointKind::Kecamatan,
                district_code: format!("3275{n:02}"),
                pool_code: format!("3275-KEC-{n:02}"),
            })
            .collect();
        for (code, kind) in [
            ("3275-MPP", PointKind::Mpp),
            ("3275-GPP", PointKind::Gpp),
            ("3275-DISDUK", PointKind::Disdukcapil),
        ] {
            points.push(PointSpec {
                code: code.into(),
                name: code.into(),
                kind,
                district_code: "327501".into(),
                pool_code: "3275-SHARED".into(),
            });
        }
        let mut pools: Vec<PoolSpec> = (1..=12)
            .map(|n| PoolSpec {
                code: format!("3275-KEC-{n:02}"),
                daily_quota: 30,
            })
            .collect();
        pools.push(PoolSpec {
            code: "3275-SHARED".into(),
            daily_quota: 150,
        });
        Policy {
            region_code: "3275".into(),
            points,
            pools,
            monthly_cap: 15_000,
            next_shipment: None,
            version: 0,
        }
    }

    fn engine_with_stock(stock: i64) -> Engine {
        let engine = Engine::new();
        engine.set_policy(bekasi()).expect("valid policy");
        engine.stock("3275").adjust_capacity(stock).expect("add stock");
        engine
    }

    fn req<'a>(point: &'a str, applicant: &'a str, key: &'a str) -> ReserveRequest<'a> {
        ReserveRequest {
            point_code: point,
            day: day(23),
            applicant,
            purpose: "ktp-el",
            idempotency_key: key,
            expires_at: now() + chrono::Duration::hours(8),
        }
    }

    #[test]
    fn a_kecamatan_grants_exactly_its_quota() {
        let engine = engine_with_stock(15_000);
        let mut granted = 0;
        for n in 0..100 {
            let nik = format!("nik-{n}");
            let key = format!("key-{n}");
            if engine.reserve(&req("3275-KEC-01", &nik, &key), now()).is_ok() {
                granted += 1;
            }
        }
        assert_eq!(granted, 30);
        let (remaining, quota) = engine.availability("3275-KEC-01", day(23)).expect("known");
        assert_eq!((remaining, quota), (0, 30));
        assert_eq!(engine.availability("3275-KEC-02", day(23)).map(|a| a.0), Some(30));
    }

    #[test]
    fn the_shared_pool_is_shared() {
        let engine = engine_with_stock(15_000);
        for n in 0..150 {
            let point = ["3275-MPP", "3275-GPP", "3275-DISDUK"][n % 3];
            let (nik, key) = (format!("n{n}"), format!("k{n}"));
            engine
                .reserve(&req(point, &nik, &key), now())
                .expect("room in the shared pool");
        }
        assert!(matches!(
            engine.reserve(&req("3275-GPP", "late", "late"), now()),
            Err(ReserveError::Exhausted(Level::Pool))
        ));
    }

    #[test]
    fn pacing_and_stock_bind_above_the_pools() {
        // 300 blanks over 30 days: a budget of 10 a day for the whole region.
        let engine = engine_with_stock(300);
        let mut granted = 0;
        for n in 0..40 {
            let point = format!("3275-KEC-{:02}", n % 12 + 1);
            let (nik, key) = (format!("n{n}"), format!("k{n}"));
            match engine.reserve(&req(&point, &nik, &key), now()) {
                Ok(_) => granted += 1,
                Err(ReserveError::Exhausted(level)) => assert_eq!(level, Level::Budget),
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(granted, 10);
    }

    #[test]
    fn keys_and_applicants_are_idempotent() {
        let engine = engine_with_stock(15_000);
        let first = engine
            .reserve(&req("3275-KEC-01", "A", "k1"), now())
            .expect("granted");
        let again = engine
            .reserve(&req("3275-KEC-01", "A", "k1"), now())
            .expect("same");
        assert!(first.fresh && !again.fresh);
        assert_eq!(first.reservation.id, again.reservation.id);
        match engine.reserve(&req("3275-KEC-02", "A", "k2"), now()) {
            Err(ReserveError::ApplicantHolds(r)) => assert_eq!(r.id, first.reservation.id),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            engine.reserve(&req("3275-KEC-02", "B", "k1"), now()),
            Err(ReserveError::KeyReused(_))
        ));
        assert_eq!(engine.availability("3275-KEC-01", day(23)).map(|a| a.0), Some(29));
    }

    /// Claims counted in the presence filter: one per idempotency key and one
    /// per active applicant, however they came and went.
    fn assert_presence_balanced(engine: &Engine) {
        let claims = engine.by_key.pin().len() + engine.by_applicant.pin().len();
        assert_eq!(engine.presence.total(), claims as u64);
    }

    #[test]
    fn a_full_date_still_answers_retries_and_holders() {
        let engine = engine_with_stock(15_000);
        let a = engine
            .reserve(&req("3275-KEC-02", "A", "ka"), now())
            .expect("room")
            .reservation;
        let mut seventh = None;
        for n in 0..30 {
            let (nik, key) = (format!("n{n}"), format!("k{n}"));
            let r = engine
                .reserve(&req("3275-KEC-01", &nik, &key), now())
                .expect("room");
            if n == 7 {
                seventh = Some(r.reservation);
            }
        }
        let seventh = seventh.expect("granted");
        assert_eq!(engine.availability("3275-KEC-01", day(23)).map(|a| a.0), Some(0));

        let again = engine
            .reserve(&req("3275-KEC-01", "n7", "k7"), now())
            .expect("a retry gets its reservation back");
        assert!(!again.fresh);
        assert_eq!(again.reservation.id, seventh.id);
        match engine.reserve(&req("3275-KEC-01", "A", "ka2"), now()) {
            Err(ReserveError::ApplicantHolds(r)) => assert_eq!(r.id, a.id),
            other => panic!("{other:?}"),
        }
        match engine.reserve(&req("3275-KEC-01", "Z", "ka"), now()) {
            Err(ReserveError::KeyReused(r)) => assert_eq!(r.id, a.id),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            engine.reserve(&req("3275-KEC-01", "Z", "kz"), now()),
            Err(ReserveError::Exhausted(Level::Pool))
        ));
        assert_presence_balanced(&engine);

        // Released, undone and forgotten claims leave the counts with their maps.
        let Ok(Begun::Won(won)) = engine.begin(&a.id, Transition::Release, None) else {
            panic!("release wins");
        };
        engine.complete(&won, Transition::Release);
        assert_presence_balanced(&engine);
        let fresh = engine
            .reserve(&req("3275-KEC-03", "B", "kb"), now())
            .expect("room")
            .reservation;
        engine.undo_reserve(&fresh);
        assert_presence_balanced(&engine);
        assert_eq!(engine.forget_final_before(now() + chrono::Duration::days(1)), 1);
        assert_presence_balanced(&engine);
        assert_eq!(engine.by_key.pin().len(), 30, "the 30 at KEC-01 remain");
    }

    #[test]
    fn exactly_one_transition_wins_and_units_return_once() {
        let engine = engine_with_stock(15_000);
        let r = engine
            .reserve(&req("3275-KEC-01", "A", "k1"), now())
            .expect("granted")
            .reservation;
        let Ok(Begun::Won(won)) = engine.begin(&r.id, Transition::Release, Some("3275-KEC-01")) else {
            panic!("release wins");
        };
        assert!(matches!(
            engine.begin(&r.id, Transition::Commit, None),
            Err(TransitionError::NotHeld(_, State::Releasing))
        ));
        engine.complete(&won, Transition::Release);
        assert!(matches!(
            engine.begin(&r.id, Transition::Expire, None),
            Err(TransitionError::NotHeld(_, State::Released))
        ));
        assert_eq!(engine.availability("3275-KEC-01", day(23)).map(|a| a.0), Some(30));
        // The applicant may hold again.
        engine
            .reserve(&req("3275-KEC-01", "A", "k2"), now())
            .expect("granted again");
    }

    #[test]
    fn another_points_hold_cannot_be_touched() {
        let engine = engine_with_stock(15_000);
        let r = engine
            .reserve(&req("3275-KEC-01", "A", "k1"), now())
            .expect("granted")
            .reservation;
        assert!(matches!(
            engine.begin(&r.id, Transition::Release, Some("3275-KEC-02")),
            Err(TransitionError::WrongPoint(_))
        ));
        let Ok(Begun::Won(won)) = engine.begin(&r.id, Transition::Commit, Some("3275-KEC-01")) else {
            panic!("commit wins");
        };
        engine.complete(&won, Transition::Commit);
        assert!(matches!(
            engine.begin(&r.id, Transition::Commit, None),
            Ok(Begun::AlreadyDone(_))
        ));
        let stock = engine.stock("3275").counts();
        assert_eq!((stock.capacity, stock.committed, stock.held), (15_000, 1, 0));
    }

    /// Takes all 30 of Kecamatan 3's blanks for day 23.
    fn fill_kecamatan_3(engine: &Engine) {
        for n in 0..30 {
            let (nik, key) = (format!("n{n}"), format!("k{n}"));
            engine
                .reserve(&req("3275-KEC-03", &nik, &key), now())
                .expect("room");
        }
    }

    #[test]
    fn full_dates_suggest_other_days_and_the_nearest_points() {
        let engine = engine_with_stock(15_000);
        fill_kecamatan_3(&engine);
        let s = engine.suggestions("3275-KEC-03", day(23), 14, 3);
        assert_eq!(s.next_dates, vec![day(24), day(25), day(26)]);
        let codes: Vec<_> = s.other_points.iter().map(|(c, _)| c.as_str()).collect();
        // Then the points two kecamatan away, by code: the office (in 327501) before Kecamatan 1.
        assert_eq!(codes, ["3275-KEC-02", "3275-KEC-04", "3275-DISDUK"]);
    }

    #[test]
    fn points_sharing_a_pool_are_suggested_once() {
        let engine = engine_with_stock(15_000);
        fill_kecamatan_3(&engine);
        let s = engine.suggestions("3275-KEC-03", day(23), 14, 50);
        let shared: Vec<_> = s
            .other_points
            .iter()
            .filter(|(code, _)| ["3275-MPP", "3275-GPP", "3275-DISDUK"].contains(&code.as_str()))
            .collect();
        assert_eq!(
            shared.len(),
            1,
            "one pool of 150, offered once: {:?}",
            s.other_points
        );
        // Every kecamatan but the full one has a pool of its own.
        assert_eq!(s.other_points.len(), 11 + 1);
    }

    #[test]
    fn budgets_paced_on_an_empty_stock_rise_when_blanks_arrive() {
        let engine = engine_with_stock(0);
        assert!(matches!(
            engine.reserve(&req("3275-KEC-01", "A", "k1"), now()),
            Err(ReserveError::Exhausted(Level::Budget))
        ));
        engine.stock("3275").adjust_capacity(3_000).expect("shipment");
        let raised = engine.repace_budgets("3275", day(1));
        assert_eq!(
            raised,
            vec![(
                BucketKey::Budget {
                    region: "3275".into(),
                    day: day(23)
                },
                100
            )]
        );
        engine
            .reserve(&req("3275-KEC-01", "A", "k2"), now())
            .expect("room now");
        assert!(
            engine.repace_budgets("3275", day(1)).is_empty(),
            "never lowered, not raised twice"
        );
    }

    #[test]
    fn bucket_ids_round_trip() {
        for key in [
            BucketKey::Stock {
                region: "3275".into(),
            },
            BucketKey::Month {
                region: "3275".into(),
                year: 2026,
                month: 11,
            },
            BucketKey::Budget {
                region: "3275".into(),
                day: day(23),
            },
            BucketKey::Pool {
                region: "3275".into(),
                pool: "3275-KEC-01".into(),
                day: day(23),
            },
        ] {
            assert_eq!(BucketKey::parse(&key.id()), Some(key));
        }
        assert_eq!(BucketKey::parse("pool:3275"), None);
        assert_eq!(BucketKey::parse("month:3275:2026-13"), None);
    }
}
