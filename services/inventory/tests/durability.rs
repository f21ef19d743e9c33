//! The storm and the crash, on SQLite and (when configured) PostgreSQL:
//! 64 tasks race for one kecamatan's 30 blanks through the durable path, and
//! acknowledged grants survive the core being dropped mid-storm.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use adminduk_inventory::demo::{KOTA_BEKASI, kecamatan_point, kota_bekasi_policy};
use adminduk_inventory::service::{Inventory, ReserveFailure};
use adminduk_inventory::store::{Movement, MovementKind, NATIONAL};
use adminduk_inventory::{GroupCommit, MIGRATIONS};
use adminduk_inventory_core::engine::{BucketKey, ReserveError, ReserveRequest};
use adminduk_inventory_core::state::{State, Transition};
use adminduk_kit::storage::Db;
use adminduk_kit::testing::{self, TestDatabase};
use chrono::{Duration, NaiveDate, Utc};

const TASKS: usize = 64;
const ATTEMPTS: usize = 2_000;

fn appointment_day() -> NaiveDate {
    Utc::now().date_naive() + Duration::days(1)
}

/// A KTP-el reservation at `point` for the appointment day, held for 8 hours
/// (override `expires_at` with `..` for another hold).
fn ktp_el<'a>(point: &'a str, applicant: &'a str, idempotency_key: &'a str) -> ReserveRequest<'a> {
    ReserveRequest {
        point_code: point,
        day: appointment_day(),
        applicant,
        purpose: "ktp-el",
        idempotency_key,
        expires_at: Utc::now() + Duration::hours(8),
    }
}

/// The key of `point`'s pool bucket in Kota Bekasi on `day`.
fn pool_of(point: &str, day: NaiveDate) -> BucketKey {
    BucketKey::Pool {
        region: KOTA_BEKASI.into(),
        pool: point.to_owned(),
        day,
    }
}

async fn open(db: &TestDatabase) -> (Db, Arc<Inventory>, adminduk_inventory::service::Background) {
    let conn = Db::connect(&db.config, &db.schema, MIGRATIONS)
        .await
        .expect("database");
    let (inventory, background, _) = Inventory::open(conn.clone(), GroupCommit::default())
        .await
        .expect("opens");
    (conn, inventory, background)
}

async fn stocked(db: &TestDatabase) -> (Db, Arc<Inventory>, adminduk_inventory::service::Background) {
    let (conn, inventory, background) = open(db).await;
    inventory.set_policy(kota_bekasi_policy()).await.expect("policy");
    inventory
        .receive_shipment(NATIONAL, 1_000_000, "opening", "test")
        .await
        .expect("national stock");
    inventory
        .receive_shipment(KOTA_BEKASI, 15_000, "SJ-1", "test")
        .await
        .expect("region stock");
    (conn, inventory, background)
}

/// Every task tries `ATTEMPTS` distinct applicants; returns the ids granted.
async fn storm(
    inventory: &Arc<Inventory>,
    point: &str,
    round: usize,
    stop_after: Option<usize>,
) -> Vec<String> {
    let granted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let inventory = inventory.clone();
        let granted = granted.clone();
        let count = count.clone();
        let point = point.to_owned();
        tasks.push(tokio::spawn(async move {
            for a in 0..ATTEMPTS {
                if stop_after.is_some_and(|n| count.load(Ordering::Relaxed) >= n) {
                    return;
                }
                let nik = format!("327501410{round}{t:02}{a:04}");
                let key = format!("storm-{round}-{t}-{a}");
                let req = ktp_el(&point, &nik, &key);
                match inventory.reserve(&req, Utc::now()).await {
                    Ok(r) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        granted.lock().expect("lock").push(r.id.to_string());
                    }
                    Err(ReserveFailure::Refused(ReserveError::Exhausted(_))) => {}
                    Err(other) => panic!("unexpected: {other:?}"),
                }
                if a % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    granted.lock().expect("lock").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_grants_exactly_the_quota_and_the_books_agree() {
    for db in testing::databases("storm") {
        let (_conn, inventory, background) = stocked(&db).await;
        let point = kecamatan_point(1);
        let granted = storm(&inventory, &point, 0, None).await;
        assert_eq!(granted.len(), 30, "{}: exactly the quota", db.label);
        assert_eq!(
            granted.iter().collect::<HashSet<_>>().len(),
            30,
            "distinct reservations"
        );

        let store = inventory.store();
        let pool = pool_of(&point, appointment_day());
        let stored = store
            .bucket(&pool)
            .await
            .expect("read")
            .expect("pool bucket stored");
        assert_eq!(
            (stored.capacity, stored.held, stored.remaining),
            (30, 30, 0),
            "{}",
            db.label
        );
        let states = store.reservation_states().await.expect("states");
        assert_eq!(states.get("HELD"), Some(&30), "{}", db.label);
        let stock = inventory
            .stock_level(KOTA_BEKASI, Utc::now().date_naive())
            .await
            .expect("stock");
        assert_eq!((stock.on_hand, stock.held, stock.available), (15_000, 30, 14_970));
        assert_eq!(
            store.ledger_on_hand(KOTA_BEKASI).await.expect("sum"),
            stock.on_hand,
            "ledger sums to on hand"
        );
        background.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_grants_survive_a_crash_mid_storm() {
    for db in testing::databases("crash") {
        let (conn, inventory, background) = stocked(&db).await;
        let point = kecamatan_point(2);
        // Stop the storm part-way, then drop everything as a crash would.
        let acknowledged = storm(&inventory, &point, 0, Some(12)).await;
        assert!(
            acknowledged.len() >= 12 && acknowledged.len() <= 30,
            "{}",
            acknowledged.len()
        );
        background.abort();
        drop(inventory);
        conn.close().await;

        let (_conn, rebuilt, background) = open(&db).await;
        let day = appointment_day();
        for id in &acknowledged {
            let id = uuid::Uuid::parse_str(id).expect("uuid");
            let r = rebuilt
                .engine()
                .reservation(&id)
                .unwrap_or_else(|| panic!("{}: acknowledged {id} lost", db.label));
            assert_eq!(r.state(), State::Held);
        }
        let stored_held = rebuilt
            .store()
            .reservation_states()
            .await
            .expect("states")
            .get("HELD")
            .copied()
            .unwrap_or(0);
        assert_eq!(
            stored_held as usize,
            acknowledged.len(),
            "{}: nothing unacknowledged was kept",
            db.label
        );
        let (remaining, quota) = rebuilt.engine().availability(&point, day).expect("known point");
        assert_eq!(quota, 30);
        assert_eq!(
            remaining as usize,
            30 - acknowledged.len(),
            "{}: remaining rebuilt",
            db.label
        );

        // The rebuilt core still never oversells.
        let more = storm(&rebuilt, &point, 1, None).await;
        assert_eq!(acknowledged.len() + more.len(), 30, "{}", db.label);
        background.abort();
    }
}

/// A grant and its commit, written by group commits, each leave a ledger row
/// that names the region, the reservation, its key, the point and the purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_leaves_a_hold_and_a_commit_in_the_ledger() {
    for db in testing::databases("holdrows") {
        let (_conn, inventory, background) = stocked(&db).await;
        let point = kecamatan_point(5);
        let req = ktp_el(&point, "3275014101900002", "hold-rows-1");
        let reservation = inventory.reserve(&req, Utc::now()).await.expect("granted");
        inventory
            .transition(
                &reservation.id,
                Transition::Commit,
                Some(&point),
                "printer-1",
                "printed",
            )
            .await
            .expect("committed");
        let rows = inventory
            .store()
            .ledger(KOTA_BEKASI, None, 10)
            .await
            .expect("ledger");
        let id = reservation.id.to_string();
        let mine: Vec<_> = rows
            .iter()
            .filter(|e| e.reservation_id.as_deref() == Some(id.as_str()))
            .map(|e| {
                (
                    e.kind,
                    e.quantity,
                    e.on_hand_delta,
                    e.reference.as_str(),
                    e.actor.as_str(),
                    e.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            mine,
            vec![
                (MovementKind::Commit, 1, -1, "hold-rows-1", "printer-1", "printed"),
                (MovementKind::Hold, 1, 0, "hold-rows-1", point.as_str(), "ktp-el"),
            ],
            "{}: newest first",
            db.label
        );
        background.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_gives_the_units_back_and_holds_nothing() {
    for db in testing::databases("writefail") {
        let (conn, inventory, background) = stocked(&db).await;
        let point = kecamatan_point(3);
        let day = appointment_day();
        let req = ktp_el(&point, "3275014101900001", "fail-1");
        // The database goes away under the writer.
        conn.close().await;
        match inventory.reserve(&req, Utc::now()).await {
            Err(ReserveFailure::Unavailable(_)) => {}
            other => panic!("{}: expected unavailable, got {other:?}", db.label),
        }
        assert_eq!(
            inventory.engine().availability(&point, day),
            Some((30, 30)),
            "{}: the unit went back",
            db.label
        );
        // Nothing is held in memory either: the same applicant is not "already holding".
        let (_conn, reopened, background2) = open(&db).await;
        assert_eq!(reopened.engine().availability(&point, day), Some((30, 30)));
        reopened
            .reserve(&req, Utc::now())
            .await
            .expect("the retry is granted");
        background.abort();
        background2.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_holds_are_swept_back_once() {
    for db in testing::databases("expiry") {
        let (_conn, inventory, background) = stocked(&db).await;
        let point = kecamatan_point(4);
        let day = appointment_day();
        let now = Utc::now();
        let req = ReserveRequest {
            expires_at: now + Duration::minutes(5),
            ..ktp_el(&point, "3275014101900002", "exp-1")
        };
        let r = inventory.reserve(&req, now).await.expect("granted");
        assert_eq!(inventory.sweep_expired(now).await, 0, "not yet due");
        assert_eq!(
            inventory.sweep_expired(now + Duration::minutes(6)).await,
            1,
            "{}",
            db.label
        );
        assert_eq!(
            inventory.sweep_expired(now + Duration::minutes(7)).await,
            0,
            "expired once"
        );
        assert_eq!(r.state(), State::Expired);
        assert_eq!(
            inventory.engine().availability(&point, day),
            Some((30, 30)),
            "{}: back",
            db.label
        );
        let states = inventory.store().reservation_states().await.expect("states");
        assert_eq!(states.get("EXPIRED"), Some(&1), "{}", db.label);
        let ledger = inventory
            .store()
            .ledger(KOTA_BEKASI, None, 10)
            .await
            .expect("ledger");
        assert_eq!(
            ledger.first().map(|e| e.kind),
            Some(adminduk_inventory::store::MovementKind::Expiry)
        );
        background.abort();
    }
}

/// After every operation of a random sequence, the ledger's sum equals the
/// stock on hand, in memory and in the database, for every holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_sums_to_the_stock_after_every_operation() {
    use adminduk_inventory_core::state::Transition;
    use rand::rngs::SmallRng;
    use rand::{Rng as _, SeedableRng as _};

    for db in testing::databases("ledgersum") {
        let (_conn, inventory, background) = stocked(&db).await;
        let mut second = kota_bekasi_policy();
        second.region_code = "3216".into();
        for (i, p) in second.points.iter_mut().enumerate() {
            p.code = format!("3216-P-{i:02}");
            p.district_code = format!("3216{:02}", i % 12 + 1);
            p.pool_code = if i < 12 {
                format!("3216-P-{i:02}")
            } else {
                "3216-SHARED".into()
            };
        }
        for (i, p) in second.pools.iter_mut().enumerate() {
            p.code = if i < 12 {
                format!("3216-P-{i:02}")
            } else {
                "3216-SHARED".into()
            };
        }
        inventory.set_policy(second).await.expect("second region");
        let mut rng = SmallRng::seed_from_u64(20_260_522);
        let mut held: Vec<uuid::Uuid> = Vec::new();
        let store = inventory.store();
        for step in 0..120 {
            let region = if rng.random_bool(0.7) { KOTA_BEKASI } else { "3216" };
            let other = if region == KOTA_BEKASI {
                "3216"
            } else {
                KOTA_BEKASI
            };
            let reference = format!("doc-{step}");
            let n = rng.random_range(1..=300);
            let op = rng.random_range(0..7);
            let out = |to, quantity, reason| Movement {
                from: region,
                to,
                quantity,
                reference: &reference,
                actor: "test",
                reason,
            };
            let result = match op {
                0 => inventory
                    .receive_shipment(region, n, &reference, "test")
                    .await
                    .map(drop),
                1 => inventory
                    .move_out(&out(Some(other), n, "lending"))
                    .await
                    .map(drop),
                2 => inventory
                    .move_out(&out(None, rng.random_range(1..=5), "damaged"))
                    .await
                    .map(drop),
                3 | 4 => {
                    let point = if region == KOTA_BEKASI {
                        kecamatan_point(rng.random_range(1..=12))
                    } else {
                        format!("3216-P-{:02}", rng.random_range(0..12))
                    };
                    let nik = format!("32750141019{step:05}");
                    let key = format!("seq-{step}");
                    let req = ReserveRequest {
                        expires_at: Utc::now() + Duration::hours(1),
                        ..ktp_el(&point, &nik, &key)
                    };
                    match inventory.reserve(&req, Utc::now()).await {
                        Ok(r) => {
                            held.push(r.id);
                            Ok(())
                        }
                        Err(ReserveFailure::Refused(_)) => Ok(()),
                        Err(ReserveFailure::Unavailable(e)) => Err(e),
                    }
                }
                _ if !held.is_empty() => {
                    let id = held.swap_remove(rng.random_range(0..held.len()));
                    let transition = if op == 5 {
                        Transition::Commit
                    } else {
                        Transition::Release
                    };
                    let point = inventory
                        .engine()
                        .reservation(&id)
                        .map(|r| r.point_code().to_owned());
                    inventory
                        .transition(&id, transition, point.as_deref(), "test", "sequence")
                        .await
                        .map(drop)
                        .map_err(|e| panic!("step {step}: {e:?}"))
                }
                _ => Ok(()),
            };
            if let Err(err) = result {
                // Refusals (not enough stock) are part of the sequence; nothing else is.
                assert!(
                    matches!(
                        err,
                        adminduk_inventory::store::StoreError::InsufficientStock { .. }
                    ),
                    "step {step}: {err:?}"
                );
            }
            for holder in [NATIONAL, KOTA_BEKASI, "3216"] {
                let books = store.ledger_on_hand(holder).await.expect("ledger sum");
                let memory = inventory.engine().stock(holder).counts();
                let stored = store
                    .bucket(&BucketKey::Stock {
                        region: holder.into(),
                    })
                    .await
                    .expect("bucket")
                    .unwrap_or_default();
                assert_eq!(
                    books,
                    memory.capacity - memory.committed,
                    "{} step {step} op {op}: memory",
                    db.label
                );
                assert_eq!(
                    books,
                    stored.capacity - stored.committed,
                    "{} step {step} op {op}: database",
                    db.label
                );
                assert_eq!(memory.held, stored.held, "{} step {step}: held", db.label);
            }
        }
        background.abort();
    }
}

/// Memory that somehow promises more than the database holds (a bug, a
/// manual edit) still cannot oversell: the database refuses the write, the
/// caller is told the grant is unavailable, and the unit goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_what_a_wrong_memory_would_oversell() {
    for db in testing::databases("oversell") {
        let (_conn, inventory, background) = stocked(&db).await;
        let point = kecamatan_point(6);
        let day = appointment_day();
        let first_req = ktp_el(&point, "3275014101900011", "over-0");
        inventory
            .reserve(&first_req, Utc::now())
            .await
            .expect("the first grant stores the bucket");
        // Corrupt memory: the pool now believes it has 5 more than its quota of 30.
        let pool = pool_of(&point, day);
        inventory
            .engine()
            .bucket(&pool)
            .expect("bucket")
            .adjust_capacity(5)
            .expect("widen in memory only");
        let mut granted = 1;
        let mut refused_by_database = 0;
        for n in 1..40 {
            let nik = format!("32750141019{n:05}");
            let key = format!("over-{n}");
            let req = ktp_el(&point, &nik, &key);
            match inventory.reserve(&req, Utc::now()).await {
                Ok(_) => granted += 1,
                Err(ReserveFailure::Unavailable(_)) => refused_by_database += 1,
                Err(ReserveFailure::Refused(_)) => {}
            }
        }
        assert_eq!(granted, 30, "{}: the database's quota holds", db.label);
        // Each phantom unit goes back to memory after its write is refused, so every
        // attempt beyond the real quota meets the database's refusal, never a grant.
        assert!(
            refused_by_database >= 5,
            "{}: {refused_by_database} refusals by the database",
            db.label
        );
        let stored = inventory
            .store()
            .bucket(&pool)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!((stored.capacity, stored.held), (30, 30), "{}", db.label);
        background.abort();
    }
}
