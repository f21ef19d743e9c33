//! The storm and the crash, on SQLite and (when configured) PostgreSQL:
//! 64 tasks race for one kecamatan's 30 blanks through the durable path, and
//! acknowledged grants survive the core being dropped mid-storm.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use adminduk_inventory::demo::{KOTA_BEKASI, kecamatan_point, kota_bekasi_policy};
use adminduk_inventory::service::{Inventory, ReserveFailure};
use adminduk_inventory::store::NATIONAL;
use adminduk_inventory::{GroupCommit, MIGRATIONS, SCHEMA};
use adminduk_inventory_core::engine::{BucketKey, ReserveError, ReserveRequest};
use adminduk_inventory_core::state::State;
use adminduk_kit::storage::Db;
use adminduk_kit::testing::{self, TestDatabase};
use chrono::{Duration, NaiveDate, Utc};

const TASKS: usize = 64;
const ATTEMPTS: usize = 2_000;

fn appointment_day() -> NaiveDate {
    Utc::now().date_naive() + Duration::days(1)
}

async fn open(db: &TestDatabase) -> (Db, Arc<Inventory>, adminduk_inventory::service::Background) {
    let _ = SCHEMA;
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
                let req = ReserveRequest {
                    point_code: &point,
                    day: appointment_day(),
                    applicant: &nik,
                    purpose: "ktp-el",
                    idempotency_key: &key,
                    expires_at: Utc::now() + Duration::hours(8),
                };
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
        let pool = BucketKey::Pool {
            region: KOTA_BEKASI.into(),
            pool: point.clone(),
            day: appointment_day(),
        };
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
