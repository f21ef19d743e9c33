//! The inventory through gRPC on a real socket, on SQLite and (when
//! configured) PostgreSQL: each RPC, each bad input with its code and details
//! and the ledger unchanged, the live availability stream, and a storm.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use adminduk_inventory::demo::{KOTA_BEKASI, kecamatan_point, kota_bekasi_policy};
use adminduk_inventory::{GroupCommit, MIGRATIONS, Running, SERVICE_NAME};
use adminduk_kit::testing::{self, TestDatabase};
use adminduk_proto::convert;
use adminduk_proto::inventory::v1 as pb;
use chrono::{Days, NaiveDate};
use pb::inventory_service_client::InventoryServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

struct Harness {
    client: InventoryServiceClient<Channel>,
    server: Running,
    label: &'static str,
    _db: TestDatabase,
}

impl Harness {
    async fn stop(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

async fn start(test_db: TestDatabase) -> Harness {
    let server = adminduk_inventory::start(
        testing::server_config(),
        test_db.connect(MIGRATIONS).await,
        GroupCommit::default(),
    )
    .await
    .expect("starts");
    let client = InventoryServiceClient::new(testing::ready(server.local_addr(), SERVICE_NAME).await);
    Harness {
        client,
        server,
        label: test_db.label,
        _db: test_db,
    }
}

fn policy_msg() -> pb::QuotaPolicy {
    let p = kota_bekasi_policy();
    pb::QuotaPolicy {
        region_code: p.region_code,
        service_points: p
            .points
            .into_iter()
            .map(|s| pb::ServicePoint {
                code: s.code,
                name: s.name,
                kind: match s.kind {
                    adminduk_inventory_core::policy::PointKind::Kecamatan => pb::ServicePointKind::Kecamatan,
                    adminduk_inventory_core::policy::PointKind::Mpp => pb::ServicePointKind::Mpp,
                    adminduk_inventory_core::policy::PointKind::Gpp => pb::ServicePointKind::Gpp,
                    adminduk_inventory_core::policy::PointKind::Disdukcapil => {
                        pb::ServicePointKind::Disdukcapil
                    }
                }
                .into(),
                district_code: s.district_code,
                pool_code: s.pool_code,
            })
            .collect(),
        pools: p
            .pools
            .into_iter()
            .map(|q| pb::QuotaPool {
                code: q.code,
                daily_quota: q.daily_quota,
            })
            .collect(),
        monthly_cap: p.monthly_cap,
        next_shipment_date: None,
        version: 0,
    }
}

async fn stocked(db: TestDatabase) -> Harness {
    let mut h = start(db).await;
    let set = h
        .client
        .set_quota_policy(pb::SetQuotaPolicyRequest {
            policy: Some(policy_msg()),
        })
        .await
        .expect("policy")
        .into_inner();
    assert_eq!(set.policy.map(|p| p.version), Some(1));
    for (region, quantity, reference) in [
        ("NATIONAL", 1_000_000, "opening"),
        (KOTA_BEKASI, 15_000, "SJ-0001"),
    ] {
        h.client
            .receive_shipment(shipment(region, quantity, reference, "gudang"))
            .await
            .expect("shipment");
    }
    h
}

/// A shipment of `quantity` blanks into `region`, under delivery note `reference`.
fn shipment(region: &str, quantity: i64, reference: &str, received_by: &str) -> pb::ReceiveShipmentRequest {
    pb::ReceiveShipmentRequest {
        region_code: region.into(),
        quantity,
        reference: reference.into(),
        received_by: received_by.into(),
    }
}

/// A loan of `quantity` blanks from Kota Bekasi to Kabupaten Bekasi (3216), asked by the kadis.
fn lend_to_kabupaten(quantity: i64, reference: &str, reason: &str) -> pb::TransferStockRequest {
    pb::TransferStockRequest {
        from_region_code: KOTA_BEKASI.into(),
        to_region_code: "3216".into(),
        quantity,
        reference: reference.into(),
        requested_by: "kadis".into(),
        reason: reason.into(),
    }
}

fn tomorrow() -> NaiveDate {
    adminduk_kit::time::today_wib() + Days::new(1)
}

fn reserve(point: &str, nik: &str, key: &str, day: NaiveDate) -> pb::ReserveRequest {
    pb::ReserveRequest {
        service_point_code: point.into(),
        date: Some(convert::date(day)),
        applicant_nik: nik.into(),
        idempotency_key: key.into(),
        purpose: 0,
    }
}

/// A valid NIK, one per `n` (below 990,000): a woman born on 1 January, year and serial from `n`.
fn nik(n: usize) -> String {
    format!("3275014101{:02}{:04}", n / 9_999 % 100, n % 9_999 + 1)
}

fn reason(status: &Status) -> String {
    adminduk_kit::error::reason_of(status)
}

fn metadata(status: &Status, key: &str) -> String {
    adminduk_kit::error::metadata_of(status, key).unwrap_or_default()
}

fn assert_field(status: &Status, code: Code, field: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert!(
        fields.iter().any(|f| f == field),
        "expected {field} in {fields:?}"
    );
}

async fn ledger_len(client: &mut InventoryServiceClient<Channel>, holder: &str) -> usize {
    let mut n = 0;
    let mut token = String::new();
    loop {
        let page = client
            .list_ledger(pb::ListLedgerRequest {
                holder_code: holder.into(),
                page_size: 7,
                page_token: token,
            })
            .await
            .expect("ledger")
            .into_inner();
        n += page.entries.len();
        if page.next_page_token.is_empty() {
            return n;
        }
        token = page.next_page_token;
    }
}

async fn stock(client: &mut InventoryServiceClient<Channel>) -> pb::StockLevel {
    client
        .get_stock(pb::GetStockRequest {
            region_code: KOTA_BEKASI.into(),
        })
        .await
        .expect("stock")
        .into_inner()
        .stock
        .expect("stock level")
}

#[tokio::test]
async fn stock_moves_through_the_ledger_and_replays_are_refused() {
    for db in testing::databases("invledger") {
        let mut h = stocked(db).await;
        let label = h.label;
        let s = stock(&mut h.client).await;
        assert_eq!(
            (s.on_hand, s.available, s.held, s.monthly_cap),
            (15_000, 15_000, 0, 15_000),
            "{label}"
        );
        assert_eq!(s.today_budget, 500, "{label}: 15,000 spread over 30 days");
        assert!((s.runway_days - 30.0).abs() < 1e-9, "{label}: {}", s.runway_days);

        let before = ledger_len(&mut h.client, KOTA_BEKASI).await;
        let national_before = ledger_len(&mut h.client, "NATIONAL").await;
        let replay = h
            .client
            .receive_shipment(shipment(KOTA_BEKASI, 500, "SJ-0001", "gudang"))
            .await
            .expect_err("replayed reference");
        assert_field(&replay, Code::AlreadyExists, "reference");
        assert_eq!(reason(&replay), "DUPLICATE_REFERENCE");

        // A pickup of 500 (seed 001), then spoilage and lending.
        let received = h
            .client
            .receive_shipment(shipment(KOTA_BEKASI, 500, "SJ-0002", "gudang"))
            .await
            .expect("pickup")
            .into_inner();
        assert_eq!(
            received.entries.len(),
            2,
            "out of the national pool and into the region"
        );
        assert_eq!(received.stock.map(|s| s.on_hand), Some(15_500));
        h.client
            .set_quota_policy(pb::SetQuotaPolicyRequest {
                policy: Some(pb::QuotaPolicy {
                    region_code: "3216".into(),
                    service_points: vec![pb::ServicePoint {
                        code: "3216-KEC-06".into(),
                        name: "Kecamatan Tambun Selatan".into(),
                        kind: pb::ServicePointKind::Kecamatan.into(),
                        district_code: "321606".into(),
                        pool_code: "3216-KEC-06".into(),
                    }],
                    pools: vec![pb::QuotaPool {
                        code: "3216-KEC-06".into(),
                        daily_quota: 30,
                    }],
                    monthly_cap: 900,
                    next_shipment_date: None,
                    version: 0,
                }),
            })
            .await
            .expect("second region");
        let lent = h
            .client
            .transfer_stock(lend_to_kabupaten(200, "PINJAM-1", "lending to Kabupaten Bekasi"))
            .await
            .expect("transfer")
            .into_inner();
        assert_eq!(lent.entries.len(), 2);
        let spoiled = h
            .client
            .record_spoilage(pb::RecordSpoilageRequest {
                region_code: KOTA_BEKASI.into(),
                quantity: 3,
                reason: "printer jam".into(),
                reference: "RUSAK-1".into(),
                reported_by: "operator".into(),
                reservation_id: String::new(),
            })
            .await
            .expect("spoilage")
            .into_inner();
        let s = spoiled.stock.expect("stock");
        assert_eq!((s.on_hand, s.spoiled), (15_297, 3), "{label}");
        assert_eq!(
            ledger_len(&mut h.client, KOTA_BEKASI).await,
            before + 3,
            "{label}"
        );
        assert_eq!(ledger_len(&mut h.client, "NATIONAL").await, national_before + 1);

        // Bad input: the right code, the field named, the ledger unchanged.
        let before = ledger_len(&mut h.client, KOTA_BEKASI).await;
        let bad = [
            (
                h.client
                    .receive_shipment(shipment(KOTA_BEKASI, 0, "SJ-9", "x"))
                    .await,
                Code::InvalidArgument,
                "quantity",
            ),
            (
                h.client.receive_shipment(shipment("9999", 5, "SJ-10", "x")).await,
                Code::InvalidArgument,
                "region_code",
            ),
            (
                h.client
                    .record_spoilage(pb::RecordSpoilageRequest {
                        region_code: KOTA_BEKASI.into(),
                        quantity: -2,
                        reason: String::new(),
                        reference: "RUSAK-2".into(),
                        reported_by: "operator".into(),
                        reservation_id: String::new(),
                    })
                    .await
                    .map(|_| tonic::Response::new(pb::ReceiveShipmentResponse::default())),
                Code::InvalidArgument,
                "reason",
            ),
        ];
        for (result, code, field) in bad {
            assert_field(&result.expect_err(field), code, field);
        }
        let too_much = h
            .client
            .transfer_stock(lend_to_kabupaten(1_000_000, "PINJAM-2", "too much"))
            .await
            .expect_err("more than the stock");
        assert_eq!(too_much.code(), Code::FailedPrecondition, "{label}");
        assert_eq!(reason(&too_much), "INSUFFICIENT_STOCK");
        assert_eq!(
            ledger_len(&mut h.client, KOTA_BEKASI).await,
            before,
            "{label}: ledger unchanged"
        );
        assert_eq!(stock(&mut h.client).await.on_hand, 15_297);
        h.stop().await;
    }
}

#[tokio::test]
async fn reservations_are_two_phase_idempotent_and_guarded() {
    for db in testing::databases("invres") {
        let mut h = stocked(db).await;
        let label = h.label;
        let day = tomorrow();
        let kec1 = kecamatan_point(1);
        let first = h
            .client
            .reserve(reserve(&kec1, &nik(1), "k-1", day))
            .await
            .expect("reserve")
            .into_inner();
        let first = first.reservation.expect("reservation");
        assert_eq!(first.state, pb::ReservationState::Held as i32);
        assert_eq!(
            first.applicant_nik_masked, "3275********0002",
            "{label}: the NIK is masked"
        );
        let again = h
            .client
            .reserve(reserve(&kec1, &nik(1), "k-1", day))
            .await
            .expect("replay")
            .into_inner();
        assert_eq!(
            again.reservation.map(|r| r.id),
            Some(first.id.clone()),
            "same key, same reservation"
        );
        let second = h
            .client
            .reserve(reserve(&kecamatan_point(2), &nik(1), "k-2", day))
            .await
            .expect_err("one hold per NIK");
        assert_eq!(second.code(), Code::AlreadyExists, "{label}");
        assert_eq!(metadata(&second, "reservation_id"), first.id);
        // Whatever purpose is named: blanks are held for one purpose, so one hold per NIK.
        let other_purpose = h
            .client
            .reserve(pb::ReserveRequest {
                purpose: pb::BlankPurpose::KtpEl.into(),
                ..reserve(&kecamatan_point(3), &nik(1), "k-2b", day)
            })
            .await
            .expect_err("one hold per NIK, whatever the purpose");
        assert_eq!(reason(&other_purpose), "APPLICANT_HAS_HOLD", "{label}");

        let before = ledger_len(&mut h.client, KOTA_BEKASI).await;
        let past = adminduk_kit::time::today_wib() - Days::new(1);
        for (req, field) in [
            (reserve("3275-KEC-99", &nik(2), "k-3", day), "service_point_code"),
            (reserve(&kec1, &nik(2), "k-4", past), "date"),
            (reserve(&kec1, "12345", "k-5", day), "applicant_nik"),
            // Sixteen digits are not a NIK: day 32, or all zeros, as population would say.
            (reserve(&kec1, "3275013201900001", "k-5a", day), "applicant_nik"),
            (reserve(&kec1, "0000000000000000", "k-5b", day), "applicant_nik"),
            (reserve(&kec1, &nik(2), "", day), "idempotency_key"),
            (reserve(&kec1, &nik(2), "k-\n5", day), "idempotency_key"),
            (
                pb::ReserveRequest {
                    purpose: 7,
                    ..reserve(&kec1, &nik(2), "k-5c", day)
                },
                "purpose",
            ),
        ] {
            let err = h.client.reserve(req).await.expect_err(field);
            assert_field(&err, Code::InvalidArgument, field);
        }
        let reused = h
            .client
            .reserve(reserve(&kec1, &nik(3), "k-1", day))
            .await
            .expect_err("key reused");
        assert_field(&reused, Code::InvalidArgument, "idempotency_key");
        assert_eq!(
            ledger_len(&mut h.client, KOTA_BEKASI).await,
            before,
            "{label}: nothing written"
        );

        // Another office cannot touch the hold; its own can commit, once.
        let other = h
            .client
            .release(pb::ReleaseRequest {
                reservation_id: first.id.clone(),
                service_point_code: kecamatan_point(2),
                reason: "mistake".into(),
            })
            .await
            .expect_err("other office");
        assert_eq!(other.code(), Code::PermissionDenied, "{label}");
        let committed = h
            .client
            .commit(pb::CommitRequest {
                reservation_id: first.id.clone(),
                service_point_code: kec1.clone(),
            })
            .await
            .expect("commit")
            .into_inner();
        assert_eq!(
            committed.reservation.map(|r| r.state),
            Some(pb::ReservationState::Committed as i32)
        );
        h.client
            .commit(pb::CommitRequest {
                reservation_id: first.id.clone(),
                service_point_code: kec1.clone(),
            })
            .await
            .expect("a retried commit is answered the same");
        let late = h
            .client
            .release(pb::ReleaseRequest {
                reservation_id: first.id.clone(),
                service_point_code: kec1.clone(),
                reason: "too late".into(),
            })
            .await
            .expect_err("release after commit");
        assert_eq!(late.code(), Code::FailedPrecondition, "{label}");
        assert_eq!(reason(&late), "RESERVATION_NOT_HELD");

        // Release, then a commit after release is refused.
        let r2 = h
            .client
            .reserve(reserve(&kec1, &nik(4), "k-6", day))
            .await
            .expect("reserve")
            .into_inner();
        let r2 = r2.reservation.expect("reservation");
        let ledger_before_release = ledger_len(&mut h.client, KOTA_BEKASI).await;
        // A retried release is answered as the first was, and moves nothing again.
        for _ in 0..2 {
            let released = h
                .client
                .release(pb::ReleaseRequest {
                    reservation_id: r2.id.clone(),
                    service_point_code: kec1.clone(),
                    reason: "applicant cancelled".into(),
                })
                .await
                .expect("release, and its retry")
                .into_inner();
            assert_eq!(
                released.reservation.map(|r| r.state),
                Some(pb::ReservationState::Released as i32),
                "{label}"
            );
        }
        assert_eq!(
            ledger_len(&mut h.client, KOTA_BEKASI).await,
            ledger_before_release + 1,
            "{label}: one RELEASE row"
        );
        let err = h
            .client
            .commit(pb::CommitRequest {
                reservation_id: r2.id.clone(),
                service_point_code: kec1.clone(),
            })
            .await
            .expect_err("commit after release");
        assert_eq!(err.code(), Code::FailedPrecondition, "{label}");
        let unknown = h
            .client
            .commit(pb::CommitRequest {
                reservation_id: uuid::Uuid::now_v7().to_string(),
                service_point_code: kec1.clone(),
            })
            .await
            .expect_err("unknown");
        assert_eq!(unknown.code(), Code::NotFound);

        let s = stock(&mut h.client).await;
        assert_eq!((s.on_hand, s.committed, s.held), (14_999, 1, 0), "{label}");

        // The printed card was found damaged: its committed blank is counted as spoiled, once.
        let spoil = |id: &str, reference: &str, quantity: i64| pb::RecordSpoilageRequest {
            region_code: KOTA_BEKASI.into(),
            quantity,
            reason: "found damaged when sorted".into(),
            reference: reference.into(),
            reported_by: "sortir".into(),
            reservation_id: id.into(),
        };
        h.client
            .record_spoilage(spoil(&first.id, "card-1", 1))
            .await
            .expect("reclassified");
        let s = stock(&mut h.client).await;
        assert_eq!(
            (s.on_hand, s.committed, s.spoiled),
            (14_999, 1, 1),
            "{label}: the stock moves only once"
        );
        let again = h
            .client
            .record_spoilage(spoil(&first.id, "card-1", 1))
            .await
            .expect_err("replayed");
        assert_eq!(again.code(), Code::AlreadyExists);
        // The same blank under a new reference, or with its id spelt another
        // way a UUID may be written, is not counted again.
        let upper = first.id.to_uppercase();
        let simple = first.id.replace('-', "");
        for (reference, id) in [
            ("card-1b", first.id.as_str()),
            ("card-1c", first.id.as_str()),
            ("card-1d", upper.as_str()),
            ("card-1e", simple.as_str()),
        ] {
            let twice = h
                .client
                .record_spoilage(spoil(id, reference, 1))
                .await
                .expect_err("one blank, one write-off");
            assert_eq!(
                (twice.code(), reason(&twice)),
                (Code::AlreadyExists, "BLANK_ALREADY_SPOILED".to_owned()),
                "{label}"
            );
            assert_eq!(metadata(&twice, "first_reference"), "card-1");
        }
        assert_eq!(stock(&mut h.client).await.spoiled, 1, "{label}: spoiled once");
        let released = h
            .client
            .record_spoilage(spoil(&r2.id, "card-2", 1))
            .await
            .expect_err("not committed");
        assert_eq!(released.code(), Code::FailedPrecondition, "{label}");
        let many = h
            .client
            .record_spoilage(spoil(&first.id, "card-3", 2))
            .await
            .expect_err("one card, one blank");
        assert_field(&many, Code::InvalidArgument, "quantity");
        h.stop().await;
    }
}

#[tokio::test]
async fn a_full_date_points_to_other_dates_and_points_and_watchers_see_it_fill() {
    for db in testing::databases("invfull") {
        let mut h = stocked(db).await;
        let label = h.label;
        let day = tomorrow();
        let kec3 = kecamatan_point(3);
        let mut watch = h
            .client
            .watch_availability(pb::WatchAvailabilityRequest {
                service_point_codes: vec![kec3.clone(), "3275-MPP".into()],
                date: Some(convert::date(day)),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = watch.message().await.expect("stream").expect("first update");
        let remaining: Vec<i64> = first.points.iter().map(|p| p.remaining).collect();
        assert_eq!(remaining, [30, 150], "{label}");

        for n in 0..30 {
            h.client
                .reserve(reserve(&kec3, &nik(100 + n), &format!("f-{n}"), day))
                .await
                .expect("room");
        }
        let full = h
            .client
            .reserve(reserve(&kec3, &nik(200), "f-full", day))
            .await
            .expect_err("full");
        assert_eq!(full.code(), Code::ResourceExhausted, "{label}");
        assert_eq!(reason(&full), "DATE_FULL");
        let next = day + Days::new(1);
        assert!(
            metadata(&full, "next_dates_with_room").starts_with(&next.to_string()),
            "{full:?}"
        );
        assert!(
            metadata(&full, "other_points_with_room").contains("3275-KEC-02:30"),
            "{full:?}"
        );

        // The watcher hears the change, ending at zero.
        let mut last = first;
        while last.points.first().map(|p| p.remaining) != Some(0) {
            last = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
                .await
                .expect("an update within 5 s")
                .expect("stream")
                .expect("update");
        }
        assert_eq!(last.points[1].remaining, 150);

        let bad = h
            .client
            .watch_availability(pb::WatchAvailabilityRequest {
                service_point_codes: vec!["nowhere".into()],
                date: Some(convert::date(day)),
            })
            .await
            .expect_err("unknown point");
        assert_field(&bad, Code::InvalidArgument, "service_point_codes[0]");
        h.stop().await;
        // Shutting down ends the stream cleanly rather than holding the drain open.
        let end = tokio::time::timeout(std::time::Duration::from_secs(2), watch.message()).await;
        assert!(
            matches!(end, Ok(Ok(None)) | Ok(Err(_))),
            "the watch ended: {end:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_over_grpc_grants_exactly_the_quota() {
    for db in testing::databases("invstorm") {
        let h = stocked(db).await;
        let label = h.label;
        let day = tomorrow();
        let granted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..64usize {
            let mut client = h.client.clone();
            let granted = granted.clone();
            tasks.push(tokio::spawn(async move {
                for a in 0..60usize {
                    let n = t * 1_000 + a;
                    match client
                        .reserve(reserve(&kecamatan_point(5), &nik(n), &format!("s-{n}"), day))
                        .await
                    {
                        Ok(_) => {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(
            granted.load(Ordering::Relaxed),
            30,
            "{label}: 3,840 attempts, exactly the quota"
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn policies_name_real_regions_and_their_own_points() {
    for db in testing::databases("invpolicy") {
        let mut h = stocked(db).await;
        let label = h.label;
        let set = |policy: pb::QuotaPolicy| pb::SetQuotaPolicyRequest { policy: Some(policy) };
        // A region that is not in the official list, and a point code that names no region.
        let mut unknown = policy_msg();
        unknown.region_code = "9999".into();
        for point in &mut unknown.service_points {
            point.district_code = point.district_code.replacen("3275", "9999", 1);
            point.code = point.code.replacen("3275", "9999", 1);
        }
        let err = h.client.set_quota_policy(set(unknown)).await.expect_err("9999");
        assert_field(&err, Code::InvalidArgument, "policy.region_code");

        let mut xyz = policy_msg();
        xyz.service_points[0].code = "XYZ".into();
        let err = h.client.set_quota_policy(set(xyz)).await.expect_err("XYZ");
        assert_field(&err, Code::InvalidArgument, "policy.service_points[0].code");

        // A policy of Kabupaten Bekasi (3216) that claims a point of Kota Bekasi.
        let mut other = policy_msg();
        other.region_code = "3216".into();
        for point in &mut other.service_points {
            point.district_code = point.district_code.replacen("3275", "3216", 1);
        }
        let err = h
            .client
            .set_quota_policy(set(other))
            .await
            .expect_err("another region's point");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{label}: not a unique violation: {err:?}"
        );
        assert_field(&err, Code::InvalidArgument, "policy.service_points[0].code");

        // A kecamatan code of the region that is not in the official list.
        let mut district = policy_msg();
        district.service_points[0].district_code = "327599".into();
        let err = h
            .client
            .set_quota_policy(set(district))
            .await
            .expect_err("327599");
        assert_field(
            &err,
            Code::InvalidArgument,
            "policy.service_points[0].district_code",
        );

        // A ledger of a region that does not exist is not an empty one.
        let ledger = h
            .client
            .list_ledger(pb::ListLedgerRequest {
                holder_code: "9999".into(),
                ..Default::default()
            })
            .await
            .expect_err("9999");
        assert_field(&ledger, Code::InvalidArgument, "holder_code");

        // Kota Bekasi's own policy is still fine.
        h.client
            .set_quota_policy(set(policy_msg()))
            .await
            .expect("the real policy");
        h.stop().await;
    }
}
