//! Printing through gRPC on real sockets, with the population and inventory
//! services running beside it (in-process, as across pods), on SQLite and
//! (when configured) PostgreSQL.

use adminduk_inventory::demo::{KOTA_BEKASI, kecamatan_point, kota_bekasi_policy};
use adminduk_inventory::store::NATIONAL;
use adminduk_kit::error::reason_of as status_reason;
use adminduk_kit::testing::{self, TestDatabase, day as d};
use adminduk_population::domain::nik::Sex;
use adminduk_proto::convert;
use adminduk_proto::inventory::v1 as inventory;
use adminduk_proto::population::v1 as population;
use adminduk_proto::printing::v1 as pb;
use chrono::{Datelike as _, Days, NaiveDate};
use tonic::{Code, Status};

mod harness;

use harness::{Mesh, damaged};

/// The mesh with Kota Bekasi's demo policy, the national pool and `stock` blanks in Kota Bekasi.
async fn kota_bekasi(dbs: [TestDatabase; 3], stock: i64) -> Mesh {
    let m = harness::mesh(dbs).await;
    m.inventory
        .set_policy(kota_bekasi_policy())
        .await
        .expect("policy");
    m.inventory
        .receive_shipment(NATIONAL, 1_000_000, "opening", "test")
        .await
        .expect("national");
    if stock > 0 {
        m.inventory
            .receive_shipment(KOTA_BEKASI, stock, "SJ-1", "test")
            .await
            .expect("stock");
    }
    m
}

async fn each_backend(prefix: &str, stock: i64) -> Vec<Mesh> {
    let mut all = Vec::new();
    for dbs in testing::database_sets(prefix) {
        all.push(kota_bekasi(dbs, stock).await);
    }
    all
}

/// Registers a head of family in Bekasi Timur; returns the NIK.
async fn resident(
    m: &mut Mesh,
    serial: u16,
    birth: NaiveDate,
    village: &str,
    recording: population::RecordingStatus,
) -> String {
    let request = population::RegisterResidentRequest {
        recording_status: recording.into(),
        ..testing::registration(village, Sex::Female, birth, serial, serial)
    };
    let nik = request.nik.clone();
    m.people.register_resident(request).await.expect("registered");
    nik
}

async fn prr(m: &mut Mesh, serial: u16) -> String {
    resident(
        m,
        serial,
        d(1985, 3, 3),
        "3275011001",
        population::RecordingStatus::PrintReady,
    )
    .await
}

fn tomorrow() -> NaiveDate {
    adminduk_kit::time::today_wib() + Days::new(1)
}

/// Submits a first-card job for `nik`; returns its id.
async fn first_card_job(m: &mut Mesh, nik: &str) -> String {
    submit(m, nik, pb::PrintReason::FirstCard, false)
        .await
        .expect("submit")
        .id
}

/// Submits a job for `nik` at Bekasi Timur's office, for tomorrow; returns the job.
async fn submit(m: &mut Mesh, nik: &str, reason: pb::PrintReason, ikd: bool) -> Result<pb::PrintJob, Status> {
    harness::submit(&mut m.printing, nik, reason, &kecamatan_point(1), tomorrow(), ikd).await
}

/// Dispatches `jobs` by `method` in the batch `batch` (empty for pickup).
async fn dispatch(
    m: &mut Mesh,
    jobs: Vec<String>,
    method: pb::DispatchMethod,
    batch: &str,
) -> Result<pb::DispatchResponse, Status> {
    m.printing
        .dispatch(pb::DispatchRequest {
            job_ids: jobs,
            method: method.into(),
            batch_reference: batch.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Records `outcome` for `job`'s dispatched card.
async fn deliver(
    m: &mut Mesh,
    job: &str,
    outcome: pb::DeliveryOutcome,
) -> Result<pb::RecordDeliveryResponse, Status> {
    m.printing
        .record_delivery(pb::RecordDeliveryRequest {
            job_id: job.into(),
            outcome: outcome.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Issues a suket to `nik` at `point`.
async fn issue_suket(m: &mut Mesh, nik: &str, point: &str) -> Result<pb::IssueSuketResponse, Status> {
    m.printing
        .issue_suket(pb::IssueSuketRequest {
            nik: nik.into(),
            service_point_code: point.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Recalls `village`'s undelivered cards, for `reason`.
async fn recall_village(m: &mut Mesh, village: &str, reason: &str) -> Result<pb::RecallResponse, Status> {
    m.printing
        .recall(pb::RecallRequest {
            village_code: village.into(),
            reason: reason.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// `region`'s print backlog.
async fn backlog_of(m: &mut Mesh, region: &str) -> Result<pb::GetBacklogResponse, Status> {
    m.printing
        .get_backlog(pb::GetBacklogRequest {
            region_code: region.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn lease(m: &mut Mesh, printer: &str, n: i32) -> Vec<pb::PrintJob> {
    harness::lease(&mut m.printing, printer, n).await
}

async fn print(m: &mut Mesh, job: &str, printer: &str, serial: &str) -> Result<pb::PrintJob, Status> {
    harness::print(&mut m.printing, job, printer, serial).await
}

async fn funnel(m: &mut Mesh) -> pb::GetFunnelResponse {
    harness::funnel_of(&mut m.printing, KOTA_BEKASI).await
}

async fn stock(m: &mut Mesh) -> inventory::StockLevel {
    harness::stock_of(&mut m.stock, KOTA_BEKASI).await
}

async fn job_count(m: &Mesh) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM jobs")
        .fetch_one(m.store.db().pool())
        .await
        .expect("count")
}

#[tokio::test]
async fn a_card_goes_from_submission_to_its_owner() {
    for mut m in each_backend("prflow", 15_000).await {
        let label = m.label;
        let nik = prr(&mut m, 1).await;
        let job = submit(&mut m, &nik, pb::PrintReason::FirstCard, false)
            .await
            .expect("submit");
        assert_eq!(job.state, pb::JobState::Queued as i32, "{label}");
        assert_eq!(job.nik_masked, format!("{}********{}", &nik[..4], &nik[12..]));
        assert_eq!(
            stock(&mut m).await.held,
            1,
            "{label}: a blank is held for the job"
        );

        let leased = lease(&mut m, "printer-1", 10).await;
        assert_eq!(leased.len(), 1);
        let printed = print(&mut m, &job.id, "printer-1", "KTP-000001")
            .await
            .expect("printed");
        assert_eq!(printed.card_state, pb::CardState::Printed as i32);
        // A retried report is answered the same; the card is printed once.
        print(&mut m, &job.id, "printer-1", "KTP-000001")
            .await
            .expect("retry");
        // The same report from another printer is refused: it holds no lease on the job.
        let other = print(&mut m, &job.id, "printer-2", "KTP-000001")
            .await
            .expect_err("another printer's report");
        assert_eq!(other.code(), Code::FailedPrecondition, "{label}");
        let s = stock(&mut m).await;
        assert_eq!((s.held, s.committed, s.on_hand), (0, 1, 14_999), "{label}");

        let sent = dispatch(
            &mut m,
            vec![job.id.clone()],
            pb::DispatchMethod::Post,
            "POS-2026-001",
        )
        .await
        .expect("dispatch");
        assert_eq!(sent.dispatched, 1);
        let delivered = deliver(&mut m, &job.id, pb::DeliveryOutcome::Delivered)
            .await
            .expect("delivered");
        assert_eq!(delivered.card_state, pb::CardState::Delivered as i32);
        let f = funnel(&mut m).await;
        assert_eq!(
            (f.printed, f.dispatched_post, f.delivered, f.unaccounted),
            (1, 1, 1, 0),
            "{label}"
        );

        // Delivered: the resident may apply again later (a lost card).
        submit(&mut m, &nik, pb::PrintReason::Lost, true)
            .await
            .expect("a replacement");
        m.stop().await;
    }
}

#[tokio::test]
async fn bad_applications_are_refused_and_write_nothing() {
    for mut m in each_backend("prbad", 15_000).await {
        let label = m.label;
        let nik = prr(&mut m, 2).await;
        let unrecorded = resident(
            &mut m,
            3,
            d(1990, 1, 1),
            "3275011001",
            population::RecordingStatus::Recorded,
        )
        .await;
        let dead = prr(&mut m, 4).await;
        testing::record_death(&mut m.people, &dead, d(2025, 5, 5)).await;
        let unknown = testing::nik_text("327501", d(1970, 7, 7), Sex::Male, 77);

        for (who, code, reason) in [
            (&unknown, Code::NotFound, "RESIDENT_NOT_FOUND"),
            (&dead, Code::FailedPrecondition, "RESIDENT_NOT_ACTIVE"),
            (&unrecorded, Code::FailedPrecondition, "NOT_PRINT_READY"),
        ] {
            let err = submit(&mut m, who, pb::PrintReason::FirstCard, false)
                .await
                .expect_err("refused");
            assert_eq!(err.code(), code, "{label}: {err:?}");
            assert_eq!(status_reason(&err), reason);
        }
        assert_eq!(job_count(&m).await, 0, "{label}: nothing written");
        assert_eq!(
            stock(&mut m).await.held,
            0,
            "{label}: the blanks taken on the way went back"
        );

        let first = submit(&mut m, &nik, pb::PrintReason::FirstCard, false)
            .await
            .expect("first");
        let second = submit(&mut m, &nik, pb::PrintReason::Lost, false)
            .await
            .expect_err("second");
        assert_eq!(second.code(), Code::AlreadyExists, "{label}");
        let named = adminduk_kit::error::metadata_of(&second, "job_id");
        assert_eq!(named, Some(first.id.clone()), "the refusal names the first job");
        assert_eq!(job_count(&m).await, 1);
        assert_eq!(funnel(&mut m).await.duplicates_prevented, 1);
        assert_eq!(
            stock(&mut m).await.held,
            1,
            "{label}: only the first job holds a blank"
        );

        // A delivery outcome for a card never dispatched.
        let never = deliver(&mut m, &first.id, pb::DeliveryOutcome::Delivered)
            .await
            .expect_err("never dispatched");
        assert_eq!(
            (never.code(), status_reason(&never)),
            (Code::FailedPrecondition, "NOT_DISPATCHED".to_owned())
        );

        // A suket while blanks are in stock.
        let suket = issue_suket(&mut m, &unrecorded, &kecamatan_point(1))
            .await
            .expect_err("stock exists");
        assert_eq!(
            (suket.code(), status_reason(&suket)),
            (Code::FailedPrecondition, "STOCK_AVAILABLE".to_owned())
        );

        // A spoilage approved by its own reporter.
        lease(&mut m, "p", 1).await;
        print(&mut m, &first.id, "p", "KTP-1").await.expect("printed");
        let own = harness::report_spoiled(&mut m.printing, damaged(&first.id, "scratched", "budi", "budi"))
            .await
            .expect_err("four eyes");
        assert_eq!(own.code(), Code::InvalidArgument, "{label}");
        assert_eq!(funnel(&mut m).await.spoiled, 0, "{label}: nothing written");
        m.stop().await;
    }
}

#[tokio::test]
async fn a_printer_that_dies_leaves_its_job_to_another_and_the_card_is_printed_once() {
    for mut m in each_backend("prcrash", 15_000).await {
        let label = m.label;
        let nik = prr(&mut m, 5).await;
        let job = submit(&mut m, &nik, pb::PrintReason::FirstCard, false)
            .await
            .expect("submit");
        assert_eq!(lease(&mut m, "printer-a", 5).await.len(), 1);
        assert!(
            lease(&mut m, "printer-b", 5).await.is_empty(),
            "leased jobs are not handed out twice"
        );

        // printer-a dies; its lease lapses.
        sqlx::query("UPDATE jobs SET lease_expires_at = 0 WHERE id = $1")
            .bind(&job.id)
            .execute(m.store.db().pool())
            .await
            .expect("lapse");
        let again = lease(&mut m, "printer-b", 5).await;
        assert_eq!(
            again.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            [job.id.as_str()],
            "{label}"
        );
        let late = print(&mut m, &job.id, "printer-a", "KTP-A")
            .await
            .expect_err("a report for an expired lease");
        assert_eq!(
            (late.code(), status_reason(&late)),
            (Code::FailedPrecondition, "LEASE_EXPIRED".to_owned())
        );
        print(&mut m, &job.id, "printer-b", "KTP-B")
            .await
            .expect("printed by b");
        let f = funnel(&mut m).await;
        assert_eq!(
            (f.printed, f.unaccounted),
            (1, 0),
            "{label}: printed exactly once"
        );
        assert_eq!(stock(&mut m).await.committed, 1);
        m.stop().await;
    }
}

#[tokio::test]
async fn spoiled_cards_are_written_off_and_reprinted_and_recalls_reroute_cards() {
    for mut m in each_backend("prspoil", 15_000).await {
        let label = m.label;
        let a = prr(&mut m, 6).await;
        let b = resident(
            &mut m,
            7,
            d(1980, 1, 1),
            "3216061001",
            population::RecordingStatus::PrintReady,
        )
        .await;
        let c = resident(
            &mut m,
            8,
            d(1981, 1, 1),
            "3216061001",
            population::RecordingStatus::PrintReady,
        )
        .await;
        let mut ids = Vec::new();
        for nik in [&a, &b, &c] {
            let job = submit(&mut m, nik, pb::PrintReason::FirstCard, false)
                .await
                .expect("submit");
            ids.push(job.id);
        }
        lease(&mut m, "p", 10).await;
        for (i, id) in ids.iter().enumerate() {
            print(&mut m, id, "p", &format!("KTP-{i}"))
                .await
                .expect("printed");
        }
        let requeued = harness::report_spoiled(
            &mut m.printing,
            damaged(&ids[0], "found damaged when sorted", "sortir-1", "kasi-1"),
        )
        .await
        .expect("spoiled");
        assert_eq!(
            requeued.state,
            pb::JobState::Queued as i32,
            "{label}: the job takes a new blank"
        );
        assert_eq!(stock(&mut m).await.held, 1, "{label}");
        lease(&mut m, "p", 10).await;
        print(&mut m, &ids[0], "p", "KTP-0-reprint")
            .await
            .expect("reprinted");

        // The LRT case: Jatimulya's undelivered cards go back to the office.
        dispatch(&mut m, ids[1..].to_vec(), pb::DispatchMethod::Post, "POS-7")
            .await
            .expect("dispatch");
        let recalled = recall_village(&mut m, "3216061001", "cleared for the LRT project")
            .await
            .expect("recall");
        assert_eq!(recalled.recalled, 2, "{label}");
        let f = funnel(&mut m).await;
        assert_eq!(
            (
                f.printed,
                f.spoiled,
                f.recalled,
                f.at_service_point,
                f.waiting_dispatch
            ),
            (4, 1, 2, 2, 1),
            "{label}"
        );
        assert_eq!(f.unaccounted, 0);

        // The recall stands: a Jatimulya card printed afterwards and put in a post
        // batch goes to the office; the other card in the batch goes by post.
        let late = resident(
            &mut m,
            9,
            d(1982, 1, 1),
            "3216061001",
            population::RecordingStatus::PrintReady,
        )
        .await;
        let late = first_card_job(&mut m, &late).await;
        lease(&mut m, "p", 10).await;
        print(&mut m, &late, "p", "KTP-late").await.expect("printed");
        let sent = dispatch(
            &mut m,
            vec![ids[0].clone(), late.clone()],
            pb::DispatchMethod::Post,
            "POS-8",
        )
        .await
        .expect("dispatch");
        assert_eq!((sent.dispatched, sent.rerouted), (2, 1), "{label}");
        let f = funnel(&mut m).await;
        assert_eq!(
            (
                f.printed,
                f.recalled,
                f.at_service_point,
                f.in_transit,
                f.waiting_dispatch
            ),
            (5, 3, 3, 1, 0),
            "{label}"
        );
        assert_eq!(f.unaccounted, 0);
        let s = stock(&mut m).await;
        assert_eq!(
            (s.committed, s.held),
            (5, 0),
            "{label}: five blanks consumed for four residents"
        );
        m.stop().await;
    }
}

/// A ruined-blank report by `printer` on `job`.
fn ruined(job: &str, printer: &str, serial: &str) -> pb::ReportSpoiledRequest {
    pb::ReportSpoiledRequest {
        job_id: job.into(),
        reason: "blank jammed in the printer".into(),
        reported_by: "operator-cetak".into(),
        approved_by: "kasi-1".into(),
        printer_id: printer.into(),
        card_serial: serial.into(),
    }
}

#[tokio::test]
async fn a_blank_ruined_in_the_printer_is_written_off_and_the_job_prints_on_another() {
    for mut m in each_backend("prjam", 15_000).await {
        let label = m.label;
        let nik = prr(&mut m, 11).await;
        let job = first_card_job(&mut m, &nik).await;
        assert_eq!(lease(&mut m, "printer-1", 10).await.len(), 1, "{label}");
        let before = stock(&mut m).await;

        // Only the printer holding the lease reports its ruined blank, with the blank's serial.
        let other = harness::report_spoiled(&mut m.printing, ruined(&job, "printer-2", "BLANK-1"))
            .await
            .expect_err("another printer");
        assert_eq!(other.code(), Code::FailedPrecondition, "{label}");
        let no_serial = harness::report_spoiled(&mut m.printing, ruined(&job, "printer-1", ""))
            .await
            .expect_err("no serial");
        assert_eq!(no_serial.code(), Code::InvalidArgument, "{label}");
        assert_eq!(stock(&mut m).await, before, "{label}: refusals change nothing");

        // The blank leaves the stock as spoiled; the job keeps its lease and its hold.
        for attempt in ["report", "retried report"] {
            let job = harness::report_spoiled(&mut m.printing, ruined(&job, "printer-1", "BLANK-1"))
                .await
                .unwrap_or_else(|s| panic!("{label}: {attempt}: {s:?}"));
            assert_eq!(job.state, pb::JobState::Leased as i32, "{label}: {attempt}");
            let s = stock(&mut m).await;
            assert_eq!(
                (s.on_hand, s.spoiled, s.held, s.committed),
                (
                    before.on_hand - 1,
                    before.spoiled + 1,
                    before.held,
                    before.committed
                ),
                "{label}: {attempt}: one blank spoiled, once"
            );
        }

        // The ruined blank's serial never becomes a card's; the card comes out on another blank.
        let reused = print(&mut m, &job, "printer-1", "BLANK-1")
            .await
            .expect_err("a ruined blank's serial");
        assert_eq!(reused.code(), Code::AlreadyExists, "{label}");
        print(&mut m, &job, "printer-1", "KTP-11").await.expect("printed");
        let s = stock(&mut m).await;
        assert_eq!(
            (s.on_hand, s.held, s.committed),
            (before.on_hand - 2, before.held - 1, before.committed + 1),
            "{label}: two blanks taken for one card"
        );
        let f = funnel(&mut m).await;
        assert_eq!(
            (
                f.printed,
                f.spoiled,
                f.spoiled_in_printer,
                f.waiting_dispatch,
                f.unaccounted
            ),
            (1, 0, 1, 1, 0),
            "{label}"
        );
        // A late retry of the ruined blank's report, after the card came out, is answered the same.
        let late = harness::report_spoiled(&mut m.printing, ruined(&job, "printer-1", "BLANK-1"))
            .await
            .expect("late retry");
        assert_eq!(late.state, pb::JobState::Printed as i32, "{label}");
        assert_eq!(stock(&mut m).await, s, "{label}: the late retry changes nothing");

        // The printed card is written off by its own serial only.
        let wrong = harness::report_spoiled(
            &mut m.printing,
            pb::ReportSpoiledRequest {
                card_serial: "BLANK-1".into(),
                ..damaged(&job, "found damaged when sorted", "sortir-1", "kasi-1")
            },
        )
        .await
        .expect_err("not this card's serial");
        assert_eq!(wrong.code(), Code::InvalidArgument, "{label}");
        m.stop().await;
    }
}

#[tokio::test]
async fn when_blanks_run_out_priorities_and_sukets_decide() {
    for mut m in each_backend("prprio", 0).await {
        let label = m.label;
        let today = adminduk_kit::time::today_wib();
        let seventeen = d(today.year() - 17, 1, 1);
        let young = resident(
            &mut m,
            9,
            seventeen,
            "3275011001",
            population::RecordingStatus::PrintReady,
        )
        .await;
        // No stock at all: a suket is issued, and the backlog counts it.
        let suket = issue_suket(&mut m, &young, &kecamatan_point(1))
            .await
            .expect("suket");
        assert!(suket.valid_until.is_some(), "{label}");
        let no_blank = submit(&mut m, &young, pb::PrintReason::FirstCard, false)
            .await
            .expect_err("no stock");
        assert_eq!(
            no_blank.code(),
            Code::ResourceExhausted,
            "{label}: the inventory's answer passes through"
        );

        m.inventory
            .receive_shipment(KOTA_BEKASI, 3_000, "SJ-2", "test")
            .await
            .expect("blanks arrive");
        // The suket holder is queued by the conversion, without coming back.
        assert_eq!(m.api.convert_sukets().await.expect("convert"), 1, "{label}");
        assert_eq!(
            m.api.convert_sukets().await.expect("convert"),
            0,
            "{label}: converted once"
        );
        let replacement_ikd = prr(&mut m, 10).await;
        let replacement = prr(&mut m, 11).await;
        let disaster = prr(&mut m, 12).await;
        for (nik, reason, ikd) in [
            (&replacement_ikd, pb::PrintReason::Lost, true),
            (&replacement, pb::PrintReason::Damaged, false),
            (&disaster, pb::PrintReason::Disaster, false),
        ] {
            submit(&mut m, nik, reason, ikd).await.expect("queued");
        }
        let backlog = backlog_of(&mut m, KOTA_BEKASI).await.expect("backlog");
        let waiting: Vec<(i32, i64)> = backlog.waiting.iter().map(|p| (p.priority, p.waiting)).collect();
        assert_eq!(waiting, [(1, 1), (2, 1), (4, 1), (5, 1)], "{label}");
        assert_eq!(backlog.suket_holders, 0, "the suket became a job");
        assert_eq!(backlog.blanks_saved_by_ikd, 1);
        let order: Vec<i32> = lease(&mut m, "p", 10).await.iter().map(|j| j.priority).collect();
        assert_eq!(
            order,
            [1, 2, 4, 5],
            "{label}: the 17-year-old first, the IKD holder last"
        );
        m.stop().await;
    }
}

fn details(status: &tonic::Status) -> tonic_types::ErrorDetails {
    tonic_types::StatusExt::get_error_details(status)
}

fn reason_metadata(status: &tonic::Status, key: &str) -> Option<String> {
    adminduk_kit::error::metadata_of(status, key)
}

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    details(status)
        .bad_request()
        .map(|b| b.field_violations.iter().map(|f| f.field.clone()).collect())
        .unwrap_or_default()
}

/// Ledger rows of Kota Bekasi of one kind.
async fn ledger_rows(m: &Mesh, kind: adminduk_inventory::store::MovementKind) -> usize {
    m.inventory
        .store()
        .ledger(KOTA_BEKASI, None, 10_000)
        .await
        .expect("ledger")
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

/// A valid NIK of nobody registered, for holds made at a counter.
fn walk_in(serial: u16) -> String {
    testing::nik_text("327502", d(1991, 2, 3), Sex::Male, serial)
}

/// Holds a blank at a counter, outside printing.
async fn counter_hold(m: &mut Mesh, nik: &str, key: &str) -> Result<inventory::Reservation, tonic::Status> {
    m.stock
        .reserve(inventory::ReserveRequest {
            service_point_code: kecamatan_point(1),
            date: Some(convert::date(tomorrow())),
            applicant_nik: nik.into(),
            idempotency_key: key.into(),
            purpose: 0,
        })
        .await
        .map(|r| r.into_inner().reservation.expect("reservation"))
}

#[tokio::test]
async fn reports_racing_for_one_serial_or_one_job_print_once_and_consume_one_blank() {
    for mut m in each_backend("prrace", 15_000).await {
        let label = m.label;
        let mut pairs = Vec::new();
        for n in 0..4u16 {
            let (a, b) = (prr(&mut m, 100 + 2 * n).await, prr(&mut m, 101 + 2 * n).await);
            pairs.push((first_card_job(&mut m, &a).await, first_card_job(&mut m, &b).await));
        }
        assert_eq!(lease(&mut m, "p", 10).await.len(), 8);
        // The jobs that lost their race, still leased and unprinted.
        let mut losers = Vec::new();
        for (n, (a, b)) in pairs.iter().enumerate() {
            // Two jobs, one serial: one card is printed, the other is told the serial is taken.
            let serial = format!("KTP-RACE-{n}");
            let (mut c1, mut c2) = (m.printing.clone(), m.printing.clone());
            let report = |job: &str| pb::ReportPrintedRequest {
                job_id: job.into(),
                printer_id: "p".into(),
                card_serial: serial.clone(),
            };
            let (r1, r2) = tokio::join!(c1.report_printed(report(a)), c2.report_printed(report(b)));
            losers.push(if r1.is_ok() { b.clone() } else { a.clone() });
            let (ok, refused): (Vec<_>, Vec<_>) = [r1, r2].into_iter().partition(Result::is_ok);
            assert_eq!(ok.len(), 1, "{label}: one of two prints with serial {serial}");
            let refused = refused
                .into_iter()
                .next()
                .and_then(Result::err)
                .expect("a refusal");
            assert_eq!(
                (refused.code(), status_reason(&refused)),
                (Code::AlreadyExists, "SERIAL_TAKEN".to_owned()),
                "{label}: {refused:?}"
            );
        }
        let (s, f) = (stock(&mut m).await, funnel(&mut m).await);
        assert_eq!(
            (f.printed, s.committed),
            (4, 4),
            "{label}: one blank per card printed"
        );

        // One job, two serials at once: one card, one blank; the other report is
        // told why (a report in progress, or the card printed), never "unavailable".
        for (n, job) in losers[..2].iter().enumerate() {
            let (mut c1, mut c2) = (m.printing.clone(), m.printing.clone());
            let report = |serial: String| pb::ReportPrintedRequest {
                job_id: job.clone(),
                printer_id: "p".into(),
                card_serial: serial,
            };
            let (r1, r2) = tokio::join!(
                c1.report_printed(report(format!("KTP-TWO-{n}-A"))),
                c2.report_printed(report(format!("KTP-TWO-{n}-B")))
            );
            let answers = format!("{r1:?} / {r2:?}");
            let (ok, refused): (Vec<_>, Vec<_>) = [r1, r2].into_iter().partition(Result::is_ok);
            assert_eq!(ok.len(), 1, "{label}: one print of job {job}: {answers}");
            let refused = refused
                .into_iter()
                .next()
                .and_then(Result::err)
                .expect("a refusal");
            assert!(
                matches!(
                    (refused.code(), status_reason(&refused).as_str()),
                    (Code::Aborted, "PRINT_IN_PROGRESS") | (Code::FailedPrecondition, "ALREADY_PRINTED")
                ),
                "{label}: {refused:?}"
            );
        }
        let (s, f) = (stock(&mut m).await, funnel(&mut m).await);
        assert_eq!((f.printed, s.committed, f.unaccounted), (6, 6, 0), "{label}");
        // The printed job reported again with another serial is told it was printed.
        let again = print(&mut m, &losers[0], "p", "KTP-OTHER")
            .await
            .expect_err("printed");
        assert_eq!(status_reason(&again), "ALREADY_PRINTED", "{label}");
        m.stop().await;
    }
}

#[tokio::test]
async fn refused_applications_and_write_offs_change_nothing() {
    use adminduk_inventory::store::MovementKind;
    for mut m in each_backend("prnothing", 15_000).await {
        let label = m.label;
        // An unknown NIK and a resident not print-ready: no hold, no ledger row.
        let unknown = walk_in(901);
        let unrecorded = resident(
            &mut m,
            902,
            d(1990, 1, 1),
            "3275011001",
            population::RecordingStatus::Recorded,
        )
        .await;
        for nik in [&unknown, &unrecorded] {
            submit(&mut m, nik, pb::PrintReason::FirstCard, false)
                .await
                .expect_err("refused");
        }
        assert_eq!(
            (
                ledger_rows(&m, MovementKind::Hold).await,
                ledger_rows(&m, MovementKind::Release).await
            ),
            (0, 0),
            "{label}: a refused application writes nothing to the ledger"
        );
        assert_eq!(job_count(&m).await, 0, "{label}");

        // An applicant holding a blank from a counter: answered at once, naming the hold.
        let walk = prr(&mut m, 903).await;
        let held = counter_hold(&mut m, &walk, "counter-1")
            .await
            .expect("counter hold");
        let started = std::time::Instant::now();
        let err = submit(&mut m, &walk, pb::PrintReason::FirstCard, false)
            .await
            .expect_err("holds a blank");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{label}: no wait"
        );
        assert_eq!(
            (err.code(), status_reason(&err)),
            (Code::FailedPrecondition, "APPLICANT_HAS_HOLD".to_owned()),
            "{label}: {err:?}"
        );
        assert_eq!(reason_metadata(&err, "reservation_id"), Some(held.id.clone()));
        assert_eq!(job_count(&m).await, 0, "{label}");

        // A printed card whose reprint finds no blank on its day: refused, and not written off.
        let nik = prr(&mut m, 904).await;
        let job = first_card_job(&mut m, &nik).await;
        lease(&mut m, "p", 1).await;
        print(&mut m, &job, "p", "KTP-904").await.expect("printed");
        for n in 0..40u16 {
            if counter_hold(&mut m, &walk_in(910 + n), &format!("fill-{n}"))
                .await
                .is_err()
            {
                break;
            }
        }
        let before = (stock(&mut m).await, funnel(&mut m).await);
        let spoil = harness::report_spoiled(&mut m.printing, damaged(&job, "scratched", "budi", "ani"))
            .await
            .expect_err("no blank for the reprint");
        assert_eq!(spoil.code(), Code::ResourceExhausted, "{label}: {spoil:?}");
        let after = (stock(&mut m).await, funnel(&mut m).await);
        assert_eq!(
            (after.0.spoiled, after.0.held, after.1.spoiled),
            (before.0.spoiled, before.0.held, before.1.spoiled),
            "{label}: a refused write-off changes nothing"
        );
        assert_eq!(ledger_rows(&m, MovementKind::Spoilage).await, 0, "{label}");
        m.stop().await;
    }
}

#[tokio::test]
async fn a_resident_gets_one_first_card_and_retried_deliveries_are_answered_the_same() {
    for mut m in each_backend("prfirst", 15_000).await {
        let label = m.label;
        let nik = prr(&mut m, 920).await;
        let job = first_card_job(&mut m, &nik).await;
        lease(&mut m, "p", 1).await;
        print(&mut m, &job, "p", "KTP-920").await.expect("printed");
        dispatch(&mut m, vec![job.clone()], pb::DispatchMethod::Pickup, "")
            .await
            .expect("dispatched");
        for _ in 0..2 {
            let answer = deliver(&mut m, &job, pb::DeliveryOutcome::Delivered)
                .await
                .expect("delivered, and again");
            assert_eq!(answer.card_state, pb::CardState::Delivered as i32, "{label}");
        }
        assert_eq!(funnel(&mut m).await.delivered, 1, "{label}: counted once");
        // A returned card reported twice is answered the same too; another outcome is refused by name.
        let returned = deliver(&mut m, &job, pb::DeliveryOutcome::ReturnedMoved)
            .await
            .expect_err("delivered already");
        assert_eq!(status_reason(&returned), "ALREADY_DELIVERED", "{label}");

        let second = submit(&mut m, &nik, pb::PrintReason::FirstCard, false)
            .await
            .expect_err("a second first card");
        assert_eq!(
            (second.code(), status_reason(&second)),
            (Code::FailedPrecondition, "FIRST_CARD_ISSUED".to_owned()),
            "{label}"
        );
        assert_eq!(reason_metadata(&second, "job_id"), Some(job.clone()));
        submit(&mut m, &nik, pb::PrintReason::Lost, false)
            .await
            .expect("a replacement is fine");
        m.stop().await;
    }
}

#[tokio::test]
async fn codes_strings_and_missing_things_are_checked_and_named() {
    for mut m in each_backend("prinput", 15_000).await {
        let label = m.label;
        let nik = prr(&mut m, 930).await;
        // NIKs are checked as population checks them, not only for 16 digits.
        for bad in ["3275013202900001", "0000000000000000"] {
            let err = submit(&mut m, bad, pb::PrintReason::FirstCard, false)
                .await
                .expect_err("invalid nik");
            assert_eq!(err.code(), Code::InvalidArgument, "{label}: {bad}");
            assert_eq!(violated_fields(&err).first().map(String::as_str), Some("nik"));
        }
        // A point that does not exist, in a region with no stock: named, not "suket only when no blank".
        let suket = issue_suket(&mut m, &nik, "3276-KEC-01")
            .await
            .expect_err("unknown point");
        assert_eq!(suket.code(), Code::InvalidArgument, "{label}");
        assert_eq!(violated_fields(&suket), ["service_point_code"]);
        let recall = recall_village(&mut m, "3275019999", "alamat berubah")
            .await
            .expect_err("unknown village");
        assert_eq!(violated_fields(&recall), ["village_code"], "{label}");
        let backlog = backlog_of(&mut m, "9999").await.expect_err("unknown region");
        assert_eq!(violated_fields(&backlog), ["region_code"], "{label}");

        // Serials: no control characters, and a long one is told its limit.
        let job = first_card_job(&mut m, &nik).await;
        lease(&mut m, "p", 1).await;
        for (serial, says) in [
            ("KTP-1\0\n", "must be ascii letters, digits, hyphens or slashes"),
            (&"9".repeat(10_000)[..], "must be at most 64 characters"),
        ] {
            let err = print(&mut m, &job, "p", serial).await.expect_err("bad serial");
            let said = details(&err)
                .bad_request()
                .and_then(|b| b.field_violations.first().map(|f| f.description.clone()));
            assert_eq!(said.as_deref(), Some(says), "{label}");
        }
        print(&mut m, &job, "p", "KTP-930").await.expect("printed");
        // The second person must be a second person, however the name is written.
        let own = harness::report_spoiled(&mut m.printing, damaged(&job, "scratched", " ANI ", "ani"))
            .await
            .expect_err("one person");
        assert_eq!(violated_fields(&own), ["approved_by"], "{label}");
        // Nor with an invisible character or a look-alike letter in the name.
        for lookalike in ["a\u{200b}ni", "\u{0430}ni", "ａｎｉ"] {
            let hidden =
                harness::report_spoiled(&mut m.printing, damaged(&job, "scratched", "ani", lookalike))
                    .await
                    .expect_err("a look-alike");
            assert_eq!(
                violated_fields(&hidden),
                ["approved_by"],
                "{label}: {lookalike:?}"
            );
        }
        assert_eq!(funnel(&mut m).await.spoiled, 0, "{label}: nothing written off");
        // A serial read in small letters is the same serial.
        let twin_nik = prr(&mut m, 932).await;
        let twin = first_card_job(&mut m, &twin_nik).await;
        lease(&mut m, "p", 1).await;
        let again = print(&mut m, &twin, "p", "ktp-930")
            .await
            .expect_err("the same serial");
        assert_eq!(status_reason(&again), "SERIAL_TAKEN", "{label}");

        // Missing things say what they are; a dispatch names the job that cannot go.
        let nobody = "01a23342-0000-7000-8000-000000000000";
        let missing = print(&mut m, nobody, "p", "KTP-X").await.expect_err("no job");
        assert_eq!(missing.code(), Code::NotFound, "{label}");
        let resource = details(&missing).resource_info().map(|r| r.resource_name.clone());
        assert_eq!(resource.as_deref(), Some(nobody));
        // An id that is not a job id is refused, and not echoed back.
        let long = "J".repeat(10_000);
        let bad = print(&mut m, &long, "p", "KTP-X").await.expect_err("not an id");
        assert_eq!(violated_fields(&bad), ["job_id"], "{label}");
        assert!(
            format!("{bad:?}").len() < 1_000,
            "{label}: the answer stays small"
        );
        let many = dispatch(
            &mut m,
            (0..1_000).map(|n| format!("{n:060}")).collect(),
            pb::DispatchMethod::Pickup,
            "",
        )
        .await
        .expect_err("no job ids");
        assert_eq!(
            violated_fields(&many).len(),
            11,
            "{label}: ten named, the rest counted"
        );
        let unknown = dispatch(&mut m, vec![nobody.to_owned()], pb::DispatchMethod::Pickup, "")
            .await
            .expect_err("no such job");
        assert_eq!(unknown.code(), Code::NotFound, "{label}");
        let other = prr(&mut m, 931).await;
        let queued = first_card_job(&mut m, &other).await;
        let refused = dispatch(
            &mut m,
            vec![job.clone(), queued.clone()],
            pb::DispatchMethod::Pickup,
            "",
        )
        .await
        .expect_err("a queued job cannot be dispatched");
        assert_eq!(status_reason(&refused), "NOT_DISPATCHABLE", "{label}");
        assert_eq!(reason_metadata(&refused, "job_id"), Some(queued));
        assert_eq!(
            funnel(&mut m).await.waiting_dispatch,
            1,
            "{label}: nothing dispatched"
        );
        m.stop().await;
    }
}

#[tokio::test]
async fn a_write_off_racing_a_print_or_a_dispatch_is_refused_without_touching_the_inventory() {
    for mut m in each_backend("prwrace", 15_000).await {
        let label = m.label;
        let mut jobs = Vec::new();
        for n in 0..6u16 {
            let nik = prr(&mut m, 940 + n).await;
            jobs.push(first_card_job(&mut m, &nik).await);
        }
        assert_eq!(lease(&mut m, "p", 10).await.len(), 6);
        // A ruined blank reported while the same job's print is reported: one goes first;
        // a refused one writes nothing off.
        for (n, job) in jobs[..3].iter().enumerate() {
            let (mut c1, mut c2) = (m.printing.clone(), m.printing.clone());
            let (spoiled, printed) = tokio::join!(
                c1.report_spoiled(ruined(job, "p", &format!("KTP-RB-{n}"))),
                c2.report_printed(pb::ReportPrintedRequest {
                    job_id: job.clone(),
                    printer_id: "p".into(),
                    card_serial: format!("KTP-PP-{n}"),
                })
            );
            assert!(printed.is_ok() || spoiled.is_ok(), "{label}: one goes first");
            if printed.is_err() {
                // The blank was written off first; the print then finds the job free.
                print(&mut m, job, "p", &format!("KTP-PP-{n}"))
                    .await
                    .expect("printed after");
            }
        }
        // A damaged card reported while it is dispatched: it goes out, or it is written off.
        for (n, job) in jobs[3..].iter().enumerate() {
            print(&mut m, job, "p", &format!("KTP-D-{n}"))
                .await
                .expect("printed");
        }
        for job in &jobs[3..] {
            let (mut c1, mut c2) = (m.printing.clone(), m.printing.clone());
            let _ = tokio::join!(
                c1.report_spoiled(damaged(job, "chipped", "budi", "ani")),
                c2.dispatch(pb::DispatchRequest {
                    job_ids: vec![job.clone()],
                    method: pb::DispatchMethod::Pickup.into(),
                    batch_reference: String::new(),
                })
            );
        }
        // The books agree: every blank the inventory counts as spoiled is one
        // printing wrote off, in the printer or as a damaged card.
        let (s, f) = (stock(&mut m).await, funnel(&mut m).await);
        assert_eq!(
            s.spoiled,
            f.spoiled + f.spoiled_in_printer,
            "{label}: inventory {} spoiled, printing {} + {} in the printer",
            s.spoiled,
            f.spoiled,
            f.spoiled_in_printer
        );
        assert_eq!(f.unaccounted, 0, "{label}");
        m.stop().await;
    }
}

#[tokio::test]
async fn a_job_whose_resident_died_meanwhile_is_not_printed_and_gives_its_blank_back() {
    for mut m in each_backend("prdied", 15_000).await {
        let label = m.label;
        let nik = prr(&mut m, 960).await;
        let job = first_card_job(&mut m, &nik).await;
        let held = stock(&mut m).await.held;
        testing::record_death(&mut m.people, &nik, adminduk_kit::time::today_wib()).await;
        assert!(
            lease(&mut m, "p", 10).await.is_empty(),
            "{label}: nothing to print"
        );
        assert_eq!(stock(&mut m).await.held, held - 1, "{label}: the blank went back");
        let cancelled = m.store.job(&job).await.expect("read").expect("job");
        assert_eq!(
            cancelled.state,
            adminduk_printing::store::JobState::Cancelled,
            "{label}"
        );
        let late = print(&mut m, &job, "p", "KTP-960").await.expect_err("not leased");
        assert_eq!(late.code(), Code::FailedPrecondition, "{label}");
        m.stop().await;
    }
}
