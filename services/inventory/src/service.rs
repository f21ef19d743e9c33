//! The inventory as one object: the engine decides, the writer makes
//! decisions durable before they are answered, a sweeper expires holds, and
//! watchers hear about changes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use adminduk_inventory_core::engine::{
    Begun, BucketKey, Engine, Reservation, ReserveError, ReserveRequest, Reserved, TransitionError,
};
use adminduk_inventory_core::policy::{Policy, PolicyViolation, pacing_budget, runway_days};
use adminduk_inventory_core::state::Transition;
use adminduk_kit::storage::Db;

use crate::store::{GroupCommit, LedgerEntry, LoadReport, Movement, Store, StoreError, WriteOp, Writer};

/// How long final reservations (and their idempotency keys) stay in memory.
pub const RETENTION: chrono::Duration = chrono::Duration::days(30);

/// A region's stock, as `GetStock` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct StockLevel {
    /// Regency code.
    pub region: String,
    /// Physically in stock: received and not printed or written off.
    pub on_hand: i64,
    /// Held by reservations.
    pub held: i64,
    /// Printed.
    pub committed: i64,
    /// Written off.
    pub spoiled: i64,
    /// On hand and not held.
    pub available: i64,
    /// Today's paced budget.
    pub today_budget: i64,
    /// What is left of it.
    pub today_remaining: i64,
    /// Days the available stock lasts at today's budget.
    pub runway_days: f64,
    /// The next expected shipment.
    pub next_shipment: Option<NaiveDate>,
    /// Held or printed this month.
    pub month_used: i64,
    /// The monthly cap.
    pub monthly_cap: i64,
}

/// Why a reservation was not made.
#[derive(Debug)]
pub enum ReserveFailure {
    /// The engine said no.
    Refused(ReserveError),
    /// The write failed; nothing is held.
    Unavailable(StoreError),
}

/// Why a commit or release did not happen.
#[derive(Debug)]
pub enum TransitionFailure {
    /// The engine said no.
    Refused(TransitionError),
    /// Its grant is still being written; retry.
    NotYetDurable,
    /// The write failed; the hold stands.
    Unavailable(StoreError),
}

/// The inventory service's state.
#[derive(Debug)]
pub struct Inventory {
    engine: Arc<Engine>,
    store: Store,
    writer: Writer,
    changes: watch::Sender<u64>,
    closing: watch::Sender<bool>,
}

/// Tasks the inventory runs in the background; abort or drop with the runtime.
#[derive(Debug)]
pub struct Background {
    /// The group-commit writer.
    pub writer: tokio::task::JoinHandle<()>,
    /// The expiry sweeper.
    pub sweeper: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Stops both tasks.
    pub fn abort(&self) {
        self.sweeper.abort();
        self.writer.abort();
    }
}

impl Inventory {
    /// Opens the inventory on a migrated database: rebuilds the engine from it
    /// and starts the writer and the expiry sweeper.
    pub async fn open(
        db: Db,
        settings: GroupCommit,
    ) -> Result<(Arc<Self>, Background, LoadReport), StoreError> {
        let engine = Arc::new(Engine::new());
        let store = Store::new(db.clone());
        let report = store.load_into(&engine, Utc::now() - RETENTION).await?;
        let (writer, writer_task) = Writer::spawn(db, settings);
        let (changes, _) = watch::channel(0);
        let (closing, _) = watch::channel(false);
        let inventory = Arc::new(Self {
            engine,
            store,
            writer,
            changes,
            closing,
        });
        let sweeper = tokio::spawn(sweep_forever(Arc::downgrade(&inventory)));
        Ok((
            inventory,
            Background {
                writer: writer_task,
                sweeper,
            },
            report,
        ))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A receiver that changes whenever availability may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A receiver that turns true when the service is shutting down: long-lived
    /// streams end then, so a graceful shutdown does not wait on them.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Tells long-lived streams to end; call before draining the server.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Reserves one blank; answered only once the grant is durable.
    pub async fn reserve(
        &self,
        req: &ReserveRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Reservation>, ReserveFailure> {
        let Reserved { reservation, fresh } =
            self.engine.reserve(req, now).map_err(ReserveFailure::Refused)?;
        if !fresh {
            // A retry of a request whose grant is still being written waits for the first answer.
            return if reservation.is_durable() {
                Ok(reservation)
            } else {
                Err(ReserveFailure::Refused(ReserveError::Contended))
            };
        }
        match self.writer.write(WriteOp::Grant(reservation.clone())).await {
            Ok(()) => {
                reservation.mark_durable();
                self.changed();
                crate::metrics::granted(&reservation);
                Ok(reservation)
            }
            Err(err) => {
                self.engine.undo_reserve(&reservation);
                Err(ReserveFailure::Unavailable(err))
            }
        }
    }

    /// Commits, releases or expires a reservation; exactly one such call wins.
    pub async fn transition(
        &self,
        id: &Uuid,
        transition: Transition,
        caller_point: Option<&str>,
        actor: &str,
        reason: &str,
    ) -> Result<Arc<Reservation>, TransitionFailure> {
        let reservation = match self.engine.begin(id, transition, caller_point) {
            Ok(Begun::AlreadyDone(r)) => return Ok(r),
            Ok(Begun::Won(r)) => r,
            Err(err) => return Err(TransitionFailure::Refused(err)),
        };
        if !reservation.is_durable() {
            self.engine.abort(&reservation, transition);
            return Err(TransitionFailure::NotYetDurable);
        }
        let op = WriteOp::Transition {
            reservation: reservation.clone(),
            transition,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
        };
        match self.writer.write(op).await {
            Ok(()) => {
                self.engine.complete(&reservation, transition);
                self.changed();
                crate::metrics::transitioned(&reservation, transition);
                Ok(reservation)
            }
            Err(err) => {
                self.engine.abort(&reservation, transition);
                Err(TransitionFailure::Unavailable(err))
            }
        }
    }

    /// Expires every hold whose deadline has passed; returns how many.
    pub async fn sweep_expired(&self, now: DateTime<Utc>) -> usize {
        let mut expired = 0;
        for reservation in self.engine.due_for_expiry(now) {
            if !reservation.is_durable() {
                continue;
            }
            match self
                .transition(
                    &reservation.id,
                    Transition::Expire,
                    None,
                    "sweeper",
                    "hold deadline passed",
                )
                .await
            {
                Ok(_) => expired += 1,
                // A commit or release that won the race is the right outcome too.
                Err(TransitionFailure::Refused(_) | TransitionFailure::NotYetDurable) => {}
                Err(TransitionFailure::Unavailable(err)) => {
                    tracing::warn!(error = %err, "expiry not written; will retry");
                }
            }
        }
        expired
    }

    /// Installs a region's policy, stored first.
    pub async fn set_policy(&self, policy: Policy) -> Result<Policy, PolicyFailure> {
        policy.check().map_err(PolicyFailure::Invalid)?;
        let mut versioned = policy.clone();
        versioned.version = self
            .engine
            .policy(&policy.region_code)
            .map_or(1, |p| p.version + 1);
        self.store
            .save_policy(&versioned)
            .await
            .map_err(PolicyFailure::Store)?;
        let installed = self
            .engine
            .restore_policy(versioned)
            .map_err(PolicyFailure::Invalid)?;
        self.changed();
        Ok(installed)
    }

    /// Blanks received (see [`Store::receive_shipment`]).
    pub async fn receive_shipment(
        &self,
        region: &str,
        quantity: i64,
        reference: &str,
        actor: &str,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let entries = self
            .store
            .receive_shipment(&self.engine, region, quantity, reference, actor, Utc::now())
            .await?;
        self.repace(region).await?;
        self.changed();
        Ok(entries)
    }

    /// Open days' budgets follow stock that arrived (they were paced on less).
    async fn repace(&self, region: &str) -> Result<(), StoreError> {
        let raised = self
            .engine
            .repace_budgets(region, adminduk_kit::time::today_wib());
        self.store.raise_capacities(&raised).await
    }

    /// Blanks lent to another region, or written off as damaged; the ledger
    /// entries written.
    pub async fn move_out(&self, movement: &Movement<'_>) -> Result<Vec<LedgerEntry>, StoreError> {
        let entries = self.store.move_out(&self.engine, movement, Utc::now()).await?;
        self.changed();
        Ok(entries)
    }

    /// A region's stock report for `today`.
    pub async fn stock_level(&self, region: &str, today: NaiveDate) -> Result<StockLevel, StoreError> {
        let stock = self.engine.stock(region).counts();
        let policy = self.engine.policy(region);
        let (today_budget, today_remaining) = match self.engine.bucket(&BucketKey::Budget {
            region: region.to_owned(),
            day: today,
        }) {
            Some(bucket) => {
                let c = bucket.counts();
                (c.capacity, c.remaining)
            }
            None => {
                let budget = policy.as_ref().map_or(0, |p| {
                    pacing_budget(stock.remaining, p.daily_total(), today, p.next_shipment)
                });
                (budget, budget)
            }
        };
        let month_used = self
            .engine
            .bucket(&BucketKey::Month {
                region: region.to_owned(),
                year: today.year(),
                month: today.month(),
            })
            .map_or(0, |b| {
                let c = b.counts();
                c.held + c.committed
            });
        Ok(StockLevel {
            region: region.to_owned(),
            on_hand: stock.capacity - stock.committed,
            held: stock.held,
            committed: stock.committed,
            spoiled: self.store.spoiled(region).await?,
            available: stock.remaining,
            today_budget,
            today_remaining,
            runway_days: runway_days(stock.remaining, today_budget),
            next_shipment: policy.as_ref().and_then(|p| p.next_shipment),
            month_used,
            monthly_cap: policy.map_or(0, |p| p.monthly_cap),
        })
    }
}

/// Why a policy was not installed.
#[derive(Debug)]
pub enum PolicyFailure {
    /// It contradicts itself.
    Invalid(Vec<PolicyViolation>),
    /// It could not be stored.
    Store(StoreError),
}

/// How often expired holds are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

async fn sweep_forever(inventory: std::sync::Weak<Inventory>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inventory) = inventory.upgrade() else {
            return;
        };
        crate::metrics::forget_past_days(adminduk_kit::time::today_wib());
        let expired = inventory.sweep_expired(Utc::now()).await;
        if expired > 0 {
            tracing::info!(expired, "expired holds returned");
        }
        inventory.engine.forget_final_before(Utc::now() - RETENTION);
    }
}
