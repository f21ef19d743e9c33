//! The population service through gRPC on a real socket, on SQLite and (when
//! configured) PostgreSQL: every RPC, and for each bad input the code and
//! the field the client is told about.

use adminduk_kit::config::ServerConfig;
use adminduk_kit::testing::{self, TestDatabase, day as d, kk_text as kk, nik_text as nik};
use adminduk_population::domain::nik::Sex;
use adminduk_population::{MIGRATIONS, Running, SERVICE_NAME, Store};
use adminduk_proto::common::v1 as common;
use adminduk_proto::convert::date;
use adminduk_proto::population::v1 as pb;
use chrono::NaiveDate;
use pb::population_service_client::PopulationServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

const MAX_MESSAGE: usize = 16 * 1024;

struct Harness {
    client: PopulationServiceClient<Channel>,
    server: Running,
    store: Store,
    label: &'static str,
    _db: TestDatabase,
}

async fn start(test_db: TestDatabase) -> Harness {
    let config = ServerConfig {
        max_message_bytes: MAX_MESSAGE,
        ..testing::server_config()
    };
    let server = adminduk_population::start(config, test_db.connect(MIGRATIONS).await)
        .await
        .expect("server starts");
    let client = PopulationServiceClient::new(testing::ready(server.local_addr(), SERVICE_NAME).await);
    Harness {
        client,
        store: server.service().clone(),
        server,
        label: test_db.label,
        _db: test_db,
    }
}

async fn each_backend(prefix: &str) -> Vec<Harness> {
    let mut all = Vec::new();
    for db in testing::databases(prefix) {
        all.push(start(db).await);
    }
    all
}

/// A resident of Kelurahan 3275011001 with the given identity and place in the KK.
fn person(
    nik: &str,
    kk: &str,
    name: &str,
    sex: Sex,
    birth: NaiveDate,
    rel: pb::FamilyRelationship,
) -> pb::RegisterResidentRequest {
    pb::RegisterResidentRequest {
        nik: nik.to_owned(),
        kk: kk.to_owned(),
        full_name: name.to_owned(),
        relationship: rel.into(),
        ..testing::registration("3275011001", sex, birth, 1, 1)
    }
}

/// Asserts the code and that one BadRequest violation names `field` (and mentions `part`).
fn assert_violation(status: &Status, code: Code, field: &str, part: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    assert!(
        bad.field_violations
            .iter()
            .any(|v| v.field == field && v.description.contains(part)),
        "expected a violation of {field} mentioning {part:?}, got {:?}",
        bad.field_violations
    );
}

fn reason(status: &Status) -> String {
    adminduk_kit::error::reason_of(status)
}

/// Reads the resident with `nik` back; it must exist.
async fn get_resident(h: &mut Harness, nik: &str) -> pb::Resident {
    h.client
        .get_resident(pb::GetResidentRequest { nik: nik.to_owned() })
        .await
        .expect("get")
        .into_inner()
        .resident
        .expect("resident")
}

/// Sends `resident` as an update of the fields in `paths`, guarded by `expected_version`.
async fn update(
    h: &mut Harness,
    resident: &pb::Resident,
    paths: &[&str],
    expected_version: i64,
) -> Result<pb::Resident, Status> {
    let request = pb::UpdateResidentRequest {
        resident: Some(resident.clone()),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        expected_version,
    };
    let response = h.client.update_resident(request).await?;
    Ok(response.into_inner().resident.expect("resident"))
}

/// Records the death of `nik` on `death_date`, guarded by `expected_version`.
async fn record_death(
    h: &mut Harness,
    nik: &str,
    death_date: NaiveDate,
    expected_version: i64,
) -> Result<pb::Resident, Status> {
    let request = pb::RecordDeathRequest {
        nik: nik.to_owned(),
        death_date: Some(date(death_date)),
        expected_version,
    };
    let response = h.client.record_death(request).await?;
    Ok(response.into_inner().resident.expect("resident"))
}

/// A move of `nik` that keeps its KK and relationship (override `new_kk` and
/// `new_relationship` with `..` to change them).
fn move_request(
    nik: &str,
    kind: pb::MoveKind,
    new_address: Option<pb::Address>,
    expected_version: i64,
) -> pb::RecordMoveRequest {
    pb::RecordMoveRequest {
        nik: nik.to_owned(),
        kind: kind.into(),
        new_address,
        new_kk: String::new(),
        new_relationship: 0,
        expected_version,
    }
}

#[tokio::test]
async fn parse_nik_decodes_valid_numbers_and_names_the_broken_part() {
    for mut h in each_backend("parse").await {
        let woman = nik("327501", d(1990, 1, 5), Sex::Female, 1);
        let ok = h
            .client
            .parse_nik(pb::ParseNikRequest { nik: woman.clone() })
            .await
            .expect("valid")
            .into_inner();
        assert_eq!(ok.district_code, "327501");
        assert_eq!(ok.regency_code, "3275");
        assert_eq!(ok.province_code, "32");
        assert_eq!(ok.sex, common::Sex::Female as i32);
        assert_eq!(ok.birth_date, Some(date(d(1990, 1, 5))));
        assert_eq!(ok.serial, 1);
        assert!(ok.region_known);
        assert!(!ok.district_name.is_empty() && !ok.regency_name.is_empty());
        assert_eq!(&woman[6..8], "45", "40 is added to a woman's birth day");

        // A district no list knows is reported, not refused.
        let unknown = h
            .client
            .parse_nik(pb::ParseNikRequest {
                nik: nik("329901", d(1990, 1, 5), Sex::Male, 7),
            })
            .await
            .expect("an unknown region is not an error")
            .into_inner();
        assert!(!unknown.region_known);
        assert!(unknown.district_name.is_empty());

        let cases = [
            ("327501050190001", "length"),
            ("32750105019000012", "length"),
            ("32750105019A0001", "characters"),
            ("3275010001900001", "birth_day"),
            ("3275013201900001", "birth_day"),
            ("3275017201900001", "birth_day"),
            ("3275010513900001", "birth_month"),
            ("3275013002900001", "birth_date"),
            ("3275010501900000", "serial"),
        ];
        for (input, part) in cases {
            let err = h
                .client
                .parse_nik(pb::ParseNikRequest {
                    nik: input.to_owned(),
                })
                .await
                .expect_err(input);
            assert_violation(&err, Code::InvalidArgument, "nik", part);
            assert!(
                !err.message().contains(input),
                "the message must not echo the NIK"
            );
        }
        h.server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn families_are_registered_head_first_and_read_back() {
    for mut h in each_backend("family").await {
        let label = h.label;
        let family = kk("327501", d(2015, 3, 1), 1);
        let head = nik("327501", d(1980, 2, 10), Sex::Male, 1);
        let wife = nik("327501", d(1984, 6, 20), Sex::Female, 1);
        let child = nik("327501", d(2010, 9, 1), Sex::Male, 2);

        // A new KK's first member must be its head: nothing is written otherwise.
        let err = h
            .client
            .register_resident(person(
                &wife,
                &family,
                "Siti Aminah",
                Sex::Female,
                d(1984, 6, 20),
                pb::FamilyRelationship::Wife,
            ))
            .await
            .expect_err("first member not head");
        assert_eq!(err.code(), Code::FailedPrecondition, "{label}");
        assert_eq!(
            h.store.count_residents().await.expect("count"),
            0,
            "{label}: nothing written"
        );

        let registered = h
            .client
            .register_resident(person(
                &head,
                &family,
                "Budi Santoso",
                Sex::Male,
                d(1980, 2, 10),
                pb::FamilyRelationship::Head,
            ))
            .await
            .expect("head registers")
            .into_inner()
            .resident
            .expect("resident");
        assert_eq!(registered.version, 1);
        assert_eq!(registered.life_status, pb::LifeStatus::Alive as i32);
        assert_eq!(
            registered.address.as_ref().map(|a| a.district_code.as_str()),
            Some("327501")
        );
        assert!(registered.flags.is_empty());
        for (n, name, sex, birth, rel) in [
            (
                &wife,
                "Siti Aminah",
                Sex::Female,
                d(1984, 6, 20),
                pb::FamilyRelationship::Wife,
            ),
            (
                &child,
                "Rizky Pratama",
                Sex::Male,
                d(2010, 9, 1),
                pb::FamilyRelationship::Child,
            ),
        ] {
            h.client
                .register_resident(person(n, &family, name, sex, birth, rel))
                .await
                .expect("member registers");
        }

        let got = h
            .client
            .get_family(pb::GetFamilyRequest { kk: family.clone() })
            .await
            .expect("family")
            .into_inner();
        let got = got.family.expect("family");
        assert_eq!(got.head_nik, head, "{label}");
        assert_eq!(got.members.len(), 3);
        assert_eq!(got.members[0].nik, head, "the head comes first");
        assert_eq!(got.issue_date, Some(date(d(2015, 3, 1))));

        assert_eq!(get_resident(&mut h, &wife).await.full_name, "Siti Aminah");

        // A second head is refused and nothing changes.
        let second_head = nik("327501", d(1975, 1, 1), Sex::Male, 3);
        let err = h
            .client
            .register_resident(person(
                &second_head,
                &family,
                "Agus Wijaya",
                Sex::Male,
                d(1975, 1, 1),
                pb::FamilyRelationship::Head,
            ))
            .await
            .expect_err("second head");
        assert_eq!(err.code(), Code::FailedPrecondition, "{label}");
        assert_eq!(reason(&err), "FAMILY_HAS_HEAD");
        let subjects: Vec<_> = err
            .get_error_details()
            .precondition_failure()
            .map(|p| p.violations.iter().map(|v| v.subject.clone()).collect())
            .unwrap_or_default();
        assert_eq!(subjects, ["relationship"]);
        assert_eq!(
            h.store.count_residents().await.expect("count"),
            3,
            "{label}: nothing written"
        );

        // A second active KK for a person: the NIK is already registered.
        let other_family = kk("327502", d(2018, 1, 1), 1);
        let err = h
            .client
            .register_resident(person(
                &wife,
                &other_family,
                "Siti Aminah",
                Sex::Female,
                d(1984, 6, 20),
                pb::FamilyRelationship::Head,
            ))
            .await
            .expect_err("second KK");
        assert_violation(&err, Code::AlreadyExists, "nik", "already registered");
        assert_eq!(
            h.store.count_residents().await.expect("count"),
            3,
            "{label}: nothing written"
        );
        let missing = h
            .client
            .get_family(pb::GetFamilyRequest { kk: other_family })
            .await
            .expect_err("no family");
        assert_eq!(missing.code(), Code::NotFound);

        let missing = h
            .client
            .get_resident(pb::GetResidentRequest {
                nik: nik("327501", d(1999, 1, 1), Sex::Male, 9),
            })
            .await
            .expect_err("unknown");
        assert_eq!(missing.code(), Code::NotFound);
        h.server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn bad_registrations_name_their_field_and_write_nothing() {
    for mut h in each_backend("badreg").await {
        let label = h.label;
        let family = kk("327503", d(2016, 5, 5), 1);
        let head = nik("327503", d(1970, 4, 4), Sex::Male, 1);
        let good = person(
            &head,
            &family,
            "Joko Susilo",
            Sex::Male,
            d(1970, 4, 4),
            pb::FamilyRelationship::Head,
        );

        let mut future_kk = good.clone();
        future_kk.kk = format!("327503{}0001", "010199"); // 1 January 2099
        let mut empty_name = good.clone();
        empty_name.full_name = "   ".to_owned();
        let mut unknown_shdk = good.clone();
        unknown_shdk.relationship = 12;
        let mut wrong_sex = good.clone();
        wrong_sex.sex = common::Sex::Female.into();
        let mut wrong_birth = good.clone();
        wrong_birth.birth_date = Some(date(d(1970, 4, 5)));
        let mut unknown_village = good.clone();
        if let Some(a) = unknown_village.address.as_mut() {
            a.village_code = "3275999999".to_owned();
        }
        let mut no_address = good.clone();
        no_address.address = None;
        let mut bad_nik = good.clone();
        bad_nik.nik = "3275030404700".to_owned();

        let cases = [
            (future_kk, "kk", "future"),
            (empty_name, "full_name", "required"),
            (unknown_shdk, "relationship", "SHDK"),
            (wrong_sex, "sex", "NIK"),
            (wrong_birth, "birth_date", "NIK"),
            (unknown_village, "address.village_code", "unknown"),
            (no_address, "address", "required"),
            (bad_nik, "nik", "length"),
        ];
        for (request, field, part) in cases {
            let err = h.client.register_resident(request).await.expect_err(field);
            assert_violation(&err, Code::InvalidArgument, field, part);
        }
        assert_eq!(
            h.store.count_residents().await.expect("count"),
            0,
            "{label}: nothing written"
        );

        // An oversized message is refused by size before anything is decoded.
        let mut huge = good.clone();
        huge.full_name = "A".repeat(MAX_MESSAGE * 2);
        let err = h.client.register_resident(huge).await.expect_err("oversized");
        assert_eq!(err.code(), Code::ResourceExhausted, "{label}: {err:?}");
        assert_eq!(reason(&err), "MESSAGE_TOO_LARGE");
        assert_eq!(
            h.store.count_residents().await.expect("count"),
            0,
            "{label}: nothing written"
        );

        h.client
            .register_resident(good)
            .await
            .expect("the good one registers");
        assert_eq!(h.store.count_residents().await.expect("count"), 1);
        h.server.shutdown().await.expect("clean shutdown");
    }
}

async fn register_family(h: &mut Harness, district: &str, serial: u16) -> (String, String, String) {
    let family = kk(district, d(2012, 7, 7), serial);
    let head = nik(district, d(1979, 3, 3), Sex::Male, serial);
    let wife = nik(district, d(1982, 8, 8), Sex::Female, serial);
    h.client
        .register_resident(person(
            &head,
            &family,
            "Hendra Gunawan",
            Sex::Male,
            d(1979, 3, 3),
            pb::FamilyRelationship::Head,
        ))
        .await
        .expect("head");
    h.client
        .register_resident(person(
            &wife,
            &family,
            "Dewi Lestari",
            Sex::Female,
            d(1982, 8, 8),
            pb::FamilyRelationship::Wife,
        ))
        .await
        .expect("wife");
    (family, head, wife)
}

/// A KK issued today (in WIB, the offices' calendar) reads back at any hour.
/// From 00:00 to 07:00 WIB the date in UTC is still yesterday; reading stored
/// numbers against it once turned such a KK into a "corrupt" row.
#[tokio::test]
async fn a_kk_issued_today_reads_back() {
    for mut h in each_backend("kktoday").await {
        let label = h.label;
        let today = adminduk_kit::time::today_wib();
        let family = kk("327502", today, 9);
        let head = nik("327502", d(1990, 1, 15), Sex::Male, 9);
        h.client
            .register_resident(person(
                &head,
                &family,
                "Agus Salim",
                Sex::Male,
                d(1990, 1, 15),
                pb::FamilyRelationship::Head,
            ))
            .await
            .expect("registered");
        let read = h
            .client
            .get_resident(pb::GetResidentRequest { nik: head.clone() })
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:?}"))
            .into_inner()
            .resident
            .expect("the resident");
        assert_eq!(read.kk, family, "{label}");
        h.server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn updates_are_guarded_by_version_and_mismatches_are_flagged() {
    for mut h in each_backend("update").await {
        let label = h.label;
        let (_, head, wife) = register_family(&mut h, "327504", 1).await;
        let mut resident = get_resident(&mut h, &wife).await;
        resident.full_name = "Dewi Lestari Putri".to_owned();
        let updated = update(&mut h, &resident, &["full_name"], 1)
            .await
            .expect("update");
        assert_eq!(updated.version, 2, "{label}");
        assert_eq!(updated.full_name, "Dewi Lestari Putri");

        // The same version again is stale: ABORTED, nothing changes.
        resident.full_name = "Someone Else".to_owned();
        let err = update(&mut h, &resident, &["full_name"], 1)
            .await
            .expect_err("stale");
        assert_eq!(err.code(), Code::Aborted, "{label}");
        assert_eq!(reason(&err), "STALE_VERSION");
        assert_eq!(get_resident(&mut h, &wife).await.full_name, "Dewi Lestari Putri");

        // A later correction that disagrees with the NIK is kept and flagged, not refused or rewritten.
        resident.birth_date = Some(date(d(1982, 8, 9)));
        let flagged = update(&mut h, &resident, &["birth_date"], 2)
            .await
            .expect("correction");
        assert_eq!(flagged.nik, wife, "the NIK never changes");
        assert_eq!(flagged.flags, [pb::ResidentFlag::NikMismatch as i32]);

        // Unknown paths and a second head are refused.
        let err = update(&mut h, &resident, &["nik"], 3)
            .await
            .expect_err("nik is not updatable");
        assert_violation(&err, Code::InvalidArgument, "update_mask", "cannot update");
        resident.relationship = pb::FamilyRelationship::Head.into();
        let err = update(&mut h, &resident, &["relationship"], 3)
            .await
            .expect_err("second head");
        assert_eq!(err.code(), Code::FailedPrecondition, "{label}");

        // The head cannot be demoted while the family has other members.
        let mut head_record = get_resident(&mut h, &head).await;
        head_record.relationship = pb::FamilyRelationship::Husband.into();
        let err = update(&mut h, &head_record, &["relationship"], 1)
            .await
            .expect_err("would lose head");
        assert_eq!(err.code(), Code::FailedPrecondition, "{label}");
        assert_eq!(reason(&err), "FAMILY_NEEDS_HEAD");
        h.server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn deaths_and_moves_change_life_status_once() {
    for mut h in each_backend("life").await {
        let label = h.label;
        let (family, head, wife) = register_family(&mut h, "327505", 1).await;
        let died = record_death(&mut h, &head, d(2024, 1, 2), 1)
            .await
            .expect("death");
        assert_eq!(died.life_status, pb::LifeStatus::Deceased as i32, "{label}");
        assert_eq!(died.death_date, Some(date(d(2024, 1, 2))));
        assert_eq!(died.flags, [pb::ResidentFlag::FamilyNeedsHead as i32]);

        let again = record_death(&mut h, &head, d(2024, 1, 2), 2)
            .await
            .expect_err("already deceased");
        assert_eq!(again.code(), Code::FailedPrecondition);
        assert_eq!(reason(&again), "RESIDENT_NOT_ACTIVE");
        let future = record_death(&mut h, &wife, d(2099, 1, 1), 1)
            .await
            .expect_err("future death");
        assert_violation(&future, Code::InvalidArgument, "death_date", "future");

        // The widow becomes head, then moves within the area, then out of it.
        let mut widow = get_resident(&mut h, &wife).await;
        widow.relationship = pb::FamilyRelationship::Head.into();
        widow.marital_status = pb::MaritalStatus::Widowed.into();
        update(&mut h, &widow, &["relationship", "marital_status"], 1)
            .await
            .expect("new head");
        let fam = h
            .client
            .get_family(pb::GetFamilyRequest { kk: family.clone() })
            .await
            .expect("family")
            .into_inner()
            .family
            .expect("f");
        assert_eq!(fam.head_nik, wife, "{label}");

        let kenanga = pb::Address {
            street: "Jl. Kenanga 2".into(),
            rt: "001".into(),
            rw: "002".into(),
            village_code: "3275021001".into(),
            ..Default::default()
        };
        let moved = h
            .client
            .record_move(move_request(&wife, pb::MoveKind::WithinArea, Some(kenanga), 2))
            .await
            .expect("move within")
            .into_inner()
            .resident
            .expect("r");
        assert_eq!(moved.address.map(|a| a.district_code), Some("327502".to_owned()));
        let bad_village = pb::Address {
            village_code: "12".into(),
            ..Default::default()
        };
        let err = h
            .client
            .record_move(move_request(
                &wife,
                pb::MoveKind::WithinArea,
                Some(bad_village),
                3,
            ))
            .await
            .expect_err("bad village");
        assert_violation(
            &err,
            Code::InvalidArgument,
            "new_address.village_code",
            "10 digits",
        );
        let out = h
            .client
            .record_move(move_request(&wife, pb::MoveKind::OutOfArea, None, 3))
            .await
            .expect("move out")
            .into_inner()
            .resident
            .expect("r");
        assert_eq!(out.life_status, pb::LifeStatus::MovedOut as i32, "{label}");
        h.server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn search_pages_through_a_kecamatan_by_name() {
    for mut h in each_backend("search").await {
        let label = h.label;
        // 12 families in 327506, each head named SITI..., plus one SITI elsewhere.
        for serial in 1..=12u16 {
            let family = kk("327506", d(2011, 1, 1), serial);
            let head = nik("327506", d(1970, 1, 1), Sex::Female, serial);
            let mut req = person(
                &head,
                &family,
                &format!("Siti Nur {serial:02}"),
                Sex::Female,
                d(1970, 1, 1),
                pb::FamilyRelationship::Head,
            );
            if let Some(a) = req.address.as_mut() {
                a.village_code = "3275061001".into();
            }
            h.client.register_resident(req).await.expect("register");
        }
        let elsewhere = person(
            &nik("327501", d(1970, 1, 1), Sex::Female, 1),
            &kk("327501", d(2011, 1, 1), 1),
            "Siti Nur Luar",
            Sex::Female,
            d(1970, 1, 1),
            pb::FamilyRelationship::Head,
        );
        h.client.register_resident(elsewhere).await.expect("register");

        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = h
                .client
                .search_residents(pb::SearchResidentsRequest {
                    district_code: "327506".into(),
                    name_query: "siti  NUR".into(),
                    page_size: 5,
                    page_token: token.clone(),
                })
                .await
                .expect("search")
                .into_inner();
            pages += 1;
            seen.extend(page.residents.into_iter().map(|r| r.full_name));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3, "{label}");
        assert_eq!(seen.len(), 12, "{label}: {seen:?}");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "ordered by name");
        assert!(
            !seen.iter().any(|n| n.contains("Luar")),
            "other kecamatan excluded"
        );

        let search = |district: &str, name_query: &str| pb::SearchResidentsRequest {
            district_code: district.into(),
            name_query: name_query.into(),
            ..Default::default()
        };
        for (req, field) in [
            (search("329999", "siti"), "district_code"),
            (search("3275", "siti"), "district_code"),
            (search("327506", "s."), "name_query"),
            (
                pb::SearchResidentsRequest {
                    page_size: 1000,
                    ..search("327506", "siti")
                },
                "page_size",
            ),
            (
                pb::SearchResidentsRequest {
                    page_token: token.clone(),
                    ..search("327506", "budi")
                },
                "page_token",
            ),
        ] {
            let err = h.client.search_residents(req).await.expect_err(field);
            assert_violation(&err, Code::InvalidArgument, field, "");
        }
        h.server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn identity_checks_answer_per_field_and_never_return_data() {
    for mut h in each_backend("verify").await {
        let (_, head, _) = register_family(&mut h, "327507", 1).await;
        let answer = h
            .client
            .verify_identity(pb::VerifyIdentityRequest {
                nik: head.clone(),
                full_name: Some("  hendra   GUNAWAN. ".into()),
                birth_date: Some(date(d(1979, 3, 3))),
                birth_place: Some("Jakarta".into()),
                sex: common::Sex::Male.into(),
                village_code: None,
            })
            .await
            .expect("verify")
            .into_inner();
        assert_eq!(answer.full_name, pb::FieldMatch::Match as i32);
        assert_eq!(answer.birth_date, pb::FieldMatch::Match as i32);
        assert_eq!(answer.birth_place, pb::FieldMatch::NoMatch as i32);
        assert_eq!(answer.sex, pb::FieldMatch::Match as i32);
        assert_eq!(answer.village_code, pb::FieldMatch::NotProvided as i32);

        let err = h
            .client
            .verify_identity(pb::VerifyIdentityRequest {
                nik: head.clone(),
                ..Default::default()
            })
            .await
            .expect_err("nothing to verify");
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = h
            .client
            .verify_identity(pb::VerifyIdentityRequest {
                nik: nik("327507", d(1990, 1, 1), Sex::Male, 5),
                full_name: Some("x".into()),
                ..Default::default()
            })
            .await
            .expect_err("unknown nik");
        assert_eq!(err.code(), Code::NotFound);
        h.server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn residents_are_counted_by_area_without_personal_data() {
    for mut h in each_backend("count").await {
        let label = h.label;
        register_family(&mut h, "327508", 1).await;
        // A child (not eligible) and an unrecorded adult (not eligible either).
        let family = kk("327508", d(2012, 7, 7), 1);
        use pb::{FamilyRelationship as Rel, MaritalStatus as Marital};
        let not_eligible = [
            (
                "child",
                d(2015, 1, 1),
                Sex::Male,
                "Anak Satu",
                Rel::Child,
                Marital::Single,
            ),
            (
                "grandmother",
                d(1950, 1, 1),
                Sex::Female,
                "Nenek",
                Rel::Parent,
                Marital::Married,
            ),
        ];
        for (who, birth, sex, name, rel, marital_status) in not_eligible {
            let mut member = person(&nik("327508", birth, sex, 9), &family, name, sex, birth, rel);
            member.marital_status = marital_status.into();
            member.recording_status = pb::RecordingStatus::NotRecorded.into();
            h.client.register_resident(member).await.expect(who);
        }
        // They all live in Bekasi Timur (the address of `person`), whatever their NIK's region.
        for area in ["327501", "3275"] {
            let counts = h
                .client
                .count_residents(pb::CountResidentsRequest {
                    area_code: area.into(),
                })
                .await
                .expect("count")
                .into_inner();
            assert_eq!((counts.alive, counts.eligible), (4, 2), "{label} {area}");
        }
        let err = h
            .client
            .count_residents(pb::CountResidentsRequest {
                area_code: "99".into(),
            })
            .await
            .expect_err("bad area");
        assert_violation(&err, Code::InvalidArgument, "area_code", "known");
        h.server.shutdown().await.expect("clean shutdown");
    }
}

/// The BadRequest fields of a status, in order.
fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Someone born `years` years ago today (WIB), on a day that exists every year.
fn born_years_ago(years: i32) -> NaiveDate {
    use chrono::Datelike as _;
    let today = adminduk_kit::time::today_wib();
    let day = if (today.month(), today.day()) == (2, 29) {
        28
    } else {
        today.day()
    };
    d(today.year() - years, today.month(), day)
}

/// Issue 10, item 15: an 8-year-old was registered as married, head of a
/// family and print-ready (and then got a print job and an IKD activation).
#[tokio::test]
async fn the_young_are_not_registered_married_heads_or_print_ready() {
    for mut h in each_backend("young").await {
        let label = h.label;
        let birth = born_years_ago(8);
        let family = kk("327509", adminduk_kit::time::today_wib(), 1);
        let child = nik("327509", birth, Sex::Male, 1);
        let request = person(
            &child,
            &family,
            "Rizky Ananda",
            Sex::Male,
            birth,
            pb::FamilyRelationship::Head,
        );
        let err = h
            .client
            .register_resident(request.clone())
            .await
            .expect_err("an 8-year-old married head");
        assert_eq!(err.code(), Code::InvalidArgument, "{label}: {err:?}");
        assert_eq!(
            violated_fields(&err),
            ["marital_status", "relationship", "recording_status"],
            "{label}: every age rule at once"
        );
        assert_violation(&err, Code::InvalidArgument, "marital_status", "UU 16/2019");
        assert_violation(&err, Code::InvalidArgument, "relationship", "17 or older");
        assert_violation(&err, Code::InvalidArgument, "recording_status", "PRINT_READY");
        assert_eq!(h.store.count_residents().await.expect("count"), 0, "{label}");

        // A 16-year-old married with a court's dispensation is lawful: recorded,
        // head of the new family, print-ready (DOMAIN.md: 17 or married).
        register_family(&mut h, "327509", 2).await;
        let young_wife = nik("327509", born_years_ago(16), Sex::Female, 3);
        let young_head = person(
            &young_wife,
            &kk("327509", adminduk_kit::time::today_wib(), 3),
            "Nabila Putri",
            Sex::Female,
            born_years_ago(16),
            pb::FamilyRelationship::Head,
        );
        h.client
            .register_resident(young_head)
            .await
            .unwrap_or_else(|e| panic!("{label}: a married 16-year-old: {e:?}"));

        // The same child as a single son, not recorded yet, is fine; making him
        // print-ready later is refused, and so is making him married.
        let family = kk("327509", d(2012, 7, 7), 2);
        let mut son = person(
            &child,
            &family,
            "Rizky Ananda",
            Sex::Male,
            birth,
            pb::FamilyRelationship::Child,
        );
        son.marital_status = pb::MaritalStatus::Single.into();
        son.recording_status = pb::RecordingStatus::NotRecorded.into();
        let mut record = h
            .client
            .register_resident(son)
            .await
            .expect("a son")
            .into_inner()
            .resident
            .expect("resident");
        record.recording_status = pb::RecordingStatus::PrintReady.into();
        record.marital_status = pb::MaritalStatus::Married.into();
        let err = update(&mut h, &record, &["recording_status", "marital_status"], 1)
            .await
            .expect_err("a print-ready married 8-year-old");
        assert_eq!(
            violated_fields(&err),
            ["resident.marital_status", "resident.recording_status"],
            "{label}: {err:?}"
        );
        // Moving him into another KK as its head is refused too.
        let err = h
            .client
            .record_move(pb::RecordMoveRequest {
                new_kk: kk("327509", adminduk_kit::time::today_wib(), 3),
                new_relationship: pb::FamilyRelationship::Head.into(),
                ..move_request(&child, pb::MoveKind::WithinArea, record.address.clone(), 1)
            })
            .await
            .expect_err("an 8-year-old head");
        assert_violation(&err, Code::InvalidArgument, "new_relationship", "17 or older");
        let stored = get_resident(&mut h, &child).await;
        assert_eq!(
            (stored.version, stored.recording_status, stored.relationship),
            (
                1,
                pb::RecordingStatus::NotRecorded as i32,
                pb::FamilyRelationship::Child as i32
            ),
            "{label}: nothing changed"
        );
        h.server.shutdown().await.expect("clean shutdown");
    }
}

/// Issue 10, item 15: a sex and birth date contradicting the NIK were
/// reported only once the other wrong fields were fixed.
#[tokio::test]
async fn every_wrong_field_of_a_registration_is_reported_at_once() {
    for mut h in each_backend("allatonce").await {
        let label = h.label;
        let born = d(1970, 4, 4);
        let mut request = person(
            &nik("327503", born, Sex::Male, 1),
            &kk("327503", d(2016, 5, 5), 1),
            "Joko Susilo",
            Sex::Female,
            d(1970, 4, 5),
            pb::FamilyRelationship::Head,
        );
        request.marital_status = 9;
        request.full_name = "Joko\u{0}Susilo".to_owned();
        if let Some(a) = request.address.as_mut() {
            a.village_code = "12345".to_owned();
        }
        let err = h
            .client
            .register_resident(request)
            .await
            .expect_err("five wrong fields");
        let mut fields = violated_fields(&err);
        fields.sort();
        assert_eq!(
            fields,
            [
                "address.village_code",
                "birth_date",
                "full_name",
                "marital_status",
                "sex"
            ],
            "{label}: {err:?}"
        );
        assert_violation(&err, Code::InvalidArgument, "sex", "NIK");
        assert_violation(&err, Code::InvalidArgument, "birth_date", "NIK");
        assert_violation(&err, Code::InvalidArgument, "full_name", "control characters");
        assert!(err.message().starts_with("5 invalid fields"), "{}", err.message());

        let mut long = person(
            &nik("327503", born, Sex::Male, 1),
            &kk("327503", d(2016, 5, 5), 1),
            "  Joko Susilo  ",
            Sex::Male,
            born,
            pb::FamilyRelationship::Head,
        );
        long.birth_place = "B".repeat(101);
        let err = h.client.register_resident(long.clone()).await.expect_err("long");
        assert_violation(
            &err,
            Code::InvalidArgument,
            "birth_place",
            "at most 100 characters",
        );
        // A NIK or KK of a regency no official list knows was never issued.
        let err = h
            .client
            .register_resident(pb::RegisterResidentRequest {
                nik: nik("999901", born, Sex::Male, 1),
                kk: kk("999901", d(2016, 5, 5), 1),
                birth_place: "Bekasi".to_owned(),
                ..long.clone()
            })
            .await
            .expect_err("an unknown regency");
        assert_violation(&err, Code::InvalidArgument, "nik", "official list");
        assert_violation(&err, Code::InvalidArgument, "kk", "official list");
        // A name that would display unlike what is stored (a right-to-left
        // override, a zero-width space) is refused too.
        for trick in ["Joko\u{202E}olisuS", "Joko\u{200B}Susilo"] {
            let err = h
                .client
                .register_resident(pb::RegisterResidentRequest {
                    full_name: trick.to_owned(),
                    birth_place: "Bekasi".to_owned(),
                    ..long.clone()
                })
                .await
                .expect_err("an invisible character");
            assert_violation(&err, Code::InvalidArgument, "full_name", "invisible");
        }
        long.birth_place = " Bekasi ".to_owned();
        let stored = h
            .client
            .register_resident(long)
            .await
            .expect("registered")
            .into_inner()
            .resident
            .expect("resident");
        assert_eq!(
            (stored.full_name.as_str(), stored.birth_place.as_str()),
            ("Joko Susilo", "Bekasi"),
            "{label}: trimmed"
        );
        h.server.shutdown().await.expect("clean shutdown");
    }
}

/// Issue 10, item 15: a village code that cannot be one answered NO_MATCH,
/// and an invalid birth date drew a bogus "send at least one field".
#[tokio::test]
async fn identity_checks_refuse_fields_that_cannot_be_compared() {
    for mut h in each_backend("verifybad").await {
        let label = h.label;
        let (_, head, _) = register_family(&mut h, "327507", 2).await;
        let ask = |village_code: Option<&str>, birth_date: Option<common::Date>| pb::VerifyIdentityRequest {
            nik: head.clone(),
            village_code: village_code.map(str::to_owned),
            birth_date,
            ..Default::default()
        };
        for code in ["12345", "3275999999", "32750110a1"] {
            let err = h
                .client
                .verify_identity(ask(Some(code), None))
                .await
                .expect_err(code);
            assert_eq!(err.code(), Code::InvalidArgument, "{label} {code}");
            assert_eq!(violated_fields(&err), ["village_code"], "{label} {code}");
        }
        let february_30 = common::Date {
            year: 1979,
            month: 2,
            day: 30,
        };
        let err = h
            .client
            .verify_identity(ask(None, Some(february_30)))
            .await
            .expect_err("no such date");
        assert_eq!(violated_fields(&err), ["birth_date"], "{label}: {err:?}");
        let err = h
            .client
            .verify_identity(pb::VerifyIdentityRequest {
                nik: head.clone(),
                full_name: Some("x".repeat(101)),
                ..Default::default()
            })
            .await
            .expect_err("too long");
        assert_violation(&err, Code::InvalidArgument, "full_name", "at most 100 characters");

        let answer = h
            .client
            .verify_identity(ask(Some(" 3275011001 "), None))
            .await
            .expect("a real village")
            .into_inner();
        assert_eq!(answer.village_code, pb::FieldMatch::Match as i32, "{label}");
        let answer = h
            .client
            .verify_identity(ask(Some("3275021001"), None))
            .await
            .expect("another real village")
            .into_inner();
        assert_eq!(answer.village_code, pb::FieldMatch::NoMatch as i32, "{label}");
        h.server.shutdown().await.expect("clean shutdown");
    }
}

/// Issue 10, item 16: a NOT_FOUND says what it refers to, by masked number.
#[tokio::test]
async fn not_found_names_the_resident_or_family_masked() {
    for mut h in each_backend("notfound").await {
        let label = h.label;
        let unknown = nik("327501", d(1999, 1, 1), Sex::Male, 9);
        let masked = adminduk_kit::mask_nik(&unknown);
        let resource = |status: &Status| {
            status
                .get_error_details()
                .resource_info()
                .map(|r| (r.resource_type.clone(), r.resource_name.clone()))
        };
        let err = h
            .client
            .get_resident(pb::GetResidentRequest { nik: unknown.clone() })
            .await
            .expect_err("unknown");
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::NotFound, "RESIDENT_NOT_FOUND".to_owned()),
            "{label}"
        );
        assert_eq!(resource(&err), Some(("resident".to_owned(), masked.clone())));
        let err = record_death(&mut h, &unknown, d(2024, 1, 1), 1)
            .await
            .expect_err("unknown");
        assert_eq!(resource(&err), Some(("resident".to_owned(), masked)), "{label}");

        let family = kk("327501", d(2019, 9, 9), 7);
        let err = h
            .client
            .get_family(pb::GetFamilyRequest { kk: family.clone() })
            .await
            .expect_err("unknown");
        assert_eq!(reason(&err), "FAMILY_NOT_FOUND", "{label}");
        assert_eq!(
            resource(&err),
            Some(("family".to_owned(), adminduk_kit::mask_nik(&family)))
        );
        let (_, head, _) = register_family(&mut h, "327501", 3).await;
        let err = h
            .client
            .record_move(pb::RecordMoveRequest {
                new_kk: family.clone(),
                new_relationship: pb::FamilyRelationship::Other.into(),
                ..move_request(
                    &head,
                    pb::MoveKind::WithinArea,
                    Some(pb::Address {
                        street: "Jl. Kenanga 2".into(),
                        village_code: "3275021001".into(),
                        ..Default::default()
                    }),
                    1,
                )
            })
            .await
            .expect_err("no such family");
        assert_eq!(
            resource(&err),
            Some(("family".to_owned(), adminduk_kit::mask_nik(&family))),
            "{label}: {err:?}"
        );
        assert!(!format!("{err:?}").contains(&family), "never the whole number");
        h.server.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test]
async fn health_and_reflection_answer() {
    let h = start(testing::sqlite()).await;
    let channel = Channel::from_shared(format!("http://{}", h.server.local_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    for service in ["", "adminduk.population.v1.PopulationService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(status.status, serving, "{service:?}");
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream.message().await.expect("message").expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"adminduk.population.v1.PopulationService".to_owned()),
        "{names:?}"
    );
    h.server.shutdown().await.expect("clean shutdown");
}
