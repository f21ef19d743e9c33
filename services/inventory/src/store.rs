//! The inventory in SQL, for SQLite and PostgreSQL alike: policies, buckets,
//! reservations, the ledger, and the group-commit writer that makes grants
//! durable before they are acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use adminduk_inventory_core::bucket::BucketCounts;
use adminduk_inventory_core::engine::{BucketKey, Engine, Path, Reservation, StoredReservation};
use adminduk_inventory_core::policy::{PointKind, PointSpec, Policy, PoolSpec};
use adminduk_inventory_core::state::{State, Transition};
use adminduk_kit::storage::{
    Backend, Corrupt, Db, Migrations, from_day_text, from_millis, is_unique_violation, millis,
};

/// This service's migrations.
pub const MIGRATIONS: Migrations =
    adminduk_kit::migrations!["0001_inventory.sql", "0002_one_spoilage_per_blank.sql"];

/// The holder code of the ministry's national pool.
pub const NATIONAL: &str = "NATIONAL";

/// The kind of a ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MovementKind {
    /// Received.
    Shipment,
    /// Lent between regions.
    Transfer,
    /// Held by a reservation.
    Hold,
    /// Consumed by printing.
    Commit,
    /// Returned.
    Release,
    /// Returned at the deadline.
    Expiry,
    /// Written off.
    Spoilage,
}

adminduk_kit::text_codes!(MovementKind {
    Shipment => "SHIPMENT",
    Transfer => "TRANSFER",
    Hold => "HOLD",
    Commit => "COMMIT",
    Release => "RELEASE",
    Expiry => "EXPIRY",
    Spoilage => "SPOILAGE",
});

impl MovementKind {
    fn of(transition: Transition) -> Self {
        match transition {
            Transition::Commit => Self::Commit,
            Transition::Release => Self::Release,
            Transition::Expire => Self::Expiry,
        }
    }
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Sequence number.
    pub seq: i64,
    /// NATIONAL or a regency code.
    pub holder_code: String,
    /// What happened.
    pub kind: MovementKind,
    /// Units moved.
    pub quantity: i64,
    /// Change of the holder's stock on hand.
    pub on_hand_delta: i64,
    /// Idempotency key or document reference.
    pub reference: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The reservation, if any.
    pub reservation_id: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The document reference was used before.
    #[error("reference already recorded")]
    DuplicateReference,
    /// The consumed blank was written off before, under this reference.
    #[error("the blank was already written off")]
    AlreadySpoiled {
        /// The reference of the first write-off.
        reference: String,
    },
    /// Not enough available stock.
    #[error("only {available} blanks available")]
    InsufficientStock {
        /// What was available.
        available: i64,
    },
    /// The database refused a limit: memory and database disagree, and the database wins.
    #[error("the database refused to exceed the limit of {0}")]
    LimitRefused(String),
    /// A stored row could not be read.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// The writer is gone (shutting down).
    #[error("the writer has stopped")]
    WriterStopped,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn kind_code(kind: PointKind) -> &'static str {
    match kind {
        PointKind::Kecamatan => "KECAMATAN",
        PointKind::Mpp => "MPP",
        PointKind::Gpp => "GPP",
        PointKind::Disdukcapil => "DISDUKCAPIL",
    }
}

fn parse_kind(code: &str) -> Option<PointKind> {
    match code {
        "KECAMATAN" => Some(PointKind::Kecamatan),
        "MPP" => Some(PointKind::Mpp),
        "GPP" => Some(PointKind::Gpp),
        "DISDUKCAPIL" => Some(PointKind::Disdukcapil),
        _ => None,
    }
}

fn state_code(state: State) -> &'static str {
    match state {
        State::Committed => "COMMITTED",
        State::Released => "RELEASED",
        State::Expired => "EXPIRED",
        _ => "HELD",
    }
}

fn parse_state(code: &str) -> Option<State> {
    match code {
        "HELD" => Some(State::Held),
        "COMMITTED" => Some(State::Committed),
        "RELEASED" => Some(State::Released),
        "EXPIRED" => Some(State::Expired),
        _ => None,
    }
}

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` columns.
fn values_clause(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * cols + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

fn ledger_from_row(row: &AnyRow) -> Result<LedgerEntry, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(LedgerEntry {
        seq: row.try_get("seq")?,
        holder_code: row.try_get("holder_code")?,
        kind: MovementKind::parse(&kind).ok_or_else(|| Corrupt::new("ledger kind"))?,
        quantity: row.try_get("quantity")?,
        on_hand_delta: row.try_get("on_hand_delta")?,
        reference: row.try_get("reference")?,
        actor: row.try_get("actor")?,
        reason: row.try_get("reason")?,
        reservation_id: row.try_get("reservation_id")?,
        created_at: from_millis(row.try_get("created_at")?)?,
    })
}

/// Blanks leaving a holder: lent to another region, or written off as spoiled.
#[derive(Debug, Clone, Copy)]
pub struct Movement<'a> {
    /// The regency code (or `NATIONAL`) the blanks leave.
    pub from: &'a str,
    /// The region that borrows them; `None` writes them off.
    pub to: Option<&'a str>,
    /// How many.
    pub quantity: i64,
    /// The movement's document (one movement per reference).
    pub reference: &'a str,
    /// Who asked.
    pub actor: &'a str,
    /// Why.
    pub reason: &'a str,
}

/// A ledger row to write.
#[derive(Debug, Clone)]
struct NewEntry<'a> {
    holder: &'a str,
    kind: MovementKind,
    quantity: i64,
    on_hand_delta: i64,
    reference: &'a str,
    actor: &'a str,
    reason: &'a str,
    reservation_id: Option<String>,
}

/// The ledger's columns but `seq`, as a literal so `concat!` can use it too.
macro_rules! ledger_columns {
    () => {
        "holder_code, kind, quantity, on_hand_delta, reference, actor, reason, reservation_id, created_at"
    };
}

const LEDGER_COLUMNS: &str = ledger_columns!();

async fn insert_ledger(
    tx: &mut Transaction<'static, Any>,
    entries: &[NewEntry<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut written = Vec::with_capacity(entries.len());
    // Chunks keep every statement under SQLite's limit on bound parameters.
    for chunk in entries.chunks(1_000) {
        let sql = format!(
            "INSERT INTO ledger ({LEDGER_COLUMNS}) VALUES {} RETURNING seq, {LEDGER_COLUMNS}",
            values_clause(chunk.len(), 9)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            query = query
                .bind(e.holder)
                .bind(e.kind.as_str())
                .bind(e.quantity)
                .bind(e.on_hand_delta)
                .bind(e.reference)
                .bind(e.actor)
                .bind(e.reason)
                .bind(e.reservation_id.clone())
                .bind(millis(now));
        }
        for row in query.fetch_all(&mut **tx).await? {
            written.push(ledger_from_row(&row)?);
        }
    }
    Ok(written)
}

async fn record_document(
    tx: &mut Transaction<'static, Any>,
    reference: &str,
    kind: MovementKind,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO documents (reference, kind, created_at) VALUES ($1, $2, $3) ON CONFLICT (reference) DO NOTHING",
    )
    .bind(reference)
    .bind(kind.as_str())
    .bind(millis(now))
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::DuplicateReference);
    }
    Ok(())
}

/// Adds `delta` to a stock bucket's capacity, refusing to go below what is held and consumed.
async fn adjust_stock(
    tx: &mut Transaction<'static, Any>,
    holder: &str,
    delta: i64,
) -> Result<(), StoreError> {
    let id = BucketKey::Stock {
        region: holder.to_owned(),
    }
    .id();
    if delta >= 0 {
        sqlx::query(
            "INSERT INTO buckets (id, capacity, held, committed) VALUES ($1, $2, 0, 0) \
             ON CONFLICT (id) DO UPDATE SET capacity = buckets.capacity + $2",
        )
        .bind(&id)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }
    let updated = sqlx::query(
        "UPDATE buckets SET capacity = capacity + $2 WHERE id = $1 AND capacity + $2 >= held + committed",
    )
    .bind(&id)
    .bind(delta)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 1 {
        return Ok(());
    }
    let available: Option<i64> =
        sqlx::query("SELECT capacity - held - committed AS available FROM buckets WHERE id = $1")
            .bind(&id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("available"))
            .transpose()?;
    Err(StoreError::InsufficientStock {
        available: available.unwrap_or(0),
    })
}

adminduk_kit::store! {
    /// The inventory store.
    pub struct Store;
}

impl Store {
    /// Rebuilds the engine from what was acknowledged: buckets, policies, then
    /// reservations (held ones, and final ones since `keep_final_since`, so
    /// retried requests still find them).
    pub async fn load_into(
        &self,
        engine: &Engine,
        keep_final_since: DateTime<Utc>,
    ) -> Result<LoadReport, StoreError> {
        let pool = self.db.pool();
        let mut report = LoadReport::default();
        for row in sqlx::query("SELECT id, capacity, held, committed FROM buckets")
            .fetch_all(pool)
            .await?
        {
            let id: String = row.try_get("id")?;
            let key = BucketKey::parse(&id).ok_or_else(|| Corrupt::new(format!("bucket id {id}")))?;
            engine.restore_bucket(
                key,
                BucketCounts {
                    capacity: row.try_get("capacity")?,
                    held: row.try_get("held")?,
                    committed: row.try_get("committed")?,
                    remaining: 0,
                },
            );
            report.buckets += 1;
        }
        for policy in self.policies().await? {
            engine
                .restore_policy(policy)
                .map_err(|v| Corrupt::new(format!("stored policy: {v:?}")))?;
            report.policies += 1;
        }
        let rows = sqlx::query(
            "SELECT id, point_code, day, applicant_nik, purpose, idempotency_key, state, expires_at, created_at \
             FROM reservations WHERE state = 'HELD' OR created_at >= $1",
        )
        .bind(millis(keep_final_since))
        .fetch_all(pool)
        .await?;
        for row in rows {
            let id: String = row.try_get("id")?;
            let state: String = row.try_get("state")?;
            let stored = StoredReservation {
                id: Uuid::parse_str(&id).map_err(|_| Corrupt::new("reservation id"))?,
                point_code: row.try_get("point_code")?,
                day: from_day_text(&row.try_get::<String, _>("day")?)?,
                applicant: row.try_get("applicant_nik")?,
                purpose: row.try_get("purpose")?,
                idempotency_key: row.try_get("idempotency_key")?,
                expires_at: from_millis(row.try_get("expires_at")?)?,
                created_at: from_millis(row.try_get("created_at")?)?,
                state: parse_state(&state).ok_or_else(|| Corrupt::new("reservation state"))?,
            };
            if engine.restore_reservation(stored) {
                report.reservations += 1;
            } else {
                report.orphaned += 1;
            }
        }
        Ok(report)
    }

    /// Every stored policy.
    pub async fn policies(&self) -> Result<Vec<Policy>, StoreError> {
        let pool = self.db.pool();
        let mut policies = Vec::new();
        let regions = sqlx::query("SELECT region_code, monthly_cap, next_shipment, version FROM region_policies ORDER BY region_code")
            .fetch_all(pool)
            .await?;
        for region in regions {
            let code: String = region.try_get("region_code")?;
            let next: Option<String> = region.try_get("next_shipment")?;
            let pools =
                sqlx::query("SELECT code, daily_quota FROM quota_pools WHERE region_code = $1 ORDER BY code")
                    .bind(&code)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(PoolSpec {
                            code: r.try_get("code")?,
                            daily_quota: r.try_get("daily_quota")?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
            let points = sqlx::query(
                "SELECT code, name, kind, district_code, pool_code FROM service_points WHERE region_code = $1 ORDER BY code",
            )
            .bind(&code)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(PointSpec {
                    code: r.try_get("code")?,
                    name: r.try_get("name")?,
                    kind: parse_kind(&kind).ok_or_else(|| Corrupt::new("point kind"))?,
                    district_code: r.try_get("district_code")?,
                    pool_code: r.try_get("pool_code")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            policies.push(Policy {
                region_code: code,
                points,
                pools,
                monthly_cap: region.try_get("monthly_cap")?,
                next_shipment: next.as_deref().map(from_day_text).transpose()?,
                version: region.try_get("version")?,
            });
        }
        Ok(policies)
    }

    /// Stores a policy (already checked and versioned by the engine) and moves
    /// the quotas of open days to it, as far as granted units allow.
    pub async fn save_policy(&self, policy: &Policy) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        let region = policy.region_code.as_str();
        sqlx::query(
            "INSERT INTO region_policies (region_code, monthly_cap, next_shipment, version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (region_code) DO UPDATE SET monthly_cap = $2, next_shipment = $3, version = $4",
        )
        .bind(region)
        .bind(policy.monthly_cap)
        .bind(policy.next_shipment.map(|d| d.to_string()))
        .bind(policy.version)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM service_points WHERE region_code = $1")
            .bind(region)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM quota_pools WHERE region_code = $1")
            .bind(region)
            .execute(&mut *tx)
            .await?;
        for pool in &policy.pools {
            sqlx::query("INSERT INTO quota_pools (region_code, code, daily_quota) VALUES ($1, $2, $3)")
                .bind(region)
                .bind(&pool.code)
                .bind(pool.daily_quota)
                .execute(&mut *tx)
                .await?;
        }
        for point in &policy.points {
            sqlx::query(
                "INSERT INTO service_points (code, region_code, name, kind, district_code, pool_code) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&point.code)
            .bind(region)
            .bind(&point.name)
            .bind(kind_code(point.kind))
            .bind(&point.district_code)
            .bind(&point.pool_code)
            .execute(&mut *tx)
            .await?;
        }
        // Open days follow the new quotas; granted units cannot be taken back.
        let set_capacity = "UPDATE buckets SET capacity = CASE WHEN $2 > held + committed THEN $2 ELSE held + committed END \
                            WHERE id LIKE $1";
        let pool_ids = sqlx::query("SELECT id FROM buckets WHERE id LIKE $1")
            .bind(format!("pool:{region}:%"))
            .fetch_all(&mut *tx)
            .await?;
        for row in pool_ids {
            let id: String = row.try_get("id")?;
            if let Some(BucketKey::Pool { pool, .. }) = BucketKey::parse(&id) {
                sqlx::query(set_capacity)
                    .bind(&id)
                    .bind(policy.pool_quota(&pool).unwrap_or(0))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query(set_capacity)
            .bind(format!("month:{region}:%"))
            .bind(policy.monthly_cap)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records blanks received: into the national pool (`holder` NATIONAL), or
    /// from it into a region. The engine is updated after the commit.
    pub async fn receive_shipment(
        &self,
        engine: &Engine,
        region: &str,
        quantity: i64,
        reference: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut tx = self.db.begin_write().await?;
        record_document(&mut tx, reference, MovementKind::Shipment, now).await?;
        let mut entries = Vec::new();
        if region != NATIONAL {
            adjust_stock(&mut tx, NATIONAL, -quantity).await?;
            entries.push(NewEntry {
                holder: NATIONAL,
                kind: MovementKind::Shipment,
                quantity,
                on_hand_delta: -quantity,
                reference,
                actor,
                reason: "shipped to region",
                reservation_id: None,
            });
        }
        adjust_stock(&mut tx, region, quantity).await?;
        entries.push(NewEntry {
            holder: region,
            kind: MovementKind::Shipment,
            quantity,
            on_hand_delta: quantity,
            reference,
            actor,
            reason: if region == NATIONAL {
                "received into the national pool"
            } else {
                "received from the national pool"
            },
            reservation_id: None,
        });
        let written = insert_ledger(&mut tx, &entries, now).await?;
        tx.commit().await?;
        // Increases are applied in memory after the commit, so memory never promises more than the database holds.
        if region != NATIONAL {
            let _ = engine.stock(NATIONAL).adjust_capacity(-quantity);
        }
        let _ = engine.stock(region).adjust_capacity(quantity);
        Ok(written)
    }

    /// Lends blanks between regions, or (with `to` None) writes them off as spoiled.
    /// The lender's units leave memory first, so nothing can grant them meanwhile.
    pub async fn move_out(
        &self,
        engine: &Engine,
        movement: &Movement<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let &Movement {
            from,
            to,
            quantity,
            reference,
            actor,
            reason,
        } = movement;
        let source = engine.stock(from);
        source
            .adjust_capacity(-quantity)
            .map_err(|available| StoreError::InsufficientStock { available })?;
        let result = async {
            let kind = if to.is_some() {
                MovementKind::Transfer
            } else {
                MovementKind::Spoilage
            };
            let mut tx = self.db.begin_write().await?;
            record_document(&mut tx, reference, kind, now).await?;
            adjust_stock(&mut tx, from, -quantity).await?;
            let mut entries = vec![NewEntry {
                holder: from,
                kind,
                quantity,
                on_hand_delta: -quantity,
                reference,
                actor,
                reason,
                reservation_id: None,
            }];
            if let Some(to) = to {
                adjust_stock(&mut tx, to, quantity).await?;
                entries.push(NewEntry {
                    holder: to,
                    kind,
                    quantity,
                    on_hand_delta: quantity,
                    reference,
                    actor,
                    reason,
                    reservation_id: None,
                });
            }
            let written = insert_ledger(&mut tx, &entries, now).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(written)
        }
        .await;
        match result {
            Ok(written) => {
                if let Some(to) = to {
                    let _ = engine.stock(to).adjust_capacity(quantity);
                }
                Ok(written)
            }
            Err(err) => {
                let _ = source.adjust_capacity(quantity);
                Err(err)
            }
        }
    }

    /// Raises stored capacities (never lowers them), after the engine raised its buckets.
    pub async fn raise_capacities(&self, raised: &[(BucketKey, i64)]) -> Result<(), StoreError> {
        if raised.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write().await?;
        for (key, capacity) in raised {
            sqlx::query("UPDATE buckets SET capacity = $2 WHERE id = $1 AND capacity < $2")
                .bind(key.id())
                .bind(*capacity)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Counts a committed blank (a printed card found damaged) as spoiled: a
    /// SPOILAGE row that does not move the stock again, since the commit did.
    pub async fn reclassify_spoilage(
        &self,
        region: &str,
        reservation_id: &str,
        reference: &str,
        actor: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut tx = self.db.begin_write().await?;
        record_document(&mut tx, reference, MovementKind::Spoilage, now).await?;
        // One write-off per consumed blank, whatever the reference; the unique
        // index below settles two reports racing past this read.
        let first: Option<String> =
            sqlx::query("SELECT reference FROM ledger WHERE kind = 'SPOILAGE' AND reservation_id = $1")
                .bind(reservation_id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get("reference"))
                .transpose()?;
        if let Some(reference) = first {
            return Err(StoreError::AlreadySpoiled { reference });
        }
        let entry = NewEntry {
            holder: region,
            kind: MovementKind::Spoilage,
            quantity: 1,
            on_hand_delta: 0,
            reference,
            actor,
            reason,
            reservation_id: Some(reservation_id.to_owned()),
        };
        let written = match insert_ledger(&mut tx, &[entry], now).await {
            Err(StoreError::Db(err)) if is_unique_violation(&err) => {
                return Err(StoreError::AlreadySpoiled {
                    reference: String::new(),
                });
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(written)
    }

    /// A holder's ledger, newest first, after `before_seq` when given.
    pub async fn ledger(
        &self,
        holder: &str,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let sql = format!(
            "SELECT seq, {LEDGER_COLUMNS} FROM ledger WHERE holder_code = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(holder)
            .bind(before_seq.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(ledger_from_row)
            .collect()
    }

    /// The ledger's sum for a holder: its stock on hand by the books.
    pub async fn ledger_on_hand(&self, holder: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT CAST(COALESCE(SUM(on_hand_delta), 0) AS BIGINT) AS n FROM ledger WHERE holder_code = $1",
        )
        .bind(holder)
        .fetch_one(self.db.pool())
        .await?
        .try_get("n")?)
    }

    /// Blanks written off in total for a holder.
    pub async fn spoiled(&self, holder: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) AS n FROM ledger WHERE holder_code = $1 AND kind = 'SPOILAGE'")
            .bind(holder)
            .fetch_one(self.db.pool())
            .await?
            .try_get("n")?)
    }

    /// A bucket's stored counts.
    pub async fn bucket(&self, key: &BucketKey) -> Result<Option<BucketCounts>, StoreError> {
        let row = sqlx::query("SELECT capacity, held, committed FROM buckets WHERE id = $1")
            .bind(key.id())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| {
            let (capacity, held, committed): (i64, i64, i64) = (
                r.try_get("capacity")?,
                r.try_get("held")?,
                r.try_get("committed")?,
            );
            Ok(BucketCounts {
                capacity,
                held,
                committed,
                remaining: capacity - held - committed,
            })
        })
        .transpose()
    }

    /// Reservations stored in each state.
    pub async fn reservation_states(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM reservations GROUP BY state")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }
}

/// What start-up found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Buckets restored.
    pub buckets: usize,
    /// Policies restored.
    pub policies: usize,
    /// Reservations restored.
    pub reservations: usize,
    /// Reservations whose service point no longer exists.
    pub orphaned: usize,
}

/// A decision of the engine to make durable.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// A fresh grant.
    Grant(Arc<Reservation>),
    /// A commit, release or expiry that won its CAS.
    Transition {
        /// The reservation.
        reservation: Arc<Reservation>,
        /// Which.
        transition: Transition,
        /// Who.
        actor: String,
        /// Why.
        reason: String,
    },
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<(), String>>,
    /// The request's span: its batch's commit is traced under it.
    span: tracing::Span,
}

/// Group-commit settings.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Most decisions in one transaction.
    pub max_batch: usize,
    /// How long a batch waits for more decisions once the first arrives.
    /// None by default: while every slot is busy writing, decisions queue up
    /// and the next batch takes them all, so batches grow with the load on
    /// their own, and a lone decision is written at once. (In the peak-morning
    /// bench a 1 ms linger made no clear difference at 1,024 requests in
    /// flight and gave fewer grants per second at 64.)
    pub linger: Duration,
    /// Decisions waiting at most; beyond it callers wait for room.
    pub queue: usize,
    /// Batches being written at once, each on its own connection: the next
    /// batch's rows go in while the previous one waits for its commit to
    /// reach the disk. Keep it below the pool's size, so reads still get a
    /// connection.
    pub in_flight: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            max_batch: 512,
            linger: Duration::ZERO,
            queue: 8_192,
            in_flight: 2,
        }
    }
}

/// The handle through which decisions are made durable.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer task on `db`. It stops when every handle is dropped.
    pub fn spawn(db: Db, settings: GroupCommit) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(settings.queue);
        let task = tokio::spawn(run_writer(db, rx, settings));
        (Self { tx }, task)
    }

    /// Makes one decision durable; returns once its transaction has committed.
    pub async fn write(&self, op: WriteOp) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                op,
                reply,
                span: tracing::Span::current(),
            })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::LimitRefused(message)),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }
}

async fn run_writer(db: Db, mut rx: mpsc::Receiver<Job>, settings: GroupCommit) {
    // SQLite has one writer at a time: a second batch would only wait on its lock.
    let in_flight = match db.backend() {
        Backend::Sqlite => 1,
        Backend::Postgres => settings.in_flight.max(1),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    loop {
        // Wait for a free slot first: while every slot is busy, decisions
        // pile up in the queue and the next batch carries them all.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut batch: Vec<Job> = Vec::with_capacity(settings.max_batch);
        batch.push(first);
        let linger = tokio::time::Instant::now() + settings.linger;
        while batch.len() < settings.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(linger, rx.recv()).await {
                        Ok(Some(job)) => batch.push(job),
                        _ => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        // Batches in flight at once never share a reservation: a transition
        // is only sent once its grant is durable, and one CAS lets a single
        // transition through.
        let db = db.clone();
        tokio::spawn(async move {
            commit_batch(&db, batch).await;
            drop(slot);
        });
    }
    // Stopping: let the batches in flight finish and answer their callers.
    let _ = slots
        .acquire_many(u32::try_from(in_flight).unwrap_or(u32::MAX))
        .await;
}

/// Writes one batch and answers each of its callers.
async fn commit_batch(db: &Db, mut batch: Vec<Job>) {
    let ops: Vec<&WriteOp> = batch.iter().map(|j| &j.op).collect();
    // One span per commit, under the first request's span and linked from the others'.
    let span = tracing::info_span!(
        parent: batch.first().and_then(|job| job.span.id()),
        "inventory.group_commit",
        otel.kind = "client",
        db.system = match db.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        },
        db.operation = "COMMIT",
        adminduk.batch_size = ops.len(),
    );
    for job in batch.iter().skip(1) {
        span.follows_from(&job.span);
    }
    let started = std::time::Instant::now();
    let written = tracing::Instrument::instrument(write_batch(db, &ops), span).await;
    let m = adminduk_kit::metrics::get();
    let inventory = adminduk_kit::metrics::ServiceLabel { service: "inventory" };
    m.group_commit_batch
        .get_or_create(&inventory)
        .observe(ops.len() as f64);
    m.group_commit_duration
        .get_or_create(&inventory)
        .observe(started.elapsed().as_secs_f64());
    drop(ops);
    match written {
        Ok(()) => {
            for job in batch.drain(..) {
                let _ = job.reply.send(Ok(()));
            }
        }
        Err(err) if batch.len() > 1 => {
            // One bad decision must not sink the others: write each alone.
            tracing::warn!(error = %err, size = batch.len(), "group commit failed; retrying one by one");
            for job in batch.drain(..) {
                let result = write_batch(db, &[&job.op]).await.map_err(|e| e.to_string());
                let _ = job.reply.send(result);
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "write failed");
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(err.to_string()));
            }
        }
    }
}

/// The group commit's statements, for one backend. Every row of a batch
/// travels in one JSON array parameter, so a statement's text is the same
/// whatever the batch's size: each connection parses and plans it once and
/// then runs it from its prepared-statement cache, where a `VALUES` list of
/// one row per grant would be a new statement (and a new plan) for every
/// batch size. `$1` is the rows (read with `e.value ->> n`, which both
/// backends accept), `$2` the batch's time.
#[derive(Debug)]
struct BatchSql {
    /// Grants: the reservations and their HOLD ledger rows, from the same rows.
    grants: &'static [&'static str],
    transitions: &'static str,
    ledger: &'static str,
    new_buckets: &'static str,
    /// Locks the batch's bucket rows in id order before they are updated, so
    /// two batches in flight that share buckets (the region's stock is in
    /// every one) wait for each other instead of deadlocking, whatever plan
    /// the update runs with. SQLite has one writer at a time and needs none.
    lock_buckets: Option<&'static str>,
    buckets: &'static str,
}

/// A grant row: id, point, day, applicant, purpose, key, expiry, creation, region.
macro_rules! insert_reservations {
    ($from:literal) => {
        concat!(
            "INSERT INTO reservations (id, point_code, day, applicant_nik, purpose, idempotency_key, state, \
             expires_at, created_at, updated_at) \
             SELECT e.value ->> 0, e.value ->> 1, e.value ->> 2, e.value ->> 3, e.value ->> 4, e.value ->> 5, \
             'HELD', CAST(e.value ->> 6 AS BIGINT), CAST(e.value ->> 7 AS BIGINT), $2 FROM ",
            $from
        )
    };
}

/// The HOLD ledger rows of grant rows.
macro_rules! insert_holds {
    ($from:literal) => {
        concat!(
            "INSERT INTO ledger (",
            ledger_columns!(),
            ") SELECT e.value ->> 8, 'HOLD', 1, 0, e.value ->> 5, e.value ->> 1, e.value ->> 4, e.value ->> 0, $2 \
             FROM ",
            $from
        )
    };
}

macro_rules! batch_sql {
    ($rows:literal, $grants:expr, $lock:expr) => {
        BatchSql {
            grants: $grants,
            lock_buckets: $lock,
            transitions: concat!(
                "UPDATE reservations SET state = e.value ->> 1, updated_at = $2 FROM ",
                $rows,
                " WHERE reservations.id = e.value ->> 0 AND reservations.state = 'HELD'"
            ),
            ledger: concat!(
                "INSERT INTO ledger (",
                ledger_columns!(),
                ") SELECT e.value ->> 0, e.value ->> 1, 1, CAST(e.value ->> 2 AS BIGINT), e.value ->> 3, \
                 e.value ->> 4, e.value ->> 5, e.value ->> 6, $2 FROM ",
                $rows
            ),
            // Buckets not yet stored are created empty, with their capacity.
            new_buckets: concat!(
                "INSERT INTO buckets (id, capacity) SELECT e.value ->> 0, CAST(e.value ->> 1 AS BIGINT) FROM ",
                $rows,
                " WHERE true ON CONFLICT (id) DO NOTHING"
            ),
            // Every bucket moves by the batch's deltas, only where the result
            // stays within the capacity, so the database refuses to oversell
            // on its own. (`WHERE true` above tells SQLite's parser that the
            // `ON CONFLICT` belongs to the INSERT.)
            buckets: concat!(
                "UPDATE buckets SET held = held + CAST(e.value ->> 2 AS BIGINT), \
                 committed = committed + CAST(e.value ->> 3 AS BIGINT) FROM ",
                $rows,
                " WHERE buckets.id = e.value ->> 0 AND held + CAST(e.value ->> 2 AS BIGINT) >= 0 \
                 AND held + CAST(e.value ->> 2 AS BIGINT) + committed + CAST(e.value ->> 3 AS BIGINT) <= capacity"
            ),
        }
    };
}

/// PostgreSQL writes a grant chunk's reservations and ledger rows in one
/// statement (a data-modifying CTE), from one parse of the rows.
const POSTGRES_BATCH: BatchSql = batch_sql!(
    "jsonb_array_elements(CAST($1 AS jsonb)) AS e",
    &[concat!(
        "WITH g AS (SELECT e.value FROM jsonb_array_elements(CAST($1 AS jsonb)) AS e), r AS (",
        insert_reservations!("g AS e"),
        ") ",
        insert_holds!("g AS e")
    )],
    Some(
        "SELECT id FROM buckets WHERE id IN \
         (SELECT e.value ->> 0 FROM jsonb_array_elements(CAST($1 AS jsonb)) AS e) ORDER BY id FOR UPDATE"
    )
);
/// SQLite has no data-modifying CTEs: two statements on the same rows.
const SQLITE_BATCH: BatchSql = batch_sql!(
    "json_each($1) AS e",
    &[
        insert_reservations!("json_each($1) AS e"),
        insert_holds!("json_each($1) AS e")
    ],
    None
);

/// Largest JSON parameter of one statement. A statement then fits in one TLS
/// record (16 KiB): sqlx 0.9 does not set `TCP_NODELAY`, and a message that
/// spans several records is written in several `write`s, the later ones held
/// back by Nagle's algorithm until the server's delayed ACK (tens of
/// milliseconds). Smaller statements cost a round trip each instead.
const CHUNK_BYTES: usize = 12 * 1024;

/// `rows` as JSON arrays of at most [`CHUNK_BYTES`] each (a single larger row
/// gets a chunk of its own).
fn json_chunks(rows: &[serde_json::Value]) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut chunk = String::new();
    for row in rows {
        let row = row.to_string();
        if !chunk.is_empty() && chunk.len() + row.len() + 2 > CHUNK_BYTES {
            chunk.push(']');
            chunks.push(std::mem::take(&mut chunk));
        }
        chunk.push(if chunk.is_empty() { '[' } else { ',' });
        chunk.push_str(&row);
    }
    if !chunk.is_empty() {
        chunk.push(']');
        chunks.push(chunk);
    }
    chunks
}

/// Runs `statement` once per chunk of `rows` (bound as `$1`, with `now` as
/// `$2` when given); returns the rows affected in all.
async fn execute_chunks(
    tx: &mut Transaction<'static, Any>,
    statement: &'static str,
    rows: &[serde_json::Value],
    now: Option<i64>,
) -> Result<u64, StoreError> {
    let mut affected = 0;
    for chunk in json_chunks(rows) {
        let mut query = sqlx::query(statement).bind(chunk);
        if let Some(now) = now {
            query = query.bind(now);
        }
        affected += query.execute(&mut **tx).await?.rows_affected();
    }
    Ok(affected)
}

/// Writes decisions in one transaction: reservations, ledger rows, then the
/// bucket counts (last, so the hot bucket rows stay locked only from their
/// update to the commit).
/// A batch's decisions as the rows its statements take (JSON arrays).
struct BatchRows {
    /// New reservations (each with its HOLD ledger row).
    grants: Vec<serde_json::Value>,
    /// Reservations committed or released: id and new state.
    transitions: Vec<serde_json::Value>,
    /// The ledger rows of the transitions.
    ledger: Vec<serde_json::Value>,
    /// Per bucket, sorted by id: capacity to create it with, held delta, committed delta.
    buckets: Vec<serde_json::Value>,
}

impl BatchRows {
    fn of(ops: &[&WriteOp]) -> Self {
        // (held delta, committed delta) per path: most of a batch's decisions
        // share a few (point, day) paths, whose bucket keys are then built once.
        let mut per_path: HashMap<usize, (&Path, i64, i64)> = HashMap::new();
        let mut grants = Vec::new();
        let mut transitions = Vec::new();
        let mut ledger = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                WriteOp::Grant(r) => {
                    per_path
                        .entry(Arc::as_ptr(&r.path).addr())
                        .or_insert((&r.path, 0, 0))
                        .1 += 1;
                    // The reservation, and (from the same row) its HOLD ledger row.
                    grants.push(serde_json::json!([
                        r.id.to_string(),
                        r.point_code(),
                        r.path.day.to_string(),
                        r.applicant,
                        r.purpose,
                        r.idempotency_key,
                        millis(r.expires_at),
                        millis(r.created_at),
                        r.path.point.region,
                    ]));
                }
                WriteOp::Transition {
                    reservation: r,
                    transition,
                    actor,
                    reason,
                } => {
                    let commit = *transition == Transition::Commit;
                    let entry = per_path
                        .entry(Arc::as_ptr(&r.path).addr())
                        .or_insert((&r.path, 0, 0));
                    entry.1 -= 1;
                    entry.2 += i64::from(commit);
                    let id = r.id.to_string();
                    transitions.push(serde_json::json!([id, state_code(transition.done())]));
                    ledger.push(serde_json::json!([
                        r.path.point.region,
                        MovementKind::of(*transition).as_str(),
                        if commit { -1 } else { 0 },
                        r.idempotency_key,
                        actor,
                        reason,
                        id,
                    ]));
                }
            }
        }
        Self {
            grants,
            transitions,
            ledger,
            buckets: bucket_rows(per_path.into_values()),
        }
    }
}

/// The paths' deltas summed per bucket, as (id, capacity to create it with,
/// held delta, committed delta), sorted by id: the order in which a batch
/// locks them.
fn bucket_rows<'a>(per_path: impl Iterator<Item = (&'a Path, i64, i64)>) -> Vec<serde_json::Value> {
    let mut deltas: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for (path, held, committed) in per_path {
        for (key, bucket) in path.buckets() {
            let entry = deltas
                .entry(key.id())
                .or_insert_with(|| (bucket.counts().capacity, 0, 0));
            entry.1 += held;
            entry.2 += committed;
        }
    }
    deltas
        .iter()
        .map(|(id, (capacity, held, committed))| serde_json::json!([id, capacity, held, committed]))
        .collect()
}

async fn write_batch(db: &Db, ops: &[&WriteOp]) -> Result<(), StoreError> {
    let now = millis(Utc::now());
    let sql = match db.backend() {
        Backend::Postgres => &POSTGRES_BATCH,
        Backend::Sqlite => &SQLITE_BATCH,
    };
    let BatchRows {
        grants,
        transitions,
        ledger,
        buckets,
    } = BatchRows::of(ops);
    let mut tx = db.begin_write().await?;
    for &statement in sql.grants {
        execute_chunks(&mut tx, statement, &grants, Some(now)).await?;
    }
    let updated = execute_chunks(&mut tx, sql.transitions, &transitions, Some(now)).await?;
    if updated != transitions.len() as u64 {
        return Err(StoreError::LimitRefused(format!(
            "{} of {} reservations are not held",
            transitions.len() as u64 - updated,
            transitions.len()
        )));
    }
    execute_chunks(&mut tx, sql.ledger, &ledger, Some(now)).await?;
    execute_chunks(&mut tx, sql.new_buckets, &buckets, None).await?;
    if let Some(lock) = sql.lock_buckets {
        execute_chunks(&mut tx, lock, &buckets, None).await?;
    }
    let moved = execute_chunks(&mut tx, sql.buckets, &buckets, None).await?;
    if moved != buckets.len() as u64 {
        return Err(StoreError::LimitRefused(format!(
            "{} of {} buckets would exceed their capacity",
            buckets.len() as u64 - moved,
            buckets.len()
        )));
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_clauses_number_every_parameter() {
        assert_eq!(values_clause(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(values_clause(1, 1), "($1)");
    }

    #[test]
    fn json_chunks_keep_every_row_once_in_order_and_stay_small() {
        let rows: Vec<serde_json::Value> = (0..2_000)
            .map(|n| serde_json::json!([format!("row-{n}"), n, "x".repeat(n % 50)]))
            .collect();
        let chunks = json_chunks(&rows);
        assert!(chunks.len() > 1, "2,000 rows do not fit one chunk");
        let mut back = Vec::new();
        for chunk in &chunks {
            assert!(chunk.len() <= CHUNK_BYTES, "{} bytes", chunk.len());
            let serde_json::Value::Array(parsed) = serde_json::from_str(chunk).expect("valid JSON") else {
                panic!("a chunk is an array");
            };
            back.extend(parsed);
        }
        assert_eq!(back, rows);

        let big = vec![
            serde_json::json!(["y".repeat(CHUNK_BYTES * 2)]),
            serde_json::json!([1]),
        ];
        let chunks = json_chunks(&big);
        assert_eq!(chunks.len(), 2, "an oversized row goes alone");
        assert!(json_chunks(&[]).is_empty());
    }
}
